//! An in-memory inventory [`Store`] for unit tests of the service's rules: devices in a map,
//! counts and list partitions computed from them on every read, the same version conditions
//! as the DynamoDB table (a write whose device changed since it was read fails with
//! `ConditionFailed`). Reads with `paths` project like the table does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use mender_aws::dynamo::DynamoError;

use super::{order_key, shard_of, GroupCounts, Partition, Placement, StatusCounts, Store};
use crate::model::{InventoryDevice, SYSTEM};

/// Devices by (tenant, id).
#[derive(Debug, Default)]
pub struct MemoryStore {
    devices: Mutex<BTreeMap<(String, String), InventoryDevice>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), InventoryDevice>> {
        // A test that panicked while holding the lock leaves the map as it was.
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tenant's devices, in id order.
    fn of_tenant(&self, tenant: &str) -> Vec<InventoryDevice> {
        self.lock()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, device)| device.clone())
            .collect()
    }

    /// The stored version of a device, `None` when there is none.
    fn version(&self, tenant: &str, id: &str) -> Option<i64> {
        self.lock()
            .get(&(tenant.to_owned(), id.to_owned()))
            .map(|d| d.version)
    }
}

fn key(tenant: &str, id: &str) -> (String, String) {
    (tenant.to_owned(), id.to_owned())
}

/// `device` with only `id`, the `paths` attributes and `system/created_ts`, as a DynamoDB
/// projection reads it.
fn project(device: InventoryDevice, paths: Option<&[(String, String)]>) -> InventoryDevice {
    let Some(paths) = paths else { return device };
    let mut projected = InventoryDevice {
        id: device.id.clone(),
        ..InventoryDevice::default()
    };
    let created = (SYSTEM.to_owned(), "created_ts".to_owned());
    for (scope, name) in paths.iter().chain([&created]) {
        if let Some(attr) = device.attributes.get(scope).and_then(|s| s.get(name)) {
            projected
                .attributes
                .entry(scope.clone())
                .or_default()
                .insert(name.clone(), attr.clone());
        }
    }
    projected
}

impl Store for MemoryStore {
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<InventoryDevice>, DynamoError> {
        Ok(self.lock().get(&key(tenant, id)).cloned())
    }

    async fn put(
        &self,
        tenant: &str,
        device: &mut InventoryDevice,
        before: Option<&InventoryDevice>,
    ) -> Result<(), DynamoError> {
        let mut devices = self.lock();
        let stored = devices.get(&key(tenant, &device.id)).map(|d| d.version);
        if stored != before.map(|b| b.version) {
            return Err(DynamoError::ConditionFailed);
        }
        device.version = stored.map_or(1, |v| v + 1);
        devices.insert(key(tenant, &device.id), device.clone());
        Ok(())
    }

    async fn delete(&self, tenant: &str, device: &InventoryDevice) -> Result<(), DynamoError> {
        if self.version(tenant, &device.id) != Some(device.version) {
            return Err(DynamoError::ConditionFailed);
        }
        self.lock().remove(&key(tenant, &device.id));
        Ok(())
    }

    async fn status_counts(&self, tenant: &str) -> Result<StatusCounts, DynamoError> {
        let mut counts = StatusCounts::new();
        for device in self.of_tenant(tenant) {
            let place = Placement::of(&device);
            *counts
                .entry(place.status)
                .or_default()
                .entry(place.tier)
                .or_default() += 1;
        }
        Ok(counts)
    }

    async fn group_counts(&self, tenant: &str) -> Result<GroupCounts, DynamoError> {
        let mut counts = GroupCounts::new();
        for device in self.of_tenant(tenant) {
            let place = Placement::of(&device);
            if let Some(group) = place.group {
                *counts
                    .entry(group)
                    .or_default()
                    .entry(place.status)
                    .or_default() += 1;
            }
        }
        Ok(counts)
    }

    async fn group_count(
        &self,
        tenant: &str,
        group: &str,
    ) -> Result<BTreeMap<String, i64>, DynamoError> {
        let mut counts = self.group_counts(tenant).await?;
        Ok(counts.remove(group).unwrap_or_default())
    }

    async fn partition_keys(
        &self,
        tenant: &str,
        partition: &Partition,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, String)>, DynamoError> {
        let mut keys: Vec<(String, String)> = self
            .of_tenant(tenant)
            .into_iter()
            .filter(|d| partition.holds(&Placement::of(d)))
            .map(|d| (order_key(&d), d.id))
            .collect();
        keys.sort();
        if descending {
            keys.reverse();
        }
        keys.truncate(limit);
        Ok(keys)
    }

    async fn get_many(
        &self,
        tenant: &str,
        ids: &[String],
        paths: Option<&[(String, String)]>,
    ) -> Result<Vec<InventoryDevice>, DynamoError> {
        let devices = self.lock();
        let mut by_id: HashMap<&str, InventoryDevice> = HashMap::new();
        for id in ids {
            if let Some(device) = devices.get(&key(tenant, id)) {
                by_id.insert(id, project(device.clone(), paths));
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(id.as_str()))
            .collect())
    }

    async fn scan_shard(
        &self,
        tenant: &str,
        shard: u32,
        paths: Option<&[(String, String)]>,
        limit: Option<usize>,
        visit: &mut (dyn FnMut(InventoryDevice) + Send),
    ) -> Result<(), DynamoError> {
        let devices = self
            .of_tenant(tenant)
            .into_iter()
            .filter(|d| shard_of(&d.id) == shard)
            .take(limit.unwrap_or(usize::MAX));
        for device in devices {
            visit(project(device, paths));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::IDENTITY;
    use serde_json::json;

    #[tokio::test]
    async fn writes_are_conditional_on_the_version_read() {
        let store = MemoryStore::new();
        let mut d = InventoryDevice::new("d");
        store.put("t", &mut d, None).await.unwrap();
        assert_eq!(d.version, 1);
        // A second create of the same device loses.
        let mut again = InventoryDevice::new("d");
        assert!(matches!(
            store.put("t", &mut again, None).await,
            Err(DynamoError::ConditionFailed)
        ));
        let read = store.get("t", "d").await.unwrap().unwrap();
        let mut changed = read.clone();
        changed.set(IDENTITY, "status", json!("accepted"));
        store.put("t", &mut changed, Some(&read)).await.unwrap();
        assert_eq!(changed.version, 2);
        // A write from the old read loses, and so does a delete of the old version.
        let mut stale = read.clone();
        assert!(store.put("t", &mut stale, Some(&read)).await.is_err());
        assert!(store.delete("t", &read).await.is_err());
        store.delete("t", &changed).await.unwrap();
        assert_eq!(store.get("t", "d").await.unwrap(), None);
        // Tenants do not see each other's devices.
        let mut other = InventoryDevice::new("d");
        store.put("u", &mut other, None).await.unwrap();
        assert_eq!(store.get("t", "d").await.unwrap(), None);
    }
}
