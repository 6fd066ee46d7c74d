//! Statistics stay exact when many devices report at once: 50 scripted devices fetch the same
//! deployment and report `downloading`, `installing` (twice, as the real client repeats) and
//! then `success` or `failure` concurrently; the counters end exact and the deployment finished.

use std::sync::Arc;
use std::time::Duration;

use black_box_tests::device::Device;
use black_box_tests::mgmt::{https_client, location_id};
use black_box_tests::TestStack;
use deployments::model::{Artifact, ArtifactInfo};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DEVICES: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_devices_reporting_at_once_give_exact_statistics() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let services = stack.stack.services.clone();
    let http = https_client(&stack.ca_cert())?;

    // 50 accepted devices with tokens.
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let mut device = Device::new(
            stack.url(),
            http.clone(),
            &format!("02:00:00:01:00:{i:02x}"),
        );
        device.authenticate().await?;
        devices.push(device);
    }
    let every_device = mender_http::paging::Paging {
        page: 1,
        per_page: 500,
    };
    for d in services
        .deviceauth
        .list_devices("", &Default::default(), every_device)
        .await?
        .0
    {
        services
            .deviceauth
            .set_auth_status("", &d.id, &d.auth_sets[0].id, "accepted")
            .await?;
    }
    for device in &mut devices {
        anyhow::ensure!(device.authenticate().await? == StatusCode::OK);
    }
    let ids: Vec<String> = services
        .deviceauth
        .list_devices("", &Default::default(), every_device)
        .await?
        .0
        .into_iter()
        .map(|d| d.id)
        .collect();

    // An artifact (metadata only: the devices never download it) and a deployment to all 50.
    let artifact = Artifact {
        id: uuid::Uuid::new_v4().to_string(),
        name: "fleet-1".into(),
        device_types_compatible: vec!["fleet".into()],
        info: ArtifactInfo {
            format: "mender".into(),
            version: 3,
        },
        size: 5120,
        ..Default::default()
    };
    services.deployments.add_artifact("", artifact).await?;
    let (status, headers, _) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/deployments",
            Some(json!({"name": "fleet", "artifact_name": "fleet-1", "devices": ids})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let deployment = location_id(&headers);

    let devices: Vec<Arc<Device>> = devices.into_iter().map(Arc::new).collect();
    let mut tasks = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        let (device, http, url, deployment) = (
            device.clone(),
            http.clone(),
            stack.url().to_owned(),
            deployment.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let token = device.token.clone().unwrap_or_default();
            let next = http
                .post(format!(
                    "{url}/api/devices/v2/deployments/device/deployments/next"
                ))
                .bearer_auth(&token)
                .json(&json!({"device_provides": {"device_type": "fleet", "artifact_name": "old"}}))
                .send()
                .await?;
            anyhow::ensure!(next.status() == StatusCode::OK, "next: {}", next.status());
            let body: Value = next.json().await?;
            anyhow::ensure!(body["id"] == deployment.as_str());
            let last = if i % 5 == 0 { "failure" } else { "success" };
            for status in [
                "downloading",
                "downloading",
                "installing",
                "installing",
                last,
            ] {
                let r = http
                    .put(format!(
                        "{url}/api/devices/v1/deployments/device/deployments/{deployment}/status"
                    ))
                    .bearer_auth(&token)
                    .json(&json!({ "status": status }))
                    .send()
                    .await?;
                anyhow::ensure!(
                    r.status() == StatusCode::NO_CONTENT,
                    "{status}: {}",
                    r.status()
                );
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let (_, _, stats) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/deployments/deployments/{deployment}/statistics"),
            None,
        )
        .await?;
    let stats: Value = serde_json::from_slice(&stats)?;
    let failures = DEVICES.div_ceil(5);
    assert_eq!(stats["success"], json!(DEVICES - failures), "{stats}");
    assert_eq!(stats["failure"], json!(failures), "{stats}");
    for other in [
        "pending",
        "downloading",
        "installing",
        "rebooting",
        "aborted",
        "noartifact",
        "already-installed",
    ] {
        assert_eq!(stats[other], 0, "{other}: {stats}");
    }
    let (_, _, d) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/deployments/deployments/{deployment}"),
            None,
        )
        .await?;
    let d: Value = serde_json::from_slice(&d)?;
    assert_eq!(d["status"], "finished", "{d}");
    assert_eq!(d["device_count"], DEVICES);
    tokio::time::sleep(Duration::from_millis(10)).await;
    stack.stop().await;
    Ok(())
}
