//! The local NATS server deviceconnect relays through: `nats-server -a 127.0.0.1 -p <free
//! port>` (the Debian package) with `max_payload` raised to carry an 8 MiB websocket message
//! (NATS's default is 1 MiB), ended by its PID when the stack stops (killed too if the stack
//! is dropped without stopping, or if the thread that started it dies).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// A running `nats-server` child process.
pub struct NatsServer {
    child: Child,
    pub url: String,
}

fn binary() -> String {
    if let Ok(path) = std::env::var("NATS_SERVER") {
        return path;
    }
    // Debian installs it in /usr/sbin, which is not on every user's PATH.
    if Path::new("/usr/sbin/nats-server").is_file() {
        return "/usr/sbin/nats-server".to_owned();
    }
    "nats-server".to_owned()
}

/// A port of 127.0.0.1 free right now (the caller binds it soon; it may be taken by then).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl NatsServer {
    /// Starts `nats-server` on a free port of 127.0.0.1 and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let mut last_error = None;
        // A free port may be taken between the probe and the server's bind: try a few.
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    async fn try_start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let bin = binary();
        // Through `setpriv --pdeathsig KILL` (when present) so the server dies with the thread
        // that started it even if this process is killed without running destructors.
        let mut command = if Path::new("/usr/bin/setpriv").is_file() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args(["--pdeathsig", "KILL", "--", &bin]);
            c
        } else {
            Command::new(&bin)
        };
        let config = std::env::temp_dir().join(format!("mender-rs-nats-{port}.conf"));
        std::fs::write(
            &config,
            format!("max_payload: {}\n", deviceconnect::NATS_MAX_PAYLOAD),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let mut child = command
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {bin} (install it with scripts/deps.sh)"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if let Some(status) = child.try_wait()? {
                let _ = std::fs::remove_file(&config);
                bail!("nats-server exited at start: {status}");
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                // read at start; not needed any more
                let _ = std::fs::remove_file(&config);
                return Ok(NatsServer {
                    child,
                    url: format!("nats://{addr}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill().await;
        let _ = std::fs::remove_file(&config);
        bail!("nats-server did not listen on {addr} within 5 s")
    }

    /// Ends the server (by its PID) and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
