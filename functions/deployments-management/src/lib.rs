//! deployments management API: artifacts (upload, list, get, edit, delete, download link) and
//! deployments (create for devices, all devices or a group; list, get, statistics, devices,
//! logs, abort; a device's history and abort). The artifact upload lives in `upload`.

pub mod generate;
pub mod operator;
pub mod releases;
pub mod upload;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Multipart, Path, RawQuery, State};
use axum::handler::Handler;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use deployments::model::{status_filter, DeviceDeployment};
use deployments::service::NewDeployment;
use deployments::Deployment;
use mender_aws::s3::ArtifactStorage;
use mender_http::paging::{link_headers, list_response, query_pairs, Extent, Paging};
use mender_http::{ApiError, ApiResult, MenderJson, Route, UserAuth};
use serde::Deserialize;
use serde_json::{json, Value};
use services::Services;

/// Users' download links are valid 15 minutes.
pub const DOWNLOAD_LINK_LIFETIME: Duration = Duration::from_secs(900);
/// Direct upload links are valid an hour (upstream `storage.upload_expire_seconds`).
pub const UPLOAD_LINK_LIFETIME: Duration = Duration::from_secs(3600);
const V1: &str = "/api/management/v1/deployments";

/// Every route of this function and its handler (one `HttpApi` event each in the template).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    let upload = upload_artifact.layer(DefaultBodyLimit::max(upload::MAX_ARTIFACT_SIZE as usize));
    let generate = generate_artifact.layer(DefaultBodyLimit::max(generate::MAX_REQUEST_SIZE));
    vec![
        Route::get("/api/management/v1/deployments/deployments/releases", releases::list_v1),
        Route::get("/api/management/v1/deployments/deployments/releases/list", releases::list_v1_paged),
        Route::get("/api/management/v2/deployments/deployments/releases", releases::list_v2),
        Route::delete("/api/management/v2/deployments/deployments/releases", releases::delete),
        Route::get("/api/management/v2/deployments/deployments/releases/{name}", releases::get),
        Route::patch("/api/management/v2/deployments/deployments/releases/{name}", releases::set_notes),
        Route::put("/api/management/v2/deployments/deployments/releases/{name}/tags", releases::set_tags),
        Route::get("/api/management/v2/deployments/releases/all/tags", releases::all_tags),
        Route::get("/api/management/v2/deployments/releases/all/types", releases::all_types),
        Route::get("/api/management/v1/deployments/artifacts", list_artifacts),
        Route::get("/api/management/v1/deployments/artifacts/list", operator::list_artifacts_paged),
        Route::post("/api/management/v1/deployments/artifacts", upload),
        Route::post("/api/management/v1/deployments/artifacts/generate", generate),
        Route::get("/api/management/v1/deployments/artifacts/{id}", get_artifact),
        Route::put("/api/management/v1/deployments/artifacts/{id}", edit_artifact),
        Route::delete("/api/management/v1/deployments/artifacts/{id}", delete_artifact),
        Route::get("/api/management/v1/deployments/artifacts/{id}/download", download_link),
        Route::get("/api/management/v2/deployments/artifacts", list_artifacts_v2),
        Route::post("/api/management/v1/deployments/artifacts/directupload", start_direct_upload),
        Route::post("/api/management/v1/deployments/artifacts/directupload/{id}/complete", complete_direct_upload),
        Route::post("/api/management/v1/deployments/deployments", create_deployment),
        Route::post("/api/management/v1/deployments/deployments/group/{name}", create_group_deployment),
        Route::get("/api/management/v1/deployments/deployments", list_deployments),
        Route::get("/api/management/v2/deployments/deployments", list_deployments),
        Route::get("/api/management/v1/deployments/deployments/{id}", get_deployment),
        Route::put("/api/management/v1/deployments/deployments/{id}/status", abort_deployment),
        Route::get("/api/management/v1/deployments/deployments/{id}/statistics", statistics),
        Route::get("/api/management/v1/deployments/deployments/{id}/devices", deployment_devices),
        Route::get("/api/management/v1/deployments/deployments/{id}/devices/list", deployment_devices_page),
        Route::get("/api/management/v1/deployments/deployments/{id}/device_list", device_list),
        Route::get("/api/management/v1/deployments/deployments/{id}/devices/{device_id}/log", device_log),
        Route::get("/api/management/v1/deployments/deployments/devices/{id}", device_history),
        Route::delete("/api/management/v1/deployments/deployments/devices/{id}", abort_device),
        Route::delete("/api/management/v1/deployments/deployments/devices/{id}/history", operator::delete_device_history),
        Route::post("/api/management/v1/deployments/deployments/statistics/list", operator::statistics_list),
        Route::get("/api/management/v1/deployments/limits/{name}", operator::limit),
        Route::get("/api/management/v1alpha1/deployments/software", operator::list_software),
        Route::get("/api/management/v1alpha1/deployments/software/tags", operator::software_tags),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

fn check_uuid(id: &str) -> ApiResult<()> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::bad_request("ID is not a valid UUID"))
}

// ----- artifacts -----

async fn upload_artifact(
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
async fn generate_artifact(
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

async fn list_artifacts(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let pairs = query_pairs(q.as_deref());
    let find = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let (name, description, device_type) = (find("name"), find("description"), find("device_type"));
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
async fn list_artifacts_v2(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(q.as_deref());
    let filter = deployments::operator::ArtifactFilterV2::from_pairs(&pairs)?;
    let paging = deployments::operator::paging_v2(&pairs)?;
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

async fn get_artifact(
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
struct Description {
    #[serde(default)]
    description: String,
}

async fn edit_artifact(
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

async fn delete_artifact(
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

async fn download_link(
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
async fn start_direct_upload(State(s): State<Services>, auth: UserAuth) -> ApiResult<Json<Value>> {
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
async fn complete_direct_upload(
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

// ----- deployments -----

async fn created(deployment: Deployment) -> Response {
    (
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("{V1}/deployments/{}", deployment.id),
        )],
    )
        .into_response()
}

async fn create_deployment(
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

async fn create_group_deployment(
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
async fn list_deployments(
    State(s): State<Services>,
    auth: UserAuth,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    let pairs = query_pairs(uri.query());
    let paging = Paging::from_pairs(&pairs)?;
    let query = deployments::listing::DeploymentQuery::from_pairs(&pairs)?;
    let all = query.apply(s.deployments.deployments(auth.tenant()).await?);
    let total = all.len() as u64;
    let page: Vec<Value> = paging.slice(all).iter().map(Deployment::to_json).collect();
    let links = link_headers(uri.path(), &pairs, paging, Extent::Total(total));
    Ok(list_response(page, links, Some(total)))
}

async fn get_deployment(
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
struct StatusBody {
    status: String,
}

async fn abort_deployment(
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

async fn statistics(
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
async fn device_json(s: &Services, tenant: &str, dd: &DeviceDeployment) -> Value {
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

async fn deployment_devices(
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

async fn deployment_devices_page(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    check_uuid(&id)?;
    let pairs = query_pairs(q.as_deref());
    let paging = Paging::from_pairs(&pairs)?;
    let mut devices = s.deployments.deployment_devices(auth.tenant(), &id).await?;
    if let Some((_, status)) = pairs.iter().find(|(k, _)| k == "status") {
        let wanted = status_filter(status)
            .ok_or_else(|| ApiError::bad_request(format!("invalid status: {status}")))?;
        devices.retain(|d| wanted.contains(&d.status.as_str()));
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

async fn device_list(
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

async fn device_log(
    State(s): State<Services>,
    auth: UserAuth,
    Path((id, device)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_uuid(&id)?;
    let text = s.deployments.log_text(auth.tenant(), &id, &device).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

/// A device's deployments, newest first (`per_page` at most 20).
async fn device_history(
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
    let mut history = s.deployments.device_history(auth.tenant(), &device).await?;
    if let Some((_, status)) = pairs.iter().find(|(k, _)| k == "status") {
        let wanted = status_filter(status)
            .ok_or_else(|| ApiError::bad_request(format!("invalid status: {status}")))?;
        history.retain(|(_, dd)| wanted.contains(&dd.status.as_str()));
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

async fn abort_device(
    State(s): State<Services>,
    auth: UserAuth,
    Path(device): Path<String>,
) -> ApiResult<StatusCode> {
    s.deployments
        .end_device_deployments(auth.tenant(), &device, "aborted")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
