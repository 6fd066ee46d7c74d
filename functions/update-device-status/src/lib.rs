//! `update-device-status` workflow step (upstream `update_device_status`): copies a device's
//! auth status into inventory's `identity/status`, only when the revision is newer, so late or
//! repeated messages never roll it back. Status `decommissioned` removes the inventory device.

use services::Services;
use workflows::Job;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not an update_device_status message: {0}")]
    Malformed(String),
    #[error("inventory: {0}")]
    Inventory(#[from] inventory::Error),
    #[error("deviceauth: {0}")]
    Deviceauth(#[from] deviceauth::Error),
}

pub async fn process(services: &Services, body: &str) -> Result<(), Error> {
    let job: Job = serde_json::from_str(body).map_err(|e| Error::Malformed(e.to_string()))?;
    let Job::UpdateDeviceStatus {
        tenant_id,
        devices,
        device_status,
        ..
    } = job
    else {
        return Err(Error::Malformed(body.chars().take(200).collect()));
    };
    for device in devices {
        if device_status == "decommissioned" {
            services
                .inventory
                .delete_device(&tenant_id, &device.id)
                .await?;
        } else if services.deviceauth.is_live(&tenant_id, &device.id).await? {
            services
                .inventory
                .set_status(&tenant_id, &device.id, &device_status, device.revision)
                .await?;
        }
    }
    Ok(())
}
