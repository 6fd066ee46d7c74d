//! The DynamoDB implementation of the inventory [`Store`]: devices, the counters that answer totals and statistics, and the three
//! indexes the device lists read. Access patterns (every key starts with the tenant):
//!
//! | item | pk | sk | used by |
//! |---|---|---|---|
//! | device with all its attributes | `T#{tenant}` | `DEV#{id}` | get, writes (conditional on `version`), the page's items of every list (`BatchGetItem`) |
//! | status counters of shard `n` (0..16) | `T#{tenant}` | `CNT#{n}` | numbers `{status}#{tier}`: statistics, totals of status lists (one `Query`, 16 small items) |
//! | group counter | `T#{tenant}` | `GRP#{group}` | numbers `{status}`: `GET /groups`, totals of group lists |
//!
//! Index keys written on every device item (`ix_*`):
//!
//! | index | hash key | range key | projection | answers |
//! |---|---|---|---|---|
//! | `by-status` | `ix_status` = `T#{tenant}#S#{status}` | `ix_order` = `{created_ts}#{id}` | keys | a status's devices in creation order (GUI's default lists) |
//! | `by-group` | `ix_group` = `T#{tenant}#G#{group}#S#{status}` (group empty: ungrouped) | `ix_order` | keys | a group's (or the ungrouped) devices of a status |
//! | `search` | `ix_shard` = `T#{tenant}#P#{n}` | `sk` | `id`, `attributes` | any other filter, sort or text search: 16 shards read in parallel |
//!
//! Counters change in the same transaction as the device write that moves a device between
//! (status, tier, group), conditional on the device's `version`, so they are exact: a write that
//! loses a race changes no counter. Devices without `identity/status` count as status `none`.
//! Limits: a page at offset `o` reads `o + per_page` index keys per partition it merges (the
//! cost grows with the page number, not with the fleet); the `search` index is read whole by
//! filters the indexes cannot answer (cost grows with the fleet, memory does not).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnConsumedCapacity, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use mender_aws::dynamo::{built, classify, from_item, key, meter, to_item, DynamoError, Table};

use super::{order_key, shard_of, GroupCounts, Partition, Placement, StatusCounts, Store};
use crate::model::{InventoryDevice, SYSTEM};

pub const BY_STATUS: &str = "by-status";
pub const BY_GROUP: &str = "by-group";
pub const SEARCH: &str = "search";

fn tenant_pk(tenant: &str) -> String {
    format!("T#{tenant}")
}
fn device_sk(id: &str) -> String {
    format!("DEV#{id}")
}

/// The index, its hash key attribute and that key's value for a list partition.
fn index_and_key(partition: &Partition, tenant: &str) -> (&'static str, &'static str, String) {
    match partition {
        Partition::Status(s) => (BY_STATUS, "ix_status", format!("T#{tenant}#S#{s}")),
        Partition::Group(g, s) => (BY_GROUP, "ix_group", format!("T#{tenant}#G#{g}#S#{s}")),
    }
}

/// The inventory table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    table: Table,
}

fn number(n: i64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            table: Table::new(client, table),
        }
    }

    pub fn device_item(
        tenant: &str,
        device: &InventoryDevice,
    ) -> Result<HashMap<String, AttributeValue>, DynamoError> {
        let mut item = to_item(tenant_pk(tenant), device_sk(&device.id), device)?;
        let place = Placement::of(device);
        let text = |s: String| AttributeValue::S(s);
        item.insert(
            "ix_status".into(),
            text(format!("T#{tenant}#S#{}", place.status)),
        );
        item.insert(
            "ix_group".into(),
            text(format!(
                "T#{tenant}#G#{}#S#{}",
                place.group.as_deref().unwrap_or(""),
                place.status
            )),
        );
        item.insert("ix_order".into(), text(order_key(device)));
        item.insert(
            "ix_shard".into(),
            text(format!("T#{tenant}#P#{}", shard_of(&device.id))),
        );
        Ok(item)
    }

    /// The counter changes of moving one device from `before` to `after` (either may be
    /// absent: created, deleted): (sort key, attribute, delta).
    fn counter_deltas(
        id: &str,
        before: Option<&Placement>,
        after: Option<&Placement>,
    ) -> Vec<(String, String, i64)> {
        let mut deltas: Vec<(String, String, i64)> = Vec::new();
        let mut add = |sk: String, attr: String, delta: i64| match deltas
            .iter_mut()
            .find(|(s, a, _)| *s == sk && *a == attr)
        {
            Some(entry) => entry.2 += delta,
            None => deltas.push((sk, attr, delta)),
        };
        let shard = format!("CNT#{}", shard_of(id));
        for (place, delta) in [(before, -1), (after, 1)] {
            let Some(place) = place else { continue };
            add(
                shard.clone(),
                format!("{}#{}", place.status, place.tier),
                delta,
            );
            if let Some(group) = &place.group {
                add(format!("GRP#{group}"), place.status.clone(), delta);
            }
        }
        deltas.retain(|(_, _, d)| *d != 0);
        deltas
    }

    /// Counter updates for a transaction: one `Update` per counter item.
    fn counter_updates(
        &self,
        tenant: &str,
        deltas: Vec<(String, String, i64)>,
    ) -> Result<Vec<TransactWriteItem>, DynamoError> {
        let mut by_item: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for (sk, attr, delta) in deltas {
            by_item.entry(sk).or_default().push((attr, delta));
        }
        by_item
            .into_iter()
            .map(|(sk, changes)| {
                self.table
                    .add_to_counters(key(tenant_pk(tenant), sk), &changes)
            })
            .collect()
    }

    /// Stores `device` if it is still as `before` was read (`None`: it did not exist); the
    /// counters move with it in the same transaction when its placement changed.
    pub async fn count_new_devices(
        &self,
        tenant: &str,
        devices: &[InventoryDevice],
    ) -> Result<(), DynamoError> {
        let mut deltas: Vec<(String, String, i64)> = Vec::new();
        for device in devices {
            for delta in Self::counter_deltas(&device.id, None, Some(&Placement::of(device))) {
                match deltas.iter_mut().find(|d| d.0 == delta.0 && d.1 == delta.1) {
                    Some(d) => d.2 += delta.2,
                    None => deltas.push(delta),
                }
            }
        }
        let updates = self.counter_updates(tenant, deltas)?;
        for chunk in updates.chunks(100) {
            self.table.transact(chunk.to_vec()).await?;
        }
        Ok(())
    }
}

impl Store for DynamoStore {
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<InventoryDevice>, DynamoError> {
        self.table
            .get_as(key(tenant_pk(tenant), device_sk(id)))
            .await
    }

    /// The device item with its index keys.
    async fn put(
        &self,
        tenant: &str,
        device: &mut InventoryDevice,
        before: Option<&InventoryDevice>,
    ) -> Result<(), DynamoError> {
        let read_version = before.map(|b| b.version);
        device.version = read_version.map_or(1, |v| v + 1);
        let item = DynamoStore::device_item(tenant, device)?;
        let deltas = DynamoStore::counter_deltas(
            &device.id,
            before.map(Placement::of).as_ref(),
            Some(&Placement::of(device)),
        );
        let condition = match read_version {
            None => "attribute_not_exists(pk)",
            Some(_) => "#version = :v",
        };
        let names =
            read_version.map(|_| HashMap::from([("#version".to_owned(), "version".to_owned())]));
        let values = read_version.map(|v| HashMap::from([(":v".to_owned(), number(v))]));
        if deltas.is_empty() {
            // One item: a plain conditional put (half the write units of a transaction).
            self.table
                .client
                .put_item()
                .table_name(&self.table.name)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await
                .map_err(classify)?;
            return Ok(());
        }
        let put = Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build();
        let mut items = vec![TransactWriteItem::builder().put(built(put)?).build()];
        items.extend(self.counter_updates(tenant, deltas)?);
        self.table.transact(items).await
    }

    /// Deletes `device` if it is still at the version it was read at, and uncounts it.
    /// `ConditionFailed`: it changed or is gone.
    async fn delete(&self, tenant: &str, device: &InventoryDevice) -> Result<(), DynamoError> {
        let delete = built(
            Delete::builder()
                .table_name(&self.table.name)
                .set_key(Some(key(tenant_pk(tenant), device_sk(&device.id))))
                .condition_expression("#version = :v")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":v", number(device.version))
                .build(),
        )?;
        let mut items = vec![TransactWriteItem::builder().delete(delete).build()];
        let deltas = DynamoStore::counter_deltas(&device.id, Some(&Placement::of(device)), None);
        items.extend(self.counter_updates(tenant, deltas)?);
        self.table.transact(items).await
    }

    /// Bulk loading (benchmarks, imports of devices written straight to the table): adds the
    /// counts of `devices`, which must be new, to the counters.
    /// Counters by status and tier (one query of 16 small items).
    async fn status_counts(&self, tenant: &str) -> Result<StatusCounts, DynamoError> {
        let mut counts = StatusCounts::new();
        for item in self.table.query_prefix(&tenant_pk(tenant), "CNT#").await? {
            for (name, value) in item {
                let (Some((status, tier)), AttributeValue::N(n)) = (name.split_once('#'), value)
                else {
                    continue;
                };
                let n: i64 = n.parse().unwrap_or(0);
                *counts
                    .entry(status.to_owned())
                    .or_default()
                    .entry(tier.to_owned())
                    .or_default() += n;
            }
        }
        Ok(counts)
    }

    /// Devices per group and status (one small item per group).
    async fn group_counts(&self, tenant: &str) -> Result<GroupCounts, DynamoError> {
        let mut counts = GroupCounts::new();
        for item in self.table.query_prefix(&tenant_pk(tenant), "GRP#").await? {
            let group = mender_aws::dynamo::text(&item, "sk")
                .trim_start_matches("GRP#")
                .to_owned();
            let by_status = counts.entry(group).or_default();
            for (name, value) in item {
                if let AttributeValue::N(n) = value {
                    by_status.insert(name, n.parse().unwrap_or(0));
                }
            }
        }
        Ok(counts)
    }

    /// One group's devices per status.
    async fn group_count(
        &self,
        tenant: &str,
        group: &str,
    ) -> Result<BTreeMap<String, i64>, DynamoError> {
        let item = self
            .table
            .get(key(tenant_pk(tenant), format!("GRP#{group}")))
            .await?;
        Ok(item
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, value)| match value {
                AttributeValue::N(n) => Some((name, n.parse().unwrap_or(0))),
                _ => None,
            })
            .collect())
    }

    /// The first `limit` (order key, device id) of a list partition, oldest first (or newest
    /// first with `descending`); reads keys only.
    async fn partition_keys(
        &self,
        tenant: &str,
        partition: &Partition,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(String, String)>, DynamoError> {
        let (index, attr, value) = index_and_key(partition, tenant);
        let items = self
            .table
            .query_index(index, attr, &value, descending, limit)
            .await?;
        Ok(items
            .iter()
            .map(|item| {
                let order = mender_aws::dynamo::text(item, "ix_order");
                let sk = mender_aws::dynamo::text(item, "sk");
                (order, sk.trim_start_matches("DEV#").to_owned())
            })
            .collect())
    }

    /// The devices `ids` (strongly consistent), in the order of `ids`; missing ones left out.
    /// With `paths`, only those (scope, name) attributes are read.
    async fn get_many(
        &self,
        tenant: &str,
        ids: &[String],
        paths: Option<&[(String, String)]>,
    ) -> Result<Vec<InventoryDevice>, DynamoError> {
        let keys = ids
            .iter()
            .map(|id| key(tenant_pk(tenant), device_sk(id)))
            .collect();
        let projection = paths.map(projection);
        let items = self
            .table
            .batch_get(keys, projection.as_ref().map(|(e, n)| (e.as_str(), n)))
            .await?;
        let mut by_id: HashMap<String, InventoryDevice> = HashMap::new();
        for item in items {
            let device: InventoryDevice = from_item(item)?;
            by_id.insert(device.id.clone(), device);
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// Reads shard `shard` of the tenant from the `search` index, in id order, calling `visit`
    /// for each device. With `paths`, only those attributes are read; `limit` stops early.
    async fn scan_shard(
        &self,
        tenant: &str,
        shard: u32,
        paths: Option<&[(String, String)]>,
        limit: Option<usize>,
        visit: &mut (dyn FnMut(InventoryDevice) + Send),
    ) -> Result<(), DynamoError> {
        let projection = paths.map(projection);
        let mut start = None;
        let mut seen = 0usize;
        loop {
            let mut query = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .index_name(SEARCH)
                .key_condition_expression("ix_shard = :p")
                .expression_attribute_values(
                    ":p",
                    AttributeValue::S(format!("T#{tenant}#P#{shard}")),
                )
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            if let Some(limit) = limit {
                query = query.limit(i32::try_from(limit - seen).unwrap_or(i32::MAX));
            }
            if let Some((expression, names)) = &projection {
                query = query
                    .projection_expression(expression)
                    .set_expression_attribute_names(Some(names.clone()));
            }
            let out = query.send().await.map_err(classify)?;
            meter(out.consumed_capacity());
            for item in out.items.unwrap_or_default() {
                seen += 1;
                visit(from_item(item)?);
            }
            start = out.last_evaluated_key;
            let full = limit.is_some_and(|l| seen >= l);
            if start.is_none() || full {
                return Ok(());
            }
        }
    }
}

/// `ProjectionExpression` for `id`, `version` and the given attributes (and `created_ts`).
fn projection(paths: &[(String, String)]) -> (String, HashMap<String, String>) {
    let mut names = HashMap::from([
        ("#id".to_owned(), "id".to_owned()),
        ("#at".to_owned(), "attributes".to_owned()),
    ]);
    let mut parts = vec!["#id".to_owned()];
    let created = (SYSTEM.to_owned(), "created_ts".to_owned());
    let mut scope_names: HashMap<String, String> = HashMap::new();
    let mut all: Vec<&(String, String)> = Vec::new();
    for path in paths.iter().chain([&created]) {
        if !all.contains(&path) {
            all.push(path);
        }
    }
    for (i, (scope, name)) in all.into_iter().enumerate() {
        let next = scope_names.len();
        let scope_ref = scope_names
            .entry(scope.clone())
            .or_insert_with(|| format!("#s{next}"))
            .clone();
        names.insert(scope_ref.clone(), scope.clone());
        names.insert(format!("#n{i}"), name.clone());
        parts.push(format!("#at.{scope_ref}.#n{i}"));
    }
    (parts.join(", "), names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::IDENTITY;
    use crate::store::{NO_STATUS, SHARDS};
    use serde_json::json;

    fn device(status: Option<&str>, group: Option<&str>) -> InventoryDevice {
        let mut d = InventoryDevice::new("d1");
        if let Some(s) = status {
            d.set(IDENTITY, "status", json!(s));
        }
        if let Some(g) = group {
            d.set(SYSTEM, "group", json!(g));
        }
        d
    }

    #[test]
    fn deltas_move_counters_between_placements() {
        let a = Placement::of(&device(Some("pending"), None));
        let b = Placement::of(&device(Some("accepted"), Some("g")));
        let shard = format!("CNT#{}", shard_of("d1"));
        assert_eq!(
            DynamoStore::counter_deltas("d1", Some(&a), Some(&b)),
            vec![
                (shard.clone(), "pending#standard".into(), -1),
                (shard.clone(), "accepted#standard".into(), 1),
                ("GRP#g".into(), "accepted".into(), 1),
            ]
        );
        assert!(DynamoStore::counter_deltas("d1", Some(&b), Some(&b)).is_empty());
        assert_eq!(
            DynamoStore::counter_deltas("d1", Some(&b), None),
            vec![
                (shard, "accepted#standard".into(), -1),
                ("GRP#g".into(), "accepted".into(), -1),
            ]
        );
        let none = Placement::of(&device(None, None));
        assert_eq!(none.status, NO_STATUS);
    }

    #[test]
    fn shards_spread() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            seen.insert(shard_of(&format!("device-{i}")));
        }
        assert_eq!(seen.len(), SHARDS as usize);
    }
}
