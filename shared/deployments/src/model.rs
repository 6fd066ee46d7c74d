//! Artifacts, deployments and device deployments as plain data, with upstream's rules: the
//! device statuses and their order, which statuses a device may report, the deployment status
//! computed from its counters, artifact choice for a device, and the uniqueness keys of an
//! artifact (name x every combination of its depends).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The status of one device's deployment. Its serde name (`pending`, `already-installed`,
/// ...) is the wire format, the stored DynamoDB value and the `c_<name>` counter; the order
/// of the variants is upstream's internal sort order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Failure,
    Aborted,
    PauseBeforeInstalling,
    PauseBeforeCommitting,
    PauseBeforeRebooting,
    Downloading,
    Installing,
    Rebooting,
    #[default]
    Pending,
    Success,
    Noartifact,
    #[serde(rename = "already-installed")]
    AlreadyInstalled,
    Decommissioned,
}

/// Every device deployment status in upstream's internal sort order.
pub const STATUS_ORDER: [DeviceStatus; 13] = [
    DeviceStatus::Failure,
    DeviceStatus::Aborted,
    DeviceStatus::PauseBeforeInstalling,
    DeviceStatus::PauseBeforeCommitting,
    DeviceStatus::PauseBeforeRebooting,
    DeviceStatus::Downloading,
    DeviceStatus::Installing,
    DeviceStatus::Rebooting,
    DeviceStatus::Pending,
    DeviceStatus::Success,
    DeviceStatus::Noartifact,
    DeviceStatus::AlreadyInstalled,
    DeviceStatus::Decommissioned,
];

/// Statuses that end a device deployment.
pub const TERMINAL: [DeviceStatus; 6] = [
    DeviceStatus::Success,
    DeviceStatus::Failure,
    DeviceStatus::AlreadyInstalled,
    DeviceStatus::Noartifact,
    DeviceStatus::Aborted,
    DeviceStatus::Decommissioned,
];

/// What a device may report.
pub const DEVICE_REPORTABLE: [DeviceStatus; 9] = [
    DeviceStatus::Downloading,
    DeviceStatus::Installing,
    DeviceStatus::Rebooting,
    DeviceStatus::Success,
    DeviceStatus::Failure,
    DeviceStatus::AlreadyInstalled,
    DeviceStatus::PauseBeforeInstalling,
    DeviceStatus::PauseBeforeCommitting,
    DeviceStatus::PauseBeforeRebooting,
];

/// The three pause statuses.
const PAUSED: [DeviceStatus; 3] = [
    DeviceStatus::PauseBeforeInstalling,
    DeviceStatus::PauseBeforeCommitting,
    DeviceStatus::PauseBeforeRebooting,
];

impl DeviceStatus {
    /// The serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Failure => "failure",
            DeviceStatus::Aborted => "aborted",
            DeviceStatus::PauseBeforeInstalling => "pause_before_installing",
            DeviceStatus::PauseBeforeCommitting => "pause_before_committing",
            DeviceStatus::PauseBeforeRebooting => "pause_before_rebooting",
            DeviceStatus::Downloading => "downloading",
            DeviceStatus::Installing => "installing",
            DeviceStatus::Rebooting => "rebooting",
            DeviceStatus::Pending => "pending",
            DeviceStatus::Success => "success",
            DeviceStatus::Noartifact => "noartifact",
            DeviceStatus::AlreadyInstalled => "already-installed",
            DeviceStatus::Decommissioned => "decommissioned",
        }
    }

    /// The status named `name` (its serde name), `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        STATUS_ORDER.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the status ends the device deployment.
    pub fn is_terminal(self) -> bool {
        TERMINAL.contains(&self)
    }

    /// The `c_<status>` counter attribute of a deployment.
    pub fn counter(self) -> String {
        format!("c_{}", self.as_str())
    }
}

impl std::fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a deployment, computed from its counters ([`Deployment::computed_status`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentStatus {
    #[default]
    Pending,
    Inprogress,
    Finished,
}

/// Expands a status filter alias (`pause`, `active`, `finished`) or a single status.
pub fn status_filter(filter: &str) -> Option<Vec<DeviceStatus>> {
    match filter {
        "pause" => Some(PAUSED.to_vec()),
        "active" => Some(
            PAUSED
                .into_iter()
                .chain([
                    DeviceStatus::Downloading,
                    DeviceStatus::Installing,
                    DeviceStatus::Rebooting,
                    DeviceStatus::Pending,
                ])
                .collect(),
        ),
        "finished" => Some(TERMINAL.to_vec()),
        other => DeviceStatus::parse(other).map(|s| vec![s]),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ArtifactFile {
    pub name: String,
    pub checksum: String,
    pub size: u64,
    pub date: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Update {
    pub type_info: TypeInfo,
    pub files: Vec<ArtifactFile>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct TypeInfo {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ArtifactInfo {
    pub format: String,
    pub version: u32,
}

/// An artifact's metadata as stored and shown (`GET /artifacts/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Artifact {
    pub id: String,
    pub name: String,
    pub description: String,
    pub device_types_compatible: Vec<String>,
    pub info: ArtifactInfo,
    pub signed: bool,
    pub updates: Vec<Update>,
    pub artifact_provides: BTreeMap<String, String>,
    /// Values are strings or lists of strings; `device_type` is always present.
    pub artifact_depends: BTreeMap<String, Value>,
    pub clears_artifact_provides: Vec<String>,
    pub size: u64,
    pub modified: String,
}

impl Artifact {
    /// The server's view of an artifact the reader parsed.
    pub fn from_parsed(
        id: String,
        description: String,
        size: u64,
        info: mender_artifact::ArtifactInfo,
    ) -> Artifact {
        let depends = info
            .depends
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect();
        Artifact {
            id,
            name: info.name.clone(),
            description,
            device_types_compatible: info.device_types_compatible.clone(),
            info: ArtifactInfo {
                format: info.format.clone(),
                version: info.version,
            },
            signed: info.signed,
            updates: info
                .payloads
                .iter()
                .map(|p| Update {
                    type_info: TypeInfo {
                        kind: p.payload_type.clone().unwrap_or_default(),
                    },
                    files: p
                        .files
                        .iter()
                        .map(|f| ArtifactFile {
                            name: f.name.clone(),
                            checksum: f.checksum.clone(),
                            size: f.size.unwrap_or(0),
                            date: f.date.clone().unwrap_or_default(),
                        })
                        .collect(),
                    metadata: p.meta_data.clone(),
                })
                .collect(),
            artifact_provides: info.provides.clone(),
            artifact_depends: depends,
            clears_artifact_provides: info.clears_provides.clone(),
            size,
            modified: mender_http::time::now_string(),
        }
    }

    /// The API JSON, with the deprecated `meta_data` list next to `metadata`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        if let Some(updates) = v.get_mut("updates").and_then(Value::as_array_mut) {
            for (update, src) in updates.iter_mut().zip(&self.updates) {
                if !src.metadata.is_empty() {
                    let list: Vec<Value> = src
                        .metadata
                        .iter()
                        .map(|(k, v)| json!({"Key": k, "Value": v}))
                        .collect();
                    update["meta_data"] = Value::Array(list);
                }
            }
        }
        v
    }

    /// Every (key, value) combination of the depends, as canonical JSON strings: two artifacts
    /// with the same name conflict when they share one. `None` when there are over `max`.
    pub fn depends_combinations(&self, max: usize) -> Option<Vec<String>> {
        let mut combos: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
        for (key, value) in &self.artifact_depends {
            let values: Vec<String> = match value {
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect(),
                Value::String(s) => vec![s.clone()],
                other => vec![other.to_string()],
            };
            if values.is_empty() {
                continue;
            }
            let mut next = Vec::with_capacity(combos.len() * values.len());
            for combo in &combos {
                for v in &values {
                    let mut c = combo.clone();
                    c.insert(key.clone(), v.clone());
                    next.push(c);
                }
            }
            if next.len() > max {
                return None;
            }
            combos = next;
        }
        Some(
            combos
                .iter()
                .map(|c| serde_json::to_string(c).unwrap_or_default())
                .collect(),
        )
    }
}

/// The 13 per-status counters of a deployment.
pub type Statistics = BTreeMap<String, i64>;

pub fn empty_statistics() -> Statistics {
    STATUS_ORDER.iter().map(|s| (s.to_string(), 0)).collect()
}

/// A device status counter of `statistics` (0 when absent).
fn count(statistics: &Statistics, status: DeviceStatus) -> i64 {
    statistics.get(status.as_str()).copied().unwrap_or(0)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    pub artifact_name: String,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    pub status: DeploymentStatus,
    pub artifacts: Vec<String>,
    pub device_list: Vec<String>,
    pub max_devices: i64,
    pub device_count: i64,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub force_installation: bool,
    #[serde(default)]
    pub all_devices: bool,
    #[serde(default)]
    pub total_size: u64,
    /// `configuration` for a configuration deployment (SPEC §5.13); empty: `software`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// A configuration deployment's configuration object (JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    /// A configuration deployment's `retries` (stored; not acted upon).
    #[serde(default)]
    pub retries: u64,
    /// Counters, kept as top-level `c_<status>` attributes in the store (atomic `ADD`).
    #[serde(skip)]
    pub statistics: Statistics,
}

impl Deployment {
    /// A configuration deployment (its artifact is generated on download).
    pub fn is_configuration(&self) -> bool {
        self.kind == crate::configuration::CONFIGURATION
    }

    /// Upstream's status: finished when the finished time is set or every target is terminal;
    /// in progress once any device moved; else pending.
    pub fn computed_status(&self) -> DeploymentStatus {
        if self.finished.is_some() {
            return DeploymentStatus::Finished;
        }
        let terminal: i64 = TERMINAL.iter().map(|s| count(&self.statistics, *s)).sum();
        if self.max_devices > 0 && terminal >= self.max_devices {
            return DeploymentStatus::Finished;
        }
        let moved = self
            .statistics
            .iter()
            .any(|(status, n)| *n > 0 && status != "pending" && status != "decommissioned");
        if moved {
            DeploymentStatus::Inprogress
        } else {
            DeploymentStatus::Pending
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "artifact_name": self.artifact_name,
            "created": self.created,
            "finished": self.finished,
            "status": self.status,
            "device_count": self.device_count,
            "max_devices": self.max_devices,
            "artifacts": self.artifacts,
            "groups": self.groups,
            "type": if self.is_configuration() { "configuration" } else { "software" },
            "configuration": self.configuration.as_deref().map(crate::configuration::shown),
            "force_installation": self.force_installation,
            "statistics": {"status": self.statistics, "total_size": self.total_size},
        })
        .as_object()
        .map(|o| {
            Value::Object(
                o.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        })
        .unwrap_or(Value::Null)
    }
}

/// One device's progress in one deployment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct DeviceDeployment {
    pub id: String,
    pub deployment_id: String,
    pub device_id: String,
    pub status: DeviceStatus,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substate: Option<String>,
    /// Set once the device fetched the deployment (`next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_id: Option<String>,
    /// The device's first `next` request (device type, artifact name), for consistency checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default)]
    pub log: bool,
    /// When the device's history was deleted (`DELETE .../devices/{id}/history`); only finished
    /// device deployments carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
}

/// Among a deployment's artifacts, the smallest one compatible with `device_type`.
pub fn choose_artifact<'a>(artifacts: &'a [Artifact], device_type: &str) -> Option<&'a Artifact> {
    artifacts
        .iter()
        .filter(|a| a.device_types_compatible.iter().any(|t| t == device_type))
        .min_by_key(|a| a.size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deployment_status_from_counters() {
        let mut d = Deployment {
            max_devices: 2,
            statistics: empty_statistics(),
            ..Default::default()
        };
        d.statistics.insert("pending".into(), 2);
        assert_eq!(d.computed_status(), DeploymentStatus::Pending);
        d.statistics.insert("pending".into(), 1);
        d.statistics.insert("downloading".into(), 1);
        assert_eq!(d.computed_status(), DeploymentStatus::Inprogress);
        d.statistics.insert("downloading".into(), 0);
        d.statistics.insert("success".into(), 1);
        d.statistics.insert("pending".into(), 0);
        d.statistics.insert("decommissioned".into(), 1);
        assert_eq!(d.computed_status(), DeploymentStatus::Finished);
        let only_decommissioned = Deployment {
            max_devices: 2,
            statistics: [
                ("pending".to_string(), 1),
                ("decommissioned".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        assert_eq!(
            only_decommissioned.computed_status(),
            DeploymentStatus::Pending
        );
    }

    #[test]
    fn combinations_of_depends() {
        let a = Artifact {
            name: "n".into(),
            artifact_depends: [
                ("device_type".to_string(), json!(["a", "b"])),
                ("k".to_string(), json!("v")),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let combos = a.depends_combinations(1024).unwrap();
        assert_eq!(
            combos,
            vec![
                r#"{"device_type":"a","k":"v"}"#,
                r#"{"device_type":"b","k":"v"}"#
            ]
        );
        assert_eq!(a.depends_combinations(1), None);
    }

    #[test]
    fn smallest_compatible_artifact() {
        let art = |id: &str, t: &str, size| Artifact {
            id: id.into(),
            device_types_compatible: vec![t.into()],
            size,
            ..Default::default()
        };
        let all = vec![
            art("big", "x", 10),
            art("small", "x", 5),
            art("other", "y", 1),
        ];
        assert_eq!(
            choose_artifact(&all, "x").map(|a| a.id.as_str()),
            Some("small")
        );
        assert!(choose_artifact(&all, "z").is_none());
    }

    #[test]
    fn status_names_are_the_stored_values() {
        for status in STATUS_ORDER {
            assert_eq!(json!(status), json!(status.as_str()));
            assert_eq!(DeviceStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(json!(DeviceStatus::AlreadyInstalled), "already-installed");
        assert_eq!(
            json!(DeviceStatus::PauseBeforeRebooting),
            "pause_before_rebooting"
        );
        assert_eq!(DeviceStatus::Noartifact.counter(), "c_noartifact");
        let mut sorted = STATUS_ORDER;
        sorted.sort();
        assert_eq!(sorted, STATUS_ORDER);
        assert_eq!(json!(DeploymentStatus::Inprogress), "inprogress");
    }

    #[test]
    fn status_aliases() {
        assert_eq!(status_filter("pause").unwrap().len(), 3);
        assert!(status_filter("finished")
            .unwrap()
            .contains(&DeviceStatus::Aborted));
        assert_eq!(status_filter("success"), Some(vec![DeviceStatus::Success]));
        assert_eq!(status_filter("bogus"), None);
    }
}
