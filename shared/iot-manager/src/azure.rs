//! Azure IoT Hub: the connection string (parse, validate against the trusted hostnames, mask,
//! print) and the SharedAccessSignature its key signs, and the service REST API calls
//! iot-manager makes (`api-version=2021-04-12`): device identities (`/devices/{id}`) and device
//! twins (`/twins/{id}`), as upstream's `iothub` client.
//!
//! SAS token (Azure "Control access to IoT Hub"): `SharedAccessSignature sr={resource}&sig=
//! {signature}&se={expiry}&skn={policy}` where resource is the URL-encoded hub hostname and
//! signature is base64(HMAC-SHA256(base64-decoded key, "{resource}\n{expiry}")), URL-encoded.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::net::AddressPolicy;

pub const API_VERSION: &str = "2021-04-12";
/// Lifetime of the SAS token of one request (upstream: one minute).
const TOKEN_TTL_SECS: i64 = 60;
const MAX_LENGTH: usize = 4096;

/// An IoT Hub connection string (upstream `model.ConnectionString`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionString {
    pub host_name: String,
    pub gateway_host_name: String,
    pub name: String,
    pub device_id: String,
    pub module_id: String,
    pub key: Vec<u8>,
    pub signature: String,
}

/// Go's `url.QueryEscape`.
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl ConnectionString {
    /// `Key=Value;...` (syntax only; [`ConnectionString::validate`] checks the content).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut cs = ConnectionString::default();
        for part in text.split(';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err("invalid connectionstring format".into());
            };
            match key {
                "HostName" => cs.host_name = value.to_owned(),
                "GatewayHostName" => cs.gateway_host_name = value.to_owned(),
                "SharedAccessKey" => {
                    cs.key = b64().decode(value).map_err(|e| match e {
                        base64::DecodeError::InvalidByte(at, _)
                        | base64::DecodeError::InvalidLastSymbol(at, _) => {
                            format!(
                                "shared access key format: illegal base64 data at input byte {at}"
                            )
                        }
                        _ => format!(
                            "shared access key format: illegal base64 data at input byte {}",
                            value.len()
                        ),
                    })?
                }
                "SharedAccessKeyName" => cs.name = value.to_owned(),
                "SharedAccessSignature" => cs.signature = value.to_owned(),
                "DeviceId" => cs.device_id = value.to_owned(),
                "ModuleId" => cs.module_id = value.to_owned(),
                other => return Err(format!("invalid connection string key: {other}")),
            }
        }
        Ok(cs)
    }

    fn is_zero(&self) -> bool {
        *self == ConnectionString::default()
    }

    /// Upstream's checks (the text after `connection string invalid: `): the hostnames are
    /// trusted and resolve, the key is set, a device or policy name is set, at most 4096
    /// characters.
    pub async fn validate(&self, trusted: &[String]) -> Result<(), String> {
        if self.is_zero() {
            return Ok(());
        }
        let mut problems = Vec::new();
        if !self.gateway_host_name.is_empty() {
            if let Err(e) = check_hostname(&self.gateway_host_name, trusted).await {
                problems.push(format!("GatewayHostName: {e}"));
            }
        }
        if self.host_name.is_empty() {
            problems.push("HostName: cannot be blank".to_owned());
        } else if let Err(e) = check_hostname(&self.host_name, trusted).await {
            problems.push(format!("HostName: {e}"));
        }
        if self.key.is_empty() {
            problems.push("Key: cannot be blank".to_owned());
        }
        if !problems.is_empty() {
            return Err(format!("{}.", problems.join("; ")));
        }
        if self.device_id.is_empty() && self.name.is_empty() {
            return Err("one of 'DeviceId' or 'SharedAccessKeyName' must be set".into());
        }
        if self.to_string().len() > MAX_LENGTH {
            return Err("connection string can be no longer than 4096 characters".into());
        }
        Ok(())
    }

    fn write(&self, f: &mut impl fmt::Write, masked: bool) -> fmt::Result {
        let key = if masked {
            let prefix = &self.key[..self.key.len().min(3)];
            format!("{}...<omitted>", b64().encode(prefix))
        } else {
            b64().encode(&self.key)
        };
        let fields = [
            ("HostName", self.host_name.as_str()),
            ("GatewayHostName", &self.gateway_host_name),
            ("SharedAccessKeyName", &self.name),
            ("DeviceId", &self.device_id),
            ("ModuleId", &self.module_id),
            (
                "SharedAccessKey",
                if self.key.is_empty() { "" } else { &key },
            ),
            ("SharedAccessSignature", &self.signature),
        ];
        let mut first = true;
        for (name, value) in fields {
            if value.is_empty() {
                continue;
            }
            if !first {
                f.write_char(';')?;
            }
            first = false;
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }

    /// The connection string as users see it: the key shortened to a prefix.
    pub fn masked(&self) -> String {
        let mut out = String::new();
        let _ = self.write(&mut out, true);
        out
    }

    /// The `Authorization` header value, valid until `expire_at` (Unix seconds).
    pub fn authorization(&self, expire_at: i64) -> String {
        let resource = query_escape(&self.host_name);
        let signature = sign(&self.key, &format!("{resource}\n{expire_at}"));
        let mut token = format!(
            "SharedAccessSignature sr={resource}&sig={}&se={expire_at}",
            query_escape(&signature)
        );
        if !self.name.is_empty() {
            token.push_str("&skn=");
            token.push_str(&self.name);
        }
        token
    }
}

/// base64(HMAC-SHA256(key, message)).
pub fn sign(key: &[u8], message: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    b64().encode(mac.finalize().into_bytes())
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, false)
    }
}

/// Whether `hostname` (a port is ignored) matches a trusted pattern (`*` one label) and
/// resolves.
async fn check_hostname(hostname: &str, trusted: &[String]) -> Result<(), String> {
    if trusted.is_empty() {
        return Err("[PROG ERR(hostnameValidator)] no trusted hostnames configured".into());
    }
    let host = hostname.split(':').next().unwrap_or("");
    let normal = host.trim_end_matches('.').to_ascii_lowercase();
    let parts: Vec<&str> = normal.split('.').collect();
    let matches = !normal.is_empty()
        && trusted.iter().any(|pattern| {
            let pattern: Vec<&str> = pattern.split('.').collect();
            pattern.len() == parts.len()
                && pattern.iter().zip(&parts).all(|(p, h)| *p == "*" || p == h)
        });
    if !matches {
        return Err("hostname does not refer to a trusted domain".into());
    }
    let resolves = tokio::net::lookup_host((host, 443))
        .await
        .is_ok_and(|mut addrs| addrs.next().is_some());
    if resolves {
        Ok(())
    } else {
        Err(format!("failed to lookup host with name '{host}'"))
    }
}

/// A failed IoT Hub call; `status` when the hub answered.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HubError {
    pub status: Option<u16>,
    pub message: String,
}

impl HubError {
    fn status(code: u16) -> Self {
        HubError {
            status: Some(code),
            message: format!("client: unexpected status code from API: {code}"),
        }
    }
    fn other(message: impl Into<String>) -> Self {
        HubError {
            status: None,
            message: message.into(),
        }
    }
}

/// IoT Hub's service API over the guarded client.
pub struct IotHub<'a> {
    pub http: &'a reqwest::Client,
    pub policy: &'a AddressPolicy,
}

/// `devices/{id}` (the id query-escaped, as upstream).
fn device_path(id: &str) -> String {
    format!("devices/{}", query_escape(id))
}

fn twin_path(id: &str) -> String {
    format!("twins/{id}")
}

impl IotHub<'_> {
    async fn call(
        &self,
        cs: &ConnectionString,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Value, HubError> {
        let host = if cs.gateway_host_name.is_empty() {
            &cs.host_name
        } else {
            &cs.gateway_host_name
        };
        let url: reqwest::Url = format!("https://{host}/{path}?api-version={API_VERSION}")
            .parse()
            .map_err(|e| HubError::other(format!("iothub: failed to prepare request: {e}")))?;
        self.policy.check_literal(&url).map_err(HubError::other)?;
        let expire_at = chrono::Utc::now().timestamp() + TOKEN_TTL_SECS;
        let mut request = self
            .http
            .request(method, url)
            .header("Authorization", cs.authorization(expire_at));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        let response = request.send().await.map_err(|e| {
            HubError::other(format!(
                "iothub: failed to execute request: {}",
                crate::webhook::error_text(&e)
            ))
        })?;
        let status = response.status().as_u16();
        if status >= 400 {
            return Err(HubError::status(status));
        }
        let text = response
            .text()
            .await
            .map_err(|e| HubError::other(format!("iothub: failed to read response: {e}")))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| HubError::other(format!("iothub: failed to decode response: {e}")))
    }

    /// `PUT /devices/{id}`: creates or replaces the identity (`If-Match` the device's etag).
    pub async fn upsert_device(
        &self,
        cs: &ConnectionString,
        id: &str,
        mut device: Value,
    ) -> Result<Value, HubError> {
        let etag = device
            .get("etag")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(|e| format!("\"{e}\""));
        if let Value::Object(map) = &mut device {
            map.remove("etag");
            map.insert("deviceId".into(), Value::String(id.to_owned()));
        }
        self.call(
            cs,
            reqwest::Method::PUT,
            &device_path(id),
            Some(&device),
            etag.as_deref(),
        )
        .await
    }

    pub async fn get_device(&self, cs: &ConnectionString, id: &str) -> Result<Value, HubError> {
        self.call(cs, reqwest::Method::GET, &device_path(id), None, None)
            .await
    }

    /// `DELETE /devices/{id}` with `If-Match: *`.
    pub async fn delete_device(&self, cs: &ConnectionString, id: &str) -> Result<(), HubError> {
        self.call(
            cs,
            reqwest::Method::DELETE,
            &device_path(id),
            None,
            Some("*"),
        )
        .await
        .map(|_| ())
    }

    pub async fn get_twin(&self, cs: &ConnectionString, id: &str) -> Result<Value, HubError> {
        self.call(cs, reqwest::Method::GET, &twin_path(id), None, None)
            .await
    }

    /// `PATCH /twins/{id}` (merge) or `PUT` (`replace`), `If-Match` the twin's etag when given.
    pub async fn update_twin(
        &self,
        cs: &ConnectionString,
        id: &str,
        update: &Value,
        etag: Option<&str>,
        replace: bool,
    ) -> Result<(), HubError> {
        let method = if replace {
            reqwest::Method::PUT
        } else {
            reqwest::Method::PATCH
        };
        let etag = etag.filter(|e| !e.is_empty()).map(|e| format!("\"{e}\""));
        self.call(cs, method, &twin_path(id), Some(update), etag.as_deref())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_print_and_mask() {
        let text = "HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0LWtleQ==";
        let cs = ConnectionString::parse(text).unwrap();
        assert_eq!(cs.key, b"secret-key");
        assert_eq!(cs.to_string(), text);
        assert_eq!(
            cs.masked(),
            "HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2Vj...<omitted>"
        );
        assert_eq!(
            ConnectionString::parse("HostName").unwrap_err(),
            "invalid connectionstring format"
        );
        assert_eq!(
            ConnectionString::parse("Foo=bar").unwrap_err(),
            "invalid connection string key: Foo"
        );
    }

    #[test]
    fn sas_token_as_azure_documents_it() {
        let cs = ConnectionString {
            host_name: "hub.azure-devices.net".into(),
            name: "iothubowner".into(),
            key: b"secret-key".to_vec(),
            ..ConnectionString::default()
        };
        let token = cs.authorization(1_700_000_000);
        let expected_sig = sign(b"secret-key", "hub.azure-devices.net\n1700000000");
        assert_eq!(
            token,
            format!(
                "SharedAccessSignature sr=hub.azure-devices.net&sig={}&se=1700000000&skn=iothubowner",
                query_escape(&expected_sig)
            )
        );
        assert_eq!(query_escape("127.0.0.1:443"), "127.0.0.1%3A443");
        assert_eq!(query_escape("a+b/c="), "a%2Bb%2Fc%3D");
    }

    #[tokio::test]
    async fn hostnames_must_be_trusted() {
        let trusted = vec!["*.azure-devices.net".to_owned(), "127.0.0.1".to_owned()];
        let cs = |host: &str| ConnectionString {
            host_name: host.into(),
            name: "x".into(),
            key: vec![1, 2, 3],
            ..ConnectionString::default()
        };
        assert_eq!(
            cs("evil.example.com").validate(&trusted).await.unwrap_err(),
            "HostName: hostname does not refer to a trusted domain."
        );
        assert!(cs("127.0.0.1:8443").validate(&trusted).await.is_ok());
        let mut anonymous = cs("127.0.0.1");
        anonymous.name.clear();
        assert_eq!(
            anonymous.validate(&trusted).await.unwrap_err(),
            "one of 'DeviceId' or 'SharedAccessKeyName' must be set"
        );
    }
}
