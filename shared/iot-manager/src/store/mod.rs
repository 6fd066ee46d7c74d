//! What the iot-manager service needs from storage, as one small trait ([`Store`]): the
//! tenant's integration (at most one), the devices and the cloud integrations they are linked
//! to, and the lifecycle events with their delivery statuses; plus the order events are kept
//! in ([`event_order`]). [`dynamo::DynamoStore`] is the DynamoDB table (its items and access
//! patterns are documented there); [`memory::MemoryStore`] keeps the same records in maps, for
//! unit tests of the service's rules.
//!
//! Both refuse the same writes with [`DynamoError::ConditionFailed`]: a second integration of a
//! tenant, new credentials for or removal of an integration that is not there, and claiming an
//! event that is finished or claimed within the lease.

pub mod dynamo;
pub mod memory;

use std::future::Future;

use mender_aws::dynamo::DynamoError;

use crate::model::{Credentials, DeliveryStatus, Event, Integration, WebhookEvent};

pub use dynamo::DynamoStore;
pub use memory::MemoryStore;

/// The iot-manager storage. Every future is `Send` (handlers run on a multi-threaded runtime).
pub trait Store: Send + Sync {
    /// The tenant's integrations (none or one).
    fn integrations(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<Integration>, DynamoError>> + Send;

    /// Stores the tenant's integration; `ConditionFailed` when the tenant has one.
    fn create_integration(
        &self,
        tenant: &str,
        integration: &Integration,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Replaces the credentials of integration `id`; `ConditionFailed` when it is not there.
    fn set_credentials(
        &self,
        tenant: &str,
        id: &str,
        credentials: &Credentials,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Removes integration `id` (its devices' links stay); `ConditionFailed` when it is not
    /// there.
    fn delete_integration(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Whether any device is linked to the integration.
    fn integration_in_use(
        &self,
        tenant: &str,
        integration: &str,
    ) -> impl Future<Output = Result<bool, DynamoError>> + Send;

    /// The device's integration ids, sorted; `None` when iot-manager does not know the device.
    fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> impl Future<Output = Result<Option<Vec<String>>, DynamoError>> + Send;

    /// Records the device (created when missing) with `integrations` added and linked.
    /// Idempotent.
    fn add_device(
        &self,
        tenant: &str,
        device: &str,
        integrations: &[String],
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Forgets the device and its links; returns whether it was known. Idempotent.
    fn delete_device(
        &self,
        tenant: &str,
        device: &str,
    ) -> impl Future<Output = Result<bool, DynamoError>> + Send;

    /// Stores the event before anything is delivered (`claimed_at = now`, no delivery
    /// statuses, expiring at `expire_at`); `ConditionFailed` when it is there and either
    /// finished or claimed at `now - lease_secs` or later (the message was handled before, or
    /// is being handled). A claim older than the lease without a finish is an attempt that died
    /// midway (the function timed out or crashed): it is taken over, so the event is delivered
    /// at least once.
    fn claim_event(
        &self,
        tenant: &str,
        event: &WebhookEvent,
        now: i64,
        lease_secs: i64,
        expire_at: i64,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Records how the event reached each integration and that it finished at `now`; the event
    /// is then handled for good.
    fn finish_event(
        &self,
        tenant: &str,
        event: &WebhookEvent,
        statuses: &[DeliveryStatus],
        now: i64,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Events newest first ([`event_order`] descending), expired ones left out: `limit` of
    /// them after skipping `skip`, only those with a delivery status for `integration` when
    /// given.
    fn events(
        &self,
        tenant: &str,
        skip: usize,
        limit: usize,
        integration: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Event>, DynamoError>> + Send;
}

/// `{time}#{event id}`, sorting by time: RFC 3339 texts do not sort when the fraction's width
/// varies, so the key holds the time (in UTC) at a fixed width. A time that does not parse is
/// kept as given.
pub fn event_order(event: &WebhookEvent) -> String {
    let time = chrono::DateTime::parse_from_rfc3339(&event.time)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S%.9fZ")
                .to_string()
        })
        .unwrap_or_else(|_| event.time.clone());
    format!("{time}#{}", event.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_order_is_time_order() {
        let event = |id: &str, time: &str| WebhookEvent {
            id: id.into(),
            kind: crate::model::EVENT_PROVISIONED.into(),
            data: serde_json::json!({"id": "d"}),
            time: time.into(),
        };
        let a = event_order(&event("a", "2026-01-01T00:00:01Z"));
        let b = event_order(&event("b", "2026-01-01T00:00:00.5Z"));
        let c = event_order(&event("c", "2026-01-01T02:00:00.25+02:00"));
        assert!(c < b && b < a, "{a} {b} {c}");
        assert_eq!(a, "2026-01-01T00:00:01.000000000Z#a");
    }
}
