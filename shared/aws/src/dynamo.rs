//! Small DynamoDB helpers: the `pk`/`sk` key of every table, item <-> struct conversion with
//! serde_dynamo, classification of SDK errors (condition failures, cancelled transactions,
//! transaction conflicts), batched reads, and a process-wide meter of consumed read units
//! (every read here asks for `ReturnConsumedCapacity`; the benchmarks print the meter).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnConsumedCapacity};
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
    /// Another transaction touched one of the items at the same time: retry.
    #[error("transaction conflict")]
    Conflict,
    /// A failure described by a message alone (no underlying error to keep).
    #[error("dynamodb: {0}")]
    Other(String),
    /// A failure of the SDK, a request builder or serde_dynamo: `message` says what it was,
    /// `source` keeps the original error (its chain) for logs.
    #[error("dynamodb: {message}")]
    Source {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DynamoError {
    /// A failure caused by `source`, displayed as `message`.
    pub fn source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DynamoError::Source {
            message: message.into(),
            source: source.into(),
        }
    }

    /// A failure caused by `source`, displayed as the source's own text.
    pub fn wrap(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        let message = source.to_string();
        DynamoError::source(message, source)
    }
}

impl From<serde_dynamo::Error> for DynamoError {
    fn from(e: serde_dynamo::Error) -> Self {
        DynamoError::wrap(e)
    }
}

/// An item built from `value` plus its key.
pub fn to_item<T: Serialize>(
    pk: impl Into<String>,
    sk: impl Into<String>,
    value: &T,
) -> Result<Item, DynamoError> {
    let mut item: Item = serde_dynamo::to_item(value)?;
    item.extend(key(pk, sk));
    Ok(item)
}

pub fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, DynamoError> {
    Ok(serde_dynamo::from_item(item)?)
}

pub fn to_value<T: Serialize>(value: &T) -> Result<AttributeValue, DynamoError> {
    Ok(serde_dynamo::to_attribute_value(value)?)
}

/// Maps an SDK error: a failed condition (single write or any in a transaction) becomes
/// [`DynamoError::ConditionFailed`], a transaction conflict [`DynamoError::Conflict`],
/// everything else [`DynamoError::Source`] keeping the SDK error as its source.
pub fn classify<E, R>(err: SdkError<E, R>) -> DynamoError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(service) = err.as_service_error() {
        let code = service.code().unwrap_or_default();
        if code == "ConditionalCheckFailedException" {
            return DynamoError::ConditionFailed;
        }
        if code == "TransactionConflictException" {
            return DynamoError::Conflict;
        }
        if code == "TransactionCanceledException" {
            let message = service.message().unwrap_or_default();
            if message.contains("ConditionalCheckFailed") {
                return DynamoError::ConditionFailed;
            }
            if message.contains("TransactionConflict") {
                return DynamoError::Conflict;
            }
            let message = format!("transaction cancelled: {message}");
            return DynamoError::source(message, err);
        }
        let message = format!("{code}: {}", service.message().unwrap_or_default());
        return DynamoError::source(message, err);
    }
    let message = aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string();
    DynamoError::source(message, err)
}

/// Read capacity units consumed by this process, in thousandths.
static READ_MILLIUNITS: AtomicU64 = AtomicU64::new(0);

/// Adds what a read reported (`ConsumedCapacity`) to the meter.
pub fn meter(consumed: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) {
    if let Some(units) = consumed.and_then(|c| c.capacity_units()) {
        READ_MILLIUNITS.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }
}

/// Read capacity units consumed by this process so far (benchmarks take differences).
pub fn read_units() -> f64 {
    READ_MILLIUNITS.load(Ordering::Relaxed) as f64 / 1000.0
}

/// Shards of a tenant's counters (and of indexes read in parallel): spreads the writes of many
/// devices changing at once over several items.
pub const SHARDS: u32 = 16;

/// The shard (0..[`SHARDS`]) of an id: FNV-1a of its bytes.
pub fn shard_of(id: &str) -> u32 {
    let hash = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % SHARDS
}

/// At most this many keys per `BatchGetItem` (DynamoDB's limit).
const BATCH_GET_KEYS: usize = 100;

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
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(classify)?;
        meter(out.consumed_capacity());
        Ok(out.item)
    }

    /// A transaction item adding each `(attribute, delta)` to the numbers of the item at
    /// `key` (created when missing): how counters move with the write they count.
    pub fn add_to_counters(
        &self,
        key: Item,
        changes: &[(String, i64)],
    ) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, DynamoError> {
        let mut update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.name)
            .set_key(Some(key));
        let mut parts = Vec::new();
        for (i, (attr, delta)) in changes.iter().enumerate() {
            parts.push(format!("#c{i} :c{i}"));
            update = update
                .expression_attribute_names(format!("#c{i}"), attr)
                .expression_attribute_values(
                    format!(":c{i}"),
                    AttributeValue::N(delta.to_string()),
                );
        }
        let update = built(
            update
                .update_expression(format!("ADD {}", parts.join(", ")))
                .build(),
        )?;
        Ok(aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .update(update)
            .build())
    }

    /// Strongly consistent reads of `keys` (any number; batches of 100, in parallel), with an
    /// optional projection (`ProjectionExpression`, its `#names`). Missing items are left out;
    /// the order is not the order of `keys`.
    pub async fn batch_get(
        &self,
        keys: Vec<Item>,
        projection: Option<(&str, &HashMap<String, String>)>,
    ) -> Result<Vec<Item>, DynamoError> {
        let batches = keys.chunks(BATCH_GET_KEYS).map(|chunk| async move {
            let mut found = Vec::new();
            let mut pending = chunk.to_vec();
            for attempt in 0..32 {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    backoff(attempt).await;
                }
                let mut request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true);
                if let Some((expression, names)) = projection {
                    request = request
                        .projection_expression(expression)
                        .set_expression_attribute_names((!names.is_empty()).then(|| names.clone()));
                }
                let request = built(request.build())?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.name, request)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(classify)?;
                for consumed in out.consumed_capacity() {
                    meter(Some(consumed));
                }
                if let Some(mut responses) = out.responses {
                    found.extend(responses.remove(&self.name).unwrap_or_default());
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.name))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
            if pending.is_empty() {
                Ok(found)
            } else {
                Err(DynamoError::Other(
                    "batch get: keys left unprocessed".into(),
                ))
            }
        });
        let results = futures::future::try_join_all(batches).await?;
        Ok(results.into_iter().flatten().collect())
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

    /// Writes `item` only if no item has its key: [`DynamoError::ConditionFailed`] otherwise.
    pub async fn put_new(&self, item: Item) -> Result<(), DynamoError> {
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
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
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(classify)?;
            meter(out.consumed_capacity());
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// The first `limit` items of index `index` whose hash key `attr` is `value`, in range key
    /// order (reversed with `descending`), as the index holds them (keys only: the keys).
    pub async fn query_index(
        &self,
        index: &str,
        attr: &str,
        value: &str,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<Item>, DynamoError> {
        let mut items = Vec::new();
        let mut start = None;
        while items.len() < limit {
            let page_limit = i32::try_from((limit - items.len()).min(1000)).unwrap_or(1000);
            let out = self
                .client
                .query()
                .table_name(&self.name)
                .index_name(index)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", attr)
                .expression_attribute_values(":k", AttributeValue::S(value.to_owned()))
                .scan_index_forward(!descending)
                .limit(page_limit)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(classify)?;
            meter(out.consumed_capacity());
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(items)
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
    result.map_err(DynamoError::wrap)
}

/// Waits before retrying a conditional write that lost a race: jittered, growing with the
/// attempt, capped at 50 ms, so many concurrent writers of one item all get through.
pub async fn backoff(attempt: usize) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 10;
    let millis = (2u64.saturating_pow(attempt.min(5) as u32) + jitter).min(50);
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}
