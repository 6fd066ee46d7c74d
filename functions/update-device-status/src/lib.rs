//! `update-device-status` workflow step (upstream `update_device_status`): copies a device's
//! auth status into inventory's `identity/status`, only when the revision is newer, so late or
//! repeated messages never roll it back. Status `decommissioned` removes the inventory device.

use services::workflow_step::{parse_job, wrong_workflow, StepError};
use services::Services;
use workflows::Job;

pub async fn process(services: &Services, body: &str) -> Result<(), StepError> {
    let job = parse_job(body)?;
    let Job::UpdateDeviceStatus {
        tenant_id,
        devices,
        device_status,
        ..
    } = job
    else {
        return Err(wrong_workflow(&job));
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
