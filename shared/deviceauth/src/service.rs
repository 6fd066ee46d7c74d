//! deviceauth operations: the device's auth request, operator decisions, preauthorization,
//! decommissioning, tokens and limits, and the device-token check every device endpoint runs.
//! State changes are stored first (conditional writes, retried on conflict), then workflows
//! are published.

use std::sync::Arc;

use device_keys::{identity_from_json_text, identity_from_value, PublicKey};
use mender_aws::dynamo::DynamoError;
use mender_aws::retry::{lost_race, Attempts};
use mender_http::paging::Paging;
use mender_tokens::{DeviceClaims, Keys};
use serde::Deserialize;
use serde_json::{json, Value};
use workflows::{Attribute, DeviceRef, Job, Publisher};

use crate::model::{
    AuthSet, AuthStatus, Device, TransitionError, ACCEPTED, PENDING, PREAUTHORIZED, STATUSES,
};
use crate::store::{DynamoStore, Store, TokenRecord};

/// Attempts of a read-modify-write before giving up on a hot device.
const MAX_ATTEMPTS: usize = 32;
/// Inventory learns the check-in time at most this often (upstream: daily).
const INVENTORY_CHECK_IN_SECS: i64 = 24 * 3600;
pub const MAX_DEVICES: &str = "max_devices";
/// iot-manager's event types (upstream `model.EventType`).
const IOT_PROVISIONED: &str = "device-provisioned";
const IOT_STATUS_CHANGED: &str = "device-status-changed";
const IOT_DECOMMISSIONED: &str = "device-decommissioned";
/// Most device ids one list request may name (`?id=..&id=..`).
pub const MAX_LISTED_IDS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// 404 with Mender's body.
    #[error("{0}")]
    NotFound(String),
    /// 404 with no body (upstream does this on several deviceauth routes).
    #[error("not found")]
    NotFoundBare,
    #[error("{0}")]
    Unprocessable(String),
    /// 413 with Mender's body.
    #[error("{0}")]
    TooLarge(String),
    /// Preauthorization of a known identity: 409 with the existing device as body.
    #[error("device already exists")]
    Exists(Value),
    #[error("storage: {0}")]
    Storage(#[from] DynamoError),
    #[error("{0}")]
    Internal(String),
}

/// `POST /auth_requests` body.
#[derive(Debug, Deserialize)]
pub struct AuthRequest {
    #[serde(default)]
    pub id_data: String,
    #[serde(default)]
    pub pubkey: String,
    #[serde(default)]
    pub tenant_token: String,
}

/// What the device gets back.
#[derive(Debug, PartialEq)]
pub enum AuthRequestOutcome {
    Token(String),
    Unauthorized,
}

/// Filter of the device list and search.
#[derive(Debug, Default)]
pub struct DeviceFilter {
    pub statuses: Vec<String>,
    pub ids: Vec<String>,
}

/// The deviceauth service over a [`Store`] (the DynamoDB table unless told otherwise).
#[derive(Clone)]
pub struct Deviceauth<S = DynamoStore> {
    pub store: S,
    pub keys: Keys,
    pub workflows: Arc<dyn Publisher>,
    pub token_lifetime_secs: i64,
    pub check_in_interval_secs: i64,
}

/// Every attempt of a read–modify–write of one device lost its race.
fn too_many_changes() -> Error {
    Error::Internal("too many concurrent changes to the device".into())
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    mender_http::time::format(t)
}
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
fn request_id() -> String {
    mender_http::request_id::current().unwrap_or_default()
}

/// Upstream's list order: by status name, then id.
fn by_status_then_id(a: &Device, b: &Device) -> std::cmp::Ordering {
    (a.status.as_str(), &a.id).cmp(&(b.status.as_str(), &b.id))
}

/// Validates a status filter value.
pub fn check_status(status: &str) -> Result<(), Error> {
    if AuthStatus::parse(status).is_some() {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "filter status must be one of: {}",
            AuthStatus::names()
        )))
    }
}

impl<S: Store> Deviceauth<S> {
    async fn publish(&self, job: Job) -> Result<(), Error> {
        self.workflows
            .publish(job)
            .await
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// The workflow for a device whose status just changed (SPEC §10.5).
    async fn publish_status_change(&self, tenant: &str, device: &Device) -> Result<(), Error> {
        let device_ref = DeviceRef {
            id: device.id.clone(),
            revision: device.revision,
        };
        let provisioning = device.status == ACCEPTED && !device.provisioned;
        let job = if provisioning {
            Job::ProvisionDevice {
                request_id: request_id(),
                tenant_id: tenant.into(),
                device: device_ref,
                status: device.status.to_string(),
            }
        } else {
            Job::UpdateDeviceStatus {
                request_id: request_id(),
                tenant_id: tenant.into(),
                devices: vec![device_ref],
                device_status: device.status.to_string(),
            }
        };
        self.publish(job).await?;
        // iot-manager: as upstream's provision_device (iot-manager provisioning, then its
        // status) and update_device_status workflows
        if provisioning {
            self.publish_iot_event(tenant, IOT_PROVISIONED, device.lifecycle_event())
                .await?;
        }
        self.publish_iot_event(
            tenant,
            IOT_STATUS_CHANGED,
            json!({"id": device.id, "status": device.status}),
        )
        .await
    }

    /// A lifecycle event for iot-manager's integrations; its id and time are fixed here, after
    /// the change is stored.
    async fn publish_iot_event(
        &self,
        tenant: &str,
        event_type: &str,
        device: Value,
    ) -> Result<(), Error> {
        self.publish(Job::IotManagerEvent {
            request_id: request_id(),
            tenant_id: tenant.into(),
            event_id: new_id(),
            event_type: event_type.into(),
            time: ts(now()),
            device,
        })
        .await
    }

    async fn publish_identity(&self, tenant: &str, device: &Device) -> Result<(), Error> {
        let attributes = device
            .identity_data()
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.as_str() != "status")
                    .map(|(k, v)| Attribute {
                        name: k.clone(),
                        value: v.clone(),
                        scope: "identity".into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.publish(Job::UpdateDeviceInventory {
            request_id: request_id(),
            tenant_id: tenant.into(),
            device_id: device.id.clone(),
            scope: "identity".into(),
            attributes,
        })
        .await
    }

    async fn publish_check_in(
        &self,
        tenant: &str,
        device_id: &str,
        when: &str,
    ) -> Result<(), Error> {
        self.publish(Job::UpdateDeviceInventory {
            request_id: request_id(),
            tenant_id: tenant.into(),
            device_id: device_id.into(),
            scope: "system".into(),
            attributes: vec![Attribute {
                name: "check_in_time".into(),
                value: Value::String(when.into()),
                scope: "system".into(),
            }],
        })
        .await
    }

    /// Whether accepting one more device keeps the tenant within `max_devices` (counters).
    async fn may_accept_another(&self, tenant: &str) -> Result<bool, Error> {
        let Some(limit) = self.store.get_limit(tenant, MAX_DEVICES).await? else {
            return Ok(true);
        };
        let counts = self.store.status_counts(tenant).await?;
        let accepted = counts.get(ACCEPTED.as_str()).copied().unwrap_or(0);
        Ok(accepted < limit)
    }

    /// `POST /api/devices/v1/authentication/auth_requests` (SPEC §10.1-10.2): `body` is the raw
    /// request body, `signature` the `X-MEN-Signature` header.
    pub async fn auth_request(
        &self,
        tenant: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<AuthRequestOutcome, Error> {
        /// Largest auth request body, checked before parsing (upstream: `request_size_limit`,
        /// 1 MiB for every route, 413). A real one is an identity (at most
        /// `device_keys::MAX_IDENTITY_BYTES`), a public key (an RSA 16384 PEM is ~2.9 KB) and
        /// a tenant token.
        const MAX_AUTH_REQUEST_BYTES: usize = 64 * 1024;
        if body.len() > MAX_AUTH_REQUEST_BYTES {
            // Upstream's text (Go's `http.MaxBytesError`).
            return Err(Error::TooLarge("http: request body too large".into()));
        }
        let request: AuthRequest = mender_http::json::from_go_json(body)
            .map_err(|e| Error::BadRequest(format!("failed to decode auth request: {e}")))?;
        if request.id_data.is_empty() {
            return Err(Error::BadRequest(
                "invalid auth request: id_data must be provided".into(),
            ));
        }
        if request.pubkey.is_empty() {
            return Err(Error::BadRequest(
                "invalid auth request: pubkey must be provided".into(),
            ));
        }
        let key = PublicKey::from_pem(&request.pubkey)
            .map_err(|e| Error::BadRequest(format!("invalid auth request: {e}")))?;
        let identity = identity_from_json_text(&request.id_data)
            .map_err(|e| Error::BadRequest(format!("invalid auth request: {e}")))?;
        let signature = signature
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::BadRequest("missing request signature header".into()))?;
        key.verify(body, signature)
            .map_err(|_| Error::Unauthorized("signature verification failed".into()))?;
        let pubkey = key.canonical_pem().to_owned();

        let mut attempts = Attempts::new(MAX_ATTEMPTS);

        while attempts.begin().await {
            let now_ts = ts(now());
            // The device: found by identity, or created with this key as a pending auth set.
            let Some(device_id) = self
                .store
                .device_id_by_identity(tenant, &identity.hash)
                .await?
            else {
                let mut device = Device::new(
                    new_id(),
                    identity.canonical.clone(),
                    identity.hash.clone(),
                    &now_ts,
                );
                device.auth_sets.push(AuthSet {
                    id: new_id(),
                    pubkey: pubkey.clone(),
                    status: PENDING,
                    ts: now_ts.clone(),
                });
                device.recompute_status(&now_ts);
                if lost_race(self.store.create_device(tenant, &device).await)? {
                    continue;
                }
                self.publish_identity(tenant, &device).await?;
                self.publish_status_change(tenant, &device).await?;
                return Ok(AuthRequestOutcome::Unauthorized);
            };
            let Some(mut device) = self.store.get_device(tenant, &device_id).await? else {
                continue;
            };
            if device.decommissioning {
                return Ok(AuthRequestOutcome::Unauthorized);
            }
            let existing = device.auth_set_by_key(&pubkey).cloned();
            let auth_set = match existing {
                Some(set) if set.status == ACCEPTED => set,
                Some(set) if set.status == PREAUTHORIZED => {
                    if device.status != ACCEPTED && !self.may_accept_another(tenant).await? {
                        return Err(Error::Unauthorized("unauthorized".into()));
                    }
                    device.accept_preauthorized(&set.id);
                    let changed = device.recompute_status(&now_ts);
                    if lost_race(self.store.update_device(tenant, &mut device).await)? {
                        continue;
                    }
                    self.revoke_tokens(tenant, &device).await?;
                    if changed {
                        self.publish_status_change(tenant, &device).await?;
                    }
                    match device.auth_set(&set.id) {
                        Some(s) => s.clone(),
                        None => continue,
                    }
                }
                Some(_) => return Ok(AuthRequestOutcome::Unauthorized),
                None => {
                    // At most MAX_AUTH_SETS: the oldest pending (then rejected) sets make room.
                    let Ok(dropped) = device.add_pending_auth_set(AuthSet {
                        id: new_id(),
                        pubkey: pubkey.clone(),
                        status: PENDING,
                        ts: now_ts.clone(),
                    }) else {
                        // Every set is accepted or preauthorized: no room for another key.
                        return Ok(AuthRequestOutcome::Unauthorized);
                    };
                    let changed = device.recompute_status(&now_ts);
                    if lost_race(self.store.update_device(tenant, &mut device).await)? {
                        continue;
                    }
                    for set in &dropped {
                        self.store.delete_token(tenant, &set.id).await?;
                    }
                    if changed {
                        self.publish_status_change(tenant, &device).await?;
                    }
                    return Ok(AuthRequestOutcome::Unauthorized);
                }
            };
            // Accepted: issue a token bound to the device version we saw.
            let now = now();
            let claims = DeviceClaims::new(
                &auth_set.id,
                &device.id,
                tenant,
                now.timestamp(),
                self.token_lifetime_secs,
            );
            let token = self
                .keys
                .issue(&claims)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let record = TokenRecord {
                jti: auth_set.id.clone(),
                device_id: device.id.clone(),
                expires_at: claims.exp,
                check_in: now.timestamp(),
            };
            if lost_race(self.store.put_token(tenant, &record, &device).await)? {
                continue;
            }
            let when = ts(now);
            self.store
                .set_check_in_time(tenant, &device.id, &when)
                .await?;
            self.publish_check_in(tenant, &device.id, &when).await?;
            return Ok(AuthRequestOutcome::Token(token));
        }
        Err(too_many_changes())
    }

    /// Deletes the tokens of every auth set that is not accepted.
    async fn revoke_tokens(&self, tenant: &str, device: &Device) -> Result<(), Error> {
        for jti in device.revoked_auth_sets() {
            self.store.delete_token(tenant, &jti).await?;
        }
        Ok(())
    }

    pub async fn get_device(&self, tenant: &str, id: &str) -> Result<Device, Error> {
        self.store
            .get_device(tenant, id)
            .await?
            .ok_or_else(|| Error::NotFound("device not found".into()))
    }

    /// One page of the devices matching `filter`, sorted as upstream (by status, then id), and
    /// whether another page follows. By ids: those items; by status: the `by-status` index,
    /// statuses one after the other, `offset + per_page + 1` keys at most.
    pub async fn list_devices(
        &self,
        tenant: &str,
        filter: &DeviceFilter,
        paging: Paging,
    ) -> Result<(Vec<Device>, bool), Error> {
        for status in &filter.statuses {
            check_status(status)?;
        }
        let offset = paging.offset();
        let per_page = usize::try_from(paging.per_page).unwrap_or(usize::MAX);
        let want = offset.saturating_add(per_page).saturating_add(1);
        let mut devices = if !filter.ids.is_empty() {
            if filter.ids.len() > MAX_LISTED_IDS {
                return Err(Error::BadRequest(format!(
                    "id: at most {MAX_LISTED_IDS} ids"
                )));
            }
            let mut devices: Vec<Device> = self
                .store
                .get_devices(tenant, &filter.ids)
                .await?
                .into_iter()
                .filter(|d| {
                    filter.statuses.is_empty()
                        || filter.statuses.iter().any(|s| s == d.status.as_str())
                })
                .collect();
            devices.sort_by(by_status_then_id);
            devices
                .into_iter()
                .skip(offset)
                .take(per_page + 1)
                .collect()
        } else {
            let mut statuses: Vec<&str> = if filter.statuses.is_empty() {
                STATUSES.map(AuthStatus::as_str).to_vec()
            } else {
                filter.statuses.iter().map(String::as_str).collect()
            };
            statuses.sort_unstable();
            statuses.dedup();
            let mut ids = Vec::new();
            for status in statuses {
                if ids.len() >= want {
                    break;
                }
                ids.extend(
                    self.store
                        .ids_by_status(tenant, status, want - ids.len())
                        .await?,
                );
            }
            let page: Vec<String> = ids.into_iter().skip(offset).take(per_page + 1).collect();
            let mut found = self.store.get_devices(tenant, &page).await?;
            found.sort_by(by_status_then_id);
            found
        };
        let has_next = devices.len() > per_page;
        devices.truncate(per_page);
        Ok((devices, has_next))
    }

    /// Devices of `status` (or all), from the counters.
    pub async fn count_devices(&self, tenant: &str, status: Option<&str>) -> Result<usize, Error> {
        if let Some(status) = status {
            if AuthStatus::parse(status).is_none() {
                return Err(Error::BadRequest(format!(
                    "status must be one of: {}",
                    AuthStatus::names()
                )));
            }
        }
        let counts = self.store.status_counts(tenant).await?;
        let n: i64 = counts
            .iter()
            .filter(|(s, _)| status.is_none_or(|want| want == s.as_str()))
            .map(|(_, n)| *n)
            .sum();
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// An operator's decision on an auth set (SPEC §10.2 table).
    pub async fn set_auth_status(
        &self,
        tenant: &str,
        device_id: &str,
        aid: &str,
        target: &str,
    ) -> Result<(), Error> {
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let mut device = self.store.get_device(tenant, device_id).await?;
            let Some(device) = device.as_mut() else {
                // Upstream looks the auth set up first: unknown ids are a 404.
                return Err(Error::NotFound("authorization set not found".into()));
            };
            if device.auth_set(aid).is_none() {
                return Err(Error::NotFound("authorization set not found".into()));
            }
            if target == ACCEPTED.as_str()
                && device.status != ACCEPTED
                && !self.may_accept_another(tenant).await?
            {
                return Err(Error::Unprocessable(
                    "maximum number of accepted devices reached".into(),
                ));
            }
            let before = device.clone();
            device.decide(aid, target).map_err(|e| match e {
                TransitionError::InvalidTarget => {
                    Error::BadRequest("incorrect device status".into())
                }
                TransitionError::NotAllowed => Error::BadRequest("dev auth: bad request".into()),
            })?;
            if before.auth_sets == device.auth_sets {
                return Ok(());
            }
            let now_ts = ts(now());
            let changed = device.recompute_status(&now_ts);
            if lost_race(self.store.update_device(tenant, device).await)? {
                continue;
            }
            self.revoke_tokens(tenant, device).await?;
            if changed {
                self.publish_status_change(tenant, device).await?;
            }
            return Ok(());
        }
        Err(too_many_changes())
    }

    /// Auth set status by id (`GET .../auth/{aid}/status`).
    pub async fn auth_status(
        &self,
        tenant: &str,
        device_id: &str,
        aid: &str,
    ) -> Result<String, Error> {
        let device = self.store.get_device(tenant, device_id).await?;
        device
            .and_then(|d| d.auth_set(aid).map(|a| a.status.to_string()))
            .ok_or_else(|| Error::NotFound("authorization set not found".into()))
    }

    /// `POST /devices`: preauthorize an identity with a key. Returns the device id.
    pub async fn preauthorize(
        &self,
        tenant: &str,
        identity_data: &Value,
        pubkey: &str,
        force: bool,
    ) -> Result<String, Error> {
        let identity = identity_from_value(identity_data).map_err(|e| match e {
            device_keys::IdentityError::InvalidJson | device_keys::IdentityError::NotAnObject => {
                Error::BadRequest("identity_data: must be a JSON object".into())
            }
            limit => Error::BadRequest(format!("identity_data: {limit}")),
        })?;
        let key =
            PublicKey::from_pem(pubkey).map_err(|e| Error::BadRequest(format!("pubkey: {e}")))?;
        let pubkey = key.canonical_pem().to_owned();
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let now_ts = ts(now());
            let new_set = AuthSet {
                id: new_id(),
                pubkey: pubkey.clone(),
                status: PREAUTHORIZED,
                ts: now_ts.clone(),
            };
            let Some(device_id) = self
                .store
                .device_id_by_identity(tenant, &identity.hash)
                .await?
            else {
                let mut device = Device::new(
                    new_id(),
                    identity.canonical.clone(),
                    identity.hash.clone(),
                    &now_ts,
                );
                device.auth_sets.push(new_set);
                device.recompute_status(&now_ts);
                if lost_race(self.store.create_device(tenant, &device).await)? {
                    continue;
                }
                self.publish_identity(tenant, &device).await?;
                self.publish_status_change(tenant, &device).await?;
                return Ok(device.id);
            };
            let Some(mut device) = self.store.get_device(tenant, &device_id).await? else {
                continue;
            };
            if !force {
                return Err(Error::Exists(device.to_json()));
            }
            match device.auth_sets.iter_mut().find(|a| a.pubkey == pubkey) {
                Some(existing) => existing.status = PREAUTHORIZED,
                None => device.auth_sets.push(new_set),
            }
            let changed = device.recompute_status(&now_ts);
            if lost_race(self.store.update_device(tenant, &mut device).await)? {
                continue;
            }
            self.revoke_tokens(tenant, &device).await?;
            if changed {
                self.publish_status_change(tenant, &device).await?;
            }
            // Upstream quirk: the Location of a forced preauthorization names a fresh id.
            return Ok(new_id());
        }
        Err(too_many_changes())
    }

    /// `DELETE /devices/{id}/auth/{aid}` (SPEC §10.2).
    pub async fn delete_auth_set(
        &self,
        tenant: &str,
        device_id: &str,
        aid: &str,
    ) -> Result<(), Error> {
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let mut device = self
                .store
                .get_device(tenant, device_id)
                .await?
                .ok_or(Error::NotFoundBare)?;
            let Some(removed) = device.auth_set(aid).cloned() else {
                return Err(Error::NotFoundBare);
            };
            device.auth_sets.retain(|a| a.id != aid);
            if removed.status == PREAUTHORIZED && device.auth_sets.is_empty() {
                if lost_race(self.store.delete_device(tenant, &device).await)? {
                    continue;
                }
                self.store.delete_token(tenant, aid).await?;
                self.publish(Job::UpdateDeviceStatus {
                    request_id: request_id(),
                    tenant_id: tenant.into(),
                    devices: vec![DeviceRef {
                        id: device.id.clone(),
                        revision: device.revision + 1,
                    }],
                    device_status: "decommissioned".into(),
                })
                .await?;
                self.publish_iot_event(
                    tenant,
                    IOT_STATUS_CHANGED,
                    json!({"id": device.id, "status": "decommissioned"}),
                )
                .await?;
                return Ok(());
            }
            let changed = device.recompute_status(&ts(now()));
            if lost_race(self.store.update_device(tenant, &mut device).await)? {
                continue;
            }
            self.store.delete_token(tenant, aid).await?;
            if changed {
                self.publish_status_change(tenant, &device).await?;
            }
            return Ok(());
        }
        Err(too_many_changes())
    }

    /// `DELETE /devices/{id}`: tokens stop working now; the workflow removes the rest.
    pub async fn decommission(&self, tenant: &str, device_id: &str) -> Result<(), Error> {
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let mut device = self
                .store
                .get_device(tenant, device_id)
                .await?
                .ok_or(Error::NotFoundBare)?;
            device.decommissioning = true;
            device.updated_ts = ts(now());
            if lost_race(self.store.update_device(tenant, &mut device).await)? {
                continue;
            }
            for set in &device.auth_sets {
                self.store.delete_token(tenant, &set.id).await?;
            }
            self.publish(Job::DecommissionDevice {
                request_id: request_id(),
                tenant_id: tenant.into(),
                device_id: device.id.clone(),
            })
            .await?;
            self.publish_iot_event(tenant, IOT_DECOMMISSIONED, json!({"id": device.id}))
                .await?;
            return Ok(());
        }
        Err(too_many_changes())
    }

    /// `DELETE /tokens/{id}`.
    pub async fn revoke_token(&self, tenant: &str, jti: &str) -> Result<(), Error> {
        if self.store.get_token(tenant, jti).await?.is_none() {
            return Err(Error::NotFoundBare);
        }
        Ok(self.store.delete_token(tenant, jti).await?)
    }

    pub async fn limit(&self, tenant: &str, name: &str) -> Result<i64, Error> {
        if name != MAX_DEVICES {
            return Err(Error::BadRequest(format!("unsupported limit {name}")));
        }
        Ok(self.store.get_limit(tenant, name).await?.unwrap_or(-1))
    }

    pub async fn set_limit(&self, tenant: &str, name: &str, value: i64) -> Result<(), Error> {
        if name != MAX_DEVICES {
            return Err(Error::BadRequest(format!("unsupported limit {name}")));
        }
        Ok(self.store.put_limit(tenant, name, value).await?)
    }

    /// Workflow step of `provision_device`: remember the device is provisioned.
    pub async fn set_provisioned(&self, tenant: &str, device_id: &str) -> Result<(), Error> {
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let Some(mut device) = self.store.get_device(tenant, device_id).await? else {
                return Ok(());
            };
            if device.provisioned {
                return Ok(());
            }
            device.provisioned = true;
            if lost_race(self.store.update_device(tenant, &mut device).await)? {
                continue;
            }
            return Ok(());
        }
        Err(too_many_changes())
    }

    /// Last step of `decommission_device`: remove tokens, auth sets and the device.
    pub async fn hard_delete(&self, tenant: &str, device_id: &str) -> Result<(), Error> {
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let Some(device) = self.store.get_device(tenant, device_id).await? else {
                return Ok(());
            };
            for set in &device.auth_sets {
                self.store.delete_token(tenant, &set.id).await?;
            }
            if lost_race(self.store.delete_device(tenant, &device).await)? {
                continue;
            }
            return Ok(());
        }
        Err(too_many_changes())
    }

    /// Whether a device still exists and is not being decommissioned (workflow guards).
    pub async fn is_live(&self, tenant: &str, device_id: &str) -> Result<bool, Error> {
        Ok(self
            .store
            .get_device(tenant, device_id)
            .await?
            .is_some_and(|d| !d.decommissioning))
    }

    /// One GetItem: the token record exists (reject, dismiss, decommission and revoke delete it)
    /// and names this device. The check-in is written at most every `check_in_interval_secs`.
    pub async fn check_device_token(&self, claims: &DeviceClaims) -> Result<bool, Error> {
        let tenant = claims.tenant.as_str();
        let record = self.store.get_token(tenant, &claims.jti).await?;
        let Some(record) = record else {
            return Ok(false);
        };
        if record.device_id != claims.sub {
            return Ok(false);
        }
        let now = now();
        if now.timestamp() - record.check_in >= self.check_in_interval_secs {
            let recorded = self
                .store
                .touch_token(
                    tenant,
                    &claims.jti,
                    now.timestamp(),
                    now.timestamp() - self.check_in_interval_secs,
                )
                .await?;
            if recorded {
                let when = ts(now);
                self.store
                    .set_check_in_time(tenant, &record.device_id, &when)
                    .await?;
                if now.timestamp() - record.check_in >= INVENTORY_CHECK_IN_SECS {
                    self.publish_check_in(tenant, &record.device_id, &when)
                        .await?;
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The service's rules against the in-memory store.

    use super::*;
    use crate::model::{NOAUTH, REJECTED};
    use crate::store::MemoryStore;
    use base64::Engine;
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
    use ed25519_dalek::{Signer, SigningKey};
    use mender_http::error::StatusCode;
    use mender_http::ApiError;
    use workflows::RecordingPublisher;

    const T: &str = "tenant";
    /// The server's token key (the tokens crate's Ed25519 fixture).
    const SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIJmWyu+TY4Md/w4+JKFeIWDBMbFqArIrk/OOg5Gx8UI4\n\
        -----END PRIVATE KEY-----\n";

    struct Fixture {
        da: Deviceauth<MemoryStore>,
        jobs: RecordingPublisher,
    }

    fn fixture() -> Fixture {
        let jobs = RecordingPublisher::default();
        let da = Deviceauth {
            store: MemoryStore::new(),
            keys: Keys::from_pem(SERVER_KEY).unwrap(),
            workflows: Arc::new(jobs.clone()),
            token_lifetime_secs: 3600,
            check_in_interval_secs: 60,
        };
        Fixture { da, jobs }
    }

    impl Fixture {
        fn jobs(&self) -> Vec<Job> {
            self.jobs.jobs.lock().unwrap().clone()
        }

        /// The device of identity `mac`.
        async fn device_of(&self, mac: &str) -> Option<Device> {
            let hash = identity_from_value(&json!({ "mac": mac })).unwrap().hash;
            let id = self
                .da
                .store
                .device_id_by_identity(T, &hash)
                .await
                .unwrap()?;
            self.da.store.get_device(T, &id).await.unwrap()
        }

        async fn counted(&self, status: &str) -> usize {
            self.da.count_devices(T, Some(status)).await.unwrap()
        }
    }

    /// A device: identity `{"mac": mac}` and an Ed25519 key from `seed`.
    struct TestDevice {
        mac: String,
        key: SigningKey,
    }

    impl TestDevice {
        fn new(mac: &str, seed: u8) -> Self {
            TestDevice {
                mac: mac.into(),
                key: SigningKey::from_bytes(&[seed; 32]),
            }
        }

        fn pubkey(&self) -> String {
            self.key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap()
        }

        fn body(&self) -> Vec<u8> {
            let id_data = json!({ "mac": self.mac }).to_string();
            json!({"id_data": id_data, "pubkey": self.pubkey(), "tenant_token": ""})
                .to_string()
                .into_bytes()
        }

        fn sign(&self, body: &[u8]) -> String {
            base64::engine::general_purpose::STANDARD.encode(self.key.sign(body).to_bytes())
        }

        /// A signed auth request.
        async fn ask(&self, f: &Fixture) -> Result<AuthRequestOutcome, Error> {
            let body = self.body();
            f.da.auth_request(T, &body, Some(&self.sign(&body))).await
        }

        async fn token(&self, f: &Fixture) -> String {
            match self.ask(f).await.unwrap() {
                AuthRequestOutcome::Token(token) => token,
                AuthRequestOutcome::Unauthorized => panic!("{} got no token", self.mac),
            }
        }
    }

    /// Admits `device`: its request, then the operator accepts its auth set.
    async fn admit(f: &Fixture, device: &TestDevice) -> Device {
        assert_eq!(
            device.ask(f).await.unwrap(),
            AuthRequestOutcome::Unauthorized
        );
        let stored = f.device_of(&device.mac).await.unwrap();
        let aid = &stored.auth_sets[0].id;
        f.da.set_auth_status(T, &stored.id, aid, "accepted")
            .await
            .unwrap();
        f.device_of(&device.mac).await.unwrap()
    }

    async fn token_valid(f: &Fixture, token: &str) -> bool {
        let claims: DeviceClaims = f.da.keys.verify(token).unwrap();
        f.da.check_device_token(&claims).await.unwrap()
    }

    #[tokio::test]
    async fn a_new_device_gets_a_pending_auth_set() {
        let f = fixture();
        let d = TestDevice::new("00:01", 1);
        assert_eq!(d.ask(&f).await.unwrap(), AuthRequestOutcome::Unauthorized);
        let device = f.device_of("00:01").await.unwrap();
        assert_eq!(device.status, PENDING);
        assert_eq!(device.auth_sets.len(), 1);
        assert_eq!(device.auth_sets[0].status, PENDING);
        assert_eq!(
            device.auth_sets[0].pubkey,
            PublicKey::from_pem(&d.pubkey()).unwrap().canonical_pem()
        );
        assert_eq!(f.counted("pending").await, 1);
        // inventory learns the identity and the status
        let jobs = f.jobs();
        assert!(jobs.iter().any(|j| matches!(j,
            Job::UpdateDeviceInventory { device_id, scope, .. }
                if *device_id == device.id && scope == "identity")));
        assert!(jobs.iter().any(|j| matches!(j,
            Job::UpdateDeviceStatus { device_status, .. } if device_status == "pending")));

        // the same request again: the same device and auth set
        assert_eq!(d.ask(&f).await.unwrap(), AuthRequestOutcome::Unauthorized);
        let again = f.device_of("00:01").await.unwrap();
        assert_eq!((again.id, again.auth_sets), (device.id, device.auth_sets));
        assert_eq!(f.counted("pending").await, 1);
    }

    #[tokio::test]
    async fn a_bad_signature_or_request_is_refused() {
        let f = fixture();
        let d = TestDevice::new("00:02", 2);
        let body = d.body();
        let other = TestDevice::new("00:02", 3).sign(&body);
        let answer = ApiError::from(f.da.auth_request(T, &body, Some(&other)).await.unwrap_err());
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.message, "signature verification failed");
        let answer = ApiError::from(f.da.auth_request(T, &body, None).await.unwrap_err());
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.message, "missing request signature header");
        assert!(f.device_of("00:02").await.is_none());
    }

    #[tokio::test]
    async fn an_accepted_device_gets_a_token_of_its_auth_set() {
        let f = fixture();
        let d = TestDevice::new("00:03", 3);
        let device = admit(&f, &d).await;
        assert_eq!(device.status, ACCEPTED);
        assert_eq!(f.counted("accepted").await, 1);
        assert_eq!(f.counted("pending").await, 0);
        // the first acceptance provisions the device
        assert!(f.jobs().iter().any(|j| matches!(j,
            Job::ProvisionDevice { device: provisioned, .. } if provisioned.id == device.id)));

        let token = d.token(&f).await;
        let claims: DeviceClaims = f.da.keys.verify(&token).unwrap();
        assert_eq!(claims.sub, device.id);
        assert_eq!(claims.jti, device.auth_sets[0].id);
        assert!(token_valid(&f, &token).await);
        // the token's issue is a check-in
        let device = f.device_of("00:03").await.unwrap();
        assert!(device.check_in_time.is_some());
    }

    #[tokio::test]
    async fn a_rejected_device_gets_401_and_loses_its_token() {
        let f = fixture();
        let d = TestDevice::new("00:04", 4);
        let device = admit(&f, &d).await;
        let token = d.token(&f).await;
        let aid = &device.auth_sets[0].id;
        f.da.set_auth_status(T, &device.id, aid, "rejected")
            .await
            .unwrap();
        assert_eq!(f.device_of("00:04").await.unwrap().status, REJECTED);
        assert_eq!(f.counted("rejected").await, 1);
        assert_eq!(f.counted("accepted").await, 0);
        assert!(!token_valid(&f, &token).await);
        assert_eq!(d.ask(&f).await.unwrap(), AuthRequestOutcome::Unauthorized);
        // back to pending: still no token
        f.da.set_auth_status(T, &device.id, aid, "pending")
            .await
            .unwrap();
        assert_eq!(f.device_of("00:04").await.unwrap().status, PENDING);
        assert_eq!(d.ask(&f).await.unwrap(), AuthRequestOutcome::Unauthorized);
    }

    #[tokio::test]
    async fn operator_decisions_follow_the_transition_table() {
        let f = fixture();
        let d = TestDevice::new("00:05", 5);
        d.ask(&f).await.unwrap();
        let device = f.device_of("00:05").await.unwrap();
        let aid = device.auth_sets[0].id.clone();
        let refused = |e: Error| {
            let answer = ApiError::from(e);
            (answer.status, answer.message)
        };
        let e = f.da.set_auth_status(T, &device.id, &aid, "noauth").await;
        assert_eq!(
            refused(e.unwrap_err()),
            (StatusCode::BAD_REQUEST, "incorrect device status".into())
        );
        let e =
            f.da.set_auth_status(T, &device.id, "nope", "accepted")
                .await;
        assert_eq!(
            refused(e.unwrap_err()),
            (StatusCode::NOT_FOUND, "authorization set not found".into())
        );
        // a second key of the same device: accepting it rejects the first
        let second = TestDevice {
            mac: "00:05".into(),
            key: SigningKey::from_bytes(&[55; 32]),
        };
        f.da.set_auth_status(T, &device.id, &aid, "accepted")
            .await
            .unwrap();
        second.ask(&f).await.unwrap();
        let device = f.device_of("00:05").await.unwrap();
        let other = device.auth_sets[1].id.clone();
        f.da.set_auth_status(T, &device.id, &other, "accepted")
            .await
            .unwrap();
        let device = f.device_of("00:05").await.unwrap();
        let statuses: Vec<AuthStatus> = device.auth_sets.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [REJECTED, ACCEPTED]);
        assert_eq!(device.status, ACCEPTED);
        assert_eq!(f.counted("accepted").await, 1);
        // a preauthorized set is the device's to accept
        let pre =
            f.da.preauthorize(
                T,
                &json!({"mac": "00:06"}),
                &TestDevice::new("", 6).pubkey(),
                false,
            )
            .await
            .unwrap();
        let pre_device = f.da.get_device(T, &pre).await.unwrap();
        let e =
            f.da.set_auth_status(T, &pre, &pre_device.auth_sets[0].id, "accepted")
                .await;
        assert_eq!(
            refused(e.unwrap_err()),
            (StatusCode::BAD_REQUEST, "dev auth: bad request".into())
        );
    }

    #[tokio::test]
    async fn a_preauthorized_device_is_accepted_on_its_first_request() {
        let f = fixture();
        let d = TestDevice::new("00:07", 7);
        let identity = json!({"mac": "00:07"});
        let id =
            f.da.preauthorize(T, &identity, &d.pubkey(), false)
                .await
                .unwrap();
        assert_eq!(f.da.get_device(T, &id).await.unwrap().status, PREAUTHORIZED);
        assert_eq!(f.counted("preauthorized").await, 1);
        // the same identity again: 409 with the device
        let e = f.da.preauthorize(T, &identity, &d.pubkey(), false).await;
        let Err(Error::Exists(existing)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(existing["id"], json!(id));
        assert_eq!(
            ApiError::from(Error::Exists(existing)).status,
            StatusCode::CONFLICT
        );

        let token = d.token(&f).await;
        let device = f.da.get_device(T, &id).await.unwrap();
        assert_eq!(device.status, ACCEPTED);
        assert_eq!(device.auth_sets[0].status, ACCEPTED);
        assert_eq!(f.counted("accepted").await, 1);
        assert_eq!(f.counted("preauthorized").await, 0);
        assert!(token_valid(&f, &token).await);
    }

    #[tokio::test]
    async fn max_devices_limits_acceptance() {
        let f = fixture();
        f.da.set_limit(T, MAX_DEVICES, 1).await.unwrap();
        assert_eq!(f.da.limit(T, MAX_DEVICES).await.unwrap(), 1);
        admit(&f, &TestDevice::new("00:08", 8)).await;
        let second = TestDevice::new("00:09", 9);
        second.ask(&f).await.unwrap();
        let device = f.device_of("00:09").await.unwrap();
        let e =
            f.da.set_auth_status(T, &device.id, &device.auth_sets[0].id, "accepted")
                .await;
        let answer = ApiError::from(e.unwrap_err());
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.message, "maximum number of accepted devices reached");
        // a preauthorized device over the limit is refused too
        let third = TestDevice::new("00:10", 10);
        f.da.preauthorize(T, &json!({"mac": "00:10"}), &third.pubkey(), false)
            .await
            .unwrap();
        let answer = ApiError::from(third.ask(&f).await.unwrap_err());
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(f.counted("accepted").await, 1);
        // no limit: both may be accepted
        f.da.set_limit(T, MAX_DEVICES, 2).await.unwrap();
        third.token(&f).await;
        assert_eq!(f.counted("accepted").await, 2);
    }

    #[tokio::test]
    async fn decommissioning_revokes_tokens_and_frees_the_identity() {
        let f = fixture();
        let d = TestDevice::new("00:11", 11);
        let device = admit(&f, &d).await;
        let token = d.token(&f).await;
        f.da.decommission(T, &device.id).await.unwrap();
        assert!(!token_valid(&f, &token).await);
        assert!(!f.da.is_live(T, &device.id).await.unwrap());
        assert_eq!(d.ask(&f).await.unwrap(), AuthRequestOutcome::Unauthorized);
        assert!(f.jobs().iter().any(|j| matches!(j,
            Job::DecommissionDevice { device_id, .. } if *device_id == device.id)));
        // the workflow's last step removes it; the identity may come back as a new device
        f.da.hard_delete(T, &device.id).await.unwrap();
        assert!(matches!(
            f.da.get_device(T, &device.id).await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(f.counted("accepted").await, 0);
        assert!(matches!(
            f.da.decommission(T, &device.id).await,
            Err(Error::NotFoundBare)
        ));
        d.ask(&f).await.unwrap();
        let again = f.device_of("00:11").await.unwrap();
        assert_ne!(again.id, device.id);
        assert_eq!(again.status, PENDING);
    }

    #[tokio::test]
    async fn deleting_the_last_preauthorized_set_removes_the_device() {
        let f = fixture();
        let key = TestDevice::new("", 12).pubkey();
        let id =
            f.da.preauthorize(T, &json!({"mac": "00:12"}), &key, false)
                .await
                .unwrap();
        let aid = f.da.get_device(T, &id).await.unwrap().auth_sets[0]
            .id
            .clone();
        f.da.delete_auth_set(T, &id, &aid).await.unwrap();
        assert!(f.da.get_device(T, &id).await.is_err());
        assert_eq!(f.da.count_devices(T, None).await.unwrap(), 0);
        assert!(f.device_of("00:12").await.is_none());
        // a pending device keeps existing without auth sets: noauth
        let d = TestDevice::new("00:13", 13);
        d.ask(&f).await.unwrap();
        let device = f.device_of("00:13").await.unwrap();
        f.da.delete_auth_set(T, &device.id, &device.auth_sets[0].id)
            .await
            .unwrap();
        assert_eq!(f.da.get_device(T, &device.id).await.unwrap().status, NOAUTH);
        assert_eq!(f.counted("noauth").await, 1);
        assert_eq!(f.counted("pending").await, 0);
    }

    #[tokio::test]
    async fn lists_by_status_page_in_status_then_id_order() {
        let f = fixture();
        for i in 0..3u8 {
            TestDevice::new(&format!("00:2{i}"), 20 + i)
                .ask(&f)
                .await
                .unwrap();
        }
        admit(&f, &TestDevice::new("00:29", 29)).await;
        let page = |page, per_page| Paging { page, per_page };
        let (all, more) =
            f.da.list_devices(T, &DeviceFilter::default(), page(1, 10))
                .await
                .unwrap();
        assert!(!more);
        let statuses: Vec<&str> = all.iter().map(|d| d.status.as_str()).collect();
        assert_eq!(statuses, ["accepted", "pending", "pending", "pending"]);
        let pending_ids: Vec<&String> = all[1..].iter().map(|d| &d.id).collect();
        let mut sorted = pending_ids.clone();
        sorted.sort();
        assert_eq!(pending_ids, sorted);
        let filter = DeviceFilter {
            statuses: vec!["pending".into()],
            ids: Vec::new(),
        };
        let (second, more) = f.da.list_devices(T, &filter, page(2, 2)).await.unwrap();
        assert!(!more);
        assert_eq!(second.len(), 1);
        assert_eq!(&second[0].id, pending_ids[2]);
        let (_, more) = f.da.list_devices(T, &filter, page(1, 2)).await.unwrap();
        assert!(more);
    }

    #[tokio::test]
    async fn the_token_check_records_check_ins_at_most_every_interval() {
        let f = fixture();
        let d = TestDevice::new("00:30", 30);
        let device = admit(&f, &d).await;
        let token = d.token(&f).await;
        let claims: DeviceClaims = f.da.keys.verify(&token).unwrap();
        let record = |check_in| TokenRecord {
            jti: claims.jti.clone(),
            device_id: device.id.clone(),
            expires_at: claims.exp,
            check_in,
        };
        // a token of another device is refused
        let mut stolen = claims.clone();
        stolen.sub = "another".into();
        assert!(!f.da.check_device_token(&stolen).await.unwrap());
        // just checked in: nothing written
        let before = f.da.store.get_token(T, &claims.jti).await.unwrap().unwrap();
        assert!(f.da.check_device_token(&claims).await.unwrap());
        assert_eq!(
            f.da.store.get_token(T, &claims.jti).await.unwrap(),
            Some(before)
        );
        // an old check-in: recorded on the token and the device
        let current = f.da.store.get_device(T, &device.id).await.unwrap().unwrap();
        f.da.store
            .put_token(T, &record(1000), &current)
            .await
            .unwrap();
        f.da.store
            .set_check_in_time(T, &device.id, "2000-01-01T00:00:00Z")
            .await
            .unwrap();
        assert!(f.da.check_device_token(&claims).await.unwrap());
        let after = f.da.store.get_token(T, &claims.jti).await.unwrap().unwrap();
        assert!(after.check_in > 1000);
        let device = f.da.store.get_device(T, &device.id).await.unwrap().unwrap();
        assert_ne!(
            device.check_in_time.as_deref(),
            Some("2000-01-01T00:00:00Z")
        );
    }

    #[tokio::test]
    async fn the_memory_store_enforces_the_table_conditions() {
        let store = MemoryStore::new();
        let mut device = Device::new("d".into(), "{}".into(), "h".into(), "t0");
        device.auth_sets.push(AuthSet {
            id: "a".into(),
            pubkey: "k".into(),
            status: PENDING,
            ts: "t0".into(),
        });
        device.recompute_status("t0");
        store.create_device(T, &device).await.unwrap();
        // the identity belongs to one device
        let mut twin = device.clone();
        twin.id = "twin".into();
        assert!(matches!(
            store.create_device(T, &twin).await,
            Err(DynamoError::ConditionFailed)
        ));
        // a write needs the version it was read at
        let mut first = store.get_device(T, "d").await.unwrap().unwrap();
        let mut stale = first.clone();
        first.decide("a", "accepted").unwrap();
        first.recompute_status("t1");
        store.update_device(T, &mut first).await.unwrap();
        assert_eq!(first.version, 1);
        stale.provisioned = true;
        assert!(matches!(
            store.update_device(T, &mut stale).await,
            Err(DynamoError::ConditionFailed)
        ));
        assert_eq!(stale.version, 0);
        let counts = store.status_counts(T).await.unwrap();
        assert_eq!((counts["accepted"], counts["pending"]), (1, 0));
        // a token only for the device as it is
        let token = TokenRecord {
            jti: "a".into(),
            device_id: "d".into(),
            expires_at: 0,
            check_in: 0,
        };
        assert!(store.put_token(T, &token, &stale).await.is_err());
        store.put_token(T, &token, &first).await.unwrap();
        assert!(store.touch_token(T, "a", 10, 5).await.unwrap());
        assert!(!store.touch_token(T, "a", 11, 5).await.unwrap());
        // deleting needs the current version too, and frees the identity
        assert!(store.delete_device(T, &stale).await.is_err());
        store.delete_device(T, &first).await.unwrap();
        assert_eq!(store.device_id_by_identity(T, "h").await.unwrap(), None);
        assert_eq!(store.status_counts(T).await.unwrap()["accepted"], 0);
    }
}
