//! Webhook delivery as upstream: `POST <url>` with the event as JSON (`{"id","type","data",
//! "time"}`), and when the integration has a secret the headers `X-Men-Algorithm:
//! MEN-HMAC-SHA256-Payload` and `X-Men-Signature: hex(HMAC-SHA256(secret, body))`. A status of
//! 300 or more is a failure. Unlike upstream, transport errors, 429 and 5xx are retried with
//! exponential backoff; a refused address is not.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::{HttpCredentials, WebhookEvent};
use crate::net::{AddressPolicy, RESERVED_DESTINATION};

pub const HEADER_ALGORITHM: &str = "X-Men-Algorithm";
pub const HEADER_SIGNATURE: &str = "X-Men-Signature";
pub const ALGORITHM_HMAC_SHA256: &str = "MEN-HMAC-SHA256-Payload";

/// hex(HMAC-SHA256(secret, body)).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A reqwest error with its causes (the resolver's refusal is in a source).
pub fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How often and how patiently to deliver.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each.
    pub backoff: Duration,
}

/// The outcome of one delivery: the last HTTP status seen, and the error if it failed.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// Posts `event` to the webhook, retrying transient failures.
pub async fn deliver(
    http: &reqwest::Client,
    policy: &AddressPolicy,
    credentials: &HttpCredentials,
    event: &WebhookEvent,
    retry: Retry,
) -> Outcome {
    let body = match serde_json::to_vec(event) {
        Ok(b) => b,
        Err(e) => {
            return Outcome {
                status_code: None,
                error: Some(e.to_string()),
            }
        }
    };
    let url: reqwest::Url = match credentials.url.parse() {
        Ok(u) => u,
        Err(e) => {
            return Outcome {
                status_code: None,
                error: Some(format!("invalid webhook URL: {e}")),
            }
        }
    };
    if let Err(e) = policy.check_literal(&url) {
        return Outcome {
            status_code: None,
            error: Some(e),
        };
    }
    let secret = credentials.secret_bytes();
    let mut wait = retry.backoff;
    let mut last = Outcome {
        status_code: None,
        error: Some("not attempted".into()),
    };
    for attempt in 0..retry.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
        let mut request = http
            .post(url.clone())
            .header("Content-Type", "application/json")
            .body(body.clone());
        if let Some(secret) = &secret {
            request = request
                .header(HEADER_ALGORITHM, ALGORITHM_HMAC_SHA256)
                .header(HEADER_SIGNATURE, signature(secret, &body));
        }
        let transient = match request.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                if code < 300 {
                    return Outcome {
                        status_code: Some(code),
                        error: None,
                    };
                }
                last = Outcome {
                    status_code: Some(code),
                    error: Some(format!("client: unexpected status code from API: {code}")),
                };
                code == 429 || code >= 500
            }
            Err(e) => {
                let text = error_text(&e);
                let refused = text.contains(RESERVED_DESTINATION);
                last = Outcome {
                    status_code: None,
                    error: Some(text),
                };
                !refused
            }
        };
        tracing::warn!(url = %credentials.url, attempt, error = ?last.error, "webhook delivery failed");
        if !transient {
            break;
        }
    }
    last
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn a_refused_address_is_a_failed_delivery() {
        let policy = AddressPolicy::default();
        let http = crate::net::client(&policy, Duration::from_secs(2), None).unwrap();
        let event = WebhookEvent {
            id: "e".into(),
            kind: "device-provisioned".into(),
            data: serde_json::json!({"id": "d"}),
            time: "2024-01-01T00:00:00Z".into(),
        };
        for url in ["http://127.0.0.1:9/hook", "http://localhost:9/hook"] {
            let outcome = deliver(
                &http,
                &policy,
                &HttpCredentials {
                    url: url.into(),
                    secret: None,
                },
                &event,
                Retry {
                    attempts: 3,
                    backoff: Duration::from_millis(1),
                },
            )
            .await;
            assert_eq!(outcome.status_code, None);
            assert!(
                outcome
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains(RESERVED_DESTINATION)),
                "{outcome:?}"
            );
        }
    }
}
