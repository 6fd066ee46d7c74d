//! The black-box tests of the whole stack, one test binary (`black_box`) with one module per
//! area; the harness they share is the `black_box_tests` library (`tests/src`). cargo-nextest
//! runs each test in its own process, which some modules rely on (`faults` points the
//! emulator endpoint variables at its proxies), so run them with `cargo nextest run`, e.g.
//! `cargo nextest run -p black-box-tests -E 'test(/^useradm::/)'` for one module.

mod artifacts_api;
mod bad_input;
mod deployment_statistics;
mod deployments_e2e;
mod deployments_operator;
mod device_admission;
mod deviceauth;
mod deviceconfig;
mod deviceconnect;
mod deviceconnect_hardening;
mod direct_upload;
mod events;
mod faults;
mod fleet_counters;
mod generate_artifact;
mod input_limits;
mod inventory;
mod inventory_v2;
mod iot_manager;
mod releases;
mod reset;
mod template;
mod upstream_semantics;
mod useradm;
mod workflows;
