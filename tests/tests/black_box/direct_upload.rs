//! Direct upload: a 64 MiB artifact PUT through the presigned link, `complete`, then the
//! `process-artifact` queue step parses it from S3 and the artifact is listed. The emulator
//! (s3s-fs, like S3) refuses a tampered or expired presigned URL; an invalid artifact is
//! dropped; `complete` of an unknown or already completed upload is 404. Verified bytes
//! cannot be replaced: not by a second PUT to the link, not by a multipart upload that names a
//! live artifact's id.

use std::time::Duration;

use black_box_tests::artifact::write_module_image;
use black_box_tests::form::{multipart, Part};
use black_box_tests::json_of;
use black_box_tests::mgmt::https_client;
use black_box_tests::tempdir::TempDir;
use black_box_tests::{wait_for, TestStack};
use reqwest::{Method, StatusCode};

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
    let link = json_of(&link);
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
            (status == StatusCode::OK).then(|| json_of(&b))
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
    let link = json_of(&link);
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
    let staged = mender_aws::s3::ArtifactStorage::upload_key("", &bad_id);
    let services = stack.stack.services.clone();
    wait_for_upload(&services, &bad_id, "aborted").await?;
    assert_eq!(services.artifacts.size(&key).await?, None);
    assert_eq!(services.artifacts.size(&staged).await?, None);
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
    assert_eq!(json_of(&list).as_array().map(Vec::len), Some(1));
    stack.stop().await;
    Ok(())
}

/// Waits until `process-artifact` has moved upload `id` to `status`.
async fn wait_for_upload(
    services: &services::Services,
    id: &str,
    status: &str,
) -> anyhow::Result<()> {
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let now = services
                .deployments
                .direct_upload_status("", id)
                .await
                .ok()??;
            (now == status).then_some(())
        },
    )
    .await
}

/// A small real artifact written by `mender-artifact`.
fn write_artifact(work: &TempDir, name: &str, content: &[u8]) -> anyhow::Result<Vec<u8>> {
    let payload = work.path().join(format!("{name}.bin"));
    std::fs::write(&payload, content)?;
    let out = work.path().join(format!("{name}.mender"));
    write_module_image("single-file", name, "test-device", &payload, &out)?;
    Ok(std::fs::read(out)?)
}

/// The bytes behind an artifact's download link.
async fn download(
    admin: &black_box_tests::mgmt::Mgmt,
    http: &reqwest::Client,
    id: &str,
) -> anyhow::Result<Vec<u8>> {
    let (status, _, link) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/deployments/artifacts/{id}/download"),
            None,
        )
        .await?;
    anyhow::ensure!(status == StatusCode::OK, "download link: {status}");
    let uri = json_of(&link)["uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(http.get(uri).send().await?.bytes().await?.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_bytes_cannot_be_replaced() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let http = https_client(&stack.ca_cert())?;
    let work = TempDir::new("replace")?;
    let good = write_artifact(&work, "verified-1", b"the verified payload")?;
    let evil = write_artifact(&work, "evil-1", b"something else entirely")?;

    // A direct upload completes and is verified.
    let (_, _, link) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/artifacts/directupload",
            None,
        )
        .await?;
    let link = json_of(&link);
    let id = link["id"].as_str().unwrap_or_default().to_owned();
    let uri = link["uri"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        http.put(&uri).body(good.clone()).send().await?.status(),
        StatusCode::OK
    );
    let complete = format!("/api/management/v1/deployments/artifacts/directupload/{id}/complete");
    let (status, _, _) = admin.request(Method::POST, &complete, None).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let services = stack.stack.services.clone();
    wait_for_upload(&services, &id, "completed").await?;
    assert_eq!(download(&admin, &http, &id).await?, good);

    // The link is still valid: a second PUT must not replace what was verified.
    let again = http.put(&uri).body(evil.clone()).send().await?;
    assert!(again.status().is_success() || again.status().is_client_error());
    assert_eq!(
        download(&admin, &http, &id).await?,
        good,
        "replaced through the link"
    );

    // A multipart upload naming the live artifact's id is a 409 and leaves it intact.
    let (content_type, form) = multipart(&[
        Part::Text("artifact_id", &id),
        Part::File("artifact", "a.mender", &evil),
    ]);
    let response = http
        .post(format!(
            "{}/api/management/v1/deployments/artifacts",
            stack.url()
        ))
        .bearer_auth(admin.token())
        .header("Content-Type", content_type)
        .body(form)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        download(&admin, &http, &id).await?,
        good,
        "replaced by a multipart upload"
    );
    let (_, _, shown) = admin
        .request(
            Method::GET,
            &format!("/api/management/v1/deployments/artifacts/{id}"),
            None,
        )
        .await?;
    assert_eq!(json_of(&shown)["name"], "verified-1");

    // A multipart upload with a fresh client-chosen id works, and its id is then taken.
    let fresh = uuid::Uuid::new_v4().to_string();
    for expected in [StatusCode::CREATED, StatusCode::CONFLICT] {
        let (content_type, form) = multipart(&[
            Part::Text("artifact_id", &fresh),
            Part::File("artifact", "a.mender", &evil),
        ]);
        let response = http
            .post(format!(
                "{}/api/management/v1/deployments/artifacts",
                stack.url()
            ))
            .bearer_auth(admin.token())
            .header("Content-Type", content_type)
            .body(form)
            .send()
            .await?;
        assert_eq!(response.status(), expected);
    }
    assert_eq!(download(&admin, &http, &fresh).await?, evil);
    stack.stop().await;
    Ok(())
}
