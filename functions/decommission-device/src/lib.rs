//! `decommission-device` workflow step (upstream `decommission_device`): removes the device's
//! inventory entry, then its auth sets, tokens and record in deviceauth. (Deployments and
//! deviceconnect clean-up join here when those services exist.) Idempotent.

use services::Services;
use workflows::Job;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a decommission_device message: {0}")]
    Malformed(String),
    #[error("inventory: {0}")]
    Inventory(#[from] inventory::Error),
    #[error("deviceauth: {0}")]
    Deviceauth(#[from] deviceauth::Error),
}

pub async fn process(services: &Services, body: &str) -> Result<(), Error> {
    let job: Job = serde_json::from_str(body).map_err(|e| Error::Malformed(e.to_string()))?;
    let Job::DecommissionDevice {
        tenant_id,
        device_id,
        ..
    } = job
    else {
        return Err(Error::Malformed(body.chars().take(200).collect()));
    };
    services
        .inventory
        .delete_device(&tenant_id, &device_id)
        .await?;
    services
        .deviceauth
        .hard_delete(&tenant_id, &device_id)
        .await?;
    Ok(())
}
