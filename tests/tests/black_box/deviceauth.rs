//! deviceauth through the HTTP API with a scripted device: preauthorization, operator
//! decisions, revocation (reject, dismiss, token revoke: the very next call gets 401), counts,
//! search, sorting and limits.

use std::time::Duration;

use base64::Engine;
use black_box_tests::device::Device;
use black_box_tests::json_of;
use black_box_tests::mgmt::{https_client, location};
use black_box_tests::TestStack;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn inventory_ok(device: &Device) -> anyhow::Result<StatusCode> {
    Ok(device
        .send_inventory(
            Method::PATCH,
            br#"[{"name":"k","value":"v"}]"#.to_vec(),
            None,
        )
        .await?
        .0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_decisions_and_revocation_take_effect_on_the_next_call() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let http = https_client(&stack.ca_cert())?;
    let mut device = Device::new(stack.url(), http.clone(), "02:00:00:00:11:01");
    assert_eq!(device.authenticate().await?, StatusCode::UNAUTHORIZED);
    let listed = admin
        .wait_for_device_by_mac(&device.mac, Duration::from_secs(10))
        .await?;
    let id = listed["id"].as_str().unwrap_or_default().to_owned();
    let aid = listed["auth_sets"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let (_, _, count) = admin
        .request(
            Method::GET,
            "/api/management/v2/devauth/devices/count?status=pending",
            None,
        )
        .await?;
    assert_eq!(json_of(&count), json!({"count": 1}));
    let (status, _, _) = admin
        .request(
            Method::GET,
            "/api/management/v2/devauth/devices/count?status=bogus",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Accept, then reject: the next call is refused.
    admin.set_auth_status(&id, &aid, "accepted").await?;
    assert_eq!(device.authenticate().await?, StatusCode::OK);
    assert_eq!(inventory_ok(&device).await?, StatusCode::OK);
    admin.set_auth_status(&id, &aid, "rejected").await?;
    assert_eq!(inventory_ok(&device).await?, StatusCode::UNAUTHORIZED);
    assert_eq!(device.authenticate().await?, StatusCode::UNAUTHORIZED);
    let (_, _, auth) = admin
        .request(
            Method::GET,
            &format!("/api/management/v2/devauth/devices/{id}/auth/{aid}/status"),
            None,
        )
        .await?;
    assert_eq!(json_of(&auth), json!({"status": "rejected"}));

    // Accept again, then revoke the token: next call refused, a new auth request gets a new one.
    admin.set_auth_status(&id, &aid, "accepted").await?;
    assert_eq!(device.authenticate().await?, StatusCode::OK);
    let token = device.token.clone().unwrap_or_default();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap_or_default())?,
    )?;
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["mender.device"], true);
    let jti = claims["jti"].as_str().unwrap_or_default();
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            &format!("/api/management/v2/devauth/tokens/{jti}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(inventory_ok(&device).await?, StatusCode::UNAUTHORIZED);
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            &format!("/api/management/v2/devauth/tokens/{jti}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(device.authenticate().await?, StatusCode::OK);
    assert_eq!(inventory_ok(&device).await?, StatusCode::OK);

    // Dismiss (remove the auth set): next call refused, the device remains as noauth.
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            &format!("/api/management/v2/devauth/devices/{id}/auth/{aid}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(inventory_ok(&device).await?, StatusCode::UNAUTHORIZED);
    let (_, dev) = admin.device(&id).await?;
    assert_eq!(dev["status"], "noauth");

    // Illegal transitions and unknown ids.
    let (status, _, b) = admin
        .request(
            Method::PUT,
            &format!("/api/management/v2/devauth/devices/{id}/auth/{aid}/status"),
            Some(json!({"status": "preauthorized"})),
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", json_of(&b));
    let (status, _, _) = admin
        .request(
            Method::GET,
            "/api/management/v2/devauth/devices/00000000-0000-4000-8000-000000000000",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, b) = admin
        .request(
            Method::GET,
            "/api/management/v2/devauth/limits/max_devices",
            None,
        )
        .await?;
    assert_eq!(
        (status, json_of(&b)),
        (StatusCode::OK, json!({"limit": -1}))
    );
    let (status, _, _) = admin
        .request(Method::GET, "/api/management/v2/devauth/limits/other", None)
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preauthorized_devices_get_a_token_at_once_and_lists_are_sorted() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let http = https_client(&stack.ca_cert())?;
    let mut preauth = Device::new(stack.url(), http.clone(), "02:00:00:00:22:01");
    let request = json!({"identity_data": {"mac": preauth.mac}, "pubkey": preauth.pubkey_pem()});
    let (status, headers, _) = admin
        .request(
            Method::POST,
            "/api/management/v2/devauth/devices",
            Some(request.clone()),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let location = location(&headers);
    assert!(location.starts_with("devices/"), "{location}");
    let (status, _, existing) = admin
        .request(
            Method::POST,
            "/api/management/v2/devauth/devices",
            Some(request),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        json_of(&existing)["identity_data"]["mac"],
        preauth.mac.as_str()
    );
    assert_eq!(
        preauth.authenticate().await?,
        StatusCode::OK,
        "a preauthorized device is accepted on its first request"
    );
    assert_eq!(inventory_ok(&preauth).await?, StatusCode::OK);

    // More devices, pending; the list is sorted by status then id, with Link paging.
    for i in 2..6 {
        let mut d = Device::new(stack.url(), http.clone(), &format!("02:00:00:00:22:0{i}"));
        assert_eq!(d.authenticate().await?, StatusCode::UNAUTHORIZED);
    }
    let all = admin.devices(None).await?;
    let keys: Vec<(String, String)> = all
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["status"].as_str().unwrap_or("").to_owned(),
                        d["id"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 5);
    assert_eq!(keys[0].0, "accepted");
    let (status, headers, page) = admin
        .request(
            Method::GET,
            "/api/management/v2/devauth/devices?per_page=2&page=2",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&page).as_array().map(Vec::len), Some(2));
    let links: Vec<&str> = headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        links
            .iter()
            .any(|l| l.contains("rel=\"next\"") && l.contains("page=3")),
        "{links:?}"
    );
    assert!(
        links.iter().any(|l| l.contains("rel=\"prev\"")),
        "{links:?}"
    );
    let (_, _, found) = admin
        .request(
            Method::POST,
            "/api/management/v2/devauth/devices/search",
            Some(json!({"status": "pending"})),
        )
        .await?;
    assert_eq!(json_of(&found).as_array().map(Vec::len), Some(4));
    let (status, _, _) = admin
        .request(
            Method::GET,
            "/api/management/v2/devauth/devices?per_page=501",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    stack.stop().await;
    Ok(())
}
