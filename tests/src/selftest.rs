//! Self-test of the harness against a recording mock server (Python, HTTPS, throw-away
//! certificates from `/work/shared/clients/mkcerts.sh`), not against the real stack:
//! checks that the real `mender` daemon starts with the generated config, authenticates
//! (signed auth request with our identity), sends the inventory from our script, reacts to
//! SIGUSR1/SIGUSR2, and that `Mgmt` and `MenderCli` speak HTTPS with the CA.
//! Needs root, python3, openssl and the Debian clients, hence `#[ignore]`:
//! `cargo test -p black-box-tests --lib -- --ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::mgmt::{wait_for, Mgmt};
use crate::tempdir::TempDir;
use crate::{mender_available, mender_cli_available, MenderCli, MenderClient};

const MKCERTS: &str = "/work/shared/clients/mkcerts.sh";

/// Answers auth requests 401 for the first `FAIL_AUTH` of them, then 200 + raw token;
/// inventory 200; deployments/next 204; management login 200 + raw token; devices list.
/// Every request is appended as one JSON line to the log file.
const MOCK_SERVER: &str = r#"
import json, ssl, sys, time, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, cert, key, log_path, fail_auth = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
lock = threading.Lock()
auth_count = [0]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                n = int(self.rfile.readline().strip().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""): pass
                    return out
                out += self.rfile.read(n); self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n)
    def reply(self, code, body=b"", ctype=None):
        self.send_response(code)
        if ctype: self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def handle_any(self):
        b = self.body()
        with lock:
            with open(log_path, "a") as f:
                f.write(json.dumps({"t": time.time(), "method": self.command, "path": self.path,
                    "headers": {k: v for k, v in self.headers.items()},
                    "body": b.decode("utf-8", "replace")}) + "\n")
        p = self.path
        if p == "/api/devices/v1/authentication/auth_requests":
            with lock:
                auth_count[0] += 1; n = auth_count[0]
            if n <= fail_auth: return self.reply(401, b'{"error":"dev auth: unauthorized"}', "application/json")
            return self.reply(200, b"device-token-%d" % n, "application/jwt")
        if p == "/api/devices/v1/inventory/device/attributes": return self.reply(200)
        if p.startswith("/api/devices/v2/deployments/device/deployments/next"): return self.reply(204)
        if p == "/api/management/v1/useradm/auth/login":
            if self.headers.get("Authorization", "").startswith("Basic "):
                return self.reply(200, b"mgmt-token", "application/jwt")
            return self.reply(401, b'{"error":"unauthorized"}', "application/json")
        if p.startswith("/api/management/v2/devauth/devices"):
            dev = [{"id": "11111111-1111-4111-8111-111111111111", "identity_data": {"mac": "02:00:00:00:00:99"},
                    "status": "pending", "created_ts": "2024-01-01T00:00:00Z", "updated_ts": "2024-01-01T00:00:00Z",
                    "auth_sets": [], "decommissioning": False}]
            return self.reply(200, json.dumps(dev).encode(), "application/json")
        return self.reply(404, b'{"error":"not found"}', "application/json")
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any
srv = ThreadingHTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;

struct MockServer {
    child: Child,
    port: u16,
    log: PathBuf,
    ca: PathBuf,
    _dir: TempDir,
}

impl MockServer {
    fn start(fail_auth: u32) -> anyhow::Result<Self> {
        let dir = TempDir::new("mock-server")?;
        let certs = dir.path().join("certs");
        let st = Command::new("sh")
            .arg(MKCERTS)
            .arg(&certs)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("{MKCERTS} failed");
        }
        let script = dir.path().join("mock.py");
        std::fs::write(&script, MOCK_SERVER)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = dir.path().join("requests.jsonl");
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(certs.join("server.crt"))
            .arg(certs.join("server.key"))
            .arg(&log)
            .arg(fail_auth.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("starting python3")?;
        let mut server = Self {
            child,
            port,
            log,
            ca: certs.join("ca.crt"),
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.child.kill();
        bail!("mock server did not start")
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r["method"] == method
                    && r["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with(path_prefix))
            })
            .count()
    }

    fn ca(&self) -> &Path {
        &self.ca
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const AUTH: &str = "/api/devices/v1/authentication/auth_requests";
const INVENTORY: &str = "/api/devices/v1/inventory/device/attributes";
const NEXT: &str = "/api/devices/v2/deployments/device/deployments/next";

#[tokio::test]
#[ignore = "needs root, python3, openssl and the Debian mender packages"]
async fn real_mender_client_against_mock_server() -> anyhow::Result<()> {
    if !mender_available() {
        bail!("mender not available");
    }
    let server = MockServer::start(3)?;
    let url = format!("https://127.0.0.1:{}", server.port);
    let mut client = MenderClient::start(&url, server.ca(), "02:00:00:00:00:42")?;
    let pid = client.pid().context("pid")?;
    eprintln!("mender pid {pid}, dir {}", client.dir().display());
    let conf = std::fs::read_to_string(client.config_path())?;
    eprintln!("mender.conf:\n{conf}");

    // 3 × 401, then 200: the 4th auth request gets a token, then the inventory arrives.
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { (server.count("PUT", INVENTORY) > 0).then_some(()) },
    )
    .await
    .with_context(|| format!("no inventory; log:\n{}", client.log_tail(60)))?;

    let reqs = server.requests();
    let auths: Vec<&Value> = reqs.iter().filter(|r| r["path"] == AUTH).collect();
    eprintln!(
        "auth request times (s since first): {:?}",
        auths
            .iter()
            .map(|r| r["t"].as_f64().unwrap_or(0.0) - auths[0]["t"].as_f64().unwrap_or(0.0))
            .collect::<Vec<_>>()
    );
    let first = auths[0];
    eprintln!("first auth request: {first:#}");
    // Go canonicalises the header name to X-Men-Signature
    assert!(first["headers"]["X-Men-Signature"].is_string());
    let body: Value = serde_json::from_str(first["body"].as_str().unwrap_or_default())?;
    let id_data: Value = serde_json::from_str(body["id_data"].as_str().unwrap_or_default())?;
    assert_eq!(id_data, serde_json::json!({"mac": "02:00:00:00:00:42"}));

    let inv = reqs
        .iter()
        .find(|r| r["path"] == INVENTORY)
        .context("inventory")?;
    eprintln!("inventory request: {inv:#}");
    assert_eq!(inv["headers"]["Authorization"], "Bearer device-token-4");
    let attrs: Value = serde_json::from_str(inv["body"].as_str().unwrap_or_default())?;
    let custom = attrs
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "custom_list"))
        .context("custom_list attribute")?;
    assert_eq!(custom["value"], serde_json::json!(["alpha", "beta"]));

    // SIGUSR1 / SIGUSR2 trigger an immediate update check / inventory.
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async { (server.count("POST", NEXT) > 0).then_some(()) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (next0, inv0) = (server.count("POST", NEXT), server.count("PUT", INVENTORY));
    client.check_update_now()?;
    wait_for(
        Duration::from_secs(3),
        Duration::from_millis(100),
        || async { (server.count("POST", NEXT) > next0).then_some(()) },
    )
    .await
    .context("SIGUSR1 did not trigger an update check")?;
    client.send_inventory_now()?;
    wait_for(
        Duration::from_secs(3),
        Duration::from_millis(100),
        || async { (server.count("PUT", INVENTORY) > inv0).then_some(()) },
    )
    .await
    .context("SIGUSR2 did not trigger an inventory")?;

    // restart keeps the key (same pubkey in the next auth request)
    let auths_before = server.count("POST", AUTH);
    client.restart()?;
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async { (server.count("POST", AUTH) > auths_before).then_some(()) },
    )
    .await?;
    let reqs = server.requests();
    let auths: Vec<&Value> = reqs.iter().filter(|r| r["path"] == AUTH).collect();
    let key = |r: &Value| -> anyhow::Result<String> {
        let b: Value = serde_json::from_str(r["body"].as_str().unwrap_or_default())?;
        Ok(b["pubkey"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(key(auths[0])?, key(auths[auths.len() - 1])?);

    let dir = client.dir().to_owned();
    client.stop()?;
    assert!(!client.is_running());
    drop(client);
    assert!(!dir.exists(), "temp dir removed on drop");
    assert!(
        Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()?
            .code()
            != Some(0),
        "process gone"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs python3, openssl and the Debian mender-cli package"]
async fn mgmt_and_mender_cli_against_mock_server() -> anyhow::Result<()> {
    if !mender_cli_available() {
        bail!("mender-cli not available");
    }
    let server = MockServer::start(0)?;
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}", server.port);
        let mgmt = Mgmt::login(&url, server.ca(), "user@example.com", "password123").await?;
        assert_eq!(mgmt.token(), "mgmt-token");
        let devs = mgmt.devices(Some("pending")).await?;
        assert_eq!(devs[0]["identity_data"]["mac"], "02:00:00:00:00:99");

        let cli = MenderCli::new(&url, server.ca())?;
        let out = cli
            .login("user@example.com", "password123")
            .await?
            .ensure_success()?;
        eprintln!("mender-cli login ({host}): {out:?}");
        assert_eq!(cli.token().as_deref(), Some("mgmt-token"));
        let out = cli.devices_list().await?.ensure_success()?;
        eprintln!("mender-cli devices list ({host}): {out:?}");
        assert!(
            out.stdout
                .contains("ID: 11111111-1111-4111-8111-111111111111"),
            "{out:?}"
        );
        let out = cli
            .run(["devices", "list", "-d", "3"])
            .await?
            .ensure_success()?;
        eprintln!("mender-cli devices list -d 3 ({host}): {out:?}");
    }
    let login = server
        .requests()
        .into_iter()
        .find(|r| {
            r["path"] == "/api/management/v1/useradm/auth/login"
                && r["headers"]["User-Agent"] == "Go-http-client/1.1"
        })
        .context("cli login request")?;
    eprintln!("mender-cli login request: {login:#}");
    Ok(())
}
