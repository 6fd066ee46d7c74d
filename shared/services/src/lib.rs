//! Wiring: builds the domain services from the configuration and the SDK configuration, once
//! per process (Lambda init or the local server). No network calls happen here.

pub mod workflow_step;

use std::sync::Arc;

use mender_aws::s3::ArtifactStorage;
use mender_config::Config;
use mender_http::Authenticator;
use mender_tokens::Keys;
use workflows::{Publisher, SqsPublisher};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("configuration: {0}")]
    Config(#[from] mender_config::ConfigError),
    #[error("JWT key: {0}")]
    Key(#[from] mender_tokens::TokenError),
    #[error("iot-manager: {0}")]
    IotManager(String),
}

/// Every service a function may use. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub config: Config,
    pub keys: Keys,
    pub useradm: useradm::Useradm,
    pub deviceauth: deviceauth::Deviceauth,
    pub inventory: inventory::Inventory,
    pub deployments: deployments::Deployments,
    /// deviceconnect's device and session records.
    pub deviceconnect: deviceconnect_store::Store,
    /// Devices' configured and reported configurations.
    pub deviceconfig: deviceconfig::Deviceconfig,
    /// iot-manager's integrations, device links and lifecycle events.
    pub iot_manager: iot_manager::IotManager,
    /// Signs and checks configuration deployments' download links.
    pub presign: deployments::configuration::Presign,
    /// Starts workflows (queue messages).
    pub workflows: Arc<dyn Publisher>,
    /// Artifact objects in S3.
    pub artifacts: ArtifactStorage,
    pub auth: Authenticator,
}

/// Handlers take `Services` as router state; the token extractors find the authenticator here.
impl axum::extract::FromRef<Services> for Authenticator {
    fn from_ref(services: &Services) -> Authenticator {
        services.auth.clone()
    }
}

impl Services {
    pub fn new(config: Config, sdk: &mender_aws::SdkConfig) -> Result<Self, InitError> {
        let dynamodb = mender_aws::dynamodb(sdk);
        let publisher: Arc<dyn Publisher> = Arc::new(SqsPublisher {
            client: mender_aws::sqs(sdk),
            urls: config.queues.clone(),
        });
        let artifacts = ArtifactStorage::new(sdk, &config.artifacts_bucket);
        let mut services = Self::with_parts(config, dynamodb.clone(), artifacts, publisher)?;
        let settings = iot_manager::Settings::from_env().map_err(InitError::IotManager)?;
        services.iot_manager =
            iot_manager::IotManager::new(dynamodb, settings).map_err(InitError::IotManager)?;
        Ok(services)
    }

    pub fn with_parts(
        config: Config,
        dynamodb: mender_aws::aws_sdk_dynamodb::Client,
        artifacts: ArtifactStorage,
        publisher: Arc<dyn Publisher>,
    ) -> Result<Self, InitError> {
        // signers have the private key, verifiers the public key only
        let keys = Keys::from_pems(&config.jwt_private_key_pem, &config.jwt_public_key_pem)?;
        let useradm = useradm::Useradm {
            store: useradm::DynamoStore::new(dynamodb.clone(), &config.useradm_table),
            keys: keys.clone(),
            token_lifetime_secs: config.user_token_lifetime_secs,
            bcrypt_cost: config.bcrypt_cost,
        };
        let deviceauth = deviceauth::Deviceauth {
            store: deviceauth::DynamoStore::new(dynamodb.clone(), &config.deviceauth_table),
            keys: keys.clone(),
            workflows: publisher.clone(),
            token_lifetime_secs: config.device_token_lifetime_secs,
            check_in_interval_secs: config.check_in_interval_secs,
        };
        let inventory = inventory::Inventory {
            store: inventory::DynamoStore::new(dynamodb.clone(), &config.inventory_table),
        };
        let deployments = deployments::Deployments {
            store: deployments::DynamoStore::new(dynamodb.clone(), &config.deployments_table),
        };
        let deviceconfig = deviceconfig::Deviceconfig {
            store: deviceconfig::DynamoStore::new(dynamodb.clone(), &config.deviceconfig_table),
        };
        // its own settings (`iot_manager::vars`): `Services::new` reads them, the local stack
        // sets them
        let iot_manager =
            iot_manager::IotManager::new(dynamodb.clone(), iot_manager::Settings::default())
                .map_err(InitError::IotManager)?;
        // derived from the private key (a verifier's is random: it cannot sign links)
        let presign = deployments::configuration::Presign::from_secret(keys.link_secret());
        let deviceconnect = deviceconnect_store::Store::new(dynamodb, &config.deviceconnect_table);
        let auth = Authenticator {
            keys: keys.clone(),
            devices: Some(Arc::new(deviceauth.clone())),
            users: Some(Arc::new(useradm.clone())),
        };
        Ok(Services {
            config,
            keys,
            useradm,
            deviceauth,
            inventory,
            deployments,
            deviceconnect,
            deviceconfig,
            iot_manager,
            presign,
            workflows: publisher,
            artifacts,
            auth,
        })
    }

    /// Reads the environment and builds everything (Lambda init).
    pub async fn from_env() -> Result<Self, InitError> {
        let config = Config::from_env()?;
        let sdk = mender_aws::load_sdk_config().await;
        Self::new(config, &sdk)
    }
}
