//! An in-memory deviceauth [`Store`] for unit tests of the service's rules: the table's items
//! in maps, with the same conditions as the DynamoDB table: a device write needs the version
//! the device was read at, an identity belongs to one device per tenant, a token is stored only
//! for an unchanged device that is not being decommissioned, and the status counters move
//! with the stored status, all or nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use mender_aws::dynamo::DynamoError;

use super::{Store, TokenRecord};
use crate::model::{AuthStatus, Device};

/// Everything by tenant first, like the table's keys.
#[derive(Debug, Default)]
struct Items {
    /// (tenant, id) -> device, as stored (no `stored_status`).
    devices: BTreeMap<(String, String), Device>,
    /// (tenant, identity hash) -> device id.
    guards: HashMap<(String, String), String>,
    /// tenant -> status -> devices counted under it.
    counts: HashMap<String, BTreeMap<String, i64>>,
    /// (tenant, jti) -> token.
    tokens: HashMap<(String, String), TokenRecord>,
    /// (tenant, name) -> value.
    limits: HashMap<(String, String), i64>,
}

impl Items {
    /// The counter move of one device from `from` to `to` (`None`: created or deleted).
    fn recount(&mut self, tenant: &str, from: Option<AuthStatus>, to: Option<AuthStatus>) {
        let counts = self.counts.entry(tenant.to_owned()).or_default();
        for (status, delta) in [(from, -1), (to, 1)] {
            if let Some(status) = status {
                *counts.entry(status.to_string()).or_default() += delta;
            }
        }
    }

    /// The stored version of a device, `None` when there is none.
    fn version(&self, tenant: &str, id: &str) -> Option<i64> {
        self.devices.get(&key(tenant, id)).map(|d| d.version)
    }
}

/// The deviceauth items in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<Items>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Items> {
        // A test that panicked while holding the lock leaves the items as they were.
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(tenant: &str, id: &str) -> (String, String) {
    (tenant.to_owned(), id.to_owned())
}

/// A device as read: remembers the status it is counted under.
fn loaded(device: &Device) -> Device {
    let mut device = device.clone();
    device.stored_status = Some(device.status);
    device
}

/// A device as stored: what it is counted under is known from its status.
fn stored(device: &Device) -> Device {
    let mut device = device.clone();
    device.stored_status = None;
    device
}

impl Store for MemoryStore {
    async fn get_device(&self, tenant: &str, id: &str) -> Result<Option<Device>, DynamoError> {
        Ok(self.lock().devices.get(&key(tenant, id)).map(loaded))
    }

    async fn get_devices(&self, tenant: &str, ids: &[String]) -> Result<Vec<Device>, DynamoError> {
        // BatchGetItem refuses a request naming a key twice (the table reads 100 keys a
        // request; a key repeated in another request is read twice).
        for chunk in ids.chunks(100) {
            if chunk.iter().collect::<BTreeSet<_>>().len() != chunk.len() {
                return Err(DynamoError::Other(
                    "provided list of item keys contains duplicates".into(),
                ));
            }
        }
        let items = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| items.devices.get(&key(tenant, id)).map(loaded))
            .collect())
    }

    async fn ids_by_status(
        &self,
        tenant: &str,
        status: &str,
        limit: usize,
    ) -> Result<Vec<String>, DynamoError> {
        Ok(self
            .lock()
            .devices
            .iter()
            .filter(|((t, _), d)| t == tenant && d.status.as_str() == status)
            .take(limit)
            .map(|((_, id), _)| id.clone())
            .collect())
    }

    async fn status_counts(&self, tenant: &str) -> Result<BTreeMap<String, i64>, DynamoError> {
        Ok(self.lock().counts.get(tenant).cloned().unwrap_or_default())
    }

    async fn device_id_by_identity(
        &self,
        tenant: &str,
        hash: &str,
    ) -> Result<Option<String>, DynamoError> {
        Ok(self.lock().guards.get(&key(tenant, hash)).cloned())
    }

    async fn create_device(&self, tenant: &str, device: &Device) -> Result<(), DynamoError> {
        let mut items = self.lock();
        let guard = key(tenant, &device.id_hash);
        let id = key(tenant, &device.id);
        if items.guards.contains_key(&guard) || items.devices.contains_key(&id) {
            return Err(DynamoError::ConditionFailed);
        }
        items.guards.insert(guard, device.id.clone());
        items.devices.insert(id, stored(device));
        items.recount(tenant, None, Some(device.status));
        Ok(())
    }

    async fn update_device(&self, tenant: &str, device: &mut Device) -> Result<(), DynamoError> {
        let mut items = self.lock();
        let id = key(tenant, &device.id);
        let Some(before) = items.devices.get(&id) else {
            return Err(DynamoError::ConditionFailed);
        };
        if before.version != device.version {
            return Err(DynamoError::ConditionFailed);
        }
        let mut new = stored(device);
        new.version += 1;
        new.check_in_time.clone_from(&before.check_in_time);
        if device.stored_status != Some(device.status) {
            items.recount(tenant, device.stored_status, Some(device.status));
        }
        items.devices.insert(id, new);
        device.version += 1;
        device.stored_status = Some(device.status);
        Ok(())
    }

    async fn delete_device(&self, tenant: &str, device: &Device) -> Result<(), DynamoError> {
        let mut items = self.lock();
        if items.version(tenant, &device.id) != Some(device.version) {
            return Err(DynamoError::ConditionFailed);
        }
        items.devices.remove(&key(tenant, &device.id));
        items.guards.remove(&key(tenant, &device.id_hash));
        let counted = device.stored_status.unwrap_or(device.status);
        items.recount(tenant, Some(counted), None);
        Ok(())
    }

    async fn set_check_in_time(
        &self,
        tenant: &str,
        device_id: &str,
        ts: &str,
    ) -> Result<(), DynamoError> {
        if let Some(device) = self.lock().devices.get_mut(&key(tenant, device_id)) {
            device.check_in_time = Some(ts.to_owned());
        }
        Ok(())
    }

    async fn put_token(
        &self,
        tenant: &str,
        token: &TokenRecord,
        device: &Device,
    ) -> Result<(), DynamoError> {
        let mut items = self.lock();
        let unchanged = items
            .devices
            .get(&key(tenant, &device.id))
            .is_some_and(|d| d.version == device.version && !d.decommissioning);
        if !unchanged {
            return Err(DynamoError::ConditionFailed);
        }
        items.tokens.insert(key(tenant, &token.jti), token.clone());
        Ok(())
    }

    async fn get_token(&self, tenant: &str, jti: &str) -> Result<Option<TokenRecord>, DynamoError> {
        Ok(self.lock().tokens.get(&key(tenant, jti)).cloned())
    }

    async fn delete_token(&self, tenant: &str, jti: &str) -> Result<(), DynamoError> {
        self.lock().tokens.remove(&key(tenant, jti));
        Ok(())
    }

    async fn touch_token(
        &self,
        tenant: &str,
        jti: &str,
        now: i64,
        threshold: i64,
    ) -> Result<bool, DynamoError> {
        match self.lock().tokens.get_mut(&key(tenant, jti)) {
            Some(token) if token.check_in < threshold => {
                token.check_in = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_limit(&self, tenant: &str, name: &str) -> Result<Option<i64>, DynamoError> {
        Ok(self.lock().limits.get(&key(tenant, name)).copied())
    }

    async fn put_limit(&self, tenant: &str, name: &str, value: i64) -> Result<(), DynamoError> {
        self.lock().limits.insert(key(tenant, name), value);
        Ok(())
    }

    async fn delete_limit(&self, tenant: &str, name: &str) -> Result<(), DynamoError> {
        self.lock().limits.remove(&key(tenant, name));
        Ok(())
    }
}
