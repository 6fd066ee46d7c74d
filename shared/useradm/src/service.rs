//! useradm operations: user accounts, login/logout, personal access tokens, settings, and the
//! revocation check used by every management endpoint. Errors are one enum, mapped to HTTP
//! once, in [`crate::http`].

use mender_aws::dynamo::DynamoError;
use mender_tokens::{Keys, UserClaims};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rules::{self, Invalid};
use crate::store::{settings_object, DynamoStore, Settings, Store, TokenRecord, User};

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

/// The useradm service over a [`Store`] (the DynamoDB table unless told otherwise).
#[derive(Clone)]
pub struct Useradm<S = DynamoStore> {
    pub store: S,
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

impl<S: Store> Useradm<S> {
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

    /// One read: the token record exists (deleting a user deletes its tokens, so it implies the
    /// user exists). PATs get `last_used` refreshed at most every five minutes.
    pub async fn check_user_token(&self, claims: &UserClaims) -> Result<bool, Error> {
        let record = self
            .store
            .get_token(&claims.tenant, &claims.sub, &claims.jti)
            .await?;
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
                    .await?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The service's rules against the in-memory store.

    use super::*;
    use crate::store::MemoryStore;
    use mender_http::error::StatusCode;
    use mender_http::ApiError;
    use serde_json::json;

    const T: &str = "tenant";
    const PASSWORD: &str = "correct horse";
    /// The server's token key (the tokens crate's Ed25519 fixture).
    const SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIJmWyu+TY4Md/w4+JKFeIWDBMbFqArIrk/OOg5Gx8UI4\n\
        -----END PRIVATE KEY-----\n";

    fn useradm() -> Useradm<MemoryStore> {
        Useradm {
            store: MemoryStore::new(),
            keys: Keys::from_pem(SERVER_KEY).unwrap(),
            token_lifetime_secs: 3600,
            // bcrypt's least cost: the rules, not the hashing, are under test
            bcrypt_cost: 4,
        }
    }

    /// The HTTP answer of an error: status and text.
    fn answer(e: Error) -> (StatusCode, String) {
        let e = ApiError::from(e);
        (e.status, e.message)
    }

    fn claims(u: &Useradm<MemoryStore>, token: &str) -> UserClaims {
        u.keys.verify(token).unwrap()
    }

    async fn valid(u: &Useradm<MemoryStore>, token: &str) -> bool {
        u.check_user_token(&claims(u, token)).await.unwrap()
    }

    async fn login(u: &Useradm<MemoryStore>, email: &str) -> String {
        u.login(email, PASSWORD, false).await.unwrap()
    }

    #[tokio::test]
    async fn an_email_belongs_to_one_user() {
        let u = useradm();
        let user = u.create_user(T, "Ann@Example.com", PASSWORD).await.unwrap();
        assert_eq!(user.email, "ann@example.com");
        assert_eq!(u.get_user(T, &user.id).await.unwrap().email, user.email);
        for (tenant, email) in [(T, "ann@example.com"), ("other", "ANN@example.com")] {
            let e = u.create_user(tenant, email, PASSWORD).await.unwrap_err();
            assert_eq!(
                answer(e),
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "user with a given email already exists".into()
                )
            );
        }
        assert!(!u.ensure_user(T, "ann@example.com", PASSWORD).await.unwrap());
        assert!(u.ensure_user(T, "bob@example.com", PASSWORD).await.unwrap());
        let users = u.list_users(T, &UserFilter::default()).await.unwrap();
        assert_eq!(users.len(), 2);
        assert!(u
            .list_users("other", &UserFilter::default())
            .await
            .unwrap()
            .is_empty());
        // the rules' refusals keep their status
        let e = u
            .create_user(T, "not-an-email", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(answer(e).0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn login_needs_the_right_password() {
        let u = useradm();
        let user = u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
        let token = login(&u, " ANN@example.com").await;
        let c = claims(&u, &token);
        assert_eq!((c.sub.as_str(), c.tenant.as_str()), (user.id.as_str(), T));
        assert!(c.exp.is_some());
        assert!(valid(&u, &token).await);
        assert!(u.get_user(T, &user.id).await.unwrap().login_ts.is_some());
        let no_expiry = u.login("ann@example.com", PASSWORD, true).await.unwrap();
        assert_eq!(claims(&u, &no_expiry).exp, None);

        let unauthorized = (StatusCode::UNAUTHORIZED, "unauthorized".to_owned());
        for (email, password) in [
            ("ann@example.com", "wrong password"),
            ("nobody@example.com", PASSWORD),
        ] {
            let e = u.login(email, password, false).await.unwrap_err();
            assert_eq!(answer(e), unauthorized);
        }
        let window = now().timestamp().div_euclid(LOGIN_WINDOW_SECS);
        assert_eq!(
            u.store
                .failed_logins("ann@example.com", window)
                .await
                .unwrap(),
            1
        );
        // logging out ends the session
        u.logout(&claims(&u, &token)).await.unwrap();
        assert!(!valid(&u, &token).await);
        assert!(valid(&u, &no_expiry).await);
    }

    #[tokio::test]
    async fn too_many_failed_logins_answer_429() {
        let u = useradm();
        u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            let e = u
                .login("ann@example.com", "wrong", false)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Unauthorized(_)));
        }
        // even the right password, until the window ends
        let e = u
            .login("ann@example.com", PASSWORD, false)
            .await
            .unwrap_err();
        assert_eq!(
            answer(e),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed login attempts, try again later".into()
            )
        );
        // another e-mail is not throttled
        u.create_user(T, "bob@example.com", PASSWORD).await.unwrap();
        login(&u, "bob@example.com").await;
    }

    #[tokio::test]
    async fn logins_keep_the_newest_sessions() {
        let u = useradm();
        let user = u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
        for _ in 0..=rules::MAX_SESSIONS_PER_USER {
            login(&u, "ann@example.com").await;
        }
        let sessions = u.store.list_tokens(T, &user.id).await.unwrap();
        assert_eq!(sessions.len(), rules::MAX_SESSIONS_PER_USER);
    }

    #[tokio::test]
    async fn a_password_change_revokes_the_other_sessions() {
        let u = useradm();
        let ann = u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
        let bob = u.create_user(T, "bob@example.com", PASSWORD).await.unwrap();
        let current = login(&u, "ann@example.com").await;
        let other = login(&u, "ann@example.com").await;
        let caller = claims(&u, &current);
        let change = |current_password: &str| UserUpdate {
            email: None,
            password: Some("a new password".into()),
            current_password: Some(current_password.into()),
        };
        let e = u.update_user(&caller, &ann.id, change("wrong")).await;
        assert_eq!(
            answer(e.unwrap_err()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "current password mismatch".into()
            )
        );
        assert!(valid(&u, &other).await);
        // nobody changes another user's password
        let e = u.update_user(&caller, &bob.id, change(PASSWORD)).await;
        assert_eq!(
            answer(e.unwrap_err()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "password cannot be modified".into()
            )
        );

        u.update_user(&caller, &ann.id, change(PASSWORD))
            .await
            .unwrap();
        assert!(valid(&u, &current).await);
        assert!(!valid(&u, &other).await);
        assert!(u.login("ann@example.com", PASSWORD, false).await.is_err());
        u.login("ann@example.com", "a new password", false)
            .await
            .unwrap();
        let e = u.update_user(&caller, &ann.id, UserUpdate::default()).await;
        assert_eq!(answer(e.unwrap_err()).0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn an_email_change_moves_the_claim() {
        let u = useradm();
        let ann = u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
        u.create_user(T, "bob@example.com", PASSWORD).await.unwrap();
        let caller = claims(&u, &login(&u, "ann@example.com").await);
        let to = |email: &str| UserUpdate {
            email: Some(email.into()),
            password: None,
            current_password: Some(PASSWORD.into()),
        };
        let e = u.update_user(&caller, &ann.id, to("bob@example.com")).await;
        assert_eq!(
            answer(e.unwrap_err()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "user with a given email already exists".into()
            )
        );
        u.update_user(&caller, &ann.id, to("anna@example.com"))
            .await
            .unwrap();
        let changed = u.get_user(T, &ann.id).await.unwrap();
        assert_eq!(changed.email, "anna@example.com");
        assert_ne!(changed.updated_ts, ann.updated_ts);
        login(&u, "anna@example.com").await;
        assert!(u.login("ann@example.com", PASSWORD, false).await.is_err());
        // the old e-mail is free again
        u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
    }

    #[tokio::test]
    async fn settings_are_replaced_only_at_their_etag() {
        let u = useradm();
        assert_eq!(u.get_settings(T, None).await.unwrap(), (Map::new(), None));
        let doc = |v: Value| v.as_object().cloned().unwrap();
        u.put_settings(T, None, doc(json!({"a": 1})), None)
            .await
            .unwrap();
        let (document, etag) = u.get_settings(T, None).await.unwrap();
        assert_eq!(Value::Object(document), json!({"a": 1}));
        let etag = etag.unwrap();
        let e = u
            .put_settings(T, None, doc(json!({"a": 2})), Some("stale"))
            .await;
        assert_eq!(
            answer(e.unwrap_err()),
            (StatusCode::PRECONDITION_FAILED, "ETag doesn't match".into())
        );
        u.put_settings(T, None, doc(json!({"a": 3})), Some(&etag))
            .await
            .unwrap();
        let (document, new_etag) = u.get_settings(T, None).await.unwrap();
        assert_eq!(Value::Object(document), json!({"a": 3}));
        assert_ne!(new_etag.as_deref(), Some(etag.as_str()));
        // the old etag is stale now; a user's settings are their own
        let e = u
            .put_settings(T, None, doc(json!({"a": 4})), Some(&etag))
            .await;
        assert!(matches!(e, Err(Error::PreconditionFailed(_))));
        let e = u
            .put_settings(T, Some("ann"), doc(json!({"b": 1})), Some(&etag))
            .await;
        assert!(matches!(e, Err(Error::PreconditionFailed(_))));
        u.put_settings(T, Some("ann"), doc(json!({"b": 1})), None)
            .await
            .unwrap();
        let (document, _) = u.get_settings(T, Some("ann")).await.unwrap();
        assert_eq!(Value::Object(document), json!({"b": 1}));
    }

    #[tokio::test]
    async fn personal_access_tokens() {
        let u = useradm();
        u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
        let session = claims(&u, &login(&u, "ann@example.com").await);
        let pat = u.create_pat(&session, "ci", 3600).await.unwrap();
        assert!(valid(&u, &pat).await);
        let pat_claims = claims(&u, &pat);
        // using it records when
        let record = u
            .store
            .get_token(T, &pat_claims.sub, &pat_claims.jti)
            .await
            .unwrap()
            .unwrap();
        assert!(record.last_used.is_some());
        // a PAT mints no PATs; names are unique per user
        let e = u.create_pat(&pat_claims, "other", 3600).await.unwrap_err();
        assert_eq!(answer(e).0, StatusCode::FORBIDDEN);
        let e = u.create_pat(&session, "ci", 3600).await.unwrap_err();
        assert_eq!(
            answer(e),
            (
                StatusCode::CONFLICT,
                "Personal Access Token with a given name already exists".into()
            )
        );
        let listed = u.list_pats(&session).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["name"], json!("ci"));
        assert_eq!(listed[0]["id"], json!(pat_claims.jti));
        assert!(listed[0]["expiration_date"].is_string());
        // at most MAX_PAT_PER_USER
        for i in 1..rules::MAX_PAT_PER_USER {
            u.create_pat(&session, &format!("pat{i}"), 0).await.unwrap();
        }
        let e = u.create_pat(&session, "one more", 0).await.unwrap_err();
        assert_eq!(answer(e).0, StatusCode::UNPROCESSABLE_ENTITY);
        // deleting one: it stops working; a session is no PAT to delete
        u.delete_pat(&session, &pat_claims.jti).await.unwrap();
        assert!(!valid(&u, &pat).await);
        u.delete_pat(&session, &session.jti).await.unwrap();
        assert!(u.check_user_token(&session).await.unwrap());
    }

    #[tokio::test]
    async fn deleting_a_user_ends_its_tokens_and_frees_its_email() {
        let u = useradm();
        let ann = u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
        let token = login(&u, "ann@example.com").await;
        u.put_settings(T, Some(&ann.id), Map::new(), None)
            .await
            .unwrap();
        u.delete_user(T, &ann.id).await.unwrap();
        assert!(!valid(&u, &token).await);
        assert_eq!(u.get_settings(T, Some(&ann.id)).await.unwrap().1, None);
        assert_eq!(
            answer(u.get_user(T, &ann.id).await.unwrap_err()),
            (StatusCode::NOT_FOUND, "user not found".into())
        );
        u.create_user(T, "ann@example.com", PASSWORD).await.unwrap();
        // deleting a user that is gone is no error
        u.delete_user(T, &ann.id).await.unwrap();
    }

    #[tokio::test]
    async fn the_memory_store_enforces_the_table_conditions() {
        let store = MemoryStore::new();
        let user = User {
            id: "u".into(),
            email: "ann@example.com".into(),
            password_hash: "h".into(),
            created_ts: "t0".into(),
            updated_ts: "t0".into(),
            login_ts: None,
        };
        store.create_user(T, &user).await.unwrap();
        let mut newer = user.clone();
        newer.updated_ts = "t1".into();
        store.update_user(T, &user, &newer).await.unwrap();
        // a replace needs the user as it was read
        let mut stale = user.clone();
        stale.updated_ts = "t2".into();
        assert!(matches!(
            store.update_user(T, &user, &stale).await,
            Err(DynamoError::ConditionFailed)
        ));
        assert!(matches!(
            store.set_login_ts(T, "gone", "t").await,
            Err(DynamoError::ConditionFailed)
        ));
        assert_eq!(
            store.find_by_email("ann@example.com").await.unwrap(),
            Some((T.to_owned(), newer))
        );
    }
}
