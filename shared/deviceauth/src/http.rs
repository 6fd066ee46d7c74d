//! The one place where deviceauth's errors become HTTP answers (Mender's error body, via
//! [`ApiError`]), and the device-token check the extractors run ([`DeviceTokenCheck`]); the rest
//! of the crate returns [`Error`] and builds no HTTP answer. The texts are the domain's own,
//! unchanged.

use async_trait::async_trait;
use mender_http::error::StatusCode;
use mender_http::{ApiError, DeviceTokenCheck};
use mender_tokens::DeviceClaims;

use crate::store::Store;
use crate::{Deviceauth, Error};

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::Unauthorized(m) => ApiError::unauthorized(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::NotFoundBare => ApiError::bare(StatusCode::NOT_FOUND),
            Error::Unprocessable(m) => ApiError::unprocessable(m),
            Error::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            Error::Exists(_) => ApiError::conflict("device already exists"),
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
        }
    }
}

#[async_trait]
impl<S: Store> DeviceTokenCheck for Deviceauth<S> {
    /// [`Deviceauth::check_device_token`], its errors answered as above.
    async fn device_token_valid(&self, claims: &DeviceClaims) -> Result<bool, ApiError> {
        Ok(self.check_device_token(claims).await?)
    }
}
