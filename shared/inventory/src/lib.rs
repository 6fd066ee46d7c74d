//! inventory: device attributes by scope, tags, groups, the v1 device list and the v2 search,
//! statistics and attribute names (SPEC §4.1-4.5). `model` holds the attribute rules as plain
//! Rust, `search` the v2 query language, `listing` how a list is read at fleet scale, `store`
//! what the service needs from storage (the DynamoDB table in `store::dynamo`, an in-memory
//! map for tests in `store::memory`), `service` the operations, `http`
//! how their errors are answered.

pub mod http;
pub mod listing;
pub mod model;
pub mod search;
pub mod service;
pub mod store;

pub use model::{AttributeIn, InventoryDevice};
pub use service::{Error, Inventory};
pub use store::{DynamoStore, MemoryStore, Store};
