//! The sample events in `events/` are accepted by the code that receives them in AWS:
//!
//! * the API Gateway (HTTP API, payload 2.0) requests go through `lambda_http`'s adapter (what
//!   `lambda_http::run` does in Lambda) into the router of the function the template routes them
//!   to, and reach the handler: 401 for the placeholder token, not the 404/405 fallback;
//! * each SQS batch, given to `mender_aws::sqs::handle_batch` with its workflow step's
//!   `process` (what the Lambda entry point does), is processed against a local stack's tables
//!   with no batch item failure, and its effect is in DynamoDB;
//! * the S3 event is a well-formed `ObjectCreated` event for the artifacts bucket.
//!
//! The SQS tests need the emulators (`make test` starts them).

use std::sync::Mutex;

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use black_box_tests::device::Device;
use black_box_tests::infra::{api_function_for, event_text, offline_services, template};
use black_box_tests::tempdir::TempDir;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Service, ServiceExt};
use lambda_http::{Adapter, Context, LambdaEvent};
use serde_json::{json, Value};
use services::Services;
use workflows::Job;

/// The device every SQS sample names; the tests substitute a device they created.
const SAMPLE_DEVICE_ID: &str = "7d9b2f64-3c1e-4a5b-8f0d-2e6a9c1b4d83";

// ------------------------------------------------------------------------------------------------
// API Gateway

/// Runs an API Gateway sample through the function the template routes it to; returns the
/// status and the JSON body.
async fn invoke_api_sample(name: &str) -> anyhow::Result<(u16, Value)> {
    let text = event_text(name)?;
    let raw: Value = serde_json::from_str(&text)?;
    let route_key = raw["routeKey"].as_str().unwrap_or_default();
    let (method, path) = route_key
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("{name}: routeKey {route_key:?} is not `METHOD /path`"))?;
    let request: LambdaRequest = serde_json::from_str(&text)?;
    anyhow::ensure!(
        matches!(request, LambdaRequest::ApiGatewayV2(_)),
        "{name} is not an HTTP API payload 2.0 event"
    );
    let function = api_function_for(&template()?, method, path)?;
    let router = mender_http::finish((function.router)(offline_services()?));
    let mut adapter = Adapter::from(router);
    let response = adapter
        .ready()
        .await?
        .call(LambdaEvent::new(request, Context::default()))
        .await?;
    let response = serde_json::to_value(&response)?;
    let status = response["statusCode"].as_u64().unwrap_or_default() as u16;
    let body = serde_json::from_str(response["body"].as_str().unwrap_or("null"))?;
    Ok((status, body))
}

#[tokio::test]
async fn api_gateway_device_request_reaches_its_handler() -> anyhow::Result<()> {
    let (status, body) = invoke_api_sample("apigw-inventory-devices-put-attributes.json").await?;
    assert_eq!(status, 401, "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    Ok(())
}

#[tokio::test]
async fn api_gateway_management_request_reaches_its_handler() -> anyhow::Result<()> {
    let (status, body) = invoke_api_sample("apigw-deviceauth-management-list-devices.json").await?;
    assert_eq!(status, 401, "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// SQS

/// The services of a local stack with its own tables and queues (no server, no consumers, so
/// nothing but the sample touches the device).
async fn stack_services() -> anyhow::Result<(Services, TempDir)> {
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
        anyhow::bail!("the emulators are not configured: run the tests with `make test`");
    }
    let state = TempDir::new("events")?;
    let prefix = format!("e{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let parts = local_stack::prepare(&local_stack::Options {
        listen: "127.0.0.1:0".parse()?,
        state_dir: state.path().to_path_buf(),
        prefix,
        template: local_stack::default_template(),
        admin: None,
        bcrypt_cost: 4,
    })
    .await?;
    Ok((parts.services, state))
}

/// A preauthorized device; returns its id.
async fn new_device(services: &Services) -> anyhow::Result<String> {
    let device = Device::new("", reqwest::Client::new(), "52:54:00:4f:a1:7c");
    services
        .deviceauth
        .preauthorize("", &json!({"mac": device.mac}), &device.pubkey_pem(), false)
        .await
        .map_err(|e| anyhow::anyhow!("preauthorize: {e}"))
}

/// `events/sqs-<step>.json` about `device_id`, checked to be a FIFO batch of `step`'s queue.
fn sqs_sample(step: &str, device_id: &str) -> anyhow::Result<LambdaEvent<SqsEvent>> {
    let text = event_text(&format!("sqs-{step}.json"))?.replace(SAMPLE_DEVICE_ID, device_id);
    let event: SqsEvent = serde_json::from_str(&text)?;
    anyhow::ensure!(!event.records.is_empty(), "sqs-{step}.json has no records");
    for record in &event.records {
        let job: Job = serde_json::from_str(record.body.as_deref().unwrap_or_default())?;
        assert_eq!(job.queue().name(), step, "a message of another queue");
        assert_eq!(
            record.attributes.get("MessageGroupId"),
            Some(&job.group()),
            "FIFO message group"
        );
        let arn = record.event_source_arn.as_deref().unwrap_or_default();
        assert!(arn.ends_with(&format!("-{step}.fifo")), "{arn}");
    }
    Ok(LambdaEvent::new(event, Context::default()))
}

fn assert_no_failures(step: &str, response: &SqsBatchResponse, errors: &Mutex<Vec<String>>) {
    assert!(
        response.batch_item_failures.is_empty(),
        "{step}: failed messages {:?}: {:?}",
        response
            .batch_item_failures
            .iter()
            .map(|f| &f.item_identifier)
            .collect::<Vec<_>>(),
        errors.lock().map(|e| e.clone()).unwrap_or_default()
    );
}

/// `(scope, name)` of the device's inventory, or None when it has no inventory.
async fn inventory_attr(
    services: &Services,
    device_id: &str,
    scope: &str,
    name: &str,
) -> anyhow::Result<Option<Value>> {
    match services.inventory.get_device("", device_id).await {
        Ok(device) => Ok(device.get(scope, name).cloned()),
        Err(inventory::Error::NotFound(_)) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("inventory: {e}")),
    }
}

macro_rules! run_sample {
    ($services:expr, $step:literal, $device:expr, $process:path) => {{
        let services: &Services = $services;
        let event = sqs_sample($step, $device)?;
        let errors = Mutex::new(Vec::new());
        let errors_ref = &errors;
        let response = mender_aws::sqs::handle_batch(event, |body| async move {
            let result = $process(services, &body).await;
            if let (Err(e), Ok(mut errors)) = (&result, errors_ref.lock()) {
                errors.push(e.to_string());
            }
            result
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_no_failures($step, &response, &errors);
    }};
}

#[tokio::test]
async fn provision_device_sample_sets_the_inventory_status() -> anyhow::Result<()> {
    let (services, _state) = stack_services().await?;
    let id = new_device(&services).await?;
    run_sample!(
        &services,
        "provision-device",
        &id,
        provision_device::process
    );
    assert_eq!(
        inventory_attr(&services, &id, "identity", "status").await?,
        Some(json!("accepted"))
    );
    Ok(())
}

#[tokio::test]
async fn update_device_status_sample_sets_the_latest_status() -> anyhow::Result<()> {
    let (services, _state) = stack_services().await?;
    let id = new_device(&services).await?;
    run_sample!(
        &services,
        "update-device-status",
        &id,
        update_device_status::process
    );
    // pending (revision 2), then accepted (revision 3)
    assert_eq!(
        inventory_attr(&services, &id, "identity", "status").await?,
        Some(json!("accepted"))
    );
    Ok(())
}

#[tokio::test]
async fn update_device_inventory_sample_writes_identity_and_check_in() -> anyhow::Result<()> {
    let (services, _state) = stack_services().await?;
    let id = new_device(&services).await?;
    run_sample!(
        &services,
        "update-device-inventory",
        &id,
        update_device_inventory::process
    );
    assert_eq!(
        inventory_attr(&services, &id, "identity", "mac").await?,
        Some(json!("52:54:00:4f:a1:7c"))
    );
    assert_eq!(
        inventory_attr(&services, &id, "system", "check_in_time").await?,
        Some(json!("2025-11-22T10:15:31.204Z"))
    );
    Ok(())
}

#[tokio::test]
async fn decommission_device_sample_removes_the_device_everywhere() -> anyhow::Result<()> {
    let (services, _state) = stack_services().await?;
    let id = new_device(&services).await?;
    run_sample!(
        &services,
        "update-device-inventory",
        &id,
        update_device_inventory::process
    );
    assert!(inventory_attr(&services, &id, "identity", "mac")
        .await?
        .is_some());
    run_sample!(
        &services,
        "decommission-device",
        &id,
        decommission_device::process
    );
    assert_eq!(
        inventory_attr(&services, &id, "identity", "mac").await?,
        None
    );
    assert!(
        services.deviceauth.get_device("", &id).await.is_err(),
        "deviceauth still has the device"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_artifact_sample_stores_a_directly_uploaded_artifact() -> anyhow::Result<()> {
    let (services, _state) = stack_services().await?;
    // A direct upload: the intent, the object in S3 (written by our artifact writer), complete.
    let id = services.deployments.start_direct_upload("").await?;
    let mut spec =
        mender_artifact::ArtifactSpec::module_image("from-sample", vec!["board".into()], "script");
    spec.files.push(mender_artifact::PayloadFile::from_bytes(
        "run.sh",
        b"#!/bin/sh\ntrue\n".to_vec(),
    ));
    let mut bytes = Vec::new();
    mender_artifact::write_artifact(spec, &mut bytes)?;
    services
        .artifacts
        .client
        .put_object()
        .bucket(&services.artifacts.bucket)
        .key(mender_aws::s3::ArtifactStorage::upload_key("", &id))
        .body(bytes.clone().into())
        .send()
        .await?;
    services.deployments.complete_direct_upload("", &id).await?;
    run_sample!(
        &services,
        "process-artifact",
        &id,
        process_artifact::process
    );
    let artifact = services.deployments.artifact("", &id).await?;
    assert_eq!(artifact.name, "from-sample");
    assert_eq!(artifact.size, bytes.len() as u64);
    assert_eq!(
        services
            .deployments
            .direct_upload_status("", &id)
            .await?
            .as_deref(),
        Some("completed")
    );
    // Delivered twice: the same state.
    run_sample!(
        &services,
        "process-artifact",
        &id,
        process_artifact::process
    );
    assert_eq!(services.deployments.artifacts("").await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_artifact_sample_builds_a_single_file_artifact() -> anyhow::Result<()> {
    let (services, _state) = stack_services().await?;
    // What `POST /artifacts/generate` leaves: the raw file under the staging key.
    let id = uuid::Uuid::new_v4().to_string();
    let staging = generate_artifact::staging_key("", &id);
    let script = b"#!/bin/sh\necho hello\n".to_vec();
    services.artifacts.put(&staging, script.clone()).await?;
    run_sample!(
        &services,
        "generate-artifact",
        &id,
        generate_artifact::process
    );
    let artifact = services.deployments.artifact("", &id).await?;
    assert_eq!(artifact.name, "hello-1");
    assert_eq!(artifact.description, "hello.sh for /usr/local/bin");
    assert_eq!(
        artifact.device_types_compatible,
        vec!["raspberrypi4".to_string(), "test-device".to_string()]
    );
    assert_eq!(artifact.updates[0].type_info.kind, "single-file");
    let files: Vec<(&str, u64)> = artifact.updates[0]
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.size))
        .collect();
    assert!(
        files.contains(&("hello.sh", script.len() as u64)),
        "{files:?}"
    );
    let key = mender_aws::s3::ArtifactStorage::key("", &id);
    assert_eq!(services.artifacts.size(&key).await?, Some(artifact.size));
    assert_eq!(services.artifacts.size(&staging).await?, None);
    // Delivered twice: the same state.
    run_sample!(
        &services,
        "generate-artifact",
        &id,
        generate_artifact::process
    );
    assert_eq!(services.deployments.artifacts("").await?.len(), 1);
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// S3

#[test]
fn s3_sample_is_an_artifact_upload() -> anyhow::Result<()> {
    let event: S3Event = serde_json::from_str(&event_text("s3-artifact-created.json")?)?;
    assert_eq!(event.records.len(), 1);
    let record = &event.records[0];
    assert!(record
        .event_name
        .as_deref()
        .is_some_and(|n| n.starts_with("ObjectCreated:")));
    let bucket = record.s3.bucket.name.as_deref().unwrap_or_default();
    assert!(bucket.contains("-artifactsbucket-"), "{bucket}");
    assert!(record
        .s3
        .object
        .key
        .as_deref()
        .is_some_and(|k| !k.is_empty()));
    assert!(
        template()?.buckets.iter().any(|b| b == "ArtifactsBucket"),
        "the template has no ArtifactsBucket"
    );
    Ok(())
}
