//! Runtime configuration of every function, read once at start from the environment.
//!
//! In AWS the SAM template sets these variables; the local stack builds a [`Config`] directly.
//! Nothing here talks to the network.

use std::env;

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
    /// PEM text of the server's private key (RSA => RS256, Ed25519 => EdDSA).
    pub const JWT_PRIVATE_KEY: &str = "JWT_PRIVATE_KEY";
    /// Path of a PEM file holding the key, used when `JWT_PRIVATE_KEY` is unset.
    pub const JWT_PRIVATE_KEY_FILE: &str = "JWT_PRIVATE_KEY_FILE";
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
}

/// Everything a function needs to know about its surroundings.
#[derive(Clone, Debug)]
pub struct Config {
    pub deviceauth_table: String,
    pub useradm_table: String,
    pub inventory_table: String,
    pub deployments_table: String,
    pub deviceconnect_table: String,
    pub deviceconfig_table: String,
    pub artifacts_bucket: String,
    pub queues: QueueUrls,
    /// PEM of the JWT signing key.
    pub jwt_private_key_pem: String,
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
            device_token_lifetime_secs: 604_800,
            user_token_lifetime_secs: 604_800,
            bcrypt_cost: 10,
            check_in_interval_secs: 300,
        }
    }

    /// Reads the configuration of a deployed function. Variables a function does not use may be
    /// absent (they are empty strings then); the function's constructor checks what it needs.
    pub fn from_env() -> Result<Self, ConfigError> {
        let opt = |name: &'static str| env::var(name).unwrap_or_default();
        let key = match env::var(vars::JWT_PRIVATE_KEY) {
            Ok(pem) if !pem.trim().is_empty() => pem,
            _ => match env::var(vars::JWT_PRIVATE_KEY_FILE) {
                Ok(path) => std::fs::read_to_string(&path).map_err(|e| ConfigError::Io(path, e))?,
                Err(_) => return Err(ConfigError::Missing(vars::JWT_PRIVATE_KEY)),
            },
        };
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
            },
            key,
        );
        config.deployments_table = opt(vars::DEPLOYMENTS_TABLE);
        config.deviceconnect_table = opt(vars::DEVICECONNECT_TABLE);
        config.deviceconfig_table = opt(vars::DEVICECONFIG_TABLE);
        config.artifacts_bucket = opt(vars::ARTIFACTS_BUCKET);
        if let Ok(cost) = env::var(vars::BCRYPT_COST) {
            config.bcrypt_cost = cost
                .parse()
                .map_err(|_| ConfigError::Invalid(vars::BCRYPT_COST, cost.clone()))?;
        }
        Ok(config)
    }
}
