//! An in-memory deployments [`Store`](super::Store) for unit tests of the service's rules:
//! every item of the table in a map, with the DynamoDB table's conditions (claims of an
//! artifact's name x depends combinations taken all or nothing, deployment and upload ids
//! created once, device deployments moved only from the status they were read in together with
//! their deployment's counters, first fetch / finish / history stamp recorded once) and its
//! orders (ids, device ids, created then deployment id). A transition writes the fields the
//! table's update sets: those `None` in the new value keep their stored value.
//!
//! [`MemoryStore::race_next_transition`] lets another writer in just before the next
//! transition, the way a concurrent status report wins a race against the table.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use mender_aws::dynamo::DynamoError;
use serde_json::Value;

use super::{ArtifactStore, DeploymentStore, DeviceDeploymentStore, ReleaseMeta, UploadIntent};
use crate::model::{
    empty_statistics, Artifact, Deployment, DeviceDeployment, DeviceStatus, Statistics,
};

/// (tenant, id or name).
type Key = (String, String);
/// (tenant, deployment id, device id).
type DeviceKey = (String, String, String);

/// A transition another writer makes: (new value, status it moves from, counter deltas).
type Race = (DeviceDeployment, DeviceStatus, Vec<(String, i64)>);

/// Every item of the table, by its key.
#[derive(Debug, Default)]
struct Tables {
    artifacts: BTreeMap<Key, Artifact>,
    /// (tenant, artifact name, depends combination) -> the artifact id that claimed it.
    claims: BTreeMap<(String, String, String), String>,
    intents: BTreeMap<Key, UploadIntent>,
    releases: BTreeMap<Key, ReleaseMeta>,
    deployments: BTreeMap<Key, StoredDeployment>,
    devices: BTreeMap<DeviceKey, DeviceDeployment>,
    logs: BTreeMap<DeviceKey, String>,
    /// Transitions to apply before the next ones of callers, oldest first.
    races: VecDeque<Race>,
}

/// A deployment item: its fields and its top-level counters.
#[derive(Debug)]
struct StoredDeployment {
    /// As written (`statistics` and `status` are not read back from here).
    deployment: Deployment,
    /// Counter attribute (`c_<status>`) -> count.
    counters: BTreeMap<String, i64>,
}

impl StoredDeployment {
    /// The deployment as the table's reader builds it: statistics from the counters (every
    /// status present), status computed from them.
    fn read(&self) -> Deployment {
        let mut deployment = self.deployment.clone();
        deployment.statistics = statistics(&self.counters);
        deployment.status = deployment.computed_status();
        deployment
    }

    /// `ADD name :delta`.
    fn add(&mut self, name: &str, delta: i64) {
        *self.counters.entry(name.to_owned()).or_insert(0) += delta;
    }
}

fn statistics(counters: &BTreeMap<String, i64>) -> Statistics {
    let mut statistics = empty_statistics();
    for (name, count) in counters {
        if let Some(status) = name.strip_prefix("c_") {
            statistics.insert(status.to_owned(), *count);
        }
    }
    statistics
}

fn key(tenant: &str, id: &str) -> Key {
    (tenant.to_owned(), id.to_owned())
}

fn device_key(tenant: &str, deployment: &str, device: &str) -> DeviceKey {
    (tenant.to_owned(), deployment.to_owned(), device.to_owned())
}

/// What DynamoDB answers a request naming one item twice.
fn validation(message: &str) -> DynamoError {
    DynamoError::Other(format!("ValidationException: {message}"))
}

/// `stored` with every field `to` serializes set from `to` (an update's `SET` of each of the
/// new item's attributes): fields `to` leaves `None` keep their stored value.
fn merged(
    stored: &DeviceDeployment,
    to: &DeviceDeployment,
) -> Result<DeviceDeployment, DynamoError> {
    let mut value = serde_json::to_value(stored).map_err(DynamoError::wrap)?;
    let new = serde_json::to_value(to).map_err(DynamoError::wrap)?;
    if let (Value::Object(fields), Value::Object(new)) = (&mut value, new) {
        fields.extend(new);
    }
    serde_json::from_value(value).map_err(DynamoError::wrap)
}

/// The device deployments of `device`, oldest first (the by-device indexes' sort key).
fn by_device<'a>(
    devices: impl Iterator<Item = (&'a DeviceKey, &'a DeviceDeployment)>,
    tenant: &str,
    device: &str,
) -> Vec<DeviceDeployment> {
    let mut found: Vec<(String, DeviceDeployment)> = devices
        .filter(|((t, _, d), _)| t == tenant && d == device)
        .map(|(_, dd)| (format!("{}#{}", dd.created, dd.deployment_id), dd.clone()))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(_, dd)| dd).collect()
}

impl Tables {
    /// One transition, both writes or neither.
    fn transition(
        &mut self,
        tenant: &str,
        to: &DeviceDeployment,
        from: DeviceStatus,
        deployment_delta: &[(String, i64)],
    ) -> Result<(), DynamoError> {
        let at = device_key(tenant, &to.deployment_id, &to.device_id);
        let stored = match self.devices.get(&at) {
            Some(stored) if stored.status == from => stored,
            _ => return Err(DynamoError::ConditionFailed),
        };
        let next = merged(stored, to)?;
        self.devices.insert(at, next);
        // The deployment item always exists (deployments are never deleted).
        if let Some(deployment) = self.deployments.get_mut(&key(tenant, &to.deployment_id)) {
            for (name, delta) in deployment_delta {
                deployment.add(name, *delta);
            }
        }
        Ok(())
    }
}

/// Every item by its key, behind one lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A test that panicked while holding the lock leaves the maps as they were.
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Another writer's transition (the arguments of
    /// [`DeviceDeploymentStore::transition`]), applied just before the next transition a
    /// caller asks for, so that one finds the device deployment changed since it read it.
    pub fn race_next_transition(
        &self,
        to: DeviceDeployment,
        from: DeviceStatus,
        deployment_delta: &[(&str, i64)],
    ) {
        let delta = deployment_delta
            .iter()
            .map(|(name, n)| ((*name).to_owned(), *n))
            .collect();
        self.lock().races.push_back((to, from, delta));
    }
}

impl ArtifactStore for MemoryStore {
    async fn create_artifact(
        &self,
        tenant: &str,
        artifact: &Artifact,
        combinations: &[String],
    ) -> Result<(), DynamoError> {
        let distinct: BTreeSet<&String> = combinations.iter().collect();
        if distinct.len() != combinations.len() {
            return Err(validation(
                "Transaction request cannot include multiple operations on one item",
            ));
        }
        let claims: Vec<(String, String, String)> = combinations
            .iter()
            .map(|c| (tenant.to_owned(), artifact.name.clone(), c.clone()))
            .collect();
        let mut tables = self.lock();
        if tables.artifacts.contains_key(&key(tenant, &artifact.id))
            || claims.iter().any(|c| tables.claims.contains_key(c))
        {
            return Err(DynamoError::ConditionFailed);
        }
        for claim in claims {
            tables.claims.insert(claim, artifact.id.clone());
        }
        tables
            .artifacts
            .insert(key(tenant, &artifact.id), artifact.clone());
        Ok(())
    }

    async fn get_artifact(&self, tenant: &str, id: &str) -> Result<Option<Artifact>, DynamoError> {
        Ok(self.lock().artifacts.get(&key(tenant, id)).cloned())
    }

    async fn list_artifacts(&self, tenant: &str) -> Result<Vec<Artifact>, DynamoError> {
        Ok(self
            .lock()
            .artifacts
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, a)| a.clone())
            .collect())
    }

    async fn put_artifact(&self, tenant: &str, artifact: &Artifact) -> Result<(), DynamoError> {
        self.lock()
            .artifacts
            .insert(key(tenant, &artifact.id), artifact.clone());
        Ok(())
    }

    async fn delete_artifact(
        &self,
        tenant: &str,
        artifact: &Artifact,
        combinations: &[String],
    ) -> Result<(), DynamoError> {
        let mut tables = self.lock();
        for combination in combinations {
            let claim = (
                tenant.to_owned(),
                artifact.name.clone(),
                combination.clone(),
            );
            tables.claims.remove(&claim);
        }
        tables.artifacts.remove(&key(tenant, &artifact.id));
        Ok(())
    }

    async fn put_intent(&self, tenant: &str, intent: &UploadIntent) -> Result<(), DynamoError> {
        let mut tables = self.lock();
        if tables.intents.contains_key(&key(tenant, &intent.id)) {
            return Err(DynamoError::ConditionFailed);
        }
        tables
            .intents
            .insert(key(tenant, &intent.id), intent.clone());
        Ok(())
    }

    async fn delete_intent(&self, tenant: &str, id: &str) -> Result<(), DynamoError> {
        self.lock().intents.remove(&key(tenant, id));
        Ok(())
    }

    async fn get_intent(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<UploadIntent>, DynamoError> {
        Ok(self.lock().intents.get(&key(tenant, id)).cloned())
    }

    async fn move_intent(
        &self,
        tenant: &str,
        id: &str,
        from: &str,
        to: &str,
        when: &str,
    ) -> Result<(), DynamoError> {
        let mut tables = self.lock();
        match tables.intents.get_mut(&key(tenant, id)) {
            Some(intent) if intent.status == from => {
                intent.status = to.to_owned();
                intent.updated_ts = when.to_owned();
                Ok(())
            }
            _ => Err(DynamoError::ConditionFailed),
        }
    }

    async fn release_metas(&self, tenant: &str) -> Result<Vec<ReleaseMeta>, DynamoError> {
        Ok(self
            .lock()
            .releases
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn put_release_meta(&self, tenant: &str, meta: &ReleaseMeta) -> Result<(), DynamoError> {
        self.lock()
            .releases
            .insert(key(tenant, &meta.name), meta.clone());
        Ok(())
    }

    async fn delete_release_meta(&self, tenant: &str, name: &str) -> Result<(), DynamoError> {
        self.lock().releases.remove(&key(tenant, name));
        Ok(())
    }
}

impl DeploymentStore for MemoryStore {
    async fn create_deployment(
        &self,
        tenant: &str,
        deployment: &Deployment,
        devices: &[DeviceDeployment],
    ) -> Result<(), DynamoError> {
        let mut tables = self.lock();
        if tables
            .deployments
            .contains_key(&key(tenant, &deployment.id))
        {
            return Err(DynamoError::ConditionFailed);
        }
        let counters = deployment
            .statistics
            .iter()
            .map(|(status, count)| (format!("c_{status}"), *count))
            .collect();
        let stored = StoredDeployment {
            deployment: deployment.clone(),
            counters,
        };
        tables
            .deployments
            .insert(key(tenant, &deployment.id), stored);
        for dd in devices {
            let at = device_key(tenant, &dd.deployment_id, &dd.device_id);
            tables.devices.insert(at, dd.clone());
        }
        Ok(())
    }

    async fn get_deployment(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Deployment>, DynamoError> {
        Ok(self
            .lock()
            .deployments
            .get(&key(tenant, id))
            .map(StoredDeployment::read))
    }

    async fn list_deployments(&self, tenant: &str) -> Result<Vec<Deployment>, DynamoError> {
        Ok(self
            .lock()
            .deployments
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, d)| d.read())
            .collect())
    }

    async fn set_deployment_artifacts(
        &self,
        tenant: &str,
        id: &str,
        artifacts: &[String],
    ) -> Result<(), DynamoError> {
        // The deployment item always exists (deployments are never deleted).
        if let Some(stored) = self.lock().deployments.get_mut(&key(tenant, id)) {
            stored.deployment.artifacts = artifacts.to_vec();
        }
        Ok(())
    }

    async fn finish_deployment(
        &self,
        tenant: &str,
        id: &str,
        when: &str,
    ) -> Result<(), DynamoError> {
        if let Some(stored) = self.lock().deployments.get_mut(&key(tenant, id)) {
            stored
                .deployment
                .finished
                .get_or_insert_with(|| when.to_owned());
        }
        Ok(())
    }

    async fn deployment_statistics(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<(String, String, Statistics)>, DynamoError> {
        let distinct: BTreeSet<&String> = ids.iter().collect();
        if distinct.len() != ids.len() {
            return Err(validation("Provided list of item keys contains duplicates"));
        }
        let tables = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| tables.deployments.get(&key(tenant, id)))
            .map(|d| {
                let created = d.deployment.created.clone();
                (created, d.deployment.id.clone(), statistics(&d.counters))
            })
            .collect())
    }
}

impl DeviceDeploymentStore for MemoryStore {
    async fn device_deployment(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> Result<Option<DeviceDeployment>, DynamoError> {
        let at = device_key(tenant, deployment, device);
        Ok(self.lock().devices.get(&at).cloned())
    }

    async fn deployment_devices(
        &self,
        tenant: &str,
        deployment: &str,
    ) -> Result<Vec<DeviceDeployment>, DynamoError> {
        Ok(self
            .lock()
            .devices
            .iter()
            .filter(|((t, dep, _), _)| t == tenant && dep == deployment)
            .map(|(_, dd)| dd.clone())
            .collect())
    }

    async fn active_for_device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Vec<DeviceDeployment>, DynamoError> {
        let tables = self.lock();
        let active = tables
            .devices
            .iter()
            .filter(|(_, dd)| !dd.status.is_terminal());
        Ok(by_device(active, tenant, device))
    }

    async fn history_for_device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Vec<DeviceDeployment>, DynamoError> {
        Ok(by_device(self.lock().devices.iter(), tenant, device))
    }

    async fn transition(
        &self,
        tenant: &str,
        to: &DeviceDeployment,
        from: DeviceStatus,
        deployment_delta: &[(&str, i64)],
    ) -> Result<(), DynamoError> {
        let mut tables = self.lock();
        if let Some((other, other_from, other_delta)) = tables.races.pop_front() {
            // The other writer's own lost race is its business, not this caller's.
            let _ = tables.transition(tenant, &other, other_from, &other_delta);
        }
        let delta: Vec<(String, i64)> = deployment_delta
            .iter()
            .map(|(name, n)| ((*name).to_owned(), *n))
            .collect();
        tables.transition(tenant, to, from, &delta)
    }

    async fn record_fetch(
        &self,
        tenant: &str,
        dd: &DeviceDeployment,
        artifact_id: &str,
        request: &str,
        size: u64,
    ) -> Result<(), DynamoError> {
        let mut tables = self.lock();
        let at = device_key(tenant, &dd.deployment_id, &dd.device_id);
        match tables.devices.get_mut(&at) {
            Some(stored) if stored.artifact_id.is_none() => {
                stored.artifact_id = Some(artifact_id.to_owned());
                stored.request = Some(request.to_owned());
            }
            _ => return Ok(()),
        }
        if let Some(deployment) = tables.deployments.get_mut(&key(tenant, &dd.deployment_id)) {
            deployment.deployment.device_count += 1;
            deployment.deployment.total_size += size;
        }
        Ok(())
    }

    async fn set_log_flag(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> Result<(), DynamoError> {
        let at = device_key(tenant, deployment, device);
        match self.lock().devices.get_mut(&at) {
            Some(stored) => {
                stored.log = true;
                Ok(())
            }
            None => Err(DynamoError::ConditionFailed),
        }
    }

    async fn put_log(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
        messages: &str,
    ) -> Result<(), DynamoError> {
        let at = device_key(tenant, deployment, device);
        self.lock().logs.insert(at, messages.to_owned());
        Ok(())
    }

    async fn get_log(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> Result<Option<String>, DynamoError> {
        let at = device_key(tenant, deployment, device);
        Ok(self.lock().logs.get(&at).cloned())
    }

    async fn mark_deleted(
        &self,
        tenant: &str,
        dd: &DeviceDeployment,
        when: &str,
    ) -> Result<bool, DynamoError> {
        let at = device_key(tenant, &dd.deployment_id, &dd.device_id);
        match self.lock().devices.get_mut(&at) {
            Some(stored) if stored.status.is_terminal() && stored.deleted.is_none() => {
                stored.deleted = Some(when.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pending(deployment: &str, device: &str) -> DeviceDeployment {
        DeviceDeployment {
            deployment_id: deployment.into(),
            device_id: device.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn claims_are_taken_all_or_nothing() {
        let store = MemoryStore::new();
        let a = Artifact {
            id: "a".into(),
            name: "rel".into(),
            ..Default::default()
        };
        let b = Artifact {
            id: "b".into(),
            ..a.clone()
        };
        store
            .create_artifact("t", &a, &["x".into(), "y".into()])
            .await
            .unwrap();
        let clash = store
            .create_artifact("t", &b, &["z".into(), "y".into()])
            .await;
        assert!(matches!(clash, Err(DynamoError::ConditionFailed)));
        // z was not taken by the refused write; the same id is refused too.
        store.create_artifact("t", &b, &["z".into()]).await.unwrap();
        let same_id = store.create_artifact("t", &b, &["w".into()]).await;
        assert!(matches!(same_id, Err(DynamoError::ConditionFailed)));
        let twice = store
            .create_artifact("t", &a, &["v".into(), "v".into()])
            .await;
        assert!(matches!(twice, Err(DynamoError::Other(_))));
        // Another tenant claims independently.
        store.create_artifact("u", &a, &["x".into()]).await.unwrap();
    }

    #[tokio::test]
    async fn a_transition_needs_the_status_it_was_read_in_and_keeps_unset_fields() {
        let store = MemoryStore::new();
        let deployment = Deployment {
            id: "d".into(),
            max_devices: 1,
            statistics: BTreeMap::from([("pending".to_owned(), 1)]),
            ..Default::default()
        };
        let read = pending("d", "x");
        store
            .create_deployment("t", &deployment, std::slice::from_ref(&read))
            .await
            .unwrap();
        store
            .record_fetch("t", &read, "art", "req", 7)
            .await
            .unwrap();
        // A second fetch counts nothing.
        store
            .record_fetch("t", &read, "other", "req", 7)
            .await
            .unwrap();
        let mut to = read.clone();
        to.status = DeviceStatus::Downloading;
        let delta = [("c_pending", -1), ("c_downloading", 1)];
        let stale = store.transition("t", &to, DeviceStatus::Installing, &delta);
        assert!(matches!(stale.await, Err(DynamoError::ConditionFailed)));
        store
            .transition("t", &to, DeviceStatus::Pending, &delta)
            .await
            .unwrap();
        let stored = store
            .device_deployment("t", "d", "x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, DeviceStatus::Downloading);
        assert_eq!(stored.artifact_id.as_deref(), Some("art"));
        let d = store.get_deployment("t", "d").await.unwrap().unwrap();
        assert_eq!((d.device_count, d.total_size), (1, 7));
        assert_eq!(d.statistics["pending"], 0);
        assert_eq!(d.statistics["downloading"], 1);
        assert_eq!(d.statistics["success"], 0);
        // Unfinished: active, and not stamped deleted.
        assert_eq!(store.active_for_device("t", "x").await.unwrap().len(), 1);
        assert!(!store.mark_deleted("t", &stored, "now").await.unwrap());
        // The finish time is recorded once.
        store.finish_deployment("t", "d", "first").await.unwrap();
        store.finish_deployment("t", "d", "second").await.unwrap();
        let d = store.get_deployment("t", "d").await.unwrap().unwrap();
        assert_eq!(d.finished.as_deref(), Some("first"));
    }
}
