//! Mender's error body `{"error": "...", "request_id": "..."}` and the one place where failures
//! become HTTP statuses. Handlers return [`ApiResult`]; domain crates convert their `thiserror`
//! enums into [`ApiError`] with `From` impls next to their handlers.

use axum::http::header;
pub use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::request_id;

pub type ApiResult<T> = Result<T, ApiError>;

/// A failed request: status, message shown to the client, optional extra top-level fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Extra fields merged into the body (upstream has a few, e.g. `metadata` on conflicts).
    pub extra: Option<Map<String, Value>>,
    /// Answer with this status and no body at all (upstream does so on some 404s).
    pub empty_body: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            extra: None,
            empty_body: false,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    /// A status with no body (upstream answers some 404s like this).
    pub fn bare(status: StatusCode) -> Self {
        ApiError {
            empty_body: true,
            ..Self::new(status, "")
        }
    }
    /// 500 `internal error`; the cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra
            .get_or_insert_with(Map::new)
            .insert(key.to_owned(), value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.empty_body {
            return self.status.into_response();
        }
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.message));
        if let Some(extra) = self.extra {
            body.extend(extra);
        }
        if let Some(id) = request_id::current() {
            body.insert("request_id".into(), Value::String(id));
        }
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            Value::Object(body).to_string(),
        )
            .into_response()
    }
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not found")
}

/// Fallback for a known path with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Shorthand for a JSON 200 body.
pub fn json_ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}
