//! An in-memory useradm [`Store`] for unit tests of the service's rules: the table's records in
//! maps, with the same conditions as the DynamoDB table: an e-mail belongs to one user, a user
//! is replaced only at the `updated_ts` it was read at, settings only when the named etag
//! matches, all or nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use mender_aws::dynamo::DynamoError;

use super::{Settings, Store, TokenRecord, User};

/// The useradm records, keyed like the table.
#[derive(Debug, Default)]
struct Records {
    /// (tenant, id) -> user.
    users: BTreeMap<(String, String), User>,
    /// e-mail -> (tenant, user id).
    emails: HashMap<String, (String, String)>,
    /// (tenant, user id, jti) -> token.
    tokens: BTreeMap<(String, String, String), TokenRecord>,
    /// (tenant, user id or none) -> settings.
    settings: HashMap<(String, Option<String>), Settings>,
    /// (e-mail, window) -> failures.
    failed_logins: HashMap<(String, i64), u32>,
}

/// The useradm records in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<Records>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        // A test that panicked while holding the lock leaves the records as they were.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn user_key(tenant: &str, id: &str) -> (String, String) {
    (tenant.to_owned(), id.to_owned())
}

fn token_key(tenant: &str, user_id: &str, jti: &str) -> (String, String, String) {
    (tenant.to_owned(), user_id.to_owned(), jti.to_owned())
}

fn settings_key(tenant: &str, user_id: Option<&str>) -> (String, Option<String>) {
    (tenant.to_owned(), user_id.map(str::to_owned))
}

impl Store for MemoryStore {
    async fn create_user(&self, tenant: &str, user: &User) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let key = user_key(tenant, &user.id);
        if records.emails.contains_key(&user.email) || records.users.contains_key(&key) {
            return Err(DynamoError::ConditionFailed);
        }
        records
            .emails
            .insert(user.email.clone(), (tenant.to_owned(), user.id.clone()));
        records.users.insert(key, user.clone());
        Ok(())
    }

    async fn get_user(&self, tenant: &str, id: &str) -> Result<Option<User>, DynamoError> {
        Ok(self.lock().users.get(&user_key(tenant, id)).cloned())
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<(String, User)>, DynamoError> {
        let records = self.lock();
        let Some((tenant, id)) = records.emails.get(email) else {
            return Ok(None);
        };
        Ok(records
            .users
            .get(&user_key(tenant, id))
            .map(|user| (tenant.clone(), user.clone())))
    }

    async fn list_users(&self, tenant: &str) -> Result<Vec<User>, DynamoError> {
        Ok(self
            .lock()
            .users
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, user)| user.clone())
            .collect())
    }

    async fn update_user(&self, tenant: &str, old: &User, new: &User) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let unchanged = records
            .users
            .get(&user_key(tenant, &new.id))
            .is_some_and(|stored| stored.updated_ts == old.updated_ts);
        let moves = old.email != new.email;
        if !unchanged || (moves && records.emails.contains_key(&new.email)) {
            return Err(DynamoError::ConditionFailed);
        }
        records.users.insert(user_key(tenant, &new.id), new.clone());
        if moves {
            records
                .emails
                .insert(new.email.clone(), (tenant.to_owned(), new.id.clone()));
            records.emails.remove(&old.email);
        }
        Ok(())
    }

    async fn set_login_ts(&self, tenant: &str, id: &str, ts: &str) -> Result<(), DynamoError> {
        match self.lock().users.get_mut(&user_key(tenant, id)) {
            Some(user) => {
                user.login_ts = Some(ts.to_owned());
                Ok(())
            }
            None => Err(DynamoError::ConditionFailed),
        }
    }

    async fn delete_user(&self, tenant: &str, user: &User) -> Result<(), DynamoError> {
        let mut records = self.lock();
        records
            .tokens
            .retain(|(t, u, _), _| !(t == tenant && *u == user.id));
        records
            .settings
            .remove(&settings_key(tenant, Some(&user.id)));
        records.emails.remove(&user.email);
        records.users.remove(&user_key(tenant, &user.id));
        Ok(())
    }

    async fn put_token(&self, tenant: &str, token: &TokenRecord) -> Result<(), DynamoError> {
        self.lock()
            .tokens
            .insert(token_key(tenant, &token.user_id, &token.jti), token.clone());
        Ok(())
    }

    async fn get_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
    ) -> Result<Option<TokenRecord>, DynamoError> {
        Ok(self
            .lock()
            .tokens
            .get(&token_key(tenant, user_id, jti))
            .cloned())
    }

    async fn list_tokens(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Vec<TokenRecord>, DynamoError> {
        Ok(self
            .lock()
            .tokens
            .iter()
            .filter(|((t, u, _), _)| t == tenant && u == user_id)
            .map(|(_, token)| token.clone())
            .collect())
    }

    async fn delete_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
    ) -> Result<(), DynamoError> {
        self.lock().tokens.remove(&token_key(tenant, user_id, jti));
        Ok(())
    }

    async fn touch_token(
        &self,
        tenant: &str,
        user_id: &str,
        jti: &str,
        ts: &str,
    ) -> Result<(), DynamoError> {
        if let Some(token) = self.lock().tokens.get_mut(&token_key(tenant, user_id, jti)) {
            token.last_used = Some(ts.to_owned());
        }
        Ok(())
    }

    async fn failed_logins(&self, email: &str, window: i64) -> Result<u32, DynamoError> {
        Ok(self
            .lock()
            .failed_logins
            .get(&(email.to_owned(), window))
            .copied()
            .unwrap_or(0))
    }

    async fn add_failed_login(
        &self,
        email: &str,
        window: i64,
        _expires_at: i64,
    ) -> Result<(), DynamoError> {
        *self
            .lock()
            .failed_logins
            .entry((email.to_owned(), window))
            .or_default() += 1;
        Ok(())
    }

    async fn get_settings(
        &self,
        tenant: &str,
        user_id: Option<&str>,
    ) -> Result<Option<Settings>, DynamoError> {
        Ok(self
            .lock()
            .settings
            .get(&settings_key(tenant, user_id))
            .cloned())
    }

    async fn put_settings(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        settings: &Settings,
        if_match: Option<&str>,
    ) -> Result<(), DynamoError> {
        let mut records = self.lock();
        let key = settings_key(tenant, user_id);
        if let Some(etag) = if_match {
            if records.settings.get(&key).is_none_or(|s| s.etag != etag) {
                return Err(DynamoError::ConditionFailed);
            }
        }
        records.settings.insert(key, settings.clone());
        Ok(())
    }
}
