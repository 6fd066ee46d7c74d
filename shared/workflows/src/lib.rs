//! Upstream's workflows become queue messages: one SQS FIFO queue per workflow, grouped by
//! device id so one device's jobs run in order. This crate holds the message types and the
//! publisher; the consumers are the workflow functions (`functions/provision-device`, ...).
//! A producer publishes only after its own state change is stored.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A device as the status workflows carry it (upstream's device event, trimmed to what
/// consumers use). `revision` orders status updates.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRef {
    pub id: String,
    pub revision: i64,
}

/// An inventory attribute as the identity/system updates carry it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: serde_json::Value,
    pub scope: String,
}

/// One workflow run. The `workflow` tag names the queue.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "workflow", rename_all = "snake_case")]
pub enum Job {
    /// A device became accepted for the first time.
    ProvisionDevice {
        request_id: String,
        tenant_id: String,
        device: DeviceRef,
        status: String,
    },
    /// Devices changed status (or were removed: status `decommissioned`).
    UpdateDeviceStatus {
        request_id: String,
        tenant_id: String,
        devices: Vec<DeviceRef>,
        device_status: String,
    },
    /// Identity data or the check-in time changed: write them to inventory in `scope`.
    UpdateDeviceInventory {
        request_id: String,
        tenant_id: String,
        device_id: String,
        scope: String,
        attributes: Vec<Attribute>,
    },
    /// An operator decommissioned a device.
    DecommissionDevice {
        request_id: String,
        tenant_id: String,
        device_id: String,
    },
    /// A direct upload completed: parse and verify the object, then store the artifact.
    ProcessArtifact {
        request_id: String,
        tenant_id: String,
        artifact_id: String,
    },
    /// `POST /artifacts/generate` stored a raw file: build a single-file artifact from it
    /// (upstream's `generate_artifact` workflow, run by create-artifact-worker). `args` is the
    /// request's JSON string, passed on unparsed as upstream does.
    GenerateArtifact {
        request_id: String,
        tenant_id: String,
        artifact_id: String,
        name: String,
        #[serde(default)]
        description: String,
        device_types_compatible: Vec<String>,
        #[serde(rename = "type")]
        update_type: String,
        #[serde(default)]
        args: String,
    },
    /// A device lifecycle event for iot-manager's integrations (webhook, AWS IoT Core, Azure
    /// IoT Hub): `device-provisioned`, `device-status-changed` or `device-decommissioned`.
    /// `event_id` and `time` are fixed when the change is stored, so a redelivered message is
    /// the same event (delivered once).
    IotManagerEvent {
        request_id: String,
        tenant_id: String,
        event_id: String,
        event_type: String,
        time: String,
        /// Upstream's device event: `id`, and `status`, `auth_sets`, `created_ts` where the
        /// type has them.
        device: serde_json::Value,
    },
}

/// The queues, one per workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Queue {
    ProvisionDevice,
    UpdateDeviceStatus,
    UpdateDeviceInventory,
    DecommissionDevice,
    ProcessArtifact,
    GenerateArtifact,
    IotManagerEvents,
}

impl Queue {
    pub const ALL: [Queue; 7] = [
        Queue::ProvisionDevice,
        Queue::UpdateDeviceStatus,
        Queue::UpdateDeviceInventory,
        Queue::DecommissionDevice,
        Queue::ProcessArtifact,
        Queue::GenerateArtifact,
        Queue::IotManagerEvents,
    ];

    /// The workflow step's name (function and queue name stem).
    pub fn name(self) -> &'static str {
        match self {
            Queue::ProvisionDevice => "provision-device",
            Queue::UpdateDeviceStatus => "update-device-status",
            Queue::UpdateDeviceInventory => "update-device-inventory",
            Queue::DecommissionDevice => "decommission-device",
            Queue::ProcessArtifact => "process-artifact",
            Queue::GenerateArtifact => "generate-artifact",
            Queue::IotManagerEvents => "iot-manager-events",
        }
    }

    pub fn url(self, urls: &mender_config::QueueUrls) -> &str {
        match self {
            Queue::ProvisionDevice => &urls.provision_device,
            Queue::UpdateDeviceStatus => &urls.update_device_status,
            Queue::UpdateDeviceInventory => &urls.update_device_inventory,
            Queue::DecommissionDevice => &urls.decommission_device,
            Queue::ProcessArtifact => &urls.process_artifact,
            Queue::GenerateArtifact => &urls.generate_artifact,
            Queue::IotManagerEvents => &urls.iot_manager_events,
        }
    }
}

impl Job {
    pub fn queue(&self) -> Queue {
        match self {
            Job::ProvisionDevice { .. } => Queue::ProvisionDevice,
            Job::UpdateDeviceStatus { .. } => Queue::UpdateDeviceStatus,
            Job::UpdateDeviceInventory { .. } => Queue::UpdateDeviceInventory,
            Job::DecommissionDevice { .. } => Queue::DecommissionDevice,
            Job::ProcessArtifact { .. } => Queue::ProcessArtifact,
            Job::GenerateArtifact { .. } => Queue::GenerateArtifact,
            Job::IotManagerEvent { .. } => Queue::IotManagerEvents,
        }
    }

    /// FIFO message group: the device, so one device's jobs stay in order.
    pub fn group(&self) -> String {
        match self {
            Job::ProvisionDevice { device, .. } => device.id.clone(),
            Job::UpdateDeviceStatus { devices, .. } => {
                devices.first().map(|d| d.id.clone()).unwrap_or_default()
            }
            Job::UpdateDeviceInventory { device_id, .. }
            | Job::DecommissionDevice { device_id, .. } => device_id.clone(),
            Job::ProcessArtifact { artifact_id, .. }
            | Job::GenerateArtifact { artifact_id, .. } => artifact_id.clone(),
            Job::IotManagerEvent { device, .. } => device
                .get("id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot publish to {0}: {1}")]
    Send(&'static str, String),
}

/// Starts workflows.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    async fn publish(&self, job: Job) -> Result<(), PublishError>;
}

/// Publishes to the SQS queues.
pub struct SqsPublisher {
    pub client: aws_sdk_sqs::Client,
    pub urls: mender_config::QueueUrls,
}

#[async_trait::async_trait]
impl Publisher for SqsPublisher {
    async fn publish(&self, job: Job) -> Result<(), PublishError> {
        let queue = job.queue();
        let body = serde_json::to_string(&job)
            .map_err(|e| PublishError::Send(queue.name(), e.to_string()))?;
        let mut send = self
            .client
            .send_message()
            .queue_url(queue.url(&self.urls))
            .message_body(body);
        if queue.url(&self.urls).ends_with(".fifo") {
            send = send
                .message_group_id(job.group())
                .message_deduplication_id(uuid::Uuid::new_v4().to_string());
        }
        send.send().await.map_err(|e| {
            PublishError::Send(
                queue.name(),
                aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            )
        })?;
        tracing::debug!(queue = queue.name(), "workflow published");
        Ok(())
    }
}

/// Keeps published jobs in memory (unit tests of producers).
#[derive(Default, Clone)]
pub struct RecordingPublisher {
    pub jobs: Arc<Mutex<Vec<Job>>>,
}

#[async_trait::async_trait]
impl Publisher for RecordingPublisher {
    async fn publish(&self, job: Job) -> Result<(), PublishError> {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.push(job);
        }
        Ok(())
    }
}
