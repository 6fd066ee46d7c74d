//! deviceauth device API: `POST /api/devices/v1/authentication/auth_requests`. The body is
//! verified against `X-MEN-Signature` byte for byte, never re-serialised.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use deviceauth::AuthRequestOutcome;
use mender_http::json::check_json_content_type;
use mender_http::{ApiError, ApiResult, Route};
use services::Services;

/// Every route of this function and its handler. `infra/template.yaml` has one `HttpApi` event
/// per entry and the local server serves exactly these (checked by `tests/tests/template.rs`).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::post("/api/devices/v1/authentication/auth_requests", auth_request),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

async fn auth_request(
    State(s): State<Services>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_json_content_type(&headers)?;
    let signature = headers.get("x-men-signature").and_then(|v| v.to_str().ok());
    // Open source Mender has one tenant, ""; the tenant token is accepted and ignored.
    match s.deviceauth.auth_request("", &body, signature).await? {
        AuthRequestOutcome::Token(token) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/jwt")],
            token,
        )
            .into_response()),
        AuthRequestOutcome::Unauthorized => Err(ApiError::unauthorized("dev auth: unauthorized")),
    }
}
