//! deployments device API: the update check (`deployments/next`: v2 POST, v1 POST, v1 GET),
//! status reports and log uploads. The artifact link is a presigned S3 GET valid 24 hours.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use deployments::service::Instructions;
use mender_aws::s3::ArtifactStorage;
use mender_http::{ApiError, ApiResult, DeviceAuth, MenderJson, Route};
use serde::Deserialize;
use serde_json::{json, Value};
use services::Services;

/// How long a device's download link is valid.
pub const DOWNLOAD_LINK_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Every route of this function and its handler (one `HttpApi` event each in the template).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::post("/api/devices/v2/deployments/device/deployments/next", next_v2),
        Route::post("/api/devices/v1/deployments/device/deployments/next", next_v1_post),
        Route::get("/api/devices/v1/deployments/device/deployments/next", next_v1_get),
        Route::put("/api/devices/v1/deployments/device/deployments/{id}/status", report_status),
        Route::put("/api/devices/v1/deployments/device/deployments/{id}/log", upload_log),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

fn text(provides: &BTreeMap<String, Value>, key: &str) -> String {
    provides
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn answer(
    s: &Services,
    auth: &DeviceAuth,
    device_type: &str,
    artifact_name: &str,
) -> ApiResult<Response> {
    let next = s
        .deployments
        .next(auth.tenant(), auth.device_id(), device_type, artifact_name)
        .await?;
    let Some(Instructions {
        deployment,
        artifact,
    }) = next
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let link = s
        .artifacts
        .presign_get(
            &ArtifactStorage::key(auth.tenant(), &artifact.id),
            DOWNLOAD_LINK_LIFETIME,
            &format!("{}.mender", artifact.name),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "id": deployment.id,
        "artifact": {
            "id": artifact.id,
            "artifact_name": artifact.name,
            "source": {"uri": link.uri, "expire": link.expire, "method": "GET"},
            "device_types_compatible": artifact.device_types_compatible,
        }
    }))
    .into_response())
}

#[derive(Deserialize)]
struct NextV2 {
    #[serde(default)]
    device_provides: BTreeMap<String, Value>,
}

/// `POST /api/devices/v2/.../next` body `{"device_provides": {...}, "update_control_map": bool}`.
async fn next_v2(
    State(s): State<Services>,
    auth: DeviceAuth,
    MenderJson(body): MenderJson<NextV2>,
) -> ApiResult<Response> {
    let provides = body.device_provides;
    answer(
        &s,
        &auth,
        &text(&provides, "device_type"),
        &text(&provides, "artifact_name"),
    )
    .await
}

/// `POST /api/devices/v1/.../next` body = the provides map.
async fn next_v1_post(
    State(s): State<Services>,
    auth: DeviceAuth,
    MenderJson(provides): MenderJson<BTreeMap<String, Value>>,
) -> ApiResult<Response> {
    answer(
        &s,
        &auth,
        &text(&provides, "device_type"),
        &text(&provides, "artifact_name"),
    )
    .await
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    artifact_name: String,
    #[serde(default)]
    device_type: String,
}

async fn next_v1_get(
    State(s): State<Services>,
    auth: DeviceAuth,
    Query(q): Query<NextQuery>,
) -> ApiResult<Response> {
    answer(&s, &auth, &q.device_type, &q.artifact_name).await
}

#[derive(Deserialize)]
struct StatusReport {
    status: String,
    #[serde(default)]
    substate: Option<String>,
}

async fn report_status(
    State(s): State<Services>,
    auth: DeviceAuth,
    Path(id): Path<String>,
    MenderJson(body): MenderJson<StatusReport>,
) -> ApiResult<StatusCode> {
    s.deployments
        .report_status(
            auth.tenant(),
            auth.device_id(),
            &id,
            &body.status,
            body.substate,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct LogUpload {
    #[serde(default)]
    messages: Vec<Value>,
}

async fn upload_log(
    State(s): State<Services>,
    auth: DeviceAuth,
    Path(id): Path<String>,
    MenderJson(body): MenderJson<LogUpload>,
) -> ApiResult<StatusCode> {
    s.deployments
        .put_log(auth.tenant(), auth.device_id(), &id, &body.messages)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
