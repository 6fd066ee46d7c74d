//! Differences from upstream's Go handlers found by reading them (issue 10, part 4), one test
//! each, black-box over HTTPS: JSON `null` members read as zero values (Go's
//! `encoding/json`), the deployment list's `type` filter and inclusive creation bounds on the
//! full creation time, `total_size` counting only devices that download, the v2 artifact
//! list's name filters and paging, and the user list's strict creation bounds.

use black_box_tests::device::Device;
use black_box_tests::json_of;
use black_box_tests::mgmt::{https_client, location_id, Mgmt};
use black_box_tests::TestStack;
use deployments::configuration::NewConfigurationDeployment;
use deployments::model::{Artifact, ArtifactInfo};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn get(admin: &Mgmt, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let (status, _, bytes) = admin.request(Method::GET, path, None).await?;
    Ok((status, json_of(&bytes)))
}

/// GET `path`, expecting 400 with `error` = `message`.
async fn bad_request(admin: &Mgmt, path: &str, message: &str) -> anyhow::Result<()> {
    let (status, value) = get(admin, path).await?;
    anyhow::ensure!(
        status == StatusCode::BAD_REQUEST,
        "{path}: {status} {value}"
    );
    anyhow::ensure!(value["error"] == message, "{path}: {value}");
    Ok(())
}

fn field(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x[key].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn artifact(name: &str, description: &str, size: u64) -> Artifact {
    Artifact {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        description: description.into(),
        device_types_compatible: vec!["sem-board".into()],
        info: ArtifactInfo {
            format: "mender".into(),
            version: 3,
        },
        size,
        ..Default::default()
    }
}

/// An accepted scripted device with a token; returns (device, device id).
async fn accepted_device(stack: &TestStack, mac: &str) -> anyhow::Result<(Device, String)> {
    let mut device = stack.device(mac)?;
    anyhow::ensure!(device.authenticate().await? == StatusCode::UNAUTHORIZED);
    let admin = stack.admin().await?;
    let (id, _) = admin.admit(&mut device).await?;
    Ok((device, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_members_read_as_zero_values() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let http = https_client(&stack.ca_cert())?;
    let device = Device::new(stack.url(), http, "02:00:00:5e:00:01");
    // Go decodes `"tenant_token": null` into "" (we answered 400 "invalid type: null").
    let id_data = json!({ "mac": device.mac }).to_string();
    let auth = json!({"id_data": id_data, "tenant_token": null, "pubkey": device.pubkey_pem()})
        .to_string()
        .into_bytes();
    let signature = device.sign(&auth);
    let (status, text) = device.raw_auth_request(auth, Some(signature)).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");

    // A management body too: `{"description": null}` clears the description.
    let admin = stack.admin().await?;
    let a = artifact("null-desc", "before", 10);
    let id = a.id.clone();
    stack.stack.services.deployments.add_artifact("", a).await?;
    let path = format!("/api/management/v1/deployments/artifacts/{id}");
    let (status, _, bytes) = admin
        .request(Method::PUT, &path, Some(json!({ "description": null })))
        .await?;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let (_, shown) = get(&admin, &path).await?;
    assert_eq!(shown["description"], "");
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_list_type_and_creation_bounds() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let services = stack.stack.services.clone();
    services
        .deployments
        .add_artifact("", artifact("sem-soft", "", 10))
        .await?;
    let (status, _, bytes) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/deployments",
            Some(json!({"name": "soft", "artifact_name": "sem-soft", "devices": ["d-1"]})),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let configuration_id = uuid::Uuid::new_v4().to_string();
    services
        .deployments
        .create_configuration_deployment(
            "",
            NewConfigurationDeployment {
                deployment_id: configuration_id.clone(),
                device_id: "d-2".into(),
                name: format!("configuration-{configuration_id}"),
                configuration: r#"{"a":"1"}"#.into(),
                retries: 0,
                groups: vec![],
            },
        )
        .await?;
    let list = "/api/management/v2/deployments/deployments";

    // `type=configuration` lists configuration deployments (we answered an empty list).
    let (_, shown) = get(&admin, &format!("{list}?type=configuration")).await?;
    assert_eq!(field(&shown, "id"), vec![configuration_id.clone()]);
    let (_, shown) = get(&admin, &format!("{list}?type=software")).await?;
    assert_eq!(field(&shown, "name"), vec!["soft"]);
    bad_request(
        &admin,
        &format!("{list}?type=firmware"),
        "unknown deployment type firmware",
    )
    .await?;
    let (_, shown) = get(&admin, &format!("{list}?sort=ASC")).await?;
    assert_eq!(field(&shown, "name")[0], "soft");

    // Bounds are inclusive and compare the full creation time with the epoch second.
    let (_, shown) = get(&admin, &format!("{list}?type=software")).await?;
    let created = chrono::DateTime::parse_from_rfc3339(shown[0]["created"].as_str().unwrap_or(""))?;
    let secs = created.timestamp();
    let names = |q: String| {
        let admin = &admin;
        async move {
            get(admin, &format!("{list}?type=software&{q}"))
                .await
                .map(|(_, v)| field(&v, "name"))
        }
    };
    assert_eq!(names(format!("created_after={secs}")).await?, vec!["soft"]);
    assert_eq!(
        names(format!("created_before={}", secs + 1)).await?,
        vec!["soft"]
    );
    assert!(names(format!("created_after={}", secs + 1))
        .await?
        .is_empty());
    if created.timestamp_subsec_millis() > 0 {
        // Created at secs.xxx: after `secs`, so not "created before secs" (we listed it).
        assert!(names(format!("created_before={secs}")).await?.is_empty());
    }
    bad_request(
        &admin,
        &format!("{list}?created_before=yesterday"),
        "timestamp parsing failed for created_before parameter: invalid timestamp: yesterday",
    )
    .await?;
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_size_counts_only_devices_that_download() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (old, old_id) = accepted_device(&stack, "02:00:00:5e:00:02").await?;
    let (current, current_id) = accepted_device(&stack, "02:00:00:5e:00:03").await?;
    stack
        .stack
        .services
        .deployments
        .add_artifact("", artifact("sem-size", "", 1000))
        .await?;
    let (status, headers, _) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/deployments",
            Some(json!({"name": "size", "artifact_name": "sem-size", "devices": [old_id, current_id]})),
        )
        .await?;
    anyhow::ensure!(status == StatusCode::CREATED);
    let deployment = location_id(&headers);
    let http = https_client(&stack.ca_cert())?;
    let next = |device: &Device, installed: &str| {
        let request = http
            .post(format!(
                "{}/api/devices/v2/deployments/device/deployments/next",
                stack.url()
            ))
            .bearer_auth(device.token.clone().unwrap_or_default())
            .json(&json!({"device_provides": {"device_type": "sem-board", "artifact_name": installed}}));
        async move { request.send().await.map(|r| r.status()) }
    };
    // One device downloads; the other already runs the artifact (204, already-installed).
    assert_eq!(next(&old, "previous").await?, StatusCode::OK);
    assert_eq!(next(&current, "sem-size").await?, StatusCode::NO_CONTENT);
    let (_, shown) = get(
        &admin,
        &format!("/api/management/v1/deployments/deployments/{deployment}"),
    )
    .await?;
    // We counted both (2000).
    assert_eq!(shown["statistics"]["total_size"], 1000, "{shown}");
    assert_eq!(
        shown["statistics"]["status"]["already-installed"], 1,
        "{shown}"
    );
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_list_v2_name_filters_and_paging() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    for (name, description) in [
        ("App-1", "first build"),
        ("app-2", "Second build"),
        ("star*", "literal star"),
        ("base", "base image"),
    ] {
        stack
            .stack
            .services
            .deployments
            .add_artifact("", artifact(name, description, 10))
            .await?;
    }
    let list = "/api/management/v2/deployments/artifacts";
    let names = |q: &str| {
        let (admin, path) = (&admin, format!("{list}?{q}"));
        async move {
            let (status, value) = get(admin, &path).await?;
            anyhow::ensure!(status == StatusCode::OK, "{path}: {status} {value}");
            Ok(field(&value, "name"))
        }
    };
    // Sorted by name; a prefix matches case-insensitively (we matched case-sensitively).
    assert_eq!(names("").await?, vec!["App-1", "app-2", "base", "star*"]);
    assert_eq!(names("name=app*").await?, vec!["App-1", "app-2"]);
    // Exact names: any of them, exactly; `\*` is a literal star.
    assert_eq!(names("name=app-2&name=base").await?, vec!["app-2", "base"]);
    assert!(names("name=APP-2").await?.is_empty());
    assert_eq!(names("name=star%5C*").await?, vec!["star*"]);
    assert_eq!(names("description=second*").await?, vec!["app-2"]);
    // Lenient paging: a page or per_page that is not a positive integer is the default.
    assert_eq!(names("per_page=abc&page=0").await?.len(), 4);
    assert_eq!(names("per_page=1&page=2").await?, vec!["app-2"]);

    // Exact names with a prefix, or two prefixes, are a 400 (we ORed them).
    bad_request(
        &admin,
        &format!("{list}?name=base&name=app*"),
        "invalid filter: cannot filter by both exact names and name prefix",
    )
    .await?;
    bad_request(
        &admin,
        &format!("{list}?name=a*&name=b*"),
        "invalid filter: NamePrefixes: the length must be no more than 1.",
    )
    .await?;
    bad_request(
        &admin,
        &format!("{list}?per_page=501"),
        "invalid filter: PerPage: must be no greater than 500.",
    )
    .await?;
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_list_creation_bounds_use_the_full_time() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (status, _, bytes) = admin
        .request(
            Method::POST,
            "/api/management/v1/useradm/users",
            Some(json!({"email": "bounds@example.com", "password": "correct-horse-1"})),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let users = "/api/management/v1/useradm/users";
    let (_, all) = get(&admin, &format!("{users}?email=bounds@example.com")).await?;
    let created =
        chrono::DateTime::parse_from_rfc3339(all[0]["created_ts"].as_str().unwrap_or(""))?;
    let secs = created.timestamp();
    let emails = |q: String| {
        let admin = &admin;
        async move {
            get(admin, &format!("{users}?email=bounds@example.com&{q}"))
                .await
                .map(|(_, v)| field(&v, "email"))
        }
    };
    // Strict bounds (`$gt`/`$lt`) on the full time.
    assert!(
        emails(format!("created_before={secs}")).await?.is_empty()
            || created.timestamp_subsec_millis() == 0
    );
    assert_eq!(
        emails(format!("created_before={}", secs + 1)).await?,
        vec!["bounds@example.com"]
    );
    assert!(emails(format!("created_after={}", secs + 1))
        .await?
        .is_empty());
    if created.timestamp_subsec_millis() > 0 {
        // Created at secs.xxx is after `secs` (we compared whole seconds and left it out).
        assert_eq!(
            emails(format!("created_after={secs}")).await?,
            vec!["bounds@example.com"]
        );
    }
    stack.stop().await;
    Ok(())
}
