//! inventory through the HTTP API: device PUT replaces and PATCH merges, the v1 list with
//! filters, sorting and totals, tags with etags, groups.

use black_box_tests::json_of;
use black_box_tests::mgmt::{https_client, inventory_attribute};
use black_box_tests::TestStack;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_lists_tags_and_groups() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (a, a_id) = stack.admitted_device(&admin, "02:00:00:00:33:01").await?;
    let (b, b_id) = stack.admitted_device(&admin, "02:00:00:00:33:02").await?;

    // PUT replaces the inventory scope, PATCH merges; numbers and arrays are kept as sent.
    let put = json!([{"name": "device_type", "value": "rpi"}, {"name": "mem", "value": 512}, {"name": "old", "value": "x"}]);
    assert_eq!(
        a.send_inventory(Method::PUT, put.to_string().into_bytes(), None)
            .await?
            .0,
        StatusCode::OK
    );
    let put = json!([{"name": "device_type", "value": "rpi"}, {"name": "mem", "value": 512}]);
    assert_eq!(
        a.send_inventory(Method::PUT, put.to_string().into_bytes(), None)
            .await?
            .0,
        StatusCode::OK
    );
    let patch = json!([{"name": "langs", "value": ["en", "de"]}]);
    assert_eq!(
        a.send_inventory(Method::PATCH, patch.to_string().into_bytes(), None)
            .await?
            .0,
        StatusCode::OK
    );
    let put_b = json!([{"name": "device_type", "value": "bbb"}, {"name": "mem", "value": 1024}]);
    assert_eq!(
        b.send_inventory(Method::PUT, put_b.to_string().into_bytes(), None)
            .await?
            .0,
        StatusCode::OK
    );
    let (_, dev) = admin.inventory_device(&a_id).await?;
    assert_eq!(inventory_attribute(&dev, "mem"), Some(&json!(512)));
    assert_eq!(
        inventory_attribute(&dev, "langs"),
        Some(&json!(["en", "de"]))
    );
    assert_eq!(inventory_attribute(&dev, "old"), None);
    assert!(dev["updated_ts"].is_string());

    // v1 list: filters (string, number, array element), sort, totals.
    let list = |q: &'static str| admin.request(Method::GET, q, None);
    let (status, headers, page) =
        list("/api/management/v1/inventory/devices?device_type=rpi").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        json_of(&page)
            .as_array()
            .map(|d| d.iter().map(|x| x["id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(a_id)])
    );
    assert_eq!(
        headers.get("x-total-count").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (_, _, page) = list("/api/management/v1/inventory/devices?mem=1024").await?;
    assert_eq!(json_of(&page)[0]["id"], json!(b_id));
    let (_, _, page) = list("/api/management/v1/inventory/devices?inventory/langs=eq:de").await?;
    assert_eq!(json_of(&page)[0]["id"], json!(a_id));
    let (_, headers, page) =
        list("/api/management/v1/inventory/devices?sort=mem:asc&per_page=1").await?;
    assert_eq!(json_of(&page)[0]["id"], json!(a_id));
    assert_eq!(
        headers.get("x-total-count").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let (status, _, _) = list("/api/management/v1/inventory/devices?sort=mem:sideways").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Tags with etags.
    let tags = format!("/api/management/v1/inventory/devices/{a_id}/tags");
    let (status, _, _) = admin
        .request(
            Method::PUT,
            &tags,
            Some(json!([{"name": "location", "value": "lab"}])),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let (_, headers, _) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/inventory/devices/{a_id}"),
            None,
        )
        .await?;
    let etag = headers
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!etag.is_empty());
    let http = https_client(&stack.ca_cert())?;
    let stale = http
        .patch(format!("{}{tags}", stack.url()))
        .bearer_auth(admin.token())
        .header("if-match", "stale")
        .json(&json!([{"name": "owner", "value": "me"}]))
        .send()
        .await?;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let fresh = http
        .patch(format!("{}{tags}", stack.url()))
        .bearer_auth(admin.token())
        .header("if-match", etag)
        .json(&json!([{"name": "owner", "value": "me"}]))
        .send()
        .await?;
    assert_eq!(fresh.status(), StatusCode::OK);
    let (_, dev) = admin.inventory_device(&a_id).await?;
    assert_eq!(inventory_attribute(&dev, "location"), Some(&json!("lab")));
    assert_eq!(inventory_attribute(&dev, "owner"), Some(&json!("me")));

    // Groups.
    let (status, _, _) = admin
        .request(
            Method::PUT,
            &format!("/api/management/v1/inventory/devices/{a_id}/group"),
            Some(json!({"group": "lab-1"})),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = admin
        .request(
            Method::PUT,
            &format!("/api/management/v1/inventory/devices/{b_id}/group"),
            Some(json!({"group": "bad name!"})),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, _, b_body) = admin
        .request(
            Method::PATCH,
            "/api/management/v1/inventory/groups/lab-1/devices",
            Some(json!([b_id])),
        )
        .await?;
    assert_eq!(
        json_of(&b_body),
        json!({"matched_count": 1, "updated_count": 1})
    );
    let (_, _, groups) = admin
        .request(Method::GET, "/api/management/v1/inventory/groups", None)
        .await?;
    assert_eq!(json_of(&groups), json!(["lab-1"]));
    let (_, headers, members) = admin
        .request(
            Method::GET,
            "/api/management/v1/inventory/groups/lab-1/devices",
            None,
        )
        .await?;
    assert_eq!(json_of(&members).as_array().map(Vec::len), Some(2));
    assert_eq!(
        headers.get("x-total-count").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let (_, _, g) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/inventory/devices/{a_id}/group"),
            None,
        )
        .await?;
    assert_eq!(json_of(&g), json!({"group": "lab-1"}));
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            &format!("/api/management/v1/inventory/devices/{a_id}/group/lab-1"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            &format!("/api/management/v1/inventory/devices/{a_id}/group/lab-1"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, deleted) = admin
        .request(
            Method::DELETE,
            "/api/management/v1/inventory/groups/lab-1",
            None,
        )
        .await?;
    assert_eq!(
        json_of(&deleted),
        json!({"matched_count": 1, "updated_count": 1})
    );
    let (status, _, _) = admin
        .request(
            Method::GET,
            "/api/management/v1/inventory/groups/lab-1/devices",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, g) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/inventory/devices/{b_id}/group"),
            None,
        )
        .await?;
    assert_eq!(json_of(&g), json!({"group": null}));
    stack.stop().await;
    Ok(())
}
