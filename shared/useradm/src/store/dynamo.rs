//! The DynamoDB implementation of the useradm [`Store`]. Access patterns (all keys start with
//! the tenant):
//!
//! | item | pk | sk | used by |
//! |---|---|---|---|
//! | user | `T#{tenant}` | `USER#{id}` | get, list (query `USER#` prefix) |
//! | e-mail guard | `EMAIL#{email}` | `EMAIL` | unique e-mail across the installation, login lookup |
//! | token (login or PAT) | `T#{tenant}#USER#{id}` | `TOKEN#{jti}` | verify (one GetItem), list/delete a user's tokens |
//! | settings | `T#{tenant}` or `T#{tenant}#USER#{id}` | `SETTINGS` | global / per-user settings with etag |
//! | failed logins | `LOGIN#{email}` | `WINDOW#{n}` | login throttle: `failures` in window `n` |
//!
//! Expired tokens and failed-login counts carry `expires_at` (the table's TTL attribute).

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use mender_aws::dynamo::{built, classify, key, text, to_item, DynamoError, Table};

use super::{Settings, Store, TokenRecord, User};

fn tenant_pk(tenant: &str) -> String {
    format!("T#{tenant}")
}
fn user_pk(tenant: &str, user_id: &str) -> String {
    format!("T#{tenant}#USER#{user_id}")
}
fn email_pk(email: &str) -> String {
    format!("EMAIL#{email}")
}

/// The useradm table.
#[derive(Clone)]
pub struct DynamoStore {
    table: Table,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            table: Table::new(client, table),
        }
    }
}

impl Store for DynamoStore {
    /// Creates the user and claims its e-mail in one transaction; `ConditionFailed` = e-mail taken.
    async fn create_user(&self, tenant: &str, user: &User) -> Result<(), DynamoError> {
        let mut guard = key(email_pk(&user.email), "EMAIL");
        guard.insert("user_id".into(), AttributeValue::S(user.id.clone()));
        guard.insert("tenant".into(), AttributeValue::S(tenant.to_owned()));
        let guard = Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(guard))
            .condition_expression("attribute_not_exists(pk)")
            .build();
        let guard = built(guard)?;
        let item = Put::builder()
            .table_name(&self.table.name)
            .set_item(Some(to_item(
                tenant_pk(tenant),
                format!("USER#{}", user.id),
                user,
            )?))
            .condition_expression("attribute_not_exists(pk)")
            .build();
        let item = built(item)?;
        self.table
            .transact(vec![
                TransactWriteItem::builder().put(guard).build(),
                TransactWriteItem::builder().put(item).build(),
            ])
            .await?;
        Ok(())
    }

    async fn get_user(&self, tenant: &str, id: &str) -> Result<Option<User>, DynamoError> {
        self.table
            .get_as(key(tenant_pk(tenant), format!("USER#{id}")))
            .await
    }

    /// Finds a user by e-mail through the guard item: `(tenant, user)`.
    async fn find_by_email(&self, email: &str) -> Result<Option<(String, User)>, DynamoError> {
        let Some(item) = self.table.get(key(email_pk(email), "EMAIL")).await? else {
            return Ok(None);
        };
        let (tenant, user_id) = (text(&item, "tenant"), text(&item, "user_id"));
        Ok(self.get_user(&tenant, &user_id).await?.map(|u| (tenant, u)))
    }

    async fn list_users(&self, tenant: &str) -> Result<Vec<User>, DynamoError> {
        self.table
            .query_prefix_as(&tenant_pk(tenant), "USER#")
            .await
    }

    /// Replaces the user; when the e-mail changes the guard moves in the same transaction.
    /// `ConditionFailed` = the new e-mail is taken or the user changed concurrently.
    async fn update_user(&self, tenant: &str, old: &User, new: &User) -> Result<(), DynamoError> {
        let mut items = vec![TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table.name)
                    .set_item(Some(to_item(
                        tenant_pk(tenant),
                        format!("USER#{}", new.id),
                        new,
                    )?))
                    .condition_expression("updated_ts = :old")
                    .expression_attribute_values(":old", AttributeValue::S(old.updated_ts.clone()))
                    .build()
                    .map_err(DynamoError::wrap)?,
            )
            .build()];
        if old.email != new.email {
            let mut guard = key(email_pk(&new.email), "EMAIL");
            guard.insert("user_id".into(), AttributeValue::S(new.id.clone()));
            guard.insert("tenant".into(), AttributeValue::S(tenant.to_owned()));
            items.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table.name)
                            .set_item(Some(guard))
                            .condition_expression("attribute_not_exists(pk)")
                            .build()
                            .map_err(DynamoError::wrap)?,
                    )
                    .build(),
            );
            items.push(
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table.name)
                            .set_key(Some(key(email_pk(&old.email), "EMAIL")))
                            .build()
                            .map_err(DynamoError::wrap)?,
                    )
                    .build(),
            );
        }
        self.table.transact(items).await?;
        Ok(())
    }

    async fn set_login_ts(&self, tenant: &str, id: &str, ts: &str) -> Result<(), DynamoError> {
        let update = Update::builder()
            .table_name(&self.table.name)
            .set_key(Some(key(tenant_pk(tenant), format!("USER#{id}"))))
            .update_expression("SET login_ts = :ts")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":ts", AttributeValue::S(ts.to_owned()))
            .build();
        let update = built(update)?;
        self.table
            .transact(vec![TransactWriteItem::builder().update(update).build()])
            .await?;
        Ok(())
    }

    /// Deletes the user, its e-mail guard, its tokens and settings.
    async fn delete_user(&self, tenant: &str, user: &User) -> Result<(), DynamoError> {
        for token in self.list_tokens(tenant, &user.id).await? {
            self.delete_token(tenant, &user.id, &token.jti).await?;
        }
        self.table
            .delete(key(user_pk(tenant, &user.id), "SETTINGS"))
            .await?;
        self.table
            .delete(key(email_pk(&user.email), "EMAIL"))
            .await?;
        self.table
            .delete(key(tenant_pk(tenant), format!("USER#{}", user.id)))
            .await
    }

    async fn put_token(&self, tenant: &str, token: &TokenRecord) -> Result<(), DynamoError> {
        self.table
            .put(to_item(
                user_pk(tenant, &token.user_id),
                format!("TOKEN#{}", token.jti),
                token,
            )?)
            .await?;
        Ok(())
    }

    async fn get_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
    ) -> Result<Option<TokenRecord>, DynamoError> {
        self.table
            .get_as(key(user_pk(tenant, user_id), format!("TOKEN#{jti}")))
            .await
    }

    async fn list_tokens(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<TokenRecord>, DynamoError> {
        self.table
            .query_prefix_as(&user_pk(tenant, user_id), "TOKEN#")
            .await
    }

    async fn delete_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
    ) -> Result<(), DynamoError> {
        self.table
            .delete(key(user_pk(tenant, user_id), format!("TOKEN#{jti}")))
            .await
    }

    async fn touch_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
        ts: &str,
    ) -> Result<(), DynamoError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(user_pk(tenant, user_id), format!("TOKEN#{jti}"))))
            .update_expression("SET last_used = :ts")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":ts", AttributeValue::S(ts.to_owned()))
            .send()
            .await
            .map_err(classify)
            .map(|_| ())
            .or_else(|e| match e {
                DynamoError::ConditionFailed => Ok(()),
                other => Err(other),
            })
    }

    /// Failed logins of `email` in throttle window `window`.
    async fn failed_logins(&self, email: &str, window: i64) -> Result<u32, DynamoError> {
        let item = self
            .table
            .get(key(format!("LOGIN#{email}"), format!("WINDOW#{window}")))
            .await?;
        Ok(item
            .as_ref()
            .and_then(|i| i.get("failures"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    /// One more failed login of `email` in `window` (an atomic add: instances share the count).
    async fn add_failed_login(
        &self,
        email: &str,
        window: i64,
        expires_at: i64,
    ) -> Result<(), DynamoError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
            .set_key(Some(key(
                format!("LOGIN#{email}"),
                format!("WINDOW#{window}"),
            )))
            .update_expression("ADD failures :one SET expires_at = :exp")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":exp", AttributeValue::N(expires_at.to_string()))
            .send()
            .await
            .map_err(classify)
            .map(|_| ())
    }

    /// Settings of the tenant (`user_id` None) or of one user.
    async fn get_settings(
        &self,
        tenant: &str,
        user_id: Option<&str>,
    ) -> Result<Option<Settings>, DynamoError> {
        self.table
            .get_as(key(settings_pk(tenant, user_id), "SETTINGS"))
            .await
    }

    /// Replaces the settings if the stored etag equals `if_match` (when given).
    async fn put_settings(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        settings: &Settings,
        if_match: Option<&str>,
    ) -> Result<(), DynamoError> {
        let mut put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .set_item(Some(to_item(
                settings_pk(tenant, user_id),
                "SETTINGS",
                settings,
            )?));
        if let Some(etag) = if_match {
            put = put
                .condition_expression("etag = :etag")
                .expression_attribute_values(":etag", AttributeValue::S(etag.to_owned()));
        }
        put.send().await.map_err(classify)?;
        Ok(())
    }
}

fn settings_pk(tenant: &str, user_id: Option<&str>) -> String {
    match user_id {
        Some(id) => user_pk(tenant, id),
        None => tenant_pk(tenant),
    }
}
