//! iot-manager's records and their JSON: integrations (provider and credentials, validated with
//! upstream's ozzo-validation texts, secrets masked when shown), lifecycle events with their
//! per-integration delivery statuses, and device states (desired/reported).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::azure::ConnectionString;
use crate::net::AddressPolicy;

pub const PROVIDER_IOT_HUB: &str = "iot-hub";
pub const PROVIDER_IOT_CORE: &str = "iot-core";
pub const PROVIDER_WEBHOOK: &str = "webhook";

pub const CREDENTIALS_SAS: &str = "sas";
pub const CREDENTIALS_AWS: &str = "aws";
pub const CREDENTIALS_HTTP: &str = "http";

/// Upstream's event types.
pub const EVENT_PROVISIONED: &str = "device-provisioned";
pub const EVENT_DECOMMISSIONED: &str = "device-decommissioned";
pub const EVENT_STATUS_CHANGED: &str = "device-status-changed";

/// What secrets show as when an integration is read back.
const OMITTED: &str = "<omitted>";

/// AWS IoT Core credentials of an integration (upstream `AWSCredentials`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AwsCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_policy_name: Option<String>,
}

/// Webhook credentials: the URL and the optional HMAC secret (hex in JSON, kept as hex).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpCredentials {
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl HttpCredentials {
    /// The secret's bytes (validated as hex when the credentials were stored).
    pub fn secret_bytes(&self) -> Option<Vec<u8>> {
        self.secret.as_deref().and_then(|s| hex::decode(s).ok())
    }
}

/// An integration's credentials (upstream `Credentials`); the connection string is kept as its
/// full text.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCredentials>,
}

impl Credentials {
    /// The JSON shown to users: secrets replaced by `<omitted>`, the connection string's key by
    /// a prefix (upstream's `MarshalText`s).
    pub fn masked(&self) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), Value::String(self.kind.clone()));
        if let Some(aws) = &self.aws {
            let mut shown = aws.clone();
            if shown.secret_access_key.is_some() {
                shown.secret_access_key = Some(OMITTED.into());
            }
            out.insert("aws".into(), json!(shown));
        }
        if let Some(cs) = &self.connection_string {
            let shown = ConnectionString::parse(cs)
                .map(|c| c.masked())
                .unwrap_or_default();
            out.insert("connection_string".into(), Value::String(shown));
        }
        if let Some(http) = &self.http {
            let mut shown = http.clone();
            if shown.secret.is_some() {
                shown.secret = Some(OMITTED.into());
            }
            out.insert("http".into(), json!(shown));
        }
        Value::Object(out)
    }

    pub fn connection(&self) -> Option<ConnectionString> {
        self.connection_string
            .as_deref()
            .and_then(|cs| ConnectionString::parse(cs).ok())
    }
}

/// A configured integration (at most one per tenant, as upstream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub id: String,
    pub provider: String,
    pub credentials: Credentials,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Integration {
    /// The JSON of `GET /integrations` (secrets masked).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "provider": self.provider,
            "credentials": self.credentials.masked(),
        });
        if !self.description.is_empty() {
            v["description"] = Value::String(self.description.clone());
        }
        v
    }
}

/// The desired and reported state of a device in one integration's cloud.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    #[serde(default)]
    pub desired: Option<Map<String, Value>>,
    #[serde(default)]
    pub reported: Option<Map<String, Value>>,
}

/// How one event reached one integration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    pub integration_id: String,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

/// What a webhook receives (upstream `WebhookEvent`): `data` is the device event (`id`, and
/// `status`, `auth_sets`, `created_ts` where the type has them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    pub time: String,
}

impl WebhookEvent {
    /// The device the event is about.
    pub fn device_id(&self) -> &str {
        self.data.get("id").and_then(Value::as_str).unwrap_or("")
    }

    /// The device's status in a provisioning or status change event.
    pub fn status(&self) -> &str {
        self.data
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// A recorded event: the webhook body plus its delivery statuses (`GET /events`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(flatten)]
    pub event: WebhookEvent,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivery_statuses: Vec<DeliveryStatus>,
}

// ------------------------------------------------------------------------------------------------
// Validation with upstream's texts (ozzo-validation: `key: message; other: (nested).`, keys sorted).
// ------------------------------------------------------------------------------------------------

enum Problem {
    Text(String),
    Nested(Problems),
}

#[derive(Default)]
struct Problems(BTreeMap<&'static str, Problem>);

impl Problems {
    fn text(&mut self, key: &'static str, message: impl Into<String>) {
        self.0.insert(key, Problem::Text(message.into()));
    }
    fn nested(&mut self, key: &'static str, nested: Problems) {
        if !nested.0.is_empty() {
            self.0.insert(key, Problem::Nested(nested));
        }
    }
    fn into_result(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.to_string())
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (key, problem)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match problem {
                Problem::Text(m) => write!(f, "{key}: {m}")?,
                Problem::Nested(n) => write!(f, "{key}: ({n})")?,
            }
        }
        f.write_str(".")
    }
}

const BLANK: &str = "cannot be blank";

/// What checking credentials needs: the address policy (webhook URLs) and the trusted IoT Hub
/// hostnames (connection strings).
pub struct Checks<'a> {
    pub policy: &'a AddressPolicy,
    pub trusted_domains: &'a [String],
}

/// The request body of `POST /integrations`.
#[derive(Deserialize)]
struct IntegrationRequest {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    credentials: CredentialsRequest,
    #[serde(default)]
    description: String,
}

#[derive(Default, Deserialize)]
struct CredentialsRequest {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    aws: Option<AwsCredentials>,
    #[serde(default)]
    connection_string: Option<String>,
    #[serde(default)]
    http: Option<HttpCredentials>,
}

fn malformed(e: impl fmt::Display) -> String {
    format!("malformed request body: {e}")
}

/// Decodes what Go decodes while reading the JSON (the connection string is parsed and its
/// hostname checked, the secret must be hex), as `malformed request body: ...`.
async fn decode_credentials(
    request: CredentialsRequest,
    checks: &Checks<'_>,
) -> Result<Credentials, String> {
    let mut credentials = Credentials {
        kind: request.kind,
        aws: request.aws,
        connection_string: None,
        http: request.http,
    };
    if let Some(text) = request.connection_string.filter(|t| !t.is_empty()) {
        let cs = ConnectionString::parse(&text).map_err(malformed)?;
        cs.validate(checks.trusted_domains)
            .await
            .map_err(|e| malformed(format!("connection string invalid: {e}")))?;
        credentials.connection_string = Some(cs.to_string());
    }
    if let Some(secret) = credentials.http.as_ref().and_then(|h| h.secret.as_ref()) {
        if hex::decode(secret).is_err() {
            return Err(malformed(format!(
                "value error: '{secret}' is not a hexadecimal string"
            )));
        }
    }
    Ok(credentials)
}

/// Upstream `Credentials.Validate`.
async fn credential_problems(credentials: &Credentials, checks: &Checks<'_>) -> Problems {
    let mut p = Problems::default();
    match credentials.kind.as_str() {
        "" => p.text("type", BLANK),
        CREDENTIALS_AWS | CREDENTIALS_SAS | CREDENTIALS_HTTP => {}
        _ => p.text("type", "must be a valid value"),
    }
    match &credentials.aws {
        None if credentials.kind == CREDENTIALS_AWS => p.text("aws", BLANK),
        None => {}
        Some(aws) => {
            let mut a = Problems::default();
            let fields = [
                ("access_key_id", &aws.access_key_id),
                ("secret_access_key", &aws.secret_access_key),
                ("region", &aws.region),
                ("device_policy_name", &aws.device_policy_name),
            ];
            for (name, value) in fields {
                if value.as_deref().unwrap_or("").is_empty() {
                    a.text(name, BLANK);
                }
            }
            p.nested("aws", a);
        }
    }
    if credentials.connection_string.is_none() && credentials.kind == CREDENTIALS_SAS {
        p.text("connection_string", BLANK);
    }
    match &credentials.http {
        None if credentials.kind == CREDENTIALS_HTTP => p.text("http", BLANK),
        None => {}
        Some(http) => {
            let mut h = Problems::default();
            if http.url.is_empty() {
                h.text("url", BLANK);
            } else if let Err(e) = checks.policy.check_url(&http.url).await {
                h.text("url", e.to_string());
            }
            p.nested("http", h);
        }
    }
    p
}

fn compatible(provider: &str, kind: &str) -> bool {
    matches!(
        (provider, kind),
        (PROVIDER_IOT_HUB, CREDENTIALS_SAS)
            | (PROVIDER_IOT_CORE, CREDENTIALS_AWS)
            | (PROVIDER_WEBHOOK, CREDENTIALS_HTTP)
    )
}

/// Parses and validates `POST /integrations`; the error is the whole 400 message.
pub async fn parse_integration(body: &[u8], checks: &Checks<'_>) -> Result<Integration, String> {
    let request: IntegrationRequest = parse_body(body)?;
    let credentials = decode_credentials(request.credentials, checks).await?;
    let mut p = Problems::default();
    p.nested(
        "credentials",
        credential_problems(&credentials, checks).await,
    );
    if request.description.chars().count() > 1024 {
        p.text("description", "the length must be no more than 1024");
    }
    if request.provider.is_empty() {
        p.text("provider", BLANK);
    } else if !compatible(&request.provider, &credentials.kind) {
        p.text(
            "provider",
            format!(
                "'{}' incompatible with credential type '{}'",
                request.provider, credentials.kind
            ),
        );
    }
    p.into_result().map_err(malformed)?;
    Ok(Integration {
        id: uuid::Uuid::new_v4().to_string(),
        provider: request.provider,
        credentials,
        description: request.description,
    })
}

/// Parses and validates `PUT /integrations/{id}/credentials`.
pub async fn parse_credentials(body: &[u8], checks: &Checks<'_>) -> Result<Credentials, String> {
    let request: CredentialsRequest = parse_body(body)?;
    let credentials = decode_credentials(request, checks).await?;
    credential_problems(&credentials, checks)
        .await
        .into_result()
        .map_err(malformed)?;
    Ok(credentials)
}

/// Whether stored credentials can serve their integration's provider.
pub fn usable(integration: &Integration) -> bool {
    compatible(&integration.provider, &integration.credentials.kind)
}

/// Parses `PUT /devices/{id}/state/{integration}`.
pub fn parse_state(body: &[u8]) -> Result<DeviceState, String> {
    parse_body(body)
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("EOF"));
    }
    mender_http::json::from_go_json(body).map_err(malformed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn checks() -> (AddressPolicy, Vec<String>) {
        (
            AddressPolicy::default(),
            vec!["*.azure-devices.net".to_owned()],
        )
    }

    async fn problem(body: &str) -> String {
        let (policy, trusted) = checks();
        let checks = Checks {
            policy: &policy,
            trusted_domains: &trusted,
        };
        parse_integration(body.as_bytes(), &checks)
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn upstream_validation_texts() {
        assert_eq!(
            problem(r#"{"provider":"webhook","credentials":{"type":"aws"}}"#).await,
            "malformed request body: credentials: (aws: cannot be blank.); provider: 'webhook' incompatible with credential type 'aws'."
        );
        assert_eq!(
            problem(r#"{"provider":"webhook","credentials":{"type":"http","http":{"url":"http://10.0.0.1/x"}}}"#).await,
            "malformed request body: credentials: (http: (url: hostname resolves to reserved address.).)."
        );
        assert_eq!(
            problem(r#"{"credentials":{}}"#).await,
            "malformed request body: credentials: (type: cannot be blank.); provider: cannot be blank."
        );
        assert_eq!(
            problem(r#"{"provider":"webhook","credentials":{"type":"http","http":{"url":"http://1.1.1.1","secret":"xyz"}}}"#).await,
            "malformed request body: value error: 'xyz' is not a hexadecimal string"
        );
        assert_eq!(
            problem(r#"{"provider":"iot-core","credentials":{"type":"aws","aws":{"region":"eu-west-1"}}}"#).await,
            "malformed request body: credentials: (aws: (access_key_id: cannot be blank; device_policy_name: cannot be blank; secret_access_key: cannot be blank.).)."
        );
        assert!(problem(r#"{"provider":"iot-hub","credentials":{"type":"sas","connection_string":"HostName=evil.example.com;SharedAccessKeyName=x;SharedAccessKey=YWJj"}}"#)
            .await
            .starts_with("malformed request body: connection string invalid: HostName: hostname does not refer to a trusted domain"));
    }

    #[test]
    fn secrets_are_masked() {
        let integration = Integration {
            id: "x".into(),
            provider: PROVIDER_IOT_CORE.into(),
            credentials: Credentials {
                kind: CREDENTIALS_AWS.into(),
                aws: Some(AwsCredentials {
                    access_key_id: Some("AKID".into()),
                    secret_access_key: Some("very secret".into()),
                    region: Some("eu-west-1".into()),
                    device_policy_name: Some("p".into()),
                }),
                ..Credentials::default()
            },
            description: String::new(),
        };
        let shown = integration.to_json().to_string();
        assert!(!shown.contains("very secret"), "{shown}");
        assert!(shown.contains("<omitted>"), "{shown}");
    }
}
