//! An in-memory deviceconfig [`Store`] for unit tests of the service's rules: records in a map,
//! written as the DynamoDB table writes them (a map write is an upsert that leaves the other
//! map alone, a deployment needs the record, creating keeps an existing one) and refused with
//! the same `ConditionFailed`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use mender_aws::dynamo::DynamoError;

use super::{DeviceConfig, Side, Store};
use crate::Configuration;

/// Records by (tenant, device id).
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<(String, String), DeviceConfig>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), DeviceConfig>> {
        // A test that panicked while holding the lock leaves the map as it was.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(tenant: &str, device_id: &str) -> (String, String) {
    (tenant.to_owned(), device_id.to_owned())
}

fn now() -> String {
    mender_http::time::now_string()
}

impl Store for MemoryStore {
    async fn get(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<Option<DeviceConfig>, DynamoError> {
        Ok(self.lock().get(&key(tenant, device_id)).cloned())
    }

    async fn set_map(
        &self,
        tenant: &str,
        device_id: &str,
        side: Side,
        configuration: &Configuration,
    ) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let record = records
            .entry(key(tenant, device_id))
            .or_insert_with(|| DeviceConfig {
                id: device_id.to_owned(),
                ..DeviceConfig::default()
            });
        match side {
            Side::Configured => {
                record.configured = configuration.clone();
                record.updated_ts = Some(now());
            }
            Side::Reported => {
                record.reported = configuration.clone();
                record.reported_ts = Some(now());
            }
        }
        Ok(())
    }

    async fn set_deployment_id(
        &self,
        tenant: &str,
        device_id: &str,
        deployment_id: &str,
    ) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let record = records
            .get_mut(&key(tenant, device_id))
            .ok_or(DynamoError::ConditionFailed)?;
        record.deployment_id = Some(deployment_id.to_owned());
        Ok(())
    }

    async fn create(&self, tenant: &str, device_id: &str) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let key = key(tenant, device_id);
        if records.contains_key(&key) {
            return Err(DynamoError::ConditionFailed);
        }
        records.insert(
            key,
            DeviceConfig {
                id: device_id.to_owned(),
                updated_ts: Some(now()),
                ..DeviceConfig::default()
            },
        );
        Ok(())
    }

    async fn delete(&self, tenant: &str, device_id: &str) -> Result<(), DynamoError> {
        self.lock().remove(&key(tenant, device_id));
        Ok(())
    }
}
