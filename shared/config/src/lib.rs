//! Runtime configuration of every function, read once at start from the environment.
//!
//! In AWS the SAM template sets these variables; the local stack builds a [`Config`] directly.
//! Nothing here talks to the network.
//!
//! The JWT key: only the functions that sign (tokens, configuration download links) get the
//! private key (`JWT_PRIVATE_KEY`); the others get the public key alone (`JWT_PUBLIC_KEY`).
//! `Debug` of a [`Config`] never shows the private key.

use std::env;
use std::fmt;

/// Names of the variables, so the template, the local stack and this module agree.
pub mod vars {
    pub const DEVICEAUTH_TABLE: &str = "DEVICEAUTH_TABLE";
    pub const USERADM_TABLE: &str = "USERADM_TABLE";
    pub const INVENTORY_TABLE: &str = "INVENTORY_TABLE";
    pub const DEPLOYMENTS_TABLE: &str = "DEPLOYMENTS_TABLE";
    pub const DEVICECONNECT_TABLE: &str = "DEVICECONNECT_TABLE";
    pub const DEVICECONFIG_TABLE: &str = "DEVICECONFIG_TABLE";
    pub const ARTIFACTS_BUCKET: &str = "ARTIFACTS_BUCKET";
    pub const PROVISION_DEVICE_QUEUE_URL: &str = "PROVISION_DEVICE_QUEUE_URL";
    pub const UPDATE_DEVICE_STATUS_QUEUE_URL: &str = "UPDATE_DEVICE_STATUS_QUEUE_URL";
    pub const UPDATE_DEVICE_INVENTORY_QUEUE_URL: &str = "UPDATE_DEVICE_INVENTORY_QUEUE_URL";
    pub const DECOMMISSION_DEVICE_QUEUE_URL: &str = "DECOMMISSION_DEVICE_QUEUE_URL";
    pub const PROCESS_ARTIFACT_QUEUE_URL: &str = "PROCESS_ARTIFACT_QUEUE_URL";
    pub const GENERATE_ARTIFACT_QUEUE_URL: &str = "GENERATE_ARTIFACT_QUEUE_URL";
    pub const IOT_MANAGER_EVENTS_QUEUE_URL: &str = "IOT_MANAGER_EVENTS_QUEUE_URL";
    /// PEM text of the server's private key (RSA => RS256, Ed25519 => EdDSA); set for the
    /// functions that sign only.
    pub const JWT_PRIVATE_KEY: &str = "JWT_PRIVATE_KEY";
    /// Path of a PEM file holding the key, used when `JWT_PRIVATE_KEY` is unset.
    pub const JWT_PRIVATE_KEY_FILE: &str = "JWT_PRIVATE_KEY_FILE";
    /// PEM text (`PUBLIC KEY`, SubjectPublicKeyInfo) of the server's public key: what the
    /// functions that only verify tokens get instead of the private key.
    pub const JWT_PUBLIC_KEY: &str = "JWT_PUBLIC_KEY";
    /// Path of a PEM file holding the public key, used when `JWT_PUBLIC_KEY` is unset.
    pub const JWT_PUBLIC_KEY_FILE: &str = "JWT_PUBLIC_KEY_FILE";
    pub const BCRYPT_COST: &str = "BCRYPT_COST";
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {0} is invalid: {1}")]
    Invalid(&'static str, String),
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
}

/// The queues that replace upstream's workflows engine (one per workflow).
#[derive(Clone, Debug, Default)]
pub struct QueueUrls {
    pub provision_device: String,
    pub update_device_status: String,
    pub update_device_inventory: String,
    pub decommission_device: String,
    pub process_artifact: String,
    pub generate_artifact: String,
    pub iot_manager_events: String,
}

/// Everything a function needs to know about its surroundings. `Debug` redacts the private key.
#[derive(Clone)]
pub struct Config {
    pub deviceauth_table: String,
    pub useradm_table: String,
    pub inventory_table: String,
    pub deployments_table: String,
    pub deviceconnect_table: String,
    pub deviceconfig_table: String,
    pub artifacts_bucket: String,
    pub queues: QueueUrls,
    /// PEM of the JWT signing key; empty in a function that only verifies tokens.
    pub jwt_private_key_pem: String,
    /// PEM of the JWT public key; may be empty when `jwt_private_key_pem` is set (the public
    /// key is then derived from it; when both are set they must match).
    pub jwt_public_key_pem: String,
    /// Device token lifetime (upstream `jwt_exp_timeout`).
    pub device_token_lifetime_secs: i64,
    /// User login token lifetime.
    pub user_token_lifetime_secs: i64,
    /// bcrypt cost for new password hashes.
    pub bcrypt_cost: u32,
    /// Minimum time between two check-in writes of one device.
    pub check_in_interval_secs: i64,
}

impl Config {
    /// Defaults for everything that is not a resource name or a key.
    pub fn with_resources(
        tables: [&str; 3],
        queues: QueueUrls,
        jwt_private_key_pem: String,
    ) -> Self {
        let [deviceauth, useradm, inventory] = tables;
        Config {
            deviceauth_table: deviceauth.to_owned(),
            useradm_table: useradm.to_owned(),
            inventory_table: inventory.to_owned(),
            deployments_table: String::new(),
            deviceconnect_table: String::new(),
            deviceconfig_table: String::new(),
            artifacts_bucket: String::new(),
            queues,
            jwt_private_key_pem,
            jwt_public_key_pem: String::new(),
            device_token_lifetime_secs: 604_800,
            user_token_lifetime_secs: 604_800,
            bcrypt_cost: 10,
            check_in_interval_secs: 300,
        }
    }

    /// Reads the configuration of a deployed function. Variables a function does not use may be
    /// absent (they are empty strings then); the function's constructor checks what it needs.
    /// The JWT key: `JWT_PRIVATE_KEY` (or `JWT_PRIVATE_KEY_FILE`) in a function that signs,
    /// `JWT_PUBLIC_KEY` (or `JWT_PUBLIC_KEY_FILE`) in one that only verifies; one of them must
    /// be set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// [`Config::from_env`] over any variable lookup.
    fn from_lookup(var: impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let opt = |name: &'static str| var(name).unwrap_or_default();
        let pem = |name: &'static str, file: &'static str| -> Result<String, ConfigError> {
            match var(name) {
                Some(pem) if !pem.trim().is_empty() => Ok(pem),
                _ => match var(file) {
                    Some(path) => {
                        std::fs::read_to_string(&path).map_err(|e| ConfigError::Io(path, e))
                    }
                    None => Ok(String::new()),
                },
            }
        };
        let private_key = pem(vars::JWT_PRIVATE_KEY, vars::JWT_PRIVATE_KEY_FILE)?;
        let public_key = pem(vars::JWT_PUBLIC_KEY, vars::JWT_PUBLIC_KEY_FILE)?;
        if private_key.trim().is_empty() && public_key.trim().is_empty() {
            return Err(ConfigError::Missing("JWT_PRIVATE_KEY or JWT_PUBLIC_KEY"));
        }
        let mut config = Config::with_resources(
            [
                &opt(vars::DEVICEAUTH_TABLE),
                &opt(vars::USERADM_TABLE),
                &opt(vars::INVENTORY_TABLE),
            ],
            QueueUrls {
                provision_device: opt(vars::PROVISION_DEVICE_QUEUE_URL),
                update_device_status: opt(vars::UPDATE_DEVICE_STATUS_QUEUE_URL),
                update_device_inventory: opt(vars::UPDATE_DEVICE_INVENTORY_QUEUE_URL),
                decommission_device: opt(vars::DECOMMISSION_DEVICE_QUEUE_URL),
                process_artifact: opt(vars::PROCESS_ARTIFACT_QUEUE_URL),
                generate_artifact: opt(vars::GENERATE_ARTIFACT_QUEUE_URL),
                iot_manager_events: opt(vars::IOT_MANAGER_EVENTS_QUEUE_URL),
            },
            private_key,
        );
        config.jwt_public_key_pem = public_key;
        config.deployments_table = opt(vars::DEPLOYMENTS_TABLE);
        config.deviceconnect_table = opt(vars::DEVICECONNECT_TABLE);
        config.deviceconfig_table = opt(vars::DEVICECONFIG_TABLE);
        config.artifacts_bucket = opt(vars::ARTIFACTS_BUCKET);
        if let Some(cost) = var(vars::BCRYPT_COST) {
            config.bcrypt_cost = cost
                .parse()
                .map_err(|_| ConfigError::Invalid(vars::BCRYPT_COST, cost.clone()))?;
        }
        Ok(config)
    }
}

/// Every field but the private key, which shows as `<redacted>` (or `<none>`): configurations
/// get logged (e.g. `tracing::debug!(?config)`), keys must not.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Config {
            deviceauth_table,
            useradm_table,
            inventory_table,
            deployments_table,
            deviceconnect_table,
            deviceconfig_table,
            artifacts_bucket,
            queues,
            jwt_private_key_pem,
            jwt_public_key_pem,
            device_token_lifetime_secs,
            user_token_lifetime_secs,
            bcrypt_cost,
            check_in_interval_secs,
        } = self;
        let private_key = if jwt_private_key_pem.trim().is_empty() {
            "<none>"
        } else {
            "<redacted>"
        };
        f.debug_struct("Config")
            .field("deviceauth_table", deviceauth_table)
            .field("useradm_table", useradm_table)
            .field("inventory_table", inventory_table)
            .field("deployments_table", deployments_table)
            .field("deviceconnect_table", deviceconnect_table)
            .field("deviceconfig_table", deviceconfig_table)
            .field("artifacts_bucket", artifacts_bucket)
            .field("queues", queues)
            .field("jwt_private_key_pem", &format_args!("{private_key}"))
            .field("jwt_public_key_pem", jwt_public_key_pem)
            .field("device_token_lifetime_secs", device_token_lifetime_secs)
            .field("user_token_lifetime_secs", user_token_lifetime_secs)
            .field("bcrypt_cost", bcrypt_cost)
            .field("check_in_interval_secs", check_in_interval_secs)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const PRIVATE: &str =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKeysecretKEYMATERIALxyz0123456789\n-----END PRIVATE KEY-----\n";
    const PUBLIC: &str =
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEApublicKEYmaterial0123456789abcdefghij=\n-----END PUBLIC KEY-----\n";

    fn lookup(vars: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn debug_does_not_print_the_private_key() {
        let config = Config::with_resources(
            ["deviceauth", "useradm", "inventory"],
            QueueUrls::default(),
            PRIVATE.to_owned(),
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("KEYMATERIAL"), "{shown}");
        assert!(!shown.contains("BEGIN PRIVATE KEY"), "{shown}");
        assert!(shown.contains("jwt_private_key_pem: <redacted>"), "{shown}");
        assert!(
            shown.contains("deviceauth_table: \"deviceauth\""),
            "{shown}"
        );
        let shown = format!("{config:#?}");
        assert!(!shown.contains("KEYMATERIAL"), "{shown}");
    }

    #[test]
    fn a_verifier_reads_the_public_key_alone() {
        let config = lookup(&[
            (vars::JWT_PUBLIC_KEY, PUBLIC),
            (vars::DEVICEAUTH_TABLE, "d"),
        ])
        .unwrap();
        assert_eq!(config.jwt_private_key_pem, "");
        assert_eq!(config.jwt_public_key_pem, PUBLIC);
        assert_eq!(config.deviceauth_table, "d");
        assert!(format!("{config:?}").contains("jwt_private_key_pem: <none>"));
    }

    #[test]
    fn a_signer_reads_the_private_key() {
        let config = lookup(&[(vars::JWT_PRIVATE_KEY, PRIVATE)]).unwrap();
        assert_eq!(config.jwt_private_key_pem, PRIVATE);
        assert_eq!(config.jwt_public_key_pem, "");
        assert!(!format!("{config:?}").contains("KEYMATERIAL"));
    }

    #[test]
    fn keys_come_from_files_too() {
        let dir = std::env::temp_dir().join(format!("mender-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("public.pem");
        std::fs::write(&path, PUBLIC).unwrap();
        let config = lookup(&[(vars::JWT_PUBLIC_KEY_FILE, path.to_str().unwrap())]).unwrap();
        assert_eq!(config.jwt_public_key_pem, PUBLIC);
        let missing = lookup(&[(vars::JWT_PRIVATE_KEY_FILE, "/nonexistent/key.pem")]);
        assert!(matches!(missing, Err(ConfigError::Io(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn some_key_is_required() {
        assert!(matches!(lookup(&[]), Err(ConfigError::Missing(_))));
        assert!(matches!(
            lookup(&[(vars::JWT_PRIVATE_KEY, " \n"), (vars::JWT_PUBLIC_KEY, "")]),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn bad_bcrypt_cost_is_refused() {
        let bad = lookup(&[(vars::JWT_PUBLIC_KEY, PUBLIC), (vars::BCRYPT_COST, "x")]);
        assert!(matches!(
            bad,
            Err(ConfigError::Invalid(vars::BCRYPT_COST, _))
        ));
    }
}
