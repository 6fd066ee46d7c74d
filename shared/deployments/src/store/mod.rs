//! What the deployments service needs from storage, as three small traits by resource:
//! [`ArtifactStore`] (artifacts with their uniqueness guards, upload reservations, release
//! metadata), [`DeploymentStore`] (deployments and their counters) and
//! [`DeviceDeploymentStore`] (one device's progress in a deployment, its log, and the device's
//! active and past deployments). [`Store`] is all three. [`dynamo::DynamoStore`] is the
//! DynamoDB table (its access patterns are documented there); [`memory::MemoryStore`] keeps
//! everything in maps, with the same conditions, for unit tests of the service's rules.
//!
//! The conditions both keep: an artifact's (name, depends combination)s and its id are claimed
//! in one all-or-nothing write; a deployment id, an upload id are created once; a device
//! deployment moves only from the status it was read in, together with its deployment's
//! counters; the first fetch, the finish time and a history stamp are recorded once. A write
//! whose condition does not hold fails with [`DynamoError::ConditionFailed`] unless its doc
//! says it is then a no-op.

pub mod dynamo;
pub mod memory;

use std::future::Future;

use mender_aws::dynamo::DynamoError;

use crate::model::{Artifact, Deployment, DeviceDeployment, DeviceStatus, Statistics};

pub use dynamo::DynamoStore;
pub use memory::MemoryStore;

/// DynamoDB transactions take at most 100 items: one is the artifact itself.
pub const MAX_ARTIFACT_COMBINATIONS: usize = 99;

/// A direct upload: the presigned PUT was issued; `complete` moves it to processing, the
/// `process-artifact` step to completed or aborted.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct UploadIntent {
    pub id: String,
    pub status: String,
    pub issued_ts: String,
    pub updated_ts: String,
}

impl UploadIntent {
    /// A new upload of `id`, issued now, in `status`.
    pub fn new(id: &str, status: &str) -> Self {
        let now = mender_http::time::now_string();
        UploadIntent {
            id: id.to_owned(),
            status: status.to_owned(),
            issued_ts: now.clone(),
            updated_ts: now,
        }
    }
}

/// A release's own data (its artifacts are the artifacts with its name).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ReleaseMeta {
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub notes: String,
}

/// Everything the service uses: the three stores in one bound.
pub trait Store: ArtifactStore + DeploymentStore + DeviceDeploymentStore {}

impl<T: ArtifactStore + DeploymentStore + DeviceDeploymentStore> Store for T {}

/// Artifacts, their upload reservations and the releases' own data, by tenant. Every future is
/// `Send` (handlers run on a multi-threaded runtime).
pub trait ArtifactStore: Send + Sync {
    /// Stores the artifact and claims every (name, depends combination) of `combinations`, all
    /// or nothing. `ConditionFailed`: the id or one of the claims is taken.
    fn create_artifact(
        &self,
        tenant: &str,
        artifact: &Artifact,
        combinations: &[String],
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// The artifact, `None` when there is none.
    fn get_artifact(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Artifact>, DynamoError>> + Send;

    /// Every artifact of the tenant, in id order.
    fn list_artifacts(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<Artifact>, DynamoError>> + Send;

    /// Replaces the stored artifact (its claims stay as they are).
    fn put_artifact(
        &self,
        tenant: &str,
        artifact: &Artifact,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Removes the artifact and the claims of `combinations`.
    fn delete_artifact(
        &self,
        tenant: &str,
        artifact: &Artifact,
        combinations: &[String],
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Writes a new upload intent; `ConditionFailed` when its id is taken.
    fn put_intent(
        &self,
        tenant: &str,
        intent: &UploadIntent,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Removes an upload intent (none: nothing happens).
    fn delete_intent(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// The upload intent, `None` when there is none.
    fn get_intent(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<UploadIntent>, DynamoError>> + Send;

    /// Moves an intent from status `from` to `to` at `when`; `ConditionFailed` when it is not
    /// in `from` (or does not exist).
    fn move_intent(
        &self,
        tenant: &str,
        id: &str,
        from: &str,
        to: &str,
        when: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Every release's own data, in name order.
    fn release_metas(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<ReleaseMeta>, DynamoError>> + Send;

    /// Replaces a release's own data.
    fn put_release_meta(
        &self,
        tenant: &str,
        meta: &ReleaseMeta,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Removes a release's own data (none: nothing happens).
    fn delete_release_meta(
        &self,
        tenant: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;
}

/// Deployments with their per-status counters, by tenant. A deployment read back has its
/// `statistics` from the counters (every status present) and its `status` computed from them.
pub trait DeploymentStore: Send + Sync {
    /// Stores a new deployment (its counters from `deployment.statistics`), then `devices`, its
    /// device deployments. `ConditionFailed`: the id exists (no device deployment is written).
    fn create_deployment(
        &self,
        tenant: &str,
        deployment: &Deployment,
        devices: &[DeviceDeployment],
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// The deployment, `None` when there is none.
    fn get_deployment(
        &self,
        tenant: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Deployment>, DynamoError>> + Send;

    /// Every deployment of the tenant, in id order.
    fn list_deployments(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<Deployment>, DynamoError>> + Send;

    /// Replaces the artifact ids of a deployment.
    fn set_deployment_artifacts(
        &self,
        tenant: &str,
        id: &str,
        artifacts: &[String],
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Records the deployment's finish time once: a deployment that is finished already, or
    /// does not exist, is left as it is (no error).
    fn finish_deployment(
        &self,
        tenant: &str,
        id: &str,
        when: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// (created, id, counters) of the deployments `ids` (distinct: a repeated id is an error),
    /// in no particular order; unknown ids are left out.
    fn deployment_statistics(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<(String, String, Statistics)>, DynamoError>> + Send;
}

/// Device deployments (one device in one deployment) and their logs, by tenant. A device
/// deployment is active (listed by [`active_for_device`](Self::active_for_device)) while its
/// status is not terminal.
pub trait DeviceDeploymentStore: Send + Sync {
    /// The device deployment, `None` when there is none.
    fn device_deployment(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> impl Future<Output = Result<Option<DeviceDeployment>, DynamoError>> + Send;

    /// A deployment's device deployments, in device id order.
    fn deployment_devices(
        &self,
        tenant: &str,
        deployment: &str,
    ) -> impl Future<Output = Result<Vec<DeviceDeployment>, DynamoError>> + Send;

    /// The device's unfinished device deployments, oldest first (created, then deployment id).
    fn active_for_device(
        &self,
        tenant: &str,
        device: &str,
    ) -> impl Future<Output = Result<Vec<DeviceDeployment>, DynamoError>> + Send;

    /// Every device deployment of the device, oldest first (created, then deployment id).
    fn history_for_device(
        &self,
        tenant: &str,
        device: &str,
    ) -> impl Future<Output = Result<Vec<DeviceDeployment>, DynamoError>> + Send;

    /// Writes `to` over the stored device deployment if its status is still `from`, and adds
    /// `deployment_delta` (counter attribute `c_<status>`, delta) to its deployment's counters,
    /// both or neither. Fields `to` leaves `None` keep their stored value. `ConditionFailed`:
    /// the status changed meanwhile (or the device deployment is gone).
    fn transition(
        &self,
        tenant: &str,
        to: &DeviceDeployment,
        from: DeviceStatus,
        deployment_delta: &[(&str, i64)],
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// The first fetch of a device deployment: records `artifact_id` and `request` on it and
    /// adds one device and `size` bytes to its deployment, both or neither. A device deployment
    /// that has an artifact already (or does not exist) is left as it is (no error).
    fn record_fetch(
        &self,
        tenant: &str,
        dd: &DeviceDeployment,
        artifact_id: &str,
        request: &str,
        size: u64,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Marks the device deployment as having a log; `ConditionFailed` when it does not exist.
    fn set_log_flag(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// Replaces the device's log of the deployment (`messages`: JSON text).
    fn put_log(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
        messages: &str,
    ) -> impl Future<Output = Result<(), DynamoError>> + Send;

    /// The device's log of the deployment, `None` when there is none.
    fn get_log(
        &self,
        tenant: &str,
        deployment: &str,
        device: &str,
    ) -> impl Future<Output = Result<Option<String>, DynamoError>> + Send;

    /// Stamps `deleted` at `when` on a finished device deployment that has no stamp; false
    /// (nothing written) when it is unfinished, stamped already or gone.
    fn mark_deleted(
        &self,
        tenant: &str,
        dd: &DeviceDeployment,
        when: &str,
    ) -> impl Future<Output = Result<bool, DynamoError>> + Send;
}
