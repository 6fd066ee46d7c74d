//! Input limits keep every DynamoDB item (400 KB max) far from its limit: oversized identity
//! data is refused before anything is stored (auth request and preauthorization), a device
//! sending auth requests with ever new keys keeps a bounded number of auth sets and its item
//! stays writable, and oversized inventory values or attribute counts are refused with the
//! inventory unchanged. All errors in Mender's body (`{"error", "request_id"}`).

use std::time::Duration;

use black_box_tests::device::Device;
use black_box_tests::json_of;
use black_box_tests::mgmt::{assert_mender_error_body, https_client};
use black_box_tests::{Mgmt, TestStack};
use deviceauth::model::MAX_AUTH_SETS;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[track_caller]
fn assert_mender_error(status: StatusCode, body: &Value, what: &str) {
    assert!(status.is_client_error(), "{what}: {status} {body}");
    assert_mender_error_body(what, status, body);
}

/// A signed auth request whose `id_data` is `id_data` (JSON text), as the client builds it.
fn auth_body(device: &Device, id_data: &str) -> Vec<u8> {
    let mut body = json!({"id_data": id_data, "tenant_token": "", "pubkey": device.pubkey_pem()})
        .to_string()
        .into_bytes();
    body.push(b'\n');
    body
}

fn same_key(a: &str, b: &str) -> bool {
    a.trim() == b.trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_identity_data_is_refused_and_stores_nothing() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let http = https_client(&stack.ca_cert())?;
    let device = Device::new(stack.url(), http.clone(), "02:00:00:00:1a:01");

    // 1 MB of id_data (under the router's 1 MiB, over the auth request's own cap).
    let huge = json!({"mac": "m".repeat(1_000_000)}).to_string();
    let body = auth_body(&device, &huge);
    let signature = device.sign(&body);
    let (status, text) = device.raw_auth_request(body, Some(signature)).await?;
    assert_mender_error(status, &json_of(&text), "1 MB id_data");

    // Small bodies whose identity is over a limit: too many attributes, a long name, a large
    // value, a large whole.
    let many: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("a{i}"), Value::String("v".into())))
        .collect();
    let wide: serde_json::Map<String, Value> = (0..8)
        .map(|i| (format!("a{i}"), Value::String("w".repeat(900))))
        .collect();
    let identities = [
        ("40 attributes", Value::Object(many)),
        ("long name", json!({ "n".repeat(300): "v" })),
        ("8 KB value", json!({"mac": "v".repeat(8 * 1024)})),
        ("8 x 900 bytes", Value::Object(wide)),
    ];
    for (what, identity) in &identities {
        let body = auth_body(&device, &identity.to_string());
        let signature = device.sign(&body);
        let (status, text) = device.raw_auth_request(body, Some(signature)).await?;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "auth request, {what}: {text}"
        );
        assert_mender_error(status, &json_of(&text), what);

        let (status, body) = admin
            .request_json(
                Method::POST,
                "/api/management/v2/devauth/devices",
                Some(json!({"identity_data": identity, "pubkey": device.pubkey_pem()})),
            )
            .await?;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "preauthorize, {what}: {body}"
        );
        assert_mender_error(status, &body, what);
    }

    assert_eq!(
        admin.devices(None).await?,
        json!([]),
        "a refused request stored a device"
    );
    // The same device with a normal identity is still admitted as usual.
    let mut device = device;
    assert_eq!(device.authenticate().await?, StatusCode::UNAUTHORIZED);
    admin
        .wait_for_device_by_mac(&device.mac, Duration::from_secs(10))
        .await?;
    stack.stop().await;
    Ok(())
}

/// The device's auth sets as listed by the management API.
async fn auth_sets(admin: &Mgmt, id: &str) -> anyhow::Result<Vec<Value>> {
    let (status, device) = admin.device(id).await?;
    anyhow::ensure!(status == StatusCode::OK, "device {id}: {status} {device}");
    Ok(device["auth_sets"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_sets_per_device_are_capped_and_the_device_stays_writable() -> anyhow::Result<()> {
    const REQUESTS: usize = 1000;
    // Every request writes the same device item (optimistic concurrency, 32 attempts): at 16
    // in flight about 1 in 1000 runs out of attempts and gets a 500.
    const CONCURRENCY: usize = 8;
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let http = https_client(&stack.ca_cert())?;
    let mac = "02:00:00:00:1b:01";

    // One identity, a fresh Ed25519 key per request; the last one is sent alone, after all
    // the others were answered, so it is the newest.
    let statuses: Vec<anyhow::Result<StatusCode>> =
        futures::stream::iter((0..REQUESTS - 1).map(|_| {
            let mut device = Device::new(stack.url(), http.clone(), mac);
            async move { device.authenticate().await }
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut newest = Device::new(stack.url(), http.clone(), mac);
    let mut all = statuses;
    all.push(newest.authenticate().await);
    let unexpected: Vec<String> = all
        .iter()
        .filter_map(|r| match r {
            Ok(StatusCode::UNAUTHORIZED) => None,
            Ok(s) => Some(s.to_string()),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} of {REQUESTS} auth requests not answered 401: {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );

    let listed = admin
        .wait_for_device_by_mac(mac, Duration::from_secs(10))
        .await?;
    assert_eq!(
        admin.devices(None).await?.as_array().map(Vec::len),
        Some(1),
        "one identity, one device"
    );
    let id = listed["id"].as_str().unwrap_or_default().to_owned();
    let sets = auth_sets(&admin, &id).await?;
    assert!(
        !sets.is_empty() && sets.len() <= MAX_AUTH_SETS,
        "{} auth sets, the cap is {MAX_AUTH_SETS}",
        sets.len()
    );
    assert!(sets.iter().all(|s| s["status"] == "pending"), "{sets:?}");
    let newest_pem = newest.pubkey_pem();
    let aid = sets
        .iter()
        .find(|s| same_key(s["pubkey"].as_str().unwrap_or_default(), &newest_pem))
        .and_then(|s| s["id"].as_str())
        .map(str::to_owned);
    let Some(aid) = aid else {
        panic!("the newest request's key is not among the device's auth sets: {sets:?}");
    };

    // The item is still writable: the operator accepts the newest key, which gets a token.
    admin.set_auth_status(&id, &aid, "accepted").await?;
    assert_eq!(newest.authenticate().await?, StatusCode::OK);
    let (_, device) = admin.device(&id).await?;
    assert_eq!(device["status"], "accepted");

    // Another new key still gets in as pending, and the cap still holds.
    let mut another = Device::new(stack.url(), http.clone(), mac);
    assert_eq!(another.authenticate().await?, StatusCode::UNAUTHORIZED);
    let sets = auth_sets(&admin, &id).await?;
    assert!(sets.len() <= MAX_AUTH_SETS, "{} auth sets", sets.len());
    let accepted: Vec<&Value> = sets.iter().filter(|s| s["status"] == "accepted").collect();
    assert_eq!(accepted.len(), 1, "{sets:?}");
    assert!(same_key(
        accepted[0]["pubkey"].as_str().unwrap_or_default(),
        &newest_pem
    ));
    assert!(sets.iter().any(|s| same_key(
        s["pubkey"].as_str().unwrap_or_default(),
        &another.pubkey_pem()
    )));
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_inventory_updates_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let mut device = stack.device("02:00:00:00:1c:01")?;
    assert_eq!(device.authenticate().await?, StatusCode::UNAUTHORIZED);
    let (id, _) = admin.admit(&mut device).await?;
    let (status, _) = device
        .send_inventory(
            Method::PATCH,
            br#"[{"name":"device_type","value":"t"}]"#.to_vec(),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    // Let the workflows settle so the inventory only changes if a bad request changed it.
    admin
        .wait_for_attributes(&id, &["status", "mac", "check_in_time", "device_type"])
        .await?;
    let (_, before) = admin.inventory_device(&id).await?;

    let long_string = json!([{"name": "big", "value": "x".repeat(10 * 1024)}]);
    let long_element = json!([{"name": "list", "value": ["a", "x".repeat(10 * 1024)]}]);
    let many: Vec<Value> = (0..2000)
        .map(|i| json!({"name": format!("attr{i}"), "value": "v"}))
        .collect();
    // 20 values of 4000 bytes: each within its limit, the device over its size limit.
    let large_device: Vec<Value> = (0..20)
        .map(|i| json!({"name": format!("large{i}"), "value": "y".repeat(4000)}))
        .collect();
    let cases = [
        ("10 KB string value", long_string),
        ("10 KB array element", long_element),
        ("2000 attributes", Value::Array(many)),
        ("80 KB of attributes", Value::Array(large_device)),
    ];
    for (what, attributes) in cases {
        for method in [Method::PATCH, Method::PUT] {
            let (status, body) = device
                .send_inventory(method.clone(), serde_json::to_vec(&attributes)?, None)
                .await?;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {what}: {body}");
            assert_mender_error(status, &body, what);
        }
    }
    assert_eq!(
        admin.inventory_device(&id).await?.1,
        before,
        "a refused inventory update changed the device"
    );
    stack.stop().await;
    Ok(())
}
