//! deployments: artifacts (metadata; the files live in S3), deployments, the per-device
//! deployment state machine, statistics, and the device's `next` selection (SPEC §5).
//!
//! `model` holds the rules as plain Rust; `store` the DynamoDB table; `service` the operations.

pub mod configuration;
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
