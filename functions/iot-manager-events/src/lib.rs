//! `iot-manager-events` workflow step (upstream's iot-manager calls in `provision_device`,
//! `update_device_status` and `decommission_device`): one device lifecycle event to every
//! integration of the tenant: the webhook gets it signed, AWS IoT Core and Azure IoT Hub get the
//! device created, enabled/disabled or deleted. The event is recorded for `GET /events` and
//! handled once per event id, so a redelivered message sends nothing twice. When a cloud made
//! credentials for a new device they are pushed to it as upstream's
//! `provision_external_device` does: merged into its configured deviceconfig and deployed.

use std::collections::BTreeMap;

use deployments::configuration::NewConfigurationDeployment;
use iot_manager::model::WebhookEvent;
use services::workflow_step::{parse_job, wrong_workflow, StepError};
use services::Services;
use workflows::Job;

pub async fn process(services: &Services, body: &str) -> Result<(), StepError> {
    let job = parse_job(body)?;
    let Job::IotManagerEvent {
        tenant_id,
        event_id,
        event_type,
        time,
        device,
        ..
    } = job
    else {
        return Err(wrong_workflow(&job));
    };
    let event = WebhookEvent {
        id: event_id,
        kind: event_type,
        data: device,
        time,
    };
    let handled = services
        .iot_manager
        .handle_event(&tenant_id, &event)
        .await?;
    if let Some(configuration) = handled.device_configuration {
        // the event is recorded: a retry would not come back here, so a failure is logged
        if let Err(e) =
            push_configuration(services, &tenant_id, event.device_id(), configuration).await
        {
            tracing::error!(device = %event.device_id(), error = %e, "failed to submit cloud credentials to deviceconfig");
        }
    }
    Ok(())
}

/// Upstream's `provision_external_device`: `PATCH` the device's configuration with the keys,
/// then deploy it (`{"retries": 1}`).
async fn push_configuration(
    services: &Services,
    tenant: &str,
    device_id: &str,
    configuration: BTreeMap<String, String>,
) -> Result<(), StepError> {
    let mut configured = match services.deviceconfig.device(tenant, device_id).await {
        Ok(current) => current.configured,
        Err(deviceconfig::Error::NotFound) => deviceconfig::Configuration::new(),
        Err(e) => return Err(e.into()),
    };
    configured.extend(configuration);
    services
        .deviceconfig
        .set_configured(tenant, device_id, &configured)
        .await?;
    let (deployment_id, configured) = services
        .deviceconfig
        .new_deployment(tenant, device_id)
        .await?;
    let groups = services
        .inventory
        .get_device(tenant, device_id)
        .await
        .ok()
        .and_then(|d| d.group().map(str::to_owned))
        .into_iter()
        .collect();
    let configuration =
        serde_json::to_string(&configured).map_err(|e| StepError::Failed(e.to_string()))?;
    services
        .deployments
        .create_configuration_deployment(
            tenant,
            NewConfigurationDeployment {
                name: format!("configuration-{deployment_id}"),
                deployment_id,
                device_id: device_id.to_owned(),
                configuration,
                retries: 1,
                groups,
            },
        )
        .await?;
    Ok(())
}
