//! Runs the real Debian `mender-cli` 1.9 (`/usr/bin/mender-cli`) against the stack, isolated
//! from the host: `HOME` is a temp dir (config `~/.mender-clirc`, token
//! `~/.cache/mender/authtoken`), `SSL_CERT_FILE` is the stack's CA, and `--server` is always
//! passed (the default server is hosted.mender.io). Async (tokio), so the stack may run in
//! the same test process.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::tempdir::TempDir;

/// The binary from the Debian package `mender-cli`.
pub const MENDER_CLI_BIN: &str = "/usr/bin/mender-cli";

/// True when `mender-cli` is installed.
pub fn mender_cli_available() -> bool {
    Path::new(MENDER_CLI_BIN).is_file()
}

/// Fails with the hint to install it unless `mender-cli` is installed.
pub fn ensure_mender_cli() -> anyhow::Result<()> {
    anyhow::ensure!(
        mender_cli_available(),
        "mender-cli missing: run scripts/deps.sh"
    );
    Ok(())
}

/// Result of one `mender-cli` run.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Fails (with both outputs in the message) unless the exit status is 0.
    pub fn ensure_success(self) -> anyhow::Result<Self> {
        if !self.success() {
            bail!(
                "mender-cli failed ({}):\nstdout: {}\nstderr: {}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// A `mender-cli` "user" with its own HOME (hence its own saved login token).
#[derive(Debug)]
pub struct MenderCli {
    server_url: String,
    ca_cert: PathBuf,
    home: TempDir,
    /// Kill a run after this long (default 120 s).
    pub timeout: Duration,
}

impl MenderCli {
    pub fn new(server_url: &str, ca_cert: &Path) -> anyhow::Result<Self> {
        if !mender_cli_available() {
            bail!("{MENDER_CLI_BIN} not found: install the Debian package mender-cli");
        }
        let ca_cert = std::fs::canonicalize(ca_cert)
            .with_context(|| format!("CA certificate {}", ca_cert.display()))?;
        Ok(Self {
            server_url: server_url.trim_end_matches('/').to_owned(),
            ca_cert,
            home: TempDir::new("mender-cli-home")?,
            timeout: Duration::from_secs(120),
        })
    }

    /// The isolated `HOME`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Where `login` saves the token: `$HOME/.cache/mender/authtoken`.
    pub fn token_path(&self) -> PathBuf {
        self.home.path().join(".cache/mender/authtoken")
    }

    /// The saved token, if `login` succeeded.
    pub fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.token_path()).ok()
    }

    /// `mender-cli --server URL <args...>` (never fails on a non-zero exit; see
    /// [`CliOutput::ensure_success`]).
    pub async fn run<I, S>(&self, args: I) -> anyhow::Result<CliOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = tokio::process::Command::new(MENDER_CLI_BIN);
        cmd.arg("--server")
            .arg(&self.server_url)
            .args(args)
            .env("HOME", self.home.path())
            .env("SSL_CERT_FILE", &self.ca_cert)
            .env_remove("SSL_CERT_DIR")
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {MENDER_CLI_BIN}"))?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .with_context(|| format!("mender-cli did not finish within {:?}", self.timeout))?
            .context("waiting for mender-cli")?;
        Ok(CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// `mender-cli --server URL login --username U --password P`.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<CliOutput> {
        self.run(["login", "--username", username, "--password", password])
            .await
    }

    /// `mender-cli --server URL artifacts upload --no-progress <artifact>`.
    pub async fn upload_artifact(&self, artifact: &Path) -> anyhow::Result<CliOutput> {
        let args = ["artifacts", "upload", "--no-progress"].map(OsStr::new);
        self.run(args.into_iter().chain([artifact.as_os_str()]))
            .await
    }

    /// `mender-cli --server URL devices list`.
    pub async fn devices_list(&self) -> anyhow::Result<CliOutput> {
        self.run(["devices", "list"]).await
    }
}
