//! deviceconnect's records in DynamoDB (`DeviceconnectTable`, pk/sk strings): device connection
//! status and terminal sessions. A library of its own because the provision and decommission
//! workflow steps create and delete device records as well as the deviceconnect container.
//!
//! Access patterns (`pk = "T#<tenant>"` for everything of a tenant):
//! * device: `sk = "DEVICE#<device id>"`, attributes `device_id`, `status` (`connected` /
//!   `disconnected`), `version` (number), `instance` (the deviceconnect instance holding the
//!   socket), `created_ts`, `updated_ts` (RFC 3339).
//!   Connect: `UpdateItem` `ADD version 1`, `SET status = connected` (upsert), returning the new
//!   version; disconnect: `SET status = disconnected` only if `version` still equals the
//!   connection's version, so a stale disconnect never overwrites a newer connect. Provision:
//!   upsert that keeps an existing status. Lookup: strongly consistent `GetItem`.
//! * instance heartbeat: `pk = "INSTANCES"`, `sk = "INSTANCE#<id>"`, `alive_until` (epoch
//!   seconds), `expire_at` (TTL, a day later). Each instance writes its own every
//!   [`HEARTBEAT_INTERVAL`]; a `connected` device whose instance's heartbeat is missing or has
//!   run out reads as `disconnected`. So an instance that dies without writing its disconnects
//!   leaves no device `connected` for longer than [`HEARTBEAT_LIFETIME`], at one write per
//!   instance (not per device) every half minute.
//! * session: `sk = "SESSION#<session id>"`, attributes `session_id`, `user_id`, `device_id`,
//!   `start_ts`, `expire_at` (epoch seconds, the table's TTL attribute: 30 days, as the
//!   recording it describes).

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use mender_aws::dynamo::{classify, key, text, DynamoError, Table};
use serde::Serialize;

/// How long session records (and their recordings) are kept.
pub const SESSION_LIFETIME_SECS: i64 = 30 * 24 * 3600;
/// How often an instance writes its heartbeat ...
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// ... and how long one counts.
pub const HEARTBEAT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
#[error("deviceconnect store: {0}")]
pub struct StoreError(#[from] DynamoError);

/// A device's connection record (the management API's JSON shape).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_id: String,
    pub status: String,
    pub created_ts: String,
    pub updated_ts: String,
    /// The latest connection's version (0 before the first connect); not part of the API.
    #[serde(skip)]
    pub version: u64,
}

impl DeviceRecord {
    pub fn is_connected(&self) -> bool {
        self.status == "connected"
    }
}

/// A terminal session (one user websocket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub device_id: String,
    pub start_ts: String,
}

#[derive(Clone, Debug)]
pub struct Store {
    table: Table,
}

fn pk(tenant: &str) -> String {
    format!("T#{tenant}")
}

fn device_key(tenant: &str, device_id: &str) -> mender_aws::dynamo::Item {
    key(pk(tenant), format!("DEVICE#{device_id}"))
}

fn session_key(tenant: &str, sid: &str) -> mender_aws::dynamo::Item {
    key(pk(tenant), format!("SESSION#{sid}"))
}

fn instance_key(instance: &str) -> mender_aws::dynamo::Item {
    key("INSTANCES", format!("INSTANCE#{instance}"))
}

/// A number attribute.
fn number(item: &mender_aws::dynamo::Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Whether a conditional write happened (`false`: its condition did not hold).
fn applied<T>(result: Result<T, DynamoError>) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(DynamoError::ConditionFailed) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

impl Store {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        Store {
            table: Table::new(client, table),
        }
    }

    /// Records that `instance` is alive for `lifetime` from now.
    pub async fn heartbeat(
        &self,
        instance: &str,
        lifetime: std::time::Duration,
    ) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp();
        let alive_until = now + i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        let mut item = instance_key(instance);
        item.insert(
            "alive_until".into(),
            AttributeValue::N(alive_until.to_string()),
        );
        item.insert(
            "expire_at".into(),
            AttributeValue::N((alive_until + 86_400).to_string()),
        );
        Ok(self.table.put(item).await?)
    }

    async fn instance_alive(&self, instance: &str) -> Result<bool, StoreError> {
        let Some(item) = self.table.get(instance_key(instance)).await? else {
            return Ok(false);
        };
        Ok(number(&item, "alive_until")
            .is_some_and(|until| until >= chrono::Utc::now().timestamp()))
    }

    /// Marks the device connected through `instance`; returns the new connection version.
    pub async fn connect(
        &self,
        tenant: &str,
        device_id: &str,
        instance: &str,
    ) -> Result<u64, StoreError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(device_key(tenant, device_id)))
            .update_expression(
                "SET #s = :connected, device_id = :id, updated_ts = :now, instance = :instance, \
                 created_ts = if_not_exists(created_ts, :now) ADD version :one",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":connected", s("connected"))
            .expression_attribute_values(":instance", s(instance))
            .expression_attribute_values(":id", s(device_id))
            .expression_attribute_values(":now", s(&now()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(classify)?;
        out.attributes()
            .and_then(|a| a.get("version"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| StoreError(DynamoError::Other("no version returned".into())))
    }

    /// Marks the device disconnected if `version` is still its latest connection; returns
    /// whether it did.
    pub async fn disconnect(
        &self,
        tenant: &str,
        device_id: &str,
        version: u64,
    ) -> Result<bool, StoreError> {
        let result = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(device_key(tenant, device_id)))
            .update_expression("SET #s = :disconnected, updated_ts = :now")
            .condition_expression("version = :v")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":disconnected", s("disconnected"))
            .expression_attribute_values(":now", s(&now()))
            .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
            .send()
            .await
            .map_err(classify);
        applied(result)
    }

    /// Creates the record of a newly provisioned device as `disconnected`; an existing record
    /// (the device may already be connected) keeps its status. Idempotent.
    pub async fn provision(&self, tenant: &str, device_id: &str) -> Result<(), StoreError> {
        let now = now();
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(device_key(tenant, device_id)))
            .update_expression(
                "SET #s = if_not_exists(#s, :disconnected), device_id = :id, \
                 created_ts = if_not_exists(created_ts, :now), \
                 updated_ts = if_not_exists(updated_ts, :now)",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":disconnected", s("disconnected"))
            .expression_attribute_values(":id", s(device_id))
            .expression_attribute_values(":now", s(&now))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Deletes the device's record (decommissioning). Idempotent.
    pub async fn delete_device(&self, tenant: &str, device_id: &str) -> Result<(), StoreError> {
        Ok(self.table.delete(device_key(tenant, device_id)).await?)
    }

    /// Deletes every record of the tenant (devices and sessions).
    pub async fn delete_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        let items = self.table.query_prefix(&pk(tenant), "").await?;
        for item in &items {
            self.table.delete(key(pk(tenant), text(item, "sk"))).await?;
        }
        Ok(items.len())
    }

    /// The device's record, if it ever connected or was provisioned.
    pub async fn get(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        let Some(item) = self.table.get(device_key(tenant, device_id)).await? else {
            return Ok(None);
        };
        let mut status = text(&item, "status");
        if status == "connected" && !self.instance_alive(&text(&item, "instance")).await? {
            // the instance holding the socket died without writing the disconnect
            status = "disconnected".to_owned();
        }
        Ok(Some(DeviceRecord {
            device_id: device_id.to_owned(),
            status,
            created_ts: text(&item, "created_ts"),
            updated_ts: text(&item, "updated_ts"),
            version: number(&item, "version")
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
        }))
    }

    /// Stores a new session record (expires with its recording).
    pub async fn create_session(&self, tenant: &str, session: &Session) -> Result<(), StoreError> {
        let expire_at = chrono::Utc::now().timestamp() + SESSION_LIFETIME_SECS;
        let mut item = session_key(tenant, &session.id);
        item.insert("session_id".into(), s(&session.id));
        item.insert("user_id".into(), s(&session.user_id));
        item.insert("device_id".into(), s(&session.device_id));
        item.insert("start_ts".into(), s(&session.start_ts));
        item.insert("expire_at".into(), AttributeValue::N(expire_at.to_string()));
        Ok(self.table.put(item).await?)
    }

    /// The session, if it exists in the tenant and has not expired.
    pub async fn session(&self, tenant: &str, sid: &str) -> Result<Option<Session>, StoreError> {
        let Some(item) = self.table.get(session_key(tenant, sid)).await? else {
            return Ok(None);
        };
        let expired =
            number(&item, "expire_at").is_some_and(|at| at <= chrono::Utc::now().timestamp());
        if expired {
            return Ok(None);
        }
        Ok(Some(Session {
            id: text(&item, "session_id"),
            user_id: text(&item, "user_id"),
            device_id: text(&item, "device_id"),
            start_ts: text(&item, "start_ts"),
        }))
    }
}
