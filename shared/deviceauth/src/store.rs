//! The deviceauth table. Access patterns (every key starts with the tenant):
//!
//! | item | pk | sk | used by |
//! |---|---|---|---|
//! | device with its auth sets | `T#{tenant}` | `DEV#{id}` | get; list/count/search (query `DEV#` prefix, sorted in the function) |
//! | identity guard | `T#{tenant}` | `IDH#{sha256}` | identity -> device id, unique per tenant |
//! | device token | `T#{tenant}#TOKEN#{jti}` | `TOKEN` | token check: one GetItem per device request |
//! | limit | `T#{tenant}` | `LIMIT#{name}` | `max_devices` |
//!
//! A device and its auth sets are one item, so every status change is a single conditional
//! write on `version`. Tokens carry `expires_at` (the TTL attribute) and the last check-in.

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use mender_aws::dynamo::{built, classify, key, text, to_item, DynamoError, Item, Table};
use serde::{Deserialize, Serialize};

use crate::model::Device;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub jti: String,
    pub device_id: String,
    pub expires_at: i64,
    /// Unix seconds of the last check-in recorded for this token.
    pub check_in: i64,
}

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
fn token_key(tenant: &str, jti: &str) -> Item {
    key(token_pk(tenant, jti), "TOKEN")
}

#[derive(Clone, Debug)]
pub struct Store {
    table: Table,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Store {
            table: Table::new(client, table),
        }
    }

    fn device_item(&self, tenant: &str, device: &Device) -> Result<Item, DynamoError> {
        to_item(tenant_pk(tenant), device_sk(&device.id), device)
    }

    pub async fn get_device(&self, tenant: &str, id: &str) -> Result<Option<Device>, DynamoError> {
        self.table
            .get_as(key(tenant_pk(tenant), device_sk(id)))
            .await
    }

    pub async fn device_id_by_identity(
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

    pub async fn list_devices(&self, tenant: &str) -> Result<Vec<Device>, DynamoError> {
        self.table.query_prefix_as(&tenant_pk(tenant), "DEV#").await
    }

    /// Stores a new device and claims its identity; `ConditionFailed` = identity already known.
    pub async fn create_device(&self, tenant: &str, device: &Device) -> Result<(), DynamoError> {
        let mut guard = key(tenant_pk(tenant), guard_sk(&device.id_hash));
        guard.insert("device_id".into(), AttributeValue::S(device.id.clone()));
        let puts = [guard, self.device_item(tenant, device)?].map(|item| {
            built(
                Put::builder()
                    .table_name(&self.table.name)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build(),
            )
        });
        let items = puts
            .into_iter()
            .map(|put| Ok(TransactWriteItem::builder().put(put?).build()))
            .collect::<Result<Vec<_>, DynamoError>>()?;
        self.table.transact(items).await
    }

    /// Stores `device` if nobody changed it since it was read at `device.version`; the stored
    /// version becomes `version + 1`. The check-in time is left as stored.
    pub async fn update_device(
        &self,
        tenant: &str,
        device: &mut Device,
    ) -> Result<(), DynamoError> {
        let expected = device.version;
        device.version += 1;
        let mut item = self.device_item(tenant, device)?;
        for name in ["pk", "sk", "check_in_time"] {
            item.remove(name);
        }
        let mut update = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(tenant_pk(tenant), device_sk(&device.id))))
            .condition_expression("#version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()));
        let mut sets = Vec::new();
        for (i, (name, value)) in item.into_iter().enumerate() {
            sets.push(format!("#a{i} = :a{i}"));
            update = update
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":a{i}"), value);
        }
        let result = update
            .expression_attribute_names("#version", "version")
            .update_expression(format!("SET {}", sets.join(", ")))
            .send()
            .await
            .map_err(classify);
        if result.is_err() {
            device.version = expected;
        }
        result.map(|_| ())
    }

    /// Removes the device and its identity guard.
    pub async fn delete_device(&self, tenant: &str, device: &Device) -> Result<(), DynamoError> {
        let deletes = [
            key(tenant_pk(tenant), device_sk(&device.id)),
            key(tenant_pk(tenant), guard_sk(&device.id_hash)),
        ]
        .map(|k| {
            built(
                Delete::builder()
                    .table_name(&self.table.name)
                    .set_key(Some(k))
                    .build(),
            )
        });
        let items = deletes
            .into_iter()
            .map(|delete| Ok(TransactWriteItem::builder().delete(delete?).build()))
            .collect::<Result<Vec<_>, DynamoError>>()?;
        self.table.transact(items).await
    }

    pub async fn set_check_in_time(
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
    pub async fn put_token(
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

    pub async fn get_token(
        &self,
        tenant: &str,
        jti: &str,
    ) -> Result<Option<TokenRecord>, DynamoError> {
        self.table.get_as(token_key(tenant, jti)).await
    }

    pub async fn delete_token(&self, tenant: &str, jti: &str) -> Result<(), DynamoError> {
        self.table.delete(token_key(tenant, jti)).await
    }

    /// Records a check-in on the token unless another request did so after `threshold`.
    /// Returns whether this call recorded it.
    pub async fn touch_token(
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

    pub async fn get_limit(&self, tenant: &str, name: &str) -> Result<Option<i64>, DynamoError> {
        let item = self
            .table
            .get(key(tenant_pk(tenant), format!("LIMIT#{name}")))
            .await?;
        Ok(item.and_then(|i| match i.get("value") {
            Some(AttributeValue::N(n)) => n.parse().ok(),
            _ => None,
        }))
    }

    pub async fn put_limit(&self, tenant: &str, name: &str, value: i64) -> Result<(), DynamoError> {
        let mut item = key(tenant_pk(tenant), format!("LIMIT#{name}"));
        item.insert("value".into(), AttributeValue::N(value.to_string()));
        self.table.put(item).await?;
        Ok(())
    }

    pub async fn delete_limit(&self, tenant: &str, name: &str) -> Result<(), DynamoError> {
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
