//! Lambda entry point of `provision-device`: an SQS consumer reporting partial batch failures.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    services::workflow_step::run(|services, body| async move {
        provision_device::process(&services, &body).await
    })
    .await
}
