//! A real `mender-client` installs an update end to end: an artifact made with
//! `mender-artifact write module-image` (script module) is uploaded with `mender-cli`,
//! deployed to the accepted device, downloaded from a presigned S3 link, installed (the
//! payload's side effect is checked) and reported `success`; statistics say success 1 and the
//! inventory's `artifact_name` changes. Deploying it again ends `already-installed`; a failing
//! payload ends `failure` with its log readable; an abort mid-deployment makes the device's
//! next status report get 409 (the client logs "Status report rejected, deployment aborted at
//! the backend", its handling of exactly that status).

use std::path::Path;
use std::time::Duration;

use black_box_tests::artifact::write_module_image;
use black_box_tests::json_of;
use black_box_tests::mgmt::{inventory_attribute, location_id};
use black_box_tests::tempdir::TempDir;
use black_box_tests::{
    mender_available, mender_cli_available, wait_for, MenderClient, Mgmt, TestStack,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Sends `sig` to the client daemon (SIGUSR1: check for an update, SIGUSR2: send inventory).
fn kick(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status();
}

/// `mender-artifact write module-image -T script` with `script` as the payload.
fn make_artifact(dir: &Path, name: &str, script: &str) -> anyhow::Result<std::path::PathBuf> {
    let payload = dir.join(format!("{name}.sh"));
    std::fs::write(&payload, script)?;
    let out = dir.join(format!("{name}.mender"));
    write_module_image("script", name, "test-device", &payload, &out)?;
    Ok(out)
}

async fn deploy(admin: &Mgmt, name: &str, artifact: &str, device: &str) -> anyhow::Result<String> {
    let (status, headers, b) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/deployments",
            Some(json!({"name": name, "artifact_name": artifact, "devices": [device]})),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "create deployment: {status} {}",
        json_of(&b)
    );
    Ok(location_id(&headers))
}

async fn finished(admin: &Mgmt, client: &MenderClient, id: &str) -> anyhow::Result<Value> {
    let pid = client.pid().unwrap_or_default();
    let path = format!("/api/management/v1/deployments/deployments/{id}");
    let result = wait_for(
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            kick(pid, "USR1");
            let (_, _, b) = admin.request(Method::GET, &path, None).await.ok()?;
            let d = json_of(&b);
            (d["status"] == "finished").then_some(d)
        },
    )
    .await;
    result.map_err(|e| {
        anyhow::anyhow!(
            "deployment {id} did not finish: {e}\n{}",
            client.log_tail(40)
        )
    })
}

async fn statistics(admin: &Mgmt, id: &str) -> anyhow::Result<Value> {
    let (_, _, b) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/deployments/deployments/{id}/statistics"),
            None,
        )
        .await?;
    Ok(json_of(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_installs_fails_skips_and_aborts() -> anyhow::Result<()> {
    anyhow::ensure!(
        mender_available() && mender_cli_available(),
        "Debian Mender clients missing: run scripts/deps.sh"
    );
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let work = TempDir::new("e2e")?;
    let marker = work.path().join("installed");
    let mac = "02:00:00:00:de:01";
    let mut client = MenderClient::start(stack.url(), &stack.ca_cert(), mac)?;
    let device = admin
        .wait_for_device_by_mac(mac, black_box_tests::FIRST_REQUEST_WAIT)
        .await?;
    let device_id = device["id"].as_str().unwrap_or_default().to_owned();
    admin.accept_device(&device_id).await?;
    let pid = client.pid().unwrap_or_default();

    // Upload with mender-cli (chunked multipart), 201.
    let good = make_artifact(
        work.path(),
        "release-1",
        &format!("#!/bin/sh\necho installed > {}\n", marker.display()),
    )?;
    let cli = stack.admin_cli().await?;
    let upload = cli.upload_artifact(&good).await?;
    anyhow::ensure!(upload.success(), "mender-cli artifacts upload: {upload:?}");

    // 1. Success.
    let id = deploy(&admin, "first", "release-1", &device_id).await?;
    finished(&admin, &client, &id).await?;
    let stats = statistics(&admin, &id).await?;
    assert_eq!(stats["success"], 1, "{stats}\n{}", client.log_tail(60));
    assert_eq!(std::fs::read_to_string(&marker)?.trim(), "installed");
    let inventory = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            kick(pid, "USR2");
            let (_, d) = admin.inventory_device(&device_id).await.ok()?;
            (inventory_attribute(&d, "artifact_name") == Some(&json!("release-1"))).then_some(d)
        },
    )
    .await?;
    assert_eq!(
        inventory_attribute(&inventory, "artifact_name"),
        Some(&json!("release-1"))
    );

    // 2. The same artifact again: already installed.
    let again = deploy(&admin, "again", "release-1", &device_id).await?;
    finished(&admin, &client, &again).await?;
    assert_eq!(statistics(&admin, &again).await?["already-installed"], 1);

    // 3. A failing payload: failure, with the device's log readable.
    let bad = make_artifact(
        work.path(),
        "release-2",
        "#!/bin/sh\necho 'payload is failing on purpose' >&2\nexit 3\n",
    )?;
    let upload = cli.upload_artifact(&bad).await?;
    anyhow::ensure!(upload.success(), "{upload:?}");
    let failing = deploy(&admin, "failing", "release-2", &device_id).await?;
    finished(&admin, &client, &failing).await?;
    assert_eq!(statistics(&admin, &failing).await?["failure"], 1);
    let log_path =
        format!("/api/management/v1/deployments/deployments/{failing}/devices/{device_id}/log");
    let log = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let (status, _, b) = admin.request(Method::GET, &log_path, None).await.ok()?;
            (status == StatusCode::OK).then(|| String::from_utf8_lossy(&b).into_owned())
        },
    )
    .await?;
    assert!(log.contains("Running Mender client"), "{log}");

    // 4. Abort while the payload runs: the device's next status report gets 409.
    let slow = make_artifact(work.path(), "release-3", "#!/bin/sh\nsleep 8\n")?;
    let upload = cli.upload_artifact(&slow).await?;
    anyhow::ensure!(upload.success(), "{upload:?}");
    let aborted = deploy(&admin, "aborted", "release-3", &device_id).await?;
    let devices_path = format!("/api/management/v1/deployments/deployments/{aborted}/devices");
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            kick(pid, "USR1");
            let (_, _, b) = admin.request(Method::GET, &devices_path, None).await.ok()?;
            (json_of(&b)[0]["status"] == "installing").then_some(())
        },
    )
    .await?;
    let log_mark = client.log().len();
    let (status, _, _) = admin
        .request(
            Method::PUT,
            &format!("/api/management/v1/deployments/deployments/{aborted}/status"),
            Some(json!({"status": "aborted"})),
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let log = client.log();
            log.get(log_mark..)
                .is_some_and(|l| {
                    l.contains("Status report rejected, deployment aborted at the backend")
                })
                .then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("no 409 after abort: {e}\n{}", client.log_tail(40)))?;
    let stats = statistics(&admin, &aborted).await?;
    assert_eq!(stats["aborted"], 1, "{stats}");
    client.stop()?;
    stack.stop().await;
    Ok(())
}
