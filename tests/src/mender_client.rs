//! Runs the real Debian `mender-client` 3.4 daemon (`/usr/bin/mender`) as a child process
//! against a server URL, with its own config, data dir and identity (MAC), so that several
//! simulated devices can run side by side on one host.
//!
//! The client reads a few files from fixed, non-configurable paths (see
//! `/work/shared/clients/CLIENTS.md` §1). They are shared by every test and installed
//! idempotently (write to a temp file + rename, never deleted) by [`install_global_files`]:
//! * [`IDENTITY_SCRIPT`] prints `mac=$MENDER_TEST_MAC` (plus the lines of the optional
//!   `$MENDER_TEST_IDENTITY_EXTRA`); the daemon's children inherit its environment, so every
//!   [`MenderClient`] gets its own identity through the environment.
//! * [`INVENTORY_SCRIPT`] prints `custom_list=alpha` and `custom_list=beta` (an array
//!   attribute on the server) plus the lines of the optional `$MENDER_TEST_INVENTORY_EXTRA`.
//! * [`ARTIFACT_INFO`] must hold `artifact_name=...` or the client never contacts the server
//!   (written as `artifact_name=initial` when missing).
//!
//! The daemon is started through `setpriv --pdeathsig KILL` so that it dies with the thread
//! that started it even if the test process is killed without running destructors. Start
//! clients from the test's own thread (or a tokio worker), not from a short-lived thread
//! such as a `spawn_blocking` one.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use crate::tempdir::TempDir;

/// The client binary from the Debian package `mender-client`.
pub const MENDER_BIN: &str = "/usr/bin/mender";
/// Fixed path of the device identity script (Debian ships none).
pub const IDENTITY_SCRIPT: &str = "/usr/share/mender/identity/mender-device-identity";
/// Our inventory script (the client runs every `mender-inventory-*` in that directory).
pub const INVENTORY_SCRIPT: &str = "/usr/share/mender/inventory/mender-inventory-test";
/// Fixed path of the artifact name file read when the data store has no name yet.
pub const ARTIFACT_INFO: &str = "/etc/mender/artifact_info";
/// Environment variable read by [`IDENTITY_SCRIPT`] for the `mac` identity attribute.
/// How long a freshly started client may take to reach the server: it generates its RSA 3072
/// key first (seconds alone, tens of seconds on a loaded machine).
pub const FIRST_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(90);
pub const MAC_ENV: &str = "MENDER_TEST_MAC";
/// Optional extra `key=value` lines (newline separated) printed by [`IDENTITY_SCRIPT`].
pub const IDENTITY_EXTRA_ENV: &str = "MENDER_TEST_IDENTITY_EXTRA";
/// Optional extra `key=value` lines (newline separated) printed by [`INVENTORY_SCRIPT`].
pub const INVENTORY_EXTRA_ENV: &str = "MENDER_TEST_INVENTORY_EXTRA";
/// Set to `1` to keep the per-client temp dirs (config, data, log) after the test.
pub const KEEP_ENV: &str = "MENDER_TEST_KEEP";

const IDENTITY_SCRIPT_BODY: &str = r#"#!/bin/sh
# Installed by the black-box tests (tests/src/mender_client.rs): identity from the environment.
echo "mac=${MENDER_TEST_MAC}"
if [ -n "${MENDER_TEST_IDENTITY_EXTRA}" ]; then printf '%s\n' "${MENDER_TEST_IDENTITY_EXTRA}"; fi
"#;

const INVENTORY_SCRIPT_BODY: &str = r#"#!/bin/sh
# Installed by the black-box tests (tests/src/mender_client.rs): a repeated key => array attribute.
echo "custom_list=alpha"
echo "custom_list=beta"
if [ -n "${MENDER_TEST_INVENTORY_EXTRA}" ]; then printf '%s\n' "${MENDER_TEST_INVENTORY_EXTRA}"; fi
"#;

const DEFAULT_ARTIFACT_INFO: &str = "artifact_name=initial\n";

/// True when the real client can be run here: the binary exists and the shared files at
/// the fixed paths are (or could now be) installed. Installs them as a side effect; tests
/// call it to skip themselves on hosts without the Debian packages or without root.
pub fn mender_available() -> bool {
    Path::new(MENDER_BIN).is_file() && install_global_files().is_ok()
}

/// Installs the identity script, the inventory script and `artifact_info` (when missing).
/// Idempotent and safe to call concurrently from several tests/processes.
pub fn install_global_files() -> anyhow::Result<()> {
    install_file(Path::new(IDENTITY_SCRIPT), IDENTITY_SCRIPT_BODY, 0o755)?;
    install_file(Path::new(INVENTORY_SCRIPT), INVENTORY_SCRIPT_BODY, 0o755)?;
    let info = Path::new(ARTIFACT_INFO);
    let has_name = std::fs::read_to_string(info)
        .map(|s| {
            s.lines()
                .any(|l| l.trim_start().starts_with("artifact_name="))
        })
        .unwrap_or(false);
    if !has_name {
        install_file(info, DEFAULT_ARTIFACT_INFO, 0o644)?;
    }
    Ok(())
}

/// Writes `content` to `path` with `mode` unless it already has exactly that content and
/// mode; the new file is written under a temp name in the same directory and renamed
/// over `path`, so readers (and the client executing the script) never see a partial file.
pub fn install_file(path: &Path, content: &str, mode: u32) -> anyhow::Result<()> {
    if let (Ok(current), Ok(meta)) = (std::fs::read(path), std::fs::metadata(path)) {
        if current == content.as_bytes() && meta.permissions().mode() & 0o7777 == mode {
            return Ok(());
        }
    }
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The temp name must not match `mender-inventory-*` (the client runs all of those).
    let tmp = dir.join(format!(".tmp-black-box-{}", uuid::Uuid::new_v4()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("installing {}", path.display()))
}

/// Settings of one simulated device. [`ClientOptions::new`] gives the defaults used by
/// [`MenderClient::start`]; change fields before [`MenderClient::start_with`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub server_url: String,
    /// PEM file the client trusts for the server (`ServerCertificate`).
    pub ca_cert: PathBuf,
    /// Value of the `mac` identity attribute.
    pub mac: String,
    /// Written to `<data>/device_type` as `device_type=<this>`.
    pub device_type: String,
    pub update_poll_seconds: u64,
    pub inventory_poll_seconds: u64,
    /// Auth/inventory/update retry interval. Any value ≥ 1 is honoured (0 means the
    /// 5-minute default in client 3.4); retries are capped at this interval.
    pub retry_poll_seconds: u64,
    /// Extra top-level `mender.conf` keys (e.g. `TenantToken`, `ArtifactVerifyKey`),
    /// overriding the generated ones.
    pub extra_config: Map<String, Value>,
    /// Extra environment variables for the daemon and, through it, its scripts
    /// (e.g. [`IDENTITY_EXTRA_ENV`], [`INVENTORY_EXTRA_ENV`]).
    pub env: Vec<(String, String)>,
}

impl ClientOptions {
    pub fn new(server_url: &str, ca_cert: &Path, mac: &str) -> Self {
        Self {
            server_url: server_url.to_owned(),
            ca_cert: ca_cert.to_owned(),
            mac: mac.to_owned(),
            device_type: "test-device".to_owned(),
            update_poll_seconds: 5,
            inventory_poll_seconds: 5,
            retry_poll_seconds: 1,
            extra_config: Map::new(),
            env: Vec::new(),
        }
    }
}

/// A running `mender ... daemon`. Dropping it kills the process and removes its temp dir
/// (when the test is panicking, the tail of the client log is printed to stderr first).
#[derive(Debug)]
pub struct MenderClient {
    opts: ClientOptions,
    dir: TempDir,
    child: Option<Child>,
}

impl MenderClient {
    /// Starts a client with the default [`ClientOptions`] (5 s polls, 1 s retries,
    /// device type `test-device`).
    pub fn start(server_url: &str, ca_cert: &Path, mac: &str) -> anyhow::Result<Self> {
        Self::start_with(ClientOptions::new(server_url, ca_cert, mac))
    }

    /// Installs the shared files, writes `mender.conf` and `device_type` into a fresh temp
    /// dir and starts the daemon.
    pub fn start_with(mut opts: ClientOptions) -> anyhow::Result<Self> {
        if !Path::new(MENDER_BIN).is_file() {
            bail!("{MENDER_BIN} not found: install the Debian package mender-client");
        }
        install_global_files()?;
        opts.ca_cert = std::fs::canonicalize(&opts.ca_cert)
            .with_context(|| format!("CA certificate {}", opts.ca_cert.display()))?;
        let mut dir = TempDir::new("mender-client")?;
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
            dir.keep();
        }
        let mut client = Self {
            opts,
            dir,
            child: None,
        };
        std::fs::create_dir_all(client.data_dir())?;
        std::fs::write(
            client.data_dir().join("device_type"),
            format!("device_type={}\n", client.opts.device_type),
        )?;
        std::fs::write(
            client.config_path(),
            serde_json::to_vec_pretty(&client.config())?,
        )?;
        client.spawn()?;
        Ok(client)
    }

    /// The `mender.conf` content written for this client.
    fn config(&self) -> Value {
        let data = self.data_dir();
        let mut conf = json!({
            "ServerURL": self.opts.server_url,
            "ServerCertificate": self.opts.ca_cert,
            "UpdatePollIntervalSeconds": self.opts.update_poll_seconds,
            "InventoryPollIntervalSeconds": self.opts.inventory_poll_seconds,
            "RetryPollIntervalSeconds": self.opts.retry_poll_seconds,
            "DeviceTypeFile": data.join("device_type"),
            "DBus": {"Enabled": false},
        });
        if let Value::Object(map) = &mut conf {
            for (k, v) in &self.opts.extra_config {
                map.insert(k.clone(), v.clone());
            }
        }
        conf
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let mut cmd = if Path::new("/usr/bin/setpriv").is_file() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--", MENDER_BIN]);
            c
        } else {
            Command::new(MENDER_BIN)
        };
        cmd.arg("-c")
            .arg(self.config_path())
            .arg("-b")
            .arg(self.dir.path().join("nonexistent-fallback.conf"))
            .arg("-d")
            .arg(self.data_dir())
            .args(["--no-syslog", "-l", "debug", "daemon"])
            .current_dir(self.dir.path())
            .env(MAC_ENV, &self.opts.mac)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {MENDER_BIN}"))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn mac(&self) -> &str {
        &self.opts.mac
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The per-client temp dir holding `mender.conf`, `mender.log` and `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client's data dir (`-d`): device key `mender-agent.pem`, LMDB store, ...
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mender.conf")
    }

    /// File receiving the daemon's stdout and stderr (across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mender.log")
    }

    /// Everything the daemon printed so far (lossy UTF-8; empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of [`Self::log`], for assertion messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until the log contains `needle` (polling every 100 ms).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "client {}: {needle:?} not in the log after {timeout:?}; log tail:\n{}",
                    self.opts.mac,
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// PID of the daemon while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the daemon process is alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit status if the daemon has exited on its own (or was stopped).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal (name as understood by `kill -s`, e.g. `USR1`) to the daemon's PID.
    pub fn signal(&mut self, sig: &str) -> anyhow::Result<()> {
        if !self.is_running() {
            let exit = self.try_exit_status();
            bail!(
                "client {} is not running (exit status {exit:?}); log tail:\n{}",
                self.opts.mac,
                self.log_tail(40)
            );
        }
        let pid = self.pid().context("no child")?;
        let status = Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -s {sig} {pid} failed: {status}");
        }
        Ok(())
    }

    /// `SIGUSR1`: check for an update now.
    pub fn check_update_now(&mut self) -> anyhow::Result<()> {
        self.signal("USR1")
    }

    /// `SIGUSR2`: send the inventory now.
    pub fn send_inventory_now(&mut self) -> anyhow::Result<()> {
        self.signal("USR2")
    }

    /// Stops the daemon: `SIGTERM`, then `SIGKILL` after 5 s. The temp dir (data, key,
    /// log) stays until the value is dropped, so [`Self::restart`] keeps the identity.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if matches!(child.try_wait(), Ok(None)) {
            child.kill().context("killing mender")?;
        }
        child.wait().context("waiting for mender")?;
        Ok(())
    }

    /// Stops and starts the daemon again with the same config, data dir and device key.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }
}

impl Drop for MenderClient {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- mender client {} ({}) log tail ----\n{}\n---- end of log ----",
                self.opts.mac,
                self.dir.path().display(),
                self.log_tail(60)
            );
        }
    }
}
