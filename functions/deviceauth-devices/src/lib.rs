//! deviceauth device API: `POST /api/devices/v1/authentication/auth_requests`. The body is
//! verified against `X-MEN-Signature` byte for byte, never re-serialised.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use deviceauth::AuthRequestOutcome;
use mender_http::json::check_json_content_type;
use mender_http::{ApiError, ApiResult};
use services::Services;

pub fn router(services: Services) -> Router {
    Router::new()
        .route(
            "/api/devices/v1/authentication/auth_requests",
            post(auth_request),
        )
        .with_state(services)
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
