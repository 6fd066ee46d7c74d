//! `update-device-inventory` workflow step (upstream `update_device_inventory`): writes identity
//! data or the check-in time into a scope of the device's inventory. Upserts are idempotent.

use services::workflow_step::{parse_job, wrong_workflow, StepError};
use services::Services;
use workflows::Job;

pub async fn process(services: &Services, body: &str) -> Result<(), StepError> {
    let job = parse_job(body)?;
    let Job::UpdateDeviceInventory {
        tenant_id,
        device_id,
        scope,
        attributes,
        ..
    } = job
    else {
        return Err(wrong_workflow(&job));
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
