//! What the four workflow-step functions share: their error type, reading a queue message
//! into a [`Job`], and the Lambda entry point that runs a step over an SQS batch.

use std::future::Future;

use lambda_runtime::{service_fn, LambdaEvent};
use workflows::Job;

use crate::Services;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Not a message of this step: SQS redelivers it, then the dead-letter queue keeps it.
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("inventory: {0}")]
    Inventory(#[from] inventory::Error),
    #[error("deviceauth: {0}")]
    Deviceauth(#[from] deviceauth::Error),
    #[error("deployments: {0}")]
    Deployments(#[from] deployments::Error),
    #[error("{0}")]
    Storage(#[from] mender_aws::s3::S3Error),
    #[error("{0}")]
    Deviceconnect(#[from] deviceconnect_store::StoreError),
    #[error("deviceconfig: {0}")]
    Deviceconfig(#[from] deviceconfig::Error),
    #[error("iot-manager: {0}")]
    IotManager(#[from] iot_manager::Error),
    /// A step's own work failed (e.g. writing an artifact); SQS redelivers the message.
    #[error("{0}")]
    Failed(String),
}

/// Parses a queue message body.
pub fn parse_job(body: &str) -> Result<Job, StepError> {
    serde_json::from_str(body).map_err(|e| StepError::Malformed(e.to_string()))
}

/// The error for a well-formed message of another workflow.
pub fn wrong_workflow(job: &Job) -> StepError {
    StepError::Malformed(format!("{:?} sent to the wrong queue", job.queue()))
}

/// Lambda entry point of a workflow step: init once, then each SQS batch with partial batch
/// failures.
pub async fn run<F, Fut>(step: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Services, String) -> Fut,
    Fut: Future<Output = Result<(), StepError>>,
{
    mender_aws::init_tracing();
    let services = Services::from_env().await?;
    let (services, step) = (&services, &step);
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>| async move {
            mender_aws::sqs::handle_batch(event, |body| step(services.clone(), body)).await
        },
    ))
    .await
}
