//! Lambda entry point of `generate-artifact`: an SQS consumer reporting partial batch failures.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    services::workflow_step::run(|services, body| async move {
        generate_artifact::process(&services, &body).await
    })
    .await
}
