//! Helpers of the infrastructure checks (`tests/template.rs`, `tests/events.rs`): the
//! repository's files, the parsed template, and services for driving routers offline.

use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_dynamodb::config::Region;
use local_stack::template::{self, FunctionDef, Resources};
use local_stack::ApiFunction;
use mender_config::{Config, QueueUrls};
use services::Services;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `infra/template.yaml`, parsed (or the file `MENDER_TEMPLATE` names, to try the checks on a
/// changed copy).
pub fn template() -> anyhow::Result<Resources> {
    let path = std::env::var_os("MENDER_TEMPLATE")
        .map(PathBuf::from)
        .unwrap_or_else(local_stack::default_template);
    template::load(&path)
}

/// The text of `events/<name>`.
pub fn event_text(name: &str) -> anyhow::Result<String> {
    let path = root().join("events").join(name);
    std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The template function whose `CodeUri` is `../functions/<crate_name>`.
pub fn function_of<'a>(resources: &'a Resources, crate_name: &str) -> Option<&'a FunctionDef> {
    resources
        .functions
        .iter()
        .find(|f| f.crate_name() == Some(crate_name))
}

/// The API function crate serving `(method, path)` according to the template.
pub fn api_function_for(
    resources: &Resources,
    method: &str,
    path: &str,
) -> anyhow::Result<&'static ApiFunction> {
    let function = resources
        .functions
        .iter()
        .find(|f| f.http_routes.iter().any(|(m, p)| m == method && p == path))
        .ok_or_else(|| anyhow::anyhow!("the template routes {method} {path} to no function"))?;
    let name = function.crate_name().unwrap_or_default();
    local_stack::API_FUNCTIONS
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| anyhow::anyhow!("{} ({name}) is not an API function", function.logical_id))
}

/// Services whose stores point nowhere: enough for requests that stop at authentication, so
/// the routing checks need no emulator.
pub fn offline_services() -> anyhow::Result<Services> {
    let config = Config::with_resources(
        ["deviceauth", "useradm", "inventory"],
        QueueUrls::default(),
        mender_tokens::Keys::generate_rsa_pem()?,
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .build(),
    );
    let publisher = Arc::new(workflows::RecordingPublisher::default());
    let s3 = mender_aws::aws_sdk_s3::Client::from_conf(
        mender_aws::aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(mender_aws::aws_sdk_s3::config::Region::new("us-east-1"))
            .build(),
    );
    let storage = mender_aws::s3::ArtifactStorage {
        client: s3,
        bucket: "artifacts".into(),
    };
    Ok(Services::with_parts(config, dynamodb, storage, publisher)?)
}
