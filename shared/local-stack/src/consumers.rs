//! The queue consumers of the local stack: one long-polling loop per workflow queue, calling
//! the same `process` function the Lambda consumer calls. A message is deleted only after it
//! was processed; a failed one becomes visible again and ends in the dead-letter queue after
//! `maxReceiveCount` attempts, as in AWS.

use services::Services;
use tokio::sync::watch;
use workflows::Queue;

/// Runs one workflow step on a message body.
pub async fn process(queue: Queue, services: &Services, body: &str) -> Result<(), String> {
    let result = match queue {
        Queue::ProvisionDevice => provision_device::process(services, body)
            .await
            .map_err(|e| e.to_string()),
        Queue::UpdateDeviceStatus => update_device_status::process(services, body)
            .await
            .map_err(|e| e.to_string()),
        Queue::UpdateDeviceInventory => update_device_inventory::process(services, body)
            .await
            .map_err(|e| e.to_string()),
        Queue::DecommissionDevice => decommission_device::process(services, body)
            .await
            .map_err(|e| e.to_string()),
        Queue::ProcessArtifact => process_artifact::process(services, body)
            .await
            .map_err(|e| e.to_string()),
        Queue::GenerateArtifact => generate_artifact::process(services, body)
            .await
            .map_err(|e| e.to_string()),
        Queue::IotManagerEvents => iot_manager_events::process(services, body)
            .await
            .map_err(|e| e.to_string()),
    };
    result
}

pub async fn run(
    queue: Queue,
    url: String,
    sqs: aws_sdk_sqs::Client,
    services: Services,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let receive = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send();
        let out = tokio::select! {
            _ = stop.changed() => return,
            out = receive => out,
        };
        let messages = match out {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(queue = queue.name(), error = %aws_sdk_sqs::error::DisplayErrorContext(e), "receive failed");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        for message in messages {
            let body = message.body.unwrap_or_default();
            match process(queue, &services, &body).await {
                Ok(()) => {
                    if let Some(handle) = message.receipt_handle {
                        if let Err(e) = sqs
                            .delete_message()
                            .queue_url(&url)
                            .receipt_handle(handle)
                            .send()
                            .await
                        {
                            tracing::warn!(queue = queue.name(), error = %aws_sdk_sqs::error::DisplayErrorContext(e), "delete failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = queue.name(), error = %e, "workflow step failed; it will be retried")
                }
            }
        }
    }
}
