//! The device protocol: `next` (which deployment and artifact a device installs), status
//! reports, deployment logs and a device's deployment history.

use serde_json::{json, Value};

use super::{Deployments, Error, Instructions};
use crate::model::{
    choose_artifact, Deployment, DeviceDeployment, DeviceStatus, DEVICE_REPORTABLE,
};
use crate::store::Store;

impl<S: Store> Deployments<S> {
    /// `deployments/next`: the device's oldest unfinished deployment with its artifact, or
    /// `None` (204). Marks `noartifact` / `already-installed` as upstream does.
    pub async fn next(
        &self,
        tenant: &str,
        device_id: &str,
        device_type: &str,
        artifact_name: &str,
    ) -> Result<Option<Instructions>, Error> {
        if device_type.is_empty() || artifact_name.is_empty() {
            return Err(Error::BadRequest("Missing identity data".into()));
        }
        for dd in self.store.active_for_device(tenant, device_id).await? {
            let Some(deployment) = self.store.get_deployment(tenant, &dd.deployment_id).await?
            else {
                continue;
            };
            let request =
                json!({"device_type": device_type, "artifact_name": artifact_name}).to_string();
            if let Some(first) = &dd.request {
                if dd.artifact_id.is_some()
                    && first != &request
                    && dd.status != DeviceStatus::Pending
                {
                    let failure = DeviceStatus::Failure;
                    self.move_device(tenant, &dd.deployment_id, device_id, failure, |d| {
                        Ok(!d.status.is_terminal())
                    })
                    .await?;
                    return Err(Error::Conflict(
                        "Device provided conflicting request data".into(),
                    ));
                }
            }
            if deployment.is_configuration() {
                return self
                    .configuration_instructions(tenant, deployment, &dd, device_type, &request)
                    .await
                    .map(Some);
            }
            // Assign the artifact on the first fetch.
            let artifact_id = match &dd.artifact_id {
                Some(id) => Some(id.clone()),
                None => {
                    let mut candidates = Vec::new();
                    for id in &deployment.artifacts {
                        if let Some(a) = self.store.get_artifact(tenant, id).await? {
                            candidates.push(a);
                        }
                    }
                    choose_artifact(&candidates, device_type).map(|a| a.id.clone())
                }
            };
            let Some(artifact_id) = artifact_id else {
                let noartifact = DeviceStatus::Noartifact;
                self.move_device(tenant, &dd.deployment_id, device_id, noartifact, |d| {
                    Ok(d.status == DeviceStatus::Pending)
                })
                .await?;
                return Ok(None);
            };
            let artifact = self.artifact(tenant, &artifact_id).await?;
            let already_installed = !deployment.force_installation
                && dd.status == DeviceStatus::Pending
                && artifact_name == artifact.name;
            if dd.artifact_id.is_none() {
                // Upstream adds to `total_size` only for devices that will download.
                let size = if already_installed { 0 } else { artifact.size };
                self.store
                    .record_fetch(tenant, &dd, &artifact_id, &request, size)
                    .await?;
            }
            if already_installed {
                self.move_device(
                    tenant,
                    &dd.deployment_id,
                    device_id,
                    DeviceStatus::AlreadyInstalled,
                    |d| Ok(d.status == DeviceStatus::Pending),
                )
                .await?;
                return Ok(None);
            }
            return Ok(Some(Instructions {
                deployment,
                artifact,
            }));
        }
        Ok(None)
    }

    /// A device's status report: repeats are no-ops, aborted/decommissioned answer 409.
    pub async fn report_status(
        &self,
        tenant: &str,
        device_id: &str,
        deployment_id: &str,
        status: &str,
        substate: Option<String>,
    ) -> Result<(), Error> {
        let Some(status) = DeviceStatus::parse(status).filter(|s| DEVICE_REPORTABLE.contains(s))
        else {
            return Err(Error::BadRequest(format!("invalid status: {status}")));
        };
        if substate.as_ref().is_some_and(|s| s.len() > 200) {
            return Err(Error::BadRequest(
                "substate: the length must be no more than 200.".into(),
            ));
        }
        let moved = self
            .move_device(tenant, deployment_id, device_id, status, |d| {
                match d.status {
                    DeviceStatus::Aborted => Err(Error::Conflict("Deployment aborted".into())),
                    DeviceStatus::Decommissioned => {
                        Err(Error::Conflict("Device decommissioned".into()))
                    }
                    current => {
                        let changed =
                            current != status || (substate.is_some() && substate != d.substate);
                        if let Some(s) = &substate {
                            d.substate = Some(s.clone());
                        }
                        Ok(changed)
                    }
                }
            })
            .await?;
        moved
            .map(|_| ())
            .ok_or_else(|| Error::NotFound("Resource not found".into()))
    }

    /// A device's log upload (replaces the previous one).
    pub async fn put_log(
        &self,
        tenant: &str,
        device_id: &str,
        deployment_id: &str,
        messages: &[Value],
    ) -> Result<(), Error> {
        if messages.is_empty() {
            return Err(Error::BadRequest("messages: cannot be blank.".into()));
        }
        for m in messages {
            for field in ["timestamp", "level", "message"] {
                if m.get(field).is_none_or(Value::is_null) {
                    return Err(Error::BadRequest(format!("{field}: cannot be blank.")));
                }
            }
        }
        if self
            .store
            .device_deployment(tenant, deployment_id, device_id)
            .await?
            .is_none()
        {
            return Err(Error::NotFound("Deployment not found".into()));
        }
        self.store
            .put_log(
                tenant,
                deployment_id,
                device_id,
                &Value::Array(messages.to_vec()).to_string(),
            )
            .await?;
        self.store
            .set_log_flag(tenant, deployment_id, device_id)
            .await?;
        Ok(())
    }

    /// The log as text: `<timestamp> <level>: <message>` lines.
    pub async fn log_text(
        &self,
        tenant: &str,
        deployment_id: &str,
        device_id: &str,
    ) -> Result<String, Error> {
        let raw = self
            .store
            .get_log(tenant, deployment_id, device_id)
            .await?
            .ok_or_else(|| Error::NotFound("Resource not found".into()))?;
        let messages: Vec<Value> = serde_json::from_str(&raw).unwrap_or_default();
        let mut text = String::new();
        for m in messages {
            let field = |k: &str| {
                m.get(k)
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .unwrap_or_default()
            };
            let timestamp = chrono::DateTime::parse_from_rfc3339(&field("timestamp"))
                .map(|t| {
                    t.with_timezone(&chrono::Utc)
                        .format("%Y-%m-%d %H:%M:%S %z UTC")
                        .to_string()
                })
                .unwrap_or_else(|_| field("timestamp"));
            let message = field("message");
            text.push_str(&format!("{timestamp} {}: {message}", field("level")));
            if !message.ends_with('\n') {
                text.push('\n');
            }
        }
        Ok(text)
    }

    /// A device's deployments, newest first.
    pub async fn device_history(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<Vec<(Deployment, DeviceDeployment)>, Error> {
        let mut history = Vec::new();
        for dd in self
            .store
            .history_for_device(tenant, device_id)
            .await?
            .into_iter()
            .rev()
        {
            if let Some(d) = self.store.get_deployment(tenant, &dd.deployment_id).await? {
                history.push((d, dd));
            }
        }
        Ok(history)
    }
}
