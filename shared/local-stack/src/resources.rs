//! Creates (and empties) the stack's tables, queues and bucket on the emulators, named
//! `{prefix}{LogicalId}` after the template's resources, and maps them to the functions'
//! configuration.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, DeleteRequest, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    WriteRequest,
};
use aws_sdk_sqs::types::QueueAttributeName;
use mender_config::QueueUrls;
use workflows::Queue;

use crate::template::Resources;

/// The names the local stack gave to the template's resources.
#[derive(Clone, Debug, Default)]
pub struct Created {
    /// logical id -> table name
    pub tables: HashMap<String, String>,
    /// logical id -> queue URL
    pub queues: HashMap<String, String>,
    /// logical id -> bucket name
    pub buckets: HashMap<String, String>,
}

/// The template's logical id of a workflow's queue.
pub fn queue_logical_id(queue: Queue) -> &'static str {
    match queue {
        Queue::ProvisionDevice => "ProvisionDeviceQueue",
        Queue::UpdateDeviceStatus => "UpdateDeviceStatusQueue",
        Queue::UpdateDeviceInventory => "UpdateDeviceInventoryQueue",
        Queue::DecommissionDevice => "DecommissionDeviceQueue",
        Queue::ProcessArtifact => "ProcessArtifactQueue",
        Queue::GenerateArtifact => "GenerateArtifactQueue",
        Queue::IotManagerEvents => "IotManagerEventsQueue",
    }
}

impl Created {
    pub fn table(&self, logical_id: &str) -> anyhow::Result<&str> {
        self.tables
            .get(logical_id)
            .map(String::as_str)
            .with_context(|| format!("template has no table {logical_id}"))
    }

    pub fn queue_urls(&self) -> anyhow::Result<QueueUrls> {
        let url = |q: Queue| {
            self.queues
                .get(queue_logical_id(q))
                .cloned()
                .with_context(|| format!("template has no queue {}", queue_logical_id(q)))
        };
        Ok(QueueUrls {
            provision_device: url(Queue::ProvisionDevice)?,
            update_device_status: url(Queue::UpdateDeviceStatus)?,
            update_device_inventory: url(Queue::UpdateDeviceInventory)?,
            decommission_device: url(Queue::DecommissionDevice)?,
            process_artifact: url(Queue::ProcessArtifact)?,
            generate_artifact: url(Queue::GenerateArtifact)?,
            iot_manager_events: url(Queue::IotManagerEvents)?,
        })
    }
}

fn bucket_name(prefix: &str, logical_id: &str) -> String {
    format!("{prefix}{logical_id}")
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
}

/// Creates whatever is missing; existing resources are kept (data survives restarts).
pub async fn create(
    resources: &Resources,
    prefix: &str,
    dynamodb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    s3: &aws_sdk_s3::Client,
) -> anyhow::Result<Created> {
    let mut created = Created::default();
    let existing = dynamodb
        .list_tables()
        .limit(100)
        .send()
        .await
        .context("DynamoDB unreachable")?;
    let existing: Vec<String> = existing.table_names.unwrap_or_default();
    for table in &resources.tables {
        let name = format!("{prefix}{}", table.logical_id);
        if !existing.contains(&name) {
            let mut request = dynamodb
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest);
            for (attr, kind) in &table.attributes {
                request = request.attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(attr)
                        .attribute_type(ScalarAttributeType::from(kind.as_str()))
                        .build()?,
                );
            }
            for (attr, kind) in &table.key_schema {
                request = request.key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attr)
                        .key_type(KeyType::from(kind.as_str()))
                        .build()?,
                );
            }
            for index in &table.indexes {
                let projection = Projection::builder()
                    .projection_type(ProjectionType::from(index.projection.as_str()))
                    .set_non_key_attributes(
                        (!index.non_key_attributes.is_empty())
                            .then(|| index.non_key_attributes.clone()),
                    )
                    .build();
                let mut gsi = GlobalSecondaryIndex::builder()
                    .index_name(&index.name)
                    .projection(projection);
                for (attr, kind) in &index.keys {
                    gsi = gsi.key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(attr)
                            .key_type(KeyType::from(kind.as_str()))
                            .build()?,
                    );
                }
                request = request.global_secondary_indexes(gsi.build()?);
            }
            if let Err(e) = request.send().await {
                // Another process may have created it a moment ago.
                let in_use = e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception());
                if !in_use {
                    return Err(anyhow::Error::new(e).context(format!("creating table {name}")));
                }
            }
            if let Some(ttl) = &table.ttl_attribute {
                dynamodb
                    .update_time_to_live()
                    .table_name(&name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .attribute_name(ttl)
                            .enabled(true)
                            .build()?,
                    )
                    .send()
                    .await
                    .with_context(|| format!("TTL on {name}"))?;
            }
        }
        created.tables.insert(table.logical_id.clone(), name);
    }
    // Dead-letter queues first: the others point at them.
    let mut queues: Vec<_> = resources.queues.iter().collect();
    queues.sort_by_key(|q| q.dead_letter.is_some());
    for queue in queues {
        let name = format!(
            "{prefix}{}{}",
            queue.logical_id,
            if queue.fifo { ".fifo" } else { "" }
        );
        let mut request = sqs.create_queue().queue_name(&name);
        if queue.fifo {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        // Locally a failed message comes back after a few seconds, not a minute.
        let visibility = queue.visibility_timeout.map_or(5, |v| v.min(5));
        request = request.attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility.to_string(),
        );
        if let Some((dlq, max)) = &queue.dead_letter {
            let url = created
                .queues
                .get(dlq)
                .with_context(|| format!("dead-letter queue {dlq} missing"))?;
            let arn = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await?
                .attributes
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .context("dead-letter queue has no ARN")?;
            let policy =
                serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max.to_string()});
            request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let out = request
            .send()
            .await
            .with_context(|| format!("creating queue {name}"))?;
        created
            .queues
            .insert(queue.logical_id.clone(), out.queue_url.unwrap_or_default());
    }
    for bucket in &resources.buckets {
        let name = bucket_name(prefix, bucket);
        if s3.head_bucket().bucket(&name).send().await.is_err() {
            s3.create_bucket()
                .bucket(&name)
                .send()
                .await
                .with_context(|| format!("creating bucket {name}"))?;
        }
        created.buckets.insert(bucket.clone(), name);
    }
    Ok(created)
}

/// Empties every table, queue and bucket (the local `make reset`).
pub async fn empty(
    created: &Created,
    dynamodb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    s3: &aws_sdk_s3::Client,
) -> anyhow::Result<()> {
    for table in created.tables.values() {
        let mut start = None;
        loop {
            let page = dynamodb
                .scan()
                .table_name(table)
                .projection_expression("pk, sk")
                .set_exclusive_start_key(start)
                .send()
                .await?;
            let keys = page.items.unwrap_or_default();
            for chunk in keys.chunks(25) {
                let requests = chunk
                    .iter()
                    .map(|k| {
                        Ok(WriteRequest::builder()
                            .delete_request(
                                DeleteRequest::builder().set_key(Some(k.clone())).build()?,
                            )
                            .build())
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut pending = Some(HashMap::from([(table.clone(), requests)]));
                while let Some(items) = pending.filter(|p| p.values().any(|v| !v.is_empty())) {
                    let out = dynamodb
                        .batch_write_item()
                        .set_request_items(Some(items))
                        .send()
                        .await?;
                    pending = out.unprocessed_items;
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
    }
    // Drained message by message: `PurgeQueue` refuses a second purge within 60 s, so a
    // reset could not be repeated.
    for url in created.queues.values() {
        loop {
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .send()
                .await
                .with_context(|| format!("draining {url}"))?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for receipt in messages.into_iter().filter_map(|m| m.receipt_handle) {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .with_context(|| format!("draining {url}"))?;
            }
        }
    }
    for bucket in created.buckets.values() {
        let objects = s3.list_objects_v2().bucket(bucket).send().await?;
        for object in objects.contents.unwrap_or_default() {
            if let Some(key) = object.key {
                s3.delete_object().bucket(bucket).key(key).send().await?;
            }
        }
    }
    Ok(())
}
