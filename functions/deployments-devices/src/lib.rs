//! deployments device API: the update check (`deployments/next`: v2 POST, v1 POST, v1 GET),
//! status reports and log uploads. The artifact link is a presigned S3 GET valid 24 hours; a
//! configuration deployment's link is signed by the server (15 minutes) and its `GET` here
//! (no token: the signature is the authorization) generates the configuration artifact.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use deployments::configuration::{LinkError, Presign, LINK_LIFETIME_SECS};
use deployments::service::Instructions;
use deployments::Artifact;
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
        Route::get("/api/devices/v1/deployments/download/configuration/{deployment_id}/{device_type}/{device_id}", download_configuration),
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
    headers: &HeaderMap,
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
    if deployment.is_configuration() {
        return configuration_answer(s, auth, headers, &deployment.id, &artifact, device_type);
    }
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
    headers: HeaderMap,
    MenderJson(body): MenderJson<NextV2>,
) -> ApiResult<Response> {
    let provides = body.device_provides;
    answer(
        &s,
        &auth,
        &headers,
        &text(&provides, "device_type"),
        &text(&provides, "artifact_name"),
    )
    .await
}

/// `POST /api/devices/v1/.../next` body = the provides map.
async fn next_v1_post(
    State(s): State<Services>,
    auth: DeviceAuth,
    headers: HeaderMap,
    MenderJson(provides): MenderJson<BTreeMap<String, Value>>,
) -> ApiResult<Response> {
    answer(
        &s,
        &auth,
        &headers,
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
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> ApiResult<Response> {
    answer(&s, &auth, &headers, &q.device_type, &q.artifact_name).await
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

/// The instructions of a configuration deployment: a link to [`download_configuration`] signed
/// for this device, on the host the device called (`X-Forwarded-Host`, else `Host`), as
/// upstream (no host ⇒ 500).
fn configuration_answer(
    s: &Services,
    auth: &DeviceAuth,
    headers: &HeaderMap,
    deployment_id: &str,
    artifact: &Artifact,
    device_type: &str,
) -> ApiResult<Response> {
    let host = ["x-forwarded-host", "host"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            ApiError::internal(
                "presign.hostname not configured; unable to generate download link  for configuration deployment",
            )
        })?;
    let expire = chrono::Utc::now() + chrono::Duration::seconds(LINK_LIFETIME_SECS);
    let uri = s.presign.link(
        &format!("https://{host}"),
        deployment_id,
        device_type,
        auth.device_id(),
        auth.tenant(),
        expire,
    );
    Ok(Json(json!({
        "id": deployment_id,
        "artifact": {
            "id": artifact.id,
            "artifact_name": artifact.name,
            "source": {
                "uri": uri,
                "expire": expire.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                "method": "GET",
            },
            "device_types_compatible": artifact.device_types_compatible,
        }
    }))
    .into_response())
}

#[derive(Deserialize)]
struct LinkQuery {
    #[serde(rename = "x-men-expire")]
    expire: Option<String>,
    #[serde(rename = "x-men-signature")]
    signature: Option<String>,
    #[serde(default)]
    tenant_id: String,
}

/// `GET .../download/configuration/{deployment_id}/{device_type}/{device_id}`: checks the
/// link's signature and expiry, then writes the configuration artifact.
async fn download_configuration(
    State(s): State<Services>,
    Path((deployment_id, device_type, device_id)): Path<(String, String, String)>,
    Query(q): Query<LinkQuery>,
) -> ApiResult<Response> {
    if deployment_id.is_empty() || device_type.is_empty() || device_id.is_empty() {
        return Err(ApiError::not_found("Resource not found"));
    }
    let path = Presign::path(&deployment_id, &device_type, &device_id);
    s.presign
        .verify(
            &path,
            q.expire.as_deref(),
            q.signature.as_deref(),
            &q.tenant_id,
        )
        .map_err(|e| match e {
            LinkError::Invalid(_) => ApiError::bad_request(e.to_string()),
            LinkError::Expired | LinkError::Signature => ApiError::forbidden(e.to_string()),
        })?;
    let artifact = s
        .deployments
        .configuration_download(&q.tenant_id, &deployment_id, &device_type)
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.mender-artifact"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"artifact.mender\"",
            ),
        ],
        artifact,
    )
        .into_response())
}
