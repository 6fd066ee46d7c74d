//! The operator routes of issue 10 (part 1): software and software tags (v1alpha1, the GUI's
//! release picker), deleting a device's deployment history, statistics of many deployments,
//! the storage limit and the deprecated paged artifact list. Rules in `deployments::software`
//! and `deployments::operator`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use deployments::operator::{
    check_deployment_ids, filter_artifacts, lenient_paging, sort_artifacts, ArtifactListParams,
};
use deployments::software::{distinct_tags, software_json, tags_kind, SoftwareFilter};
use mender_http::paging::{link_headers, list_response, query_pairs, Extent, Paging};
use mender_http::{query, ApiResult, MenderJson, UserAuth};
use serde::Deserialize;
use serde_json::{json, Value};
use services::Services;

const SOFTWARE: &str = "/api/management/v1alpha1/deployments/software";

/// `GET /api/management/v1alpha1/deployments/software`: filters validated before paging (strict),
/// `X-Total-Count` and `Link` with the total.
pub async fn list_software(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(q.as_deref());
    let filter = SoftwareFilter::from_params(query::from_pairs(&pairs)?)?;
    let paging = Paging::from_pairs(&pairs)?;
    let matching = filter.apply(s.deployments.releases(auth.tenant()).await?);
    let total = matching.len() as u64;
    let page: Vec<Value> = paging.slice(matching).iter().map(software_json).collect();
    let links = link_headers(SOFTWARE, &pairs, paging, Extent::Total(total));
    Ok(list_response(page, links, Some(total)))
}

/// `GET /api/management/v1alpha1/deployments/software/tags[?kind=release|manifest]`.
pub async fn software_tags(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    if !tags_kind(&query::parse(q.as_deref())?)? {
        return Ok(Json(json!([])));
    }
    let releases = s.deployments.releases(auth.tenant()).await?;
    Ok(Json(json!(distinct_tags(&releases))))
}

/// `DELETE /api/management/v1/deployments/deployments/devices/{id}/history`: 204 also when
/// there is nothing to delete.
pub async fn delete_device_history(
    State(s): State<Services>,
    auth: UserAuth,
    Path(device): Path<String>,
) -> ApiResult<StatusCode> {
    s.deployments
        .delete_device_history(auth.tenant(), &device)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct DeploymentIds {
    #[serde(default)]
    deployment_ids: Option<Vec<String>>,
}

/// `POST /api/management/v1/deployments/deployments/statistics/list`: no ids = `200 {}`.
pub async fn statistics_list(
    State(s): State<Services>,
    auth: UserAuth,
    MenderJson(body): MenderJson<DeploymentIds>,
) -> ApiResult<Response> {
    let ids = body.deployment_ids.unwrap_or_default();
    if ids.is_empty() {
        return Ok(Json(json!({})).into_response());
    }
    check_deployment_ids(&ids)?;
    let found = s.deployments.statistics_of(auth.tenant(), &ids).await?;
    let list: Vec<Value> = found
        .into_iter()
        .map(|(id, stats)| json!({"id": id, "stats": stats}))
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

/// `GET /api/management/v1/deployments/limits/{name}` (only `storage`).
pub async fn limit(_auth: UserAuth, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(deployments::operator::limit(&name)?))
}

/// `GET /api/management/v1/deployments/artifacts/list` (deprecated): lenient paging, `sort`,
/// `name` / `description` / `device_type` filters, `X-Total-Count` and `Link`.
pub async fn list_artifacts_paged(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(q.as_deref());
    let params: ArtifactListParams = query::from_pairs(&pairs)?;
    let paging = lenient_paging(&params);
    let mut matching = filter_artifacts(s.deployments.artifacts(auth.tenant()).await?, &params);
    sort_artifacts(&mut matching, params.sort.as_deref());
    let total = matching.len() as u64;
    let page: Vec<Value> = paging
        .slice(matching)
        .iter()
        .map(deployments::Artifact::to_json)
        .collect();
    let links = link_headers(
        "/api/management/v1/deployments/artifacts/list",
        &pairs,
        paging,
        Extent::Total(total),
    );
    Ok(list_response(page, links, Some(total)))
}
