//! The AWS edge shared by all functions: SDK clients built once from the environment (they
//! honour `AWS_ENDPOINT_URL*`, so the same code reaches the local emulators), DynamoDB item
//! helpers, the SQS batch handler with partial batch failures, and logging set-up.

pub mod dynamo;
pub mod retry;
pub mod s3;
pub mod sqs;

pub use aws_config::SdkConfig;
pub use aws_sdk_dynamodb;
pub use aws_sdk_s3;
pub use aws_sdk_sqs;

/// Loads region, credentials and endpoint overrides from the environment (no network call).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// Logging: JSON lines in Lambda (CloudWatch), plain text elsewhere; `RUST_LOG` filters.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        builder.json().without_time().try_init()
    } else {
        builder.try_init()
    };
    // Already initialised (tests, local stack): keep the first subscriber.
    let _ = result;
}
