//! Lambda entry point of `iot-manager-management`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mender_aws::init_tracing();
    let services = services::Services::from_env().await?;
    lambda_http::run(mender_http::finish(iot_manager_management::router(
        services,
    )))
    .await
}
