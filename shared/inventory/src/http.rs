//! The one place where inventory's errors become HTTP answers (Mender's error body, via
//! [`ApiError`]); the rest of the crate returns [`Error`] and builds no HTTP answer. The
//! texts are the domain's own, unchanged.

use mender_http::error::StatusCode;
use mender_http::ApiError;

use crate::Error;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::PreconditionFailed(m) => ApiError::new(StatusCode::PRECONDITION_FAILED, m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
        }
    }
}
