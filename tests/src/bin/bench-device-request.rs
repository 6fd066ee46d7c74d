//! Benchmark: what an authenticated device request costs. Counts the DynamoDB calls (by
//! `X-Amz-Target`) of the device-token check alone and of a whole idle inventory update (the
//! client's periodic PUT with nothing changed), and times the latter through the real router
//! against DynamoDB Local. Run with `make bench` (starts the emulators). With `BENCH_JSON=<file>`
//! it also writes the per-request figures (DynamoDB and SQS calls by operation, median
//! latency) of the two requests an idle fleet makes, for `make cost` (scripts/cost.py).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use axum::body::Body;
use black_box_tests::device::{admit_in_domain, Admission, Device};
use black_box_tests::tempdir::TempDir;
use mender_http::DeviceTokenCheck;
use tower::ServiceExt;

#[derive(Debug, Clone, Default)]
struct CallCounter(Arc<Mutex<BTreeMap<String, usize>>>);

impl CallCounter {
    fn take(&self) -> BTreeMap<String, usize> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("?");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        if let Ok(mut m) = self.0.lock() {
            *m.entry(operation).or_default() += 1;
        }
        Ok(())
    }
}

/// Calls per request by operation, as JSON numbers.
fn per_request_json(calls: &BTreeMap<String, usize>, n: usize) -> serde_json::Value {
    calls
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(*v as f64 / n as f64)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn per_request(calls: &BTreeMap<String, usize>, n: usize) -> String {
    let total: usize = calls.values().sum();
    let detail: Vec<String> = calls
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", *v as f64 / n as f64))
        .collect();
    format!(
        "{:.2} calls ({})",
        total as f64 / n as f64,
        if detail.is_empty() {
            "none".into()
        } else {
            detail.join(", ")
        }
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let state = TempDir::new("bench")?;
    let options = local_stack::Options {
        listen: "127.0.0.1:0".parse()?,
        state_dir: state.path().to_path_buf(),
        prefix: format!("bench{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: local_stack::default_template(),
        admin: None,
        bcrypt_cost: 4,
    };
    let parts = local_stack::prepare(&options).await?;
    let sdk = mender_aws::load_sdk_config().await;
    let counter = CallCounter::default();
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let sqs_counter = CallCounter::default();
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .interceptor(sqs_counter.clone())
            .build(),
    );
    let publisher = Arc::new(workflows::SqsPublisher {
        client: sqs,
        urls: parts.services.config.queues.clone(),
    });
    let services = services::Services::with_parts(
        parts.services.config.clone(),
        dynamodb,
        parts.services.artifacts.clone(),
        publisher,
    )?;

    // A device, admitted through the domain code.
    let device = Device::new("http://unused", reqwest::Client::new(), "02:00:00:00:be:01");
    let (_, token) = admit_in_domain(&services, &device, Admission::Accept).await?;
    let claims: mender_tokens::DeviceClaims = services.keys.verify(&token)?;

    let n = 200;
    counter.take();
    let started = Instant::now();
    for _ in 0..n {
        anyhow::ensure!(services
            .deviceauth
            .device_token_valid(&claims)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?);
    }
    let check_time = started.elapsed();
    let check_calls = counter.take();

    let app = local_stack::app(services.clone());
    let inventory =
        br#"[{"name":"device_type","value":"bench"},{"name":"artifact_name","value":"initial"}]"#;
    let request = || {
        axum::http::Request::put("/api/devices/v1/inventory/device/attributes")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(inventory.to_vec()))
    };
    let first = app.clone().oneshot(request()?).await?;
    anyhow::ensure!(
        first.status() == 200,
        "first inventory update: {}",
        first.status()
    );
    counter.take();
    sqs_counter.take();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let response = app.clone().oneshot(request()?).await?;
        anyhow::ensure!(response.status() == 200);
        latencies.push(t.elapsed());
    }
    let idle_calls = counter.take();
    let idle_sqs = sqs_counter.take();
    latencies.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;

    // An idle update check: v2 `deployments/next` with nothing pending (204).
    let poll = || {
        axum::http::Request::post("/api/devices/v2/deployments/device/deployments/next")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"device_provides":{"device_type":"bench","artifact_name":"initial"},"update_control_map":true}"#))
    };
    counter.take();
    let mut poll_latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let response = app.clone().oneshot(poll()?).await?;
        anyhow::ensure!(response.status() == 204, "idle poll: {}", response.status());
        poll_latencies.push(t.elapsed());
    }
    let poll_calls = counter.take();
    let poll_sqs = sqs_counter.take();
    poll_latencies.sort();

    println!(
        "device token check ({n} calls): {} per request; mean {:.2} ms against DynamoDB Local",
        per_request(&check_calls, n),
        ms(check_time) / n as f64
    );
    println!(
        "idle inventory PUT through the router ({n} requests): {} per request",
        per_request(&idle_calls, n)
    );
    println!(
        "idle inventory PUT latency: median {:.2} ms, p99 {:.2} ms (debug build, DynamoDB Local)",
        ms(latencies[n / 2]),
        ms(latencies[n * 99 / 100])
    );
    println!(
        "idle deployments/next (v2 POST, 204) through the router ({n} requests): {} per request (budget: 2 reads, no writes)",
        per_request(&poll_calls, n)
    );
    println!(
        "idle deployments/next latency: median {:.2} ms, p99 {:.2} ms (debug build, DynamoDB Local)",
        ms(poll_latencies[n / 2]),
        ms(poll_latencies[n * 99 / 100])
    );
    if let Some(path) = std::env::var_os("BENCH_JSON") {
        let figures = serde_json::json!({
            "requests_measured": n,
            "build": "debug",
            "inventory_put": {
                "dynamodb": per_request_json(&idle_calls, n),
                "sqs": per_request_json(&idle_sqs, n),
                "median_ms": ms(latencies[n / 2]),
            },
            "deployments_next": {
                "dynamodb": per_request_json(&poll_calls, n),
                "sqs": per_request_json(&poll_sqs, n),
                "median_ms": ms(poll_latencies[n / 2]),
            },
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&figures)?)?;
    }
    Ok(())
}
