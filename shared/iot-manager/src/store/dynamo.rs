//! The DynamoDB implementation of the iot-manager [`Store`]: the iot-manager table
//! (`IotManagerTable`, string `pk`/`sk`, TTL on `expire_at`):
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | integration | `T#{tenant}` | `INTEGRATION` | `integration_id`, `integration` (JSON, credentials included) |
//! | device | `T#{tenant}` | `DEVICE#{device id}` | `device_id`, `integration_ids` (string set, absent when none) |
//! | device of an integration | `T#{tenant}` | `LINK#{integration id}#{device id}` | — |
//! | event | `T#{tenant}` | `EVENT#{time}#{event id}` | `event` (JSON), `delivery_statuses` (JSON), `claimed_at`, `finished_at`, `expire_at` (epoch s) |
//!
//! Access patterns:
//! * integrations: `GetItem` of the one `INTEGRATION` item; creating it is a `PutItem`
//!   conditional on `attribute_not_exists(pk)` (upstream allows one integration per tenant:
//!   409); new credentials and removal are conditional on `integration_id`;
//! * a device's integrations: `GetItem`; provisioning adds ids (`UpdateItem ADD`) and puts the
//!   link items; decommissioning deletes the device and its links;
//! * "is the integration used by devices": `Query` of `LINK#{id}#`, limit 1;
//! * events: the queue step claims an event by putting it with `claimed_at`, conditional on
//!   `attribute_not_exists(pk)` or an unfinished claim older than the lease (a redelivered
//!   message finds it and delivers nothing; one whose first attempt died midway delivers it),
//!   then sets its delivery statuses and `finished_at`; `GET /events` queries `EVENT#` newest first, reading only as many
//!   items as the page needs (more when filtered by integration). Events expire after a week
//!   (`expire_at`; DynamoDB's TTL deletes them within days, reads skip expired ones).
//!
//! Secrets (webhook secret, AWS secret key, connection string) are stored as given, protected
//! by the table's encryption at rest and the functions' IAM policies (upstream encrypts them
//! with its own AES key when one is configured).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use mender_aws::dynamo::{classify, key, text, DynamoError, Item, Table};

use super::{event_order, Store};
use crate::model::{Credentials, DeliveryStatus, Event, Integration, WebhookEvent};

/// The iot-manager table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    table: Table,
}

fn pk(tenant: &str) -> String {
    format!("T#{tenant}")
}

const INTEGRATION: &str = "INTEGRATION";

fn device_sk(device: &str) -> String {
    format!("DEVICE#{device}")
}

fn link_sk(integration: &str, device: &str) -> String {
    format!("LINK#{integration}#{device}")
}

fn event_sk(event: &WebhookEvent) -> String {
    format!("EVENT#{}", event_order(event))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn json_err(e: serde_json::Error) -> DynamoError {
    DynamoError::source(format!("iot-manager item: {e}"), e)
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: &str) -> Self {
        DynamoStore {
            table: Table::new(client, table),
        }
    }

    fn integration_item(tenant: &str, integration: &Integration) -> Result<Item, DynamoError> {
        let mut item = key(pk(tenant), INTEGRATION);
        item.insert("integration_id".into(), s(&integration.id));
        item.insert(
            "integration".into(),
            s(&serde_json::to_string(integration).map_err(json_err)?),
        );
        Ok(item)
    }
}

impl Store for DynamoStore {
    async fn integrations(&self, tenant: &str) -> Result<Vec<Integration>, DynamoError> {
        let Some(item) = self.table.get(key(pk(tenant), INTEGRATION)).await? else {
            return Ok(Vec::new());
        };
        let integration = serde_json::from_str(&text(&item, "integration")).map_err(json_err)?;
        Ok(vec![integration])
    }

    /// `ConditionFailed` when the tenant has an integration.
    async fn create_integration(
        &self,
        tenant: &str,
        integration: &Integration,
    ) -> Result<(), DynamoError> {
        self.table
            .put_new(Self::integration_item(tenant, integration)?)
            .await
    }

    /// `ConditionFailed` when the integration is not there.
    async fn set_credentials(
        &self,
        tenant: &str,
        id: &str,
        credentials: &Credentials,
    ) -> Result<(), DynamoError> {
        let Some(mut integration) = self
            .integrations(tenant)
            .await?
            .into_iter()
            .find(|i| i.id == id)
        else {
            return Err(DynamoError::ConditionFailed);
        };
        integration.credentials = credentials.clone();
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(Self::integration_item(tenant, &integration)?))
            .condition_expression("integration_id = :id")
            .expression_attribute_values(":id", s(id))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// `ConditionFailed` when the integration is not there.
    async fn delete_integration(&self, tenant: &str, id: &str) -> Result<(), DynamoError> {
        self.table
            .client
            .delete_item()
            .table_name(&self.table.name)
            .set_key(Some(key(pk(tenant), INTEGRATION)))
            .condition_expression("integration_id = :id")
            .expression_attribute_values(":id", s(id))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Whether any device is linked to the integration.
    async fn integration_in_use(
        &self,
        tenant: &str,
        integration: &str,
    ) -> Result<bool, DynamoError> {
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(&pk(tenant)))
            .expression_attribute_values(":prefix", s(&format!("LINK#{integration}#")))
            .limit(1)
            .send()
            .await
            .map_err(classify)?;
        Ok(!out.items().is_empty())
    }

    /// The device's integration ids; `None` when iot-manager does not know the device.
    async fn device(&self, tenant: &str, device: &str) -> Result<Option<Vec<String>>, DynamoError> {
        let Some(item) = self.table.get(key(pk(tenant), device_sk(device))).await? else {
            return Ok(None);
        };
        let mut ids = match item.get("integration_ids") {
            Some(AttributeValue::Ss(ids)) => ids.clone(),
            _ => Vec::new(),
        };
        ids.sort();
        Ok(Some(ids))
    }

    /// Records the device (created when missing) with `integrations` added. Idempotent.
    async fn add_device(
        &self,
        tenant: &str,
        device: &str,
        integrations: &[String],
    ) -> Result<(), DynamoError> {
        let mut update = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(pk(tenant), device_sk(device))))
            .expression_attribute_values(":d", s(device));
        update = if integrations.is_empty() {
            update.update_expression("SET device_id = :d")
        } else {
            update
                .update_expression("SET device_id = :d ADD integration_ids :ids")
                .expression_attribute_values(":ids", AttributeValue::Ss(integrations.to_vec()))
        };
        update.send().await.map_err(classify)?;
        for integration in integrations {
            self.table
                .put(key(pk(tenant), link_sk(integration, device)))
                .await?;
        }
        Ok(())
    }

    /// Forgets the device and its links; returns whether it was known. Idempotent.
    async fn delete_device(&self, tenant: &str, device: &str) -> Result<bool, DynamoError> {
        let Some(integrations) = self.device(tenant, device).await? else {
            return Ok(false);
        };
        for integration in &integrations {
            self.table
                .delete(key(pk(tenant), link_sk(integration, device)))
                .await?;
        }
        self.table
            .delete(key(pk(tenant), device_sk(device)))
            .await?;
        Ok(true)
    }

    /// Stores the event before anything is delivered (`claimed_at = now`); `ConditionFailed`
    /// when it is there and either finished or claimed less than `lease_secs` ago (the message
    /// was handled before, or is being handled). A claim older than the lease without
    /// `finished_at` is an attempt that died midway (the function timed out or crashed): it is
    /// taken over, so the event is delivered at least once.
    async fn claim_event(
        &self,
        tenant: &str,
        event: &WebhookEvent,
        now: i64,
        lease_secs: i64,
        expire_at: i64,
    ) -> Result<(), DynamoError> {
        let mut item = key(pk(tenant), event_sk(event));
        item.insert(
            "event".into(),
            s(&serde_json::to_string(event).map_err(json_err)?),
        );
        item.insert("delivery_statuses".into(), s("[]"));
        item.insert("claimed_at".into(), AttributeValue::N(now.to_string()));
        item.insert("expire_at".into(), AttributeValue::N(expire_at.to_string()));
        self.table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR (attribute_not_exists(finished_at) AND claimed_at < :stale)",
            )
            .expression_attribute_values(":stale", AttributeValue::N((now - lease_secs).to_string()))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Records how the event reached each integration; the event is then handled for good.
    async fn finish_event(
        &self,
        tenant: &str,
        event: &WebhookEvent,
        statuses: &[DeliveryStatus],
        now: i64,
    ) -> Result<(), DynamoError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(pk(tenant), event_sk(event))))
            .update_expression("SET delivery_statuses = :s, finished_at = :now")
            .expression_attribute_values(
                ":s",
                s(&serde_json::to_string(statuses).map_err(json_err)?),
            )
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Events newest first: `limit` of them after skipping `skip`, only those delivered to
    /// `integration` when given.
    async fn events(
        &self,
        tenant: &str,
        skip: usize,
        limit: usize,
        integration: Option<&str>,
    ) -> Result<Vec<Event>, DynamoError> {
        let wanted = skip.saturating_add(limit);
        let now = now_secs();
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page_size = i32::try_from((wanted - found.len()).clamp(1, 500)).unwrap_or(500);
            let out = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(&pk(tenant)))
                .expression_attribute_values(":prefix", s("EVENT#"))
                .scan_index_forward(false)
                .limit(page_size)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in out.items() {
                let expired = item
                    .get("expire_at")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
                    .is_some_and(|t| t <= now);
                if expired {
                    continue;
                }
                let event: WebhookEvent =
                    serde_json::from_str(&text(item, "event")).map_err(json_err)?;
                let delivery_statuses: Vec<DeliveryStatus> =
                    serde_json::from_str(&text(item, "delivery_statuses")).unwrap_or_default();
                if integration
                    .is_some_and(|id| !delivery_statuses.iter().any(|d| d.integration_id == id))
                {
                    continue;
                }
                found.push(Event {
                    event,
                    delivery_statuses,
                });
            }
            start = out.last_evaluated_key;
            if start.is_none() || found.len() >= wanted {
                break;
            }
        }
        Ok(found.into_iter().skip(skip).take(limit).collect())
    }
}
