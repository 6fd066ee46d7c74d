//! The service's rules against the in-memory store: one integration per tenant, credentials
//! and removal (not while a cloud integration has devices), devices and their states, and
//! lifecycle events (recorded and delivered once per event id, a stale claim taken over). Webhooks
//! are delivered to a receiver on 127.0.0.1; no cloud is reached.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::store::MemoryStore;
use crate::webhook::Retry;

const T: &str = "tenant";

const CORE: &str = r#"{"provider":"iot-core","credentials":{"type":"aws","aws":{"access_key_id":"AKID","secret_access_key":"secret","region":"eu-west-1","device_policy_name":"policy"}}}"#;

fn service() -> IotManager<MemoryStore> {
    let settings = Settings {
        policy: AddressPolicy::parse("127.0.0.0/8").unwrap(),
        timeout: Duration::from_secs(5),
        retry: Retry {
            attempts: 1,
            backoff: Duration::from_millis(1),
        },
        ..Settings::default()
    };
    IotManager::with_store(MemoryStore::new(), settings).unwrap()
}

fn webhook(url: &str) -> Vec<u8> {
    json!({"provider": "webhook", "credentials": {"type": "http", "http": {"url": url}}})
        .to_string()
        .into_bytes()
}

fn event(id: &str, kind: &str, device: &str, time: &str) -> WebhookEvent {
    WebhookEvent {
        id: id.into(),
        kind: kind.into(),
        data: json!({"id": device, "status": "accepted"}),
        time: time.into(),
    }
}

fn message(e: Error) -> (&'static str, String) {
    match e {
        Error::BadRequest(m) => ("bad request", m),
        Error::NotFound(m) => ("not found", m),
        Error::Conflict(m) => ("conflict", m),
        Error::Storage(e) => ("storage", e.to_string()),
        Error::Internal(m) => ("internal", m),
    }
}

fn not_found(text: &str) -> (&'static str, String) {
    ("not found", text.to_owned())
}

/// Whether `request` holds its headers and all of its body.
fn complete(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    request.len() >= end + 4 + length
}

/// A webhook receiver on 127.0.0.1 answering 200 to every request: its URL and how many
/// requests it received.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !complete(&request) {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn one_integration_per_tenant() {
    let iot = service();
    let created = iot
        .create_integration(T, &webhook("http://1.1.1.1/hook"))
        .await
        .unwrap();
    assert_eq!(created.provider, PROVIDER_WEBHOOK);
    assert_eq!(iot.integrations(T).await.unwrap(), vec![created.clone()]);
    assert_eq!(iot.integration(T, &created.id).await.unwrap(), created);
    assert_eq!(
        message(iot.integration(T, "other").await.unwrap_err()),
        not_found(INTEGRATION_NOT_FOUND)
    );
    // A second one is refused, whatever its provider; the first stays.
    assert_eq!(
        message(
            iot.create_integration(T, CORE.as_bytes())
                .await
                .unwrap_err()
        ),
        ("conflict", "integration already exists".into())
    );
    assert_eq!(iot.integrations(T).await.unwrap(), vec![created.clone()]);
    // Another tenant has its own.
    let theirs = iot
        .create_integration("other", CORE.as_bytes())
        .await
        .unwrap();
    assert_eq!(iot.integrations("other").await.unwrap(), vec![theirs]);
    assert_eq!(iot.integrations(T).await.unwrap(), vec![created]);
}

#[tokio::test]
async fn a_bad_integration_is_refused_and_not_stored() {
    let iot = service();
    let refused = iot
        .create_integration(T, br#"{"credentials":{}}"#)
        .await
        .unwrap_err();
    assert_eq!(
        message(refused),
        (
            "bad request",
            "malformed request body: credentials: (type: cannot be blank.); provider: cannot be blank."
                .into()
        )
    );
    assert!(iot.integrations(T).await.unwrap().is_empty());
}

#[tokio::test]
async fn credentials_change_only_on_the_integration_that_is_there() {
    let iot = service();
    let created = iot
        .create_integration(T, &webhook("http://1.1.1.1/hook"))
        .await
        .unwrap();
    let new = br#"{"type":"http","http":{"url":"http://8.8.8.8/hook"}}"#;
    iot.set_credentials(T, &created.id, new).await.unwrap();
    let url = |i: Integration| i.credentials.http.map(|h| h.url);
    let stored = iot.integration(T, &created.id).await.unwrap();
    assert_eq!(url(stored), Some("http://8.8.8.8/hook".into()));
    // Not another id, nor another tenant's integration.
    assert_eq!(
        message(iot.set_credentials(T, "other", new).await.unwrap_err()),
        not_found(INTEGRATION_NOT_FOUND)
    );
    assert_eq!(
        message(
            iot.set_credentials("other", &created.id, new)
                .await
                .unwrap_err()
        ),
        not_found(INTEGRATION_NOT_FOUND)
    );
    // Bad credentials change nothing.
    let bad = br#"{"type":"http","http":{"url":""}}"#;
    assert_eq!(
        message(iot.set_credentials(T, &created.id, bad).await.unwrap_err()).0,
        "bad request"
    );
    let stored = iot.integration(T, &created.id).await.unwrap();
    assert_eq!(url(stored), Some("http://8.8.8.8/hook".into()));
}

#[tokio::test]
async fn a_cloud_integration_with_devices_stays() {
    let iot = service();
    let core = iot.create_integration(T, CORE.as_bytes()).await.unwrap();
    iot.store
        .add_device(T, "d", std::slice::from_ref(&core.id))
        .await
        .unwrap();
    assert_eq!(
        message(iot.remove_integration(T, &core.id).await.unwrap_err()),
        (
            "conflict",
            "cannot remove integration in use by devices".into()
        )
    );
    assert_eq!(iot.integrations(T).await.unwrap(), vec![core.clone()]);
    // Once its device is forgotten, it goes.
    iot.delete_device(T, "d").await.unwrap();
    iot.remove_integration(T, &core.id).await.unwrap();
    assert!(iot.integrations(T).await.unwrap().is_empty());
    assert_eq!(
        message(iot.remove_integration(T, &core.id).await.unwrap_err()),
        not_found(INTEGRATION_NOT_FOUND)
    );
    // A webhook is removed whatever devices name it.
    let hook = iot
        .create_integration(T, &webhook("http://1.1.1.1/hook"))
        .await
        .unwrap();
    iot.store
        .add_device(T, "d", std::slice::from_ref(&hook.id))
        .await
        .unwrap();
    iot.remove_integration(T, &hook.id).await.unwrap();
    assert!(iot.integrations(T).await.unwrap().is_empty());
}

#[tokio::test]
async fn devices_and_their_states() {
    let iot = service();
    assert_eq!(
        message(iot.delete_device(T, "d").await.unwrap_err()),
        not_found(DEVICE_NOT_FOUND)
    );
    assert_eq!(
        message(iot.device_states(T, "d").await.unwrap_err()),
        not_found(DEVICE_NOT_FOUND)
    );
    let hook = iot
        .create_integration(T, &webhook("http://1.1.1.1/hook"))
        .await
        .unwrap();
    // Known, linked to nothing: no states; no state of an integration it is not linked to.
    iot.store.add_device(T, "d", &[]).await.unwrap();
    assert_eq!(iot.device_states(T, "d").await.unwrap(), json!({}));
    assert_eq!(
        message(iot.device_state(T, "d", &hook.id).await.unwrap_err()),
        not_found(INTEGRATION_NOT_FOUND)
    );
    // Linked to a webhook (no state there) and to an integration that is gone: both left out.
    let links = [hook.id.clone(), "gone".to_owned()];
    iot.store.add_device(T, "d", &links).await.unwrap();
    assert_eq!(
        message(iot.device_state(T, "d", &hook.id).await.unwrap_err()),
        not_found("unknown integration provider")
    );
    assert_eq!(iot.device_states(T, "d").await.unwrap(), json!({}));
    // Forgotten: unknown again, its links gone.
    iot.delete_device(T, "d").await.unwrap();
    assert_eq!(
        message(iot.device_states(T, "d").await.unwrap_err()),
        not_found(DEVICE_NOT_FOUND)
    );
    assert!(!iot.store.integration_in_use(T, &hook.id).await.unwrap());
}

#[tokio::test]
async fn without_integrations_events_only_keep_the_device_list() {
    let iot = service();
    let provisioned = event("e1", EVENT_PROVISIONED, "d", "2026-01-01T00:00:00Z");
    assert_eq!(
        iot.handle_event(T, &provisioned).await.unwrap(),
        Handled::default()
    );
    assert_eq!(iot.device_states(T, "d").await.unwrap(), json!({}));
    let decommissioned = event("e2", EVENT_DECOMMISSIONED, "d", "2026-01-01T00:00:01Z");
    iot.handle_event(T, &decommissioned).await.unwrap();
    assert_eq!(
        message(iot.device_states(T, "d").await.unwrap_err()),
        not_found(DEVICE_NOT_FOUND)
    );
    // Nothing was delivered, so nothing is recorded.
    assert!(iot.events(T, 0, 20, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_event_is_delivered_once_per_id() {
    let iot = service();
    let (url, hits) = receiver().await;
    let hook = iot.create_integration(T, &webhook(&url)).await.unwrap();
    let first = event("e1", EVENT_PROVISIONED, "d", "2026-01-01T00:00:00Z");
    assert_eq!(
        iot.handle_event(T, &first).await.unwrap(),
        Handled::default()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // The redelivered message finds it handled.
    iot.handle_event(T, &first).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let events = iot.events(T, 0, 20, None).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, first);
    assert_eq!(
        events[0].delivery_statuses,
        vec![DeliveryStatus {
            integration_id: hook.id.clone(),
            success: true,
            error: None,
            status_code: Some(200),
        }]
    );
    // The provisioned device is known, linked to no cloud.
    assert_eq!(iot.device_states(T, "d").await.unwrap(), json!({}));
    // Another event is another delivery; events are listed newest first.
    let second = event("e2", EVENT_STATUS_CHANGED, "d", "2026-01-01T00:00:00.5Z");
    iot.handle_event(T, &second).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let ids =
        |events: Vec<Event>| -> Vec<String> { events.into_iter().map(|e| e.event.id).collect() };
    assert_eq!(ids(iot.events(T, 0, 20, None).await.unwrap()), ["e2", "e1"]);
    assert_eq!(ids(iot.events(T, 1, 1, None).await.unwrap()), ["e1"]);
    assert_eq!(
        ids(iot.events(T, 0, 20, Some(&hook.id)).await.unwrap()),
        ["e2", "e1"]
    );
    assert!(iot
        .events(T, 0, 20, Some("other"))
        .await
        .unwrap()
        .is_empty());
    assert!(iot.events("other", 0, 20, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stale_claim_is_taken_over_and_a_live_one_is_not() {
    let iot = service();
    let (url, hits) = receiver().await;
    iot.create_integration(T, &webhook(&url)).await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let lease = Settings::default().claim_lease_secs;
    // An attempt that claimed the event past the lease ago and died before finishing it.
    let orphan = event("e1", EVENT_STATUS_CHANGED, "d", "2026-01-01T00:00:00Z");
    iot.store
        .claim_event(T, &orphan, now - lease - 10, lease, now + 3600)
        .await
        .unwrap();
    iot.handle_event(T, &orphan).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let events = iot.events(T, 0, 20, None).await.unwrap();
    assert_eq!(events.len(), 1);
    assert!(events[0].delivery_statuses[0].success);
    // One being handled right now (claimed within the lease) is left to that attempt.
    let busy = event("e2", EVENT_STATUS_CHANGED, "d", "2026-01-01T00:00:01Z");
    iot.store
        .claim_event(T, &busy, now - 10, lease, now + 3600)
        .await
        .unwrap();
    iot.handle_event(T, &busy).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_delivery_is_recorded_as_failed() {
    let iot = service();
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let hook = iot.create_integration(T, &webhook(&url)).await.unwrap();
    let e = event("e1", EVENT_PROVISIONED, "d", "2026-01-01T00:00:00Z");
    iot.handle_event(T, &e).await.unwrap();
    let events = iot.events(T, 0, 20, None).await.unwrap();
    let status = &events[0].delivery_statuses[0];
    assert_eq!(status.integration_id, hook.id);
    assert!(!status.success && status.error.is_some(), "{status:?}");
    // Recorded as handled: not delivered again.
    iot.handle_event(T, &e).await.unwrap();
    assert_eq!(iot.events(T, 0, 20, None).await.unwrap(), events);
}
