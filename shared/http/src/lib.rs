//! The HTTP layer every API function shares: Mender's error body and request id, the JSON body
//! extractor with Mender's checks, paging with `Link` / `X-Total-Count`, typed query
//! parameters ([`query::parse`]), the device and user token extractors, each function's route
//! list ([`Route`], [`routes::router`]), and [`finish`] which adds the common layers and the
//! 404/405 fallbacks to a function's router (the same router runs in Lambda and in the local
//! server).

pub mod auth;
pub mod drain;
pub mod error;
pub mod json;
pub mod paging;
pub mod query;
pub mod request_id;
pub mod routes;
pub mod time;

pub use auth::{Authenticator, DeviceAuth, DeviceTokenCheck, UserAuth, UserTokenCheck};
pub use error::{ApiError, ApiResult};
pub use json::MenderJson;
pub use paging::{link_headers, Paging};
pub use routes::Route;

use axum::extract::DefaultBodyLimit;
use axum::Router;

/// Default request body limit (upstream `request_size_limit`).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Adds what every served router needs: Mender 404/405 bodies, the body size limit and the
/// request id (outermost, so every error body carries it).
pub fn finish(router: Router) -> Router {
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(request_id::middleware))
}
