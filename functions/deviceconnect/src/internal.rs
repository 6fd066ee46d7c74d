//! Internal endpoints (SPEC §7.4), for the other services and the load balancer's health
//! check; not exposed to clients. In this backend the provision and decommission workflow steps
//! write the device records through `deviceconnect-store` directly (as every workflow step
//! calls the domain code); these endpoints serve the same operations over HTTP, as upstream's
//! container does.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use mender_http::{ApiError, ApiResult, MenderJson};
use serde::Deserialize;

use crate::{client_command, Deviceconnect};

/// `GET /api/internal/v1/deviceconnect/alive`.
pub async fn alive() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /api/internal/v1/deviceconnect/health`: NATS connected and DynamoDB answering.
pub async fn health(State(dc): State<Deviceconnect>) -> ApiResult<StatusCode> {
    let unavailable = |what: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, what);
    match dc.nats.connection_state() {
        async_nats::connection::State::Connected => {}
        other => return Err(unavailable(format!("nats: {other}"))),
    }
    dc.store()
        .get("", "health-check")
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/internal/v1/deviceconnect/shutdown`: closes this instance's websockets (clients
/// reconnect elsewhere) and stops it (the container exits once its connections are gone);
/// `202`. Called before the task is stopped, as upstream's pre-stop hook.
pub async fn shutdown(State(dc): State<Deviceconnect>) -> StatusCode {
    tracing::info!("shutdown requested");
    dc.shut_down();
    StatusCode::ACCEPTED
}

fn tenant_path(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    path.map(|Path(t)| t)
        .map_err(|_| ApiError::bad_request("invalid tenant id"))
}

fn device_path(path: Result<Path<(String, String)>, PathRejection>) -> ApiResult<(String, String)> {
    path.map(|Path(p)| p)
        .map_err(|_| ApiError::bad_request("invalid tenant or device id"))
}

/// `DELETE /api/internal/v1/deviceconnect/tenants/{tenant}`: every record of the tenant.
pub async fn delete_tenant(
    State(dc): State<Deviceconnect>,
    tenant: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let tenant = tenant_path(tenant)?;
    dc.store()
        .delete_tenant(&tenant)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct NewDevice {
    #[serde(default)]
    device_id: String,
}

/// `POST /api/internal/v1/deviceconnect/tenants/{tenant}/devices` `{"device_id"}`: the record of
/// a provisioned device, `disconnected` until it connects (an existing one is kept).
pub async fn provision_device(
    State(dc): State<Deviceconnect>,
    tenant: Result<Path<String>, PathRejection>,
    MenderJson(body): MenderJson<NewDevice>,
) -> ApiResult<StatusCode> {
    let tenant = tenant_path(tenant)?;
    if body.device_id.is_empty() {
        return Err(ApiError::bad_request("device_id is empty"));
    }
    dc.store()
        .provision(&tenant, &body.device_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::CREATED)
}

/// `DELETE /api/internal/v1/deviceconnect/tenants/{tenant}/devices/{id}`.
pub async fn delete_device(
    State(dc): State<Deviceconnect>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (tenant, device_id) = device_path(path)?;
    dc.store()
        .delete_device(&tenant, &device_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/internal/v1/deviceconnect/tenants/{tenant}/devices/{id}/check-update`.
pub async fn check_update(
    State(dc): State<Deviceconnect>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (tenant, device_id) = device_path(path)?;
    client_command(&dc, &tenant, &device_id, "check-update", None).await
}

/// `POST /api/internal/v1/deviceconnect/tenants/{tenant}/devices/{id}/send-inventory`.
pub async fn send_inventory(
    State(dc): State<Deviceconnect>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (tenant, device_id) = device_path(path)?;
    client_command(&dc, &tenant, &device_id, "send-inventory", None).await
}
