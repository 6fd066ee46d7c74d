//! Deployment routes: create (for devices, all devices or a group), list, get, abort,
//! statistics, the deployment's devices and their logs, a device's history and abort.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deployments::model::{status_filter, DeviceDeployment, DeviceStatus};
use deployments::service::NewDeployment;
use deployments::Deployment;
use mender_http::paging::{link_headers, list_response, query_pairs, Extent, Paging};
use mender_http::{query, ApiError, ApiResult, MenderJson, UserAuth};
use serde::Deserialize;
use serde_json::{json, Value};
use services::Services;

use crate::{check_uuid, V1};

pub(crate) async fn created(deployment: Deployment) -> Response {
    (
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("{V1}/deployments/{}", deployment.id),
        )],
    )
        .into_response()
}

pub(crate) async fn create_deployment(
    State(s): State<Services>,
    auth: UserAuth,
    MenderJson(request): MenderJson<NewDeployment>,
) -> ApiResult<Response> {
    let devices = request.devices.clone().unwrap_or_default();
    let targets = match (devices.is_empty(), request.all_devices) {
        (false, true) => {
            return Err(ApiError::bad_request(
                "Invalid deployments definition: list of devices provided togheter with all_devices flag",
            ))
        }
        (true, false) => {
            return Err(ApiError::bad_request(
                "Invalid deployments definition: provide list of devices or set all_devices flag",
            ))
        }
        (true, true) => s.inventory.accepted_devices(auth.tenant(), None).await?,
        (false, false) => {
            if devices.iter().any(String::is_empty) {
                return Err(ApiError::bad_request("Invalid deployments definition: devices: cannot be blank."));
            }
            devices
        }
    };
    let groups = match targets.as_slice() {
        [single] => s
            .inventory
            .group_of(auth.tenant(), single)
            .await?
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    Ok(created(
        s.deployments
            .create_deployment(auth.tenant(), &request, targets, groups)
            .await?,
    )
    .await)
}

pub(crate) async fn create_group_deployment(
    State(s): State<Services>,
    auth: UserAuth,
    Path(group): Path<String>,
    MenderJson(request): MenderJson<NewDeployment>,
) -> ApiResult<Response> {
    if request.all_devices || request.devices.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::bad_request(
            "Invalid deployments definition: devices and all_devices are not allowed for a group",
        ));
    }
    let targets = s
        .inventory
        .accepted_devices(auth.tenant(), Some(&group))
        .await?;
    Ok(created(
        s.deployments
            .create_deployment(auth.tenant(), &request, targets, vec![group])
            .await?,
    )
    .await)
}

/// v1 and v2 list: `status`, `type`, `created_after/before` (inclusive), `sort`, `search` (v1),
/// repeatable `id` and `name` (v2); paging with totals (`deployments::listing`).
pub(crate) async fn list_deployments(
    State(s): State<Services>,
    auth: UserAuth,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    let pairs = query_pairs(uri.query());
    let paging = Paging::from_pairs(&pairs)?;
    let query = deployments::listing::DeploymentQuery::from_params(query::from_pairs(&pairs)?)?;
    let all = query.apply(s.deployments.deployments(auth.tenant()).await?);
    let total = all.len() as u64;
    let page: Vec<Value> = paging.slice(all).iter().map(Deployment::to_json).collect();
    let links = link_headers(uri.path(), &pairs, paging, Extent::Total(total));
    Ok(list_response(page, links, Some(total)))
}

pub(crate) async fn get_deployment(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_uuid(&id)?;
    Ok(Json(
        s.deployments
            .deployment(auth.tenant(), &id)
            .await?
            .to_json(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct StatusBody {
    status: String,
}

pub(crate) async fn abort_deployment(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    MenderJson(body): MenderJson<StatusBody>,
) -> ApiResult<StatusCode> {
    check_uuid(&id)?;
    if body.status != "aborted" {
        return Err(ApiError::bad_request("Unexpected deployment status"));
    }
    s.deployments.abort(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn statistics(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_uuid(&id)?;
    Ok(Json(json!(
        s.deployments
            .deployment(auth.tenant(), &id)
            .await?
            .statistics
    )))
}

/// A device deployment as upstream's `DeviceWithImage`.
pub(crate) async fn device_json(s: &Services, tenant: &str, dd: &DeviceDeployment) -> Value {
    let mut v =
        json!({"id": dd.device_id, "status": dd.status, "created": dd.created, "log": dd.log});
    for (k, value) in [
        ("started", &dd.started),
        ("finished", &dd.finished),
        ("substate", &dd.substate),
        ("deleted", &dd.deleted),
    ] {
        if let Some(value) = value {
            v[k] = Value::String(value.clone());
        }
    }
    if let Some(artifact_id) = &dd.artifact_id {
        if let Ok(artifact) = s.deployments.artifact(tenant, artifact_id).await {
            v["image"] = artifact.to_json();
        }
    }
    v
}

pub(crate) async fn deployment_devices(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_uuid(&id)?;
    let mut out = Vec::new();
    for dd in s.deployments.deployment_devices(auth.tenant(), &id).await? {
        out.push(device_json(&s, auth.tenant(), &dd).await);
    }
    Ok(Json(Value::Array(out)))
}

/// The `status` filter of a deployment's devices and of a device's history.
#[derive(Deserialize)]
pub(crate) struct StatusQuery {
    status: Option<String>,
}

/// The device deployment statuses `status` asks for (all when absent).
fn wanted_statuses(query: &StatusQuery) -> ApiResult<Option<Vec<DeviceStatus>>> {
    query
        .status
        .as_deref()
        .map(|status| {
            status_filter(status)
                .ok_or_else(|| ApiError::bad_request(format!("invalid status: {status}")))
        })
        .transpose()
}

pub(crate) async fn deployment_devices_page(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    check_uuid(&id)?;
    let pairs = query_pairs(q.as_deref());
    let paging = Paging::from_pairs(&pairs)?;
    let status: StatusQuery = query::from_pairs(&pairs)?;
    let mut devices = s.deployments.deployment_devices(auth.tenant(), &id).await?;
    if let Some(wanted) = wanted_statuses(&status)? {
        devices.retain(|d| wanted.contains(&d.status));
    }
    let total = devices.len() as u64;
    let mut out = Vec::new();
    for dd in paging.slice(devices) {
        out.push(device_json(&s, auth.tenant(), &dd).await);
    }
    let links = link_headers(
        &format!("{V1}/deployments/{id}/devices/list"),
        &pairs,
        paging,
        Extent::Total(total),
    );
    Ok(list_response(out, links, Some(total)))
}

pub(crate) async fn device_list(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    check_uuid(&id)?;
    Ok(Json(json!(
        s.deployments
            .deployment(auth.tenant(), &id)
            .await?
            .device_list
    )))
}

pub(crate) async fn device_log(
    State(s): State<Services>,
    auth: UserAuth,
    Path((id, device)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_uuid(&id)?;
    let text = s.deployments.log_text(auth.tenant(), &id, &device).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

/// A device's deployments, newest first (`per_page` at most 20).
pub(crate) async fn device_history(
    State(s): State<Services>,
    auth: UserAuth,
    Path(device): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(q.as_deref());
    let paging = Paging::from_pairs(&pairs)?;
    if paging.per_page > 20 {
        return Err(ApiError::bad_request(
            "parameter \"per_page\" above limit (max: 20)",
        ));
    }
    let status: StatusQuery = query::from_pairs(&pairs)?;
    let mut history = s.deployments.device_history(auth.tenant(), &device).await?;
    if let Some(wanted) = wanted_statuses(&status)? {
        history.retain(|(_, dd)| wanted.contains(&dd.status));
    }
    let total = history.len() as u64;
    let mut out = Vec::new();
    for (deployment, dd) in paging.slice(history) {
        out.push(json!({"id": dd.id, "deployment": deployment.to_json(), "device": device_json(&s, auth.tenant(), &dd).await}));
    }
    let links = link_headers(
        &format!("{V1}/deployments/devices/{device}"),
        &pairs,
        paging,
        Extent::Total(total),
    );
    Ok(list_response(out, links, Some(total)))
}

pub(crate) async fn abort_device(
    State(s): State<Services>,
    auth: UserAuth,
    Path(device): Path<String>,
) -> ApiResult<StatusCode> {
    s.deployments
        .end_device_deployments(auth.tenant(), &device, DeviceStatus::Aborted)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
