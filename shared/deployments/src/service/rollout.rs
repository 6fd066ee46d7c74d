//! Deployments: creating one for its target devices, reading them with their statistics,
//! moving a device deployment (compare-and-set with its counters), settling and aborting.

use mender_aws::retry::{lost_race, Attempts};

use super::{now, too_many_updates, Deployments, Error, NewDeployment, MAX_ATTEMPTS};
use crate::model::{
    empty_statistics, Deployment, DeploymentStatus, DeviceDeployment, DeviceStatus,
};
use crate::store::Store;

impl<S: Store> Deployments<S> {
    /// Creates a deployment for `targets` (resolved by the caller for groups / all devices).
    pub async fn create_deployment(
        &self,
        tenant: &str,
        request: &NewDeployment,
        targets: Vec<String>,
        groups: Vec<String>,
    ) -> Result<Deployment, Error> {
        if request.name.is_empty() || request.name.len() > 256 {
            return Err(Error::BadRequest(
                "Invalid deployments definition: name: cannot be blank.".into(),
            ));
        }
        if request.artifact_name.is_empty() || request.artifact_name.len() > 4096 {
            return Err(Error::BadRequest(
                "Invalid deployments definition: artifact_name: cannot be blank.".into(),
            ));
        }
        if targets.is_empty() {
            return Err(Error::BadRequest("No devices for the deployment".into()));
        }
        let artifacts: Vec<String> = self
            .store
            .list_artifacts(tenant)
            .await?
            .into_iter()
            .filter(|a| a.name == request.artifact_name)
            .map(|a| a.id)
            .collect();
        if artifacts.is_empty() {
            return Err(Error::Unprocessable(
                "No artifact for the deployment".into(),
            ));
        }
        let mut sorted_targets = targets.clone();
        sorted_targets.sort();
        sorted_targets.dedup();
        let duplicate = self
            .store
            .list_deployments(tenant)
            .await?
            .into_iter()
            .any(|d| {
                let mut existing = d.device_list.clone();
                existing.sort();
                d.status != DeploymentStatus::Finished
                    && d.name == request.name
                    && d.artifact_name == request.artifact_name
                    && d.force_installation == request.force_installation
                    && d.all_devices == request.all_devices
                    && existing == sorted_targets
            });
        if duplicate {
            return Err(Error::Conflict(
                "Invalid deployment definition: there is already an active deployment with the same parameters".into(),
            ));
        }
        let created = now();
        let mut statistics = empty_statistics();
        statistics.insert(
            DeviceStatus::Pending.to_string(),
            sorted_targets.len() as i64,
        );
        let deployment = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            name: request.name.clone(),
            artifact_name: request.artifact_name.clone(),
            created: created.clone(),
            finished: None,
            status: DeploymentStatus::Pending,
            artifacts,
            max_devices: sorted_targets.len() as i64,
            device_count: 0,
            groups,
            force_installation: request.force_installation,
            all_devices: request.all_devices,
            total_size: 0,
            kind: String::new(),
            configuration: None,
            retries: 0,
            statistics,
            device_list: sorted_targets.clone(),
        };
        let device_deployments: Vec<DeviceDeployment> = sorted_targets
            .iter()
            .map(|device| DeviceDeployment {
                id: uuid::Uuid::new_v4().to_string(),
                deployment_id: deployment.id.clone(),
                device_id: device.clone(),
                status: DeviceStatus::Pending,
                created: created.clone(),
                ..Default::default()
            })
            .collect();
        self.store
            .create_deployment(tenant, &deployment, &device_deployments)
            .await?;
        Ok(deployment)
    }

    pub async fn deployment(&self, tenant: &str, id: &str) -> Result<Deployment, Error> {
        self.store
            .get_deployment(tenant, id)
            .await?
            .ok_or_else(|| Error::NotFound("Resource not found".into()))
    }

    /// All deployments, newest first.
    pub async fn deployments(&self, tenant: &str) -> Result<Vec<Deployment>, Error> {
        let mut all = self.store.list_deployments(tenant).await?;
        all.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// A deployment's device deployments in upstream's order (status rank, device id).
    pub async fn deployment_devices(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Vec<DeviceDeployment>, Error> {
        self.deployment(tenant, id).await?;
        let mut devices = self.store.deployment_devices(tenant, id).await?;
        devices.sort_by(|a, b| a.status.cmp(&b.status).then(a.device_id.cmp(&b.device_id)));
        Ok(devices)
    }

    /// Records the finish time when every target reached a terminal status.
    async fn settle(&self, tenant: &str, deployment_id: &str) -> Result<(), Error> {
        if let Some(deployment) = self.store.get_deployment(tenant, deployment_id).await? {
            if deployment.finished.is_none()
                && deployment.computed_status() == DeploymentStatus::Finished
            {
                self.store
                    .finish_deployment(tenant, deployment_id, &now())
                    .await?;
            }
        }
        Ok(())
    }

    /// Moves one device deployment to `status` with its counters; retried when it changed
    /// meanwhile. `update` adjusts the other fields. Returns the stored device deployment.
    pub(super) async fn move_device<F>(
        &self,
        tenant: &str,
        deployment_id: &str,
        device_id: &str,
        status: DeviceStatus,
        mut update: F,
    ) -> Result<Option<DeviceDeployment>, Error>
    where
        F: FnMut(&mut DeviceDeployment) -> Result<bool, Error>,
    {
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let Some(current) = self
                .store
                .device_deployment(tenant, deployment_id, device_id)
                .await?
            else {
                return Ok(None);
            };
            let mut next = current.clone();
            if !update(&mut next)? {
                return Ok(Some(current));
            }
            next.status = status;
            let stamp = now();
            if current.status == DeviceStatus::Pending
                && status != DeviceStatus::Pending
                && next.started.is_none()
            {
                next.started = Some(stamp.clone());
            }
            if status.is_terminal() {
                next.finished = Some(stamp);
            }
            let old_counter = current.status.counter();
            let new_counter = status.counter();
            let delta: Vec<(&str, i64)> = if current.status == status {
                vec![]
            } else {
                vec![(old_counter.as_str(), -1), (new_counter.as_str(), 1)]
            };
            let written = self
                .store
                .transition(tenant, &next, current.status, &delta)
                .await;
            if lost_race(written)? {
                continue;
            }
            if current.status != status {
                self.settle(tenant, deployment_id).await?;
            }
            return Ok(Some(next));
        }
        Err(too_many_updates())
    }

    /// `PUT /deployments/{id}/status` with `aborted`.
    pub async fn abort(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let deployment = self.store.get_deployment(tenant, id).await?;
        let Some(deployment) = deployment.filter(|d| d.status != DeploymentStatus::Finished) else {
            return Err(Error::Unprocessable("Deployment already finished".into()));
        };
        for dd in self.store.deployment_devices(tenant, id).await? {
            if !dd.status.is_terminal() {
                self.move_device(tenant, id, &dd.device_id, DeviceStatus::Aborted, |d| {
                    Ok(!d.status.is_terminal())
                })
                .await?;
            }
        }
        self.store
            .finish_deployment(tenant, &deployment.id, &now())
            .await?;
        Ok(())
    }

    /// Ends every unfinished device deployment of a device with `status` (`aborted` for the
    /// management abort, `decommissioned` for the decommission workflow). Idempotent.
    pub async fn end_device_deployments(
        &self,
        tenant: &str,
        device_id: &str,
        status: DeviceStatus,
    ) -> Result<(), Error> {
        for dd in self.store.active_for_device(tenant, device_id).await? {
            self.move_device(tenant, &dd.deployment_id, device_id, status, |d| {
                Ok(!d.status.is_terminal())
            })
            .await?;
        }
        Ok(())
    }
}
