//! Benchmark: what one deviceconnect instance costs per idle device websocket, and how long a
//! terminal frame takes from a user to a device and back. Runs the real `deviceconnect` binary
//! as a child process, configured by environment as its container is (tables on the
//! emulators, a local `nats-server`, the JWT key of the stack that issues the tokens), admits
//! 10,000 devices through the deviceauth domain code (real issued tokens, which the server
//! checks against DynamoDB) and holds one websocket per device on that instance. The child's
//! `VmRSS` is read from `/proc/<pid>/status` with 1 warm connection and again once all 10,000
//! are connected and have been idle a few seconds. Then, with the 10,000 still connected, a
//! user session to one device times `shell` frames user -> deviceconnect -> NATS -> device
//! socket and the device's answer back the same way (everything the server does on that path
//! included: stamping, NATS, buffering shell output for the session recording; the device end
//! is this process, which only parses the header and answers).
//!
//! Run with `make bench` (starts the emulators, builds `deviceconnect` in release, raises the
//! open-file limit); by hand, with the emulators' environment set and the open-file limit above
//! the device count plus headroom (each of the two processes holds one socket per device):
//! `cargo build --release -p deviceconnect --bin deviceconnect && ulimit -Sn 16384 &&
//! DEVICECONNECT_BIN=$CARGO_TARGET_DIR/release/deviceconnect cargo run -p black-box-tests --bin
//! bench-deviceconnect`. Settings (environment): `BENCH_DEVICES` (default 10000),
//! `BENCH_ROUND_TRIPS` (default 1000), `DEVICECONNECT_BIN` (default: `deviceconnect` next to
//! this binary), `DEVICECONNECT_LOG` (the child's `RUST_LOG`, default `warn`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use black_box_tests::device::{admit_in_domain, Admission, Device};
use black_box_tests::tempdir::TempDir;
use futures::{SinkExt, StreamExt, TryStreamExt};
use mender_config::vars;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Concurrent device admissions (each is a few DynamoDB and SQS calls).
const ADMIT_CONCURRENCY: usize = 32;
/// Concurrent websocket handshakes (each is a token check and a status write on the server).
const CONNECT_CONCURRENCY: usize = 64;
/// Attempts at one device's handshake: a failed one (the emulators stall now and then under
/// this load) is tried again after [`RETRY_PAUSE`], as mender-connect reconnects; retries are
/// counted and printed.
const CONNECT_ATTEMPTS: usize = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Idle time before each memory reading.
const SETTLE: Duration = Duration::from_secs(5);
const WARM_UP_ROUND_TRIPS: usize = 100;
const FRAME_WAIT: Duration = Duration::from_secs(10);
const USER_EMAIL: &str = "bench@example.com";
const USER_PASSWORD: &str = "bench-secret-1";

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

/// The soft `RLIMIT_NOFILE` of this process (the child inherits it).
fn open_file_limit() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no \"Max open files\" in /proc/self/limits")?;
    let soft = line
        .split_whitespace()
        .nth(3)
        .context("unreadable open-file limit")?;
    if soft == "unlimited" {
        return Ok(u64::MAX);
    }
    Ok(soft.parse()?)
}

/// The `deviceconnect` binary and its build profile (`debug` / `release`).
fn deviceconnect_binary() -> anyhow::Result<(PathBuf, String)> {
    let path = match std::env::var_os("DEVICECONNECT_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the current executable")?
            .join("deviceconnect"),
    };
    if !path.is_file() {
        bail!(
            "{} not found: build it first (`cargo build -p deviceconnect`) or set DEVICECONNECT_BIN",
            path.display()
        );
    }
    let profile = path
        .parent()
        .and_then(Path::file_name)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into());
    Ok((path, profile))
}

/// `VmRSS` (KiB) and `Threads` of a process.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let number = line
            .split_whitespace()
            .next()
            .with_context(|| format!("empty {name}"))?;
        Ok(number.parse()?)
    };
    Ok((field("VmRSS:")?, field("Threads:")?))
}

/// The deviceconnect child process.
struct Instance {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl Instance {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Ends the child by its PID and reaps it.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Starts `deviceconnect` with the stack's resources and key, and waits until its health
/// endpoint answers (NATS connected).
async fn start_instance(
    bin: &Path,
    parts: &local_stack::Parts,
    nats_url: &str,
    state: &Path,
) -> anyhow::Result<Instance> {
    let config = &parts.services.config;
    let addr = SocketAddr::from(([127, 0, 0, 1], local_stack::nats::free_port()?));
    let log = state.join("deviceconnect.log");
    let out = std::fs::File::create(&log)?;
    // Through `setpriv --pdeathsig KILL` (when present) so the child dies with this process
    // even if it is killed without running destructors; setpriv execs, so the PID is the
    // server's own.
    let mut command = if Path::new("/usr/bin/setpriv").is_file() {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    command
        .env(vars::DEVICEAUTH_TABLE, &config.deviceauth_table)
        .env(vars::USERADM_TABLE, &config.useradm_table)
        .env(vars::INVENTORY_TABLE, &config.inventory_table)
        .env(vars::DEPLOYMENTS_TABLE, &config.deployments_table)
        .env(
            "DEVICECONNECT_TABLE",
            parts.created.table("DeviceconnectTable")?,
        )
        .env(vars::ARTIFACTS_BUCKET, &config.artifacts_bucket)
        .env(
            vars::PROVISION_DEVICE_QUEUE_URL,
            &config.queues.provision_device,
        )
        .env(
            vars::UPDATE_DEVICE_STATUS_QUEUE_URL,
            &config.queues.update_device_status,
        )
        .env(
            vars::UPDATE_DEVICE_INVENTORY_QUEUE_URL,
            &config.queues.update_device_inventory,
        )
        .env(
            vars::DECOMMISSION_DEVICE_QUEUE_URL,
            &config.queues.decommission_device,
        )
        .env(
            vars::PROCESS_ARTIFACT_QUEUE_URL,
            &config.queues.process_artifact,
        )
        // The key that signed the tokens this process issues.
        .env(vars::JWT_PRIVATE_KEY, &config.jwt_private_key_pem)
        .env_remove(vars::JWT_PRIVATE_KEY_FILE)
        .env("NATS_URL", nats_url)
        .env("DEVICECONNECT_LISTEN", addr.to_string())
        .env(
            "RUST_LOG",
            std::env::var("DEVICECONNECT_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .kill_on_drop(true);
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("deviceconnect exited at once")?;
    let mut instance = Instance {
        child,
        pid,
        addr,
        log,
    };
    let http = reqwest::Client::new();
    let health = format!("http://{addr}/api/internal/v1/deviceconnect/health");
    for _ in 0..300 {
        if let Some(status) = instance.child.try_wait()? {
            bail!(
                "deviceconnect exited at start: {status}\n{}",
                instance.log_tail()
            );
        }
        if let Ok(response) = http.get(&health).send().await {
            if response.status() == reqwest::StatusCode::NO_CONTENT {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
                ensure!(
                    comm.trim() == "deviceconnect",
                    "PID {pid} is {comm:?}, not deviceconnect"
                );
                return Ok(instance);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tail = instance.log_tail();
    instance.stop().await;
    bail!("deviceconnect not healthy on {addr} within 30 s\n{tail}")
}

/// Device `i` of the run, accepted: preauthorized with its key, then its first signed auth
/// request returns a token (stored in DynamoDB like any issued token). Returns (device id,
/// token).
async fn admit(services: &services::Services, i: usize) -> anyhow::Result<(String, String)> {
    let mac = format!(
        "02:bc:00:{:02x}:{:02x}:{:02x}",
        i >> 16,
        (i >> 8) & 0xff,
        i & 0xff
    );
    let device = Device::new("http://unused", reqwest::Client::new(), &mac);
    admit_in_domain(services, &device, Admission::Preauthorize).await
}

async fn ws_connect(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<Ws> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse()?);
    // TCP_NODELAY, as the Go clients have it.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
    Ok(ws)
}

async fn device_ws(addr: SocketAddr, token: &str) -> anyhow::Result<Ws> {
    ws_connect(addr, "/api/devices/v1/deviceconnect/connect", token).await
}

/// [`device_ws`], tried up to [`CONNECT_ATTEMPTS`] times (each retry counted in `retries`).
async fn device_ws_retried(
    addr: SocketAddr,
    token: &str,
    retries: &AtomicUsize,
) -> anyhow::Result<Ws> {
    let mut attempt = 1;
    loop {
        match device_ws(addr, token).await {
            Ok(ws) => return Ok(ws),
            Err(_) if attempt < CONNECT_ATTEMPTS => {
                retries.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Holds an idle device socket: reads it (answering the server's pings) until it ends, then
/// counts it as closed.
async fn hold(mut ws: Ws, closed: Arc<AtomicUsize>) {
    while let Some(Ok(frame)) = ws.next().await {
        if let Message::Close(_) = frame {
            break;
        }
    }
    closed.fetch_add(1, Ordering::Relaxed);
}

/// Runs `work` while keeping `ws` read (so the server's pings are answered); any frame other
/// than a ping or pong fails.
async fn keep_alive<F: Future>(ws: &mut Ws, work: F) -> anyhow::Result<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            frame = ws.next() => match frame {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => bail!("the warm device socket: unexpected {other:?}"),
            },
        }
    }
}

/// The next binary frame (pings skipped).
async fn next_binary(ws: &mut Ws) -> anyhow::Result<bytes::Bytes> {
    loop {
        match tokio::time::timeout(FRAME_WAIT, ws.next()).await {
            Err(_) => bail!("no frame within {FRAME_WAIT:?}"),
            Ok(None) => bail!("websocket ended"),
            Ok(Some(frame)) => match frame? {
                Message::Binary(data) => return Ok(data),
                Message::Ping(_) | Message::Pong(_) => {}
                other => bail!("unexpected frame {other:?}"),
            },
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) -> anyhow::Result<()> {
    rmp::encode::write_str(out, s)?;
    Ok(())
}

/// A user's keystrokes as mender-cli sends them: proto as uint16, no sid (the server stamps
/// it).
fn user_shell(keys: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut b = Vec::new();
    rmp::encode::write_map_len(&mut b, 2)?;
    write_str(&mut b, "hdr")?;
    rmp::encode::write_map_len(&mut b, 2)?;
    write_str(&mut b, "proto")?;
    rmp::encode::write_u16(&mut b, 1)?;
    write_str(&mut b, "typ")?;
    write_str(&mut b, "shell")?;
    write_str(&mut b, "body")?;
    rmp::encode::write_bin(&mut b, keys)?;
    Ok(b)
}

/// The device's terminal output as mender-connect sends it, for session `sid`.
fn device_shell(sid: &str, output: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut b = Vec::new();
    rmp::encode::write_map_len(&mut b, 2)?;
    write_str(&mut b, "hdr")?;
    rmp::encode::write_map_len(&mut b, 4)?;
    write_str(&mut b, "proto")?;
    rmp::encode::write_u16(&mut b, 1)?;
    write_str(&mut b, "typ")?;
    write_str(&mut b, "shell")?;
    write_str(&mut b, "sid")?;
    write_str(&mut b, sid)?;
    write_str(&mut b, "props")?;
    rmp::encode::write_map_len(&mut b, 1)?;
    write_str(&mut b, "status")?;
    rmp::encode::write_i64(&mut b, 1)?;
    write_str(&mut b, "body")?;
    rmp::encode::write_bin(&mut b, output)?;
    Ok(b)
}

/// One round trip: the user sends keystrokes, the device answers with output for the sid the
/// server stamped, the user receives it. Returns the time from the user's send to the user's
/// receipt.
async fn round_trip(user: &mut Ws, device: &mut Ws, i: usize) -> anyhow::Result<Duration> {
    let keys = format!("echo {i}\n");
    let frame = user_shell(keys.as_bytes())?;
    let started = Instant::now();
    user.send(Message::Binary(frame.into())).await?;
    let got = next_binary(device).await?;
    let msg = deviceconnect::protomsg::parse(&got)?;
    ensure!(
        msg.proto == deviceconnect::protomsg::PROTO_SHELL && msg.typ.as_deref() == Some("shell"),
        "the device got proto {} typ {:?}",
        msg.proto,
        msg.typ
    );
    let sid = msg.sid.context("the device got a frame without sid")?;
    let reply = device_shell(&sid, keys.as_bytes())?;
    device.send(Message::Binary(reply.clone().into())).await?;
    let back = next_binary(user).await?;
    let elapsed = started.elapsed();
    ensure!(
        back.as_ref() == reply.as_slice(),
        "the user got another frame than the device sent"
    );
    Ok(elapsed)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devices = env_usize("BENCH_DEVICES", 10_000)?;
    let round_trips = env_usize("BENCH_ROUND_TRIPS", 1000)?;
    ensure!(devices >= 2, "BENCH_DEVICES must be at least 2");
    ensure!(round_trips >= 1, "BENCH_ROUND_TRIPS must be at least 1");
    // This process holds one client socket per device, the child one server socket each.
    let needed = devices as u64 + 512;
    let limit = open_file_limit()?;
    ensure!(
        limit >= needed,
        "the open-file limit is {limit}, {needed} are needed: raise it (`ulimit -n {}`)",
        needed.max(8192)
    );
    let (bin, profile) = deviceconnect_binary()?;

    let state = TempDir::new("bench-deviceconnect")?;
    let options = local_stack::Options {
        listen: "127.0.0.1:0".parse()?,
        state_dir: state.path().to_path_buf(),
        prefix: format!("bdc{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: local_stack::default_template(),
        admin: None,
        bcrypt_cost: 4,
    };
    let parts = local_stack::prepare(&options).await?;
    let nats = local_stack::nats::NatsServer::start().await?;
    let instance = match start_instance(&bin, &parts, &nats.url, state.path()).await {
        Ok(instance) => instance,
        Err(e) => {
            nats.stop().await;
            return Err(e);
        }
    };
    let result = run(&parts, &instance, &profile, devices, round_trips).await;
    let result =
        result.map_err(|e| anyhow::anyhow!("{e:#}\ndeviceconnect log:\n{}", instance.log_tail()));
    instance.stop().await;
    nats.stop().await;
    result
}

async fn run(
    parts: &local_stack::Parts,
    instance: &Instance,
    profile: &str,
    devices: usize,
    round_trips: usize,
) -> anyhow::Result<()> {
    let addr = instance.addr;
    // Admission without the workflow queues (provisioning into inventory is not what is
    // measured here, and SQS calls would dominate the setup time).
    let services = &services::Services::with_parts(
        parts.services.config.clone(),
        parts.dynamodb.clone(),
        parts.services.artifacts.clone(),
        Arc::new(workflows::RecordingPublisher::default()),
    )?;

    let started = Instant::now();
    let admitted: Vec<(String, String)> = futures::stream::iter(0..devices)
        .map(|i| admit(services, i))
        .buffer_unordered(ADMIT_CONCURRENCY)
        .try_collect()
        .await?;
    println!(
        "{devices} accepted devices with issued tokens (deviceauth domain code, preauthorized) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    services
        .useradm
        .ensure_user("", USER_EMAIL, USER_PASSWORD)
        .await?;
    let user_token = services
        .useradm
        .login(USER_EMAIL, USER_PASSWORD, false)
        .await?;

    // One warm connection: the device the user session will reach.
    let (first_id, first_token) = admitted.first().context("no device")?;
    let mut first = device_ws(addr, first_token)
        .await
        .context("the warm device websocket")?;
    let (rss_warm, threads_warm) = keep_alive(&mut first, async {
        tokio::time::sleep(SETTLE).await;
        memory(instance.pid)
    })
    .await??;

    // The others, held by one task each.
    let closed = Arc::new(AtomicUsize::new(0));
    let retries = &AtomicUsize::new(0);
    let started = Instant::now();
    let connect_rest = futures::stream::iter(admitted.iter().skip(1).enumerate())
        .map(|(i, (_, token))| {
            let closed = closed.clone();
            async move {
                let ws = device_ws_retried(addr, token, retries)
                    .await
                    .with_context(|| format!("device websocket {}", i + 2))?;
                Ok::<_, anyhow::Error>(tokio::spawn(hold(ws, closed)))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect::<Vec<_>>();
    let holders = keep_alive(&mut first, connect_rest).await??;
    let connect_time = started.elapsed();
    let (rss_all, threads_all) = keep_alive(&mut first, async {
        tokio::time::sleep(SETTLE).await;
        memory(instance.pid)
    })
    .await??;
    ensure!(
        closed.load(Ordering::Relaxed) == 0,
        "{} device websockets were closed by the server",
        closed.load(Ordering::Relaxed)
    );
    println!(
        "{devices} device websockets connected in {:.1} s ({CONNECT_CONCURRENCY} handshakes at a time, {} retried)",
        connect_time.as_secs_f64(),
        retries.load(Ordering::Relaxed)
    );

    // A user session to the warm device while all of them stay connected.
    let mut user = ws_connect(
        addr,
        &format!("/api/management/v1/deviceconnect/devices/{first_id}/connect"),
        &user_token,
    )
    .await
    .context("the user websocket")?;
    for i in 0..WARM_UP_ROUND_TRIPS {
        round_trip(&mut user, &mut first, i).await?;
    }
    let mut rtts = Vec::with_capacity(round_trips);
    for i in 0..round_trips {
        rtts.push(round_trip(&mut user, &mut first, WARM_UP_ROUND_TRIPS + i).await?);
    }
    rtts.sort();
    let still_closed = closed.load(Ordering::Relaxed);
    let _ = user.close(None).await;
    let _ = first.close(None).await;
    for holder in &holders {
        holder.abort();
    }
    ensure!(
        still_closed == 0,
        "{still_closed} device websockets were closed during the round trips"
    );

    let added = (devices - 1) as u64;
    let delta = rss_all.saturating_sub(rss_warm);
    let per_connection = delta as f64 / added as f64;
    println!(
        "deviceconnect PID {} ({profile} build): 1 warm device websocket: VmRSS {rss_warm} KiB, {threads_warm} threads; \
         {devices} connected and idle {} s: VmRSS {rss_all} KiB, {threads_all} threads",
        instance.pid,
        SETTLE.as_secs()
    );
    println!(
        "deviceconnect ({profile} build): {devices} idle device websockets: RSS {:.1} MiB -> {:.1} MiB, {per_connection:.1} KiB per connection",
        mib(rss_warm),
        mib(rss_all)
    );
    println!(
        "memory per idle device websocket: {per_connection:.1} KiB (RSS delta / {added} connections added to the warm one)"
    );
    let n = rtts.len();
    let median = rtts.get(n / 2).copied().unwrap_or_default();
    let p99 = rtts.get(n * 99 / 100).copied().unwrap_or_default();
    let max = rtts.last().copied().unwrap_or_default();
    println!(
        "terminal frame relay RTT user->device->user via NATS ({n} round trips, {devices} devices connected, {profile} build): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(median),
        ms(p99),
        ms(max)
    );
    Ok(())
}
