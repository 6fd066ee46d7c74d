//! The `Origin` check of cookie-authenticated websocket upgrades. A browser sends the GUI's
//! `JWT` cookie with a websocket upgrade to this host whatever page opened it (websockets are
//! not subject to CORS), so when the user token came from the cookie the upgrade must come from
//! the same origin: its `Origin` must name the request's `Host` (default ports aside) or one of
//! [`crate::Settings::allowed_origins`]; otherwise `403`. A bearer token (mender-cli, scripts)
//! is no ambient credential: those upgrades are not checked.

use axum::http::{header, HeaderMap, StatusCode};
use mender_http::{ApiError, ApiResult};

use crate::Deviceconnect;

fn forbidden() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "origin not allowed")
}

/// Whether the request carries a bearer token (the user token extractor prefers it over the
/// cookie).
fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
}

/// `host[:port]` lower-cased, without the scheme's default port.
fn authority(value: &str, scheme: &str) -> String {
    let value = value.trim().to_ascii_lowercase();
    let default = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    match value.strip_suffix(default) {
        Some(bare) if !default.is_empty() => bare.to_owned(),
        _ => value,
    }
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (a `Host` header value).
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    !rest.is_empty() && !rest.contains('/') && authority(rest, &scheme) == authority(host, &scheme)
}

/// Passes bearer-authenticated requests; a cookie-authenticated one needs an allowed `Origin`.
pub fn check(dc: &Deviceconnect, headers: &HeaderMap) -> ApiResult<()> {
    if has_bearer(headers) {
        return Ok(());
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim().trim_end_matches('/'))
        .ok_or_else(forbidden)?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let allowed = (!host.is_empty() && same_host(origin, host))
        || dc
            .settings()
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin));
    if allowed {
        Ok(())
    } else {
        tracing::warn!(%origin, %host, "cookie-authenticated websocket from another origin refused");
        Err(forbidden())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_their_host() {
        assert!(same_host("https://localhost:8443", "localhost:8443"));
        assert!(same_host(
            "https://Mender.example.com",
            "mender.example.com"
        ));
        assert!(same_host(
            "https://mender.example.com",
            "mender.example.com:443"
        ));
        assert!(same_host(
            "http://mender.example.com:80",
            "mender.example.com"
        ));
        assert!(!same_host("https://evil.example.com", "mender.example.com"));
        assert!(!same_host(
            "https://mender.example.com:8443",
            "mender.example.com"
        ));
        assert!(!same_host(
            "https://mender.example.com.evil.com",
            "mender.example.com"
        ));
        assert!(!same_host("null", "mender.example.com"));
        assert!(!same_host("https://", ""));
    }
}
