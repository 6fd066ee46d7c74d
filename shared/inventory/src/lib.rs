//! inventory: device attributes by scope, tags, groups and the v1 device list (SPEC §4.1-4.3,
//! §4.5). `model` holds the attribute rules as plain Rust, `store` the DynamoDB table,
//! `service` the operations.

pub mod model;
pub mod service;
pub mod store;

pub use model::{AttributeIn, InventoryDevice};
pub use service::{Error, Inventory};
