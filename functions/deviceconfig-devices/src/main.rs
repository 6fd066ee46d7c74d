//! Lambda entry point of `deviceconfig-devices`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mender_aws::init_tracing();
    let services = services::Services::from_env().await?;
    lambda_http::run(mender_http::finish(deviceconfig_devices::router(services))).await
}
