//! What the deviceauth service needs from storage, as one small trait ([`Store`]), and the
//! token record both implementations keep. [`dynamo::DynamoStore`] is the DynamoDB table (its
//! access patterns are documented there); [`memory::MemoryStore`] keeps the same items in
//! maps, for unit tests of the service's rules.
//!
//! Writes of a device are conditional on the version it was read at: a write whose device
//! changed (or went) since is refused with [`DynamoError::ConditionFailed`], and the service
//! retries it ([`mender_aws::retry`]). A device's identity is unique per tenant; a device is
//! counted under its status, and the counts move with every stored status change.

pub mod dynamo;
pub mod memory;

use std::collections::BTreeMap;
use std::future::Future;

use mender_aws::dynamo::DynamoError;
use serde::{Deserialize, Serialize};

use crate::model::Device;

pub use dynamo::DynamoStore;
pub use memory::MemoryStore;

/// A device token as stored: one per accepted auth set (`jti` is the auth set's id).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub jti: String,
    pub device_id: String,
    pub expires_at: i64,
    /// Unix seconds of the last check-in recorded for this token.
    pub check_in: i64,
}

/// deviceauth's storage: devices with their auth sets by tenant and id, the identity guard
/// (identity hash -> device id), the status counters, device tokens and limits. Every future
/// is `Send` (handlers run on a multi-threaded runtime).
pub trait Store: Send + Sync {
    /// The device, `None` when there is none; its `stored_status` is the status it is
    /// counted under.
    fn get_device(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Device>, DynamoError>> + Send;

    /// The devices `ids` (strongly consistent); missing ones left out, any order.
    fn get_devices(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Device>, DynamoError>> + Send;

    /// The first `limit` device ids of `status`, in id order.
    fn ids_by_status(
        &self,
        tenant: &str,
        status: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, DynamoError>> + Send;

    /// Devices per status, from the counters.
    fn status_counts(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, i64>, DynamoError>> + Send;

    /// The id of the device whose identity hashes to `hash`.
    fn device_id_by_identity(
        &self,
        tenant: &str,
        hash: &str,
    ) -> impl Future<Output = Result<Option<String>, DynamoError>> + Send;

    /// Stores a new device, claims its identity and counts it, all or nothing;
    /// `ConditionFailed` = the identity (or the id) is already known.
    fn create_device(
        &self,
        tenant: &str,
        device: &Device,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Stores `device` if nobody changed it since it was read at `device.version`; the stored
    /// version becomes `version + 1` (and `device.version` with it; unchanged on failure).
    /// The check-in time is left as stored. A status change moves the device's count in the
    /// same write. `ConditionFailed`: it changed or is gone.
    fn update_device(
        &self,
        tenant: &str,
        device: &mut Device,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Removes the device and its identity guard, if the device is still at the version it
    /// was read at (`ConditionFailed` otherwise, also when it is gone), and uncounts it.
    fn delete_device(
        &self,
        tenant: &str,
        device: &Device,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Records the device's check-in time; nothing when the device is gone.
    fn set_check_in_time(
        &self,
        tenant: &str,
        device_id: &str,
        ts: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Stores a token for `device`, only if the device is still at the version the caller saw
    /// and is not being decommissioned (`ConditionFailed` otherwise).
    fn put_token(
        &self,
        tenant: &str,
        token: &TokenRecord,
        device: &Device,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    fn get_token(
        &self,
        tenant: &str,
        jti: &str,
    ) -> impl Future<Output = Result<Option<TokenRecord>, DynamoError>> + Send;

    /// Deletes the token; nothing when there is none.
    fn delete_token(
        &self,
        tenant: &str,
        jti: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Records a check-in (`now`) on the token unless another request did so after
    /// `threshold` (or the token is gone). Returns whether this call recorded it.
    fn touch_token(
        &self,
        tenant: &str,
        jti: &str,
        now: i64,
        threshold: i64,
    ) -> impl Future<Output = Result<bool, DynamoError>> + Send;

    /// The limit `name`, `None` when none is set.
    fn get_limit(
        &self,
        tenant: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<i64>, DynamoError>> + Send;

    fn put_limit(
        &self,
        tenant: &str,
        name: &str,
        value: i64,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    fn delete_limit(
        &self,
        tenant: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;
}
