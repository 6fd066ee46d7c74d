//! `update-device-inventory` workflow step (upstream `update_device_inventory`): writes identity
//! data or the check-in time into a scope of the device's inventory. Upserts are idempotent.

use services::Services;
use workflows::Job;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not an update_device_inventory message: {0}")]
    Malformed(String),
    #[error("inventory: {0}")]
    Inventory(#[from] inventory::Error),
    #[error("deviceauth: {0}")]
    Deviceauth(#[from] deviceauth::Error),
}

pub async fn process(services: &Services, body: &str) -> Result<(), Error> {
    let job: Job = serde_json::from_str(body).map_err(|e| Error::Malformed(e.to_string()))?;
    let Job::UpdateDeviceInventory {
        tenant_id,
        device_id,
        scope,
        attributes,
        ..
    } = job
    else {
        return Err(Error::Malformed(body.chars().take(200).collect()));
    };
    if !services.deviceauth.is_live(&tenant_id, &device_id).await? {
        return Ok(());
    }
    let input = attributes
        .into_iter()
        .map(|a| inventory::AttributeIn {
            name: a.name,
            value: Some(a.value),
            description: None,
            scope: Some(a.scope),
        })
        .collect();
    services
        .inventory
        .upsert_scope(&tenant_id, &device_id, &scope, input)
        .await?;
    Ok(())
}
