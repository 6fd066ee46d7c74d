//! A scripted device for API-level tests: an Ed25519 key, signed auth requests exactly as the
//! real client builds them (`id_data` as a JSON string, body bytes signed as sent), and device
//! calls with its token; and [`admit_in_domain`], which admits one through the deviceauth
//! domain code in process (the benchmarks' setup).

use anyhow::{bail, Context};
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signer, SigningKey};
use reqwest::StatusCode;
use serde_json::{json, Value};

pub struct Device {
    pub mac: String,
    key: SigningKey,
    http: reqwest::Client,
    base_url: String,
    pub token: Option<String>,
}

impl Device {
    pub fn new(base_url: &str, http: reqwest::Client, mac: &str) -> Self {
        let seed: [u8; 32] = *uuid::Uuid::new_v4()
            .as_bytes()
            .repeat(2)
            .first_chunk()
            .unwrap_or(&[7; 32]);
        Device {
            mac: mac.into(),
            key: SigningKey::from_bytes(&seed),
            http,
            base_url: base_url.into(),
            token: None,
        }
    }

    /// The token of the last successful authentication; an error before one.
    pub fn issued_token(&self) -> anyhow::Result<String> {
        self.token.clone().context("no device token")
    }

    pub fn pubkey_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap_or_default()
    }

    /// The auth request body as the client sends it (trailing newline included).
    pub fn auth_body(&self, pubkey_pem: &str) -> Vec<u8> {
        let id_data = json!({ "mac": self.mac }).to_string();
        let mut body = json!({"id_data": id_data, "tenant_token": "", "pubkey": pubkey_pem})
            .to_string()
            .into_bytes();
        body.push(b'\n');
        body
    }

    pub fn sign(&self, body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.sign(body).to_bytes())
    }

    /// Sends a raw auth request; returns status and body.
    pub async fn raw_auth_request(
        &self,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let mut request = self
            .http
            .post(format!(
                "{}/api/devices/v1/authentication/auth_requests",
                self.base_url
            ))
            .header("Content-Type", "application/json")
            .header("Authorization", "Bearer ")
            .body(body);
        if let Some(sig) = signature {
            request = request.header("X-MEN-Signature", sig);
        }
        let response = request.send().await?;
        Ok((response.status(), response.text().await?))
    }

    /// A correctly signed auth request; stores the token on 200.
    pub async fn authenticate(&mut self) -> anyhow::Result<StatusCode> {
        let body = self.auth_body(&self.pubkey_pem());
        let signature = self.sign(&body);
        let (status, text) = self.raw_auth_request(body, Some(signature)).await?;
        if status == StatusCode::OK {
            self.token = Some(text);
        }
        Ok(status)
    }

    /// `PATCH`/`PUT` of inventory attributes with `token` (defaults to the device's own).
    pub async fn send_inventory(
        &self,
        method: reqwest::Method,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let token = token.or(self.token.as_deref()).unwrap_or_default();
        let response = self
            .http
            .request(
                method,
                format!(
                    "{}/api/devices/v1/inventory/device/attributes",
                    self.base_url
                ),
            )
            .header("Content-Type", "application/json")
            .bearer_auth(token)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// How [`admit_in_domain`] admits a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// As a device in the field: its signed auth request makes it pending, its auth set is
    /// accepted, its next auth request gets a token. The device is found as the tenant's only
    /// pending one: admit such devices one at a time.
    Accept,
    /// Its identity is preauthorized with its key, its first signed auth request gets a token.
    /// Safe to run for many devices at once.
    Preauthorize,
}

/// Admits `device` (default tenant) through the deviceauth domain code of `services`, as
/// `how` says; the token is issued and stored like any other. Returns (device id, token).
pub async fn admit_in_domain(
    services: &services::Services,
    device: &Device,
    how: Admission,
) -> anyhow::Result<(String, String)> {
    let auth = &services.deviceauth;
    let mac = &device.mac;
    let pem = device.pubkey_pem();
    let body = device.auth_body(&pem);
    let signature = device.sign(&body);
    let id = match how {
        Admission::Preauthorize => auth
            .preauthorize("", &json!({ "mac": mac }), &pem, false)
            .await
            .with_context(|| format!("preauthorizing {mac}"))?,
        Admission::Accept => {
            auth.auth_request("", &body, Some(&signature))
                .await
                .with_context(|| format!("auth request of {mac}"))?;
            let pending = deviceauth::service::DeviceFilter {
                statuses: vec!["pending".into()],
                ids: Vec::new(),
            };
            let listed = auth.list_devices("", &pending, Default::default()).await?.0;
            let [stored] = listed.as_slice() else {
                bail!("expected one pending device, found {}", listed.len());
            };
            let aid = &stored.auth_sets.first().context("no auth set")?.id;
            auth.set_auth_status("", &stored.id, aid, "accepted")
                .await
                .with_context(|| format!("accepting {mac}"))?;
            stored.id.clone()
        }
    };
    match auth
        .auth_request("", &body, Some(&signature))
        .await
        .with_context(|| format!("auth request of {mac}"))?
    {
        deviceauth::AuthRequestOutcome::Token(token) => Ok((id, token)),
        deviceauth::AuthRequestOutcome::Unauthorized => bail!("device {mac} got no token"),
    }
}
