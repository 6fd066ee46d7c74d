//! The first flow a real device goes through, with the real Debian `mender-client` 3.4 as a
//! process: it asks to be authenticated (pending), the operator accepts it through the
//! management API, the client gets its token and its inventory shows up; mender-cli logs in and
//! lists it; then the device is decommissioned: its next call gets 401 and its inventory is gone.

use std::time::Duration;

use black_box_tests::mgmt::inventory_attribute;
use black_box_tests::{
    mender_available, mender_cli_available, wait_for, MenderCli, MenderClient, TestStack,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mender_client_is_admitted_inventoried_and_decommissioned() -> anyhow::Result<()> {
    anyhow::ensure!(
        mender_available() && mender_cli_available(),
        "Debian Mender clients missing: run scripts/deps.sh"
    );
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let mac = "02:00:00:00:aa:01";
    let mut client = MenderClient::start(stack.url(), &stack.ca_cert(), mac)?;

    // 1. The device asks to be authenticated and shows up as pending.
    let device = admin
        .wait_for_device_by_mac(mac, black_box_tests::FIRST_REQUEST_WAIT)
        .await?;
    assert_eq!(device["status"], "pending", "{device}");
    let id = device["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(device["auth_sets"][0]["status"], "pending");
    assert!(device["auth_sets"][0]["pubkey"]
        .as_str()
        .unwrap_or_default()
        .starts_with("-----BEGIN PUBLIC KEY-----\n"));

    // 2. Accepted through the management API; the client gets its token and sends inventory.
    admin.accept_device(&id).await?;
    let inventory = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let (status, device) = admin.inventory_device(&id).await.ok()?;
            (status == 200 && inventory_attribute(&device, "custom_list").is_some())
                .then_some(device)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; client log:\n{}", client.log_tail(40)))?;
    assert_eq!(
        inventory_attribute(&inventory, "device_type"),
        Some(&json!("test-device"))
    );
    assert_eq!(
        inventory_attribute(&inventory, "artifact_name"),
        Some(&json!("initial"))
    );
    assert!(inventory_attribute(&inventory, "mender_client_version")
        .and_then(|v| v.as_str())
        .is_some_and(|v| v.starts_with("3.4")));
    assert_eq!(
        inventory_attribute(&inventory, "custom_list"),
        Some(&json!(["alpha", "beta"]))
    );
    // Identity and status arrive through the queues.
    let inventory = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let (_, device) = admin.inventory_device(&id).await.ok()?;
            (inventory_attribute(&device, "status") == Some(&json!("accepted"))
                && inventory_attribute(&device, "mac").is_some())
            .then_some(device)
        },
    )
    .await?;
    assert_eq!(inventory_attribute(&inventory, "mac"), Some(&json!(mac)));
    let (_, device) = admin.device(&id).await?;
    assert_eq!(device["status"], "accepted");
    assert!(device["check_in_time"].is_string(), "{device}");

    // 3. mender-cli logs in and lists the device.
    let cli = MenderCli::new(stack.url(), &stack.ca_cert())?;
    let login = cli
        .login(
            black_box_tests::stack::ADMIN_EMAIL,
            black_box_tests::stack::ADMIN_PASSWORD,
        )
        .await?
        .ensure_success()?;
    assert!(login.stdout.contains("login successful"), "{login:?}");
    let list = cli.devices_list().await?.ensure_success()?;
    assert!(list.stdout.contains(&id), "{list:?}");

    // 4. Decommissioned: the next device call is refused and the inventory entry goes away.
    let log_before = client.log().len();
    admin.decommission(&id).await?;
    client.send_inventory_now()?;
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let log = client.log();
            log.get(log_before..)
                .is_some_and(|new| new.contains("Device unauthorized"))
                .then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("no 401 after decommissioning: {e}\n{}", client.log_tail(30)))?;
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let (inv, _) = admin.inventory_device(&id).await.ok()?;
            let (auth, _) = admin.device(&id).await.ok()?;
            (inv == 404 && auth == 404).then_some(())
        },
    )
    .await?;
    client.stop()?;
    stack.stop().await;
    Ok(())
}
