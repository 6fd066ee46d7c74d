//! `decommission-device` workflow step (upstream `decommission_device`): removes the device's
//! unfinished deployments (they end as `decommissioned`), its inventory entry, its deviceconnect
//! and deviceconfig records, then its auth sets, tokens and record in deviceauth. Idempotent.

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
        .deployments
        .end_device_deployments(
            &tenant_id,
            &device_id,
            deployments::model::DeviceStatus::Decommissioned,
        )
        .await?;
    services
        .inventory
        .delete_device(&tenant_id, &device_id)
        .await?;
    services
        .deviceconnect
        .delete_device(&tenant_id, &device_id)
        .await?;
    services
        .deviceconfig
        .delete_device(&tenant_id, &device_id)
        .await?;
    services
        .deviceauth
        .hard_delete(&tenant_id, &device_id)
        .await?;
    Ok(())
}
