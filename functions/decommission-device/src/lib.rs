//! `decommission-device` workflow step (upstream `decommission_device`): removes the device's
//! inventory entry, then its auth sets, tokens and record in deviceauth. (Deployments and
//! deviceconnect clean-up join here when those services exist.) Idempotent.

use services::workflow_step::{parse_job, wrong_workflow, StepError};
use services::Services;
use workflows::Job;

pub async fn process(services: &Services, body: &str) -> Result<(), StepError> {
    let job = parse_job(body)?;
    let Job::DecommissionDevice {
        tenant_id,
        device_id,
        ..
    } = job
    else {
        return Err(wrong_workflow(&job));
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
