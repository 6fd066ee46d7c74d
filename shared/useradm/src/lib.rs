//! useradm: users, login and logout, personal access tokens and settings (SPEC §2, §10.4).
//!
//! `rules` holds the validation rules as plain functions; `store` is what the service needs
//! from storage (the DynamoDB table in `store::dynamo`, an in-memory map for tests in
//! `store::memory`); `service` combines them into the operations the API and the CLI use;
//! `http` is how their errors are answered.

pub mod http;
pub mod rules;
pub mod service;
pub mod store;

pub use service::{Error, Useradm};
pub use store::{DynamoStore, MemoryStore, Settings, Store, TokenRecord, User};
