//! Artifacts: storing a parsed artifact (unique name x depends), reading, describing and
//! deleting them, and the upload bookkeeping (reserved ids of multipart and direct uploads).

use mender_aws::dynamo::DynamoError;
use serde_json::{json, Value};

use super::{now, Deployments, Error};
use crate::model::{Artifact, DeploymentStatus};
use crate::store::{Store, UploadIntent, MAX_ARTIFACT_COMBINATIONS};

impl<S: Store> Deployments<S> {
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
                && deployment.status != DeploymentStatus::Finished
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
        let in_use =
            self.store.list_deployments(tenant).await?.iter().any(|d| {
                d.status != DeploymentStatus::Finished && d.artifacts.iter().any(|a| a == id)
            });
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

    /// Reserves a multipart upload's artifact id before anything is written to S3: a live
    /// artifact's id or one another upload holds is a 409 (it would overwrite that object).
    pub async fn reserve_artifact_id(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let taken = || Error::Conflict("artifact with the same id already exists".into());
        if self.store.get_artifact(tenant, id).await?.is_some() {
            return Err(taken());
        }
        let intent = UploadIntent::new(id, "uploading");
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
        let intent = UploadIntent::new(&uuid::Uuid::new_v4().to_string(), "pending");
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
