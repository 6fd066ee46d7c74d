//! Reads `infra/template.yaml`, the single source of truth, for what the local stack must
//! create: DynamoDB tables (keys, TTL), SQS queues (FIFO, visibility, dead-letter redrive) and
//! the artifacts bucket. CloudFormation short tags (`!Ref`, `!GetAtt`, `!Sub`) are understood
//! where the template uses them.

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    pub logical_id: String,
    pub fifo: bool,
    pub visibility_timeout: Option<i64>,
    /// (dead-letter queue logical id, maxReceiveCount).
    pub dead_letter: Option<(String, i64)>,
}

#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub tables: Vec<TableDef>,
    pub queues: Vec<QueueDef>,
    pub buckets: Vec<String>,
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
                out.tables.push(TableDef {
                    logical_id: id,
                    attributes: pairs("AttributeDefinitions", "AttributeName", "AttributeType"),
                    key_schema: pairs("KeySchema", "AttributeName", "KeyType"),
                    ttl_attribute: ttl,
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
}
