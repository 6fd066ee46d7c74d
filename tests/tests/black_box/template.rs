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
    // deviceauth; starts provisioning, status and identity workflows, iot-manager's events
    (
        "deviceauth-devices",
        &[
            "DeviceauthTable",
            "ProvisionDeviceQueue",
            "UpdateDeviceStatusQueue",
            "UpdateDeviceInventoryQueue",
            "IotManagerEventsQueue",
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
            "IotManagerEventsQueue",
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
    // iot-manager, useradm (user token check)
    (
        "iot-manager-management",
        &["IotManagerTable", "UseradmTable"],
    ),
    // iot-manager; a new cloud device's credentials go to deviceconfig and are deployed
    // (deployments, the device's inventory group)
    (
        "iot-manager-events",
        &[
            "IotManagerTable",
            "DeviceconfigTable",
            "DeploymentsTable",
            "InventoryTable",
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
                "{}: {name} is missing from ACCESS in tests/tests/black_box/template.rs",
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

// ------------------------------------------------------------------------------------------------
// The raw template. `local_stack::template` reads what the local stack needs; the checks below
// also look at environments, conditions, bucket, API and concurrency settings, so they read the
// YAML themselves: [`yaml`] is just enough of YAML for this template (block mappings and
// sequences, flow sequences, block scalars, the short tags kept as text: `!Ref X`,
// `!GetAtt X.Arn`, `!Sub text`).
// ------------------------------------------------------------------------------------------------

mod yaml {
    /// A node: a scalar (quotes removed, a short tag kept in front: `!Ref X`), a mapping (in
    /// order) or a sequence.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Y {
        S(String),
        M(Vec<(String, Y)>),
        L(Vec<Y>),
    }

    impl Y {
        pub fn get(&self, key: &str) -> Option<&Y> {
            self.entries()
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
        }

        pub fn at(&self, path: &[&str]) -> Option<&Y> {
            path.iter().try_fold(self, |y, key| y.get(key))
        }

        pub fn str(&self) -> Option<&str> {
            match self {
                Y::S(s) => Some(s),
                _ => None,
            }
        }

        pub fn entries(&self) -> &[(String, Y)] {
            match self {
                Y::M(m) => m,
                _ => &[],
            }
        }

        /// A sequence's items; anything else is a sequence of itself (IAM's `Action: x`).
        pub fn items(&self) -> Vec<&Y> {
            match self {
                Y::L(items) => items.iter().collect(),
                other => vec![other],
            }
        }

        /// Every scalar below this node.
        pub fn scalars(&self) -> Vec<&str> {
            match self {
                Y::S(s) => vec![s.as_str()],
                Y::M(m) => m.iter().flat_map(|(_, v)| v.scalars()).collect(),
                Y::L(l) => l.iter().flat_map(Y::scalars).collect(),
            }
        }

        /// The items' scalars, sorted (for `Action` and condition value lists).
        pub fn strings(&self) -> Vec<String> {
            let mut out: Vec<String> = self
                .items()
                .iter()
                .filter_map(|y| y.str().map(str::to_owned))
                .collect();
            out.sort();
            out
        }
    }

    /// The logical ids a scalar refers to (`!Ref X`, `!GetAtt X.Attr`, `${X}`/`${X.Attr}` in
    /// `!Sub`), pseudo parameters left out.
    pub fn refs(scalar: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(name) = scalar.strip_prefix("!Ref ") {
            out.push(name.trim().to_owned());
        } else if let Some(target) = scalar.strip_prefix("!GetAtt ") {
            out.extend(target.split('.').next().map(|s| s.trim().to_owned()));
        } else if let Some(text) = scalar.strip_prefix("!Sub ") {
            for part in text.split("${").skip(1) {
                let name = part.split('}').next().unwrap_or("");
                out.push(name.split('.').next().unwrap_or("").to_owned());
            }
        }
        out.retain(|name| !name.is_empty() && !name.starts_with("AWS::"));
        out
    }

    struct Line {
        indent: usize,
        text: String,
    }

    fn strip_comment(line: &str) -> &str {
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for (i, c) in line.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if (c == '"' || c == '\'') && " [,{:".contains(previous) => quote = Some(c),
                None if c == '#' && previous.is_whitespace() => return &line[..i],
                None => {}
            }
            previous = c;
        }
        line
    }

    fn unquote(text: &str) -> String {
        let t = text.trim();
        if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
            t[1..t.len() - 1]
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
            t[1..t.len() - 1].replace("''", "'")
        } else {
            t.to_owned()
        }
    }

    /// Splits a flow sequence's inside at its top-level commas.
    fn flow_items(inner: &str) -> Vec<String> {
        let (mut items, mut current, mut depth, mut quote) =
            (Vec::new(), String::new(), 0usize, None::<char>);
        for c in inner.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == '[' || c == '{' => depth += 1,
                None if c == ']' || c == '}' => depth = depth.saturating_sub(1),
                None if c == ',' && depth == 0 => {
                    items.push(std::mem::take(&mut current));
                    continue;
                }
                None => {}
            }
            current.push(c);
        }
        if !current.trim().is_empty() {
            items.push(current);
        }
        items
    }

    fn scalar(text: &str) -> Y {
        let t = text.trim();
        if t.starts_with('[') && t.ends_with(']') {
            return Y::L(
                flow_items(&t[1..t.len() - 1])
                    .iter()
                    .map(|i| scalar(i))
                    .collect(),
            );
        }
        if t.starts_with('!') {
            if let Some((tag, arg)) = t.split_once(' ') {
                let arg = arg.trim();
                if arg.starts_with('[') || arg.starts_with('{') {
                    return Y::S(t.to_owned());
                }
                return Y::S(format!("{tag} {}", unquote(arg)));
            }
        }
        Y::S(unquote(t))
    }

    /// `key: rest` or `key:`; not a scalar that merely contains a colon.
    fn split_key(text: &str) -> Option<(String, String)> {
        if text.starts_with(['!', '[', '{', '>', '|', '"', '\'']) {
            return None;
        }
        let (key, rest) = match text.find(": ") {
            Some(at) => (&text[..at], &text[at + 2..]),
            None => (text.strip_suffix(':')?, ""),
        };
        (!key.is_empty() && !key.contains(' ')).then(|| (key.to_owned(), rest.to_owned()))
    }

    fn is_item(text: &str) -> bool {
        text == "-" || text.starts_with("- ")
    }

    struct Parser {
        lines: Vec<Line>,
        at: usize,
    }

    impl Parser {
        fn next_indent(&self) -> Option<usize> {
            self.lines.get(self.at).map(|l| l.indent)
        }

        fn block(&mut self) -> Y {
            match self.lines.get(self.at) {
                None => Y::S(String::new()),
                Some(l) if is_item(&l.text) => {
                    let indent = l.indent;
                    self.seq(indent)
                }
                Some(l) => {
                    let indent = l.indent;
                    self.map(indent)
                }
            }
        }

        fn map(&mut self, indent: usize) -> Y {
            let mut out = Vec::new();
            while let Some(line) = self.lines.get(self.at) {
                if line.indent != indent || is_item(&line.text) {
                    break;
                }
                let text = line.text.clone();
                self.at += 1;
                let Some((key, rest)) = split_key(&text) else {
                    continue;
                };
                let value = self.value(indent, &rest, true);
                out.push((unquote(&key), value));
            }
            Y::M(out)
        }

        fn seq(&mut self, indent: usize) -> Y {
            let mut out = Vec::new();
            while let Some(line) = self.lines.get(self.at) {
                if line.indent != indent || !is_item(&line.text) {
                    break;
                }
                let after = line.text[1..].to_owned();
                let content = after.trim_start().to_owned();
                let column = indent + 1 + (after.len() - content.len());
                if content.is_empty() {
                    self.at += 1;
                    let deeper = self.next_indent().is_some_and(|i| i > indent);
                    out.push(if deeper {
                        self.block()
                    } else {
                        Y::S(String::new())
                    });
                } else if is_item(&content) || split_key(&content).is_some() {
                    // `- key: value` (or `- - x`): the item's first line, at its own column
                    self.lines[self.at] = Line {
                        indent: column,
                        text: content,
                    };
                    out.push(self.block());
                } else {
                    self.at += 1;
                    out.push(self.value(indent, &content, false));
                }
            }
            Y::L(out)
        }

        /// The value after `key:` (or a sequence item's scalar) of a line at `indent`.
        fn value(&mut self, indent: usize, rest: &str, in_map: bool) -> Y {
            let rest = rest.trim();
            let deeper = self.next_indent().is_some_and(|i| i > indent);
            if rest.is_empty() || (rest.starts_with('!') && !rest.contains(' ')) {
                if deeper {
                    return self.block();
                }
                let same_level_items = in_map
                    && self
                        .lines
                        .get(self.at)
                        .is_some_and(|l| l.indent == indent && is_item(&l.text));
                if same_level_items {
                    return self.seq(indent);
                }
                return Y::S(rest.to_owned());
            }
            let block_scalar = rest.len() <= 3 && rest.starts_with(['>', '|']);
            let mut continuation = Vec::new();
            while let Some(line) = self.lines.get(self.at) {
                if line.indent <= indent {
                    break;
                }
                continuation.push(line.text.clone());
                self.at += 1;
            }
            if block_scalar {
                Y::S(continuation.join(" "))
            } else {
                scalar(&[vec![rest.to_owned()], continuation].concat().join(" "))
            }
        }
    }

    pub fn parse(text: &str) -> Y {
        let lines = text
            .lines()
            .filter_map(|raw| {
                let line = strip_comment(raw).trim_end();
                let text = line.trim_start();
                (!text.is_empty()).then(|| Line {
                    indent: line.len() - text.len(),
                    text: text.to_owned(),
                })
            })
            .collect();
        Parser { lines, at: 0 }.block()
    }

    #[test]
    fn reads_the_subset_the_template_uses() {
        let y = parse(
            r#"
A: "x # not a comment" # a comment
B:
  - Sid: S
    Action:
      - dynamodb:GetItem
    Resource: !Sub "${T.Arn}/index/*"
    Condition:
      ForAllValues:StringEquals:
        dynamodb:Attributes: [pk, "sk"]
  - !GetAtt Q.Arn
C: >-
  folded
  text
D:
- one
E: !And
  - !Not [!Equals [!Ref X, ""]]
F: 'it''s'
"#,
        );
        assert_eq!(y.at(&["A"]), Some(&Y::S("x # not a comment".into())));
        let b = y.get("B").map(Y::items).unwrap_or_default();
        assert_eq!(b.len(), 2);
        assert_eq!(
            b[0].at(&[
                "Condition",
                "ForAllValues:StringEquals",
                "dynamodb:Attributes"
            ])
            .map(Y::strings),
            Some(vec!["pk".to_owned(), "sk".to_owned()])
        );
        assert_eq!(
            b[0].get("Action").map(Y::strings),
            Some(vec!["dynamodb:GetItem".to_owned()])
        );
        assert_eq!(
            refs(b[0].get("Resource").and_then(Y::str).unwrap_or("")),
            vec!["T"]
        );
        assert_eq!(refs(b[1].str().unwrap_or("")), vec!["Q"]);
        assert_eq!(y.get("C"), Some(&Y::S("folded text".into())));
        assert_eq!(y.get("D"), Some(&Y::L(vec![Y::S("one".into())])));
        assert_eq!(y.get("E").map(|e| e.items().len()), Some(1));
        assert_eq!(y.get("F"), Some(&Y::S("it's".into())));
    }
}

/// `infra/template.yaml` (or `MENDER_TEMPLATE`) as a [`yaml::Y`] tree.
fn raw_template() -> anyhow::Result<yaml::Y> {
    let path = std::env::var_os("MENDER_TEMPLATE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(local_stack::default_template);
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(yaml::parse(&text))
}

/// The template's resources of one type, by logical id.
fn resources_of<'a>(template: &'a yaml::Y, kind: &str) -> Vec<(&'a str, &'a yaml::Y)> {
    template
        .get("Resources")
        .map(yaml::Y::entries)
        .unwrap_or_default()
        .iter()
        .filter(|(_, r)| r.get("Type").and_then(yaml::Y::str) == Some(kind))
        .map(|(id, r)| (id.as_str(), r))
        .collect()
}

/// The crate of each template function: `(crate, logical id, resource)`.
fn template_functions(template: &yaml::Y) -> Vec<(String, &str, &yaml::Y)> {
    resources_of(template, "AWS::Serverless::Function")
        .into_iter()
        .filter_map(|(id, r)| {
            let uri = r.at(&["Properties", "CodeUri"]).and_then(yaml::Y::str)?;
            let name = uri.trim_end_matches('/').strip_prefix("../functions/")?;
            Some((name.to_owned(), id, r))
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// What the code calls. [`code`] reads the Rust sources as text: each `fn`'s body (comments and
// literals blanked for finding calls), the AWS SDK calls in it, and the functions it calls by
// name. A function crate reaches a service's code through `<service>.<method>(` (the fields of
// `services::Services`) and the token extractors; from there the closure over the functions of
// that service's crate called by name (an over-approximation: same-named functions of one crate
// count together) gives the DynamoDB actions on that service's table. S3 actions come from the
// `ArtifactStorage`/`Upload` methods called ([`code::S3_RECEIVERS`]), SQS from `publish`.
// ------------------------------------------------------------------------------------------------

mod code {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// One `fn`: its name, its normalized masked text (comments and literals blanked,
    /// whitespace collapsed, none around `.`, `::` and before `(`) and its source text.
    pub struct CodeFn {
        pub name: String,
        pub calls: String,
        pub source: String,
    }

    /// The source with comments and the contents of string and char literals blanked (same
    /// byte offsets).
    fn mask(src: &str) -> Vec<u8> {
        let b = src.as_bytes();
        let mut m = b.to_vec();
        let blank = |m: &mut Vec<u8>, from: usize, to: usize| {
            for byte in m.iter_mut().take(to.min(b.len())).skip(from) {
                if *byte != b'\n' {
                    *byte = b' ';
                }
            }
        };
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut i = 0;
        while i < b.len() {
            let next = b.get(i + 1).copied().unwrap_or(0);
            match b[i] {
                b'/' if next == b'/' => {
                    let end = src[i..].find('\n').map_or(b.len(), |e| i + e);
                    blank(&mut m, i, end);
                    i = end;
                }
                b'/' if next == b'*' => {
                    let (mut depth, mut j) = (1, i + 2);
                    while j < b.len() && depth > 0 {
                        if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                            depth += 1;
                            j += 1;
                        } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                            depth -= 1;
                            j += 1;
                        }
                        j += 1;
                    }
                    blank(&mut m, i, j);
                    i = j;
                }
                b'r' if (next == b'"' || next == b'#') && (i == 0 || !ident(b[i - 1])) => {
                    let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                    if b.get(i + 1 + hashes) != Some(&b'"') {
                        i += 1;
                        continue;
                    }
                    let close = format!("\"{}", "#".repeat(hashes));
                    let start = i + 2 + hashes;
                    let end = src[start..].find(&close).map_or(b.len(), |e| start + e);
                    blank(&mut m, start, end);
                    i = end + close.len();
                }
                b'"' => {
                    let mut j = i + 1;
                    while j < b.len() && b[j] != b'"' {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    blank(&mut m, i + 1, j);
                    i = j + 1;
                }
                b'\'' => {
                    // a char literal ('x', '\n', '\u{..}', 'é'), else a lifetime
                    let end = if next == b'\\' {
                        src[i + 2..].find('\'').map(|e| i + 2 + e)
                    } else {
                        let len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                        (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
                    };
                    match end {
                        Some(end) => {
                            blank(&mut m, i + 1, end);
                            i = end + 1;
                        }
                        None => i += 1,
                    }
                }
                _ => i += 1,
            }
        }
        m
    }

    fn normalize(text: &str) -> String {
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        collapsed
            .replace(" .", ".")
            .replace(". ", ".")
            .replace(" (", "(")
            .replace(" ::", "::")
            .replace(":: ", "::")
    }

    fn is_ident(c: u8) -> bool {
        c.is_ascii_alphanumeric() || c == b'_'
    }

    /// Every `fn` of one source file.
    pub fn fns_of_source(src: &str) -> Vec<CodeFn> {
        let m = mask(src);
        let text = String::from_utf8_lossy(&m).into_owned();
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(found) = text[at..].find("fn ") {
            let start = at + found;
            at = start + 3;
            if start > 0 && is_ident(m[start - 1]) {
                continue;
            }
            let name: String = text[at..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            // the body: the first `{` outside brackets (a `;` there: no body)
            let mut depth = 0i32;
            let mut open = None;
            for (j, c) in m.iter().enumerate().skip(at) {
                match c {
                    b'(' | b'[' => depth += 1,
                    b')' | b']' => depth -= 1,
                    b';' if depth == 0 => break,
                    b'{' if depth == 0 => {
                        open = Some(j);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(open) = open else { continue };
            let mut braces = 0i32;
            let mut close = m.len();
            for (j, c) in m.iter().enumerate().skip(open) {
                match c {
                    b'{' => braces += 1,
                    b'}' => {
                        braces -= 1;
                        if braces == 0 {
                            close = j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.push(CodeFn {
                name,
                calls: normalize(&text[start..close]),
                source: src[start..close].to_owned(),
            });
        }
        out
    }

    /// The `.rs` files under `dir`, sorted.
    pub fn sources(dir: &Path) -> anyhow::Result<Vec<String>> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
            .iter()
            .map(|p| {
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            })
            .collect()
    }

    pub fn fns_of_dir(dir: &Path) -> anyhow::Result<Vec<CodeFn>> {
        Ok(sources(dir)?
            .iter()
            .flat_map(|s| fns_of_source(s))
            .collect())
    }

    /// A whole crate as one normalized masked text.
    pub fn crate_calls(dir: &Path) -> anyhow::Result<String> {
        Ok(sources(dir)?
            .iter()
            .map(|s| normalize(&String::from_utf8_lossy(&mask(s))))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The names called in `calls` (`name(`, `.name(`, `::name(`).
    pub fn called_names(calls: &str) -> BTreeSet<String> {
        let b = calls.as_bytes();
        let mut out = BTreeSet::new();
        for (i, c) in b.iter().enumerate() {
            if *c != b'(' {
                continue;
            }
            let start = (0..i).rev().take_while(|j| is_ident(b[*j])).last();
            if let Some(start) = start {
                let name = &calls[start..i];
                if name.as_bytes().first().is_some_and(|c| !c.is_ascii_digit()) {
                    out.insert(name.to_owned());
                }
            }
        }
        out
    }

    /// The methods called on `receiver` in `calls`: `<receiver>.<name>(` where `receiver` is
    /// not the tail of a longer identifier.
    pub fn methods_on(calls: &str, receiver: &str) -> BTreeSet<String> {
        let needle = format!("{receiver}.");
        let b = calls.as_bytes();
        let mut out = BTreeSet::new();
        let mut at = 0;
        while let Some(found) = calls[at..].find(&needle) {
            let start = at + found;
            at = start + needle.len();
            if start > 0 && is_ident(b[start - 1]) {
                continue;
            }
            let name: String = calls[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && calls[at + name.len()..].starts_with('(') {
                out.insert(name);
            }
        }
        out
    }

    /// DynamoDB SDK calls and the IAM actions they need.
    const DYNAMODB_CALLS: &[(&str, &str)] = &[
        (".get_item()", "dynamodb:GetItem"),
        (".put_item()", "dynamodb:PutItem"),
        (".update_item()", "dynamodb:UpdateItem"),
        (".delete_item()", "dynamodb:DeleteItem"),
        (".query()", "dynamodb:Query"),
        (".scan()", "dynamodb:Scan"),
        (".batch_get_item()", "dynamodb:BatchGetItem"),
        (".batch_write_item()", "dynamodb:BatchWriteItem"),
        (".transact_get_items()", "dynamodb:GetItem"),
        // the parts of a TransactWriteItems, each authorized by its own action
        ("Put::builder()", "dynamodb:PutItem"),
        ("Update::builder()", "dynamodb:UpdateItem"),
        ("Delete::builder()", "dynamodb:DeleteItem"),
        ("ConditionCheck::builder()", "dynamodb:ConditionCheckItem"),
    ];

    /// S3 SDK calls (presigned ones included: the link is signed with the caller's role).
    const S3_CALLS: &[(&str, &str)] = &[
        (".get_object()", "s3:GetObject"),
        (".head_object()", "s3:GetObject"),
        (".put_object()", "s3:PutObject"),
        (".create_multipart_upload()", "s3:PutObject"),
        (".upload_part()", "s3:PutObject"),
        (".complete_multipart_upload()", "s3:PutObject"),
        (".abort_multipart_upload()", "s3:AbortMultipartUpload"),
        (".delete_object()", "s3:DeleteObject"),
        (".delete_objects()", "s3:DeleteObject"),
        (".list_objects_v2()", "s3:ListBucket"),
    ];

    fn actions_in(calls: &str, table: &[(&str, &'static str)]) -> BTreeSet<String> {
        table
            .iter()
            .filter(|(call, _)| calls.contains(call))
            .map(|(_, action)| (*action).to_owned())
            .collect()
    }

    /// The closure of `roots` over the functions of `fns` called by name.
    fn closure<'a>(fns: &'a [CodeFn], roots: &BTreeSet<String>) -> Vec<&'a CodeFn> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<String> = roots.iter().cloned().collect();
        while let Some(name) = todo.pop() {
            if !names.insert(name.clone()) {
                continue;
            }
            for f in fns.iter().filter(|f| f.name == name) {
                todo.extend(
                    called_names(&f.calls)
                        .into_iter()
                        .filter(|n| !names.contains(n)),
                );
            }
        }
        fns.iter().filter(|f| names.contains(&f.name)).collect()
    }

    /// The service fields of `services::Services` whose code owns a table: (field, crate
    /// directory, table).
    pub const SERVICES: &[(&str, &str, &str)] = &[
        ("useradm", "shared/useradm", "UseradmTable"),
        ("deviceauth", "shared/deviceauth", "DeviceauthTable"),
        ("inventory", "shared/inventory", "InventoryTable"),
        ("deployments", "shared/deployments", "DeploymentsTable"),
        (
            "deviceconnect",
            "shared/deviceconnect-store",
            "DeviceconnectTable",
        ),
        ("deviceconfig", "shared/deviceconfig", "DeviceconfigTable"),
        ("iot_manager", "shared/iot-manager", "IotManagerTable"),
    ];

    /// Other names a function crate reaches a service by: `(crate, receiver, service field)`.
    pub const ALIASES: &[(&str, &str, &str)] = &[
        // `Deviceconnect::store()` is `&services.deviceconnect`
        ("deviceconnect", "store()", "deviceconnect"),
        ("deviceconnect", "store", "deviceconnect"),
    ];

    /// What `ArtifactStorage` (`services.artifacts`, deviceconnect's recording `storage`) and
    /// its multipart `Upload` values are called in the code.
    pub const S3_RECEIVERS: &[&str] = &["artifacts", "storage", "upload"];

    /// The token extractors (`mender_http`) and the check each one runs: (type, service
    /// field, method).
    pub const EXTRACTORS: &[(&str, &str, &str)] = &[
        ("DeviceAuth", "deviceauth", "device_token_valid"),
        ("UserAuth", "useradm", "user_token_valid"),
    ];

    /// What one function crate's code reaches.
    #[derive(Default, Debug)]
    pub struct Reach {
        /// table -> DynamoDB actions of the reached code of its service.
        pub dynamodb: BTreeMap<String, BTreeSet<String>>,
        /// table -> the service methods the crate calls (token checks included).
        pub entries: BTreeMap<String, BTreeSet<String>>,
        /// table -> attribute names in the reached update and condition expressions.
        pub attributes: BTreeMap<String, BTreeSet<String>>,
        pub s3: BTreeSet<String>,
        pub sends_messages: bool,
        /// Signs tokens (`keys.issue`) or configuration links (`presign.link`).
        pub signs: bool,
        /// Calls to a service method no function of its crate defines.
        pub unresolved: Vec<String>,
    }

    /// The code a crate of `functions/` reaches, read from the repository at `root`.
    pub struct Code {
        services: Vec<(String, String, Vec<CodeFn>)>,
        dynamo_helpers: Vec<CodeFn>,
        s3: Vec<CodeFn>,
        root: std::path::PathBuf,
    }

    impl Code {
        pub fn load(root: &Path) -> anyhow::Result<Code> {
            let mut services = Vec::new();
            for (field, dir, table) in SERVICES {
                services.push((
                    (*field).to_owned(),
                    (*table).to_owned(),
                    fns_of_dir(&root.join(dir).join("src"))?,
                ));
            }
            let read = |p: &str| -> anyhow::Result<Vec<CodeFn>> {
                let path = root.join(p);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok(fns_of_source(&text))
            };
            Ok(Code {
                services,
                dynamo_helpers: read("shared/aws/src/dynamo.rs")?,
                s3: read("shared/aws/src/s3.rs")?,
                root: root.to_path_buf(),
            })
        }

        /// The DynamoDB actions of `mender_aws::dynamo::Table` methods called on a `table`.
        fn helper_actions(&self, calls: &str) -> BTreeSet<String> {
            let roots = methods_on(calls, "table");
            closure(&self.dynamo_helpers, &roots)
                .iter()
                .flat_map(|f| actions_in(&f.calls, DYNAMODB_CALLS))
                .collect()
        }

        pub fn reach(&self, crate_name: &str) -> anyhow::Result<Reach> {
            let own = crate_calls(&self.root.join("functions").join(crate_name).join("src"))?;
            let mut reach = Reach::default();
            let mut reached_texts = vec![own.clone()];
            for (field, table, fns) in &self.services {
                let mut entries = methods_on(&own, field);
                // `services.deployments.store.get_artifact(...)`: the store of the service
                entries.extend(methods_on(&own, &format!("{field}.store")));
                for (c, receiver, service) in ALIASES {
                    if *c == crate_name && service == field {
                        entries.extend(methods_on(&own, receiver));
                    }
                }
                for (extractor, service, check) in EXTRACTORS {
                    let used = own.contains(&format!("{extractor} "))
                        || own.contains(&format!("{extractor},"))
                        || own.contains(&format!("{extractor}>"))
                        || own.contains(&format!("{extractor})"));
                    if service == field && used {
                        entries.insert((*check).to_owned());
                    }
                }
                // `.clone()` of the service value itself is no call into its code
                entries.remove("clone");
                if entries.is_empty() {
                    continue;
                }
                for entry in &entries {
                    if !fns.iter().any(|f| &f.name == entry) {
                        reach
                            .unresolved
                            .push(format!("{field}.{entry}: no fn {entry} in its crate"));
                    }
                }
                let reached = closure(fns, &entries);
                let mut actions = BTreeSet::new();
                let mut attributes = BTreeSet::new();
                for f in &reached {
                    actions.extend(actions_in(&f.calls, DYNAMODB_CALLS));
                    actions.extend(self.helper_actions(&f.calls));
                    attributes.extend(expression_attributes(&f.source));
                    reached_texts.push(f.calls.clone());
                }
                if !actions.is_empty() {
                    reach.dynamodb.insert(table.clone(), actions);
                    reach.attributes.insert(table.clone(), attributes);
                }
                reach.entries.insert(table.clone(), entries);
            }
            for text in &reached_texts {
                reach.s3.extend(actions_in(text, S3_CALLS));
                let called: BTreeSet<String> = S3_RECEIVERS
                    .iter()
                    .flat_map(|r| methods_on(text, r))
                    .collect();
                let s3_fns = closure(&self.s3, &called);
                for f in s3_fns {
                    reach.s3.extend(actions_in(&f.calls, S3_CALLS));
                }
                reach.sends_messages |=
                    text.contains(".publish(") || text.contains(".send_message()");
                reach.signs |= text.contains(".keys.issue(") || text.contains(".presign.link(");
            }
            Ok(reach)
        }
    }

    /// The string literal right after `call(` in `source`, for each occurrence.
    fn literal_args<'a>(source: &'a str, call: &str) -> Vec<&'a str> {
        let needle = format!("{call}(");
        source
            .match_indices(&needle)
            .filter_map(|(at, _)| {
                let rest = source[at + needle.len()..].trim_start().strip_prefix('"')?;
                rest.split('"').next()
            })
            .collect()
    }

    /// The attribute names an update or condition expression in `source` names (`#x`
    /// placeholders resolved through `expression_attribute_names("#x", "name")`).
    pub fn expression_attributes(source: &str) -> BTreeSet<String> {
        const WORDS: &[&str] = &[
            "SET",
            "REMOVE",
            "ADD",
            "DELETE",
            "AND",
            "OR",
            "NOT",
            "IN",
            "BETWEEN",
            "attribute_exists",
            "attribute_not_exists",
            "attribute_type",
            "begins_with",
            "contains",
            "size",
            "if_not_exists",
            "list_append",
        ];
        let names: BTreeMap<String, String> = source
            .match_indices("expression_attribute_names(")
            .filter_map(|(at, _)| {
                let rest = &source[at..];
                let mut literals = rest.split('"').skip(1).step_by(2);
                Some((literals.next()?.to_owned(), literals.next()?.to_owned()))
            })
            .collect();
        let mut out = BTreeSet::new();
        for expression in literal_args(source, "update_expression")
            .into_iter()
            .chain(literal_args(source, "condition_expression"))
        {
            let mut token = String::new();
            for c in expression.chars().chain(std::iter::once(' ')) {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '#' {
                    token.push(c);
                    continue;
                }
                let t = std::mem::take(&mut token);
                if t.is_empty() || t.starts_with(':') || WORDS.contains(&t.as_str()) {
                    continue;
                }
                if t.starts_with('#') {
                    out.insert(names.get(&t).cloned().unwrap_or(t));
                } else if !t.chars().all(|c| c.is_ascii_digit()) {
                    out.insert(t);
                }
            }
        }
        out
    }

    #[test]
    fn reads_fns_and_their_calls() {
        let fns = fns_of_source(
            r##"
            // fn commented() {}
            pub async fn touch(&self) -> Result<(), E> {
                let s = "fn not_a_fn() { }";
                let c = '{';
                self.table
                    .client
                    .update_item()
                    .update_expression("SET #v = :now, check_in = :c")
                    .condition_expression("attribute_exists(pk) AND check_in < :t")
                    .expression_attribute_names("#v", "version");
                helper(r#"}"#)
            }
            fn helper<'a>(x: &'a str) -> [u8; 2] { self.table.get(k) }
            "##,
        );
        let names: Vec<&str> = fns.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["touch", "helper"]);
        assert!(
            fns[0].calls.contains("self.table.client.update_item()"),
            "{}",
            fns[0].calls
        );
        assert!(called_names(&fns[0].calls).contains("helper"));
        assert!(!called_names(&fns[0].calls).contains("not_a_fn"));
        assert_eq!(
            methods_on(&fns[1].calls, "table")
                .into_iter()
                .collect::<Vec<_>>(),
            ["get"]
        );
        assert_eq!(
            expression_attributes(&fns[0].source)
                .into_iter()
                .collect::<Vec<_>>(),
            ["check_in", "pk", "version"]
        );
    }
}

/// One IAM policy statement of a function or task role.
struct Statement {
    sid: String,
    effect: String,
    actions: Vec<String>,
    /// The logical ids its `Resource` names.
    resources: BTreeSet<String>,
    condition: Option<yaml::Y>,
}

/// The statements of a `Policies` list (SAM inline policy documents or IAM role policies).
fn statements(policies: Option<&yaml::Y>) -> Vec<Statement> {
    let Some(policies) = policies else {
        return Vec::new();
    };
    policies
        .items()
        .into_iter()
        .flat_map(|policy| {
            let document = policy.get("PolicyDocument").unwrap_or(policy);
            document
                .get("Statement")
                .map(yaml::Y::items)
                .unwrap_or_default()
        })
        .map(|s| Statement {
            sid: s.get("Sid").and_then(yaml::Y::str).unwrap_or("").to_owned(),
            effect: s
                .get("Effect")
                .and_then(yaml::Y::str)
                .unwrap_or("")
                .to_owned(),
            actions: s.get("Action").map(yaml::Y::strings).unwrap_or_default(),
            resources: s
                .get("Resource")
                .map(yaml::Y::scalars)
                .unwrap_or_default()
                .into_iter()
                .flat_map(yaml::refs)
                .collect(),
            condition: s.get("Condition").cloned(),
        })
        .collect()
}

/// Every principal the code runs as: `(crate, logical id, statements)` of each template
/// function and each container task role.
fn principals(template: &yaml::Y) -> Vec<(String, String, Vec<Statement>)> {
    let mut out: Vec<(String, String, Vec<Statement>)> = template_functions(template)
        .into_iter()
        .map(|(name, id, r)| {
            (
                name,
                id.to_owned(),
                statements(r.at(&["Properties", "Policies"])),
            )
        })
        .collect();
    for (crate_name, role) in CONTAINER_TASK_ROLES {
        let policies = template.at(&["Resources", role, "Properties", "Policies"]);
        out.push((
            (*crate_name).to_owned(),
            (*role).to_owned(),
            statements(policies),
        ));
    }
    out
}

fn ids_of(template: &yaml::Y, kind: &str) -> BTreeSet<String> {
    resources_of(template, kind)
        .into_iter()
        .map(|(id, _)| id.to_owned())
        .collect()
}

/// Least privilege, per action: every action a function's (or task role's) policy allows on a
/// table, bucket or queue is one the code of that function reaches makes on it
/// ([`code::Code::reach`]). So no `UpdateItem`, `DeleteItem` or `BatchWriteItem` on a table
/// unless the code reached calls `update_item`/`Update`, `delete_item`/`Delete`,
/// `batch_write_item` on that table's store.
#[test]
fn every_iam_action_is_justified_by_a_call_of_the_functions_code() -> anyhow::Result<()> {
    let template = raw_template()?;
    let code = code::Code::load(&root())?;
    let tables = ids_of(&template, "AWS::DynamoDB::Table");
    let buckets = ids_of(&template, "AWS::S3::Bucket");
    let queues = ids_of(&template, "AWS::SQS::Queue");
    let mut problems = Vec::new();
    for (crate_name, id, statements) in principals(&template) {
        let reach = code.reach(&crate_name)?;
        problems.extend(
            reach
                .unresolved
                .iter()
                .map(|u| format!("{crate_name}: {u}")),
        );
        for st in &statements {
            if st.effect != "Allow" {
                continue;
            }
            for action in &st.actions {
                for resource in &st.resources {
                    let justified = if tables.contains(resource) {
                        reach
                            .dynamodb
                            .get(resource)
                            .is_some_and(|a| a.contains(action))
                    } else if buckets.contains(resource) {
                        reach.s3.contains(action)
                    } else if queues.contains(resource) {
                        action == "sqs:SendMessage" && reach.sends_messages
                    } else {
                        false
                    };
                    if !justified {
                        problems.push(format!(
                            "{id} ({crate_name}), statement {}: {action} on {resource}, which no code of {crate_name} calls (it reaches {:?} on it)",
                            st.sid,
                            if tables.contains(resource) {
                                reach.dynamodb.get(resource).cloned().unwrap_or_default()
                            } else {
                                reach.s3.clone()
                            }
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The token checks every verifier runs on another service's table (a strongly consistent
/// read, then the check-in or last-used refresh at most every few minutes): the read is a
/// `GetItem`; the refresh, an `UpdateItem`, may touch only the key and the attributes the
/// check's update and condition expressions name (`dynamodb:Attributes`), returning nothing
/// (`dynamodb:ReturnValues`). Without that condition a verifier could rewrite any device or
/// user item of that table.
#[test]
fn token_checks_read_and_touch_only_their_check_in_attributes() -> anyhow::Result<()> {
    let template = raw_template()?;
    let code = code::Code::load(&root())?;
    let checks: BTreeSet<&str> = code::EXTRACTORS.iter().map(|(_, _, m)| *m).collect();
    let mut problems = Vec::new();
    let mut seen = 0;
    for (crate_name, id, statements) in principals(&template) {
        let reach = code.reach(&crate_name)?;
        for (table, entries) in &reach.entries {
            if !entries.iter().all(|e| checks.contains(e.as_str())) {
                continue; // the function's own table, or one whose domain code it calls
            }
            seen += 1;
            let mut expected: Vec<String> = ["pk", "sk"].iter().map(|s| (*s).to_owned()).collect();
            expected.extend(reach.attributes.get(table).cloned().unwrap_or_default());
            expected.sort();
            expected.dedup();
            let on_table: Vec<&Statement> = statements
                .iter()
                .filter(|s| s.resources.contains(table))
                .collect();
            if !on_table.iter().any(|s| s.actions == ["dynamodb:GetItem"]) {
                problems.push(format!(
                    "{id} ({crate_name}): no GetItem statement for the token check on {table}"
                ));
            }
            for st in on_table {
                let writes = st.actions.iter().any(|a| a != "dynamodb:GetItem");
                if !writes {
                    continue;
                }
                if st.actions != ["dynamodb:UpdateItem"] {
                    problems.push(format!(
                        "{id} ({crate_name}), statement {}: a token check on {table} writes with UpdateItem only, in a statement of its own (has {:?})",
                        st.sid, st.actions
                    ));
                }
                let condition = st.condition.as_ref();
                let attributes = condition
                    .and_then(|c| c.at(&["ForAllValues:StringEquals", "dynamodb:Attributes"]))
                    .map(yaml::Y::strings);
                if attributes.as_ref() != Some(&expected) {
                    problems.push(format!(
                        "{id} ({crate_name}), statement {}: UpdateItem on {table} must be limited to dynamodb:Attributes {expected:?} (ForAllValues:StringEquals), has {attributes:?}",
                        st.sid
                    ));
                }
                let returns = condition
                    .and_then(|c| c.at(&["StringEqualsIfExists", "dynamodb:ReturnValues"]))
                    .map(yaml::Y::strings);
                if returns != Some(vec!["NONE".to_owned()]) {
                    problems.push(format!(
                        "{id} ({crate_name}), statement {}: UpdateItem on {table} must have StringEqualsIfExists dynamodb:ReturnValues NONE, has {returns:?}",
                        st.sid
                    ));
                }
            }
        }
    }
    // the device-facing functions and the management functions of other services, deviceconnect
    assert!(
        seen >= 8,
        "only {seen} token checks found: is code::EXTRACTORS still right?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The functions whose code signs: JWTs (`keys.issue`: useradm's login and personal access
/// tokens, deviceauth's auth requests) or configuration download links (`presign.link`, whose
/// HMAC key is derived from the private key). [`code::Reach::signs`] must find exactly these.
const SIGNERS: &[&str] = &[
    "deployments-devices",
    "deviceauth-devices",
    "useradm-management",
];

fn env_var<'a>(variables: Option<&'a yaml::Y>, name: &str) -> Option<&'a str> {
    variables.and_then(|v| v.get(name)).and_then(yaml::Y::str)
}

/// Finding 4: the private key only where the code signs. Each signer's environment has
/// `JWT_PRIVATE_KEY` (from the secret) and no public key; every other function, and the
/// deviceconnect container, has `JWT_PUBLIC_KEY` (from its parameter) and nothing that names the
/// secret: not in the `Globals`, not in an environment, a container secret or an IAM policy.
#[test]
fn only_the_functions_that_sign_get_the_jwt_private_key() -> anyhow::Result<()> {
    let template = raw_template()?;
    let code = code::Code::load(&root())?;
    let mut problems = Vec::new();
    let secret = "JwtPrivateKeySecretArn";
    let public_parameter = "JwtPublicKey";

    let globals = template.at(&["Globals", "Function", "Environment", "Variables"]);
    for name in [
        mender_config::vars::JWT_PRIVATE_KEY,
        mender_config::vars::JWT_PUBLIC_KEY,
    ] {
        if env_var(globals, name).is_some() {
            problems.push(format!(
                "Globals give every function {name}: set it per function"
            ));
        }
    }

    let mut signers = BTreeSet::new();
    for (crate_name, id, resource) in template_functions(&template) {
        let reach = code.reach(&crate_name)?;
        if reach.signs {
            signers.insert(crate_name.clone());
        }
        let variables = resource.at(&["Properties", "Environment", "Variables"]);
        let private = env_var(variables, mender_config::vars::JWT_PRIVATE_KEY);
        let public = env_var(variables, mender_config::vars::JWT_PUBLIC_KEY);
        if SIGNERS.contains(&crate_name.as_str()) {
            if !private.is_some_and(|v| v.contains(&format!("${{{secret}}}"))) {
                problems.push(format!(
                    "{id} ({crate_name}) signs but its JWT_PRIVATE_KEY is {private:?}, not the {secret} secret"
                ));
            }
            if public.is_some() {
                problems.push(format!(
                    "{id} ({crate_name}): a signer derives the public key; JWT_PUBLIC_KEY only adds to its 4 KB environment"
                ));
            }
        } else {
            if private.is_some() {
                problems.push(format!(
                    "{id} ({crate_name}) only verifies tokens but gets JWT_PRIVATE_KEY"
                ));
            }
            if public != Some(&format!("!Ref {public_parameter}")) {
                problems.push(format!(
                    "{id} ({crate_name}): JWT_PUBLIC_KEY is {public:?}, expected !Ref {public_parameter}"
                ));
            }
        }
        // nothing else of the function names the secret (policies, other variables)
        let elsewhere = resource
            .entries()
            .iter()
            .filter(|(k, _)| k != "Properties")
            .map(|(_, v)| v)
            .chain(
                resource
                    .get("Properties")
                    .map(yaml::Y::entries)
                    .unwrap_or_default()
                    .iter()
                    .filter(|(k, _)| k != "Environment")
                    .map(|(_, v)| v),
            )
            .flat_map(yaml::Y::scalars)
            .any(|s| s.contains(secret));
        if elsewhere {
            problems.push(format!(
                "{id} ({crate_name}): names {secret} outside JWT_PRIVATE_KEY"
            ));
        }
    }
    let expected: BTreeSet<String> = SIGNERS.iter().map(|s| (*s).to_owned()).collect();
    if signers != expected {
        problems.push(format!(
            "the functions whose code signs are {signers:?}; SIGNERS says {expected:?}"
        ));
    }

    // every other resource: no mention of the secret (container secrets, execution roles)
    let functions: BTreeSet<String> = template_functions(&template)
        .into_iter()
        .map(|(_, id, _)| id.to_owned())
        .collect();
    for (id, resource) in template
        .get("Resources")
        .map(yaml::Y::entries)
        .unwrap_or_default()
    {
        if functions.contains(id) {
            continue;
        }
        if resource
            .scalars()
            .iter()
            .any(|s| s.contains(secret) || s.contains("JWT_PRIVATE_KEY"))
        {
            problems.push(format!(
                "{id} names the private key ({secret} or JWT_PRIVATE_KEY)"
            ));
        }
    }
    // the deviceconnect container verifies with the public key
    for (id, task) in resources_of(&template, "AWS::ECS::TaskDefinition") {
        for container in task
            .at(&["Properties", "ContainerDefinitions"])
            .map(yaml::Y::items)
            .unwrap_or_default()
        {
            if container.get("Name").and_then(yaml::Y::str) != Some("deviceconnect") {
                continue;
            }
            let public = container
                .get("Environment")
                .map(yaml::Y::items)
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.get("Name").and_then(yaml::Y::str) == Some("JWT_PUBLIC_KEY"))
                .and_then(|e| e.get("Value"))
                .and_then(yaml::Y::str);
            if public != Some(&format!("!Ref {public_parameter}")) {
                problems.push(format!(
                    "{id}: the deviceconnect container's JWT_PUBLIC_KEY is {public:?}, expected !Ref {public_parameter}"
                ));
            }
        }
    }
    if template.at(&["Parameters", public_parameter]).is_none() {
        problems.push(format!("no parameter {public_parameter}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The artifacts bucket: TLS only (a `Deny` of every S3 action for `aws:SecureTransport`
/// false, on the bucket and its objects, for every principal), versioned, with noncurrent
/// versions and abandoned direct uploads (`uploads/`) expiring.
#[test]
fn artifacts_bucket_denies_plain_http_and_expires_old_versions() -> anyhow::Result<()> {
    let template = raw_template()?;
    let mut problems = Vec::new();
    let bucket = template
        .at(&["Resources", "ArtifactsBucket", "Properties"])
        .ok_or_else(|| anyhow::anyhow!("no ArtifactsBucket"))?;
    if bucket
        .at(&["VersioningConfiguration", "Status"])
        .and_then(yaml::Y::str)
        != Some("Enabled")
    {
        problems.push("ArtifactsBucket: VersioningConfiguration.Status is not Enabled".to_owned());
    }
    let expires_noncurrent = bucket
        .at(&["LifecycleConfiguration", "Rules"])
        .map(yaml::Y::items)
        .unwrap_or_default()
        .into_iter()
        .any(|rule| {
            rule.get("Status").and_then(yaml::Y::str) == Some("Enabled")
                && rule.get("Prefix").is_none()
                && rule.get("Filter").is_none()
                && rule
                    .at(&["NoncurrentVersionExpiration", "NoncurrentDays"])
                    .is_some()
        });
    let expires_uploads = bucket
        .at(&["LifecycleConfiguration", "Rules"])
        .map(yaml::Y::items)
        .unwrap_or_default()
        .into_iter()
        .any(|rule| {
            rule.get("Status").and_then(yaml::Y::str) == Some("Enabled")
                && rule.get("Prefix").and_then(yaml::Y::str) == Some("uploads/")
                && rule.get("ExpirationInDays").is_some()
        });
    if !expires_uploads {
        problems.push(
            "ArtifactsBucket: abandoned direct uploads (uploads/) never expire: no enabled rule with Prefix uploads/ and ExpirationInDays".to_owned(),
        );
    }
    if !expires_noncurrent {
        problems.push(
            "ArtifactsBucket: no enabled lifecycle rule for the whole bucket with NoncurrentVersionExpiration.NoncurrentDays".to_owned(),
        );
    }
    let denies_http = resources_of(&template, "AWS::S3::BucketPolicy")
        .into_iter()
        .filter(|(_, p)| {
            p.at(&["Properties", "Bucket"]).and_then(yaml::Y::str) == Some("!Ref ArtifactsBucket")
        })
        .flat_map(|(_, p)| {
            p.at(&["Properties", "PolicyDocument", "Statement"])
                .map(yaml::Y::items)
                .unwrap_or_default()
        })
        .any(|st| {
            let resources: Vec<&str> = st.get("Resource").map(yaml::Y::scalars).unwrap_or_default();
            st.get("Effect").and_then(yaml::Y::str) == Some("Deny")
                && st.get("Principal").and_then(yaml::Y::str) == Some("*")
                && st.get("Action").map(yaml::Y::strings) == Some(vec!["s3:*".to_owned()])
                && st
                    .at(&["Condition", "Bool", "aws:SecureTransport"])
                    .and_then(yaml::Y::str)
                    == Some("false")
                && resources.contains(&"!GetAtt ArtifactsBucket.Arn")
                && resources.contains(&"!Sub ${ArtifactsBucket.Arn}/*")
        });
    if !denies_http {
        problems.push(
            "no AWS::S3::BucketPolicy on ArtifactsBucket denies s3:* to * on the bucket and its objects when aws:SecureTransport is false".to_owned(),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The value of a `!Ref <Parameter>` of type Number: its default.
fn number_parameter_default(template: &yaml::Y, value: Option<&yaml::Y>) -> Option<i64> {
    let name = value.and_then(yaml::Y::str)?.strip_prefix("!Ref ")?;
    let parameter = template.at(&["Parameters", name])?;
    (parameter.get("Type").and_then(yaml::Y::str) == Some("Number")).then_some(())?;
    parameter
        .get("Default")
        .and_then(yaml::Y::str)?
        .parse()
        .ok()
}

/// The HTTP API: default route throttling (rate and burst, parameters with defaults) and
/// access logs (a JSON format with the request id, into a log group of this stack with a
/// retention).
#[test]
fn http_api_has_default_route_throttling_and_access_logs() -> anyhow::Result<()> {
    let template = raw_template()?;
    let mut problems = Vec::new();
    let apis = resources_of(&template, "AWS::Serverless::HttpApi");
    if apis.is_empty() {
        problems.push("no AWS::Serverless::HttpApi".to_owned());
    }
    for (id, api) in apis {
        let props = api.get("Properties");
        for limit in ["ThrottlingRateLimit", "ThrottlingBurstLimit"] {
            let value = props.and_then(|p| p.at(&["DefaultRouteSettings", limit]));
            let default = number_parameter_default(&template, value)
                .or_else(|| value.and_then(yaml::Y::str).and_then(|v| v.parse().ok()));
            if default.is_none_or(|d| d <= 0) {
                problems.push(format!(
                    "{id}: DefaultRouteSettings.{limit} is {value:?}, not a positive number (or a Number parameter with a default)"
                ));
            }
        }
        let logs = props.and_then(|p| p.get("AccessLogSettings"));
        let format = logs.and_then(|l| l.get("Format")).and_then(yaml::Y::str);
        if !format
            .is_some_and(|f| f.contains("$context.requestId") && f.contains("$context.status"))
        {
            problems.push(format!(
                "{id}: AccessLogSettings.Format {format:?} lacks $context.requestId or $context.status"
            ));
        }
        let destination = logs
            .and_then(|l| l.get("DestinationArn"))
            .and_then(yaml::Y::str)
            .map(yaml::refs)
            .unwrap_or_default();
        let group = destination.first().and_then(|g| {
            template
                .at(&["Resources", g])
                .filter(|r| r.get("Type").and_then(yaml::Y::str) == Some("AWS::Logs::LogGroup"))
        });
        match group {
            None => problems.push(format!(
                "{id}: AccessLogSettings.DestinationArn {destination:?} is not a log group of this stack"
            )),
            Some(g) if g.at(&["Properties", "RetentionInDays"]).is_none() => problems.push(format!(
                "{id}: the access log group {destination:?} has no RetentionInDays"
            )),
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// process-artifact (up to 15 minutes and 512 MB per upload) runs at most N at once: reserved
/// concurrency from a Number parameter with a default, and its queue's event source scaled to
/// no more than that, so further messages wait instead of being throttled towards the
/// dead-letter queue.
#[test]
fn process_artifact_has_reserved_concurrency() -> anyhow::Result<()> {
    let template = raw_template()?;
    let (_, id, function) = template_functions(&template)
        .into_iter()
        .find(|(name, _, _)| name == "process-artifact")
        .ok_or_else(|| anyhow::anyhow!("no process-artifact function"))?;
    let props = function.get("Properties");
    let reserved = props.and_then(|p| p.get("ReservedConcurrentExecutions"));
    let Some(default) = number_parameter_default(&template, reserved) else {
        panic!("{id}: ReservedConcurrentExecutions is {reserved:?}, not a Number parameter with a default");
    };
    assert!(default >= 1, "{id}: reserved concurrency default {default}");
    let events: Vec<&yaml::Y> = props
        .and_then(|p| p.get("Events"))
        .map(yaml::Y::entries)
        .unwrap_or_default()
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.get("Type").and_then(yaml::Y::str) == Some("SQS"))
        .collect();
    assert!(!events.is_empty(), "{id}: no SQS event");
    for event in events {
        let maximum = event.at(&["Properties", "ScalingConfig", "MaximumConcurrency"]);
        let max_default = number_parameter_default(&template, maximum)
            .or_else(|| maximum.and_then(yaml::Y::str).and_then(|v| v.parse().ok()));
        assert!(
            max_default.is_some_and(|m| m <= default),
            "{id}: the SQS event's ScalingConfig.MaximumConcurrency ({maximum:?}) must not exceed the reserved concurrency"
        );
    }
    Ok(())
}
