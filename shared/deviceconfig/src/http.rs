//! The one place where deviceconfig's errors become HTTP answers (Mender's error body, via
//! [`ApiError`]); the rest of the crate returns [`Error`] and builds no HTTP answer. The texts
//! are upstream's, unchanged.

use mender_http::ApiError;

use crate::Error;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::NotFound => ApiError::not_found("device does not exist"),
            Error::Exists => ApiError::conflict("device already exists"),
            Error::Storage(e) => ApiError::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mender_aws::dynamo::DynamoError;
    use mender_http::error::StatusCode;

    #[test]
    fn statuses_and_texts() {
        let answer = |e: Error| {
            let a = ApiError::from(e);
            (a.status, a.message)
        };
        assert_eq!(
            answer(Error::BadRequest("invalid request body: x.".into())),
            (StatusCode::BAD_REQUEST, "invalid request body: x.".into())
        );
        assert_eq!(
            answer(Error::NotFound),
            (StatusCode::NOT_FOUND, "device does not exist".into())
        );
        assert_eq!(
            answer(Error::Exists),
            (StatusCode::CONFLICT, "device already exists".into())
        );
        assert_eq!(
            answer(Error::Storage(DynamoError::Other("x".into()))).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
