//! Software (`/api/management/v1alpha1/deployments/software`, the GUI's release picker): the
//! releases with their tags, notes, kind and compatible device types, as upstream's
//! `model/software.go` (`SoftwareFilter`, `SoftwareTagsFilter`, `Software.MarshalJSON`) and
//! `store/mongo/datastore_mongo_software.go`. Open source has only `release` software (no
//! manifests), so `kind=manifest` matches nothing.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::releases::Release;
use crate::service::Error;

pub const KIND_RELEASE: &str = "release";
pub const KIND_MANIFEST: &str = "manifest";
const SORTS: [&str; 6] = [
    "modified:asc",
    "modified:desc",
    "name:asc",
    "name:desc",
    "tags:asc",
    "tags:desc",
];

/// The list's filters and order (upstream `getSoftwareFilter` + `SoftwareFilter.Validate`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SoftwareFilter {
    /// Repeatable `name`: exact names (any of).
    pub names: Vec<String>,
    /// `name_prefix`: case-sensitive prefix.
    pub name_prefix: String,
    pub kind: Option<String>,
    pub update_type: String,
    /// Repeatable `tag`, lower-cased (any of).
    pub tags: Vec<String>,
    pub sort: String,
}

/// ozzo-validation's `Errors` text: `key: message` sorted by key, `; ` between, final `.`.
fn validation_errors(mut errors: Vec<(&str, &str)>) -> Result<(), Error> {
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort();
    let text: Vec<String> = errors.iter().map(|(k, m)| format!("{k}: {m}")).collect();
    Err(Error::BadRequest(format!("{}.", text.join("; "))))
}

/// The list's query parameters, as sent (`mender_http::query::parse`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SoftwareParams {
    pub name: Vec<String>,
    pub name_prefix: String,
    pub kind: Option<String>,
    pub update_type: String,
    pub tag: Vec<String>,
    pub sort: Option<String>,
}

impl SoftwareFilter {
    /// Validates the query; 400 texts as upstream.
    pub fn from_params(params: SoftwareParams) -> Result<SoftwareFilter, Error> {
        let filter = SoftwareFilter {
            names: params.name,
            name_prefix: params.name_prefix,
            kind: params.kind.filter(|k| !k.is_empty()),
            update_type: params.update_type,
            tags: params.tag.iter().map(|t| t.to_lowercase()).collect(),
            sort: params.sort.unwrap_or_else(|| "name:asc".to_owned()),
        };
        let mut errors = Vec::new();
        if !filter.name_prefix.is_empty() && !filter.names.is_empty() {
            errors.push(("name", "cannot be used with name_prefix"));
            errors.push(("name_prefix", "cannot be used with name"));
        }
        if let Some(kind) = &filter.kind {
            if kind != KIND_RELEASE && kind != KIND_MANIFEST {
                errors.push(("kind", "must be a valid value"));
            }
        }
        if !SORTS.contains(&filter.sort.as_str()) {
            errors.push(("sort", "must be a valid value"));
        }
        validation_errors(errors)?;
        Ok(filter)
    }

    fn matches(&self, release: &Release) -> bool {
        if self.kind.as_deref() == Some(KIND_MANIFEST) {
            return false;
        }
        if !self.names.is_empty() && !self.names.contains(&release.name) {
            return false;
        }
        if !release.name.starts_with(&self.name_prefix) {
            return false;
        }
        if !self.update_type.is_empty() && !release.update_types().contains(&self.update_type) {
            return false;
        }
        self.tags.is_empty() || release.tags.iter().any(|t| self.tags.contains(t))
    }

    /// The matching releases in the requested order (ties by name). `tags` sorts as MongoDB
    /// sorts arrays: ascending by the smallest tag, descending by the largest, untagged
    /// releases first ascending and last descending.
    pub fn apply(&self, mut releases: Vec<Release>) -> Vec<Release> {
        releases.retain(|r| self.matches(r));
        let (field, order) = self.sort.split_once(':').unwrap_or(("name", "asc"));
        let desc = order == "desc";
        releases.sort_by(|a, b| {
            let primary = match field {
                "modified" => crate::operator::cmp_time(&a.modified, &b.modified),
                "tags" if desc => a.tags.iter().max().cmp(&b.tags.iter().max()),
                "tags" => a.tags.iter().min().cmp(&b.tags.iter().min()),
                _ => a.name.cmp(&b.name),
            };
            let primary = if desc { primary.reverse() } else { primary };
            primary.then_with(|| a.name.cmp(&b.name))
        });
        releases
    }
}

/// A release as software: `compatible_types` is every artifact's device types, in order and
/// with repeats (upstream appends them as they are).
pub fn software_json(release: &Release) -> Value {
    let compatible: Vec<&String> = release
        .artifacts
        .iter()
        .flat_map(|a| a.device_types_compatible.iter())
        .collect();
    json!({
        "name": release.name,
        "modified": release.modified,
        "tags": release.tags,
        "notes": release.notes,
        "kind": KIND_RELEASE,
        "compatible_types": compatible,
    })
}

/// The query parameters of `software/tags`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SoftwareTagsParams {
    pub kind: Vec<String>,
}

/// `software/tags`: the kind filter (`kind` at most once, `release` or `manifest`), with
/// upstream's texts; `Ok(false)` = only manifests asked for (none exist).
pub fn tags_kind(params: &SoftwareTagsParams) -> Result<bool, Error> {
    let kinds = &params.kind;
    if kinds.len() > 1 {
        return Err(Error::BadRequest(
            "only one kind query argument can be specified".into(),
        ));
    }
    match kinds.first().map(String::as_str) {
        None | Some(KIND_RELEASE) => Ok(true),
        Some(KIND_MANIFEST) => Ok(false),
        Some("") => validation_errors(vec![("Kind", "cannot be blank")]).map(|_| false),
        Some(_) => validation_errors(vec![("Kind", "must be a valid value")]).map(|_| false),
    }
}

/// The distinct non-empty tags of `releases`, sorted.
pub fn distinct_tags(releases: &[Release]) -> Vec<String> {
    let mut tags: Vec<String> = releases
        .iter()
        .flat_map(|r| r.tags.iter())
        .filter(|t| !t.is_empty())
        .cloned()
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{Artifact, TypeInfo, Update};

    fn filter(q: &str) -> Result<SoftwareFilter, Error> {
        SoftwareFilter::from_params(mender_http::query::parse(Some(q)).unwrap())
    }

    fn kind(q: &str) -> Result<bool, Error> {
        tags_kind(&mender_http::query::parse(Some(q)).unwrap())
    }

    fn release(name: &str, modified: &str, tags: &[&str], kind: &str) -> Release {
        Release {
            name: name.into(),
            modified: modified.into(),
            artifacts: vec![Artifact {
                name: name.into(),
                device_types_compatible: vec!["a".into(), "b".into()],
                updates: vec![Update {
                    type_info: TypeInfo { kind: kind.into() },
                    ..Default::default()
                }],
                ..Default::default()
            }],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            notes: String::new(),
        }
    }

    #[test]
    fn validation_texts() {
        let err = filter("name=a&name_prefix=b&sort=size:asc")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "name: cannot be used with name_prefix; name_prefix: cannot be used with name; sort: must be a valid value."
        );
        let err = filter("kind=image").unwrap_err().to_string();
        assert_eq!(err, "kind: must be a valid value.");
        assert!(filter("sort=name").is_err());
        assert_eq!(
            kind("kind=").unwrap_err().to_string(),
            "Kind: cannot be blank."
        );
        assert!(kind("kind=release&kind=release").is_err());
        assert!(!kind("kind=manifest").unwrap());
    }

    #[test]
    fn filters_and_orders() {
        let all = vec![
            release("app-1", "2024-01-03T00:00:00Z", &["stable"], "script"),
            release(
                "app-2",
                "2024-01-01T00:00:00Z",
                &["beta", "zeta"],
                "rootfs-image",
            ),
            release("base", "2024-01-02T00:00:00Z", &[], "script"),
        ];
        let names = |q: &str| -> Vec<String> {
            filter(q)
                .unwrap()
                .apply(all.clone())
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(""), ["app-1", "app-2", "base"]);
        assert_eq!(names("name_prefix=app"), ["app-1", "app-2"]);
        assert_eq!(names("name_prefix=App"), Vec::<String>::new());
        assert_eq!(names("name=base&name=app-2"), ["app-2", "base"]);
        assert_eq!(names("tag=STABLE&tag=beta"), ["app-1", "app-2"]);
        assert_eq!(names("update_type=script"), ["app-1", "base"]);
        assert_eq!(names("kind=manifest"), Vec::<String>::new());
        assert_eq!(names("sort=modified:desc"), ["app-1", "base", "app-2"]);
        assert_eq!(names("sort=tags:asc"), ["base", "app-2", "app-1"]);
        assert_eq!(names("sort=tags:desc"), ["app-2", "app-1", "base"]);
        let json = software_json(&all[0]);
        assert_eq!(json["kind"], "release");
        assert_eq!(json["compatible_types"], json!(["a", "b"]));
    }
}
