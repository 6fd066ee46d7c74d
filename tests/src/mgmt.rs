//! A small client for the stack's management REST API (what the UI or an operator script
//! would call), used by tests to log in, inspect and admit devices, and read inventory;
//! plus [`wait_for`], a polling helper for eventually consistent state, and [`json_of`], a
//! response body read as JSON.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::device::Device;

/// Polls `f` every `poll_interval` until it returns `Some`, or fails after `timeout`.
/// `f` is called at least once.
pub async fn wait_for<T, F, Fut>(
    timeout: Duration,
    poll_interval: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(poll_interval).await;
    }
}

/// Builds a reqwest client that trusts the PEM certificate(s) in `ca_cert_path` (in
/// addition to the built-in web roots).
pub fn https_client(ca_cert_path: &Path) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(ca_cert_path)
        .with_context(|| format!("reading CA certificate {}", ca_cert_path.display()))?;
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10));
    for cert in reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("parsing {}", ca_cert_path.display()))?
    {
        builder = builder.add_root_certificate(cert);
    }
    builder.build().context("building the HTTPS client")
}

/// A logged-in management API user.
#[derive(Debug, Clone)]
pub struct Mgmt {
    base_url: String,
    token: String,
    http: reqwest::Client,
}

impl Mgmt {
    /// `POST /api/management/v1/useradm/auth/login` with HTTP Basic and no body; expects 200
    /// with the raw JWT as body (no quotes, no surrounding whitespace).
    pub async fn login(
        base_url: &str,
        ca_cert_path: &Path,
        email: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        let http = https_client(ca_cert_path)?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        let resp = http
            .post(format!("{base_url}/api/management/v1/useradm/auth/login"))
            .basic_auth(email, Some(password))
            .send()
            .await
            .context("login request")?;
        let status = resp.status();
        let body = resp.text().await.context("login response body")?;
        if status != StatusCode::OK {
            bail!("login as {email}: {status} {body}");
        }
        // mender-cli (and the UI) use the body verbatim as the bearer token: no trimming.
        let token = body;
        if token.is_empty() || token.trim() != token || token.starts_with('"') {
            bail!("login as {email}: the body is not a raw JWT: {token:?}");
        }
        Ok(Self {
            base_url,
            token,
            http,
        })
    }

    /// Uses an existing token (e.g. one from `mender-cli login`).
    pub fn with_token(base_url: &str, ca_cert_path: &Path, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            http: https_client(ca_cert_path)?,
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The underlying HTTPS client (trusting the stack's CA), for unauthenticated calls.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Any authenticated request; `path` starts with `/api/...` (query string allowed).
    /// A `body` is sent as JSON.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("{method} {path}: reading body"))?;
        Ok((status, headers, bytes))
    }

    /// `POST path` with a ready body of `content_type` (e.g. a [`crate::form::multipart`]
    /// form): (status, headers, body).
    pub async fn post_body(
        &self,
        path: &str,
        (content_type, body): (String, Vec<u8>),
    ) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.token)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("POST {path}: reading body"))?;
        Ok((status, headers, bytes))
    }

    /// `POST path` with a JSON body, expecting `201 Created`: the id at the end of `Location`.
    pub async fn create(&self, path: &str, body: Value) -> anyhow::Result<String> {
        let (status, headers, bytes) = self.request(Method::POST, path, Some(body)).await?;
        if status != StatusCode::CREATED {
            bail!("POST {path}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        Ok(location_id(&headers))
    }

    /// [`Self::request`] with the body parsed as JSON (`Value::Null` when empty or not JSON).
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let (status, _, bytes) = self.request(method, path, body).await?;
        Ok((status, json_of(&bytes)))
    }

    /// [`Self::request_json`] that fails unless the status is `expected`.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: StatusCode,
    ) -> anyhow::Result<Value> {
        let (status, _, bytes) = self.request(method.clone(), path, body).await?;
        if status != expected {
            bail!(
                "{method} {path}: expected {expected}, got {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(json_of(&bytes))
    }

    /// `GET /api/management/v2/devauth/devices[?status=]` (first page of 500); the JSON array.
    pub async fn devices(&self, status: Option<&str>) -> anyhow::Result<Value> {
        let path = match status {
            Some(s) => format!("/api/management/v2/devauth/devices?per_page=500&status={s}"),
            None => "/api/management/v2/devauth/devices?per_page=500".to_owned(),
        };
        self.expect(Method::GET, &path, None, StatusCode::OK).await
    }

    /// `GET /api/management/v2/devauth/devices/{id}`: (status, device JSON or error body).
    pub async fn device(&self, id: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.request_json(
            Method::GET,
            &format!("/api/management/v2/devauth/devices/{id}"),
            None,
        )
        .await
    }

    /// The device whose `identity_data.mac` is `mac`, if listed.
    pub async fn device_by_mac(&self, mac: &str) -> anyhow::Result<Option<Value>> {
        let devices = self.devices(None).await?;
        Ok(devices
            .as_array()
            .and_then(|a| a.iter().find(|d| d["identity_data"]["mac"] == mac).cloned()))
    }

    /// Waits until a device with `identity_data.mac == mac` is listed; returns it.
    pub async fn wait_for_device_by_mac(
        &self,
        mac: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        wait_for(timeout, Duration::from_millis(250), || async {
            self.device_by_mac(mac).await.ok().flatten()
        })
        .await
        .with_context(|| format!("device with mac {mac} never appeared"))
    }

    /// `PUT /api/management/v2/devauth/devices/{id}/auth/{aid}/status`; expects 204.
    pub async fn set_auth_status(
        &self,
        device_id: &str,
        auth_id: &str,
        status: &str,
    ) -> anyhow::Result<()> {
        self.expect(
            Method::PUT,
            &format!("/api/management/v2/devauth/devices/{device_id}/auth/{auth_id}/status"),
            Some(json!({ "status": status })),
            StatusCode::NO_CONTENT,
        )
        .await
        .map(drop)
    }

    /// Accepts the device's (single) pending auth set; returns the auth set id.
    pub async fn accept_device(&self, device_id: &str) -> anyhow::Result<String> {
        let (status, device) = self.device(device_id).await?;
        if status != StatusCode::OK {
            bail!("device {device_id}: {status} {device}");
        }
        let auth_id = device["auth_sets"]
            .as_array()
            .and_then(|sets| sets.iter().find(|s| s["status"] == "pending"))
            .and_then(|s| s["id"].as_str())
            .with_context(|| format!("device {device_id} has no pending auth set: {device}"))?
            .to_owned();
        self.set_auth_status(device_id, &auth_id, "accepted")
            .await?;
        Ok(auth_id)
    }

    /// Waits up to `within` for the device with `identity_data.mac == mac` to be listed
    /// (after its first auth request); its id.
    pub async fn wait_for_device_id(&self, mac: &str, within: Duration) -> anyhow::Result<String> {
        let listed = self.wait_for_device_by_mac(mac, within).await?;
        Ok(listed["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Admits `device`, which has asked to join: waits (10 s) for it to be listed, accepts its
    /// pending auth set and authenticates the device again, which must give 200 (the device
    /// then holds its token). Returns (device id, auth set id).
    pub async fn admit(&self, device: &mut Device) -> anyhow::Result<(String, String)> {
        let id = self
            .wait_for_device_id(&device.mac, Duration::from_secs(10))
            .await?;
        let auth_id = self.accept_device(&id).await?;
        anyhow::ensure!(device.authenticate().await? == StatusCode::OK);
        Ok((id, auth_id))
    }

    /// `DELETE /api/management/v2/devauth/devices/{id}`; expects 204.
    pub async fn decommission(&self, device_id: &str) -> anyhow::Result<()> {
        self.expect(
            Method::DELETE,
            &format!("/api/management/v2/devauth/devices/{device_id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await
        .map(drop)
    }

    /// Waits (20 s) until the inventory of device `id` has every attribute in `names` (any
    /// scope): the workflows after an admission or an update have settled.
    pub async fn wait_for_attributes(&self, id: &str, names: &[&str]) -> anyhow::Result<()> {
        wait_for(
            Duration::from_secs(20),
            Duration::from_millis(200),
            || async {
                let (_, inv) = self.inventory_device(id).await.ok()?;
                let attrs = inv["attributes"].as_array()?.clone();
                let has = |n: &&str| attrs.iter().any(|a| a["name"] == *n);
                names.iter().all(has).then_some(())
            },
        )
        .await
    }

    /// `GET /api/management/v1/inventory/devices/{id}`: (status, device inventory JSON).
    pub async fn inventory_device(&self, id: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.request_json(
            Method::GET,
            &format!("/api/management/v1/inventory/devices/{id}"),
            None,
        )
        .await
    }
}

/// The `Location` header of a response (empty without one).
pub fn location(headers: &HeaderMap) -> String {
    headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The last path segment of the `Location` header: the id of what a POST created (empty
/// without one).
pub fn location_id(headers: &HeaderMap) -> String {
    location(headers)
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Looks up attribute `name` (any scope, first match) in an inventory device JSON
/// (`{"id":..,"attributes":[{"name","value","scope"}]}`).
pub fn inventory_attribute<'a>(device: &'a Value, name: &str) -> Option<&'a Value> {
    device["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| &a["value"])
}

/// Asserts that `body` is Mender's error body: a non-empty `error` and a `request_id` (32 or
/// more characters). `what` and `status` go into the messages.
#[track_caller]
pub fn assert_mender_error_body(what: &str, status: StatusCode, body: &Value) {
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: no error message: {status} {body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|r| r.len() >= 32),
        "{what}: no request_id: {status} {body}"
    );
}

/// A response body (bytes or text) as JSON; `Value::Null` when it is empty or not JSON.
pub fn json_of(body: impl AsRef<[u8]>) -> Value {
    serde_json::from_slice(body.as_ref()).unwrap_or(Value::Null)
}
