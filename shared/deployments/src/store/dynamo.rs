//! [`DynamoStore`]: the deployments table. Access patterns (all keys start with the tenant):
//!
//! | item | pk | sk | used by |
//! |---|---|---|---|
//! | artifact | `T#{t}` | `ART#{id}` | get; lists and releases query the `ART#` prefix |
//! | artifact uniqueness guard | `T#{t}` | `ARTKEY#{sha256(name, depends combination)}` | 409 on duplicates |
//! | deployment (+ counters `c_<status>`) | `T#{t}` | `DEP#{id}` | get; lists query the `DEP#` prefix |
//! | device deployment | `T#{t}#DEP#{dep}` | `DEV#{device}` | a deployment's devices |
//! | device deployment log | `T#{t}#DEP#{dep}` | `LOG#{device}` | device log |
//!
//! GSI `active-by-device` (`gsi1pk` = `T#{t}#DEV#{device}`, `gsi1sk` = created#deployment) is
//! sparse: only device deployments that are not finished carry its keys, so a device's idle
//! poll is one query that returns nothing. GSI `history-by-device` (`gsi2pk`, `gsi2sk`) holds
//! every device deployment for the device's history.
//!
//! What the operator endpoints read: `/artifacts`, `/artifacts/list` and v2 `/artifacts` one
//! query of the `ART#` prefix; the release lists, `software` and `software/tags` that query and
//! one of the `REL#` prefix (tags, notes); `deployments/statistics/list` one `BatchGetItem` of
//! the named `DEP#` keys (at most 100; only id, created and the counters projected);
//! `DELETE .../devices/{id}/history` one query of the device's `history-by-device` partition
//! and one conditional update (`deleted`) per finished device deployment not yet stamped;
//! `limits/storage` reads nothing.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use mender_aws::dynamo::{built, classify, from_item, key, to_item, DynamoError, Item, Table};
use sha2::{Digest, Sha256};

use super::{ArtifactStore, DeploymentStore, DeviceDeploymentStore, ReleaseMeta, UploadIntent};
use crate::model::{empty_statistics, Artifact, Deployment, DeviceDeployment, DeviceStatus};

pub const ACTIVE_INDEX: &str = "active-by-device";
pub const HISTORY_INDEX: &str = "history-by-device";

fn tenant_pk(t: &str) -> String {
    format!("T#{t}")
}
fn deployment_pk(t: &str, dep: &str) -> String {
    format!("T#{t}#DEP#{dep}")
}
fn device_pk(t: &str, device: &str) -> String {
    format!("T#{t}#DEV#{device}")
}
fn guard_sk(name: &str, combination: &str) -> String {
    let digest = Sha256::digest(format!("{name}\n{combination}").as_bytes());
    format!("ARTKEY#{}", hex::encode(digest))
}
fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}
fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// The deployments table (its access patterns are in the module doc).
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

    fn device_deployment_item(
        &self,
        tenant: &str,
        dd: &DeviceDeployment,
    ) -> Result<Item, DynamoError> {
        let mut item = to_item(
            deployment_pk(tenant, &dd.deployment_id),
            format!("DEV#{}", dd.device_id),
            dd,
        )?;
        let order = format!("{}#{}", dd.created, dd.deployment_id);
        item.insert("gsi2pk".into(), s(&device_pk(tenant, &dd.device_id)));
        item.insert("gsi2sk".into(), s(&order));
        if !dd.status.is_terminal() {
            item.insert("gsi1pk".into(), s(&device_pk(tenant, &dd.device_id)));
            item.insert("gsi1sk".into(), s(&order));
        }
        Ok(item)
    }

    fn parse_deployment(item: Item) -> Result<Deployment, DynamoError> {
        let mut statistics = empty_statistics();
        for (name, value) in &item {
            if let (Some(status), AttributeValue::N(count)) = (name.strip_prefix("c_"), value) {
                statistics.insert(status.to_owned(), count.parse().unwrap_or(0));
            }
        }
        let mut deployment: Deployment = from_item(item)?;
        deployment.statistics = statistics;
        deployment.status = deployment.computed_status();
        Ok(deployment)
    }

    async fn by_device(
        &self,
        index: &str,
        key_name: &str,
        tenant: &str,
        device: &str,
    ) -> Result<Vec<DeviceDeployment>, DynamoError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .index_name(index)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", key_name)
                .expression_attribute_values(":k", s(&device_pk(tenant, device)))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in out.items.unwrap_or_default() {
                items.push(from_item(item)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

impl ArtifactStore for DynamoStore {
    /// Stores the artifact and claims every (name, depends combination); `ConditionFailed` =
    /// an artifact with the same name and an overlapping combination exists.
    async fn create_artifact(
        &self,
        tenant: &str,
        artifact: &Artifact,
        combinations: &[String],
    ) -> Result<(), DynamoError> {
        let mut items = Vec::new();
        for combination in combinations {
            let mut guard = key(tenant_pk(tenant), guard_sk(&artifact.name, combination));
            guard.insert("artifact_id".into(), s(&artifact.id));
            guard.insert("combination".into(), s(combination));
            let put = Put::builder()
                .table_name(&self.table.name)
                .set_item(Some(guard))
                .condition_expression("attribute_not_exists(pk)")
                .build();
            items.push(TransactWriteItem::builder().put(built(put)?).build());
        }
        let put = Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(to_item(
                tenant_pk(tenant),
                format!("ART#{}", artifact.id),
                artifact,
            )?))
            .condition_expression("attribute_not_exists(pk)")
            .build();
        items.push(TransactWriteItem::builder().put(built(put)?).build());
        self.table.transact(items).await?;
        Ok(())
    }

    async fn get_artifact(&self, tenant: &str, id: &str) -> Result<Option<Artifact>, DynamoError> {
        self.table
            .get_as(key(tenant_pk(tenant), format!("ART#{id}")))
            .await
    }

    async fn list_artifacts(&self, tenant: &str) -> Result<Vec<Artifact>, DynamoError> {
        self.table.query_prefix_as(&tenant_pk(tenant), "ART#").await
    }

    async fn put_artifact(&self, tenant: &str, artifact: &Artifact) -> Result<(), DynamoError> {
        let item = to_item(tenant_pk(tenant), format!("ART#{}", artifact.id), artifact)?;
        self.table.put(item).await?;
        Ok(())
    }

    /// Removes the artifact and its guards.
    async fn delete_artifact(
        &self,
        tenant: &str,
        artifact: &Artifact,
        combinations: &[String],
    ) -> Result<(), DynamoError> {
        for combination in combinations {
            self.table
                .delete(key(
                    tenant_pk(tenant),
                    guard_sk(&artifact.name, combination),
                ))
                .await?;
        }
        self.table
            .delete(key(tenant_pk(tenant), format!("ART#{}", artifact.id)))
            .await
    }

    /// Writes a new intent; its id is reserved from then on (`ConditionFailed` when taken), so
    /// no two uploads, direct or multipart, ever write the same artifact object.
    async fn put_intent(&self, tenant: &str, intent: &UploadIntent) -> Result<(), DynamoError> {
        let item = to_item(tenant_pk(tenant), format!("UPLOAD#{}", intent.id), intent)?;
        self.table.put_new(item).await
    }

    /// Releases the reservation of an upload that failed before its artifact was stored.
    async fn delete_intent(&self, tenant: &str, id: &str) -> Result<(), DynamoError> {
        self.table
            .delete(key(tenant_pk(tenant), format!("UPLOAD#{id}")))
            .await
    }

    async fn get_intent(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<UploadIntent>, DynamoError> {
        self.table
            .get_as(key(tenant_pk(tenant), format!("UPLOAD#{id}")))
            .await
    }

    /// Moves an intent from `from` to `to`; `ConditionFailed` when it is not in `from`.
    async fn move_intent(
        &self,
        tenant: &str,
        id: &str,
        from: &str,
        to: &str,
        when: &str,
    ) -> Result<(), DynamoError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(tenant_pk(tenant), format!("UPLOAD#{id}"))))
            .update_expression("SET #status = :to, updated_ts = :when")
            .condition_expression("#status = :from")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":when", s(when))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn release_metas(&self, tenant: &str) -> Result<Vec<ReleaseMeta>, DynamoError> {
        self.table.query_prefix_as(&tenant_pk(tenant), "REL#").await
    }

    async fn put_release_meta(&self, tenant: &str, meta: &ReleaseMeta) -> Result<(), DynamoError> {
        let item = to_item(tenant_pk(tenant), format!("REL#{}", meta.name), meta)?;
        self.table.put(item).await?;
        Ok(())
    }

    async fn delete_release_meta(&self, tenant: &str, name: &str) -> Result<(), DynamoError> {
        self.table
            .delete(key(tenant_pk(tenant), format!("REL#{name}")))
            .await
    }
}

impl DeploymentStore for DynamoStore {
    /// Stores a deployment and a pending device deployment per target device.
    async fn create_deployment(
        &self,
        tenant: &str,
        deployment: &Deployment,
        devices: &[DeviceDeployment],
    ) -> Result<(), DynamoError> {
        let mut item = to_item(
            tenant_pk(tenant),
            format!("DEP#{}", deployment.id),
            deployment,
        )?;
        for (status, count) in &deployment.statistics {
            item.insert(format!("c_{status}"), n(*count));
        }
        self.table.put_new(item).await?;
        for chunk in devices.chunks(25) {
            let mut requests = Vec::new();
            for dd in chunk {
                let put = built(
                    PutRequest::builder()
                        .set_item(Some(self.device_deployment_item(tenant, dd)?))
                        .build(),
                )?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut pending = Some(HashMap::from([(self.table.name.clone(), requests)]));
            while let Some(items) = pending.filter(|p| p.values().any(|v| !v.is_empty())) {
                let out = self
                    .table
                    .client
                    .batch_write_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .map_err(classify)?;
                pending = out.unprocessed_items;
            }
        }
        Ok(())
    }

    async fn get_deployment(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Deployment>, DynamoError> {
        self.table
            .get(key(tenant_pk(tenant), format!("DEP#{id}")))
            .await?
            .map(Self::parse_deployment)
            .transpose()
    }

    async fn list_deployments(&self, tenant: &str) -> Result<Vec<Deployment>, DynamoError> {
        self.table
            .query_prefix(&tenant_pk(tenant), "DEP#")
            .await?
            .into_iter()
            .map(Self::parse_deployment)
            .collect()
    }

    /// Replaces the artifact ids of a deployment (a new artifact with its name arrived).
    async fn set_deployment_artifacts(
        &self,
        tenant: &str,
        id: &str,
        artifacts: &[String],
    ) -> Result<(), DynamoError> {
        let list = AttributeValue::L(artifacts.iter().map(|a| s(a)).collect());
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(tenant_pk(tenant), format!("DEP#{id}"))))
            .update_expression("SET artifacts = :list")
            .expression_attribute_values(":list", list)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Records the deployment's finish time once.
    async fn finish_deployment(
        &self,
        tenant: &str,
        id: &str,
        when: &str,
    ) -> Result<(), DynamoError> {
        let result = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(tenant_pk(tenant), format!("DEP#{id}"))))
            .update_expression("SET finished = :when")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(finished)")
            .expression_attribute_values(":when", s(when))
            .send()
            .await
            .map_err(classify);
        match result {
            Ok(_) | Err(DynamoError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Counters of the deployments `ids` (distinct), as (created, id, counters); unknown ids
    /// are left out. Projects only id, created and the 13 `c_<status>` attributes.
    async fn deployment_statistics(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<(String, String, crate::model::Statistics)>, DynamoError> {
        let keys = ids
            .iter()
            .map(|id| key(tenant_pk(tenant), format!("DEP#{id}")))
            .collect();
        let mut names = HashMap::from([
            ("#id".to_owned(), "id".to_owned()),
            ("#created".to_owned(), "created".to_owned()),
        ]);
        let mut projection = vec!["#id".to_owned(), "#created".to_owned()];
        for (i, status) in crate::model::STATUS_ORDER.iter().enumerate() {
            names.insert(format!("#c{i}"), format!("c_{status}"));
            projection.push(format!("#c{i}"));
        }
        let items = self
            .table
            .batch_get(keys, Some((&projection.join(", "), &names)))
            .await?;
        Ok(items
            .into_iter()
            .map(|item| {
                let mut statistics = empty_statistics();
                for (name, value) in &item {
                    if let (Some(status), AttributeValue::N(count)) =
                        (name.strip_prefix("c_"), value)
                    {
                        statistics.insert(status.to_owned(), count.parse().unwrap_or(0));
                    }
                }
                (
                    mender_aws::dynamo::text(&item, "created"),
                    mender_aws::dynamo::text(&item, "id"),
                    statistics,
                )
            })
            .collect())
    }
}

impl DeviceDeploymentStore for DynamoStore {
    async fn device_deployment(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> Result<Option<DeviceDeployment>, DynamoError> {
        self.table
            .get_as(key(
                deployment_pk(tenant, deployment),
                format!("DEV#{device}"),
            ))
            .await
    }

    async fn deployment_devices(
        &self,
        tenant: &str,
        deployment: &str,
    ) -> Result<Vec<DeviceDeployment>, DynamoError> {
        self.table
            .query_prefix_as(&deployment_pk(tenant, deployment), "DEV#")
            .await
    }

    /// The device's unfinished device deployments, oldest first (sparse index: an idle device
    /// reads nothing).
    async fn active_for_device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Vec<DeviceDeployment>, DynamoError> {
        self.by_device(ACTIVE_INDEX, "gsi1pk", tenant, device).await
    }

    /// Every device deployment of the device, oldest first.
    async fn history_for_device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Vec<DeviceDeployment>, DynamoError> {
        self.by_device(HISTORY_INDEX, "gsi2pk", tenant, device)
            .await
    }

    /// Moves a device deployment from `from` to `to.status` (compare-and-set) and the
    /// deployment's counters with it, in one transaction. `extra` are further SET clauses on the
    /// device deployment (started, finished, substate, artifact...). `ConditionFailed` = the
    /// status changed meanwhile.
    async fn transition(
        &self,
        tenant: &str,
        to: &DeviceDeployment,
        from: DeviceStatus,
        deployment_delta: &[(&str, i64)],
    ) -> Result<(), DynamoError> {
        let mut item = self.device_deployment_item(tenant, to)?;
        item.remove("pk");
        item.remove("sk");
        let mut sets = Vec::new();
        let mut update = Update::builder()
            .table_name(&self.table.name)
            .set_key(Some(key(
                deployment_pk(tenant, &to.deployment_id),
                format!("DEV#{}", to.device_id),
            )))
            .condition_expression("#status = :from")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":from", s(from.as_str()));
        for (i, (name, value)) in item.into_iter().enumerate() {
            if name == "status" {
                sets.push("#status = :to".to_owned());
                update = update.expression_attribute_values(":to", value);
                continue;
            }
            sets.push(format!("#a{i} = :a{i}"));
            update = update
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":a{i}"), value);
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if to.status.is_terminal() {
            expression.push_str(" REMOVE gsi1pk, gsi1sk");
        }
        let update = built(update.update_expression(expression).build())?;
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        if !deployment_delta.is_empty() {
            let mut adds = Vec::new();
            let mut counters = Update::builder()
                .table_name(&self.table.name)
                .set_key(Some(key(
                    tenant_pk(tenant),
                    format!("DEP#{}", to.deployment_id),
                )));
            for (i, (name, delta)) in deployment_delta.iter().enumerate() {
                adds.push(format!("#c{i} :c{i}"));
                counters = counters
                    .expression_attribute_names(format!("#c{i}"), *name)
                    .expression_attribute_values(format!(":c{i}"), n(*delta));
            }
            let counters = built(
                counters
                    .update_expression(format!("ADD {}", adds.join(", ")))
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().update(counters).build());
        }
        self.table.transact(items).await?;
        Ok(())
    }

    /// First fetch of a device deployment: remember the artifact and the request, count the
    /// device and the bytes it will download. Only the first call counts.
    async fn record_fetch(
        &self,
        tenant: &str,
        dd: &DeviceDeployment,
        artifact_id: &str,
        request: &str,
        size: u64,
    ) -> Result<(), DynamoError> {
        let fetch = built(
            Update::builder()
                .table_name(&self.table.name)
                .set_key(Some(key(
                    deployment_pk(tenant, &dd.deployment_id),
                    format!("DEV#{}", dd.device_id),
                )))
                .update_expression("SET artifact_id = :a, #request = :r")
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(artifact_id)")
                .expression_attribute_names("#request", "request")
                .expression_attribute_values(":a", s(artifact_id))
                .expression_attribute_values(":r", s(request))
                .build(),
        )?;
        let count = built(
            Update::builder()
                .table_name(&self.table.name)
                .set_key(Some(key(
                    tenant_pk(tenant),
                    format!("DEP#{}", dd.deployment_id),
                )))
                .update_expression("ADD device_count :one, total_size :size")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":size", AttributeValue::N(size.to_string()))
                .build(),
        )?;
        let result = self
            .table
            .transact(vec![
                TransactWriteItem::builder().update(fetch).build(),
                TransactWriteItem::builder().update(count).build(),
            ])
            .await;
        match result {
            Ok(_) | Err(DynamoError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn set_log_flag(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> Result<(), DynamoError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(
                deployment_pk(tenant, deployment),
                format!("DEV#{device}"),
            )))
            .update_expression("SET #log = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#log", "log")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn put_log(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
        messages: &str,
    ) -> Result<(), DynamoError> {
        let mut item = key(deployment_pk(tenant, deployment), format!("LOG#{device}"));
        item.insert("messages".into(), s(messages));
        self.table.put(item).await?;
        Ok(())
    }

    async fn get_log(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> Result<Option<String>, DynamoError> {
        let item = self
            .table
            .get(key(
                deployment_pk(tenant, deployment),
                format!("LOG#{device}"),
            ))
            .await?;
        Ok(item.map(|i| mender_aws::dynamo::text(&i, "messages")))
    }

    /// Stamps `deleted` on a finished device deployment (no active-index key) that has none;
    /// false when it is unfinished or already stamped.
    async fn mark_deleted(
        &self,
        tenant: &str,
        dd: &DeviceDeployment,
        when: &str,
    ) -> Result<bool, DynamoError> {
        let result = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(
                deployment_pk(tenant, &dd.deployment_id),
                format!("DEV#{}", dd.device_id),
            )))
            .update_expression("SET deleted = :when")
            .condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(gsi1pk) AND attribute_not_exists(deleted)",
            )
            .expression_attribute_values(":when", s(when))
            .send()
            .await
            .map_err(classify);
        match result {
            Ok(_) => Ok(true),
            Err(DynamoError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
