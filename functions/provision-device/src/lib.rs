//! `provision-device` workflow step (upstream `provision_device`): a device became accepted for
//! the first time. Inventory gets its status (revision-guarded), then deviceauth remembers the
//! device is provisioned, deviceconnect gets its record (`disconnected` until it connects) and
//! deviceconfig its empty configuration record (an existing one is kept).
//! Idempotent: a redelivered message changes nothing more.

use services::workflow_step::{parse_job, wrong_workflow, StepError};
use services::Services;
use workflows::Job;

pub async fn process(services: &Services, body: &str) -> Result<(), StepError> {
    let job = parse_job(body)?;
    let Job::ProvisionDevice {
        tenant_id,
        device,
        status,
        ..
    } = job
    else {
        return Err(wrong_workflow(&job));
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
    services
        .deviceconnect
        .provision(&tenant_id, &device.id)
        .await?;
    services
        .deviceconfig
        .provision(&tenant_id, &device.id)
        .await?;
    Ok(())
}
