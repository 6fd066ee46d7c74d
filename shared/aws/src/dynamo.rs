//! Small DynamoDB helpers: the `pk`/`sk` key of every table, item <-> struct conversion with
//! serde_dynamo, and classification of SDK errors (condition failures, cancelled transactions).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub type Item = HashMap<String, AttributeValue>;

/// Every table has a string partition key `pk` and sort key `sk`.
pub fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk.into())),
        ("sk".to_owned(), AttributeValue::S(sk.into())),
    ])
}

#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    /// A condition expression (or a transaction's condition) did not hold.
    #[error("condition failed")]
    ConditionFailed,
    #[error("dynamodb: {0}")]
    Other(String),
}

/// An item built from `value` plus its key.
pub fn to_item<T: Serialize>(
    pk: impl Into<String>,
    sk: impl Into<String>,
    value: &T,
) -> Result<Item, DynamoError> {
    let mut item: Item =
        serde_dynamo::to_item(value).map_err(|e| DynamoError::Other(e.to_string()))?;
    item.extend(key(pk, sk));
    Ok(item)
}

pub fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, DynamoError> {
    serde_dynamo::from_item(item).map_err(|e| DynamoError::Other(e.to_string()))
}

pub fn to_value<T: Serialize>(value: &T) -> Result<AttributeValue, DynamoError> {
    serde_dynamo::to_attribute_value(value).map_err(|e| DynamoError::Other(e.to_string()))
}

/// Maps an SDK error: a failed condition (single write or any in a transaction) becomes
/// [`DynamoError::ConditionFailed`], everything else [`DynamoError::Other`].
pub fn classify<E, R>(err: SdkError<E, R>) -> DynamoError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = err.as_service_error() {
        let code = service.code().unwrap_or_default();
        if code == "ConditionalCheckFailedException" {
            return DynamoError::ConditionFailed;
        }
        if code == "TransactionCanceledException" {
            let message = service.message().unwrap_or_default();
            if message.contains("ConditionalCheckFailed") {
                return DynamoError::ConditionFailed;
            }
            return DynamoError::Other(format!("transaction cancelled: {message}"));
        }
        return DynamoError::Other(format!("{code}: {}", service.message().unwrap_or_default()));
    }
    DynamoError::Other(format!(
        "{}",
        aws_sdk_dynamodb::error::DisplayErrorContext(&err)
    ))
}

/// One table and the client to reach it, with the operations every store uses.
#[derive(Clone, Debug)]
pub struct Table {
    pub client: aws_sdk_dynamodb::Client,
    pub name: String,
}

impl Table {
    pub fn new(client: aws_sdk_dynamodb::Client, name: impl Into<String>) -> Self {
        Table {
            client,
            name: name.into(),
        }
    }

    /// Strongly consistent read of one item.
    pub async fn get(&self, key: Item) -> Result<Option<Item>, DynamoError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item)
    }

    pub async fn get_as<T: DeserializeOwned>(&self, key: Item) -> Result<Option<T>, DynamoError> {
        self.get(key).await?.map(from_item).transpose()
    }

    /// Unconditional write of a whole item.
    pub async fn put(&self, item: Item) -> Result<(), DynamoError> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Writes `items` in one transaction; a failed condition in any of them is
    /// [`DynamoError::ConditionFailed`].
    pub async fn transact(
        &self,
        items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    ) -> Result<(), DynamoError> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub async fn delete(&self, key: Item) -> Result<(), DynamoError> {
        self.client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// All items of partition `pk` whose sort key starts with `prefix` (every page; `""`: all).
    pub async fn query_prefix(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, DynamoError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            // DynamoDB refuses an empty string value: no prefix is the whole partition.
            let query = if prefix.is_empty() {
                self.client.query().key_condition_expression("pk = :pk")
            } else {
                self.client
                    .query()
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()))
            };
            let out = query
                .table_name(&self.name)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    pub async fn query_prefix_as<T: DeserializeOwned>(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<T>, DynamoError> {
        self.query_prefix(pk, prefix)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }
}

/// Text of a string attribute, empty when absent or not a string.
pub fn text(item: &Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Maps a builder error (a missing required field: a programming error) to [`DynamoError`].
pub fn built<T>(result: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, DynamoError> {
    result.map_err(|e| DynamoError::Other(e.to_string()))
}

/// Waits before retrying a conditional write that lost a race: jittered, growing with the
/// attempt, capped at 50 ms, so many concurrent writers of one item all get through.
pub async fn backoff(attempt: usize) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 10;
    let millis = (2u64.saturating_pow(attempt.min(5) as u32) + jitter).min(50);
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}
