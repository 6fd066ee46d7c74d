//! The template checks: `infra/template.yaml` and the code describe the same system.
//!
//! * every template function has a crate (`CodeUri: ../functions/<crate>` with a `Cargo.toml`
//!   and the `build-<LogicalId>` target `sam build` runs), and every crate in `functions/` has a
//!   template function;
//! * each API function's `HttpApi` events are exactly its crate's `routes()`, its real router
//!   answers each of them (never the 404/405 fallback), and the local server serves exactly
//!   the template's routes;
//! * each workflow step is triggered by its own queue;
//! * each function's IAM policies reach exactly the tables, queues and buckets listed in
//!   [`ACCESS`] (no `*`, no hand-written ARNs, no managed policies); so does the task role of
//!   each container service ([`CONTAINER_TASK_ROLES`]).
//!
//! `MENDER_TEMPLATE=/path/to/copy.yaml` runs the checks on another template.
//!
//! No emulator needed.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use black_box_tests::infra::{function_of, offline_services, root, template};
use local_stack::resources::queue_logical_id;
use local_stack::template::FunctionDef;
use local_stack::{workflow_functions, API_FUNCTIONS};
use tower::ServiceExt;

/// What each function's IAM policies may name: the tables of the services its code uses, the
/// queues of the workflows it starts and the buckets it reads or writes. The SQS event-source permissions of the workflow
/// steps come from their `SQS` events, not from `Policies`.
const ACCESS: &[(&str, &[&str])] = &[
    // direct uploads: the deployments table and the uploaded objects
    ("process-artifact", &["DeploymentsTable", "ArtifactsBucket"]),
    // generate requests: the deployments table, the raw file and the artifact object
    (
        "generate-artifact",
        &["DeploymentsTable", "ArtifactsBucket"],
    ),
    // useradm only
    ("useradm-management", &["UseradmTable"]),
    // deviceauth; starts provisioning, status and identity workflows
    (
        "deviceauth-devices",
        &[
            "DeviceauthTable",
            "ProvisionDeviceQueue",
            "UpdateDeviceStatusQueue",
            "UpdateDeviceInventoryQueue",
        ],
    ),
    // deviceauth, useradm (user token check); starts every device workflow
    (
        "deviceauth-management",
        &[
            "DeviceauthTable",
            "UseradmTable",
            "ProvisionDeviceQueue",
            "UpdateDeviceStatusQueue",
            "UpdateDeviceInventoryQueue",
            "DecommissionDeviceQueue",
        ],
    ),
    // inventory, deviceauth (device token check, check-in); starts the check-in update
    (
        "inventory-devices",
        &[
            "InventoryTable",
            "DeviceauthTable",
            "UpdateDeviceInventoryQueue",
        ],
    ),
    // inventory, useradm (user token check)
    ("inventory-management", &["InventoryTable", "UseradmTable"]),
    // workflow steps: inventory and deviceauth domain code; provision and decommission also
    // create and delete the device's deviceconnect and deviceconfig records
    (
        "provision-device",
        &[
            "InventoryTable",
            "DeviceauthTable",
            "DeviceconnectTable",
            "DeviceconfigTable",
        ],
    ),
    (
        "update-device-status",
        &["InventoryTable", "DeviceauthTable"],
    ),
    (
        "update-device-inventory",
        &["InventoryTable", "DeviceauthTable"],
    ),
    (
        "decommission-device",
        &[
            "InventoryTable",
            "DeviceauthTable",
            "DeploymentsTable",
            "DeviceconnectTable",
            "DeviceconfigTable",
        ],
    ),
    // deployments, inventory (targets), useradm (user token check), the artifacts bucket
    (
        "deployments-management",
        &[
            "DeploymentsTable",
            "InventoryTable",
            "UseradmTable",
            "ArtifactsBucket",
            "ProcessArtifactQueue",
            "GenerateArtifactQueue",
        ],
    ),
    // deployments, deviceauth (device token check, check-in), the artifacts bucket (download
    // links); starts the check-in update
    (
        "deployments-devices",
        &[
            "DeploymentsTable",
            "DeviceauthTable",
            "ArtifactsBucket",
            "UpdateDeviceInventoryQueue",
        ],
    ),
    // deviceconfig, deviceauth (device token check, check-in); starts the check-in update
    (
        "deviceconfig-devices",
        &[
            "DeviceconfigTable",
            "DeviceauthTable",
            "UpdateDeviceInventoryQueue",
        ],
    ),
    // deviceconfig, deployments (the configuration deployment, in process), inventory (its
    // groups), useradm (user token check)
    (
        "deviceconfig-management",
        &[
            "DeviceconfigTable",
            "DeploymentsTable",
            "InventoryTable",
            "UseradmTable",
        ],
    ),
    // the container (task role): its table, deviceauth and useradm (device and user token
    // checks), the artifacts bucket (session recordings under deviceconnect/recordings/)
    (
        "deviceconnect",
        &[
            "DeviceconnectTable",
            "DeviceauthTable",
            "UseradmTable",
            "ArtifactsBucket",
        ],
    ),
];

/// Crates in `functions/` that are not template functions: `deviceconnect` is the long-running
/// container service (websockets + NATS, its own Dockerfile; an ECS service in the template,
/// created when `DeviceconnectImageUri` is set); it has no `HttpApi` routes or Lambda function,
/// so the route and crate checks skip it (the local server merges its router next to the API
/// functions').
const CONTAINER_SERVICES: &[&str] = &["deviceconnect"];

/// The IAM role (`AWS::IAM::Role`, inline `Policies`) each container service's tasks run as;
/// checked against [`ACCESS`] like the functions' policies.
const CONTAINER_TASK_ROLES: &[(&str, &str)] = &[("deviceconnect", "DeviceconnectTaskRole")];

/// Each container task role's policies as a [`FunctionDef`] of its crate, so the same checks
/// apply (managed policies count as literals, refused as a function's would be).
fn container_task_roles(
    resources: &local_stack::template::Resources,
) -> anyhow::Result<Vec<FunctionDef>> {
    CONTAINER_TASK_ROLES
        .iter()
        .map(|(crate_name, role)| {
            let def = resources
                .roles
                .iter()
                .find(|r| r.logical_id == *role)
                .ok_or_else(|| anyhow::anyhow!("the template has no AWS::IAM::Role {role}"))?;
            Ok(FunctionDef {
                logical_id: def.logical_id.clone(),
                code_uri: format!("../functions/{crate_name}"),
                policy_refs: def.policy_refs.clone(),
                policy_literals: def.policy_literals.clone(),
                ..Default::default()
            })
        })
        .collect()
}

/// The Lambda function crates in `functions/` (every directory there but [`CONTAINER_SERVICES`]).
fn function_dirs() -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("functions"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if CONTAINER_SERVICES.contains(&name.as_str()) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            names.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

#[test]
fn every_template_function_has_a_crate_and_every_crate_a_template_function() -> anyhow::Result<()> {
    let resources = template()?;
    let mut problems = Vec::new();
    let mut crates = BTreeSet::new();
    for f in &resources.functions {
        let Some(name) = f.crate_name() else {
            problems.push(format!(
                "{}: CodeUri {:?} is not ../functions/<crate>",
                f.logical_id, f.code_uri
            ));
            continue;
        };
        if !crates.insert(name.to_owned()) {
            problems.push(format!("{}: crate {name} is used twice", f.logical_id));
        }
        let dir = root().join("functions").join(name);
        if !dir.join("Cargo.toml").is_file() {
            problems.push(format!(
                "{}: functions/{name}/Cargo.toml does not exist",
                f.logical_id
            ));
        }
        if f.build_method.as_deref() != Some("makefile") {
            problems.push(format!(
                "{}: Metadata.BuildMethod must be makefile",
                f.logical_id
            ));
        }
        let target = format!("build-{}:", f.logical_id);
        let makefile = std::fs::read_to_string(dir.join("Makefile")).unwrap_or_default();
        if !makefile.lines().any(|l| l.starts_with(&target)) {
            problems.push(format!(
                "{}: functions/{name}/Makefile has no target {target} (see infra/function.mk)",
                f.logical_id
            ));
        }
    }
    for dir in function_dirs()? {
        if !crates.contains(&dir) {
            problems.push(format!(
                "functions/{dir} has no function in infra/template.yaml"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[test]
fn template_routes_are_exactly_the_routes_of_each_crate() -> anyhow::Result<()> {
    let resources = template()?;
    let mut problems = Vec::new();
    for f in &resources.functions {
        let name = f.crate_name().unwrap_or_default();
        let api = API_FUNCTIONS.iter().find(|a| a.name == name);
        let in_template: BTreeSet<(String, String)> = f.http_routes.iter().cloned().collect();
        if in_template.len() != f.http_routes.len() {
            problems.push(format!("{}: a route is listed twice", f.logical_id));
        }
        let Some(api) = api else {
            if !f.http_routes.is_empty() {
                problems.push(format!(
                    "{}: has HttpApi events but {name} is not in local_stack::API_FUNCTIONS",
                    f.logical_id
                ));
            }
            continue;
        };
        let in_code: BTreeSet<(String, String)> = mender_http::routes::signatures(&(api.routes)())
            .into_iter()
            .collect();
        for (m, p) in in_code.difference(&in_template) {
            problems.push(format!(
                "{name} serves {m} {p}, which {} has no HttpApi event for",
                f.logical_id
            ));
        }
        for (m, p) in in_template.difference(&in_code) {
            problems.push(format!(
                "{} routes {m} {p} to {name}, whose routes() lacks it",
                f.logical_id
            ));
        }
    }
    for api in API_FUNCTIONS {
        if function_of(&resources, api.name).is_none() {
            problems.push(format!(
                "API function {} has no function in infra/template.yaml",
                api.name
            ));
        }
    }
    if let Err(e) = local_stack::check_routes(&resources) {
        problems.push(format!("local server: {e}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// Drives each crate's real router (as Lambda runs it) with every route the template sends it:
/// without credentials each must reach its handler (401, 400, 415...), never the 404/405
/// fallback. This also covers the code's own list: a route listed but not served fails here.
#[tokio::test]
async fn every_template_route_reaches_a_handler() -> anyhow::Result<()> {
    let resources = template()?;
    let services = offline_services()?;
    let mut problems = Vec::new();
    for f in &resources.functions {
        let Some(api) = API_FUNCTIONS
            .iter()
            .find(|a| Some(a.name) == f.crate_name())
        else {
            continue;
        };
        let router = mender_http::finish((api.router)(services.clone()));
        for (method, path) in &f.http_routes {
            // `{id}` -> `x`
            let uri: String = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let request = Request::builder()
                .method(method.as_str())
                .uri(&uri)
                .body(Body::empty())?;
            let status = router.clone().oneshot(request).await?.status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
                problems.push(format!(
                    "{method} {uri}: {status} from {} ({})",
                    api.name, f.logical_id
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[test]
fn each_workflow_step_consumes_its_own_queue() -> anyhow::Result<()> {
    let resources = template()?;
    let mut problems = Vec::new();
    let steps = workflow_functions();
    for (name, queue) in &steps {
        match function_of(&resources, name) {
            None => problems.push(format!("workflow step {name} has no template function")),
            Some(f) => {
                let expected = vec![queue_logical_id(*queue).to_owned()];
                if f.sqs_queues != expected {
                    problems.push(format!(
                        "{}: SQS events {:?}, expected {expected:?}",
                        f.logical_id, f.sqs_queues
                    ));
                }
            }
        }
    }
    for f in &resources.functions {
        let name = f.crate_name().unwrap_or_default();
        let is_step = steps.iter().any(|(n, _)| *n == name);
        let is_api = API_FUNCTIONS.iter().any(|a| a.name == name);
        if !is_step && !f.sqs_queues.is_empty() {
            problems.push(format!(
                "{}: has SQS events but {name} is not a workflow step (local_stack::workflow_functions)",
                f.logical_id
            ));
        }
        if !is_step && !is_api {
            problems.push(format!(
                "{}: {name} is neither an API function nor a workflow step of the local stack",
                f.logical_id
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[test]
fn iam_policies_reach_only_each_functions_own_tables_and_queues() -> anyhow::Result<()> {
    let resources = template()?;
    let known: BTreeSet<&str> = resources
        .tables
        .iter()
        .map(|t| t.logical_id.as_str())
        .chain(resources.queues.iter().map(|q| q.logical_id.as_str()))
        .chain(resources.buckets.iter().map(String::as_str))
        .collect();
    let mut problems = Vec::new();
    for (name, allowed) in ACCESS {
        for id in *allowed {
            if !known.contains(id) {
                problems.push(format!(
                    "ACCESS names {id} for {name}: no such table, queue or bucket"
                ));
            }
        }
    }
    let task_roles = container_task_roles(&resources)?;
    for f in resources.functions.iter().chain(&task_roles) {
        let name = f.crate_name().unwrap_or_default();
        let Some((_, allowed)) = ACCESS.iter().find(|(n, _)| *n == name) else {
            problems.push(format!(
                "{}: {name} is missing from ACCESS in tests/tests/template.rs",
                f.logical_id
            ));
            continue;
        };
        let allowed: BTreeSet<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        for id in f.policy_refs.difference(&allowed) {
            problems.push(format!(
                "{}: IAM policy reaches {id}, which {name} must not touch",
                f.logical_id
            ));
        }
        for id in allowed.difference(&f.policy_refs) {
            problems.push(format!(
                "{}: IAM policy lacks {id}, which {name} uses",
                f.logical_id
            ));
        }
        for literal in &f.policy_literals {
            problems.push(format!(
                "{}: policy resource or managed policy {literal:?} is not pinned to one of this stack's resources",
                f.logical_id
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
