//! Storage faults, black-box against the real emulators: DynamoDB, S3 or SQS stopped (a TCP proxy
//! in front of the emulator that drops every connection, open ones included) or answering
//! errors (a table deleted under the running stack) gives a 5xx in Mender's shape (`error`,
//! `request_id`), never an answer built from nothing (an unknown device, an empty list), and
//! leaves no partial state.
//!
//! Needs the emulators (`make test`).

use std::net::SocketAddr;

use black_box_tests::artifact::write_module_image;
use black_box_tests::form::{multipart, Part};
use black_box_tests::json_of;
use black_box_tests::tempdir::TempDir;
use black_box_tests::TestStack;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to an emulator that can be stopped: while down it refuses new connections
/// (accepts and drops them) and cuts the open ones.
struct Switch {
    down: watch::Sender<bool>,
}

impl Switch {
    /// Proxies the endpoint in environment variable `var` (`http://host:port`) and points
    /// `var` at the proxy, so that a stack started afterwards goes through it.
    async fn install(var: &str) -> anyhow::Result<Switch> {
        let upstream = std::env::var(var)?;
        let target: SocketAddr = upstream.trim_start_matches("http://").parse()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (down, _) = watch::channel(false);
        let watch = down.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut stopped = watch.subscribe();
                if *stopped.borrow() {
                    continue; // dropped: the connection resets
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = stopped.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        std::env::set_var(var, format!("http://{addr}"));
        Ok(Switch { down })
    }

    fn stop(&self) {
        self.down.send_replace(true);
    }

    fn start(&self) {
        self.down.send_replace(false);
    }
}

/// A 5xx with Mender's error body.
fn server_error(what: &str, status: StatusCode, bytes: &[u8]) {
    let b = json_of(bytes);
    assert!(
        status.is_server_error(),
        "{what}: {status} {}",
        String::from_utf8_lossy(bytes)
    );
    assert!(b["error"].is_string(), "{what}: {b}");
    assert!(b["request_id"].is_string(), "{what}: {b}");
}

/// Inventory's table goes away while the other services run: the lookups that used to read a
/// storage error as "device unknown" (`add to group` answered 200 with nothing matched, a
/// deployment to one device was created without its group) answer 500 and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_storage_errors_are_500_not_unknown_devices() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let services = &stack.stack.services;
    let dynamodb = mender_aws::dynamodb(&mender_aws::load_sdk_config().await);
    dynamodb
        .delete_table()
        .table_name(&services.config.inventory_table)
        .send()
        .await?;

    let (status, _, bytes) = admin
        .request(
            Method::PATCH,
            "/api/management/v1/inventory/groups/g1/devices",
            Some(json!(["0b6c7a5e-0000-4000-8000-000000000001"])),
        )
        .await?;
    server_error("add to group", status, &bytes);

    let (status, _, bytes) = admin
        .request(
            Method::POST,
            "/api/management/v1/deployments/deployments",
            Some(json!({
                "name": "d1",
                "artifact_name": "a1",
                "devices": ["0b6c7a5e-0000-4000-8000-000000000001"],
            })),
        )
        .await?;
    server_error("deployment to one device", status, &bytes);
    let (status, _, bytes) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/deployments",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&bytes), json!([]), "no deployment was stored");
    Ok(())
}

/// DynamoDB stops under a running stack: requests answer 500 in Mender's shape (the token
/// check is the first read); started again, the same token works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_stopped_gives_500_in_menders_shape() -> anyhow::Result<()> {
    let dynamodb = Switch::install("AWS_ENDPOINT_URL_DYNAMODB").await?;
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    dynamodb.stop();
    for path in [
        "/api/management/v2/devauth/devices",
        "/api/management/v1/deployments/artifacts",
        "/api/management/v1/useradm/users",
    ] {
        let (status, _, bytes) = admin.request(Method::GET, path, None).await?;
        server_error(path, status, &bytes);
    }
    dynamodb.start();
    let (status, _, _) = admin
        .request(Method::GET, "/api/management/v1/useradm/users", None)
        .await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

/// S3 stops before an upload: `POST /artifacts` answers 500 and no artifact record is left
/// behind (the list stays empty, the same artifact uploads once storage is back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_during_an_upload_leaves_no_artifact() -> anyhow::Result<()> {
    let s3 = Switch::install("AWS_ENDPOINT_URL_S3").await?;
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let work = TempDir::new("faults")?;
    let payload = work.path().join("p.sh");
    std::fs::write(&payload, "#!/bin/sh\ntrue\n")?;
    let out = work.path().join("a.mender");
    write_module_image("script", "fault-1", "test-device", &payload, &out)?;
    let artifact = std::fs::read(&out)?;

    s3.stop();

    let upload = |bytes: &[u8]| {
        let size = bytes.len().to_string();
        let form = multipart(&[
            Part::Text("size", &size),
            Part::File("artifact", "a.mender", bytes),
        ]);
        admin.post_body("/api/management/v1/deployments/artifacts", form)
    };
    let (status, _, bytes) = upload(&artifact).await?;
    server_error("upload with S3 stopped", status, &bytes);
    let (status, _, bytes) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/artifacts",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&bytes), json!([]), "no artifact record");

    // storage back: the same artifact uploads (no id or name was left held)
    s3.start();
    let (status, _, _) = upload(&artifact).await?;
    assert_eq!(status, StatusCode::CREATED);
    let (_, _, bytes) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/artifacts",
            None,
        )
        .await?;
    assert_eq!(json_of(&bytes).as_array().map(Vec::len), Some(1));
    Ok(())
}

/// SQS (moto, at `AWS_ENDPOINT_URL`) stops under a generate request: the raw file is stored,
/// the job cannot be queued, so `POST /artifacts/generate` answers 500 in Mender's shape, the
/// raw file is removed and no artifact appears; once the queue is back the same request is
/// accepted and becomes an artifact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_stopped_under_a_generate_request_leaves_nothing() -> anyhow::Result<()> {
    let sqs = Switch::install("AWS_ENDPOINT_URL").await?;
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let services = stack.stack.services.clone();
    let generate = || {
        let form = multipart(&[
            Part::Text("name", "fault-generated"),
            Part::Text("device_types_compatible", "test-device"),
            Part::Text("type", "single_file"),
            Part::Text("args", r#"{"filename":"hi.txt","dest_dir":"/opt"}"#),
            Part::File("file", "hi.txt", b"hello"),
        ]);
        admin.post_body("/api/management/v1/deployments/artifacts/generate", form)
    };
    let objects_before = services.artifacts.list("").await?;

    sqs.stop();
    let (status, _, bytes) = generate().await?;
    server_error("generate with SQS stopped", status, &bytes);
    assert_eq!(
        services.artifacts.list("").await?,
        objects_before,
        "the raw file is removed"
    );
    let (status, _, bytes) = admin
        .request(
            Method::GET,
            "/api/management/v1/deployments/artifacts",
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&bytes), json!([]), "no artifact record");

    sqs.start();
    let (status, _, _) = generate().await?;
    assert_eq!(status, StatusCode::CREATED);
    black_box_tests::wait_for(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(250),
        || async {
            let (_, _, bytes) = admin
                .request(
                    Method::GET,
                    "/api/management/v1/deployments/artifacts",
                    None,
                )
                .await
                .ok()?;
            (json_of(&bytes).as_array().map(Vec::len) == Some(1)).then_some(())
        },
    )
    .await?;
    Ok(())
}
