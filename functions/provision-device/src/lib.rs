//! `provision-device` workflow step (upstream `provision_device`): a device became accepted for
//! the first time. Inventory gets its status (revision-guarded), then deviceauth remembers the
//! device is provisioned. Idempotent: a redelivered message changes nothing more.

use services::Services;
use workflows::Job;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a provision_device message: {0}")]
    Malformed(String),
    #[error("inventory: {0}")]
    Inventory(#[from] inventory::Error),
    #[error("deviceauth: {0}")]
    Deviceauth(#[from] deviceauth::Error),
}

pub async fn process(services: &Services, body: &str) -> Result<(), Error> {
    let job: Job = serde_json::from_str(body).map_err(|e| Error::Malformed(e.to_string()))?;
    let Job::ProvisionDevice {
        tenant_id,
        device,
        status,
        ..
    } = job
    else {
        return Err(Error::Malformed(body.chars().take(200).collect()));
    };
    if !services.deviceauth.is_live(&tenant_id, &device.id).await? {
        tracing::info!(device_id = %device.id, "device gone or decommissioning; nothing to provision");
        return Ok(());
    }
    services
        .inventory
        .set_status(&tenant_id, &device.id, &status, device.revision)
        .await?;
    services
        .deviceauth
        .set_provisioned(&tenant_id, &device.id)
        .await?;
    Ok(())
}
