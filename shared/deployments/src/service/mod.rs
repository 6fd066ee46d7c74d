//! deployments operations: artifacts metadata, deployments and their statistics, and the
//! device protocol (`next`, status, log). Status changes are compare-and-set transactions that
//! move the deployment's counters atomically, so statistics stay exact under concurrency.
//! One module per resource: `artifacts`, `rollout` (deployments), `device` (device protocol).
//! The service is generic over its storage ([`Store`](crate::store::Store)); errors become
//! HTTP answers in `crate::http` only.

mod artifacts;
mod device;
mod rollout;

use mender_aws::dynamo::DynamoError;
use serde::Deserialize;
use serde_json::Value;

use crate::model::{Artifact, Deployment};
use crate::store::DynamoStore;

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

/// The deployments service over its storage: the DynamoDB table unless told otherwise (unit
/// tests use [`MemoryStore`](crate::store::MemoryStore)).
#[derive(Clone)]
pub struct Deployments<S = DynamoStore> {
    pub store: S,
}

#[cfg(test)]
mod tests;
