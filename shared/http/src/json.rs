//! `MenderJson<T>`: a JSON body extractor with upstream's checks and error texts: a wrong
//! `Content-Type` is 415, an over-limit body 413, malformed JSON 400, all in Mender's body.
//! Chunked bodies (no `Content-Length`, as mender-client's proxy sends) are accepted.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::ApiError;

pub struct MenderJson<T>(pub T);

/// Checks `Content-Type` when present: JSON endpoints take `application/json` only.
pub fn check_json_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Invalid value for Content-Type header"))?;
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Invalid value for Content-Type header: {value}"
        )));
    }
    if essence != "application/json" {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Bad Content-Type, expected 'application/json'",
        ));
    }
    Ok(())
}

/// Reads the whole body within the router's size limit.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        let status = rejection.status();
        if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "request body too large")
        } else {
            ApiError::new(status, rejection.body_text())
        }
    })
}

/// Parses JSON with upstream's message for malformed bodies and Go's meaning of `null`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    from_go_json(body)
        .map_err(|e| ApiError::bad_request(format!("failed to decode request body: {e}")))
}

/// Decodes JSON the way Go's `encoding/json` fills a struct: a member whose value is `null`
/// leaves the field at its zero value, so `{"tenant_token": null}` reads as if the member
/// were absent (our fields with `#[serde(default)]`), at any depth of objects.
pub fn from_go_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(body)?;
    drop_null_members(&mut value);
    serde_json::from_value(value)
}

fn drop_null_members(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_null_members);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_members),
        _ => {}
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MenderJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let body = read_body(req, state).await?;
        parse_json(&body).map(MenderJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Request {
        #[serde(default)]
        token: String,
        #[serde(default)]
        list: Vec<Inner>,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Inner {
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn null_members_are_zero_values() {
        let parsed: Result<Request, _> =
            from_go_json(br#"{"token": null, "list": [{"n": null}, {"n": 2}]}"#);
        assert_eq!(
            parsed.ok(),
            Some(Request {
                token: String::new(),
                list: vec![Inner { n: 0 }, Inner { n: 2 }],
            })
        );
        assert!(from_go_json::<Request>(br#"{"token": 5}"#).is_err());
        assert!(from_go_json::<Request>(b"{").is_err());
    }
}
