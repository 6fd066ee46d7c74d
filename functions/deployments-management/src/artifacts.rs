//! Artifact routes: upload and generate, list (v1, v2), get, edit, delete, download link,
//! and direct uploads (a presigned S3 link, then `complete`).

use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mender_aws::s3::ArtifactStorage;
use mender_http::paging::{link_headers, list_response, query_pairs, Extent};
use mender_http::{query, ApiError, ApiResult, MenderJson, UserAuth};
use serde::Deserialize;
use serde_json::{json, Value};
use services::Services;

use crate::{check_uuid, generate, upload, DOWNLOAD_LINK_LIFETIME, UPLOAD_LINK_LIFETIME, V1};

pub(crate) async fn upload_artifact(
    State(s): State<Services>,
    auth: UserAuth,
    form: Multipart,
) -> ApiResult<Response> {
    let artifact = upload::upload(&s, auth.tenant(), form).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("{V1}/artifacts/{}", artifact.id))],
    )
        .into_response())
}

/// 201 before the artifact exists; `Location` is the request path and the id (upstream).
pub(crate) async fn generate_artifact(
    State(s): State<Services>,
    auth: UserAuth,
    form: Multipart,
) -> ApiResult<Response> {
    let id = generate::generate(&s, auth.tenant(), form).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("{V1}/artifacts/generate/{id}"))],
    )
        .into_response())
}

/// The v1 list's filters.
#[derive(Deserialize)]
pub(crate) struct ArtifactsQuery {
    name: Option<String>,
    description: Option<String>,
    device_type: Option<String>,
}

pub(crate) async fn list_artifacts(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let params: ArtifactsQuery = query::parse(q.as_deref())?;
    let lowered = |v: Option<String>| v.map(|v| v.to_ascii_lowercase());
    let (name, description, device_type) = (
        lowered(params.name),
        lowered(params.description),
        lowered(params.device_type),
    );
    let artifacts: Vec<Value> = s
        .deployments
        .artifacts(auth.tenant())
        .await?
        .iter()
        .filter(|a| {
            name.as_deref()
                .is_none_or(|n| a.name.to_ascii_lowercase().contains(n))
        })
        .filter(|a| {
            description
                .as_deref()
                .is_none_or(|d| a.description.to_ascii_lowercase().contains(d))
        })
        .filter(|a| {
            device_type.as_deref().is_none_or(|t| {
                a.device_types_compatible
                    .iter()
                    .any(|x| x.to_ascii_lowercase().contains(t))
            })
        })
        .map(deployments::Artifact::to_json)
        .collect();
    Ok(Json(Value::Array(artifacts)))
}

/// v2 list: exact or `prefix*` name filters, lenient paging, sorted by name, has-next links.
pub(crate) async fn list_artifacts_v2(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(q.as_deref());
    let params: deployments::operator::ArtifactsV2Params = query::from_pairs(&pairs)?;
    let filter = deployments::operator::ArtifactFilterV2::from_params(&params)?;
    let paging = deployments::operator::paging_v2(&params)?;
    let mut all: Vec<deployments::Artifact> = s
        .deployments
        .artifacts(auth.tenant())
        .await?
        .into_iter()
        .filter(|a| filter.matches(a))
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    let has_next = all.len() > paging.offset() + paging.per_page as usize;
    let page: Vec<Value> = paging
        .slice(all)
        .iter()
        .map(deployments::Artifact::to_json)
        .collect();
    let links = link_headers(
        "/api/management/v2/deployments/artifacts",
        &pairs,
        paging,
        Extent::HasNext(has_next),
    );
    Ok(list_response(page, links, None))
}

pub(crate) async fn get_artifact(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_uuid(&id)?;
    Ok(Json(
        s.deployments.artifact(auth.tenant(), &id).await?.to_json(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct Description {
    #[serde(default)]
    description: String,
}

pub(crate) async fn edit_artifact(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    MenderJson(body): MenderJson<Description>,
) -> ApiResult<StatusCode> {
    check_uuid(&id)?;
    s.deployments
        .set_description(auth.tenant(), &id, body.description)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_artifact(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_uuid(&id)?;
    s.deployments.delete_artifact(auth.tenant(), &id).await?;
    s.artifacts
        .delete(&ArtifactStorage::key(auth.tenant(), &id))
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn download_link(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_uuid(&id)?;
    let artifact = s.deployments.artifact(auth.tenant(), &id).await?;
    let link = s
        .artifacts
        .presign_get(
            &ArtifactStorage::key(auth.tenant(), &id),
            DOWNLOAD_LINK_LIFETIME,
            &format!("{}.mender", artifact.name),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({"uri": link.uri, "expire": link.expire, "method": "GET"}),
    ))
}

/// Direct upload, step 1: a presigned PUT link for a new artifact id.
pub(crate) async fn start_direct_upload(
    State(s): State<Services>,
    auth: UserAuth,
) -> ApiResult<Json<Value>> {
    let id = s.deployments.start_direct_upload(auth.tenant()).await?;
    let link = s
        .artifacts
        .presign_put(
            &ArtifactStorage::upload_key(auth.tenant(), &id),
            UPLOAD_LINK_LIFETIME,
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({"id": id, "uri": link.uri, "expire": link.expire, "method": "PUT"}),
    ))
}

/// Direct upload, step 3 (after the client's PUT): 202, then `process-artifact` parses it.
pub(crate) async fn complete_direct_upload(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_uuid(&id)?;
    let stored = s
        .artifacts
        .size(&ArtifactStorage::upload_key(auth.tenant(), &id))
        .await
        .map_err(ApiError::internal)?;
    if stored.is_none() {
        return Err(ApiError::not_found("Resource not found"));
    }
    s.deployments
        .complete_direct_upload(auth.tenant(), &id)
        .await?;
    let job = workflows::Job::ProcessArtifact {
        request_id: mender_http::request_id::current().unwrap_or_default(),
        tenant_id: auth.tenant().to_owned(),
        artifact_id: id,
    };
    s.workflows.publish(job).await.map_err(ApiError::internal)?;
    Ok(StatusCode::ACCEPTED)
}
