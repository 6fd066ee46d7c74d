//! Queue plumbing shared by the workflow steps: the Lambda SQS handler that reports partial
//! batch failures (only failed messages come back), and the same per-message contract the
//! local stack's poller uses, so a step's code is identical in both places.

use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;

/// Runs `process` on each record's body; records that fail are reported back to SQS, which
/// makes them visible again (and moves them to the dead-letter queue after `maxReceiveCount`).
pub async fn handle_batch<F, Fut, E>(
    event: LambdaEvent<SqsEvent>,
    process: F,
) -> Result<SqsBatchResponse, lambda_runtime::Error>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut failures = Vec::new();
    // FIFO queues: once a message fails, the later ones of the batch must not overtake it,
    // so they are handed back unprocessed (AWS's rule for partial batch responses).
    let mut fifo_blocked = false;
    for record in event.payload.records {
        let id = record.message_id.clone().unwrap_or_default();
        let fifo = record.attributes.contains_key("MessageGroupId");
        let failed = if fifo_blocked {
            true
        } else {
            match process(record.body.unwrap_or_default()).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(message_id = %id, error = %e, "message failed; SQS will redeliver it");
                    true
                }
            }
        };
        if failed {
            fifo_blocked |= fifo;
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failures.push(failure);
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    Ok(response)
}
