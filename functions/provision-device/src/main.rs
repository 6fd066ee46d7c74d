//! Lambda entry point of `provision-device`: an SQS consumer reporting partial batch failures.
#![recursion_limit = "256"]

use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mender_aws::init_tracing();
    let services = services::Services::from_env().await?;
    let services = &services;
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| async move {
            mender_aws::sqs::handle_batch(event, |body| async move {
                provision_device::process(services, &body).await
            })
            .await
        },
    ))
    .await
}
