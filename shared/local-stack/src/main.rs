//! `mender-local`: the whole stack on one HTTPS port (`serve`, the default), the first-user
//! command (`create-user --username E --password P`, like upstream's `useradm create-user`),
//! and `reset` (empty every table, queue and bucket, recreate the admin user).
//! Emulator endpoints come from `AWS_ENDPOINT_URL*` (see `scripts/stack.sh`).
//! `create-user` also serves a deployed stack: with `USERADM_TABLE` set (the stack output
//! `UseradmTableName`) it writes the user into that table and creates nothing.
//! `serve` also serves the official Mender web GUI under `/ui/` when `MENDER_GUI_DIR` names a
//! built one (see `local_stack::gui`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use local_stack::gui::{Gui, GUI_DIR_VAR};
use local_stack::{ensure_admin, prepare, resources, Options, Stack};
use mender_config::{vars, Config, QueueUrls};
use mender_tokens::Keys;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn options() -> anyhow::Result<Options> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    Ok(Options {
        listen: env_or("MENDER_LISTEN", "127.0.0.1:8443")
            .parse()
            .context("MENDER_LISTEN")?,
        state_dir: PathBuf::from(env_or(
            "MENDER_STATE_DIR",
            &format!("{home}/.cache/mender-rs/local"),
        )),
        prefix: env_or("MENDER_PREFIX", "mender-local-"),
        template: std::env::var("MENDER_TEMPLATE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| local_stack::default_template()),
        admin: Some((
            env_or("ADMIN_EMAIL", "admin@example.com"),
            env_or("ADMIN_PASSWORD", "mender-admin-pass"),
        )),
        bcrypt_cost: env_or("BCRYPT_COST", "10").parse().context("BCRYPT_COST")?,
    })
}

/// The web GUI to serve (`MENDER_GUI_DIR`), checked before anything starts.
fn gui() -> anyhow::Result<Option<Gui>> {
    Gui::from_setting(Some(env_or(GUI_DIR_VAR, "")))
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mender_aws::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = options()?;
    match args.first().map(String::as_str).unwrap_or("serve") {
        "serve" => serve(options).await,
        "create-user" => {
            let (Some(email), Some(password)) =
                (flag(&args, "--username"), flag(&args, "--password"))
            else {
                bail!("usage: mender-local create-user --username EMAIL --password PASSWORD");
            };
            let services = match std::env::var(vars::USERADM_TABLE) {
                Ok(table) if !table.is_empty() => deployed(&table, options.bcrypt_cost).await?,
                _ => prepare(&options).await?.services,
            };
            let user = services
                .useradm
                .create_user("", &email, &password)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", user.id);
            Ok(())
        }
        "reset" => {
            let started = std::time::Instant::now();
            let parts = prepare(&options).await?;
            resources::empty(&parts.created, &parts.dynamodb, &parts.sqs, &parts.s3).await?;
            if let Some(admin) = &options.admin {
                ensure_admin(&parts.services, admin).await?;
            }
            println!(
                "reset done in {:.1} s; admin user {} recreated",
                started.elapsed().as_secs_f64(),
                options.admin.map(|a| a.0).unwrap_or_default()
            );
            Ok(())
        }
        other => bail!("unknown command {other}; use serve, create-user or reset"),
    }
}

/// The services of a deployed stack for `create-user`: `USERADM_TABLE` names its useradm table
/// (the stack output `UseradmTableName`); the SDK's usual environment (`AWS_PROFILE`,
/// `AWS_REGION`, ...) reaches the account. Nothing is created, and no token is signed, so a
/// throwaway key stands in for the stack's JWT key.
async fn deployed(useradm_table: &str, bcrypt_cost: u32) -> anyhow::Result<services::Services> {
    let sdk = mender_aws::load_sdk_config().await;
    let mut config = Config::with_resources(
        ["", useradm_table, ""],
        QueueUrls::default(),
        Keys::generate_rsa_pem()?,
    );
    config.bcrypt_cost = bcrypt_cost;
    Ok(services::Services::new(config, &sdk)?)
}

async fn serve(options: Options) -> anyhow::Result<()> {
    let admin = options.admin.clone().unwrap_or_default();
    let gui = gui()?;
    let gui_dir = gui.as_ref().map(|g| g.dir().display().to_string());
    let stack = Stack::start_with_gui(options, gui).await?;
    println!("mender-rs local stack is up");
    println!(
        "  URL:          {}  (also https://127.0.0.1:{})",
        stack.url, stack.port
    );
    println!(
        "  certificate:  {}  (ServerCertificate for mender-client, SSL_CERT_FILE for mender-cli)",
        stack.ca_cert.display()
    );
    println!("  admin user:   {} / {}", admin.0, admin.1);
    println!("  NATS:         {}  (deviceconnect relay)", stack.nats_url);
    if let (Some(url), Some(dir)) = (&stack.gui_url, &gui_dir) {
        println!("  GUI:          {url}  (Mender web GUI from {dir})");
    }
    println!("  Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    stack.stop().await;
    Ok(())
}
