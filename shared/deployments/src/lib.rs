//! deployments: artifacts (metadata; the files live in S3), deployments, the per-device
//! deployment state machine, statistics, and the device's `next` selection (SPEC §5).
//!
//! `model` holds the rules as plain Rust; `store` what the service needs from storage (the
//! DynamoDB table in `store::dynamo`, in-memory maps for tests in `store::memory`); `service`
//! the operations (with `configuration`, `operator` and `releases`), `http` how their errors
//! are answered.

pub mod configuration;
pub mod http;
pub mod listing;
pub mod model;
pub mod operator;
pub mod query;
pub mod releases;
pub mod service;
pub mod software;
pub mod store;

/// Largest artifact, uploaded either way (upstream's `storage.max_image_size`).
pub const MAX_ARTIFACT_SIZE: u64 = 10 * 1024 * 1024 * 1024;

pub use model::{Artifact, Deployment, DeviceDeployment};
pub use service::{Deployments, Error};
pub use store::{DynamoStore, MemoryStore, Store};
