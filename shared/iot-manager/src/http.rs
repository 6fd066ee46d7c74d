//! The one place where iot-manager's errors become HTTP answers (Mender's error body, via
//! [`ApiError`]); the rest of the crate returns [`Error`] and builds no HTTP answer. The texts
//! are the domain's own, unchanged.

use mender_http::ApiError;

use crate::Error;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
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
            answer(Error::BadRequest("b".into())),
            (StatusCode::BAD_REQUEST, "b".into())
        );
        assert_eq!(
            answer(Error::NotFound("n".into())),
            (StatusCode::NOT_FOUND, "n".into())
        );
        assert_eq!(
            answer(Error::Conflict("c".into())),
            (StatusCode::CONFLICT, "c".into())
        );
        assert_eq!(
            answer(Error::Storage(DynamoError::Other("s".into()))),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        );
        assert_eq!(
            answer(Error::Internal("i".into())),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        );
    }
}
