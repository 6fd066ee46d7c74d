//! The parse result ([`ArtifactInfo`] and friends) and the JSON shapes of the metadata
//! members inside an artifact (`version`, `header-info`, `type-info`, `files`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compression::Compression;

/// A JSON object (used for payload `meta-data`).
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Value of a "depends" entry: type-info depends may be a string or a list of strings;
/// header-info depends (`device_type`, `artifact_name`, `artifact_group`) are lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DependValue {
    /// A single accepted value.
    One(String),
    /// Any of these values.
    Many(Vec<String>),
}

impl DependValue {
    /// The accepted values as a slice-like list.
    pub fn values(&self) -> Vec<&str> {
        match self {
            DependValue::One(v) => vec![v.as_str()],
            DependValue::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl From<&str> for DependValue {
    fn from(v: &str) -> Self {
        DependValue::One(v.to_string())
    }
}

impl From<Vec<String>> for DependValue {
    fn from(v: Vec<String>) -> Self {
        DependValue::Many(v)
    }
}

/// Everything the server needs to know about an artifact.
///
/// Top-level `provides`/`depends`/`clears_provides` are the merge of `header-info` and all
/// payloads' `type-info`, as upstream's `MergeArtifactProvides`/`MergeArtifactDepends` compute
/// them (so `provides` contains `artifact_name` and `depends` contains `device_type`). For
/// format v2 artifacts they are empty, as upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactInfo {
    /// Always `"mender"`.
    pub format: String,
    /// Format version: 2 or 3.
    pub version: u32,
    /// Artifact name (`artifact_provides.artifact_name`).
    pub name: String,
    /// `artifact_provides.artifact_group`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_group: Option<String>,
    /// A `manifest.sig` member is present (the signature is not verified).
    pub signed: bool,
    /// `artifact_depends.device_type` (v3) or `device_types_compatible` (v2).
    pub device_types_compatible: Vec<String>,
    /// Merged artifact provides.
    pub provides: BTreeMap<String, String>,
    /// Merged artifact depends.
    pub depends: BTreeMap<String, DependValue>,
    /// Concatenated `clears_artifact_provides` of all payloads.
    pub clears_provides: Vec<String>,
    /// One entry per payload, in order.
    pub payloads: Vec<PayloadInfo>,
    /// Names of the state scripts (`ArtifactInstall_Enter_00`, ...).
    pub scripts: Vec<String>,
    /// Bytes read from the input. After a full read this is the artifact's size up to the
    /// end-of-archive marker (anything after it is not read); after a header-only read, the
    /// offset where reading stopped (end of `header.tar*`). [`StreamParser`](crate::StreamParser)
    /// sets it to the number of bytes fed.
    pub size: u64,
    /// Compression of `header.tar*`.
    pub compression: Compression,
    /// The artifact has an augmented header (`manifest-augment`, `header-augment.tar*`).
    pub augmented: bool,
    /// Every payload file was read and matched its manifest checksum (full mode).
    pub verified: bool,
}

/// One payload (update) of an artifact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayloadInfo {
    /// Payload type (`rootfs-image`, `single-file`, `script`...), `None` for an empty
    /// (bootstrap) payload.
    #[serde(rename = "type")]
    pub payload_type: Option<String>,
    /// `type-info` `artifact_provides` (merged with the augmented header's).
    pub provides: BTreeMap<String, String>,
    /// `type-info` `artifact_depends`.
    pub depends: BTreeMap<String, DependValue>,
    /// `type-info` `clears_artifact_provides`.
    pub clears_provides: Vec<String>,
    /// `headers/NNNN/meta-data` (empty object when absent).
    pub meta_data: JsonObject,
    /// Payload files. After a full read, in data-archive order with size and date; after a
    /// header-only read, in manifest order without them.
    pub files: Vec<FileInfo>,
}

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// File name (no directory part).
    pub name: String,
    /// Size in bytes (known after a full read only).
    pub size: Option<u64>,
    /// SHA-256 of the content, lowercase hex (from the manifest; verified in full mode).
    pub checksum: String,
    /// Modification time from the data archive, RFC 3339 UTC (full read only).
    pub date: Option<String>,
    /// Same as `date`, as Unix seconds.
    pub mtime: Option<i64>,
}

/// `version` member.
#[derive(Debug, Deserialize)]
pub(crate) struct VersionJson {
    pub format: String,
    pub version: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UpdateTypeJson {
    #[serde(rename = "type", default)]
    pub update_type: Option<String>,
}

/// `header-info` of a v3 artifact.
#[derive(Debug, Deserialize)]
pub(crate) struct HeaderInfoV3 {
    #[serde(default)]
    pub payloads: Option<Vec<UpdateTypeJson>>,
    #[serde(default)]
    pub artifact_provides: Option<ArtifactProvidesJson>,
    #[serde(default)]
    pub artifact_depends: Option<ArtifactDependsJson>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ArtifactProvidesJson {
    #[serde(default)]
    pub artifact_name: String,
    #[serde(default)]
    pub artifact_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ArtifactDependsJson {
    #[serde(default)]
    pub artifact_name: Option<Vec<String>>,
    #[serde(default)]
    pub device_type: Option<Vec<String>>,
    #[serde(default)]
    pub artifact_group: Option<Vec<String>>,
}

/// `header-info` of a v2 artifact.
#[derive(Debug, Deserialize)]
pub(crate) struct HeaderInfoV2 {
    #[serde(default)]
    pub artifact_name: String,
    #[serde(default)]
    pub updates: Option<Vec<UpdateTypeJson>>,
    #[serde(default)]
    pub device_types_compatible: Option<Vec<String>>,
}

/// `headers/NNNN/type-info`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TypeInfoJson {
    #[serde(rename = "type", default)]
    pub type_name: Option<String>,
    #[serde(default)]
    pub artifact_provides: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub artifact_depends: Option<BTreeMap<String, DependValue>>,
    #[serde(default)]
    pub clears_artifact_provides: Option<Vec<String>>,
}

/// `headers/NNNN/files` (v2).
#[derive(Debug, Deserialize)]
pub(crate) struct FilesJson {
    #[serde(default)]
    pub files: Vec<String>,
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-01-31T12:00:00Z`).
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn depend_values() {
        let m: BTreeMap<String, DependValue> =
            serde_json::from_str(r#"{"a":"x","b":["y","z"]}"#).unwrap();
        assert_eq!(m["a"], DependValue::One("x".into()));
        assert_eq!(m["b"].values(), vec!["y", "z"]);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"a":"x","b":["y","z"]}"#
        );
    }
}
