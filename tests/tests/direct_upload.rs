//! Direct upload: a 64 MiB artifact PUT through the presigned link, `complete`, then the
//! `process-artifact` queue step parses it from S3 and the artifact is listed. The emulator
//! (s3s-fs, like S3) refuses a tampered or expired presigned URL; an invalid artifact is
//! dropped; `complete` of an unknown or already completed upload is 404.

use std::time::Duration;

use black_box_tests::mgmt::https_client;
use black_box_tests::tempdir::TempDir;
use black_box_tests::{wait_for, TestStack};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn body(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_direct_upload_and_refused_links() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let work = TempDir::new("direct")?;
    let payload = work.path().join("blob.bin");
    std::fs::write(&payload, vec![0u8; 64 * 1024 * 1024])?;
    let artifact = work.path().join("big.mender");
    let status = std::process::Command::new("mender-artifact")
        .args([
            "write",
            "module-image",
            "-T",
            "single-file",
            "-n",
            "big-1",
            "-t",
            "test-device",
            "--compression",
            "none",
            "-f",
        ])
        .arg(&payload)
        .arg("-o")
        .arg(&artifact)
        .status()?;
    anyhow::ensure!(status.success(), "mender-artifact write failed");
    let bytes = std::fs::read(&artifact)?;
    assert!(bytes.len() >= 64 * 1024 * 1024);
    let http = https_client(&stack.ca_cert())?;

    // 1. The link.
    let (status, _, link) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/artifacts/directupload",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let link = body(&link);
    assert_eq!(link["method"], "PUT");
    let id = link["id"].as_str().unwrap_or_default().to_owned();
    let uri = link["uri"].as_str().unwrap_or_default().to_owned();

    // A tampered link is refused and stores nothing.
    let tampered = uri.replace("X-Amz-Signature=", "X-Amz-Signature=00");
    // (a small body: S3 answers before reading a large one, and may cut the connection)
    let refused = http
        .put(&tampered)
        .body(bytes[..4096].to_vec())
        .send()
        .await?;
    assert!(
        refused.status().is_client_error(),
        "tampered: {}",
        refused.status()
    );
    let complete = format!("/api/management/v1/deployments/artifacts/directupload/{id}/complete");
    let (status, _, _) = admin.request(Method::POST, &complete, None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was uploaded yet");

    // An expired link (same signer, one second) is refused.
    let key = mender_aws::s3::ArtifactStorage::key("", &uuid::Uuid::new_v4().to_string());
    let short = stack
        .stack
        .services
        .artifacts
        .presign_put(&key, Duration::from_secs(1))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expired = http.put(&short.uri).body(b"late".to_vec()).send().await?;
    assert!(
        expired.status().is_client_error(),
        "expired: {}",
        expired.status()
    );
    assert_eq!(stack.stack.services.artifacts.size(&key).await?, None);

    // 2. The real upload, 3. complete, then the queue step stores the artifact.
    let put = http.put(&uri).body(bytes.clone()).send().await?;
    assert_eq!(put.status(), StatusCode::OK);
    let (status, _, _) = admin.request(Method::POST, &complete, None).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, _) = admin.request(Method::POST, &complete, None).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "a second complete");
    let path = format!("/api/management/v1/deployments/artifacts/{id}");
    let stored = wait_for(
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let (status, _, b) = admin.request(Method::GET, &path, None).await.ok()?;
            (status == StatusCode::OK).then(|| body(&b))
        },
    )
    .await?;
    assert_eq!(stored["name"], "big-1");
    assert_eq!(stored["size"], bytes.len());
    assert_eq!(stored["updates"][0]["files"][0]["size"], 64 * 1024 * 1024);

    // An invalid object is dropped, never listed.
    let (_, _, link) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/artifacts/directupload",
            None,
        )
        .await?;
    let link = body(&link);
    let bad_id = link["id"].as_str().unwrap_or_default().to_owned();
    let put = http
        .put(link["uri"].as_str().unwrap_or_default())
        .body(vec![7u8; 10_000])
        .send()
        .await?;
    assert_eq!(put.status(), StatusCode::OK);
    let (status, _, _) = admin
        .request(
            Method::POST,
            &format!("/api/management/v1/deployments/artifacts/directupload/{bad_id}/complete"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let key = mender_aws::s3::ArtifactStorage::key("", &bad_id);
    let services = stack.stack.services.clone();
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            services
                .artifacts
                .size(&key)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await?;
    let (status, _, _) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/deployments/artifacts/{bad_id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, list) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/artifacts",
            None,
        )
        .await?;
    assert_eq!(body(&list).as_array().map(Vec::len), Some(1));
    stack.stop().await;
    Ok(())
}
