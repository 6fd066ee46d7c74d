//! The deployments operator endpoints the GUI needs (issue 10, part 1), black-box over HTTPS:
//! v1alpha1 software (the release picker: filters, sorting, strict paging, errors) and its
//! tags, the deprecated paged artifact list (filters, sort, lenient paging, `X-Total-Count`),
//! the storage limit, statistics of many deployments, and deleting a device's history.

use black_box_tests::artifact::write_module_image;
use black_box_tests::device::Device;
use black_box_tests::json_of;
use black_box_tests::mgmt::{https_client, Mgmt};
use black_box_tests::tempdir::TempDir;
use black_box_tests::{ensure_mender_cli, MenderCli, TestStack};
use deployments::model::{Artifact, ArtifactInfo};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SOFTWARE: &str = "/api/management/v1alpha1/deployments/software";
const ARTIFACTS_LIST: &str = "/api/management/v1/deployments/artifacts/list";
const STATS_LIST: &str = "/api/management/v1/deployments/deployments/statistics/list";

fn total(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-total-count").and_then(|v| v.to_str().ok())
}

fn links(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// GET `path`, expecting 200: (names of the list, `X-Total-Count`, the list).
async fn list(admin: &Mgmt, path: &str) -> anyhow::Result<(Vec<String>, Option<String>, Value)> {
    let (status, headers, bytes) = admin.request(Method::GET, path, None).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    let list = json_of(&bytes);
    Ok((names(&list), total(&headers).map(str::to_owned), list))
}

/// GET `path`, expecting 400 with `error` = `message`.
async fn bad_request(admin: &Mgmt, method: Method, path: &str, b: Option<Value>, message: &str) {
    let result = admin.request(method, path, b).await;
    let (status, _, bytes) = result.unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    assert_eq!(json_of(&bytes)["error"], message, "{path}");
}

/// Writes an artifact with `mender-artifact write module-image` and uploads it with mender-cli.
async fn upload(
    cli: &MenderCli,
    work: &TempDir,
    name: &str,
    device_type: &str,
    kind: &str,
) -> anyhow::Result<()> {
    let payload = work.path().join("p.sh");
    std::fs::write(&payload, "#!/bin/sh\ntrue\n")?;
    let out = work.path().join(format!("{name}-{device_type}.mender"));
    write_module_image(kind, name, device_type, &payload, &out)?;
    let upload = cli.upload_artifact(&out).await?;
    anyhow::ensure!(upload.success(), "{upload:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn software_artifact_list_and_limits() -> anyhow::Result<()> {
    ensure_mender_cli()?;
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let work = TempDir::new("operator")?;
    let cli = stack.admin_cli().await?;
    // Nothing yet: an empty page with a total of 0.
    let (empty, count, _) = list(&admin, SOFTWARE).await?;
    assert!(empty.is_empty());
    assert_eq!(count.as_deref(), Some("0"));

    // Uploaded in this order (so `modified` grows): app-1 (two device types), app-2, base-1.
    for (name, device_type, kind) in [
        ("app-1", "board-1", "script"),
        ("app-1", "board-2", "script"),
        ("app-2", "board-1", "single-file"),
        ("base-1", "board-3", "script"),
    ] {
        upload(&cli, &work, name, device_type, kind).await?;
    }
    for (release, tags) in [
        ("app-1", json!(["Stable"])),
        ("app-2", json!(["zeta", "beta"])),
    ] {
        let path = format!("/api/management/v2/deployments/deployments/releases/{release}/tags");
        let (status, _, _) = admin.request(Method::PUT, &path, Some(tags)).await?;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, _, _) = admin
        .request(
            Method::PATCH,
            "/api/management/v2/deployments/deployments/releases/app-1",
            Some(json!({"notes": "first"})),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The software list: shape, default order name:asc, totals.
    let (all, count, body_all) = list(&admin, SOFTWARE).await?;
    assert_eq!(all, ["app-1", "app-2", "base-1"]);
    assert_eq!(count.as_deref(), Some("3"));
    let app1 = &body_all[0];
    assert_eq!(app1["kind"], "release");
    assert_eq!(app1["tags"], json!(["stable"]));
    assert_eq!(app1["notes"], "first");
    assert_eq!(app1["compatible_types"], json!(["board-1", "board-2"]));
    assert!(app1["modified"].is_string());
    assert!(app1.get("artifacts").is_none(), "{app1}");
    assert_eq!(body_all[2]["tags"], json!([]));

    // Filters.
    let cases: [(&str, &[&str]); 11] = [
        ("name_prefix=app", &["app-1", "app-2"]),
        ("name_prefix=APP", &[]),
        ("name=base-1&name=app-2", &["app-2", "base-1"]),
        ("name=app", &[]),
        ("tag=STABLE", &["app-1"]),
        ("tag=beta&tag=stable", &["app-1", "app-2"]),
        ("update_type=single-file", &["app-2"]),
        ("update_type=script&name_prefix=b", &["base-1"]),
        ("kind=release", &["app-1", "app-2", "base-1"]),
        ("kind=manifest", &[]),
        ("kind=", &["app-1", "app-2", "base-1"]),
    ];
    for (query, expected) in cases {
        let (got, count, _) = list(&admin, &format!("{SOFTWARE}?{query}")).await?;
        assert_eq!(got, expected, "{query}");
        assert_eq!(count, Some(expected.len().to_string()), "{query}");
    }
    // Sorting.
    let sorts: [(&str, [&str; 3]); 6] = [
        ("name:asc", ["app-1", "app-2", "base-1"]),
        ("name:desc", ["base-1", "app-2", "app-1"]),
        ("modified:asc", ["app-1", "app-2", "base-1"]),
        ("modified:desc", ["base-1", "app-2", "app-1"]),
        ("tags:asc", ["base-1", "app-2", "app-1"]),
        ("tags:desc", ["app-2", "app-1", "base-1"]),
    ];
    for (sort, expected) in sorts {
        let (got, _, _) = list(&admin, &format!("{SOFTWARE}?sort={sort}")).await?;
        assert_eq!(got, expected, "{sort}");
    }
    // Paging: totals and links.
    let (status, headers, page2) = admin
        .request(Method::GET, &format!("{SOFTWARE}?per_page=2&page=2"), None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&json_of(&page2)), ["base-1"]);
    assert_eq!(total(&headers), Some("3"));
    let page_links = links(&headers);
    assert!(
        page_links
            .iter()
            .any(|l| l.contains("page=1&per_page=2") && l.contains("rel=\"prev\"")),
        "{page_links:?}"
    );
    assert!(!page_links.iter().any(|l| l.contains("rel=\"next\"")));
    let (_, headers, _) = admin
        .request(Method::GET, &format!("{SOFTWARE}?per_page=2"), None)
        .await?;
    assert!(links(&headers)
        .iter()
        .any(|l| l.starts_with(&format!("<{SOFTWARE}?page=2&per_page=2>")) && l.contains("next")));
    let (past, _, _) = list(&admin, &format!("{SOFTWARE}?per_page=2&page=5")).await?;
    assert!(past.is_empty());
    // Errors, with upstream's texts.
    for (query, message) in [
        (
            "name=a&name_prefix=b",
            "name: cannot be used with name_prefix; name_prefix: cannot be used with name.",
        ),
        ("kind=image", "kind: must be a valid value."),
        ("sort=name", "sort: must be a valid value."),
        ("sort=artifacts_count:asc", "sort: must be a valid value."),
        (
            "kind=x&sort=x",
            "kind: must be a valid value; sort: must be a valid value.",
        ),
        (
            "per_page=501",
            "parameter \"per_page\" above limit (max: 500)",
        ),
        (
            "page=0",
            "invalid page query: value must be a non-zero positive integer",
        ),
        ("page=x", "invalid page query: \"x\""),
    ] {
        bad_request(
            &admin,
            Method::GET,
            &format!("{SOFTWARE}?{query}"),
            None,
            message,
        )
        .await;
    }

    // Software tags.
    let tags = format!("{SOFTWARE}/tags");
    for (query, expected) in [
        ("", json!(["beta", "stable", "zeta"])),
        ("?kind=release", json!(["beta", "stable", "zeta"])),
        ("?kind=manifest", json!([])),
    ] {
        let (status, got) = admin
            .request_json(Method::GET, &format!("{tags}{query}"), None)
            .await?;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(got, expected, "{query}");
    }
    for (query, message) in [
        (
            "?kind=release&kind=manifest",
            "only one kind query argument can be specified",
        ),
        ("?kind=bogus", "Kind: must be a valid value."),
        ("?kind=", "Kind: cannot be blank."),
    ] {
        bad_request(
            &admin,
            Method::GET,
            &format!("{tags}{query}"),
            None,
            message,
        )
        .await;
    }

    // The deprecated paged artifact list.
    let (artifacts, _, _) = list(&admin, "/api/management/v1/deployments/artifacts").await?;
    assert_eq!(artifacts.len(), 4);
    let (_, _, arts) = list(&admin, ARTIFACTS_LIST).await?;
    let board2 = arts
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["device_types_compatible"] == json!(["board-2"]))
        })
        .and_then(|x| x["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let (status, _, _) = admin
        .request(
            Method::PUT,
            &format!("/api/management/v1/deployments/artifacts/{board2}"),
            Some(json!({"description": "The Second Board"})),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let cases: [(&str, &[&str], &str); 10] = [
        ("", &["app-1", "app-1", "app-2", "base-1"], "4"),
        ("name=APP", &["app-1", "app-1", "app-2"], "3"),
        ("name=-1", &["app-1", "app-1", "base-1"], "3"),
        ("device_type=BOARD-1", &["app-1", "app-2"], "2"),
        ("description=second board", &["app-1"], "1"),
        (
            "sort=name:desc",
            &["base-1", "app-2", "app-1", "app-1"],
            "4",
        ),
        (
            "sort=modified:desc",
            &["app-1", "base-1", "app-2", "app-1"],
            "4",
        ),
        ("per_page=3&page=2", &["base-1"], "4"),
        (
            "per_page=0&page=-1",
            &["app-1", "app-1", "app-2", "base-1"],
            "4",
        ),
        (
            "per_page=501&page=x",
            &["app-1", "app-1", "app-2", "base-1"],
            "4",
        ),
    ];
    for (query, expected, count) in cases {
        let (got, got_count, _) = list(&admin, &format!("{ARTIFACTS_LIST}?{query}")).await?;
        assert_eq!(got, expected, "{query}");
        assert_eq!(got_count.as_deref(), Some(count), "{query}");
    }
    let (_, _, edited) = list(&admin, &format!("{ARTIFACTS_LIST}?sort=modified:desc")).await?;
    assert_eq!(edited[0]["id"], board2.as_str());
    assert_eq!(edited[0]["description"], "The Second Board");
    let (_, headers, _) = admin
        .request(
            Method::GET,
            &format!("{ARTIFACTS_LIST}?per_page=0&name=app"),
            None,
        )
        .await?;
    let lenient = links(&headers);
    assert!(
        lenient
            .iter()
            .any(|l| l.contains("name=app&page=1&per_page=20") && l.contains("first")),
        "{lenient:?}"
    );

    // Limits.
    let (status, limit) = admin
        .request_json(
            Method::GET,
            "/api/management/v1/deployments/limits/storage",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(limit, json!({"limit": 0, "usage": 0}));
    bad_request(
        &admin,
        Method::GET,
        "/api/management/v1/deployments/limits/devices",
        None,
        "unsupported limit devices",
    )
    .await;
    let status = admin
        .http()
        .get(format!("{}{SOFTWARE}", stack.url()))
        .send()
        .await?
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    stack.stop().await;
    Ok(())
}

/// A metadata-only artifact (the scripted device never downloads it).
fn artifact(name: &str) -> Artifact {
    Artifact {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        device_types_compatible: vec!["op-board".into()],
        info: ArtifactInfo {
            format: "mender".into(),
            version: 3,
        },
        size: 1024,
        ..Default::default()
    }
}

async fn create_deployment(admin: &Mgmt, name: &str, devices: &[String]) -> anyhow::Result<String> {
    admin
        .create(
            "/api/management/v1/deployments/deployments",
            json!({"name": name, "artifact_name": name, "devices": devices}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_list_and_device_history_delete() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let services = stack.stack.services.clone();
    let http = https_client(&stack.ca_cert())?;
    let url = stack.url().to_owned();

    // One accepted device with a token.
    let mut device = Device::new(&url, http.clone(), "02:00:00:0a:00:01");
    device.authenticate().await?;
    let every = mender_http::paging::Paging {
        page: 1,
        per_page: 500,
    };
    let listed = services
        .deviceauth
        .list_devices("", &Default::default(), every)
        .await?
        .0;
    let device_id = listed
        .first()
        .map(|d| d.id.clone())
        .ok_or_else(|| anyhow::anyhow!("no device"))?;
    services
        .deviceauth
        .set_auth_status("", &device_id, &listed[0].auth_sets[0].id, "accepted")
        .await?;
    anyhow::ensure!(device.authenticate().await? == StatusCode::OK);
    let token = device.token.clone().unwrap_or_default();
    services
        .deployments
        .add_artifact("", artifact("op-1"))
        .await?;
    services
        .deployments
        .add_artifact("", artifact("op-2"))
        .await?;

    // Deployment 1: the device installs it (success). Deployment 2: still pending for it and
    // for a device that never shows up.
    let first = create_deployment(&admin, "op-1", std::slice::from_ref(&device_id)).await?;
    let next = http
        .post(format!(
            "{url}/api/devices/v2/deployments/device/deployments/next"
        ))
        .bearer_auth(&token)
        .json(&json!({"device_provides": {"device_type": "op-board", "artifact_name": "old"}}))
        .send()
        .await?;
    assert_eq!(next.status(), StatusCode::OK);
    for status in ["downloading", "installing", "success"] {
        let r = http
            .put(format!(
                "{url}/api/devices/v1/deployments/device/deployments/{first}/status"
            ))
            .bearer_auth(&token)
            .json(&json!({ "status": status }))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{status}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = create_deployment(&admin, "op-2", &[device_id.clone(), "ghost".into()]).await?;

    // Statistics of several deployments: found ones oldest first, unknown ids left out.
    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, stats) = admin
        .request_json(
            Method::POST,
            STATS_LIST,
            Some(json!({"deployment_ids": [second, unknown, first, second]})),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let entries = stats.as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 2, "{stats}");
    assert_eq!(entries[0]["id"], first.as_str());
    assert_eq!(entries[0]["stats"]["success"], 1);
    assert_eq!(entries[0]["stats"]["pending"], 0);
    assert_eq!(entries[1]["id"], second.as_str());
    assert_eq!(entries[1]["stats"]["pending"], 2);
    assert_eq!(
        entries[1]["stats"].as_object().map(|o| o.len()),
        Some(13),
        "{stats}"
    );
    for empty in [
        json!({"deployment_ids": []}),
        json!({}),
        json!({"deployment_ids": null}),
    ] {
        let (status, got) = admin
            .request_json(Method::POST, STATS_LIST, Some(empty.clone()))
            .await?;
        assert_eq!((status, got), (StatusCode::OK, json!({})), "{empty}");
    }
    let (status, missing) = admin
        .request_json(
            Method::POST,
            STATS_LIST,
            Some(json!({"deployment_ids": [unknown]})),
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "Deployment not found");
    bad_request(
        &admin,
        Method::POST,
        STATS_LIST,
        Some(json!({"deployment_ids": [first, "nope", "x"]})),
        "1: must be a valid UUID; 2: must be a valid UUID.",
    )
    .await;
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    bad_request(
        &admin,
        Method::POST,
        STATS_LIST,
        Some(json!({ "deployment_ids": many })),
        "the length must be between 1 and 100",
    )
    .await;
    let (status, _, _) = admin
        .request(
            Method::POST,
            STATS_LIST,
            Some(json!({"deployment_ids": "not a list"})),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Deleting the history stamps the finished device deployment only; it stays listed.
    let history_path = format!("/api/management/v1/deployments/deployments/devices/{device_id}");
    let (_, before) = admin.request_json(Method::GET, &history_path, None).await?;
    assert_eq!(before.as_array().map(Vec::len), Some(2), "{before}");
    assert!(before[1]["device"].get("deleted").is_none(), "{before}");
    let delete = format!("{history_path}/history");
    let (status, _, _) = admin.request(Method::DELETE, &delete, None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, after) = admin.request_json(Method::GET, &history_path, None).await?;
    let entries = after.as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 2, "{after}");
    let by_deployment = |id: &str| {
        entries
            .iter()
            .find(|e| e["deployment"]["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let finished = by_deployment(&first);
    let deleted = finished["device"]["deleted"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        chrono::DateTime::parse_from_rfc3339(&deleted).is_ok(),
        "{finished}"
    );
    assert_eq!(finished["device"]["status"], "success");
    assert!(
        by_deployment(&second)["device"].get("deleted").is_none(),
        "{after}"
    );
    // Again: nothing new is stamped, the first time stays.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, _, _) = admin.request(Method::DELETE, &delete, None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, again) = admin.request_json(Method::GET, &history_path, None).await?;
    let again_first = again
        .as_array()
        .and_then(|a| a.iter().find(|e| e["deployment"]["id"] == first.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(again_first["device"]["deleted"], deleted.as_str());
    // The pending deployment is still offered to the device.
    let next = http
        .post(format!(
            "{url}/api/devices/v2/deployments/device/deployments/next"
        ))
        .bearer_auth(&token)
        .json(&json!({"device_provides": {"device_type": "op-board", "artifact_name": "op-1"}}))
        .send()
        .await?;
    assert_eq!(next.status(), StatusCode::OK);
    let next: Value = next.json().await?;
    assert_eq!(next["id"], second.as_str());
    // An unknown device: 204 as well.
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            "/api/management/v1/deployments/deployments/devices/nobody/history",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    stack.stop().await;
    Ok(())
}
