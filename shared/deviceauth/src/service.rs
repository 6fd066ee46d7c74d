//! deviceauth operations: the device's auth request, operator decisions, preauthorization,
//! decommissioning, tokens and limits, and the device-token check every device endpoint runs.
//! State changes are stored first (conditional writes, retried on conflict), then workflows
//! are published.

use std::sync::Arc;

use async_trait::async_trait;
use device_keys::{identity_from_json_text, identity_from_value, PublicKey};
use mender_aws::dynamo::DynamoError;
use mender_aws::retry::{lost_race, Attempts};
use mender_http::paging::Paging;
use mender_http::{ApiError, DeviceTokenCheck};
use mender_tokens::{DeviceClaims, Keys};
use serde::Deserialize;
use serde_json::{json, Value};
use workflows::{Attribute, DeviceRef, Job, Publisher};

use crate::model::{
    AuthSet, AuthStatus, Device, TransitionError, ACCEPTED, PENDING, PREAUTHORIZED, STATUSES,
};
use crate::store::{Store, TokenRecord};

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

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use mender_http::error::StatusCode;
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::Unauthorized(m) => ApiError::unauthorized(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::NotFoundBare => ApiError::bare(StatusCode::NOT_FOUND),
            Error::Unprocessable(m) => ApiError::unprocessable(m),
            Error::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            Error::Exists(_) => ApiError::conflict("device already exists"),
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
        }
    }
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

#[derive(Clone)]
pub struct Deviceauth {
    pub store: Store,
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

impl Deviceauth {
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
}

#[async_trait]
impl DeviceTokenCheck for Deviceauth {
    /// One GetItem: the token record exists (reject, dismiss, decommission and revoke delete it)
    /// and names this device. The check-in is written at most every `check_in_interval_secs`.
    async fn device_token_valid(&self, claims: &DeviceClaims) -> Result<bool, ApiError> {
        let tenant = claims.tenant.as_str();
        let record = self
            .store
            .get_token(tenant, &claims.jti)
            .await
            .map_err(ApiError::internal)?;
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
                .await
                .map_err(ApiError::internal)?;
            if recorded {
                let when = ts(now);
                self.store
                    .set_check_in_time(tenant, &record.device_id, &when)
                    .await
                    .map_err(ApiError::internal)?;
                if now.timestamp() - record.check_in >= INVENTORY_CHECK_IN_SECS {
                    self.publish_check_in(tenant, &record.device_id, &when)
                        .await
                        .map_err(ApiError::from)?;
                }
            }
        }
        Ok(true)
    }
}
