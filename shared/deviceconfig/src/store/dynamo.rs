//! The DynamoDB implementation of the deviceconfig [`Store`]: the deviceconfig table
//! (`DeviceconfigTable`, string `pk`/`sk`). One item per device:
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | device | `T#{tenant}` | `DEVICE#{device id}` | `device_id`, `configured` and `reported` (maps of strings), `deployment_id`?, `updated_ts`?, `reported_ts`? (RFC 3339) |
//!
//! Access patterns, each one request on one item:
//! * read (device `GET`, management `GET`, deploy): strongly consistent `GetItem`;
//! * management `PUT` / device `PUT`: `UpdateItem SET configured|reported, updated_ts|reported_ts`
//!   (an upsert, as upstream's; the other map is untouched);
//! * deploy: `UpdateItem SET deployment_id` conditional on the item existing;
//! * provisioning: `PutItem` conditional on `attribute_not_exists(pk)` (an existing record,
//!   e.g. one the device's report created, is kept); decommissioning: `DeleteItem`;
//! * tenant removal: query the tenant's partition, delete each item.
//!
//! Limit: a DynamoDB item holds at most 400 KB, so the two maps of a device together hold at
//! most about 390 KB of keys and values (upstream allows 100 keys of 4096 characters and values
//! of 4096 characters in each); a larger write fails with a 500, as upstream's store does for
//! over 100 keys.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use mender_aws::dynamo::{classify, key, text, DynamoError, Item, Table};

use super::{DeviceConfig, Side, Store};
use crate::Configuration;

/// The deviceconfig table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    table: Table,
}

fn pk(tenant: &str) -> String {
    format!("T#{tenant}")
}

fn device_key(tenant: &str, device_id: &str) -> Item {
    key(pk(tenant), format!("DEVICE#{device_id}"))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn map_value(configuration: &Configuration) -> AttributeValue {
    AttributeValue::M(
        configuration
            .iter()
            .map(|(k, v)| (k.clone(), s(v)))
            .collect::<HashMap<_, _>>(),
    )
}

fn map_of(item: &Item, name: &str) -> Configuration {
    match item.get(name) {
        Some(AttributeValue::M(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone())))
            .collect(),
        _ => Configuration::new(),
    }
}

fn optional(item: &Item, name: &str) -> Option<String> {
    Some(text(item, name)).filter(|t| !t.is_empty())
}

fn now() -> String {
    mender_http::time::now_string()
}

impl Side {
    /// The map's attribute and its timestamp's.
    fn attributes(self) -> (&'static str, &'static str) {
        match self {
            Side::Configured => ("configured", "updated_ts"),
            Side::Reported => ("reported", "reported_ts"),
        }
    }
}

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        DynamoStore {
            table: Table::new(client, table),
        }
    }

    /// Deletes every record of the tenant; returns how many.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<usize, DynamoError> {
        let items = self.table.query_prefix(&pk(tenant), "").await?;
        for item in &items {
            self.table.delete(key(pk(tenant), text(item, "sk"))).await?;
        }
        Ok(items.len())
    }
}

impl Store for DynamoStore {
    async fn get(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<Option<DeviceConfig>, DynamoError> {
        let Some(item) = self.table.get(device_key(tenant, device_id)).await? else {
            return Ok(None);
        };
        Ok(Some(DeviceConfig {
            id: device_id.to_owned(),
            configured: map_of(&item, "configured"),
            reported: map_of(&item, "reported"),
            deployment_id: optional(&item, "deployment_id"),
            updated_ts: optional(&item, "updated_ts"),
            reported_ts: optional(&item, "reported_ts"),
        }))
    }

    async fn set_map(
        &self,
        tenant: &str,
        device_id: &str,
        side: Side,
        configuration: &Configuration,
    ) -> Result<(), DynamoError> {
        let (map, timestamp) = side.attributes();
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(device_key(tenant, device_id)))
            .update_expression("SET #m = :m, #ts = :now, device_id = :id")
            .expression_attribute_names("#m", map)
            .expression_attribute_names("#ts", timestamp)
            .expression_attribute_values(":m", map_value(configuration))
            .expression_attribute_values(":now", s(&now()))
            .expression_attribute_values(":id", s(device_id))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn set_deployment_id(
        &self,
        tenant: &str,
        device_id: &str,
        deployment_id: &str,
    ) -> Result<(), DynamoError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(device_key(tenant, device_id)))
            .update_expression("SET deployment_id = :d")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":d", s(deployment_id))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn create(&self, tenant: &str, device_id: &str) -> Result<(), DynamoError> {
        let mut item = device_key(tenant, device_id);
        item.insert("device_id".into(), s(device_id));
        item.insert("configured".into(), map_value(&Configuration::new()));
        item.insert("reported".into(), map_value(&Configuration::new()));
        item.insert("updated_ts".into(), s(&now()));
        self.table.put_new(item).await?;
        Ok(())
    }

    async fn delete(&self, tenant: &str, device_id: &str) -> Result<(), DynamoError> {
        self.table.delete(device_key(tenant, device_id)).await
    }
}
