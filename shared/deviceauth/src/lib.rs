//! deviceauth: device identities, auth sets, admission, device tokens and limits (SPEC §3,
//! §10.1-10.3, §10.6).
//!
//! `model` holds the device and its auth sets with the status rules as plain Rust; `store` is
//! what the service needs from storage (the DynamoDB table in `store::dynamo`, an in-memory
//! map for tests in `store::memory`); `service` runs the operations and starts the workflows;
//! `http` is how their errors are answered.

pub mod http;
pub mod model;
pub mod service;
pub mod store;

pub use model::{AuthSet, Device};
pub use service::{AuthRequestOutcome, Deviceauth, Error};
pub use store::{DynamoStore, MemoryStore, Store};
