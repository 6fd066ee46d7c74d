//! deployments operations: artifacts metadata, deployments and their statistics, and the
//! device protocol (`next`, status, log). Status changes are compare-and-set transactions that
//! move the deployment's counters atomically, so statistics stay exact under concurrency.

use mender_aws::dynamo::DynamoError;
use mender_aws::retry::{lost_race, Attempts};
use mender_http::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{
    choose_artifact, empty_statistics, is_terminal, Artifact, Deployment, DeviceDeployment,
    DEVICE_REPORTABLE,
};
use crate::store::{Store, MAX_ARTIFACT_COMBINATIONS};

const MAX_ATTEMPTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Duplicate artifact: 409 with `metadata.conflict`.
    #[error("an artifact with the same name and depends already exists")]
    ArtifactExists(Value),
    #[error("{0}")]
    Unprocessable(String),
    /// Releases used by unfinished deployments: 409 with `active_deployments`.
    #[error("release(s) used in active deployment")]
    ReleasesInUse(Vec<String>),
    #[error("storage: {0}")]
    Storage(#[from] DynamoError),
    #[error("{0}")]
    Internal(String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::ArtifactExists(conflict) => {
                ApiError::conflict("an artifact with the same name and depends already exists")
                    .with_extra("metadata", json!({ "conflict": conflict }))
            }
            Error::Unprocessable(m) => ApiError::unprocessable(m),
            Error::ReleasesInUse(ids) => ApiError::conflict("release(s) used in active deployment")
                .with_extra("active_deployments", json!(ids)),
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
        }
    }
}

/// Every attempt to move a device deployment lost its race.
fn too_many_updates() -> Error {
    Error::Internal("too many concurrent updates of a device deployment".into())
}

fn now() -> String {
    mender_http::time::now_string()
}

/// `POST /deployments` body.
#[derive(Debug, Deserialize, Default)]
pub struct NewDeployment {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub artifact_name: String,
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    #[serde(default)]
    pub all_devices: bool,
    #[serde(default)]
    pub force_installation: bool,
}

/// What a device is told to install.
#[derive(Debug)]
pub struct Instructions {
    pub deployment: Deployment,
    pub artifact: Artifact,
}

#[derive(Clone)]
pub struct Deployments {
    pub store: Store,
}

impl Deployments {
    // ----- artifacts -----

    /// Stores a parsed artifact; 409 on the same name with an overlapping depends combination.
    pub async fn add_artifact(
        &self,
        tenant: &str,
        mut artifact: Artifact,
    ) -> Result<Artifact, Error> {
        artifact.artifact_depends.insert(
            "device_type".into(),
            json!(artifact.device_types_compatible),
        );
        let combos = artifact
            .depends_combinations(MAX_ARTIFACT_COMBINATIONS)
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "too many depends combinations (max {MAX_ARTIFACT_COMBINATIONS})"
                ))
            })?;
        match self.store.create_artifact(tenant, &artifact, &combos).await {
            Ok(()) => {}
            Err(DynamoError::ConditionFailed) => {
                let existing = self.store.list_artifacts(tenant).await?;
                let clash = existing
                    .iter()
                    .filter(|a| a.name == artifact.name)
                    .filter_map(|a| a.depends_combinations(MAX_ARTIFACT_COMBINATIONS))
                    .flatten()
                    .find(|c| combos.contains(c))
                    .and_then(|c| serde_json::from_str(&c).ok())
                    .unwrap_or(Value::Null);
                return Err(Error::ArtifactExists(clash));
            }
            Err(e) => return Err(e.into()),
        }
        for mut deployment in self.store.list_deployments(tenant).await? {
            if deployment.artifact_name == artifact.name
                && deployment.finished.is_none()
                && deployment.status != "finished"
            {
                deployment.artifacts.push(artifact.id.clone());
                self.store
                    .set_deployment_artifacts(tenant, &deployment.id, &deployment.artifacts)
                    .await?;
            }
        }
        Ok(artifact)
    }

    /// Upstream's `IsArtifactUnique` (the generate request's check): false when an artifact
    /// named `name` supports one of `device_types` and depends on nothing but the device type.
    pub async fn is_artifact_unique(
        &self,
        tenant: &str,
        name: &str,
        device_types: &[String],
    ) -> Result<bool, Error> {
        let clash = self.store.list_artifacts(tenant).await?.iter().any(|a| {
            a.name == name
                && a.device_types_compatible
                    .iter()
                    .any(|t| device_types.contains(t))
                && a.artifact_depends.keys().all(|k| k == "device_type")
        });
        Ok(!clash)
    }

    pub async fn artifact(&self, tenant: &str, id: &str) -> Result<Artifact, Error> {
        self.store
            .get_artifact(tenant, id)
            .await?
            .ok_or_else(|| Error::NotFound("Resource not found".into()))
    }

    /// All artifacts, sorted by name then modified time.
    pub async fn artifacts(&self, tenant: &str) -> Result<Vec<Artifact>, Error> {
        let mut all = self.store.list_artifacts(tenant).await?;
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.modified.cmp(&b.modified)));
        Ok(all)
    }

    pub async fn set_description(
        &self,
        tenant: &str,
        id: &str,
        description: String,
    ) -> Result<(), Error> {
        let mut artifact = self.artifact(tenant, id).await?;
        if description.len() > 4096 {
            return Err(Error::BadRequest(
                "description: the length must be no more than 4096.".into(),
            ));
        }
        artifact.description = description;
        artifact.modified = now();
        Ok(self.store.put_artifact(tenant, &artifact).await?)
    }

    /// Deletes the artifact's metadata (the caller removes the object); refused while an
    /// unfinished deployment uses it.
    pub async fn delete_artifact(&self, tenant: &str, id: &str) -> Result<Artifact, Error> {
        let artifact = self.artifact(tenant, id).await?;
        let in_use = self
            .store
            .list_deployments(tenant)
            .await?
            .iter()
            .any(|d| d.status != "finished" && d.artifacts.iter().any(|a| a == id));
        if in_use {
            return Err(Error::Conflict(
                "Artifact is used in active deployment".into(),
            ));
        }
        let combos = artifact
            .depends_combinations(MAX_ARTIFACT_COMBINATIONS)
            .unwrap_or_default();
        self.store
            .delete_artifact(tenant, &artifact, &combos)
            .await?;
        Ok(artifact)
    }

    // ----- deployments -----

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
                d.status != "finished"
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
        statistics.insert("pending".into(), sorted_targets.len() as i64);
        let deployment = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            name: request.name.clone(),
            artifact_name: request.artifact_name.clone(),
            created: created.clone(),
            finished: None,
            status: "pending".into(),
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
                status: "pending".into(),
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
        devices.sort_by(|a, b| {
            crate::model::status_rank(&a.status)
                .cmp(&crate::model::status_rank(&b.status))
                .then(a.device_id.cmp(&b.device_id))
        });
        Ok(devices)
    }

    /// Records the finish time when every target reached a terminal status.
    async fn settle(&self, tenant: &str, deployment_id: &str) -> Result<(), Error> {
        if let Some(deployment) = self.store.get_deployment(tenant, deployment_id).await? {
            if deployment.finished.is_none() && deployment.computed_status() == "finished" {
                self.store
                    .finish_deployment(tenant, deployment_id, &now())
                    .await?;
            }
        }
        Ok(())
    }

    /// Moves one device deployment to `status` with its counters; retried when it changed
    /// meanwhile. `update` adjusts the other fields. Returns the stored device deployment.
    async fn move_device<F>(
        &self,
        tenant: &str,
        deployment_id: &str,
        device_id: &str,
        status: &str,
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
            next.status = status.to_owned();
            let stamp = now();
            if current.status == "pending" && status != "pending" && next.started.is_none() {
                next.started = Some(stamp.clone());
            }
            if is_terminal(status) {
                next.finished = Some(stamp);
            }
            let old_counter = format!("c_{}", current.status);
            let new_counter = format!("c_{status}");
            let delta: Vec<(&str, i64)> = if current.status == status {
                vec![]
            } else {
                vec![(old_counter.as_str(), -1), (new_counter.as_str(), 1)]
            };
            let written = self
                .store
                .transition(tenant, &next, &current.status, &delta)
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
        let Some(deployment) = deployment.filter(|d| d.status != "finished") else {
            return Err(Error::Unprocessable("Deployment already finished".into()));
        };
        for dd in self.store.deployment_devices(tenant, id).await? {
            if !is_terminal(&dd.status) {
                self.move_device(tenant, id, &dd.device_id, "aborted", |d| {
                    Ok(!is_terminal(&d.status))
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
        status: &str,
    ) -> Result<(), Error> {
        for dd in self.store.active_for_device(tenant, device_id).await? {
            self.move_device(tenant, &dd.deployment_id, device_id, status, |d| {
                Ok(!is_terminal(&d.status))
            })
            .await?;
        }
        Ok(())
    }

    // ----- the device protocol -----

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
                if dd.artifact_id.is_some() && first != &request && dd.status != "pending" {
                    self.move_device(tenant, &dd.deployment_id, device_id, "failure", |d| {
                        Ok(!is_terminal(&d.status))
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
                self.move_device(tenant, &dd.deployment_id, device_id, "noartifact", |d| {
                    Ok(d.status == "pending")
                })
                .await?;
                return Ok(None);
            };
            let artifact = self.artifact(tenant, &artifact_id).await?;
            let already_installed = !deployment.force_installation
                && dd.status == "pending"
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
                    "already-installed",
                    |d| Ok(d.status == "pending"),
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
        if !DEVICE_REPORTABLE.contains(&status) {
            return Err(Error::BadRequest(format!("invalid status: {status}")));
        }
        if substate.as_ref().is_some_and(|s| s.len() > 200) {
            return Err(Error::BadRequest(
                "substate: the length must be no more than 200.".into(),
            ));
        }
        let moved = self
            .move_device(tenant, deployment_id, device_id, status, |d| {
                match d.status.as_str() {
                    "aborted" => Err(Error::Conflict("Deployment aborted".into())),
                    "decommissioned" => Err(Error::Conflict("Device decommissioned".into())),
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

impl Deployments {
    /// Reserves a multipart upload's artifact id before anything is written to S3: a live
    /// artifact's id or one another upload holds is a 409 (it would overwrite that object).
    pub async fn reserve_artifact_id(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let taken = || Error::Conflict("artifact with the same id already exists".into());
        if self.store.get_artifact(tenant, id).await?.is_some() {
            return Err(taken());
        }
        let intent = crate::store::UploadIntent::new(id, "uploading");
        match self.store.put_intent(tenant, &intent).await {
            Ok(()) => Ok(()),
            Err(DynamoError::ConditionFailed) => Err(taken()),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends a multipart upload's reservation: stored (`completed`) or released when failed.
    pub async fn release_artifact_id(
        &self,
        tenant: &str,
        id: &str,
        stored: bool,
    ) -> Result<(), Error> {
        if stored {
            self.store
                .move_intent(tenant, id, "uploading", "completed", &now())
                .await
                .or_else(|e| match e {
                    DynamoError::ConditionFailed => Ok(()),
                    e => Err(e),
                })?;
        } else {
            self.store.delete_intent(tenant, id).await?;
        }
        Ok(())
    }

    /// Records a direct upload's intent (status `pending`) and returns its id.
    pub async fn start_direct_upload(&self, tenant: &str) -> Result<String, Error> {
        let intent = crate::store::UploadIntent::new(&uuid::Uuid::new_v4().to_string(), "pending");
        self.store.put_intent(tenant, &intent).await?;
        Ok(intent.id)
    }

    /// `complete`: a pending intent becomes `processing`; anything else is 404.
    pub async fn complete_direct_upload(&self, tenant: &str, id: &str) -> Result<(), Error> {
        match self
            .store
            .move_intent(tenant, id, "pending", "processing", &now())
            .await
        {
            Ok(()) => Ok(()),
            Err(DynamoError::ConditionFailed) => Err(Error::NotFound("Resource not found".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends a processing intent (`completed` or `aborted`); repeated calls are no-ops.
    pub async fn finish_direct_upload(
        &self,
        tenant: &str,
        id: &str,
        status: &str,
    ) -> Result<(), Error> {
        match self
            .store
            .move_intent(tenant, id, "processing", status, &now())
            .await
        {
            Ok(()) | Err(DynamoError::ConditionFailed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The intent's status, if the upload exists.
    pub async fn direct_upload_status(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<String>, Error> {
        Ok(self.store.get_intent(tenant, id).await?.map(|i| i.status))
    }
}
