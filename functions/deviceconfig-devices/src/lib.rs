//! deviceconfig device API: the device reads its configured configuration (`GET`, 404 `device
//! does not exist` before provisioning) and reports the one it applied (`PUT`, 204, an upsert).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use bytes::Bytes;
use deviceconfig::{parse_configuration, Configuration};
use mender_http::{ApiResult, DeviceAuth, Route};
use services::Services;

/// Every route of this function and its handler (one `HttpApi` event each in the template).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::get("/api/devices/v1/deviceconfig/configuration", get_configuration),
        Route::put("/api/devices/v1/deviceconfig/configuration", report_configuration),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

async fn get_configuration(
    State(s): State<Services>,
    auth: DeviceAuth,
) -> ApiResult<Json<Configuration>> {
    let device = s
        .deviceconfig
        .device(auth.tenant(), auth.device_id())
        .await?;
    Ok(Json(device.configured))
}

async fn report_configuration(
    State(s): State<Services>,
    auth: DeviceAuth,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let reported = parse_configuration(&body)?;
    s.deviceconfig
        .set_reported(auth.tenant(), auth.device_id(), &reported)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
