//! An in-memory iot-manager [`Store`] for unit tests of the service's rules: the table's
//! records (integration, devices, links, events) in maps, written as the DynamoDB table writes
//! them and refused with the same `ConditionFailed` (one integration per tenant, credentials
//! and removal only of the integration that is there, an event claimed once unless its claim
//! went stale unfinished). Events are kept in [`event_order`] and read newest first, expired
//! ones left out, as the table's reads do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use mender_aws::dynamo::DynamoError;

use super::{event_order, Store};
use crate::model::{Credentials, DeliveryStatus, Event, Integration, WebhookEvent};

/// A stored event.
#[derive(Debug, Default)]
struct EventRecord {
    /// `None` when only finished, never claimed (the table's upsert makes such an item).
    event: Option<WebhookEvent>,
    statuses: Vec<DeliveryStatus>,
    claimed_at: Option<i64>,
    finished_at: Option<i64>,
    expire_at: Option<i64>,
}

#[derive(Debug, Default)]
struct Records {
    /// tenant -> its integration.
    integrations: BTreeMap<String, Integration>,
    /// (tenant, device) -> integration ids.
    devices: BTreeMap<(String, String), BTreeSet<String>>,
    /// (tenant, integration, device).
    links: BTreeSet<(String, String, String)>,
    /// (tenant, [`event_order`]) -> event.
    events: BTreeMap<(String, String), EventRecord>,
}

/// The records of every tenant.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<Records>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // A test that panicked while holding the lock leaves the records as they were.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

fn link(tenant: &str, integration: &str, device: &str) -> (String, String, String) {
    (tenant.to_owned(), integration.to_owned(), device.to_owned())
}

impl Store for MemoryStore {
    async fn integrations(&self, tenant: &str) -> Result<Vec<Integration>, DynamoError> {
        Ok(self
            .lock()
            .integrations
            .get(tenant)
            .cloned()
            .into_iter()
            .collect())
    }

    async fn create_integration(
        &self,
        tenant: &str,
        integration: &Integration,
    ) -> Result<(), DynamoError> {
        let mut records = self.lock();
        if records.integrations.contains_key(tenant) {
            return Err(DynamoError::ConditionFailed);
        }
        records
            .integrations
            .insert(tenant.to_owned(), integration.clone());
        Ok(())
    }

    async fn set_credentials(
        &self,
        tenant: &str,
        id: &str,
        credentials: &Credentials,
    ) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let integration = records
            .integrations
            .get_mut(tenant)
            .filter(|i| i.id == id)
            .ok_or(DynamoError::ConditionFailed)?;
        integration.credentials = credentials.clone();
        Ok(())
    }

    async fn delete_integration(&self, tenant: &str, id: &str) -> Result<(), DynamoError> {
        let mut records = self.lock();
        if records.integrations.get(tenant).is_none_or(|i| i.id != id) {
            return Err(DynamoError::ConditionFailed);
        }
        records.integrations.remove(tenant);
        Ok(())
    }

    async fn integration_in_use(
        &self,
        tenant: &str,
        integration: &str,
    ) -> Result<bool, DynamoError> {
        Ok(self
            .lock()
            .links
            .iter()
            .any(|(t, i, _)| t == tenant && i == integration))
    }

    async fn device(&self, tenant: &str, device: &str) -> Result<Option<Vec<String>>, DynamoError> {
        Ok(self
            .lock()
            .devices
            .get(&pair(tenant, device))
            .map(|ids| ids.iter().cloned().collect()))
    }

    async fn add_device(
        &self,
        tenant: &str,
        device: &str,
        integrations: &[String],
    ) -> Result<(), DynamoError> {
        let mut records = self.lock();
        records
            .devices
            .entry(pair(tenant, device))
            .or_default()
            .extend(integrations.iter().cloned());
        for integration in integrations {
            records.links.insert(link(tenant, integration, device));
        }
        Ok(())
    }

    async fn delete_device(&self, tenant: &str, device: &str) -> Result<bool, DynamoError> {
        let mut records = self.lock();
        let Some(integrations) = records.devices.remove(&pair(tenant, device)) else {
            return Ok(false);
        };
        for integration in &integrations {
            records.links.remove(&link(tenant, integration, device));
        }
        Ok(true)
    }

    async fn claim_event(
        &self,
        tenant: &str,
        event: &WebhookEvent,
        now: i64,
        lease_secs: i64,
        expire_at: i64,
    ) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let key = pair(tenant, &event_order(event));
        if let Some(stored) = records.events.get(&key) {
            let stale = stored.finished_at.is_none()
                && stored.claimed_at.is_some_and(|c| c < now - lease_secs);
            if !stale {
                return Err(DynamoError::ConditionFailed);
            }
        }
        records.events.insert(
            key,
            EventRecord {
                event: Some(event.clone()),
                statuses: Vec::new(),
                claimed_at: Some(now),
                finished_at: None,
                expire_at: Some(expire_at),
            },
        );
        Ok(())
    }

    async fn finish_event(
        &self,
        tenant: &str,
        event: &WebhookEvent,
        statuses: &[DeliveryStatus],
        now: i64,
    ) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let stored = records
            .events
            .entry(pair(tenant, &event_order(event)))
            .or_default();
        stored.statuses = statuses.to_vec();
        stored.finished_at = Some(now);
        Ok(())
    }

    async fn events(
        &self,
        tenant: &str,
        skip: usize,
        limit: usize,
        integration: Option<&str>,
    ) -> Result<Vec<Event>, DynamoError> {
        let now = chrono::Utc::now().timestamp();
        let records = self.lock();
        let mut found = Vec::new();
        for ((t, _), stored) in records.events.iter().rev() {
            if t != tenant || stored.expire_at.is_some_and(|e| e <= now) {
                continue;
            }
            let Some(event) = stored.event.clone() else {
                return Err(DynamoError::Other("iot-manager item: no event".into()));
            };
            if integration.is_some_and(|id| !stored.statuses.iter().any(|d| d.integration_id == id))
            {
                continue;
            }
            found.push(Event {
                event,
                delivery_statuses: stored.statuses.clone(),
            });
        }
        Ok(found.into_iter().skip(skip).take(limit).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The conditions the service only meets in a race (it reads the integration first).

    use super::*;

    fn integration(id: &str) -> Integration {
        Integration {
            id: id.into(),
            provider: crate::model::PROVIDER_WEBHOOK.into(),
            credentials: Credentials::default(),
            description: String::new(),
        }
    }

    #[tokio::test]
    async fn integration_writes_are_conditional_on_its_id() {
        let store = MemoryStore::new();
        store
            .create_integration("t", &integration("a"))
            .await
            .unwrap();
        let refused = |r: Result<(), DynamoError>| matches!(r, Err(DynamoError::ConditionFailed));
        assert!(refused(
            store.create_integration("t", &integration("b")).await
        ));
        assert!(refused(
            store
                .set_credentials("t", "b", &Credentials::default())
                .await
        ));
        assert!(refused(store.delete_integration("t", "b").await));
        assert!(refused(store.delete_integration("u", "a").await));
        assert_eq!(
            store.integrations("t").await.unwrap(),
            vec![integration("a")]
        );
        store.delete_integration("t", "a").await.unwrap();
        assert!(store.integrations("t").await.unwrap().is_empty());
    }
}
