//! The inventory table. Access patterns:
//!
//! | item | pk | sk | used by |
//! |---|---|---|---|
//! | device with all its attributes | `T#{tenant}` | `DEV#{id}` | get, writes (conditional on `version`); lists, groups and filters query the `DEV#` prefix and evaluate in the function |
//!
//! Limits: lists read the whole tenant partition (fine for the open-source scale; the search
//! index of a later issue replaces the query without changing the item).

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use mender_aws::dynamo::{classify, key, to_item, DynamoError, Table};

use crate::model::InventoryDevice;

fn tenant_pk(tenant: &str) -> String {
    format!("T#{tenant}")
}
fn device_sk(id: &str) -> String {
    format!("DEV#{id}")
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

    pub async fn get(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<InventoryDevice>, DynamoError> {
        self.table
            .get_as(key(tenant_pk(tenant), device_sk(id)))
            .await
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<InventoryDevice>, DynamoError> {
        self.table.query_prefix_as(&tenant_pk(tenant), "DEV#").await
    }

    /// Stores `device` if it is still at the version it was read at (`None` = did not exist).
    pub async fn put(
        &self,
        tenant: &str,
        device: &mut InventoryDevice,
        read_version: Option<i64>,
    ) -> Result<(), DynamoError> {
        device.version = read_version.map_or(1, |v| v + 1);
        let item = to_item(tenant_pk(tenant), device_sk(&device.id), device)?;
        let put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(item));
        let put = match read_version {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => put
                .condition_expression("#version = :v")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
        };
        put.send().await.map_err(classify)?;
        Ok(())
    }

    pub async fn delete(&self, tenant: &str, id: &str) -> Result<(), DynamoError> {
        self.table
            .delete(key(tenant_pk(tenant), device_sk(id)))
            .await
    }
}
