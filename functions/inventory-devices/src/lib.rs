//! inventory device API: `PUT` (replace) and `PATCH` (merge) of
//! `/api/devices/v1/inventory/device/attributes`, answered 200 with an empty body.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use inventory::AttributeIn;
use mender_http::{ApiResult, DeviceAuth, MenderJson, Route};
use services::Services;

/// Every route of this function and its handler. `infra/template.yaml` has one `HttpApi` event
/// per entry and the local server serves exactly these (checked by `tests/tests/template.rs`).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::put("/api/devices/v1/inventory/device/attributes", replace_attributes),
        Route::patch("/api/devices/v1/inventory/device/attributes", merge_attributes),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
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
