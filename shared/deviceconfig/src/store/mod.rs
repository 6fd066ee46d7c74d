//! What the deviceconfig service needs from storage, as one small trait ([`Store`]): one record
//! per device ([`DeviceConfig`]), read whole, its two maps written one at a time ([`Side`]).
//! [`dynamo::DynamoStore`] is the DynamoDB table (its access patterns are documented there);
//! [`memory::MemoryStore`] keeps the records in a map, for unit tests of the service's rules.
//!
//! Both refuse the same writes with [`DynamoError::ConditionFailed`]: recording a deployment
//! of a device without a record, and creating a record that exists.

pub mod dynamo;
pub mod memory;

use std::future::Future;

use mender_aws::dynamo::DynamoError;
use serde::Serialize;

use crate::Configuration;

pub use dynamo::DynamoStore;
pub use memory::MemoryStore;

/// A device's record, in the management API's JSON shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeviceConfig {
    pub id: String,
    pub configured: Configuration,
    pub reported: Configuration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// `null` when only the device ever reported (as upstream).
    pub updated_ts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_ts: Option<String>,
}

/// Which of a record's two maps a write replaces, with the timestamp it sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `configured` (management), timestamp `updated_ts`.
    Configured,
    /// `reported` (the device), timestamp `reported_ts`.
    Reported,
}

/// The deviceconfig storage: a record per (tenant, device). Every future is `Send` (handlers
/// run on a multi-threaded runtime).
pub trait Store: Send + Sync {
    /// The device's record, `None` when there is none.
    fn get(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> impl Future<Output = Result<Option<DeviceConfig>, DynamoError>> + Send;

    /// Replaces one map and sets its timestamp to now; creates the record when missing (the
    /// other map then reads empty, its timestamp absent).
    fn set_map(
        &self,
        tenant: &str,
        device_id: &str,
        side: Side,
        configuration: &Configuration,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Sets the last configuration deployment; `ConditionFailed` when the record is gone.
    fn set_deployment_id(
        &self,
        tenant: &str,
        device_id: &str,
        deployment_id: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// A new record with empty maps and `updated_ts` now; `ConditionFailed` when the device has
    /// one.
    fn create(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Deletes the record; nothing when there is none.
    fn delete(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;
}
