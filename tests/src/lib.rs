//! Black-box tests of the whole stack: see tests/black_box/ (one test binary, one module per
//! area). This library is the harness they share: real Debian clients driven as child
//! processes, a management API client, scripted devices, deviceconnect websockets, multipart
//! forms and artifacts; a helper two modules need belongs here, not in a copy.

pub mod artifact;
pub mod device;
pub mod form;
pub mod infra;
pub mod mender_cli;
pub mod mender_client;
pub mod mgmt;
#[cfg(test)]
mod selftest;
pub mod stack;
pub mod tempdir;
pub mod ws;

pub use mender_cli::{ensure_mender_cli, mender_cli_available, CliOutput, MenderCli};
pub use mender_client::{mender_available, ClientOptions, MenderClient, FIRST_REQUEST_WAIT};
pub use mgmt::{json_of, wait_for, Mgmt};
pub use stack::TestStack;
