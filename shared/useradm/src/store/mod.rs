//! What the useradm service needs from storage, as one small trait ([`Store`]), and the records
//! both implementations keep ([`User`], [`TokenRecord`], [`Settings`]). [`dynamo::DynamoStore`]
//! is the DynamoDB table (its access patterns are documented there); [`memory::MemoryStore`]
//! keeps the same records in maps, for unit tests of the service's rules.
//!
//! An e-mail belongs to one user across the installation; a user is replaced only if it is
//! still as it was read (`updated_ts`), settings only if their etag still matches the one the
//! caller names. A refused write is [`DynamoError::ConditionFailed`].

pub mod dynamo;
pub mod memory;

use std::future::Future;

use mender_aws::dynamo::DynamoError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use dynamo::DynamoStore;
pub use memory::MemoryStore;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub created_ts: String,
    pub updated_ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_ts: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub jti: String,
    pub user_id: String,
    /// Set for personal access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_ts: String,
    /// Unix seconds; absent = never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Settings {
    /// The JSON document, stored as text so any JSON survives unchanged.
    pub document: String,
    pub etag: String,
}

/// The settings document as a JSON object (empty when none is stored).
pub fn settings_object(settings: Option<&Settings>) -> Map<String, Value> {
    settings
        .and_then(|s| serde_json::from_str::<Map<String, Value>>(&s.document).ok())
        .unwrap_or_default()
}

/// useradm's storage: users by tenant and id with their e-mail guard, tokens (login sessions
/// and personal access tokens) by user, settings of a tenant or a user, and failed-login
/// counts by e-mail. Every future is `Send` (handlers run on a multi-threaded runtime).
pub trait Store: Send + Sync {
    /// Creates the user and claims its e-mail, all or nothing; `ConditionFailed` = e-mail
    /// taken.
    fn create_user(
        &self,
        tenant: &str,
        user: &User,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    fn get_user(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<User>, DynamoError>> + Send;

    /// Finds a user by e-mail (any tenant): `(tenant, user)`.
    fn find_by_email(
        &self,
        email: &str,
    ) -> impl Future<Output = Result<Option<(String, User)>, DynamoError>> + Send;

    /// The tenant's users, in id order.
    fn list_users(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<User>, DynamoError>> + Send;

    /// Replaces `old` by `new` if the stored user is still at `old.updated_ts`; when the
    /// e-mail changes its claim moves, all or nothing. `ConditionFailed` = the new e-mail is
    /// taken or the user changed concurrently (or is gone).
    fn update_user(
        &self,
        tenant: &str,
        old: &User,
        new: &User,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Records a login; `ConditionFailed` when the user is gone.
    fn set_login_ts(
        &self,
        tenant: &str,
        id: &str,
        ts: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Deletes the user, its e-mail claim, its tokens and settings.
    fn delete_user(
        &self,
        tenant: &str,
        user: &User,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Stores (or replaces) a token of `token.user_id`.
    fn put_token(
        &self,
        tenant: &str,
        token: &TokenRecord,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    fn get_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
    ) -> impl Future<Output = Result<Option<TokenRecord>, DynamoError>> + Send;

    /// The user's tokens, in `jti` order.
    fn list_tokens(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<Vec<TokenRecord>, DynamoError>> + Send;

    /// Deletes the token; nothing when there is none.
    fn delete_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Sets the token's `last_used`; nothing when the token is gone.
    fn touch_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
        ts: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Failed logins of `email` in throttle window `window`.
    fn failed_logins(
        &self,
        email: &str,
        window: i64,
    ) -> impl Future<Output = Result<u32, DynamoError>> + Send;

    /// One more failed login of `email` in `window` (atomic: instances share the count),
    /// forgotten after `expires_at`.
    fn add_failed_login(
        &self,
        email: &str,
        window: i64,
        expires_at: i64,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Settings of the tenant (`user_id` None) or of one user.
    fn get_settings(
        &self,
        tenant: &str,
        user_id: Option<&str>,
    ) -> impl Future<Output = Result<Option<Settings>, DynamoError>> + Send;

    /// Replaces the settings if the stored etag equals `if_match` (when given; no stored
    /// settings match no etag). `ConditionFailed` otherwise.
    fn put_settings(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        settings: &Settings,
        if_match: Option<&str>,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;
}
