//! iot-manager (SPEC §9): a tenant's integration (a webhook, AWS IoT Core or Azure IoT Hub),
//! the device lifecycle events it receives, and device states read from and written to the
//! cloud. The management API calls the operations here; the `iot-manager-events` workflow step
//! calls [`IotManager::handle_event`] for each lifecycle event deviceauth publishes
//! (provisioned, status changed, decommissioned), once per event id.
//!
//! Modules: [`model`] (records, validation, JSON), [`store`] (what the service needs from
//! storage: the DynamoDB table in `store::dynamo`, an in-memory map for tests in
//! `store::memory`), [`webhook`] (signed delivery with retries), [`net`] (the SSRF guard of
//! every outbound request), [`aws`] (IoT Core), [`azure`] (IoT Hub) and [`http`] (how the
//! errors are answered).

pub mod aws;
pub mod azure;
pub mod http;
pub mod model;
pub mod net;
pub mod store;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use aws_sdk_iot;
use mender_aws::dynamo::DynamoError;
use serde_json::{json, Map, Value};

use crate::aws::{CoreError, IotCore};
use crate::azure::{HubError, IotHub};
use crate::model::{
    Checks, DeliveryStatus, DeviceState, Event, Integration, WebhookEvent, CREDENTIALS_AWS,
    EVENT_DECOMMISSIONED, EVENT_PROVISIONED, EVENT_STATUS_CHANGED, PROVIDER_IOT_CORE,
    PROVIDER_IOT_HUB, PROVIDER_WEBHOOK,
};
use crate::net::AddressPolicy;
pub use crate::store::{DynamoStore, MemoryStore, Store};
use crate::webhook::Retry;

/// Environment variables of the iot-manager functions.
pub mod vars {
    /// The table's name.
    pub const TABLE: &str = "IOT_MANAGER_TABLE";
    /// Networks outbound requests may reach although not public (CIDRs, comma separated).
    pub const ALLOWED_NETWORKS: &str = "IOT_MANAGER_ALLOWED_NETWORKS";
    /// Hostname patterns an IoT Hub connection string may name (space separated, `*` a label).
    pub const DOMAIN_WHITELIST: &str = "IOT_MANAGER_DOMAIN_WHITELIST";
    /// Extra root certificate (PEM) outbound HTTPS trusts.
    pub const CA_CERT: &str = "IOT_MANAGER_CA_CERT";
}

/// Upstream's default `domain_whitelist`.
pub const DEFAULT_TRUSTED_DOMAINS: &str = "*.azure-devices.net *.iot.*.amazonaws.com";

/// Configuration keys upstream pushes to a device provisioned in a cloud.
pub const CONF_AZURE_CONNECTION_STRING: &str = "azureConnectionString";
pub const CONF_AWS_CERTIFICATE: &str = "awsCertificate";
pub const CONF_AWS_PRIVATE_KEY: &str = "awsPrivateKey";
pub const CONF_AWS_ENDPOINT: &str = "awsEndpoint";

#[derive(Clone, Debug)]
pub struct Settings {
    pub table: String,
    pub policy: AddressPolicy,
    pub trusted_domains: Vec<String>,
    /// Events are kept this long (upstream `event_exp_timeout`, a week).
    pub event_expiration_secs: i64,
    /// A claimed event not finished after this long is handled again by a redelivered message
    /// (longer than the function's timeout, 100 s in the template).
    pub claim_lease_secs: i64,
    /// Per outbound request (upstream `webhooks_timeout_seconds`).
    pub timeout: Duration,
    pub retry: Retry,
    pub extra_root_pem: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            table: String::new(),
            policy: AddressPolicy::default(),
            trusted_domains: DEFAULT_TRUSTED_DOMAINS
                .split(' ')
                .map(str::to_owned)
                .collect(),
            event_expiration_secs: 7 * 24 * 3600,
            claim_lease_secs: 120,
            timeout: Duration::from_secs(10),
            retry: Retry {
                attempts: 3,
                backoff: Duration::from_secs(1),
            },
            extra_root_pem: None,
        }
    }
}

impl Settings {
    /// Reads [`vars`] (all optional but the table, which an unused service may lack).
    pub fn from_env() -> Result<Settings, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut settings = Settings {
            table: var(vars::TABLE).unwrap_or_default(),
            ..Settings::default()
        };
        if let Some(list) = var(vars::ALLOWED_NETWORKS) {
            settings.policy = AddressPolicy::parse(&list)
                .map_err(|e| format!("{}: {e}", vars::ALLOWED_NETWORKS))?;
        }
        if let Some(list) = var(vars::DOMAIN_WHITELIST) {
            settings.trusted_domains = list.split_whitespace().map(str::to_owned).collect();
        }
        settings.extra_root_pem = var(vars::CA_CERT);
        Ok(settings)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Storage(#[from] DynamoError),
    #[error("{0}")]
    Internal(String),
}

pub const INTEGRATION_NOT_FOUND: &str = "integration not found";
pub const DEVICE_NOT_FOUND: &str = "device not found";
const UNKNOWN_INTEGRATION: &str = "unknown integration provider";
const NO_CREDENTIALS: &str = "no connection string or credentials configured for the tenant";

/// Whether a device with this deviceauth status is enabled in the clouds.
fn enabled(status: &str) -> bool {
    matches!(status, "accepted" | "preauthorized")
}

/// Removes the twin's `$metadata` and `$version`.
fn twin_properties(twin: &Value, which: &str) -> Option<Map<String, Value>> {
    let mut map = twin
        .get("properties")
        .and_then(|p| p.get(which))
        .and_then(Value::as_object)
        .cloned()?;
    map.remove("$metadata");
    map.remove("$version");
    Some(map)
}

/// The result of handling a lifecycle event: configuration to push to the device (upstream's
/// `provision_external_device` workflow) when a cloud created credentials for it.
#[derive(Debug, Default, PartialEq)]
pub struct Handled {
    pub device_configuration: Option<BTreeMap<String, String>>,
}

/// The iot-manager service over a [`Store`] (the DynamoDB table unless told otherwise). Cheap
/// to clone.
#[derive(Clone)]
pub struct IotManager<S = DynamoStore> {
    pub store: S,
    settings: Arc<Settings>,
    http: reqwest::Client,
}

impl IotManager<DynamoStore> {
    /// Over the table `settings.table`. No network calls.
    pub fn new(dynamodb: aws_sdk_dynamodb::Client, settings: Settings) -> Result<Self, String> {
        let store = DynamoStore::new(dynamodb, &settings.table);
        IotManager::with_store(store, settings)
    }
}

impl<S: Store> IotManager<S> {
    /// Over `store` (`settings.table` unused). No network calls.
    pub fn with_store(store: S, settings: Settings) -> Result<Self, String> {
        let http = net::client(
            &settings.policy,
            settings.timeout,
            settings.extra_root_pem.as_deref(),
        )?;
        Ok(IotManager {
            store,
            settings: Arc::new(settings),
            http,
        })
    }

    fn checks(&self) -> Checks<'_> {
        Checks {
            policy: &self.settings.policy,
            trusted_domains: &self.settings.trusted_domains,
        }
    }

    fn hub(&self) -> IotHub<'_> {
        IotHub {
            http: &self.http,
            policy: &self.settings.policy,
        }
    }

    pub async fn integrations(&self, tenant: &str) -> Result<Vec<Integration>, Error> {
        Ok(self.store.integrations(tenant).await?)
    }

    pub async fn integration(&self, tenant: &str, id: &str) -> Result<Integration, Error> {
        self.store
            .integrations(tenant)
            .await?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| Error::NotFound(INTEGRATION_NOT_FOUND.into()))
    }

    /// `POST /integrations`: 400 on a bad body, 409 when the tenant has one already.
    pub async fn create_integration(
        &self,
        tenant: &str,
        body: &[u8],
    ) -> Result<Integration, Error> {
        let integration = model::parse_integration(body, &self.checks())
            .await
            .map_err(Error::BadRequest)?;
        match self.store.create_integration(tenant, &integration).await {
            Ok(()) => Ok(integration),
            Err(DynamoError::ConditionFailed) => {
                Err(Error::Conflict("integration already exists".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `PUT /integrations/{id}/credentials`.
    pub async fn set_credentials(&self, tenant: &str, id: &str, body: &[u8]) -> Result<(), Error> {
        let credentials = model::parse_credentials(body, &self.checks())
            .await
            .map_err(Error::BadRequest)?;
        match self.store.set_credentials(tenant, id, &credentials).await {
            Ok(()) => Ok(()),
            Err(DynamoError::ConditionFailed) => Err(Error::NotFound(INTEGRATION_NOT_FOUND.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// `DELETE /integrations/{id}`: a cloud integration still linked to devices stays (409).
    pub async fn remove_integration(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let integration = self.integration(tenant, id).await?;
        if integration.provider != PROVIDER_WEBHOOK
            && self.store.integration_in_use(tenant, id).await?
        {
            return Err(Error::Conflict(
                "cannot remove integration in use by devices".into(),
            ));
        }
        match self.store.delete_integration(tenant, id).await {
            Ok(()) => Ok(()),
            Err(DynamoError::ConditionFailed) => Err(Error::NotFound(INTEGRATION_NOT_FOUND.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// `DELETE /devices/{id}`: forgets the device's integrations (no cloud is touched).
    pub async fn delete_device(&self, tenant: &str, device: &str) -> Result<(), Error> {
        if self.store.delete_device(tenant, device).await? {
            Ok(())
        } else {
            Err(Error::NotFound(DEVICE_NOT_FOUND.into()))
        }
    }

    /// `GET /events`.
    pub async fn events(
        &self,
        tenant: &str,
        skip: usize,
        limit: usize,
        integration: Option<&str>,
    ) -> Result<Vec<Event>, Error> {
        Ok(self.store.events(tenant, skip, limit, integration).await?)
    }

    /// `GET /devices/{id}/state`: integration id -> state, for each cloud integration of the
    /// device that still exists.
    pub async fn device_states(&self, tenant: &str, device: &str) -> Result<Value, Error> {
        let ids = self
            .store
            .device(tenant, device)
            .await?
            .ok_or_else(|| Error::NotFound(DEVICE_NOT_FOUND.into()))?;
        let mut states = Map::new();
        for id in ids {
            match self.device_state(tenant, device, &id).await {
                Ok(Some(state)) => {
                    states.insert(id, json!(state));
                }
                Ok(None) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Value::Object(states))
    }

    /// The device's integration `id` (404 unless the device is linked to it and it exists).
    async fn device_integration(
        &self,
        tenant: &str,
        device: &str,
        id: &str,
    ) -> Result<Integration, Error> {
        let linked = self
            .store
            .device(tenant, device)
            .await?
            .is_some_and(|ids| ids.iter().any(|i| i == id));
        if !linked {
            return Err(Error::NotFound(INTEGRATION_NOT_FOUND.into()));
        }
        self.integration(tenant, id).await
    }

    /// `GET /devices/{id}/state/{integration}`: `None` (JSON `null`) when the cloud has no such
    /// device.
    pub async fn device_state(
        &self,
        tenant: &str,
        device: &str,
        integration: &str,
    ) -> Result<Option<DeviceState>, Error> {
        let integration = self.device_integration(tenant, device, integration).await?;
        match integration.provider.as_str() {
            PROVIDER_IOT_CORE => {
                let core = self.iot_core(&integration).await?;
                core.get_state(device)
                    .await
                    .map_err(|e| Error::Internal(format!("failed to get the device shadow: {e}")))
            }
            PROVIDER_IOT_HUB => {
                let cs = integration
                    .credentials
                    .connection()
                    .ok_or_else(|| Error::Internal(NO_CREDENTIALS.into()))?;
                let twin =
                    self.hub().get_twin(&cs, device).await.map_err(|e| {
                        Error::Internal(format!("failed to get the device twin: {e}"))
                    })?;
                Ok(Some(DeviceState {
                    desired: twin_properties(&twin, "desired"),
                    reported: twin_properties(&twin, "reported"),
                }))
            }
            _ => Err(Error::NotFound(UNKNOWN_INTEGRATION.into())),
        }
    }

    /// `PUT /devices/{id}/state/{integration}`: replaces the desired state (409 when the twin
    /// changed meanwhile).
    pub async fn set_device_state(
        &self,
        tenant: &str,
        device: &str,
        integration: &str,
        state: &DeviceState,
    ) -> Result<Option<DeviceState>, Error> {
        let integration = self.device_integration(tenant, device, integration).await?;
        match integration.provider.as_str() {
            PROVIDER_IOT_CORE => {
                let core = self.iot_core(&integration).await?;
                core.set_desired(device, state.desired.as_ref())
                    .await
                    .map_err(|e| {
                        Error::Internal(format!("failed to update the device shadow: {e}"))
                    })
            }
            PROVIDER_IOT_HUB => {
                let cs = integration
                    .credentials
                    .connection()
                    .ok_or_else(|| Error::Internal(NO_CREDENTIALS.into()))?;
                let hub = self.hub();
                let conflict_or_internal = |e: HubError| {
                    if e.status == Some(412) {
                        Error::Conflict("conflict when updating the device state".into())
                    } else {
                        Error::Internal(format!("failed to update the device twin: {e}"))
                    }
                };
                let twin = hub
                    .get_twin(&cs, device)
                    .await
                    .map_err(conflict_or_internal)?;
                let update = json!({
                    "properties": {"desired": state.desired},
                    "tags": twin.get("tags").cloned().unwrap_or(Value::Null),
                });
                let etag = twin.get("etag").and_then(Value::as_str);
                hub.update_twin(&cs, device, &update, etag, true)
                    .await
                    .map_err(conflict_or_internal)?;
                self.device_state(tenant, device, &integration.id).await
            }
            _ => Err(Error::NotFound(UNKNOWN_INTEGRATION.into())),
        }
    }

    async fn iot_core(&self, integration: &Integration) -> Result<IotCore, Error> {
        match &integration.credentials.aws {
            Some(aws) if integration.credentials.kind == CREDENTIALS_AWS => {
                Ok(IotCore::new(aws).await)
            }
            _ => Err(Error::Internal(NO_CREDENTIALS.into())),
        }
    }

    /// The workflow step: delivers one lifecycle event to every integration of the tenant and
    /// records it, once per event id (a redelivered message finds the event recorded and
    /// delivers nothing, unless the attempt that claimed it died before finishing: see
    /// [`Store::claim_event`]). Keeps the device's cloud integrations (provisioned: linked;
    /// decommissioned: forgotten).
    pub async fn handle_event(&self, tenant: &str, event: &WebhookEvent) -> Result<Handled, Error> {
        let integrations = self.store.integrations(tenant).await?;
        let device = event.device_id().to_owned();
        if integrations.is_empty() {
            match event.kind.as_str() {
                EVENT_PROVISIONED => self.store.add_device(tenant, &device, &[]).await?,
                EVENT_DECOMMISSIONED => {
                    self.store.delete_device(tenant, &device).await?;
                }
                _ => {}
            }
            return Ok(Handled::default());
        }
        let now = chrono::Utc::now().timestamp();
        let expire_at = now + self.settings.event_expiration_secs;
        let lease = self.settings.claim_lease_secs;
        match self
            .store
            .claim_event(tenant, event, now, lease, expire_at)
            .await
        {
            Ok(()) => {}
            Err(DynamoError::ConditionFailed) => {
                tracing::info!(event = %event.id, "event already handled: nothing delivered again");
                return Ok(Handled::default());
            }
            Err(e) => return Err(e.into()),
        }
        let linked = self
            .store
            .device(tenant, &device)
            .await?
            .unwrap_or_default();
        let mut handled = Handled::default();
        let mut statuses = Vec::new();
        let mut new_links = Vec::new();
        for integration in &integrations {
            let has = linked.contains(&integration.id);
            let result = match integration.provider.as_str() {
                PROVIDER_WEBHOOK => self.deliver_webhook(integration, event).await,
                PROVIDER_IOT_CORE if event.kind == EVENT_PROVISIONED => {
                    new_links.push(integration.id.clone());
                    self.provision_iot_core(integration, &device, &mut handled)
                        .await
                }
                PROVIDER_IOT_HUB if event.kind == EVENT_PROVISIONED => {
                    new_links.push(integration.id.clone());
                    self.provision_iot_hub(integration, &device, &mut handled)
                        .await
                }
                PROVIDER_IOT_CORE | PROVIDER_IOT_HUB if !has => continue,
                PROVIDER_IOT_CORE => self.update_iot_core(integration, event).await,
                PROVIDER_IOT_HUB => self.update_iot_hub(integration, event).await,
                _ => continue,
            };
            statuses.push(match result {
                Ok(status_code) => DeliveryStatus {
                    integration_id: integration.id.clone(),
                    success: true,
                    error: None,
                    status_code,
                },
                Err((status_code, error)) => {
                    tracing::warn!(event = %event.id, kind = %event.kind, integration = %integration.id, %error, "event not delivered");
                    DeliveryStatus {
                    integration_id: integration.id.clone(),
                    success: false,
                    error: Some(error),
                    status_code,
                    }
                }
            });
        }
        let recorded = match event.kind.as_str() {
            EVENT_PROVISIONED => self.store.add_device(tenant, &device, &new_links).await,
            EVENT_DECOMMISSIONED => self.store.delete_device(tenant, &device).await.map(|_| ()),
            _ => Ok(()),
        };
        if let Err(e) = recorded {
            tracing::error!(error = %e, device = %device, "failed to connect device integration");
            for status in &mut statuses {
                if status.error.is_none() {
                    status.error = Some("failed to connect device to integration".into());
                    status.status_code = Some(1500);
                }
                status.success = false;
            }
        }
        let now = chrono::Utc::now().timestamp();
        self.store
            .finish_event(tenant, event, &statuses, now)
            .await?;
        Ok(handled)
    }

    async fn deliver_webhook(
        &self,
        integration: &Integration,
        event: &WebhookEvent,
    ) -> Result<Option<u16>, (Option<u16>, String)> {
        let Some(http) = integration.credentials.http.as_ref() else {
            return Err((None, "invalid credentials for webhooks".into()));
        };
        let outcome = webhook::deliver(
            &self.http,
            &self.settings.policy,
            http,
            event,
            self.settings.retry,
        )
        .await;
        match outcome.error {
            None => Ok(outcome.status_code),
            Some(e) => Err((outcome.status_code, e)),
        }
    }

    async fn core_for(
        &self,
        integration: &Integration,
    ) -> Result<(IotCore, String), (Option<u16>, String)> {
        let policy = integration
            .credentials
            .aws
            .as_ref()
            .and_then(|a| a.device_policy_name.clone())
            .filter(|p| !p.is_empty() && model::usable(integration));
        let Some(policy) = policy else {
            return Err((None, NO_CREDENTIALS.into()));
        };
        let core = self
            .iot_core(integration)
            .await
            .map_err(|e| (None, e.to_string()))?;
        Ok((core, policy))
    }

    async fn provision_iot_core(
        &self,
        integration: &Integration,
        device: &str,
        handled: &mut Handled,
    ) -> Result<Option<u16>, (Option<u16>, String)> {
        let (core, policy) = self.core_for(integration).await?;
        let created = core
            .upsert(device, true, &policy)
            .await
            .map_err(|e| (None, format!("failed to update iotcore devices: {e}")))?;
        if let Some(thing) = created {
            handled.device_configuration = Some(BTreeMap::from([
                (CONF_AWS_CERTIFICATE.to_owned(), thing.certificate_pem),
                (CONF_AWS_PRIVATE_KEY.to_owned(), thing.private_key_pem),
                (CONF_AWS_ENDPOINT.to_owned(), thing.endpoint),
            ]));
        }
        Ok(None)
    }

    async fn update_iot_core(
        &self,
        integration: &Integration,
        event: &WebhookEvent,
    ) -> Result<Option<u16>, (Option<u16>, String)> {
        let (core, policy) = self.core_for(integration).await?;
        let device = event.device_id();
        if event.kind == EVENT_DECOMMISSIONED {
            return match core.delete(device).await {
                Ok(()) | Err(CoreError::NotFound) => Ok(None),
                Err(e) => Err((None, format!("failed to delete IoT Core device: {e}"))),
            };
        }
        core.upsert(device, enabled(event.status()), &policy)
            .await
            .map(|_| None)
            .map_err(|e| (None, e.to_string()))
    }

    async fn provision_iot_hub(
        &self,
        integration: &Integration,
        device: &str,
        handled: &mut Handled,
    ) -> Result<Option<u16>, (Option<u16>, String)> {
        let Some(cs) = integration.credentials.connection() else {
            return Err((None, NO_CREDENTIALS.into()));
        };
        let hub = self.hub();
        let identity = hub
            .upsert_device(&cs, device, json!({}))
            .await
            .map_err(|e| match e.status {
                Some(401) => (e.status, NO_CREDENTIALS.to_owned()),
                Some(409) => (e.status, "device already exists".to_owned()),
                _ => (e.status, format!("failed to update iothub devices: {e}")),
            })?;
        let primary = identity
            .pointer("/authentication/symmetricKey/primaryKey")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or((None, "device has no connection string".to_owned()))?;
        let device_cs = format!(
            "HostName={};DeviceId={};SharedAccessKey={primary}",
            cs.host_name,
            identity
                .get("deviceId")
                .and_then(Value::as_str)
                .unwrap_or(device)
        );
        handled.device_configuration = Some(BTreeMap::from([(
            CONF_AZURE_CONNECTION_STRING.to_owned(),
            device_cs,
        )]));
        hub.update_twin(
            &cs,
            device,
            &json!({"properties": {"desired": null}, "tags": {"mender": true}}),
            None,
            false,
        )
        .await
        .map_err(|e| {
            (
                e.status,
                format!("failed to tag provisioned iothub device: {e}"),
            )
        })?;
        Ok(None)
    }

    async fn update_iot_hub(
        &self,
        integration: &Integration,
        event: &WebhookEvent,
    ) -> Result<Option<u16>, (Option<u16>, String)> {
        let Some(cs) = integration.credentials.connection() else {
            return Err((None, NO_CREDENTIALS.into()));
        };
        let hub = self.hub();
        let device = event.device_id();
        if event.kind == EVENT_DECOMMISSIONED {
            return match hub.delete_device(&cs, device).await {
                Ok(()) => Ok(None),
                Err(e) if e.status == Some(404) => Ok(None),
                Err(e) => Err((e.status, format!("failed to delete IoT Hub device: {e}"))),
            };
        }
        debug_assert_eq!(event.kind, EVENT_STATUS_CHANGED);
        let wanted = if enabled(event.status()) {
            "enabled"
        } else {
            "disabled"
        };
        let mut identity = hub.get_device(&cs, device).await.map_err(|e| {
            (
                e.status,
                format!("failed to retrieve device from IoT Hub: {e}"),
            )
        })?;
        if identity.get("status").and_then(Value::as_str) == Some(wanted) {
            return Ok(None);
        }
        identity["status"] = Value::String(wanted.into());
        hub.upsert_device(&cs, device, identity)
            .await
            .map(|_| None)
            .map_err(|e| (e.status, e.to_string()))
    }
}

#[cfg(test)]
mod tests;
