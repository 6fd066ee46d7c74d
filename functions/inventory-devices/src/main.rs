//! Lambda entry point of `inventory-devices`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mender_aws::init_tracing();
    let services = services::Services::from_env().await?;
    lambda_http::run(mender_http::finish(inventory_devices::router(services))).await
}
