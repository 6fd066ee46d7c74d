//! The counters behind statistics, list totals and `GET /groups` stay exact when many devices
//! change at once: 40 devices accepted concurrently, grouped while their inventory is written
//! concurrently (conflicting writes to the same items), then decommissioned concurrently, with
//! a redelivered decommission on top; after each step statistics, deviceauth counts, the
//! indexed list totals and the pages themselves agree with what was done.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use black_box_tests::device::Device;
use black_box_tests::mgmt::https_client;
use black_box_tests::TestStack;
use inventory::search::SearchQuery;
use inventory::AttributeIn;
use serde_json::{json, Value};

const DEVICES: usize = 40;

/// Waits until `check` holds (the workflow steps copy deviceauth's changes into inventory).
async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn query(body: Value) -> anyhow::Result<SearchQuery> {
    Ok(SearchQuery::parse(body.to_string().as_bytes())?)
}

fn status_filter(status: &str) -> Value {
    json!({"scope": "identity", "attribute": "status", "type": "$eq", "value": status})
}

/// Every id of a list, read page by page (pages of 7), with the total each page reported.
async fn all_pages(
    inventory: &inventory::Inventory,
    filters: Value,
) -> anyhow::Result<(BTreeSet<String>, Vec<u64>)> {
    let mut ids = BTreeSet::new();
    let mut totals = Vec::new();
    for page in 1.. {
        let q = query(json!({"page": page, "per_page": 7, "filters": filters.clone()}))?;
        let found = inventory.search("", &q).await?;
        totals.push(found.total);
        let n = found.devices.len();
        for d in found.devices {
            anyhow::ensure!(ids.insert(d.id.clone()), "{} listed twice", d.id);
        }
        if n < 7 {
            break;
        }
    }
    Ok((ids, totals))
}

async fn accepted_pending(inventory: &inventory::Inventory) -> anyhow::Result<(i64, i64)> {
    let stats = inventory.statistics("").await?;
    let n = |s: &str| {
        stats["devices_by_status"][s]["standard"]
            .as_i64()
            .unwrap_or(-1)
    };
    Ok((n("accepted"), n("pending")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_stay_exact_under_concurrent_changes() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let services = stack.stack.services.clone();
    let http = https_client(&stack.ca_cert())?;
    let inventory = services.inventory.clone();
    let deviceauth = services.deviceauth.clone();

    for i in 0..DEVICES {
        let mut device = Device::new(
            stack.url(),
            http.clone(),
            &format!("02:00:00:fc:00:{i:02x}"),
        );
        device.authenticate().await?;
    }
    let every = mender_http::paging::Paging {
        page: 1,
        per_page: 500,
    };
    let (pending, _) = deviceauth
        .list_devices("", &Default::default(), every)
        .await?;
    assert_eq!(pending.len(), DEVICES);
    eventually("40 pending in inventory", || async {
        Ok(accepted_pending(&inventory).await? == (0, DEVICES as i64))
    })
    .await?;

    // All accepted at once.
    let accepts = pending.iter().map(|d| {
        let deviceauth = deviceauth.clone();
        let (id, aid) = (d.id.clone(), d.auth_sets[0].id.clone());
        async move { deviceauth.set_auth_status("", &id, &aid, "accepted").await }
    });
    for result in futures::future::join_all(accepts).await {
        result?;
    }
    assert_eq!(
        deviceauth.count_devices("", Some("accepted")).await?,
        DEVICES
    );
    assert_eq!(deviceauth.count_devices("", Some("pending")).await?, 0);
    assert_eq!(deviceauth.count_devices("", None).await?, DEVICES);
    eventually("40 accepted in inventory", || async {
        Ok(accepted_pending(&inventory).await? == (DEVICES as i64, 0))
    })
    .await?;
    let ids: BTreeSet<String> = pending.iter().map(|d| d.id.clone()).collect();
    let (listed, totals) = all_pages(&inventory, json!([status_filter("accepted")])).await?;
    assert_eq!(listed, ids);
    assert!(totals.iter().all(|t| *t == DEVICES as u64), "{totals:?}");

    // Grouped while the same devices' inventory is written: conflicting writes to each item.
    let ordered: Vec<String> = ids.iter().cloned().collect();
    let writes = ordered.iter().enumerate().flat_map(|(i, id)| {
        let group = if i % 2 == 0 { "fc-a" } else { "fc-b" };
        let (inv1, inv2, id1, id2) = (inventory.clone(), inventory.clone(), id.clone(), id.clone());
        let attrs = vec![AttributeIn {
            name: "fc_seq".into(),
            value: Some(json!(i)),
            description: None,
            scope: None,
        }];
        [
            futures::future::Either::Left(async move { inv1.set_group("", &id1, group).await }),
            futures::future::Either::Right(async move {
                inv2.device_update("", &id2, attrs, false).await
            }),
        ]
    });
    for result in futures::future::join_all(writes).await {
        result?;
    }
    assert_eq!(inventory.list_groups("", None).await?, vec!["fc-a", "fc-b"]);
    assert_eq!(
        inventory.list_groups("", Some("accepted")).await?,
        vec!["fc-a", "fc-b"]
    );
    assert!(inventory.list_groups("", Some("pending")).await?.is_empty());
    for (group, half) in [("fc-a", 0), ("fc-b", 1)] {
        let filters = json!([
            {"scope": "system", "attribute": "group", "type": "$eq", "value": group},
            status_filter("accepted")
        ]);
        let (members, totals) = all_pages(&inventory, filters).await?;
        let expected: BTreeSet<String> = ordered.iter().skip(half).step_by(2).cloned().collect();
        assert_eq!(members, expected, "{group}");
        assert!(totals.iter().all(|t| *t == 20), "{group}: {totals:?}");
    }
    let ungrouped = query(json!({"per_page": 1, "filters": [
        {"scope": "system", "attribute": "group", "type": "$nin", "value": ["fc-a", "fc-b"]}]}))?;
    assert_eq!(inventory.search("", &ungrouped).await?.total, 0);
    for (i, id) in ordered.iter().enumerate() {
        let device = inventory.get_device("", id).await?;
        assert_eq!(device.get("inventory", "fc_seq"), Some(&json!(i)), "{id}");
    }

    // Ten decommissioned at once (five of each group), and one decommission delivered twice.
    let gone: Vec<String> = ordered.iter().take(10).cloned().collect();
    let decommissions = gone.iter().map(|id| {
        let deviceauth = deviceauth.clone();
        let id = id.clone();
        async move { deviceauth.decommission("", &id).await }
    });
    for result in futures::future::join_all(decommissions).await {
        result?;
    }
    eventually("30 accepted after decommissioning", || async {
        Ok(accepted_pending(&inventory).await? == (30, 0)
            && deviceauth.count_devices("", None).await? == 30)
    })
    .await?;
    inventory
        .set_status("", &gone[0], "decommissioned", i64::MAX)
        .await?;
    deviceauth.hard_delete("", &gone[0]).await?;
    assert_eq!(accepted_pending(&inventory).await?, (30, 0));
    assert_eq!(deviceauth.count_devices("", Some("accepted")).await?, 30);
    for group in ["fc-a", "fc-b"] {
        let filters =
            json!([{"scope": "system", "attribute": "group", "type": "$eq", "value": group}]);
        let (members, totals) = all_pages(&inventory, filters).await?;
        assert_eq!(members.len(), 15, "{group}");
        assert!(totals.iter().all(|t| *t == 15), "{group}: {totals:?}");
        assert!(members.iter().all(|m| !gone.contains(m)));
    }
    let (listed, _) = all_pages(&inventory, json!([status_filter("accepted")])).await?;
    let expected: BTreeSet<String> = ordered.iter().skip(10).cloned().collect();
    assert_eq!(listed, expected);
    stack.stop().await;
    Ok(())
}
