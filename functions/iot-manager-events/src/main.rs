//! Lambda entry point of `iot-manager-events`: an SQS consumer reporting partial batch failures.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    services::workflow_step::run(|services, body| async move {
        iot_manager_events::process(&services, &body).await
    })
    .await
}
