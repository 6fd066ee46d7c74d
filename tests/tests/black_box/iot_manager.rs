//! iot-manager end to end: a tenant's integration receives the device lifecycle events.
//!
//! * webhook: the real Debian `mender-client` is accepted, then decommissioned; a local
//!   receiver gets signed `device-provisioned` and `device-decommissioned` events (HMAC-SHA256
//!   of the body with the integration's secret, checked here independently), `GET /events`
//!   lists them with their delivery statuses, a refused address is a 400, and a queue message
//!   delivered again sends nothing twice;
//! * AWS IoT Core against moto (the emulators' SQS server also emulates `iot` and `iot-data`):
//!   accepting a device creates its Thing with an active certificate and the integration's
//!   policy, rejecting deactivates it, the device state round-trips through the shadow,
//!   decommissioning removes the Thing;
//! * Azure IoT Hub against a local HTTPS server that checks each request as Azure documents its
//!   service API: `api-version`, the SharedAccessSignature (`sr` the URL-encoded host, `sig`
//!   the HMAC-SHA256 of `sr\nse` with the base64-decoded key, `se` in the future, `skn` the
//!   policy) and the paths.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use base64::Engine;
use black_box_tests::mgmt::location;
use black_box_tests::{mender_available, wait_for, MenderClient, Mgmt, TestStack};
use hmac::{Hmac, Mac};
use iot_manager::Store as _;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use workflows::{Job, Publisher};

const IOT: &str = "/api/management/v1/iot-manager";

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// One POST the webhook receiver got: its headers and body.
type Post = (HeaderMap, Vec<u8>);

/// What the webhook receiver got, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Post>>>);

impl Received {
    fn events(&self) -> Vec<(HeaderMap, Value)> {
        self.0
            .lock()
            .map(|r| {
                r.iter()
                    .map(|(h, b)| (h.clone(), serde_json::from_slice(b).unwrap_or(Value::Null)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn raw(&self) -> Vec<(HeaderMap, Vec<u8>)> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn of(&self, device: &str, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e["data"]["id"] == device && e["type"] == kind)
            .collect()
    }
}

/// A plain-HTTP webhook receiver on 127.0.0.1 (allowed by the local stack's address policy).
async fn webhook_receiver() -> anyhow::Result<(String, Received)> {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(r): State<Received>, headers: HeaderMap, body: bytes::Bytes| async move {
                    if let Ok(mut all) = r.0.lock() {
                        all.push((headers, body.to_vec()));
                    }
                    StatusCode::OK
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, received))
}

/// Publishes a new event of `device` and waits until the receiver got it: FIFO per device, so
/// every message of the device published before it was handled by then.
async fn marker_delivered(
    publisher: &workflows::SqsPublisher,
    received: &Received,
    device: &str,
) -> anyhow::Result<()> {
    let marker = uuid::Uuid::new_v4().to_string();
    publisher
        .publish(Job::IotManagerEvent {
            request_id: "marker".into(),
            tenant_id: String::new(),
            event_id: marker.clone(),
            event_type: "device-status-changed".into(),
            time: mender_http::time::now_string(),
            device: json!({"id": device, "status": "rejected"}),
        })
        .await?;
    wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
        let received = received.clone();
        let marker = marker.clone();
        async move {
            received
                .events()
                .iter()
                .any(|(_, e)| e["id"] == marker.as_str())
                .then_some(())
        }
    })
    .await?;
    Ok(())
}

/// The device's deviceconfig configuration once its configured `key` is a string (the
/// credentials upstream's provision_external_device hands to the device).
async fn configured_with(admin: &Mgmt, id: &str, key: &str) -> anyhow::Result<Value> {
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(250),
        || async {
            let (_, config) = admin
                .request_json(
                    Method::GET,
                    &format!("/api/management/v1/deviceconfig/configurations/device/{id}"),
                    None,
                )
                .await
                .ok()?;
            config["configured"][key].is_string().then_some(config)
        },
    )
    .await
}

async fn create_integration(admin: &Mgmt, body: Value) -> anyhow::Result<String> {
    let (status, headers, bytes) = admin
        .request(Method::POST, &format!("{IOT}/integrations"), Some(body))
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "create integration: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    let location = location(&headers);
    let id = location.rsplit('/').next().unwrap_or_default().to_owned();
    anyhow::ensure!(
        location == format!("{IOT}/integrations/{id}") && uuid::Uuid::parse_str(&id).is_ok(),
        "Location {location:?}"
    );
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_signed_lifecycle_events_of_a_real_device_once() -> anyhow::Result<()> {
    anyhow::ensure!(
        mender_available(),
        "Debian mender-client missing: run scripts/deps.sh"
    );
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (url, received) = webhook_receiver().await?;
    let secret = b"webhook-secret-0123456789";

    // No integration yet: an empty list (the GUI asks on every load).
    let (status, list) = admin
        .request_json(Method::GET, &format!("{IOT}/integrations"), None)
        .await?;
    assert_eq!(
        (status, list.clone()),
        (StatusCode::OK, json!([])),
        "{list}"
    );

    // A webhook to a refused address (link-local, private) is a 400, as upstream says it.
    for refused in [
        "http://169.254.169.254/latest/meta-data",
        "http://10.20.30.40/hook",
    ] {
        let (status, body) = admin
            .request_json(
                Method::POST,
                &format!("{IOT}/integrations"),
                Some(json!({"provider": "webhook", "credentials": {"type": "http", "http": {"url": refused}}})),
            )
            .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}: {body}");
        assert_eq!(
            body["error"],
            "malformed request body: credentials: (http: (url: hostname resolves to reserved address.).).",
            "{body}"
        );
    }

    let integration = create_integration(
        &admin,
        json!({
            "provider": "webhook",
            "credentials": {"type": "http", "http": {"url": url, "secret": hex::encode(secret)}},
            "description": "test receiver",
        }),
    )
    .await?;
    // Read back with the secret masked; one integration per tenant.
    let (_, list) = admin
        .request_json(Method::GET, &format!("{IOT}/integrations"), None)
        .await?;
    assert_eq!(list[0]["id"], integration.as_str(), "{list}");
    assert_eq!(list[0]["credentials"]["http"]["url"], url.as_str());
    assert_eq!(list[0]["credentials"]["http"]["secret"], "<omitted>");
    let (status, _) = admin
        .request_json(
            Method::POST,
            &format!("{IOT}/integrations"),
            Some(json!({"provider": "webhook", "credentials": {"type": "http", "http": {"url": url}}})),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    // New credentials naming a refused address are refused too.
    let (status, body) = admin
        .request_json(
            Method::PUT,
            &format!("{IOT}/integrations/{integration}/credentials"),
            Some(json!({"type": "http", "http": {"url": "http://192.168.0.1/x"}})),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The real client asks to be authenticated; it is accepted.
    let mac = "02:00:00:00:10:71";
    let mut client = MenderClient::start(stack.url(), &stack.ca_cert(), mac)?;
    let device = admin
        .wait_for_device_by_mac(mac, black_box_tests::FIRST_REQUEST_WAIT)
        .await?;
    let id = device["id"].as_str().unwrap_or_default().to_owned();
    admin.accept_device(&id).await?;
    let provisioned = wait_for(Duration::from_secs(60), Duration::from_millis(250), || {
        let received = received.clone();
        let id = id.clone();
        async move { received.of(&id, "device-provisioned").into_iter().next() }
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "no device-provisioned webhook: {e}\n{}",
            client.log_tail(20)
        )
    })?;
    assert_eq!(provisioned["data"]["status"], "accepted", "{provisioned}");
    assert_eq!(
        provisioned["data"]["auth_sets"][0]["identity_data"]["mac"], mac,
        "{provisioned}"
    );
    assert!(
        provisioned["data"]["created_ts"].is_string(),
        "{provisioned}"
    );
    assert!(uuid::Uuid::parse_str(provisioned["id"].as_str().unwrap_or("")).is_ok());
    assert!(
        chrono::DateTime::parse_from_rfc3339(provisioned["time"].as_str().unwrap_or("")).is_ok(),
        "{provisioned}"
    );

    // Every delivery is signed: X-Men-Signature = hex(HMAC-SHA256(secret, body)).
    for (headers, body) in received.raw() {
        assert_eq!(
            headers.get("x-men-algorithm").and_then(|v| v.to_str().ok()),
            Some("MEN-HMAC-SHA256-Payload")
        );
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let signature = headers
            .get("x-men-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(signature, hex::encode(hmac_sha256(secret, &body)));
    }

    // Decommissioned: a second event. The client stops first: running on, it would ask again
    // and become a new pending device, whose status event would be the newest one.
    client.stop()?;
    admin.decommission(&id).await?;
    wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
        let received = received.clone();
        let id = id.clone();
        async move { (!received.of(&id, "device-decommissioned").is_empty()).then_some(()) }
    })
    .await?;

    // GET /events lists both (newest first), each delivered to the integration with a 200.
    // The step records a delivery once the webhook has answered, so the list can lag the
    // receiver by a moment: read it until the decommissioning shows with its delivery.
    let events = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let (status, events) = admin
                .request_json(
                    Method::GET,
                    &format!("{IOT}/events?integration_id={integration}"),
                    None,
                )
                .await
                .ok()?;
            let events = events
                .as_array()
                .cloned()
                .filter(|_| status == StatusCode::OK)?;
            let recorded = events.iter().any(|e| {
                e["data"]["id"] == id.as_str()
                    && e["type"] == "device-decommissioned"
                    && e["delivery_statuses"]
                        .as_array()
                        .is_some_and(|d| !d.is_empty())
            });
            recorded.then_some(events)
        },
    )
    .await
    .context("GET /events never listed the delivered device-decommissioned event")?;
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["data"]["id"] == id.as_str())
        .filter_map(|e| e["type"].as_str())
        .collect();
    let decommissioned_at = kinds.iter().position(|k| *k == "device-decommissioned");
    let provisioned_at = kinds.iter().position(|k| *k == "device-provisioned");
    assert!(
        matches!((decommissioned_at, provisioned_at), (Some(d), Some(p)) if d < p),
        "{kinds:?}"
    );
    for event in &events {
        assert_eq!(
            event["delivery_statuses"],
            json!([{"integration_id": integration, "success": true, "status_code": 200}]),
            "{event}"
        );
    }
    let (_, first_page) = admin
        .request_json(Method::GET, &format!("{IOT}/events?per_page=1"), None)
        .await?;
    assert_eq!(first_page.as_array().map(Vec::len), Some(1));
    assert_eq!(first_page[0]["type"], "device-decommissioned");
    let (status, _) = admin
        .request_json(
            Method::GET,
            &format!("{IOT}/events?integration_id=nope"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The provisioning message delivered again (same event id), then a new event of the same
    // device: FIFO per device, so once the new one arrived the old one was handled, and it
    // sent nothing.
    let publisher = workflows::SqsPublisher {
        client: mender_aws::sqs(&mender_aws::load_sdk_config().await),
        urls: stack.stack.created.queue_urls()?,
    };
    let again = Job::IotManagerEvent {
        request_id: "redelivery".into(),
        tenant_id: String::new(),
        event_id: provisioned["id"].as_str().unwrap_or_default().to_owned(),
        event_type: "device-provisioned".into(),
        time: provisioned["time"].as_str().unwrap_or_default().to_owned(),
        device: provisioned["data"].clone(),
    };
    publisher.publish(again).await?;
    marker_delivered(&publisher, &received, &id).await?;
    assert_eq!(received.of(&id, "device-provisioned").len(), 1);
    assert_eq!(received.of(&id, "device-decommissioned").len(), 1);

    // An attempt that claimed an event and died before finishing it (claimed 200 s ago, past
    // the 120 s lease, no delivery statuses): the redelivered message delivers it once.
    let store = iot_manager::DynamoStore::new(
        mender_aws::dynamodb(&mender_aws::load_sdk_config().await),
        stack.stack.created.table("IotManagerTable")?,
    );
    let orphan = iot_manager::model::WebhookEvent {
        id: uuid::Uuid::new_v4().to_string(),
        kind: "device-status-changed".into(),
        data: json!({"id": id, "status": "accepted"}),
        time: mender_http::time::now_string(),
    };
    let now = chrono::Utc::now().timestamp();
    store
        .claim_event("", &orphan, now - 200, 120, now + 3600)
        .await?;
    let orphan_job = Job::IotManagerEvent {
        request_id: "orphan".into(),
        tenant_id: String::new(),
        event_id: orphan.id.clone(),
        event_type: orphan.kind.clone(),
        time: orphan.time.clone(),
        device: orphan.data.clone(),
    };
    publisher.publish(orphan_job.clone()).await?;
    publisher.publish(orphan_job).await?;
    marker_delivered(&publisher, &received, &id).await?;
    let delivered = received
        .events()
        .iter()
        .filter(|(_, e)| e["id"] == orphan.id.as_str())
        .count();
    assert_eq!(delivered, 1, "an orphaned claim is taken over once");

    // A webhook integration may be removed at any time.
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            &format!("{IOT}/integrations/{integration}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin
        .request_json(
            Method::GET,
            &format!("{IOT}/integrations/{integration}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    stack.stop().await;
    Ok(())
}

/// A simulated device (signed auth requests, no process) that is pending now; its id.
async fn pending_device(stack: &TestStack, admin: &Mgmt, mac: &str) -> anyhow::Result<String> {
    let mut device = stack.device(mac)?;
    device.authenticate().await?;
    admin.wait_for_device_id(mac, Duration::from_secs(20)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_iot_core_things_follow_the_device() -> anyhow::Result<()> {
    use iot_manager::aws_sdk_iot::types::CertificateStatus;

    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    // moto, through AWS_ENDPOINT_URL, as the stack's iot-manager reaches it
    let sdk = mender_aws::load_sdk_config().await;
    let iot = iot_manager::aws_sdk_iot::Client::new(&sdk);
    let policy = format!("mender-{}", stack.prefix.trim_end_matches('-'));
    iot.create_policy()
        .policy_name(&policy)
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]})
                .to_string(),
        )
        .send()
        .await?;
    let integration = create_integration(
        &admin,
        json!({
            "provider": "iot-core",
            "credentials": {"type": "aws", "aws": {
                "access_key_id": "AKIAIOSFODNN7EXAMPLE",
                "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "region": "us-east-1",
                "device_policy_name": policy,
            }},
        }),
    )
    .await?;
    let (_, shown) = admin
        .request_json(
            Method::GET,
            &format!("{IOT}/integrations/{integration}"),
            None,
        )
        .await?;
    assert_eq!(
        shown["credentials"]["aws"]["secret_access_key"], "<omitted>",
        "{shown}"
    );

    // Accepted: the Thing appears, its one certificate active with the policy attached.
    let id = pending_device(&stack, &admin, "02:00:00:00:10:72").await?;
    let auth_id = admin.accept_device(&id).await?;
    let certificate = wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
        let iot = iot.clone();
        let id = id.clone();
        async move {
            let principals = iot
                .list_thing_principals()
                .thing_name(&id)
                .send()
                .await
                .ok()?;
            principals.principals().first().cloned()
        }
    })
    .await?;
    let certificate_id = certificate
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let status = |iot: iot_manager::aws_sdk_iot::Client, cert: String| async move {
        iot.describe_certificate()
            .certificate_id(cert)
            .send()
            .await
            .ok()?
            .certificate_description()?
            .status()
            .cloned()
    };
    assert_eq!(
        status(iot.clone(), certificate_id.clone()).await,
        Some(CertificateStatus::Active)
    );
    let policies = iot
        .list_attached_policies()
        .target(&certificate)
        .send()
        .await?;
    assert_eq!(
        policies
            .policies()
            .iter()
            .filter_map(|p| p.policy_name())
            .collect::<Vec<_>>(),
        vec![policy.as_str()]
    );
    // The device's credentials went to deviceconfig (upstream's provision_external_device).
    let configured = configured_with(&admin, &id, "awsCertificate").await?;
    assert!(configured["configured"]["awsPrivateKey"]
        .as_str()
        .is_some_and(|k| k.starts_with("-----BEGIN PRIVATE KEY-----")));
    assert!(configured["configured"]["awsEndpoint"]
        .as_str()
        .is_some_and(|e| e.contains("-ats.iot.")));

    // The device state round-trips through the shadow.
    let state_path = format!("{IOT}/devices/{id}/state/{integration}");
    let (status_code, state) = admin.request_json(Method::GET, &state_path, None).await?;
    assert_eq!(status_code, StatusCode::OK, "{state}");
    assert_eq!(state["desired"], json!({}), "{state}");
    let (status_code, state) = admin
        .request_json(
            Method::PUT,
            &state_path,
            Some(json!({"desired": {"interval": 5, "mode": "eco"}})),
        )
        .await?;
    assert_eq!(status_code, StatusCode::OK, "{state}");
    assert_eq!(
        state["desired"],
        json!({"interval": 5, "mode": "eco"}),
        "{state}"
    );
    let (_, state) = admin.request_json(Method::GET, &state_path, None).await?;
    assert_eq!(
        state["desired"],
        json!({"interval": 5, "mode": "eco"}),
        "{state}"
    );
    let (_, all) = admin
        .request_json(Method::GET, &format!("{IOT}/devices/{id}/state"), None)
        .await?;
    assert_eq!(all[integration.as_str()]["desired"]["mode"], "eco", "{all}");
    let (status_code, _) = admin
        .request_json(
            Method::GET,
            &format!("{IOT}/devices/{id}/state/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await?;
    assert_eq!(status_code, StatusCode::NOT_FOUND);

    // A cloud integration in use stays.
    let (status_code, _, _) = admin
        .request(
            Method::DELETE,
            &format!("{IOT}/integrations/{integration}"),
            None,
        )
        .await?;
    assert_eq!(status_code, StatusCode::CONFLICT);

    // Rejected: the certificate is deactivated.
    admin.set_auth_status(&id, &auth_id, "rejected").await?;
    wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
        let iot = iot.clone();
        let cert = certificate_id.clone();
        async move { (status(iot, cert).await == Some(CertificateStatus::Inactive)).then_some(()) }
    })
    .await?;

    // Decommissioned: the Thing is gone, and so is the device in iot-manager.
    admin.decommission(&id).await?;
    let gone = wait_for(Duration::from_secs(40), Duration::from_millis(250), || {
        let iot = iot.clone();
        let id = id.clone();
        async move {
            iot.describe_thing()
                .thing_name(&id)
                .send()
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    if let Err(e) = gone {
        let (_, events) = admin
            .request_json(Method::GET, &format!("{IOT}/events"), None)
            .await?;
        anyhow::bail!("{e}: the Thing is still there; events: {events:#}");
    }
    wait_for(Duration::from_secs(20), Duration::from_millis(250), || {
        let admin = admin.clone();
        let id = id.clone();
        async move {
            let (status, _) = admin
                .request_json(Method::GET, &format!("{IOT}/devices/{id}/state"), None)
                .await
                .ok()?;
            (status == StatusCode::NOT_FOUND).then_some(())
        }
    })
    .await?;
    let (_, events) = admin
        .request_json(Method::GET, &format!("{IOT}/events"), None)
        .await?;
    let kinds: Vec<&str> = events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"device-provisioned"), "{kinds:?}");
    assert!(kinds.contains(&"device-decommissioned"), "{kinds:?}");
    for event in events.as_array().into_iter().flatten() {
        for delivery in event["delivery_statuses"].as_array().into_iter().flatten() {
            assert_eq!(delivery["success"], true, "{event}");
        }
    }
    // Unlinked now, the integration may go.
    let (status_code, _, _) = admin
        .request(
            Method::DELETE,
            &format!("{IOT}/integrations/{integration}"),
            None,
        )
        .await?;
    assert_eq!(status_code, StatusCode::NO_CONTENT);
    stack.stop().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// A small IoT Hub: device identities and twins in memory, every request checked as Azure's
// service REST API documents it.
// ------------------------------------------------------------------------------------------------

const HUB_POLICY: &str = "iothubowner";
const HUB_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

#[derive(Default)]
struct HubState {
    /// `host:port` the SAS token must name.
    host: String,
    devices: HashMap<String, Value>,
    twins: HashMap<String, Value>,
    etag: u64,
    /// `METHOD path` of each accepted request.
    log: Vec<String>,
    /// What was refused, and why.
    refused: Vec<String>,
}

type Hub = Arc<Mutex<HubState>>;

/// Azure's URL encoding of the resource URI (`encodeURIComponent`-like: `:` is `%3A`).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The SharedAccessSignature check: `SharedAccessSignature sr=..&sig=..&se=..&skn=..`.
fn check_sas(hub: &HubState, headers: &HeaderMap) -> Result<(), String> {
    let header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header")?;
    let token = header
        .strip_prefix("SharedAccessSignature ")
        .ok_or("not a SharedAccessSignature")?;
    let fields: HashMap<&str, &str> = token
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let (sr, sig, se) = (
        fields.get("sr").ok_or("no sr")?,
        fields.get("sig").ok_or("no sig")?,
        fields.get("se").ok_or("no se")?,
    );
    if *sr != url_encode(&hub.host) {
        return Err(format!("sr {sr} does not name {}", hub.host));
    }
    if fields.get("skn") != Some(&HUB_POLICY) {
        return Err("skn is not the policy".into());
    }
    let expiry: i64 = se.parse().map_err(|_| "se is not a number")?;
    if expiry <= chrono::Utc::now().timestamp() {
        return Err("token expired".into());
    }
    let expected = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(HUB_KEY, format!("{sr}\n{se}").as_bytes()));
    if url_decode(sig) != expected {
        return Err("signature mismatch".into());
    }
    Ok(())
}

async fn hub_handler(
    State(hub): State<Hub>,
    method: Method,
    Path((collection, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let Ok(mut hub) = hub.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if query.get("api-version").map(String::as_str) != Some("2021-04-12") {
        hub.refused
            .push(format!("{method} {collection}/{id}: api-version {query:?}"));
        return StatusCode::BAD_REQUEST.into_response();
    }
    if let Err(why) = check_sas(&hub, &headers) {
        hub.refused
            .push(format!("{method} {collection}/{id}: {why}"));
        return StatusCode::UNAUTHORIZED.into_response();
    }
    hub.log.push(format!("{method} {collection}/{id}"));
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    hub.etag += 1;
    let etag = format!("etag-{}", hub.etag);
    match (collection.as_str(), method.as_str()) {
        ("devices", "PUT") => {
            if body["deviceId"] != id.as_str() {
                hub.refused.push(format!("PUT devices/{id}: body {body}"));
                return StatusCode::BAD_REQUEST.into_response();
            }
            let mut device = body.clone();
            if let Some(old) = hub.devices.get(&id) {
                let wanted = format!("\"{}\"", old["etag"].as_str().unwrap_or(""));
                if headers.get("if-match").and_then(|v| v.to_str().ok()) != Some(wanted.as_str()) {
                    return StatusCode::PRECONDITION_FAILED.into_response();
                }
                device["authentication"] = old["authentication"].clone();
            } else {
                device["authentication"] = json!({"type": "sas", "symmetricKey": {
                    "primaryKey": "cHJpbWFyeS1rZXktb2YtdGhlLWRldmljZQ==",
                    "secondaryKey": "c2Vjb25kYXJ5LWtleQ=="}});
                device["status"] = json!(device["status"].as_str().unwrap_or("enabled"));
                hub.twins.insert(
                    id.clone(),
                    json!({"deviceId": id, "tags": {}, "properties": {"desired": {"$version": 1}, "reported": {"$version": 1, "$metadata": {}}}}),
                );
            }
            device["etag"] = json!(etag);
            hub.devices.insert(id, device.clone());
            Json(device).into_response()
        }
        ("devices", "GET") => match hub.devices.get(&id) {
            Some(d) => Json(d.clone()).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        ("devices", "DELETE") => {
            if headers.get("if-match").and_then(|v| v.to_str().ok()) != Some("*") {
                hub.refused
                    .push(format!("DELETE devices/{id}: no If-Match *"));
                return StatusCode::PRECONDITION_FAILED.into_response();
            }
            hub.twins.remove(&id);
            match hub.devices.remove(&id) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        ("twins", "GET") => match hub.twins.get(&id) {
            Some(t) => {
                let mut t = t.clone();
                t["etag"] = json!(etag.clone());
                hub.twins.insert(id, t.clone());
                Json(t).into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        },
        ("twins", "PATCH" | "PUT") => {
            let Some(twin) = hub.twins.get(&id).cloned() else {
                return StatusCode::NOT_FOUND.into_response();
            };
            if let Some(m) = headers.get("if-match").and_then(|v| v.to_str().ok()) {
                if m != format!("\"{}\"", twin["etag"].as_str().unwrap_or("")) {
                    return StatusCode::PRECONDITION_FAILED.into_response();
                }
            }
            let mut twin = twin;
            if let Some(tags) = body.get("tags").and_then(Value::as_object) {
                for (k, v) in tags {
                    twin["tags"][k] = v.clone();
                }
            }
            if let Some(desired) = body
                .pointer("/properties/desired")
                .and_then(Value::as_object)
            {
                let mut desired = desired.clone();
                desired.insert("$version".into(), json!(2));
                twin["properties"]["desired"] = Value::Object(desired);
            }
            hub.twins.insert(id, twin.clone());
            Json(twin).into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// The hub on 127.0.0.1 over HTTPS with the stack's server certificate (the stack trusts its
/// own CA for outbound requests locally).
async fn iot_hub(stack: &TestStack) -> anyhow::Result<(String, Hub)> {
    let hub: Hub = Arc::default();
    let app = Router::new()
        .route("/{collection}/{id}", any(hub_handler))
        .with_state(hub.clone());
    let dir = stack
        .ca_cert()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(
        dir.join("server.crt"),
        dir.join("server.key"),
    )
    .await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let host = format!("127.0.0.1:{}", listener.local_addr()?.port());
    if let Ok(mut state) = hub.lock() {
        state.host = host.clone();
    }
    let server = axum_server::from_tcp_rustls(listener, tls)?;
    tokio::spawn(async move {
        let _ = server.serve(app.into_make_service()).await;
    });
    Ok((host, hub))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_hub_gets_identities_and_twins_with_sas_tokens() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (host, hub) = iot_hub(&stack).await?;
    let key = base64::engine::general_purpose::STANDARD.encode(HUB_KEY);
    let connection_string =
        format!("HostName={host};SharedAccessKeyName={HUB_POLICY};SharedAccessKey={key}");
    // an untrusted hub host is refused
    let (status, body) = admin
        .request_json(
            Method::POST,
            &format!("{IOT}/integrations"),
            Some(json!({"provider": "iot-hub", "credentials": {"type": "sas",
                "connection_string": format!("HostName=hub.example.com;SharedAccessKeyName=x;SharedAccessKey={key}")}})),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"],
        "malformed request body: connection string invalid: HostName: hostname does not refer to a trusted domain.",
    );
    let integration = create_integration(
        &admin,
        json!({"provider": "iot-hub", "credentials": {"type": "sas", "connection_string": connection_string}}),
    )
    .await?;
    let (_, shown) = admin
        .request_json(
            Method::GET,
            &format!("{IOT}/integrations/{integration}"),
            None,
        )
        .await?;
    let masked = format!(
        "HostName={host};SharedAccessKeyName={HUB_POLICY};SharedAccessKey={}...<omitted>",
        base64::engine::general_purpose::STANDARD.encode(&HUB_KEY[..3])
    );
    assert_eq!(shown["credentials"]["connection_string"], masked.as_str());

    // Accepted: identity created, twin tagged, the device's connection string configured.
    let id = pending_device(&stack, &admin, "02:00:00:00:10:73").await?;
    let auth_id = admin.accept_device(&id).await?;
    wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
        let hub = hub.clone();
        let id = id.clone();
        async move {
            let hub = hub.lock().ok()?;
            (hub.twins.get(&id)?["tags"]["mender"] == true).then_some(())
        }
    })
    .await?;
    let configured = configured_with(&admin, &id, "azureConnectionString").await?;
    assert_eq!(
        configured["configured"]["azureConnectionString"],
        format!(
            "HostName={host};DeviceId={id};SharedAccessKey=cHJpbWFyeS1rZXktb2YtdGhlLWRldmljZQ=="
        )
    );

    // State: the twin's properties without $metadata/$version; replaced with If-Match.
    let state_path = format!("{IOT}/devices/{id}/state/{integration}");
    let (status, state) = admin
        .request_json(
            Method::PUT,
            &state_path,
            Some(json!({"desired": {"led": "on"}})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state, json!({"desired": {"led": "on"}, "reported": {}}));
    let (_, all) = admin
        .request_json(Method::GET, &format!("{IOT}/devices/{id}/state"), None)
        .await?;
    assert_eq!(all[integration.as_str()]["desired"]["led"], "on", "{all}");

    // Rejected: the identity is disabled.
    admin.set_auth_status(&id, &auth_id, "rejected").await?;
    wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
        let hub = hub.clone();
        let id = id.clone();
        async move {
            let hub = hub.lock().ok()?;
            (hub.devices.get(&id)?["status"] == "disabled").then_some(())
        }
    })
    .await?;

    // Decommissioned: the identity is deleted.
    admin.decommission(&id).await?;
    wait_for(Duration::from_secs(30), Duration::from_millis(250), || {
        let hub = hub.clone();
        let id = id.clone();
        async move {
            let hub = hub.lock().ok()?;
            (!hub.devices.contains_key(&id) && hub.log.iter().any(|l| l.starts_with("DELETE")))
                .then_some(())
        }
    })
    .await?;
    let (refused, log) = hub
        .lock()
        .map(|h| (h.refused.clone(), h.log.clone()))
        .unwrap_or_default();
    assert!(refused.is_empty(), "refused requests: {refused:?}");
    let device_path = format!("devices/{id}");
    let twin_path = format!("twins/{id}");
    for expected in [
        format!("PUT {device_path}"),
        format!("PATCH {twin_path}"),
        format!("GET {twin_path}"),
        format!("PUT {twin_path}"),
        format!("GET {device_path}"),
        format!("DELETE {device_path}"),
    ] {
        assert!(log.contains(&expected), "{expected} not in {log:?}");
    }
    stack.stop().await;
    Ok(())
}
