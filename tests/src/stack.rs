//! One local stack per test: the real routers and queue consumers on a free HTTPS port, with
//! its own resource prefix on the shared emulators (started by `make test`), so tests run in
//! parallel without seeing each other's data; and scripted devices admitted on it.

use std::path::PathBuf;

use local_stack::{Options, Stack};

use crate::device::Device;
use crate::mender_cli::MenderCli;
use crate::mgmt::{https_client, Mgmt};
use crate::tempdir::TempDir;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-secret-1";

pub struct TestStack {
    pub stack: Stack,
    pub prefix: String,
    _state: TempDir,
}

impl TestStack {
    /// Starts a stack; fails with a clear message when the emulators are not running.
    pub async fn start() -> anyhow::Result<Self> {
        if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
            anyhow::bail!("the emulators are not configured: run the tests with `make test`");
        }
        // Server logs (errors behind a 500) show up in the output of a failing test.
        mender_aws::init_tracing();
        let state = TempDir::new("stack")?;
        let prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let stack = Stack::start(Options {
            listen: "127.0.0.1:0".parse()?,
            state_dir: state.path().to_path_buf(),
            prefix: prefix.clone(),
            template: local_stack::default_template(),
            admin: Some((ADMIN_EMAIL.into(), ADMIN_PASSWORD.into())),
            bcrypt_cost: 4,
        })
        .await?;
        Ok(TestStack {
            stack,
            prefix,
            _state: state,
        })
    }

    pub fn url(&self) -> &str {
        &self.stack.url
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.stack.ca_cert.clone()
    }

    pub async fn admin(&self) -> anyhow::Result<Mgmt> {
        Mgmt::login(self.url(), &self.stack.ca_cert, ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// A `mender-cli` logged in as the admin.
    pub async fn admin_cli(&self) -> anyhow::Result<MenderCli> {
        let cli = MenderCli::new(self.url(), &self.stack.ca_cert)?;
        cli.login(ADMIN_EMAIL, ADMIN_PASSWORD)
            .await?
            .ensure_success()?;
        Ok(cli)
    }

    /// A scripted device with a new key that trusts this stack's CA (not authenticated yet).
    pub fn device(&self, mac: &str) -> anyhow::Result<Device> {
        Ok(Device::new(
            self.url(),
            https_client(&self.stack.ca_cert)?,
            mac,
        ))
    }

    /// A new scripted device admitted as an operator admits one: its first auth request (the
    /// answer not checked) lists it, then [`Mgmt::admit`]. Returns the device (holding its
    /// token) and its id.
    pub async fn admitted_device(
        &self,
        admin: &Mgmt,
        mac: &str,
    ) -> anyhow::Result<(Device, String)> {
        let mut device = self.device(mac)?;
        device.authenticate().await?;
        let (id, _) = admin.admit(&mut device).await?;
        Ok((device, id))
    }

    pub async fn stop(self) {
        self.stack.stop().await;
    }
}
