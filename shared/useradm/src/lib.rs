//! useradm: users, login and logout, personal access tokens and settings (SPEC §2, §10.4).
//!
//! `rules` holds the validation rules as plain functions; `store` is the DynamoDB table;
//! `service` combines them into the operations the API and the CLI use.

pub mod rules;
pub mod service;
pub mod store;

pub use service::{Error, Useradm};
pub use store::{Settings, TokenRecord, User};
