//! Lambda entry point of `update-device-status`: an SQS consumer reporting partial batch failures.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    services::workflow_step::run(|services, body| async move {
        update_device_status::process(&services, &body).await
    })
    .await
}
