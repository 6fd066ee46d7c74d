//! The one place where deployments' errors become HTTP answers (Mender's error body, via
//! [`ApiError`]); the rest of the crate returns [`Error`] and builds no HTTP answer. The
//! texts are the domain's own, unchanged; two conflicts carry extra fields (`metadata.conflict`
//! on a duplicate artifact, `active_deployments` on releases in use).

use mender_http::ApiError;
use serde_json::json;

use crate::Error;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::ArtifactExists(conflict) => {
                ApiError::conflict("an artifact with the same name and depends already exists")
                    .with_extra("metadata", json!({ "conflict": conflict }))
            }
            Error::Unprocessable(m) => ApiError::unprocessable(m),
            Error::ReleasesInUse(ids) => ApiError::conflict("release(s) used in active deployment")
                .with_extra("active_deployments", json!(ids)),
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
        }
    }
}
