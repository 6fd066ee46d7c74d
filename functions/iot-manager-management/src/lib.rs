//! iot-manager management API: the tenant's integration (list, create, read, credentials,
//! remove), the stored lifecycle events, and a device's state in the integrations' clouds (read
//! all, read and replace one; forget the device). Handlers parse the request and call
//! `iot_manager::IotManager`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::Bytes;
use mender_http::paging::{query_pairs, Paging};
use mender_http::{ApiError, ApiResult, Route, UserAuth};
use serde_json::Value;
use services::Services;

const BASE: &str = "/api/management/v1/iot-manager";

/// Every route of this function and its handler (one `HttpApi` event each in the template).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::get("/api/management/v1/iot-manager/integrations", list_integrations),
        Route::post("/api/management/v1/iot-manager/integrations", create_integration),
        Route::get("/api/management/v1/iot-manager/integrations/{id}", get_integration),
        Route::delete("/api/management/v1/iot-manager/integrations/{id}", remove_integration),
        Route::put("/api/management/v1/iot-manager/integrations/{id}/credentials", set_credentials),
        Route::delete("/api/management/v1/iot-manager/devices/{id}", delete_device),
        Route::get("/api/management/v1/iot-manager/devices/{id}/state", get_device_states),
        Route::get("/api/management/v1/iot-manager/devices/{id}/state/{integration_id}", get_device_state),
        Route::put("/api/management/v1/iot-manager/devices/{id}/state/{integration_id}", set_device_state),
        Route::get("/api/management/v1/iot-manager/events", list_events),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

/// Go's `uuid.Parse` errors.
fn uuid_problem(text: &str) -> Option<String> {
    if uuid::Uuid::parse_str(text).is_ok() {
        return None;
    }
    Some(if matches!(text.len(), 32 | 36 | 38 | 45) {
        "invalid UUID format".to_owned()
    } else {
        format!("invalid UUID length: {}", text.len())
    })
}

/// An integration id of the path in its canonical form, or upstream's 400.
fn integration_id(text: &str) -> ApiResult<String> {
    match uuid_problem(text) {
        None => Ok(uuid::Uuid::parse_str(text)
            .map(|u| u.to_string())
            .unwrap_or_default()),
        Some(problem) => Err(ApiError::bad_request(format!(
            "integration ID must be a valid UUID: {problem}"
        ))),
    }
}

/// The state routes' shorter message.
fn state_integration_id(text: &str) -> ApiResult<String> {
    integration_id(text).map_err(|_| ApiError::bad_request("integration ID is not a valid UUID"))
}

async fn list_integrations(State(s): State<Services>, auth: UserAuth) -> ApiResult<Json<Value>> {
    let integrations = s.iot_manager.integrations(auth.tenant()).await?;
    Ok(Json(Value::Array(
        integrations.iter().map(|i| i.to_json()).collect(),
    )))
}

async fn create_integration(
    State(s): State<Services>,
    auth: UserAuth,
    body: Bytes,
) -> ApiResult<Response> {
    let created = s
        .iot_manager
        .create_integration(auth.tenant(), &body)
        .await?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("{BASE}/integrations/{}", created.id),
        )],
    )
        .into_response())
}

async fn get_integration(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = integration_id(&id)?;
    Ok(Json(
        s.iot_manager
            .integration(auth.tenant(), &id)
            .await?
            .to_json(),
    ))
}

async fn remove_integration(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = integration_id(&id)?;
    s.iot_manager.remove_integration(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_credentials(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let id = integration_id(&id)?;
    s.iot_manager
        .set_credentials(auth.tenant(), &id, &body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_device(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.iot_manager.delete_device(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_device_states(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(s.iot_manager.device_states(auth.tenant(), &id).await?))
}

async fn get_device_state(
    State(s): State<Services>,
    auth: UserAuth,
    Path((id, integration)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let integration = state_integration_id(&integration)?;
    let state = s
        .iot_manager
        .device_state(auth.tenant(), &id, &integration)
        .await?;
    Ok(Json(
        serde_json::to_value(state).map_err(ApiError::internal)?,
    ))
}

async fn set_device_state(
    State(s): State<Services>,
    auth: UserAuth,
    Path((id, integration)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let integration = state_integration_id(&integration)?;
    let state = iot_manager::model::parse_state(&body).map_err(ApiError::bad_request)?;
    let state = s
        .iot_manager
        .set_device_state(auth.tenant(), &id, &integration, &state)
        .await?;
    Ok(Json(
        serde_json::to_value(state).map_err(ApiError::internal)?,
    ))
}

/// `integration_id` (empty: no filter).
#[derive(serde::Deserialize)]
struct EventsParams {
    integration_id: Option<String>,
}

async fn list_events(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let pairs = query_pairs(query.as_deref());
    let paging = Paging::from_pairs(&pairs)?;
    let params: EventsParams = mender_http::query::from_pairs(&pairs)?;
    let integration = match params.integration_id.as_deref() {
        Some(v) if !v.is_empty() => Some(
            integration_id(v)
                .map_err(|_| ApiError::bad_request("integration ID is not a valid UUID"))?,
        ),
        _ => None,
    };
    let per_page = usize::try_from(paging.per_page).unwrap_or(usize::MAX);
    let events = s
        .iot_manager
        .events(
            auth.tenant(),
            paging.offset(),
            per_page,
            integration.as_deref(),
        )
        .await?;
    Ok(Json(
        serde_json::to_value(events).map_err(ApiError::internal)?,
    ))
}
