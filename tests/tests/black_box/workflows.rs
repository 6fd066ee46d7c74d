//! Workflow steps are idempotent and ordered by revision: a message delivered twice ends in the
//! same state, a stale status never overwrites a newer one, decommissioning twice is harmless.

use std::time::Duration;

use black_box_tests::{wait_for, TestStack};
use serde_json::{json, Value};
use workflows::{DeviceRef, Job};

const RSA_KEY: &str = include_str!("../../../shared/device-keys/tests/fixtures/rsa3072.pub.pem");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_and_stale_messages_do_not_change_the_result() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let services = stack.stack.services.clone();
    let device_id = services
        .deviceauth
        .preauthorize("", &json!({"mac": "02:00:00:00:ff:01"}), RSA_KEY, false)
        .await?;
    let status = |services: services::Services, id: String| async move {
        let device = services.inventory.get_device("", &id).await.ok()?;
        device
            .get("identity", "status")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let seen = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        status(services.clone(), device_id.clone())
    })
    .await?;
    assert_eq!(seen, "preauthorized");

    let job = |revision: i64, device_status: &str| {
        serde_json::to_string(&Job::UpdateDeviceStatus {
            request_id: "test".into(),
            tenant_id: String::new(),
            devices: vec![DeviceRef {
                id: device_id.clone(),
                revision,
            }],
            device_status: device_status.into(),
        })
    };
    let newer = job(100, "accepted")?;
    update_device_status::process(&services, &newer).await?;
    let after_once = services.inventory.get_device("", &device_id).await?;
    update_device_status::process(&services, &newer).await?;
    let after_twice = services.inventory.get_device("", &device_id).await?;
    assert_eq!(
        after_once, after_twice,
        "a redelivered message changed the device"
    );
    assert_eq!(
        after_twice.get("identity", "status"),
        Some(&json!("accepted"))
    );

    update_device_status::process(&services, &job(5, "rejected")?).await?;
    let after_stale = services.inventory.get_device("", &device_id).await?;
    assert_eq!(
        after_stale, after_twice,
        "a stale status overwrote a newer one"
    );

    let decommission = serde_json::to_string(&Job::DecommissionDevice {
        request_id: "test".into(),
        tenant_id: String::new(),
        device_id: device_id.clone(),
    })?;
    decommission_device::process(&services, &decommission).await?;
    decommission_device::process(&services, &decommission).await?;
    assert!(services.inventory.get_device("", &device_id).await.is_err());
    assert!(services
        .deviceauth
        .get_device("", &device_id)
        .await
        .is_err());

    // A malformed message is an error (SQS redelivers it, then the dead-letter queue keeps it).
    assert!(update_device_status::process(&services, "{not json")
        .await
        .is_err());
    stack.stop().await;
    Ok(())
}
