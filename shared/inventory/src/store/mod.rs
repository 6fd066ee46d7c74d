//! What the inventory service needs from storage, as one small trait ([`Store`]), and the
//! plain rules both implementations share: where a device counts ([`Placement`]), the list
//! partitions ([`Partition`]) and their order ([`order_key`]). [`dynamo::DynamoStore`] is the
//! DynamoDB table (its access patterns are documented there); [`memory::MemoryStore`] keeps
//! devices in a map, for unit tests of the service's rules.
//!
//! Writes are conditional on the version the device was read at: a write whose device changed
//! (or appeared, or went) since is refused with [`DynamoError::ConditionFailed`], and the
//! service retries it ([`mender_aws::retry`]).

pub mod dynamo;
pub mod memory;

use std::collections::BTreeMap;
use std::future::Future;

use mender_aws::dynamo::DynamoError;
use serde_json::Value;

use crate::model::{InventoryDevice, IDENTITY, SYSTEM};

pub use dynamo::DynamoStore;
pub use memory::MemoryStore;
pub use mender_aws::dynamo::{shard_of, SHARDS};

/// Status of a device whose `identity/status` is not known yet.
pub const NO_STATUS: &str = "none";
/// Every status partition, in the order lists concatenate them.
pub const ALL_STATUSES: [&str; 6] = [
    "accepted",
    "noauth",
    "pending",
    "preauthorized",
    "rejected",
    NO_STATUS,
];

/// Counter totals by status and tier, summed over the shards.
pub type StatusCounts = BTreeMap<String, BTreeMap<String, i64>>;
/// group -> status -> devices.
pub type GroupCounts = BTreeMap<String, BTreeMap<String, i64>>;

/// The inventory's storage: devices by tenant and id, their counts by status, tier and group,
/// and the list partitions. Every future is `Send` (handlers run on a multi-threaded runtime).
pub trait Store: Send + Sync {
    /// The device, `None` when there is none.
    fn get(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<InventoryDevice>, DynamoError>> + Send;

    /// Stores `device` if it is still as `before` was read (`None`: it did not exist), and sets
    /// its `version` to the stored one. `ConditionFailed`: it changed meanwhile.
    fn put(
        &self,
        tenant: &str,
        device: &mut InventoryDevice,
        before: Option<&InventoryDevice>,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Deletes `device` if it is still at the version it was read at. `ConditionFailed`: it
    /// changed or is gone.
    fn delete(
        &self,
        tenant: &str,
        device: &InventoryDevice,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Devices by status and tier.
    fn status_counts(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<StatusCounts, DynamoError>> + Send;

    /// Devices per group and status.
    fn group_counts(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<GroupCounts, DynamoError>> + Send;

    /// One group's devices per status.
    fn group_count(
        &self,
        tenant: &str,
        group: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, i64>, DynamoError>> + Send;

    /// The first `limit` ([`order_key`], device id) of a list partition, oldest first (or
    /// newest first with `descending`).
    fn partition_keys(
        &self,
        tenant: &str,
        partition: &Partition,
        descending: bool,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, String)>, DynamoError>> + Send;

    /// The devices `ids`, in the order of `ids`; missing ones left out. With `paths`, only
    /// those (scope, name) attributes (and `system/created_ts`) are read.
    fn get_many(
        &self,
        tenant: &str,
        ids: &[String],
        paths: Option<&[(String, String)]>,
    ) -> impl Future<Output = Result<Vec<InventoryDevice>, DynamoError>> + Send;

    /// Calls `visit` with every device of shard `shard` (`0..SHARDS`, [`shard_of`]) of the
    /// tenant, in id order, the first `limit` only when given. With `paths`, only those
    /// attributes (and `system/created_ts`) are read.
    fn scan_shard(
        &self,
        tenant: &str,
        shard: u32,
        paths: Option<&[(String, String)]>,
        limit: Option<usize>,
        visit: &mut (dyn FnMut(InventoryDevice) + Send),
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;
}

/// Reads every device of the tenant, the [`SHARDS`] shards in parallel, folding each shard's
/// devices into its own accumulator (`init()`), and returns the accumulators. With `paths`,
/// only those attributes are read; `limit_per_shard` stops each shard early.
pub async fn scan<S, A, I, F>(
    store: &S,
    tenant: &str,
    paths: Option<&[(String, String)]>,
    limit_per_shard: Option<usize>,
    init: I,
    fold: F,
) -> Result<Vec<A>, DynamoError>
where
    S: Store,
    A: Send,
    I: Fn() -> A,
    F: Fn(&mut A, InventoryDevice) + Clone + Send,
{
    let shards = (0..SHARDS).map(|shard| {
        let mut acc = init();
        let fold = fold.clone();
        async move {
            {
                let acc = &mut acc;
                let mut visit = move |device| fold(acc, device);
                store
                    .scan_shard(tenant, shard, paths, limit_per_shard, &mut visit)
                    .await?;
            }
            Ok::<A, DynamoError>(acc)
        }
    });
    futures::future::try_join_all(shards).await
}

/// Where a device counts: what the counters and the list partitions key it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub status: String,
    pub tier: String,
    pub group: Option<String>,
}

impl Placement {
    pub fn of(device: &InventoryDevice) -> Placement {
        let text = |scope: &str, name: &str| device.get(scope, name).and_then(Value::as_str);
        Placement {
            status: text(IDENTITY, "status").unwrap_or(NO_STATUS).to_owned(),
            tier: text(SYSTEM, "tier").unwrap_or("standard").to_owned(),
            group: text(SYSTEM, "group").map(str::to_owned),
        }
    }
}

/// A list partition: the devices of a status, or of a group and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    Status(String),
    /// (group, status); group `""` is the ungrouped devices.
    Group(String, String),
}

impl Partition {
    /// Whether a device placed at `place` is in this partition.
    pub fn holds(&self, place: &Placement) -> bool {
        match self {
            Partition::Status(s) => place.status == *s,
            Partition::Group(g, s) => {
                place.status == *s && place.group.as_deref().unwrap_or("") == g
            }
        }
    }
}

/// `created_ts` in a fixed-width form (milliseconds always written) so that index order is
/// time order: `…:05Z` and `…:05.5Z` become `…:05.000Z` and `…:05.500Z`.
pub fn order_key(device: &InventoryDevice) -> String {
    let created = device
        .get(SYSTEM, "created_ts")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut key = String::with_capacity(created.len() + device.id.len() + 6);
    match created.strip_suffix('Z') {
        Some(time) if time.len() >= 19 && time.is_ascii() => {
            let (seconds, fraction) = time.split_at(19);
            let digits = fraction.strip_prefix('.').unwrap_or("");
            key.push_str(seconds);
            key.push('.');
            for i in 0..3 {
                key.push(digits.as_bytes().get(i).map_or('0', |b| char::from(*b)));
            }
            key.push('Z');
        }
        _ => key.push_str(created),
    }
    key.push('#');
    key.push_str(&device.id);
    key
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_key_is_fixed_width_time() {
        let mut a = InventoryDevice::new("a");
        a.set(SYSTEM, "created_ts", json!("2026-01-01T00:00:01Z"));
        let mut b = InventoryDevice::new("b");
        b.set(SYSTEM, "created_ts", json!("2026-01-01T00:00:00.5Z"));
        assert!(order_key(&b) < order_key(&a));
        assert_eq!(order_key(&a), "2026-01-01T00:00:01.000Z#a");
    }

    #[test]
    fn partitions_hold_their_placements() {
        let mut d = InventoryDevice::new("d");
        d.set(IDENTITY, "status", json!("accepted"));
        let ungrouped = Placement::of(&d);
        d.set(SYSTEM, "group", json!("g"));
        let grouped = Placement::of(&d);
        let status = Partition::Status("accepted".into());
        assert!(status.holds(&ungrouped) && status.holds(&grouped));
        assert!(!Partition::Status("pending".into()).holds(&grouped));
        let group = Partition::Group("g".into(), "accepted".into());
        assert!(group.holds(&grouped) && !group.holds(&ungrouped));
        let none = Partition::Group(String::new(), "accepted".into());
        assert!(none.holds(&ungrouped) && !none.holds(&grouped));
    }
}
