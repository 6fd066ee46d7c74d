//! Benchmark: the device lists the Mender GUI reads, at 10,000 and 100,000 devices. Devices
//! are written straight into DynamoDB Local (items with their index keys, and the counters, as
//! `inventory::store` writes them), then each request goes through the real
//! inventory-management router, and this prints per request: read units consumed (every read
//! asks for `ReturnConsumedCapacity`), latency median / p99, and the peak resident memory of
//! this process while serving it (`VmHWM`, reset before each request through
//! `/proc/self/clear_refs`). Then the budgets of issue 9: statistics and the default pages the
//! same at both sizes (within 10%), nothing above 256 MB. Run with `make bench-inventory`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use axum::body::Body;
use black_box_tests::tempdir::TempDir;
use futures::StreamExt;
use inventory::DynamoStore;
use inventory::InventoryDevice;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The fleet sizes measured (`BENCH_SIZES=1000,5000` for a quick run).
fn sizes() -> Vec<usize> {
    std::env::var("BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| v.len() == 2)
        .unwrap_or_else(|| vec![10_000, 100_000])
}
const GROUPS: usize = 20;

/// Device `i` of the synthetic fleet: 90% accepted, every second device in one of 20 groups,
/// about 30 attributes as a real mender-client reports them.
fn device(i: usize) -> InventoryDevice {
    let id = format!("{:08x}-5e1f-4000-8000-{:012x}", i, i * 7919);
    let mut d = InventoryDevice::new(&id);
    let created = chrono::DateTime::from_timestamp(1_767_225_600 + i as i64, 0).unwrap_or_default();
    let ts = created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = if i % 10 == 9 { "pending" } else { "accepted" };
    d.set("identity", "status", json!(status));
    d.set("identity", "mac", json!(format!("02:00:{:08x}", i)));
    d.set("system", "created_ts", json!(ts));
    d.set("system", "updated_ts", json!(ts));
    d.set("system", "check_in_time", json!(ts));
    if i.is_multiple_of(2) {
        d.set("system", "group", json!(format!("group-{}", i % GROUPS)));
    }
    let inventory = [
        ("device_type", json!(format!("raspberrypi{}", i % 4))),
        ("artifact_name", json!(format!("release-{}", i % 7))),
        ("rootfs-image.version", json!(format!("release-{}", i % 7))),
        ("rootfs-image.checksum", json!(format!("{:064x}", i))),
        ("hostname", json!(format!("device-{i}"))),
        (
            "kernel",
            json!("Linux version 6.1.21-v8+ (dom@buildbot) #1642 SMP PREEMPT"),
        ),
        ("os", json!("Raspbian GNU/Linux 11 (bullseye)")),
        ("cpu_model", json!("ARMv7 Processor rev 4 (v7l)")),
        ("mem_total_kB", json!(948_304 + (i % 3) as i64 * 1024)),
        (
            "ipv4_eth0",
            json!(format!(
                "10.{}.{}.{}/16",
                i / 65536 % 256,
                i / 256 % 256,
                i % 256
            )),
        ),
        ("mac_eth0", json!(format!("02:00:{:08x}", i))),
        ("network_interfaces", json!(["eth0", "wlan0"])),
        ("mender_client_version", json!("4.0.4")),
        ("mender-connect", json!("2.2.1")),
        (
            "update_modules",
            json!(["deb", "directory", "docker", "rpm", "script", "single-file"]),
        ),
        ("bootloader_integration", json!("uboot")),
        ("geo-city", json!(["Oslo", "Berlin", "Lisbon"][i % 3])),
        ("geo-country", json!(["NO", "DE", "PT"][i % 3])),
        ("geo-timezone", json!("Europe/Oslo")),
        ("storage_total_kB", json!(30_000_000 + i as i64)),
    ];
    for (name, value) in inventory {
        d.set("inventory", name, value);
    }
    d
}

/// Writes devices `from..to` (items and counters), 25 per batch, 16 batches at a time.
async fn load(
    client: &aws_sdk_dynamodb::Client,
    store: &DynamoStore,
    table: &str,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let chunks: Vec<(usize, usize)> = (from..to)
        .step_by(25)
        .map(|start| (start, (start + 25).min(to)))
        .collect();
    let mut writes = futures::stream::iter(chunks)
        .map(|(start, end)| async move {
            let devices: Vec<InventoryDevice> = (start..end).map(device).collect();
            let mut requests = Vec::new();
            for d in &devices {
                let item = DynamoStore::device_item("", d)?;
                requests.push(
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item)).build()?)
                        .build(),
                );
            }
            let mut pending = Some(std::collections::HashMap::from([(
                table.to_owned(),
                requests,
            )]));
            while let Some(items) = pending.filter(|p| p.values().any(|v| !v.is_empty())) {
                let out = client
                    .batch_write_item()
                    .set_request_items(Some(items))
                    .send()
                    .await?;
                pending = out.unprocessed_items;
            }
            anyhow::Ok(devices)
        })
        .buffer_unordered(16);
    let mut all = Vec::with_capacity(to - from);
    while let Some(devices) = writes.next().await {
        all.extend(devices?);
        if all.len() >= 5000 {
            store.count_new_devices("", &all).await?;
            all.clear();
        }
    }
    store.count_new_devices("", &all).await?;
    Ok(())
}

/// Peak resident memory since the last reset, and a reset.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Figures {
    units: f64,
    median_ms: f64,
    p99_ms: f64,
    peak_mib: f64,
    total: String,
}

async fn measure(
    app: &axum::Router,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    runs: usize,
) -> anyhow::Result<Figures> {
    let mut latencies = Vec::with_capacity(runs);
    let mut units = 0.0;
    let mut peak: f64 = 0.0;
    let mut total = String::new();
    for _ in 0..runs {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))?;
        reset_peak_rss();
        let before = mender_aws::dynamo::read_units();
        let started = Instant::now();
        let response = app.clone().oneshot(request).await?;
        let status = response.status();
        total = response
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await?
            .to_bytes();
        latencies.push(started.elapsed());
        units += mender_aws::dynamo::read_units() - before;
        peak = peak.max(peak_rss_mib());
        anyhow::ensure!(
            status.is_success(),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Figures {
        units: units / runs as f64,
        median_ms: ms(latencies[runs / 2]),
        p99_ms: ms(latencies[(runs * 99 / 100).min(runs - 1)]),
        peak_mib: peak,
        total,
    })
}

fn gui_attributes() -> Value {
    json!([
        {"scope": "identity", "attribute": "status"},
        {"scope": "inventory", "attribute": "artifact_name"},
        {"scope": "inventory", "attribute": "device_type"},
        {"scope": "inventory", "attribute": "rootfs-image.version"},
        {"scope": "monitor", "attribute": "alerts"},
        {"scope": "system", "attribute": "created_ts"},
        {"scope": "system", "attribute": "updated_ts"},
        {"scope": "system", "attribute": "check_in_time"},
        {"scope": "system", "attribute": "group"},
        {"scope": "tags", "attribute": "name"},
        {"scope": "identity", "attribute": "mac"}
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        mender_aws::init_tracing();
    }
    let state = TempDir::new("bench-inventory")?;
    let options = local_stack::Options {
        listen: "127.0.0.1:0".parse()?,
        state_dir: state.path().to_path_buf(),
        prefix: format!(
            "benchinv{}-",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        template: local_stack::default_template(),
        admin: None,
        bcrypt_cost: 4,
    };
    let parts = local_stack::prepare(&options).await?;
    let services = parts.services.clone();
    let table = services.config.inventory_table.clone();
    let client = mender_aws::dynamodb(&mender_aws::load_sdk_config().await);
    let store = services.inventory.store.clone();
    services
        .useradm
        .create_user("", "bench@example.com", "bench-password-1")
        .await?;
    let token = services
        .useradm
        .login("bench@example.com", "bench-password-1", true)
        .await?;
    let app = local_stack::app(services.clone());

    let status =
        |s: &str| json!({"scope": "identity", "attribute": "status", "type": "$eq", "value": s});
    let requests: Vec<(&str, &str, &str, Option<Value>, usize)> = vec![
        (
            "statistics",
            "GET",
            "/api/management/v2/inventory/statistics",
            None,
            50,
        ),
        (
            "default accepted page",
            "POST",
            "/api/management/v2/inventory/filters/search",
            Some(
                json!({"page": 1, "per_page": 20, "filters": [status("accepted")], "sort": [], "attributes": gui_attributes()}),
            ),
            30,
        ),
        (
            "group page",
            "POST",
            "/api/management/v2/inventory/filters/search",
            Some(
                json!({"page": 1, "per_page": 20, "filters": [{"scope": "system", "attribute": "group", "type": "$eq", "value": "group-4"}, status("accepted")], "attributes": gui_attributes()}),
            ),
            30,
        ),
        (
            "page 50",
            "POST",
            "/api/management/v2/inventory/filters/search",
            Some(
                json!({"page": 50, "per_page": 20, "filters": [status("accepted")], "attributes": gui_attributes()}),
            ),
            20,
        ),
        (
            "attribute filter",
            "POST",
            "/api/management/v2/inventory/filters/search",
            Some(
                json!({"page": 1, "per_page": 20, "filters": [status("accepted"), {"scope": "inventory", "attribute": "device_type", "type": "$eq", "value": "raspberrypi1"}], "attributes": gui_attributes()}),
            ),
            3,
        ),
        (
            "text search",
            "POST",
            "/api/management/v2/inventory/filters/search",
            Some(
                json!({"page": 1, "per_page": 10, "filters": [], "text": "device-4321", "attributes": gui_attributes()}),
            ),
            3,
        ),
    ];

    let mut results: BTreeMap<usize, Vec<(String, Figures)>> = BTreeMap::new();
    let mut loaded = 0;
    let sizes = sizes();
    for &size in &sizes {
        let started = Instant::now();
        load(&client, &store, &table, loaded, size).await?;
        loaded = size;
        println!(
            "loaded {size} devices in {:.1} s (items with index keys + counters, BatchWriteItem)",
            started.elapsed().as_secs_f64()
        );
        println!(
            "  {:<22} {:>10} {:>11} {:>10} {:>10} {:>8}",
            "request", "read units", "median ms", "p99 ms", "peak MiB", "total"
        );
        for (name, method, path, body, runs) in &requests {
            let f = measure(&app, &token, method, path, body.as_ref(), *runs).await?;
            println!(
                "  {:<22} {:>10.1} {:>11.1} {:>10.1} {:>10.1} {:>8}",
                name, f.units, f.median_ms, f.p99_ms, f.peak_mib, f.total
            );
            results.entry(size).or_default().push((name.to_string(), f));
        }
    }
    println!("(debug build against DynamoDB Local; read units as DynamoDB Local reports them; peak = this process's resident memory)");

    let (small, large) = (&results[&sizes[0]], &results[&sizes[1]]);
    let mut ok = true;
    for ((name, a), (_, b)) in small.iter().zip(large.iter()) {
        if ["statistics", "default accepted page", "group page"].contains(&name.as_str()) {
            let same = b.units <= a.units * 1.1 + 0.5;
            ok &= same;
            println!(
                "budget: {name} read units {:.1} at {} vs {:.1} at {}: {}",
                a.units,
                sizes[0],
                b.units,
                sizes[1],
                if same { "same (within 10%)" } else { "GROWS" }
            );
        }
        if b.peak_mib > 256.0 {
            ok = false;
            println!(
                "budget: {name} peaked at {:.1} MiB at {}: OVER 256 MB",
                b.peak_mib, sizes[1]
            );
        }
    }
    let worst = large.iter().map(|(_, f)| f.peak_mib).fold(0.0, f64::max);
    println!(
        "budget: highest peak at {} devices {:.1} MiB (limit 256 MB): {}",
        sizes[1],
        worst,
        if worst <= 256.0 { "ok" } else { "OVER" }
    );
    anyhow::ensure!(ok, "a budget was missed");
    Ok(())
}
