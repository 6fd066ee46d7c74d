//! Benchmark: cold start of every Lambda function's release `bootstrap` (each `functions/*`
//! but `deviceconnect`, a container). A small Lambda Runtime API on 127.0.0.1 hands each freshly
//! spawned process one real event; per function it prints init (spawn → first `GET
//! /invocation/next`: process start and `main` up to the runtime loop) and first request (event
//! handed out → its response POST), min and median over several cold starts, the CPU time the
//! process used during init (its threads' `schedstat`: wall time on a busy machine also counts
//! waiting for a CPU), the response's status, the binary's size and whether the process had any
//! TCP/UDP socket besides the runtime API one when it first asked for an event (a network call
//! during init).
//!
//! Each process gets the environment Lambda gives it: the template's variables (`Globals` and
//! its own, resources resolved to this run's tables, queues and bucket on the bench emulators,
//! the JWT private or public key as the template says), `AWS_LAMBDA_*`, credentials and region
//! as variables, plus `AWS_ENDPOINT_URL*` pointing at the emulators — and nothing else (no
//! `HOME`, no `AWS_EC2_METADATA_DISABLED`, so a provider that would reach for IMDS or a profile
//! file shows up). Run with `make bench` (`scripts/bench.sh`: builds the functions in release
//! and starts the emulators, STACK_NAME=bench). `BENCH_COLD_STARTS` sets the number of cold
//! starts per function (default 5); `BENCH_BIN_DIR` where the binaries are (default
//! `$CARGO_TARGET_DIR/release`); `BENCH_ONLY=a,b` runs only these functions; `BENCH_KEEP_LOGS=1`
//! keeps the functions' output (the path is printed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use black_box_tests::device::{admit_in_domain, Admission, Device};
use black_box_tests::infra;
use black_box_tests::tempdir::TempDir;
use local_stack::Created;
use serde_json::{json, Value};
use services::Services;
use tokio::sync::mpsc;

/// The init budget of every function.
const INIT_BUDGET_MS: f64 = 20.0;
const ADMIN_EMAIL: &str = "bench-admin@example.com";
const ADMIN_PASSWORD: &str = "bench-admin-secret-1";
/// The device every request and step message is about.
const DEVICE_MAC: &str = "02:00:00:00:c0:01";
/// The device id the sample events in `events/` name (replaced by a real one).
const SAMPLE_DEVICE: &str = "7d9b2f64-3c1e-4a5b-8f0d-2e6a9c1b4d83";
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

// ---------------------------------------------------------------------------------------------
// The runtime API
// ---------------------------------------------------------------------------------------------

/// One event to hand out.
struct Invocation {
    id: String,
    body: String,
    function_arn: String,
    deadline_ms: u64,
}

/// What the runtime API saw.
enum Report {
    /// The first `GET next`: when it arrived, the process's other sockets at that moment, and
    /// when the event was handed out.
    Next {
        at: Instant,
        sockets: Sockets,
        /// CPU time the process used so far (all its threads).
        cpu: Option<Duration>,
        handed_out: Instant,
    },
    Response {
        at: Instant,
        body: Bytes,
    },
    /// `/invocation/{id}/error`: the handler failed.
    Error {
        at: Instant,
        body: Bytes,
    },
    /// `/init/error`.
    InitError {
        body: Bytes,
    },
}

/// The process being measured.
struct Slot {
    pid: Option<u32>,
    event: Option<Invocation>,
    reports: mpsc::UnboundedSender<Report>,
}

struct Api {
    port: u16,
    slot: Mutex<Option<Slot>>,
}

type Shared = Arc<Api>;

impl Api {
    fn report(&self, report: Report) {
        if let Ok(slot) = self.slot.lock() {
            if let Some(slot) = slot.as_ref() {
                let _ = slot.reports.send(report);
            }
        }
    }

    /// The process's pid and its event, once.
    fn take_event(&self) -> Option<(Option<u32>, Invocation)> {
        let mut slot = self.slot.lock().ok()?;
        let slot = slot.as_mut()?;
        let event = slot.event.take()?;
        Some((slot.pid, event))
    }

    fn pid(&self) -> Option<u32> {
        self.slot.lock().ok()?.as_ref()?.pid
    }
}

async fn next(State(api): State<Shared>) -> Response {
    let at = Instant::now();
    let Some((pid, event)) = api.take_event() else {
        // Later polls wait until the process is killed.
        return std::future::pending().await;
    };
    let mut pid = pid;
    // The pid is recorded right after spawn; a process this fast would still be waiting.
    for _ in 0..1000 {
        if pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
        pid = api.pid();
    }
    let sockets = match pid {
        Some(pid) => Sockets::of(pid, api.port),
        None => Sockets::unknown("pid not known"),
    };
    let cpu = pid.and_then(cpu_time);
    let mut response = event.body.into_response();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("content-type", "application/json");
    set("lambda-runtime-aws-request-id", &event.id);
    set("lambda-runtime-deadline-ms", &event.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &event.function_arn);
    set(
        "lambda-runtime-trace-id",
        &format!(
            "Root=1-{:08x}-{};Parent={};Sampled=0",
            chrono::Utc::now().timestamp(),
            &uuid::Uuid::new_v4().simple().to_string()[..24],
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        ),
    );
    api.report(Report::Next {
        at,
        sockets,
        cpu,
        handed_out: Instant::now(),
    });
    response
}

async fn invocation_response(State(api): State<Shared>, body: Bytes) -> StatusCode {
    api.report(Report::Response {
        at: Instant::now(),
        body,
    });
    StatusCode::ACCEPTED
}

async fn invocation_error(State(api): State<Shared>, body: Bytes) -> StatusCode {
    api.report(Report::Error {
        at: Instant::now(),
        body,
    });
    StatusCode::ACCEPTED
}

async fn init_error(State(api): State<Shared>, body: Bytes) -> StatusCode {
    api.report(Report::InitError { body });
    StatusCode::ACCEPTED
}

/// Serves the runtime API on a free port of 127.0.0.1.
async fn start_api() -> anyhow::Result<Shared> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = Arc::new(Api {
        port: listener.local_addr()?.port(),
        slot: Mutex::new(None),
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(api.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("runtime API stopped: {e}");
        }
    });
    Ok(api)
}

// ---------------------------------------------------------------------------------------------
// Sockets of a process (/proc)
// ---------------------------------------------------------------------------------------------

/// The sockets a process holds besides its runtime API connection.
#[derive(Debug, Default)]
struct Sockets {
    /// TCP/UDP sockets other than the runtime API connection, e.g. `tcp 127.0.0.1:28000`.
    network: Vec<String>,
    /// Whether the runtime API connection was seen (a sanity check of the scan).
    runtime_api_seen: bool,
    /// Why the scan failed, if it did.
    unknown: Option<String>,
}

impl Sockets {
    fn unknown(why: &str) -> Self {
        Sockets {
            unknown: Some(why.to_owned()),
            ..Sockets::default()
        }
    }

    /// Reads `/proc/<pid>/fd` and the process's network namespace tables.
    fn of(pid: u32, api_port: u16) -> Self {
        let inodes = match socket_inodes(pid) {
            Ok(inodes) => inodes,
            Err(e) => return Sockets::unknown(&format!("/proc/{pid}/fd: {e}")),
        };
        let mut table = HashMap::new();
        for proto in ["tcp", "tcp6", "udp", "udp6"] {
            let path = format!("/proc/{pid}/net/{proto}");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if let (Some(remote), Some(inode)) = (fields.get(2), fields.get(9)) {
                    table.insert(inode.to_string(), (proto, proc_address(remote)));
                }
            }
        }
        let mut sockets = Sockets::default();
        for inode in inodes {
            match table.get(&inode) {
                Some((proto, Some((ip, port))))
                    if proto.starts_with("tcp") && *port == api_port && ip == "127.0.0.1" =>
                {
                    sockets.runtime_api_seen = true;
                }
                Some((proto, Some((ip, port)))) => {
                    sockets.network.push(format!("{proto} {ip}:{port}"));
                }
                Some((proto, None)) => sockets.network.push(format!("{proto} ?")),
                // unix, netlink, ...: not a network call
                None => {}
            }
        }
        sockets
    }
}

/// The CPU time of all the process's threads (`/proc/<pid>/task/*/schedstat`, nanoseconds on
/// a CPU): meaningful while they all wait, as at the first `GET next`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// The inodes of the process's socket descriptors.
fn socket_inodes(pid: u32) -> std::io::Result<Vec<String>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.push(inode.to_owned());
        }
    }
    Ok(inodes)
}

/// `0100007F:6D60` (or the 32-digit IPv6 form) as `(ip, port)`.
fn proc_address(text: &str) -> Option<(String, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::new();
    for word in 0..ip.len() / 8 {
        let w = u32::from_str_radix(ip.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            let v6 = std::net::Ipv6Addr::from(octets);
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            }
        }
        _ => return None,
    };
    Some((ip, port))
}

// ---------------------------------------------------------------------------------------------
// The template: each function's environment, memory and timeout
// ---------------------------------------------------------------------------------------------

/// What the template gives a function.
#[derive(Debug, Default)]
struct FunctionSpec {
    memory_mb: u32,
    timeout_secs: u64,
    /// `(name, value as written)`: Globals first, then the function's own.
    variables: Vec<(String, String)>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The value of a `key: value` line, comment removed.
fn value_of(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.trim().split_once(':')?;
    let value = value.split(" #").next().unwrap_or_default().trim();
    Some((key.trim(), value))
}

/// The lines indented below `lines[at]` (blank and comment lines dropped).
fn block(lines: &[&str], at: usize) -> Vec<String> {
    let own = indent(lines[at]);
    lines[at + 1..]
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .take_while(|l| indent(l) > own)
        .map(|l| (*l).to_owned())
        .collect()
}

/// The `Environment.Variables` entries of a `Properties`/`Function` block.
fn variables(props: &[String]) -> Vec<(String, String)> {
    let lines: Vec<&str> = props.iter().map(String::as_str).collect();
    let Some(env) = lines.iter().position(|l| l.trim() == "Environment:") else {
        return Vec::new();
    };
    let env_block = block(&lines, env);
    let env_lines: Vec<&str> = env_block.iter().map(String::as_str).collect();
    let Some(vars) = env_lines.iter().position(|l| l.trim() == "Variables:") else {
        return Vec::new();
    };
    let vars_block = block(&env_lines, vars);
    let Some(first) = vars_block.first() else {
        return Vec::new();
    };
    let child = indent(first);
    vars_block
        .iter()
        .filter(|l| indent(l) == child)
        .filter_map(|l| value_of(l))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Reads a function's block (found by `CodeUri: ../functions/<name>`) and the Globals.
fn function_spec(template: &str, name: &str) -> anyhow::Result<FunctionSpec> {
    let lines: Vec<&str> = template.lines().collect();
    let globals = lines
        .iter()
        .position(|l| l.trim_end() == "Globals:")
        .context("template has no Globals")?;
    let globals_block = block(&lines, globals);
    let mut spec = FunctionSpec {
        variables: variables(&globals_block),
        ..FunctionSpec::default()
    };
    let code_uri = format!("CodeUri: ../functions/{name}");
    let at = lines
        .iter()
        .position(|l| l.trim() == code_uri)
        .with_context(|| format!("template has no {code_uri}"))?;
    let props = lines[..at]
        .iter()
        .rposition(|l| !l.trim().is_empty() && indent(l) < indent(lines[at]))
        .context("CodeUri outside a block")?;
    let props_block = block(&lines, props);
    for line in props_block
        .iter()
        .filter(|l| indent(l) == indent(lines[at]))
    {
        match value_of(line) {
            Some(("MemorySize", v)) => spec.memory_mb = v.parse()?,
            Some(("Timeout", v)) => spec.timeout_secs = v.parse()?,
            _ => {}
        }
    }
    anyhow::ensure!(spec.memory_mb > 0, "{name}: no MemorySize in the template");
    anyhow::ensure!(spec.timeout_secs > 0, "{name}: no Timeout in the template");
    spec.variables.extend(variables(&props_block));
    Ok(spec)
}

/// A template value resolved for this run: `!Ref` of a table, queue or bucket, the JWT keys,
/// literals as written.
fn resolve(
    name: &str,
    value: &str,
    created: &Created,
    keys: &(String, String),
) -> anyhow::Result<String> {
    match name {
        "JWT_PRIVATE_KEY" => return Ok(keys.0.clone()),
        "JWT_PUBLIC_KEY" => return Ok(keys.1.clone()),
        _ => {}
    }
    if let Some(id) = value.strip_prefix("!Ref ") {
        let id = id.trim();
        return created
            .tables
            .get(id)
            .or_else(|| created.queues.get(id))
            .or_else(|| created.buckets.get(id))
            .cloned()
            .with_context(|| format!("{name}: !Ref {id} is no table, queue or bucket"));
    }
    anyhow::ensure!(!value.starts_with('!'), "{name}: cannot resolve {value}");
    Ok(value.trim_matches('"').to_owned())
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// An API Gateway HTTP API (payload 2.0) request, as in `events/apigw-*.json`.
struct HttpRequest {
    method: &'static str,
    /// The template's route path (`{param}` syntax).
    route: &'static str,
    path: String,
    query: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
}

fn http_event(request: &HttpRequest) -> Value {
    let now = chrono::Utc::now();
    let mut headers = serde_json::Map::new();
    for (name, value) in [
        ("accept", "application/json"),
        ("accept-encoding", "gzip"),
        ("host", "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"),
        ("user-agent", "bench-cold-start"),
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-proto", "https"),
    ] {
        headers.insert(name.into(), value.into());
    }
    headers.insert(
        "x-amzn-trace-id".into(),
        format!("Root=1-{:08x}-000000000000000000000000", now.timestamp()).into(),
    );
    headers.insert(
        "content-length".into(),
        request
            .body
            .as_ref()
            .map_or(0, String::len)
            .to_string()
            .into(),
    );
    for (name, value) in &request.headers {
        headers.insert((*name).into(), value.clone().into());
    }
    let path_parameters: serde_json::Map<String, Value> = request
        .route
        .split('/')
        .zip(request.path.split('/'))
        .filter_map(|(r, p)| {
            let name = r.strip_prefix('{')?.strip_suffix('}')?;
            Some((name.to_owned(), Value::from(p)))
        })
        .collect();
    let query: serde_json::Map<String, Value> = request
        .query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    let route_key = format!("{} {}", request.method, request.route);
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "bench-cold-start"
            },
            "requestId": uuid::Uuid::new_v4().simple().to_string()[..16],
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": now.timestamp_millis()
        },
        "isBase64Encoded": false
    });
    if !query.is_empty() {
        event["queryStringParameters"] = query.into();
    }
    if !path_parameters.is_empty() {
        event["pathParameters"] = path_parameters.into();
    }
    if let Some(body) = &request.body {
        event["body"] = body.clone().into();
    }
    event
}

/// An SQS FIFO batch of `bodies`, as Lambda delivers it (`events/sqs-*.json`).
fn sqs_event(queue_name: &str, group: &str, bodies: &[String]) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({
                "messageId": uuid::Uuid::new_v4().to_string(),
                "receiptHandle": format!("AQEB{}", uuid::Uuid::new_v4().simple()),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": (now - 40).to_string(),
                    "SequenceNumber": format!("1887960421983744{:04}", i),
                    "MessageGroupId": group,
                    "SenderId": "AROA4QWHYZCXEXAMPLE01:bench",
                    "MessageDeduplicationId": uuid::Uuid::new_v4().simple().to_string(),
                    "ApproximateFirstReceiveTimestamp": now.to_string()
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_name}"),
                "awsRegion": REGION
            })
        })
        .collect();
    json!({ "Records": records })
}

/// The bodies of a sample SQS event in `events/`, the sample device replaced by `device`.
fn sample_bodies(file: &str, device: &str) -> anyhow::Result<Vec<String>> {
    let event: Value = serde_json::from_str(&infra::event_text(file)?)?;
    event["Records"]
        .as_array()
        .context("no Records")?
        .iter()
        .map(|r| {
            r["body"]
                .as_str()
                .map(|b| b.replace(SAMPLE_DEVICE, device))
                .context("record without body")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The data the events refer to
// ---------------------------------------------------------------------------------------------

/// This run's resources and the principals the requests authenticate as.
struct World {
    services: Services,
    created: Created,
    /// (private PEM, public PEM) of the JWT key.
    keys: (String, String),
    user_token: String,
    device: Device,
    device_id: String,
    device_token: String,
}

async fn world(state_dir: &Path) -> anyhow::Result<World> {
    let options = local_stack::Options {
        listen: "127.0.0.1:0".parse()?,
        state_dir: state_dir.to_path_buf(),
        prefix: format!("cold{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: local_stack::default_template(),
        admin: None,
        bcrypt_cost: 4,
    };
    let parts = local_stack::prepare(&options).await?;
    let services = parts.services;
    let keys = (
        services.config.jwt_private_key_pem.clone(),
        services.keys.public_key_pem()?,
    );
    services
        .useradm
        .create_user("", ADMIN_EMAIL, ADMIN_PASSWORD)
        .await?;
    let user_token = services
        .useradm
        .login(ADMIN_EMAIL, ADMIN_PASSWORD, false)
        .await?;
    let device = Device::new("http://unused", reqwest::Client::new(), DEVICE_MAC);
    let (device_id, device_token) = admit_in_domain(&services, &device, Admission::Accept).await?;
    // What the provision_device step does for an accepted device (inventory, deviceconfig).
    for body in sample_bodies("sqs-provision-device.json", &device_id)? {
        provision_device::process(&services, &body).await?;
    }
    Ok(World {
        services,
        created: parts.created,
        keys,
        user_token,
        device,
        device_id,
        device_token,
    })
}

// ---------------------------------------------------------------------------------------------
// The functions and their first request
// ---------------------------------------------------------------------------------------------

/// Every Lambda function (`functions/*` but the `deviceconnect` container) and what its first
/// request is, in the table's order.
const FUNCTIONS: &[(&str, &str)] = &[
    (
        "useradm-management",
        "GET /api/management/v1/useradm/settings (user token; reads one item)",
    ),
    (
        "deviceauth-devices",
        "POST /api/devices/v1/authentication/auth_requests (accepted device, signed; new token)",
    ),
    (
        "deviceauth-management",
        "GET /api/management/v2/devauth/devices/{id} (user token; reads the device)",
    ),
    (
        "inventory-devices",
        "PATCH /api/devices/v1/inventory/device/attributes (device token; idle update)",
    ),
    (
        "inventory-management",
        "GET /api/management/v1/inventory/devices/{id} (user token; reads one device)",
    ),
    (
        "deployments-devices",
        "GET /api/devices/v1/deployments/device/deployments/next (device token; nothing pending)",
    ),
    (
        "deployments-management",
        "GET /api/management/v1/deployments/deployments (user token; empty list)",
    ),
    (
        "deviceconfig-devices",
        "GET /api/devices/v1/deviceconfig/configuration (device token)",
    ),
    (
        "deviceconfig-management",
        "GET /api/management/v1/deviceconfig/configurations/device/{device_id} (user token)",
    ),
    (
        "iot-manager-management",
        "GET /api/management/v1/iot-manager/integrations (user token; none)",
    ),
    (
        "provision-device",
        "SQS: events/sqs-provision-device.json for the bench device",
    ),
    (
        "update-device-status",
        "SQS: events/sqs-update-device-status.json (2 messages) for the bench device",
    ),
    (
        "update-device-inventory",
        "SQS: events/sqs-update-device-inventory.json (2 messages) for the bench device",
    ),
    (
        "decommission-device",
        "SQS: events/sqs-decommission-device.json for a device admitted for the run",
    ),
    (
        "process-artifact",
        "SQS: events/sqs-process-artifact.json for a fresh direct upload (small artifact)",
    ),
    (
        "generate-artifact",
        "SQS: events/sqs-generate-artifact.json for a fresh 64-byte staging file",
    ),
    (
        "iot-manager-events",
        "SQS: a device-status-changed event (no integrations)",
    ),
];

/// The event of one cold start of `name` (`run` numbers the cold starts).
async fn event_for(name: &str, run: usize, world: &World) -> anyhow::Result<Value> {
    let user = || vec![("authorization", format!("Bearer {}", world.user_token))];
    let device = || vec![("authorization", format!("Bearer {}", world.device_token))];
    let id = world.device_id.clone();
    let http = |method, route, path: String, query, headers, body| HttpRequest {
        method,
        route,
        path,
        query,
        headers,
        body,
    };
    let request = match name {
        "useradm-management" => http(
            "GET",
            "/api/management/v1/useradm/settings",
            "/api/management/v1/useradm/settings".into(),
            "",
            user(),
            None,
        ),
        "deviceauth-devices" => {
            let body = world.device.auth_body(&world.device.pubkey_pem());
            let signature = world.device.sign(&body);
            http(
                "POST",
                "/api/devices/v1/authentication/auth_requests",
                "/api/devices/v1/authentication/auth_requests".into(),
                "",
                vec![
                    ("content-type", "application/json".into()),
                    ("x-men-signature", signature),
                ],
                Some(String::from_utf8(body)?),
            )
        }
        "deviceauth-management" => http(
            "GET",
            "/api/management/v2/devauth/devices/{id}",
            format!("/api/management/v2/devauth/devices/{id}"),
            "",
            user(),
            None,
        ),
        "inventory-devices" => {
            let mut headers = device();
            headers.push(("content-type", "application/json".into()));
            http(
                "PATCH",
                "/api/devices/v1/inventory/device/attributes",
                "/api/devices/v1/inventory/device/attributes".into(),
                "",
                headers,
                Some(
                    r#"[{"name":"device_type","value":"bench"},{"name":"artifact_name","value":"initial"}]"#
                        .into(),
                ),
            )
        }
        "inventory-management" => http(
            "GET",
            "/api/management/v1/inventory/devices/{id}",
            format!("/api/management/v1/inventory/devices/{id}"),
            "",
            user(),
            None,
        ),
        "deployments-devices" => http(
            "GET",
            "/api/devices/v1/deployments/device/deployments/next",
            "/api/devices/v1/deployments/device/deployments/next".into(),
            "artifact_name=initial&device_type=bench",
            device(),
            None,
        ),
        "deployments-management" => http(
            "GET",
            "/api/management/v1/deployments/deployments",
            "/api/management/v1/deployments/deployments".into(),
            "",
            user(),
            None,
        ),
        "deviceconfig-devices" => http(
            "GET",
            "/api/devices/v1/deviceconfig/configuration",
            "/api/devices/v1/deviceconfig/configuration".into(),
            "",
            device(),
            None,
        ),
        "deviceconfig-management" => http(
            "GET",
            "/api/management/v1/deviceconfig/configurations/device/{device_id}",
            format!("/api/management/v1/deviceconfig/configurations/device/{id}"),
            "",
            user(),
            None,
        ),
        "iot-manager-management" => http(
            "GET",
            "/api/management/v1/iot-manager/integrations",
            "/api/management/v1/iot-manager/integrations".into(),
            "",
            user(),
            None,
        ),
        _ => return step_event(name, run, world).await,
    };
    Ok(http_event(&request))
}

/// The SQS event of a workflow step.
async fn step_event(name: &str, run: usize, world: &World) -> anyhow::Result<Value> {
    let services = &world.services;
    let id = &world.device_id;
    let (group, bodies) = match name {
        "provision-device" => (id.clone(), sample_bodies("sqs-provision-device.json", id)?),
        "update-device-status" => (
            id.clone(),
            sample_bodies("sqs-update-device-status.json", id)?,
        ),
        "update-device-inventory" => (
            id.clone(),
            sample_bodies("sqs-update-device-inventory.json", id)?,
        ),
        "decommission-device" => {
            let mac = format!("02:00:00:00:d0:{run:02x}");
            let device = Device::new("http://unused", reqwest::Client::new(), &mac);
            let (other, _) = admit_in_domain(services, &device, Admission::Accept).await?;
            (
                other.clone(),
                sample_bodies("sqs-decommission-device.json", &other)?,
            )
        }
        "process-artifact" => {
            let upload = services.deployments.start_direct_upload("").await?;
            let artifact = small_artifact(&format!("bench-upload-{run}"))?;
            services
                .artifacts
                .put(
                    &mender_aws::s3::ArtifactStorage::upload_key("", &upload),
                    artifact,
                )
                .await?;
            services
                .deployments
                .complete_direct_upload("", &upload)
                .await?;
            (
                upload.clone(),
                sample_bodies("sqs-process-artifact.json", &upload)?,
            )
        }
        "generate-artifact" => {
            let artifact = uuid::Uuid::new_v4().to_string();
            services
                .artifacts
                .put(
                    &generate_artifact::staging_key("", &artifact),
                    b"#!/bin/sh\necho hello from the cold-start bench, 64 bytes long..\n".to_vec(),
                )
                .await?;
            let bodies = sample_bodies("sqs-generate-artifact.json", &artifact)?
                .into_iter()
                .map(|b| b.replace("\"hello-1\"", &format!("\"bench-generated-{run}\"")))
                .collect();
            (artifact, bodies)
        }
        "iot-manager-events" => {
            let job = workflows::Job::IotManagerEvent {
                request_id: uuid::Uuid::new_v4().to_string(),
                tenant_id: String::new(),
                event_id: uuid::Uuid::new_v4().to_string(),
                event_type: "device-status-changed".into(),
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                device: json!({"id": id, "status": "accepted"}),
            };
            (id.clone(), vec![serde_json::to_string(&job)?])
        }
        other => bail!("no event for {other}"),
    };
    Ok(sqs_event(&format!("bench-{name}.fifo"), &group, &bodies))
}

/// A single-file artifact of a few bytes.
fn small_artifact(name: &str) -> anyhow::Result<Vec<u8>> {
    let spec = mender_artifact::ArtifactSpec::single_file(
        name,
        vec!["bench".into()],
        "/usr/local/bin",
        mender_artifact::PayloadFile::from_bytes("hello.sh", b"#!/bin/sh\necho hello\n".to_vec()),
    )?;
    let mut out = Vec::new();
    mender_artifact::write_artifact(spec, &mut out)?;
    Ok(out)
}

/// The template route a request must match (the bench's own routing check).
fn check_route(
    resources: &local_stack::template::Resources,
    name: &str,
    event: &Value,
) -> anyhow::Result<()> {
    let Some(route) = event["routeKey"].as_str() else {
        return Ok(());
    };
    let function = infra::function_of(resources, name)
        .with_context(|| format!("{name} is not in the template"))?;
    let (method, path) = route.split_once(' ').context("bad route key")?;
    anyhow::ensure!(
        function
            .http_routes
            .iter()
            .any(|(m, p)| m == method && p == path),
        "the template does not route {route} to {name}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One cold start
// ---------------------------------------------------------------------------------------------

/// What one cold start measured.
struct ColdStart {
    init: Duration,
    init_cpu: Option<Duration>,
    first_request: Duration,
    status: String,
    sockets: Sockets,
}

/// The status of a response: the HTTP status of an API Gateway response, or the partial batch
/// failures of an SQS step.
fn status_of(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return "unreadable response".into();
    };
    if let Some(code) = value["statusCode"].as_u64() {
        return code.to_string();
    }
    match value["batchItemFailures"].as_array() {
        Some(failures) if failures.is_empty() => "ok".into(),
        Some(failures) => format!("{} failed", failures.len()),
        None => "unexpected response".into(),
    }
}

/// The last lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Launch<'a> {
    name: &'a str,
    binary: &'a Path,
    env: &'a [(String, String)],
    timeout_secs: u64,
    log: PathBuf,
}

async fn cold_start(api: &Shared, launch: &Launch<'_>, event: Value) -> anyhow::Result<ColdStart> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let request_id = uuid::Uuid::new_v4().to_string();
    let deadline_ms = chrono::Utc::now().timestamp_millis() as u64 + launch.timeout_secs * 1000;
    let invocation = Invocation {
        id: request_id,
        body: event.to_string(),
        function_arn: format!(
            "arn:aws:lambda:{REGION}:{ACCOUNT}:function:bench-{}",
            launch.name
        ),
        deadline_ms,
    };
    if let Ok(mut slot) = api.slot.lock() {
        *slot = Some(Slot {
            pid: None,
            event: Some(invocation),
            reports: tx,
        });
    }
    let log = std::fs::File::create(&launch.log)?;
    let mut command = tokio::process::Command::new(launch.binary);
    command
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(launch.binary.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {}", launch.binary.display()))?;
    if let Ok(mut slot) = api.slot.lock() {
        if let Some(slot) = slot.as_mut() {
            slot.pid = child.id();
        }
    }
    let result: anyhow::Result<ColdStart> = async {
        let wait = Duration::from_secs(10);
        let (init, init_cpu, sockets, handed_out) = tokio::select! {
            report = rx.recv() => match report {
                Some(Report::Next { at, sockets, cpu, handed_out }) => {
                    (at - spawned, cpu, sockets, handed_out)
                }
                Some(Report::InitError { body }) => {
                    bail!("init error: {}", String::from_utf8_lossy(&body))
                }
                Some(_) => bail!("a response before any event"),
                None => bail!("runtime API gone"),
            },
            status = child.wait() => bail!("exited during init ({}):\n{}", status?, tail(&launch.log, 5)),
            _ = tokio::time::sleep(wait) => bail!("no GET next within {wait:?}:\n{}", tail(&launch.log, 5)),
        };
        let wait = Duration::from_secs(launch.timeout_secs);
        let (at, status) = tokio::select! {
            report = rx.recv() => match report {
                Some(Report::Response { at, body }) => (at, status_of(&body)),
                Some(Report::Error { at, body }) => {
                    let error: Value = serde_json::from_slice(&body).unwrap_or_default();
                    (at, format!("error {}", error["errorType"].as_str().unwrap_or("?")))
                }
                Some(_) => bail!("unexpected report"),
                None => bail!("runtime API gone"),
            },
            status = child.wait() => bail!("exited during the request ({}):\n{}", status?, tail(&launch.log, 5)),
            _ = tokio::time::sleep(wait) => bail!("no response within {wait:?}"),
        };
        Ok(ColdStart {
            init,
            init_cpu,
            first_request: at - handed_out,
            status,
            sockets,
        })
    }
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    if let Ok(mut slot) = api.slot.lock() {
        *slot = None;
    }
    result
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (min, median) in milliseconds.
fn min_median(mut values: Vec<Duration>) -> (f64, f64) {
    values.sort();
    let min = values.first().copied().unwrap_or_default();
    let median = values.get(values.len() / 2).copied().unwrap_or_default();
    (ms(min), ms(median))
}

/// The emulator endpoints and the rest of what a Lambda process finds in its environment.
fn lambda_env(
    name: &str,
    spec: &FunctionSpec,
    api: &Shared,
    world: &World,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| env.push((k.to_owned(), v));
    for (k, v) in &spec.variables {
        set(k, resolve(k, v, &world.created, &world.keys)?);
    }
    set("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", api.port));
    set("AWS_LAMBDA_FUNCTION_NAME", format!("bench-{name}"));
    set(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        spec.memory_mb.to_string(),
    );
    set("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into());
    set("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into());
    set(
        "AWS_LAMBDA_LOG_GROUP_NAME",
        format!("/aws/lambda/bench-{name}"),
    );
    set(
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "2025/01/01/[$LATEST]00000000000000000000000000000000".into(),
    );
    set("AWS_REGION", REGION.into());
    set("AWS_DEFAULT_REGION", REGION.into());
    set("AWS_ACCESS_KEY_ID", "test".into());
    set("AWS_SECRET_ACCESS_KEY", "test".into());
    set("AWS_SESSION_TOKEN", "bench-session-token".into());
    set("_HANDLER", "bootstrap".into());
    set("LAMBDA_TASK_ROOT", "/var/task".into());
    set("LAMBDA_RUNTIME_DIR", "/var/runtime".into());
    set("LANG", "en_US.UTF-8".into());
    set("TZ", ":UTC".into());
    set("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".into());
    // The one addition: the emulators instead of the AWS endpoints.
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_S3",
    ] {
        if let Ok(v) = std::env::var(var) {
            set(var, v);
        }
    }
    Ok(env)
}

/// One function's row.
struct Row {
    name: String,
    init: Vec<Duration>,
    init_cpu: Vec<Duration>,
    first: Vec<Duration>,
    statuses: Vec<String>,
    size: u64,
    network: Vec<String>,
    scan_failures: Vec<String>,
    failure: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("BENCH_COLD_STARTS")
        .ok()
        .map(|v| v.parse())
        .transpose()
        .context("BENCH_COLD_STARTS")?
        .unwrap_or(5);
    let bin_dir = match std::env::var_os("BENCH_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("CARGO_TARGET_DIR")
                .context("set CARGO_TARGET_DIR or BENCH_BIN_DIR")?,
        )
        .join("release"),
    };
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
        bail!("the emulators are not configured: run with `make bench` (scripts/bench.sh)");
    }
    let template_text =
        std::fs::read_to_string(local_stack::default_template()).context("reading the template")?;
    let resources = infra::template()?;
    let mut state = TempDir::new("bench-cold-start")?;
    if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
        state.keep();
        println!("functions' logs: {}", state.path().display());
    }
    let world = world(state.path())
        .await
        .context("preparing the resources, user and device")?;
    let api = start_api().await?;

    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|list| list.split(',').map(str::to_owned).collect());
    let mut rows = Vec::new();
    for (name, _) in FUNCTIONS {
        if only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|o| o == name))
        {
            continue;
        }
        let binary = bin_dir.join(name);
        let size = std::fs::metadata(&binary)
            .with_context(|| {
                format!(
                    "{}: build it with cargo build --release -p {name}",
                    binary.display()
                )
            })?
            .len();
        let spec = function_spec(&template_text, name)?;
        let env = lambda_env(name, &spec, &api, &world)?;
        let launch = Launch {
            name,
            binary: &binary,
            env: &env,
            timeout_secs: spec.timeout_secs,
            log: state.path().join(format!("{name}.log")),
        };
        let mut row = Row {
            name: (*name).to_owned(),
            init: Vec::new(),
            init_cpu: Vec::new(),
            first: Vec::new(),
            statuses: Vec::new(),
            size,
            network: Vec::new(),
            scan_failures: Vec::new(),
            failure: None,
        };
        for run in 0..runs {
            let event = event_for(name, run, &world)
                .await
                .with_context(|| format!("preparing the event of {name}"))?;
            check_route(&resources, name, &event)?;
            match cold_start(&api, &launch, event).await {
                Ok(measured) => {
                    row.init.push(measured.init);
                    row.init_cpu.extend(measured.init_cpu);
                    row.first.push(measured.first_request);
                    if !row.statuses.contains(&measured.status) {
                        row.statuses.push(measured.status);
                    }
                    for socket in measured.sockets.network {
                        if !row.network.contains(&socket) {
                            row.network.push(socket);
                        }
                    }
                    if let Some(why) = measured.sockets.unknown {
                        row.scan_failures.push(why);
                    } else if !measured.sockets.runtime_api_seen {
                        row.scan_failures
                            .push("runtime API socket not found".into());
                    }
                }
                Err(e) => {
                    row.failure = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        rows.push(row);
    }

    println!(
        "cold start of the release bootstrap binaries against a local Lambda Runtime API \
         ({runs} cold starts each; DynamoDB Local / moto / s3s-fs on 127.0.0.1)"
    );
    println!(
        "{:<24} {:>10} {:>10} {:>9} {:>11} {:>11} {:>9} {:>8}  network before init",
        "function", "init min", "init med", "init cpu", "first min", "first med", "status", "size"
    );
    let mut over_budget = Vec::new();
    let mut failed = false;
    for row in &rows {
        if let Some(failure) = &row.failure {
            failed = true;
            println!("{:<24} FAILED: {failure}", row.name);
            continue;
        }
        let (init_min, init_med) = min_median(row.init.clone());
        let (first_min, first_med) = min_median(row.first.clone());
        let (_, cpu_med) = min_median(row.init_cpu.clone());
        // wall time on a busy machine includes waiting for a CPU: the CPU time counts too
        if init_med >= INIT_BUDGET_MS || cpu_med >= INIT_BUDGET_MS {
            over_budget.push(format!(
                "{} (wall {init_med:.0} ms, CPU {cpu_med:.0} ms)",
                row.name
            ));
        }
        let network = if !row.scan_failures.is_empty() {
            format!("unknown ({})", row.scan_failures.join("; "))
        } else if row.network.is_empty() {
            "no".to_owned()
        } else {
            format!("yes: {}", row.network.join(", "))
        };
        println!(
            "{:<24} {:>7.1} ms {:>7.1} ms {:>6.1} ms {:>8.1} ms {:>8.1} ms {:>9} {:>5.1} MB  {network}",
            row.name,
            init_min,
            init_med,
            cpu_med,
            first_min,
            first_med,
            row.statuses.join("/"),
            row.size as f64 / 1_048_576.0,
        );
    }
    println!(
        "init: spawn to the first GET next; init cpu: median CPU time of the process's threads \
         by then; first: event handed out to its response; network: TCP/UDP sockets other than \
         the runtime API's open at the first GET next"
    );
    println!("first requests:");
    for (name, what) in FUNCTIONS {
        println!("  {name:<24} {what}");
    }
    if over_budget.is_empty() {
        println!("init budget ({INIT_BUDGET_MS} ms, median wall and CPU): met by every function");
    } else {
        println!(
            "init budget ({INIT_BUDGET_MS} ms, median wall or CPU): OVER BUDGET: {}",
            over_budget.join(", ")
        );
    }
    if failed {
        bail!("some functions did not start or answer (see above)");
    }
    Ok(())
}
