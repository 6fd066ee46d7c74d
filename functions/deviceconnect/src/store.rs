//! Device connection status in DynamoDB (`DeviceconnectTable`, pk/sk strings).
//!
//! Access patterns:
//! * one item per device: `pk = "T#<tenant>"`, `sk = "DEVICE#<device id>"`, attributes
//!   `device_id`, `status` (`connected` / `disconnected`), `version` (number), `created_ts`,
//!   `updated_ts` (RFC 3339).
//! * connect: `UpdateItem` `ADD version 1`, `SET status = connected` (upsert), returning the new
//!   version; disconnect: `SET status = disconnected` only if `version` still equals the
//!   connection's version, so a stale disconnect never overwrites a newer connect.
//! * status lookup: strongly consistent `GetItem`.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("deviceconnect store: {0}")]
pub struct StoreError(String);

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A device's connection record (the management API's JSON shape).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: String,
    pub status: String,
    pub created_ts: String,
    pub updated_ts: String,
}

#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
}

fn key(tenant: &str, device_id: &str) -> [(&'static str, AttributeValue); 2] {
    [
        ("pk", AttributeValue::S(format!("T#{tenant}"))),
        ("sk", AttributeValue::S(format!("DEVICE#{device_id}"))),
    ]
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    pub fn new(client: Client, table: &str) -> Self {
        Store {
            client,
            table: table.to_owned(),
        }
    }

    /// Marks the device connected; returns the new connection version.
    pub async fn connect(&self, tenant: &str, device_id: &str) -> Result<u64, StoreError> {
        let [pk, sk] = key(tenant, device_id);
        let now = now();
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(pk.0, pk.1)
            .key(sk.0, sk.1)
            .update_expression(
                "SET #s = :connected, device_id = :id, updated_ts = :now, \
                 created_ts = if_not_exists(created_ts, :now) ADD version :one",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":connected", AttributeValue::S("connected".into()))
            .expression_attribute_values(":id", AttributeValue::S(device_id.into()))
            .expression_attribute_values(":now", AttributeValue::S(now))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| store_err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        out.attributes()
            .and_then(|a| a.get("version"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| store_err("no version returned"))
    }

    /// Marks the device disconnected if `version` is still its latest connection; returns
    /// whether it did.
    pub async fn disconnect(
        &self,
        tenant: &str,
        device_id: &str,
        version: u64,
    ) -> Result<bool, StoreError> {
        let [pk, sk] = key(tenant, device_id);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(pk.0, pk.1)
            .key(sk.0, sk.1)
            .update_expression("SET #s = :disconnected, updated_ts = :now")
            .condition_expression("version = :v")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":disconnected", AttributeValue::S("disconnected".into()))
            .expression_attribute_values(":now", AttributeValue::S(now()))
            .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(store_err(aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        }
    }

    /// The device's record, if it ever connected.
    pub async fn get(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let [pk, sk] = key(tenant, device_id);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(pk.0, pk.1)
            .key(sk.0, sk.1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let s = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        Ok(Some(DeviceRecord {
            device_id: device_id.to_owned(),
            status: s("status"),
            created_ts: s("created_ts"),
            updated_ts: s("updated_ts"),
        }))
    }
}
