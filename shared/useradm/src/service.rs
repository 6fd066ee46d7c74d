//! useradm operations: user accounts, login/logout, personal access tokens, settings, and the
//! revocation check used by every management endpoint. Errors are one enum mapped once to HTTP.

use async_trait::async_trait;
use mender_aws::dynamo::DynamoError;
use mender_http::{ApiError, UserTokenCheck};
use mender_tokens::{Keys, UserClaims};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rules::{self, Invalid};
use crate::store::{settings_object, Settings, Store, TokenRecord, User};

/// Refresh a PAT's `last_used` at most this often.
const LAST_USED_REFRESH_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins of one e-mail (429).
    #[error("{0}")]
    TooManyRequests(String),
    #[error("storage: {0}")]
    Storage(#[from] DynamoError),
    #[error("{0}")]
    Internal(String),
}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        match invalid {
            Invalid::Bad(m) => Error::BadRequest(m),
            Invalid::Refused(m) => Error::Unprocessable(m),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::Unprocessable(m) => ApiError::unprocessable(m),
            Error::Unauthorized(m) => ApiError::unauthorized(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::PreconditionFailed(m) => ApiError::new(axum_status_412(), m),
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::TooManyRequests(m) => {
                ApiError::new(mender_http::error::StatusCode::TOO_MANY_REQUESTS, m)
            }
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
        }
    }
}

fn axum_status_412() -> mender_http::error::StatusCode {
    mender_http::error::StatusCode::PRECONDITION_FAILED
}

/// A user as the API shows it (no password hash).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub created_ts: String,
    pub updated_ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_ts: Option<String>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            email: u.email,
            created_ts: u.created_ts,
            updated_ts: u.updated_ts,
            login_ts: u.login_ts,
        }
    }
}

/// `PUT /users/{id}` body.
#[derive(Debug, Default, Deserialize)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub password: Option<String>,
    pub current_password: Option<String>,
}

/// Filters of the users list (all optional; timestamps are Unix seconds, strict inequalities).
#[derive(Debug, Default)]
pub struct UserFilter {
    pub ids: Vec<String>,
    pub emails: Vec<String>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    pub updated_after: Option<i64>,
    pub updated_before: Option<i64>,
}

#[derive(Clone)]
pub struct Useradm {
    pub store: Store,
    pub keys: Keys,
    pub token_lifetime_secs: i64,
    pub bcrypt_cost: u32,
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    mender_http::time::format(t)
}

async fn hash_password(password: String, cost: u32) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::Internal(e.to_string()))
}

/// bcrypt reads at most this many bytes of a password; longer ones are refused (see
/// [`rules::password`]), never silently truncated.
const BCRYPT_MAX_PASSWORD: usize = 72;

async fn password_matches(password: String, hash: String) -> bool {
    // up to 72 bytes bcrypt reads every byte (the crate's non-truncating mode stops at 71)
    if password.len() > BCRYPT_MAX_PASSWORD {
        return false;
    }
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .unwrap_or(false)
}

/// Failed logins of one e-mail allowed per [`LOGIN_WINDOW_SECS`]; more answer 429 until the
/// window ends, on every instance (the count is in the table).
pub const LOGIN_FAILURES_ALLOWED: u32 = 10;
pub const LOGIN_WINDOW_SECS: i64 = 900;

/// A hash at `cost` of a password nobody has: an unknown e-mail is checked against it, so that
/// it takes as long as a wrong password (no account probing by timing).
async fn decoy_hash(cost: u32) -> Result<String, Error> {
    static DECOYS: std::sync::Mutex<Vec<(u32, String)>> = std::sync::Mutex::new(Vec::new());
    let cached = DECOYS
        .lock()
        .ok()
        .and_then(|d| d.iter().find(|(c, _)| *c == cost).map(|(_, h)| h.clone()));
    if let Some(hash) = cached {
        return Ok(hash);
    }
    let hash = hash_password(uuid::Uuid::new_v4().to_string(), cost).await?;
    if let Ok(mut decoys) = DECOYS.lock() {
        decoys.push((cost, hash.clone()));
    }
    Ok(hash)
}

impl Useradm {
    pub async fn create_user(
        &self,
        tenant: &str,
        email: &str,
        password: &str,
    ) -> Result<User, Error> {
        let email = rules::email(email)?;
        rules::password(password, &email)?;
        let now = ts(now());
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            email,
            password_hash: hash_password(password.to_owned(), self.bcrypt_cost).await?,
            created_ts: now.clone(),
            updated_ts: now,
            login_ts: None,
        };
        match self.store.create_user(tenant, &user).await {
            Ok(()) => Ok(user),
            Err(DynamoError::ConditionFailed) => Err(Error::Unprocessable(
                "user with a given email already exists".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the user unless one with this e-mail exists (first admin, `create-user` CLI).
    /// Returns whether a user was created.
    pub async fn ensure_user(
        &self,
        tenant: &str,
        email: &str,
        password: &str,
    ) -> Result<bool, Error> {
        let email_lc = rules::email(email)?;
        if self.store.find_by_email(&email_lc).await?.is_some() {
            return Ok(false);
        }
        match self.create_user(tenant, &email_lc, password).await {
            Ok(_) => Ok(true),
            Err(Error::Unprocessable(m)) if m.contains("already exists") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// HTTP Basic login: a new session token, the oldest sessions beyond the cap dropped.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        no_expiry: bool,
    ) -> Result<String, Error> {
        let unauthorized = || Error::Unauthorized("unauthorized".into());
        let email = email.trim().to_ascii_lowercase();
        let window = now().timestamp().div_euclid(LOGIN_WINDOW_SECS);
        if self.store.failed_logins(&email, window).await? >= LOGIN_FAILURES_ALLOWED {
            return Err(Error::TooManyRequests(
                "too many failed login attempts, try again later".into(),
            ));
        }
        let found = self.store.find_by_email(&email).await?;
        // an unknown e-mail costs one bcrypt check too
        let hash = match &found {
            Some((_, user)) => user.password_hash.clone(),
            None => decoy_hash(self.bcrypt_cost).await?,
        };
        let matches = password_matches(password.to_owned(), hash).await;
        let Some((tenant, user)) = found.filter(|_| matches) else {
            let expires_at = (window + 2) * LOGIN_WINDOW_SECS;
            self.store
                .add_failed_login(&email, window, expires_at)
                .await?;
            return Err(unauthorized());
        };
        let lifetime = (!no_expiry).then_some(self.token_lifetime_secs);
        let token = self.issue(&tenant, &user.id, lifetime, None).await?;
        self.store
            .set_login_ts(&tenant, &user.id, &ts(now()))
            .await?;
        let mut sessions: Vec<TokenRecord> = self
            .store
            .list_tokens(&tenant, &user.id)
            .await?
            .into_iter()
            .filter(|t| t.name.is_none())
            .collect();
        if sessions.len() > rules::MAX_SESSIONS_PER_USER {
            sessions.sort_by(|a, b| b.created_ts.cmp(&a.created_ts));
            for old in &sessions[rules::MAX_SESSIONS_PER_USER..] {
                self.store.delete_token(&tenant, &user.id, &old.jti).await?;
            }
        }
        Ok(token)
    }

    async fn issue(
        &self,
        tenant: &str,
        user_id: &str,
        lifetime: Option<i64>,
        name: Option<String>,
    ) -> Result<String, Error> {
        let now = now();
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = UserClaims::new(&jti, user_id, tenant, now.timestamp(), lifetime);
        let token = self
            .keys
            .issue(&claims)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let record = TokenRecord {
            jti,
            user_id: user_id.to_owned(),
            name,
            created_ts: ts(now),
            expires_at: claims.exp,
            last_used: None,
        };
        self.store.put_token(tenant, &record).await?;
        Ok(token)
    }

    pub async fn logout(&self, claims: &UserClaims) -> Result<(), Error> {
        Ok(self
            .store
            .delete_token(&claims.tenant, &claims.sub, &claims.jti)
            .await?)
    }

    pub async fn list_users(
        &self,
        tenant: &str,
        filter: &UserFilter,
    ) -> Result<Vec<UserView>, Error> {
        // Upstream compares the full stored time with the bound (`$gt`/`$lt` on a date), so
        // a user created at 10.5 s is "created after 10".
        let micros = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_micros())
                .unwrap_or(0)
        };
        let bound = |t: i64| t.saturating_mul(1_000_000);
        let emails: Vec<String> = filter
            .emails
            .iter()
            .map(|e| e.to_ascii_lowercase())
            .collect();
        let mut users: Vec<User> = self
            .store
            .list_users(tenant)
            .await?
            .into_iter()
            .filter(|u| filter.ids.is_empty() || filter.ids.contains(&u.id))
            .filter(|u| emails.is_empty() || emails.contains(&u.email))
            .filter(|u| {
                filter
                    .created_after
                    .is_none_or(|t| micros(&u.created_ts) > bound(t))
            })
            .filter(|u| {
                filter
                    .created_before
                    .is_none_or(|t| micros(&u.created_ts) < bound(t))
            })
            .filter(|u| {
                filter
                    .updated_after
                    .is_none_or(|t| micros(&u.updated_ts) > bound(t))
            })
            .filter(|u| {
                filter
                    .updated_before
                    .is_none_or(|t| micros(&u.updated_ts) < bound(t))
            })
            .collect();
        users.sort_by(|a, b| a.created_ts.cmp(&b.created_ts).then(a.id.cmp(&b.id)));
        Ok(users.into_iter().map(UserView::from).collect())
    }

    pub async fn get_user(&self, tenant: &str, id: &str) -> Result<UserView, Error> {
        self.store
            .get_user(tenant, id)
            .await?
            .map(UserView::from)
            .ok_or_else(|| Error::NotFound("user not found".into()))
    }

    /// Updates e-mail and/or password with upstream's rules; on success every token of the
    /// target user except the caller's current one is revoked.
    pub async fn update_user(
        &self,
        caller: &UserClaims,
        id: &str,
        update: UserUpdate,
    ) -> Result<(), Error> {
        let tenant = caller.tenant.as_str();
        if update.email.is_none() && update.password.is_none() {
            return Err(Error::BadRequest("no update information provided".into()));
        }
        let own = id == caller.sub;
        let old = self
            .store
            .get_user(tenant, id)
            .await?
            .ok_or_else(|| Error::NotFound("user not found".into()))?;
        let mut new = old.clone();
        if let Some(email) = &update.email {
            new.email = rules::email(email)?;
        }
        let email_changes = new.email != old.email;
        if update.password.is_some() && !own {
            return Err(Error::Unprocessable("password cannot be modified".into()));
        }
        if own && (update.password.is_some() || email_changes) {
            let current = update.current_password.clone().unwrap_or_default();
            if !password_matches(current, old.password_hash.clone()).await {
                return Err(Error::Unprocessable("current password mismatch".into()));
            }
        }
        if let Some(password) = &update.password {
            rules::password(password, &new.email)?;
            new.password_hash = hash_password(password.clone(), self.bcrypt_cost).await?;
        }
        new.updated_ts = ts(now());
        if new.updated_ts == old.updated_ts {
            new.updated_ts = ts(now() + chrono::Duration::milliseconds(1));
        }
        match self.store.update_user(tenant, &old, &new).await {
            Ok(()) => {}
            Err(DynamoError::ConditionFailed) => {
                return Err(Error::Unprocessable(
                    "user with a given email already exists".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        for token in self.store.list_tokens(tenant, id).await? {
            if token.jti != caller.jti {
                self.store.delete_token(tenant, id, &token.jti).await?;
            }
        }
        Ok(())
    }

    pub async fn delete_user(&self, tenant: &str, id: &str) -> Result<(), Error> {
        if let Some(user) = self.store.get_user(tenant, id).await? {
            self.store.delete_user(tenant, &user).await?;
        }
        Ok(())
    }

    pub async fn get_settings(
        &self,
        tenant: &str,
        user_id: Option<&str>,
    ) -> Result<(Map<String, Value>, Option<String>), Error> {
        let stored = self.store.get_settings(tenant, user_id).await?;
        let etag = stored
            .as_ref()
            .map(|s| s.etag.clone())
            .filter(|e| !e.is_empty());
        Ok((settings_object(stored.as_ref()), etag))
    }

    pub async fn put_settings(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        document: Map<String, Value>,
        if_match: Option<&str>,
    ) -> Result<(), Error> {
        rules::settings(&document)?;
        let settings = Settings {
            document: Value::Object(document).to_string(),
            etag: uuid::Uuid::new_v4().to_string(),
        };
        match self
            .store
            .put_settings(tenant, user_id, &settings, if_match)
            .await
        {
            Err(DynamoError::ConditionFailed) => {
                Err(Error::PreconditionFailed("ETag doesn't match".into()))
            }
            other => Ok(other?),
        }
    }

    /// New personal access token for the caller (at most 10, names unique per user).
    pub async fn create_pat(
        &self,
        caller: &UserClaims,
        name: &str,
        expires_in: i64,
    ) -> Result<String, Error> {
        rules::personal_access_token(name, expires_in)?;
        // a personal access token cannot mint more of them (a leaked one would outlive its
        // own expiry and revocation through tokens it made)
        let caller_token = self
            .store
            .get_token(&caller.tenant, &caller.sub, &caller.jti)
            .await?;
        if caller_token.is_none_or(|t| t.name.is_some()) {
            return Err(Error::Forbidden(
                "personal access tokens cannot create personal access tokens: log in".into(),
            ));
        }
        let existing: Vec<TokenRecord> = self
            .store
            .list_tokens(&caller.tenant, &caller.sub)
            .await?
            .into_iter()
            .filter(|t| t.name.is_some())
            .collect();
        if existing.iter().any(|t| t.name.as_deref() == Some(name)) {
            return Err(Error::Conflict(
                "Personal Access Token with a given name already exists".into(),
            ));
        }
        if existing.len() >= rules::MAX_PAT_PER_USER {
            return Err(Error::Unprocessable(
                "maximum number of personal acess tokens reached for this user".into(),
            ));
        }
        let lifetime = (expires_in > 0).then_some(expires_in);
        self.issue(&caller.tenant, &caller.sub, lifetime, Some(name.to_owned()))
            .await
    }

    pub async fn list_pats(&self, caller: &UserClaims) -> Result<Vec<Value>, Error> {
        let mut tokens: Vec<TokenRecord> = self
            .store
            .list_tokens(&caller.tenant, &caller.sub)
            .await?
            .into_iter()
            .filter(|t| t.name.is_some())
            .collect();
        tokens.sort_by(|a, b| a.created_ts.cmp(&b.created_ts));
        Ok(tokens
            .into_iter()
            .map(|t| {
                let mut v =
                    serde_json::json!({"id": t.jti, "name": t.name, "created_ts": t.created_ts});
                if let Some(last) = t.last_used {
                    v["last_used"] = Value::String(last);
                }
                if let Some(exp) = t
                    .expires_at
                    .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
                {
                    v["expiration_date"] = Value::String(ts(exp));
                }
                v
            })
            .collect())
    }

    pub async fn delete_pat(&self, caller: &UserClaims, id: &str) -> Result<(), Error> {
        if let Some(token) = self
            .store
            .get_token(&caller.tenant, &caller.sub, id)
            .await?
        {
            if token.name.is_some() {
                self.store
                    .delete_token(&caller.tenant, &caller.sub, id)
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl UserTokenCheck for Useradm {
    /// One read: the token record exists (deleting a user deletes its tokens, so it implies the
    /// user exists). PATs get `last_used` refreshed at most every five minutes.
    async fn user_token_valid(&self, claims: &UserClaims) -> Result<bool, ApiError> {
        let record = self
            .store
            .get_token(&claims.tenant, &claims.sub, &claims.jti)
            .await
            .map_err(ApiError::internal)?;
        let Some(record) = record else {
            return Ok(false);
        };
        if record.name.is_some() {
            let now = now();
            let stale = record
                .last_used
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_none_or(|t| now.timestamp() - t.timestamp() > LAST_USED_REFRESH_SECS);
            if stale {
                self.store
                    .touch_token(&claims.tenant, &claims.sub, &claims.jti, &ts(now))
                    .await
                    .map_err(ApiError::internal)?;
            }
        }
        Ok(true)
    }
}
