//! Bad input gets Mender's error body (`{"error", "request_id"}`) with the right status, and
//! leaves stored data as it was: malformed JSON, signatures by another key, unsupported key
//! types, forged and revoked tokens, unknown routes and oversized bodies.

use base64::Engine;
use black_box_tests::device::Device;
use black_box_tests::json_of;
use black_box_tests::mgmt::assert_mender_error_body;
use black_box_tests::{Mgmt, TestStack};
use mender_tokens::DeviceClaims;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[track_caller]
fn assert_mender_error(status: StatusCode, body: &Value, expected: StatusCode, what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert_mender_error_body(what, status, body);
}

/// Everything the management API shows about devices: the devauth list and each inventory.
async fn snapshot(admin: &Mgmt) -> anyhow::Result<Value> {
    let devices = admin.devices(None).await?;
    let mut inventories = Vec::new();
    for d in devices.as_array().cloned().unwrap_or_default() {
        let id = d["id"].as_str().unwrap_or_default();
        inventories.push(admin.inventory_device(id).await?.1);
    }
    Ok(json!({"devices": devices, "inventories": inventories}))
}

/// A device that is accepted, holds a token and has reported one attribute.
async fn admitted(stack: &TestStack, admin: &Mgmt, mac: &str) -> anyhow::Result<(Device, String)> {
    let mut device = stack.device(mac)?;
    assert_eq!(device.authenticate().await?, StatusCode::UNAUTHORIZED);
    let (id, _) = admin.admit(&mut device).await?;
    let (status, _) = device
        .send_inventory(
            Method::PUT,
            br#"[{"name":"device_type","value":"t"}]"#.to_vec(),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    // Let the workflows settle so snapshots only change if a bad request changed something.
    admin
        .wait_for_attributes(&id, &["status", "mac", "check_in_time"])
        .await?;
    Ok((device, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_requests_with_bad_input_are_refused_and_store_nothing() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (device, _) = admitted(&stack, &admin, "02:00:00:00:bb:01").await?;
    let before = snapshot(&admin).await?;

    // Malformed JSON.
    let (status, body) = device
        .raw_auth_request(b"{\"id_data\": ".to_vec(), Some("c2ln".into()))
        .await?;
    assert_mender_error(
        status,
        &json_of(&body),
        StatusCode::BAD_REQUEST,
        "malformed JSON",
    );

    // A new identity whose request is signed by another key.
    let stranger = stack.device("02:00:00:00:bb:02")?;
    let other = stack.device("02:00:00:00:bb:03")?;
    let body = stranger.auth_body(&stranger.pubkey_pem());
    let (status, text) = stranger
        .raw_auth_request(body.clone(), Some(other.sign(&body)))
        .await?;
    assert_mender_error(
        status,
        &json_of(&text),
        StatusCode::UNAUTHORIZED,
        "signature by another key",
    );
    assert_eq!(json_of(&text)["error"], "signature verification failed");

    // The admitted identity, the body changed after signing.
    let mut body = device.auth_body(&device.pubkey_pem());
    let signature = device.sign(&body);
    body.insert(1, b' ');
    let (status, text) = device.raw_auth_request(body, Some(signature)).await?;
    assert_mender_error(
        status,
        &json_of(&text),
        StatusCode::UNAUTHORIZED,
        "tampered body",
    );

    // An unsupported key type (X25519) and a PKCS#1 RSA block.
    for fixture in ["x25519.pub.pem", "dsa.pub.pem", "rsa3072.pkcs1.pem"] {
        let pem = std::fs::read_to_string(format!(
            "{}/../shared/device-keys/tests/fixtures/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        ))?;
        let body = stranger.auth_body(&pem);
        let (status, text) = stranger
            .raw_auth_request(body.clone(), Some(stranger.sign(&body)))
            .await?;
        assert_mender_error(status, &json_of(&text), StatusCode::BAD_REQUEST, fixture);
    }

    // Missing signature header.
    let body = stranger.auth_body(&stranger.pubkey_pem());
    let (status, text) = stranger.raw_auth_request(body, None).await?;
    assert_mender_error(
        status,
        &json_of(&text),
        StatusCode::BAD_REQUEST,
        "no signature",
    );
    assert_eq!(json_of(&text)["error"], "missing request signature header");

    assert_eq!(
        snapshot(&admin).await?,
        before,
        "a refused request changed stored data"
    );
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_revoked_device_tokens_get_401() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (device, id) = admitted(&stack, &admin, "02:00:00:00:cc:01").await?;
    let token = device.token.clone().unwrap_or_default();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: DeviceClaims = serde_json::from_slice(&b64.decode(parts[1])?)?;
    let update = br#"[{"name":"device_type","value":"forged"}]"#.to_vec();
    let before = snapshot(&admin).await?;

    // Tampered payload: the signature no longer matches.
    let mut forged = claims.clone();
    forged.sub = "00000000-0000-4000-8000-000000000000".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&forged)?),
        parts[2]
    );
    // alg none.
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    // HS256 with the server's public key as the HMAC secret.
    let public_pem = stack.stack.services.keys.public_key_pem()?;
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()),
    )?;
    // Expired, but genuinely signed by the server key.
    let mut old = claims.clone();
    old.iat -= 7200;
    old.exp = old.iat + 60;
    let expired = stack.stack.services.keys.issue(&old)?;

    for (what, bad) in [
        ("tampered", tampered),
        ("alg none", none),
        ("HS256 with public key", hs256),
        ("expired", expired),
    ] {
        let (status, body) = device
            .send_inventory(Method::PATCH, update.clone(), Some(&bad))
            .await?;
        assert_mender_error(status, &body, StatusCode::UNAUTHORIZED, what);
    }
    // The genuine token still works, and a user token is not a device token.
    let (status, _) = device
        .send_inventory(
            Method::PATCH,
            br#"[{"name":"device_type","value":"t"}]"#.to_vec(),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = device
        .send_inventory(Method::PATCH, update.clone(), Some(admin.token()))
        .await?;
    assert_mender_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "user token on a device route",
    );
    assert_eq!(
        snapshot(&admin).await?,
        before,
        "a refused request changed stored data"
    );

    // Decommissioned: the very next call with the old token is refused.
    admin.decommission(&id).await?;
    let (status, body) = device.send_inventory(Method::PATCH, update, None).await?;
    assert_mender_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "token of a decommissioned device",
    );
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_malformed_and_oversized_bodies() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (device, id) = admitted(&stack, &admin, "02:00:00:00:dd:01").await?;
    let before = snapshot(&admin).await?;

    let (status, _, body) = admin
        .request(Method::GET, "/api/management/v1/nothing/here", None)
        .await?;
    assert_mender_error(
        status,
        &serde_json::from_slice(&body).unwrap_or(Value::Null),
        StatusCode::NOT_FOUND,
        "unknown route",
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body)?["error"],
        "not found"
    );

    // Malformed JSON from an authenticated device and an operator.
    let (status, body) = device
        .send_inventory(Method::PUT, b"[{\"name\": \"a\", ".to_vec(), None)
        .await?;
    assert_mender_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "malformed inventory",
    );
    let (status, body) = device
        .send_inventory(
            Method::PATCH,
            br#"[{"name":"a","value":{"nested":1}}]"#.to_vec(),
            None,
        )
        .await?;
    assert_mender_error(status, &body, StatusCode::BAD_REQUEST, "object value");
    let (status, _, body) = admin
        .request(
            Method::PUT,
            &format!("/api/management/v2/devauth/devices/{id}/auth/x/status"),
            Some(json!("not an object")),
        )
        .await?;
    assert_mender_error(
        status,
        &serde_json::from_slice(&body).unwrap_or(Value::Null),
        StatusCode::BAD_REQUEST,
        "status body",
    );

    // 10 MB where a small body is expected.
    let big = format!(
        "[{{\"name\":\"blob\",\"value\":\"{}\"}}]",
        "x".repeat(10 * 1024 * 1024)
    );
    let (status, body) = device
        .send_inventory(Method::PATCH, big.into_bytes(), None)
        .await?;
    assert_mender_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "10 MB inventory",
    );

    assert_eq!(
        snapshot(&admin).await?,
        before,
        "a refused request changed stored data"
    );
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attribute_updates_lose_nothing() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (device, id) = admitted(&stack, &admin, "02:00:00:00:ee:01").await?;
    let device = std::sync::Arc::new(device);
    let mut tasks = Vec::new();
    for client in ["a", "b"] {
        for i in 0..15 {
            let device = device.clone();
            tasks.push(tokio::spawn(async move {
                let body = json!([{"name": format!("{client}{i}"), "value": i}])
                    .to_string()
                    .into_bytes();
                device.send_inventory(Method::PATCH, body, None).await
            }));
        }
    }
    for task in tasks {
        let (status, body) = task.await??;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, inventory) = admin.inventory_device(&id).await?;
    let names: Vec<String> = inventory["attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["scope"] == "inventory")
                .filter_map(|x| x["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for client in ["a", "b"] {
        for i in 0..15 {
            assert!(
                names.contains(&format!("{client}{i}")),
                "lost {client}{i}: {names:?}"
            );
        }
    }
    assert!(names.contains(&"device_type".to_string()));
    stack.stop().await;
    Ok(())
}
