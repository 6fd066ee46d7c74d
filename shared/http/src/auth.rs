//! Token extractors. Every function verifies tokens itself: signature with the pinned
//! algorithm, expiry, then revocation through a store check ([`DeviceTokenCheck`] /
//! [`UserTokenCheck`]) with no cache, so a revoked token fails on its very next use.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use mender_tokens::{DeviceClaims, Keys, TokenError, UserClaims};

use crate::ApiError;

/// Revocation check for device tokens (implemented by deviceauth's store). It may also record
/// the device's check-in.
#[async_trait::async_trait]
pub trait DeviceTokenCheck: Send + Sync {
    async fn device_token_valid(&self, claims: &DeviceClaims) -> Result<bool, ApiError>;
}

/// Revocation check for user tokens (implemented by useradm's store).
#[async_trait::async_trait]
pub trait UserTokenCheck: Send + Sync {
    async fn user_token_valid(&self, claims: &UserClaims) -> Result<bool, ApiError>;
}

/// What a function needs to authenticate its callers.
#[derive(Clone)]
pub struct Authenticator {
    pub keys: Keys,
    pub devices: Option<Arc<dyn DeviceTokenCheck>>,
    pub users: Option<Arc<dyn UserTokenCheck>>,
}

/// An authenticated device.
#[derive(Clone, Debug)]
pub struct DeviceAuth {
    pub claims: DeviceClaims,
}

impl DeviceAuth {
    pub fn device_id(&self) -> &str {
        &self.claims.sub
    }
    pub fn tenant(&self) -> &str {
        &self.claims.tenant
    }
}

/// An authenticated user (login token or personal access token).
#[derive(Clone, Debug)]
pub struct UserAuth {
    pub claims: UserClaims,
}

impl UserAuth {
    pub fn user_id(&self) -> &str {
        &self.claims.sub
    }
    pub fn tenant(&self) -> &str {
        &self.claims.tenant
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn cookie_jwt(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("JWT="))
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::unauthorized(message)
}

impl<S> FromRequestParts<S> for DeviceAuth
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let auth = Authenticator::from_ref(state);
        let token = bearer(parts)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("Authorization not present in header"))?;
        let claims: DeviceClaims = auth.keys.verify(token).map_err(|e| match e {
            TokenError::Expired => unauthorized("token expired"),
            _ => unauthorized("unauthorized"),
        })?;
        if !claims.device || claims.iss.is_empty() || claims.jti.is_empty() || claims.sub.is_empty()
        {
            return Err(unauthorized("unauthorized"));
        }
        let check = auth
            .devices
            .as_ref()
            .ok_or_else(|| ApiError::internal("device token check not configured"))?;
        if !check.device_token_valid(&claims).await? {
            return Err(unauthorized("unauthorized"));
        }
        Ok(DeviceAuth { claims })
    }
}

impl<S> FromRequestParts<S> for UserAuth
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let auth = Authenticator::from_ref(state);
        let token = bearer(parts)
            .or_else(|| cookie_jwt(parts))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("Authorization not present in header"))?;
        let claims: UserClaims = auth
            .keys
            .verify(token)
            .map_err(|_| unauthorized("invalid jwt"))?;
        if claims.iss.is_empty() || claims.jti.is_empty() || claims.sub.is_empty() {
            return Err(unauthorized("invalid jwt"));
        }
        if claims.scp != "mender.*" {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "unauthorized"));
        }
        if !claims.user {
            return Err(unauthorized("unauthorized"));
        }
        let check = auth
            .users
            .as_ref()
            .ok_or_else(|| ApiError::internal("user token check not configured"))?;
        if !check.user_token_valid(&claims).await? {
            return Err(unauthorized("unauthorized"));
        }
        Ok(UserAuth { claims })
    }
}
