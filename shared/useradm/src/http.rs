//! The one place where useradm's errors become HTTP answers (Mender's error body, via
//! [`ApiError`]), and the user-token check the extractors run ([`UserTokenCheck`]); the rest of
//! the crate returns [`Error`] and builds no HTTP answer. The texts are the domain's own,
//! unchanged.

use async_trait::async_trait;
use mender_http::error::StatusCode;
use mender_http::{ApiError, UserTokenCheck};
use mender_tokens::UserClaims;

use crate::store::Store;
use crate::{Error, Useradm};

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::Unprocessable(m) => ApiError::unprocessable(m),
            Error::Unauthorized(m) => ApiError::unauthorized(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::PreconditionFailed(m) => ApiError::new(StatusCode::PRECONDITION_FAILED, m),
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::TooManyRequests(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, m),
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
        }
    }
}

#[async_trait]
impl<S: Store> UserTokenCheck for Useradm<S> {
    /// [`Useradm::check_user_token`], its errors answered as above.
    async fn user_token_valid(&self, claims: &UserClaims) -> Result<bool, ApiError> {
        Ok(self.check_user_token(claims).await?)
    }
}
