//! Claim sets of the two Mender token kinds: device tokens (issued by deviceauth)
//! and user tokens (issued by useradm), with the field names upstream Mender uses.

use serde::{Deserialize, Deserializer, Serialize};

/// `iss` of device tokens, as upstream deviceauth sets it.
pub const DEVICE_ISSUER: &str = "Mender";
/// `iss` of user tokens, as upstream useradm sets it.
pub const USER_ISSUER: &str = "mender.useradm";
/// `scp` of user tokens: full access.
pub const USER_SCOPE: &str = "mender.*";
/// `mender.plan` of every token: all features enabled.
pub const PLAN_ENTERPRISE: &str = "enterprise";

/// One entry of `mender.addons`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Addon {
    pub name: String,
    pub enabled: bool,
}

impl Addon {
    /// The add-ons every token enables: configure, troubleshoot and monitor.
    pub fn all_enabled() -> Vec<Addon> {
        ["configure", "troubleshoot", "monitor"]
            .into_iter()
            .map(|name| Addon {
                name: name.to_string(),
                enabled: true,
            })
            .collect()
    }
}

/// Claims of a device token.
///
/// `mender.device` must be present and `true` when deserialising, so a user token
/// never verifies as a device token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DeviceClaims {
    pub jti: String,
    /// Device id.
    pub sub: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(rename = "mender.device", deserialize_with = "must_be_true")]
    pub device: bool,
    #[serde(rename = "mender.plan", default)]
    pub plan: String,
    #[serde(rename = "mender.addons", default)]
    pub addons: Vec<Addon>,
    #[serde(rename = "mender.trial", default)]
    pub trial: bool,
    /// Tenant id; empty in open source (and then not serialised).
    #[serde(
        rename = "mender.tenant",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tenant: String,
}

impl DeviceClaims {
    /// Claims for device `device_id`, issued at `now` (Unix seconds), valid for
    /// `lifetime_secs`.
    pub fn new(jti: &str, device_id: &str, tenant: &str, now: i64, lifetime_secs: i64) -> Self {
        DeviceClaims {
            jti: jti.to_string(),
            sub: device_id.to_string(),
            iss: DEVICE_ISSUER.to_string(),
            iat: now,
            exp: now.saturating_add(lifetime_secs),
            device: true,
            plan: PLAN_ENTERPRISE.to_string(),
            addons: Addon::all_enabled(),
            trial: false,
            tenant: tenant.to_string(),
        }
    }
}

/// Claims of a user (management API) token.
///
/// `mender.user` must be present and `true` when deserialising, so a device token
/// never verifies as a user token. `exp` absent means the token never expires
/// (personal access tokens without expiry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UserClaims {
    pub jti: String,
    /// User id.
    pub sub: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub scp: String,
    #[serde(rename = "mender.user", deserialize_with = "must_be_true")]
    pub user: bool,
    /// Tenant id; empty in open source (and then not serialised).
    #[serde(
        rename = "mender.tenant",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tenant: String,
}

impl UserClaims {
    /// Claims for user `user_id`, issued (and valid from) `now` (Unix seconds);
    /// `lifetime_secs: None` gives a token without `exp`.
    pub fn new(
        jti: &str,
        user_id: &str,
        tenant: &str,
        now: i64,
        lifetime_secs: Option<i64>,
    ) -> Self {
        UserClaims {
            jti: jti.to_string(),
            sub: user_id.to_string(),
            iss: USER_ISSUER.to_string(),
            iat: now,
            nbf: now,
            exp: lifetime_secs.map(|secs| now.saturating_add(secs)),
            scp: USER_SCOPE.to_string(),
            user: true,
            tenant: tenant.to_string(),
        }
    }
}

/// Accepts only the JSON literal `true` (marker claims such as `mender.device`).
fn must_be_true<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    if bool::deserialize(deserializer)? {
        Ok(true)
    } else {
        Err(serde::de::Error::custom("marker claim must be true"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn device_claims_serialise_like_upstream() {
        let claims = DeviceClaims::new("j", "dev", "", 100, 50);
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            value,
            json!({
                "jti": "j", "sub": "dev", "iss": "Mender", "iat": 100, "exp": 150,
                "mender.device": true, "mender.plan": "enterprise",
                "mender.addons": [
                    {"name": "configure", "enabled": true},
                    {"name": "troubleshoot", "enabled": true},
                    {"name": "monitor", "enabled": true}
                ],
                "mender.trial": false
            })
        );
        let with_tenant =
            serde_json::to_value(DeviceClaims::new("j", "dev", "t1", 100, 50)).unwrap();
        assert_eq!(with_tenant["mender.tenant"], json!("t1"));
    }

    #[test]
    fn user_claims_serialise_like_upstream() {
        let value = serde_json::to_value(UserClaims::new("j", "u", "", 100, None)).unwrap();
        assert_eq!(
            value,
            json!({
                "jti": "j", "sub": "u", "iss": "mender.useradm", "iat": 100, "nbf": 100,
                "scp": "mender.*", "mender.user": true
            })
        );
        let value = serde_json::to_value(UserClaims::new("j", "u", "t", 100, Some(10))).unwrap();
        assert_eq!(value["exp"], json!(110));
        assert_eq!(value["mender.tenant"], json!("t"));
    }

    #[test]
    fn marker_claims_keep_kinds_apart() {
        let user = serde_json::to_value(UserClaims::new("j", "u", "", 100, Some(10))).unwrap();
        assert!(serde_json::from_value::<DeviceClaims>(user).is_err());
        let device = serde_json::to_value(DeviceClaims::new("j", "d", "", 100, 10)).unwrap();
        assert!(serde_json::from_value::<UserClaims>(device.clone()).is_err());
        let mut forged = device;
        forged["mender.device"] = json!(false);
        assert!(serde_json::from_value::<DeviceClaims>(forged).is_err());
    }
}
