//! Reads `infra/template.yaml`, the single source of truth, for what the local stack must
//! create: DynamoDB tables (keys, TTL), SQS queues (FIFO, visibility, dead-letter redrive) and
//! the artifacts bucket; and for what it must serve and what the template checks compare with
//! the code: each function's crate, HTTP routes, queue and the resources its IAM policies name.
//! CloudFormation short tags (`!Ref`, `!GetAtt`, `!Sub`) are understood where the template uses
//! them.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, Context};
use serde_yaml::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub logical_id: String,
    /// (name, type) of key attributes.
    pub attributes: Vec<(String, String)>,
    /// (name, HASH|RANGE).
    pub key_schema: Vec<(String, String)>,
    pub ttl_attribute: Option<String>,
    pub indexes: Vec<IndexDef>,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexDef {
    pub name: String,
    /// (name, HASH|RANGE).
    pub keys: Vec<(String, String)>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    /// With `INCLUDE`: the attributes projected besides the keys.
    pub non_key_attributes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    pub logical_id: String,
    pub fifo: bool,
    pub visibility_timeout: Option<i64>,
    /// (dead-letter queue logical id, maxReceiveCount).
    pub dead_letter: Option<(String, i64)>,
}

/// An `AWS::Serverless::Function`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FunctionDef {
    pub logical_id: String,
    /// As written, e.g. `../functions/inventory-devices` (relative to the template).
    pub code_uri: String,
    /// `Metadata.BuildMethod`, e.g. `makefile`.
    pub build_method: Option<String>,
    /// `(METHOD, path)` of each `HttpApi` event, method upper-cased.
    pub http_routes: Vec<(String, String)>,
    /// Logical ids of the queues of its `SQS` events.
    pub sqs_queues: Vec<String>,
    /// Logical ids its `Policies` refer to (`!Ref`, `!GetAtt`, `${...}` in `!Sub`).
    pub policy_refs: BTreeSet<String>,
    /// Literal strings in `Resource` fields of its policies (`*`, hand-written ARNs), and
    /// managed policies named by string: anything a logical id does not pin down.
    pub policy_literals: Vec<String>,
}

impl FunctionDef {
    /// The crate directory name when `CodeUri` is `../functions/<crate>`.
    pub fn crate_name(&self) -> Option<&str> {
        self.code_uri
            .trim_end_matches('/')
            .strip_prefix("../functions/")
            .filter(|name| !name.is_empty() && !name.contains('/'))
    }
}

/// An `AWS::IAM::Role` (e.g. a container's task role): what its policies reach.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoleDef {
    pub logical_id: String,
    /// As [`FunctionDef::policy_refs`], from its inline `Policies`.
    pub policy_refs: BTreeSet<String>,
    /// As [`FunctionDef::policy_literals`]; `ManagedPolicyArns` entries count as literals.
    pub policy_literals: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub tables: Vec<TableDef>,
    pub queues: Vec<QueueDef>,
    pub buckets: Vec<String>,
    pub functions: Vec<FunctionDef>,
    pub roles: Vec<RoleDef>,
}

impl Resources {
    /// Every `(METHOD, path)` the template routes to a function.
    pub fn http_routes(&self) -> BTreeSet<(String, String)> {
        self.functions
            .iter()
            .flat_map(|f| f.http_routes.iter().cloned())
            .collect()
    }
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The logical id an `!GetAtt X.Arn` / `{"Fn::GetAtt": [X, Arn]}` refers to.
fn get_att_target(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag == "!GetAtt" => {
            str_of(&t.value).map(|s| s.split('.').next().unwrap_or("").to_owned())
        }
        Value::Mapping(m) => m
            .get("Fn::GetAtt")
            .and_then(|a| a.as_sequence())
            .and_then(|s| s.first())
            .and_then(str_of),
        _ => None,
    }
}

/// Collects the logical ids `v` refers to into `refs`, and literal `Resource` strings (or
/// string policies) into `literals`.
fn collect_refs(
    v: &Value,
    in_resource: bool,
    refs: &mut BTreeSet<String>,
    literals: &mut Vec<String>,
) {
    match v {
        Value::Tagged(t) => match t.tag.to_string().as_str() {
            "!Ref" => refs.extend(str_of(&t.value).filter(|r| !r.starts_with("AWS::"))),
            "!GetAtt" => refs.extend(get_att_target(v)),
            "!Sub" => {
                let text = match &t.value {
                    Value::Sequence(s) => s.first().and_then(str_of),
                    other => str_of(other),
                };
                let text = text.unwrap_or_default();
                let mut pinned = false;
                for part in text.split("${").skip(1) {
                    let name = part.split('}').next().unwrap_or("");
                    let name = name.split('.').next().unwrap_or("");
                    if !name.starts_with("AWS::") && !name.is_empty() {
                        refs.insert(name.to_owned());
                        pinned = true;
                    }
                }
                // `arn:...:${AWS::AccountId}:table/*` names no resource of the stack
                if in_resource && !pinned {
                    literals.push(text);
                }
            }
            _ => collect_refs(&t.value, in_resource, refs, literals),
        },
        Value::Mapping(m) => {
            if let Some(target) = m.get("Ref").and_then(str_of) {
                if !target.starts_with("AWS::") {
                    refs.insert(target);
                }
            } else if m.contains_key("Fn::GetAtt") {
                refs.extend(get_att_target(v));
            } else {
                for (key, value) in m {
                    let is_resource = matches!(key.as_str(), Some("Resource" | "NotResource"));
                    collect_refs(value, in_resource || is_resource, refs, literals);
                }
            }
        }
        Value::Sequence(s) => {
            for item in s {
                collect_refs(item, in_resource, refs, literals);
            }
        }
        Value::String(text) if in_resource => literals.push(text.clone()),
        _ => {}
    }
}

fn function_def(id: String, resource: &Value, props: &Value) -> FunctionDef {
    let mut def = FunctionDef {
        logical_id: id,
        code_uri: props.get("CodeUri").and_then(str_of).unwrap_or_default(),
        build_method: resource
            .get("Metadata")
            .and_then(|m| m.get("BuildMethod"))
            .and_then(str_of),
        ..Default::default()
    };
    if let Some(events) = props.get("Events").and_then(Value::as_mapping) {
        for event in events.values() {
            let kind = event.get("Type").and_then(str_of).unwrap_or_default();
            let p = event.get("Properties").cloned().unwrap_or(Value::Null);
            match kind.as_str() {
                "HttpApi" => def.http_routes.push((
                    p.get("Method")
                        .and_then(str_of)
                        .unwrap_or_default()
                        .to_ascii_uppercase(),
                    p.get("Path").and_then(str_of).unwrap_or_default(),
                )),
                "SQS" => def
                    .sqs_queues
                    .extend(p.get("Queue").and_then(get_att_target)),
                _ => {}
            }
        }
    }
    collect_policies(
        props.get("Policies"),
        &mut def.policy_refs,
        &mut def.policy_literals,
    );
    def
}

/// What a `Policies` list (or single policy) reaches.
fn collect_policies(
    policies: Option<&Value>,
    refs: &mut BTreeSet<String>,
    literals: &mut Vec<String>,
) {
    let list = match policies {
        Some(Value::Sequence(s)) => s.clone(),
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    };
    for policy in &list {
        match policy {
            // a managed policy by name or ARN: not pinned to this stack's resources
            Value::String(name) => literals.push(name.clone()),
            other => collect_refs(other, false, refs, literals),
        }
    }
}

fn role_def(id: String, props: &Value) -> RoleDef {
    let mut role = RoleDef {
        logical_id: id,
        ..Default::default()
    };
    collect_policies(
        props.get("Policies"),
        &mut role.policy_refs,
        &mut role.policy_literals,
    );
    if let Some(Value::Sequence(managed)) = props.get("ManagedPolicyArns") {
        for arn in managed {
            role.policy_literals
                .push(str_of(arn).unwrap_or_else(|| "ManagedPolicyArns".to_owned()));
        }
    }
    role
}

pub fn load(path: &Path) -> anyhow::Result<Resources> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text)
}

pub fn parse(text: &str) -> anyhow::Result<Resources> {
    let doc: Value = serde_yaml::from_str(text).context("template is not YAML")?;
    let resources = doc
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| anyhow!("template has no Resources"))?;
    let mut out = Resources::default();
    for (id, resource) in resources {
        let id = str_of(id).unwrap_or_default();
        let kind = resource.get("Type").and_then(str_of).unwrap_or_default();
        let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
        match kind.as_str() {
            "AWS::DynamoDB::Table" => {
                let pairs = |list: &str, a: &str, b: &str| -> Vec<(String, String)> {
                    props
                        .get(list)
                        .and_then(Value::as_sequence)
                        .map(|s| {
                            s.iter()
                                .filter_map(|e| {
                                    Some((e.get(a).and_then(str_of)?, e.get(b).and_then(str_of)?))
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let ttl = props.get("TimeToLiveSpecification").and_then(|t| {
                    let enabled = t.get("Enabled").and_then(Value::as_bool).unwrap_or(false);
                    enabled
                        .then(|| t.get("AttributeName").and_then(str_of))
                        .flatten()
                });
                let indexes = props
                    .get("GlobalSecondaryIndexes")
                    .and_then(Value::as_sequence)
                    .map(|list| {
                        list.iter()
                            .filter_map(|index| {
                                let name = index.get("IndexName").and_then(str_of)?;
                                let keys = index
                                    .get("KeySchema")
                                    .and_then(Value::as_sequence)?
                                    .iter()
                                    .filter_map(|k| {
                                        Some((
                                            k.get("AttributeName").and_then(str_of)?,
                                            k.get("KeyType").and_then(str_of)?,
                                        ))
                                    })
                                    .collect();
                                let projection = index.get("Projection");
                                Some(IndexDef {
                                    name,
                                    keys,
                                    projection: projection
                                        .and_then(|p| p.get("ProjectionType"))
                                        .and_then(str_of)
                                        .unwrap_or_else(|| "ALL".into()),
                                    non_key_attributes: projection
                                        .and_then(|p| p.get("NonKeyAttributes"))
                                        .and_then(Value::as_sequence)
                                        .map(|l| l.iter().filter_map(str_of).collect())
                                        .unwrap_or_default(),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.tables.push(TableDef {
                    logical_id: id,
                    attributes: pairs("AttributeDefinitions", "AttributeName", "AttributeType"),
                    key_schema: pairs("KeySchema", "AttributeName", "KeyType"),
                    ttl_attribute: ttl,
                    indexes,
                });
            }
            "AWS::SQS::Queue" => {
                let redrive = props.get("RedrivePolicy");
                let dead_letter = redrive.and_then(|r| {
                    let target = get_att_target(r.get("deadLetterTargetArn")?)?;
                    let max = r
                        .get("maxReceiveCount")
                        .and_then(str_of)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(5);
                    Some((target, max))
                });
                out.queues.push(QueueDef {
                    logical_id: id,
                    fifo: props
                        .get("FifoQueue")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    visibility_timeout: props
                        .get("VisibilityTimeout")
                        .and_then(str_of)
                        .and_then(|s| s.parse().ok()),
                    dead_letter,
                });
            }
            "AWS::S3::Bucket" => out.buckets.push(id),
            "AWS::Serverless::Function" => out.functions.push(function_def(id, resource, &props)),
            "AWS::IAM::Role" => out.roles.push(role_def(id, &props)),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_tables_and_queues() {
        let r = parse(
            r#"
Resources:
  T:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
  Q:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      VisibilityTimeout: 60
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt D.Arn
        maxReceiveCount: 5
  D:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true}
"#,
        )
        .unwrap();
        assert_eq!(r.tables[0].ttl_attribute.as_deref(), Some("expires_at"));
        assert_eq!(
            r.tables[0].key_schema,
            vec![("pk".to_string(), "HASH".to_string())]
        );
        let q = r.queues.iter().find(|q| q.logical_id == "Q").unwrap();
        assert_eq!(q.dead_letter, Some(("D".into(), 5)));
        assert!(q.fifo);
    }

    #[test]
    fn reads_functions() {
        let r = parse(
            r#"
Resources:
  F:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: makefile}
    Properties:
      CodeUri: ../functions/f
      Policies:
        - AmazonS3FullAccess
        - DynamoDBReadPolicy: {TableName: !Ref T}
        - Version: "2012-10-17"
          Statement:
            - Effect: Allow
              Action: dynamodb:GetItem
              Resource: [!GetAtt U.Arn, !Sub "${V.Arn}/index/*", "*", !Sub "arn:aws:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"]
      Events:
        A: {Type: HttpApi, Properties: {Method: get, Path: "/a/{id}"}}
        B: {Type: SQS, Properties: {Queue: !GetAtt Q.Arn}}
"#,
        )
        .unwrap();
        let f = &r.functions[0];
        assert_eq!(f.crate_name(), Some("f"));
        assert_eq!(f.build_method.as_deref(), Some("makefile"));
        assert_eq!(f.http_routes, vec![("GET".into(), "/a/{id}".into())]);
        assert_eq!(f.sqs_queues, vec!["Q".to_string()]);
        assert_eq!(
            f.policy_refs.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["T", "U", "V"]
        );
        assert_eq!(
            f.policy_literals,
            vec![
                "AmazonS3FullAccess",
                "*",
                "arn:aws:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"
            ]
        );
    }
}
