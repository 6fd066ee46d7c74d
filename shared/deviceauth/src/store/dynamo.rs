//! The DynamoDB implementation of the deviceauth [`Store`]. Access patterns (every key starts
//! with the tenant):
//!
//! | item | pk | sk | used by |
//! |---|---|---|---|
//! | device with its auth sets | `T#{tenant}` | `DEV#{id}` | get; a list page's items (`BatchGetItem`) |
//! | status counters of shard `n` (0..16) | `T#{tenant}` | `CNT#{n}` | numbers `{status}`: counts, `max_devices` check (one `Query` of 16 small items) |
//! | identity guard | `T#{tenant}` | `IDH#{sha256}` | identity -> device id, unique per tenant |
//! | device token | `T#{tenant}#TOKEN#{jti}` | `TOKEN` | token check: one GetItem per device request |
//! | limit | `T#{tenant}` | `LIMIT#{name}` | `max_devices` |
//!
//! Index `by-status` (keys only): hash `ix_status` = `T#{tenant}#S#{status}` on device items,
//! range `sk`: a status's devices in id order; a list page at offset `o` reads `o + per_page`
//! keys (cost grows with the page number, not the fleet).
//!
//! A device and its auth sets are one item, so every status change is a single conditional
//! write on `version`; when the status changes, the device's counter shard moves in the same
//! transaction, so counts are exact. Tokens carry `expires_at` (the TTL attribute) and the last
//! check-in.

use std::collections::{BTreeMap, HashMap};

use super::{Store, TokenRecord};
use crate::model::{AuthStatus, Device};
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use mender_aws::dynamo::{
    built, classify, from_item, key, shard_of, text, to_item, DynamoError, Item, Table,
};

fn tenant_pk(tenant: &str) -> String {
    format!("T#{tenant}")
}
fn device_sk(id: &str) -> String {
    format!("DEV#{id}")
}
fn guard_sk(hash: &str) -> String {
    format!("IDH#{hash}")
}
fn token_pk(tenant: &str, jti: &str) -> String {
    format!("T#{tenant}#TOKEN#{jti}")
}
fn status_key(tenant: &str, status: impl std::fmt::Display) -> String {
    format!("T#{tenant}#S#{status}")
}
/// A device as read: remembers the status it is counted under.
fn loaded(mut device: Device) -> Device {
    device.stored_status = Some(device.status);
    device
}
fn token_key(tenant: &str, jti: &str) -> Item {
    key(token_pk(tenant, jti), "TOKEN")
}

/// The deviceauth table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    table: Table,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            table: Table::new(client, table),
        }
    }

    /// The device item with its index key.
    pub fn device_item(tenant: &str, device: &Device) -> Result<Item, DynamoError> {
        let mut item = to_item(tenant_pk(tenant), device_sk(&device.id), device)?;
        item.insert(
            "ix_status".into(),
            AttributeValue::S(status_key(tenant, device.status)),
        );
        Ok(item)
    }

    /// The counter update of one device moving from status `from` to `to` (`None`: created
    /// or deleted).
    fn counter_update(
        &self,
        tenant: &str,
        device_id: &str,
        from: Option<AuthStatus>,
        to: Option<AuthStatus>,
    ) -> Result<TransactWriteItem, DynamoError> {
        let changes: Vec<(String, i64)> = [(from, -1), (to, 1)]
            .into_iter()
            .filter_map(|(status, delta)| status.map(|s| (s.to_string(), delta)))
            .collect();
        self.table.add_to_counters(
            key(tenant_pk(tenant), format!("CNT#{}", shard_of(device_id))),
            &changes,
        )
    }

    async fn write_update(
        &self,
        tenant: &str,
        device: &Device,
        expected: i64,
    ) -> Result<(), DynamoError> {
        let mut item = Self::device_item(tenant, device)?;
        for name in ["pk", "sk", "check_in_time"] {
            item.remove(name);
        }
        let mut names = HashMap::from([("#version".to_owned(), "version".to_owned())]);
        let mut values = HashMap::from([(
            ":expected".to_owned(),
            AttributeValue::N(expected.to_string()),
        )]);
        let mut sets = Vec::new();
        for (i, (name, value)) in item.into_iter().enumerate() {
            sets.push(format!("#a{i} = :a{i}"));
            names.insert(format!("#a{i}"), name);
            values.insert(format!(":a{i}"), value);
        }
        let expression = format!("SET {}", sets.join(", "));
        let device_key = key(tenant_pk(tenant), device_sk(&device.id));
        let moved = device.stored_status != Some(device.status);
        if !moved {
            self.table
                .client
                .update_item()
                .table_name(&self.table.name)
                .set_key(Some(device_key))
                .condition_expression("#version = :expected")
                .update_expression(expression)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .send()
                .await
                .map_err(classify)?;
            return Ok(());
        }
        let update = built(
            Update::builder()
                .table_name(&self.table.name)
                .set_key(Some(device_key))
                .condition_expression("#version = :expected")
                .update_expression(expression)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build(),
        )?;
        let counter = self.counter_update(
            tenant,
            &device.id,
            device.stored_status,
            Some(device.status),
        )?;
        self.table
            .transact(vec![
                TransactWriteItem::builder().update(update).build(),
                counter,
            ])
            .await
    }
}

impl Store for DynamoStore {
    async fn get_device(&self, tenant: &str, id: &str) -> Result<Option<Device>, DynamoError> {
        let device: Option<Device> = self
            .table
            .get_as(key(tenant_pk(tenant), device_sk(id)))
            .await?;
        Ok(device.map(loaded))
    }

    /// The devices `ids` (strongly consistent); missing ones left out, any order.
    async fn get_devices(&self, tenant: &str, ids: &[String]) -> Result<Vec<Device>, DynamoError> {
        let keys = ids
            .iter()
            .map(|id| key(tenant_pk(tenant), device_sk(id)))
            .collect();
        self.table
            .batch_get(keys, None)
            .await?
            .into_iter()
            .map(|item| from_item(item).map(loaded))
            .collect()
    }

    /// The first `limit` device ids of `status`, in id order (keys only).
    async fn ids_by_status(
        &self,
        tenant: &str,
        status: &str,
        limit: usize,
    ) -> Result<Vec<String>, DynamoError> {
        let items = self
            .table
            .query_index(
                "by-status",
                "ix_status",
                &status_key(tenant, status),
                false,
                limit,
            )
            .await?;
        Ok(items
            .iter()
            .map(|item| text(item, "sk").trim_start_matches("DEV#").to_owned())
            .collect())
    }

    /// Devices per status, from the counters (one query of 16 small items).
    async fn status_counts(&self, tenant: &str) -> Result<BTreeMap<String, i64>, DynamoError> {
        let mut counts = BTreeMap::new();
        for item in self.table.query_prefix(&tenant_pk(tenant), "CNT#").await? {
            for (name, value) in item {
                if let AttributeValue::N(n) = value {
                    *counts.entry(name).or_default() += n.parse::<i64>().unwrap_or(0);
                }
            }
        }
        Ok(counts)
    }

    async fn device_id_by_identity(
        &self,
        tenant: &str,
        hash: &str,
    ) -> Result<Option<String>, DynamoError> {
        let item = self
            .table
            .get(key(tenant_pk(tenant), guard_sk(hash)))
            .await?;
        Ok(item.map(|i| text(&i, "device_id")))
    }

    /// Stores a new device and claims its identity; `ConditionFailed` = identity already known.
    async fn create_device(&self, tenant: &str, device: &Device) -> Result<(), DynamoError> {
        let mut guard = key(tenant_pk(tenant), guard_sk(&device.id_hash));
        guard.insert("device_id".into(), AttributeValue::S(device.id.clone()));
        let puts = [guard, Self::device_item(tenant, device)?].map(|item| {
            built(
                Put::builder()
                    .table_name(&self.table.name)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build(),
            )
        });
        let mut items = puts
            .into_iter()
            .map(|put| Ok(TransactWriteItem::builder().put(put?).build()))
            .collect::<Result<Vec<_>, DynamoError>>()?;
        items.push(self.counter_update(tenant, &device.id, None, Some(device.status))?);
        self.table.transact(items).await
    }

    /// Stores `device` if nobody changed it since it was read at `device.version`; the stored
    /// version becomes `version + 1`. The check-in time is left as stored. A status change
    /// moves the device's counter in the same transaction.
    async fn update_device(&self, tenant: &str, device: &mut Device) -> Result<(), DynamoError> {
        let expected = device.version;
        device.version += 1;
        let result = self.write_update(tenant, device, expected).await;
        match &result {
            Ok(()) => device.stored_status = Some(device.status),
            Err(_) => device.version = expected,
        }
        result
    }

    /// Removes the device and its identity guard, if the device is still at the version it
    /// was read at (`ConditionFailed` otherwise, also when it is gone), and uncounts it.
    async fn delete_device(&self, tenant: &str, device: &Device) -> Result<(), DynamoError> {
        let delete_device = built(
            Delete::builder()
                .table_name(&self.table.name)
                .set_key(Some(key(tenant_pk(tenant), device_sk(&device.id))))
                .condition_expression("#version = :v")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":v", AttributeValue::N(device.version.to_string()))
                .build(),
        )?;
        let delete_guard = built(
            Delete::builder()
                .table_name(&self.table.name)
                .set_key(Some(key(tenant_pk(tenant), guard_sk(&device.id_hash))))
                .build(),
        )?;
        let counted = device.stored_status.unwrap_or(device.status);
        self.table
            .transact(vec![
                TransactWriteItem::builder().delete(delete_device).build(),
                TransactWriteItem::builder().delete(delete_guard).build(),
                self.counter_update(tenant, &device.id, Some(counted), None)?,
            ])
            .await
    }

    async fn set_check_in_time(
        &self,
        tenant: &str,
        device_id: &str,
        ts: &str,
    ) -> Result<(), DynamoError> {
        let result = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(tenant_pk(tenant), device_sk(device_id))))
            .update_expression("SET check_in_time = :ts")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":ts", AttributeValue::S(ts.to_owned()))
            .send()
            .await;
        ignore_condition(result.map(|_| ()).map_err(classify))
    }

    /// Stores a token for `device`, only if the device is still at the version the caller saw
    /// (so a token is never issued after a concurrent reject or decommission).
    async fn put_token(
        &self,
        tenant: &str,
        token: &TokenRecord,
        device: &Device,
    ) -> Result<(), DynamoError> {
        let item = to_item(token_pk(tenant, &token.jti), "TOKEN", token)?;
        let put = built(
            Put::builder()
                .table_name(&self.table.name)
                .set_item(Some(item))
                .build(),
        )?;
        let check = built(
            ConditionCheck::builder()
                .table_name(&self.table.name)
                .set_key(Some(key(tenant_pk(tenant), device_sk(&device.id))))
                .condition_expression("#version = :v AND decommissioning = :false")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":v", AttributeValue::N(device.version.to_string()))
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .build(),
        )?;
        self.table
            .transact(vec![
                TransactWriteItem::builder().put(put).build(),
                TransactWriteItem::builder().condition_check(check).build(),
            ])
            .await?;
        Ok(())
    }

    async fn get_token(&self, tenant: &str, jti: &str) -> Result<Option<TokenRecord>, DynamoError> {
        self.table.get_as(token_key(tenant, jti)).await
    }

    async fn delete_token(&self, tenant: &str, jti: &str) -> Result<(), DynamoError> {
        self.table.delete(token_key(tenant, jti)).await
    }

    /// Records a check-in on the token unless another request did so after `threshold`.
    /// Returns whether this call recorded it.
    async fn touch_token(
        &self,
        tenant: &str,
        jti: &str,
        now: i64,
        threshold: i64,
    ) -> Result<bool, DynamoError> {
        let result = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(token_key(tenant, jti)))
            .update_expression("SET check_in = :now")
            .condition_expression("attribute_exists(pk) AND check_in < :threshold")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":threshold", AttributeValue::N(threshold.to_string()))
            .send()
            .await;
        match result.map_err(classify) {
            Ok(_) => Ok(true),
            Err(DynamoError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn get_limit(&self, tenant: &str, name: &str) -> Result<Option<i64>, DynamoError> {
        let item = self
            .table
            .get(key(tenant_pk(tenant), format!("LIMIT#{name}")))
            .await?;
        Ok(item.and_then(|i| match i.get("value") {
            Some(AttributeValue::N(n)) => n.parse().ok(),
            _ => None,
        }))
    }

    async fn put_limit(&self, tenant: &str, name: &str, value: i64) -> Result<(), DynamoError> {
        let mut item = key(tenant_pk(tenant), format!("LIMIT#{name}"));
        item.insert("value".into(), AttributeValue::N(value.to_string()));
        self.table.put(item).await?;
        Ok(())
    }

    async fn delete_limit(&self, tenant: &str, name: &str) -> Result<(), DynamoError> {
        self.table
            .delete(key(tenant_pk(tenant), format!("LIMIT#{name}")))
            .await
    }
}

fn ignore_condition(result: Result<(), DynamoError>) -> Result<(), DynamoError> {
    match result {
        Err(DynamoError::ConditionFailed) => Ok(()),
        other => other,
    }
}
