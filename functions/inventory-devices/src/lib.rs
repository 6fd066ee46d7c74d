//! inventory device API: `PUT` (replace) and `PATCH` (merge) of
//! `/api/devices/v1/inventory/device/attributes`, answered 200 with an empty body.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;
use inventory::AttributeIn;
use mender_http::{ApiResult, DeviceAuth, MenderJson};
use services::Services;

pub fn router(services: Services) -> Router {
    Router::new()
        .route(
            "/api/devices/v1/inventory/device/attributes",
            put(replace_attributes).patch(merge_attributes),
        )
        .with_state(services)
}

async fn replace_attributes(
    State(s): State<Services>,
    auth: DeviceAuth,
    MenderJson(attrs): MenderJson<Vec<AttributeIn>>,
) -> ApiResult<StatusCode> {
    s.inventory
        .device_update(auth.tenant(), auth.device_id(), attrs, true)
        .await?;
    Ok(StatusCode::OK)
}

async fn merge_attributes(
    State(s): State<Services>,
    auth: DeviceAuth,
    MenderJson(attrs): MenderJson<Vec<AttributeIn>>,
) -> ApiResult<StatusCode> {
    s.inventory
        .device_update(auth.tenant(), auth.device_id(), attrs, false)
        .await?;
    Ok(StatusCode::OK)
}
