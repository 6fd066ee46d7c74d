//! The deviceconnect container: serves the device and user websockets on plain HTTP (TLS ends
//! at the load balancer) and relays over NATS. Environment: the usual service configuration
//! (see `mender-config`; `DEVICECONNECT_TABLE` names the `DeviceconnectTable`, recordings go to
//! `ARTIFACTS_BUCKET` under `deviceconnect/recordings/`), `NATS_URL`
//! (default `nats://127.0.0.1:4222`), `DEVICECONNECT_LISTEN` (default `0.0.0.0:8080`),
//! `DEVICECONNECT_RECHECK_SECONDS` (how often open sockets' tokens are checked again, default
//! 60) and `DEVICECONNECT_ALLOWED_ORIGINS` (comma-separated origins allowed to open
//! cookie-authenticated websockets besides the request's own host; see `deviceconnect::Settings`).

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mender_aws::init_tracing();
    let services = services::Services::from_env().await?;
    anyhow::ensure!(
        !services.config.deviceconnect_table.is_empty(),
        "DEVICECONNECT_TABLE is not set"
    );
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let listen =
        std::env::var("DEVICECONNECT_LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".to_owned());
    let settings = deviceconnect::Settings::from_env().map_err(anyhow::Error::msg)?;
    let dc = deviceconnect::Deviceconnect::connect(services, &nats_url)
        .await
        .with_context(|| format!("starting with NATS at {nats_url}"))?
        .with_settings(settings);
    let app = mender_http::finish(deviceconnect::router(dc.clone()));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "deviceconnect listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            // SIGTERM (ECS stopping the task), Ctrl-C, or the internal shutdown endpoint
            let term = async {
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        term.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "no SIGTERM handler");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = term => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = dc.shutting_down() => {}
            }
            tracing::info!("shutting down: closing websockets");
            dc.shut_down();
        })
        .await?;
    Ok(())
}
