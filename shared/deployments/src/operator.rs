//! Operator operations the GUI uses besides the basics, with upstream's rules
//! (`api/http/api_deployments.go`, `app/app.go`, `store/mongo/datastore_mongo.go`):
//! statistics of many deployments at once, deleting a device's deployment history, the
//! deprecated paged artifact list (lenient paging, `sort`), and the storage limit.

use std::collections::BTreeSet;

use mender_http::paging::{Paging, DEFAULT_PER_PAGE, MAX_PER_PAGE};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{Artifact, Statistics};
use crate::query::positive;
use crate::service::{Deployments, Error};
use crate::store::Store;

/// `statistics/list` takes 1..=100 ids (upstream `model.DeploymentIDs`).
pub const MAX_STATISTICS_IDS: usize = 100;

/// Hyphenated UUID, either case (govalidator `IsUUID`).
pub fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `DeploymentIDs.Validate` (Required, Length(1, 100), Each(is.UUID)) with ozzo's texts: the
/// length error alone, else `<index>: must be a valid UUID` per bad id, sorted by index as
/// text, `; ` between, final `.`. An empty id is refused too (upstream lets it through
/// validation and fails with 500 in the store).
pub fn check_deployment_ids(ids: &[String]) -> Result<(), Error> {
    if ids.len() > MAX_STATISTICS_IDS {
        return Err(Error::BadRequest(format!(
            "the length must be between 1 and {MAX_STATISTICS_IDS}"
        )));
    }
    let mut bad: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !is_uuid(id))
        .map(|(i, _)| i.to_string())
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    bad.sort();
    let text: Vec<String> = bad
        .iter()
        .map(|i| format!("{i}: must be a valid UUID"))
        .collect();
    Err(Error::BadRequest(format!("{}.", text.join("; "))))
}

/// The query parameters of `GET /artifacts/list` (deprecated), as sent
/// (`mender_http::query::parse`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ArtifactListParams {
    pub page: Option<String>,
    pub per_page: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub device_type: Option<String>,
    pub sort: Option<String>,
}

/// Upstream's lenient paging of the deprecated lists (`getReleaseOrImageFilter`): a page that
/// is not a positive integer is 1, a `per_page` that is not one or is over 500 is 20.
pub fn lenient_paging(params: &ArtifactListParams) -> Paging {
    let page = positive(params.page.as_deref()).unwrap_or(1);
    let per_page = positive(params.per_page.as_deref())
        .filter(|p| *p <= MAX_PER_PAGE as i64)
        .unwrap_or(DEFAULT_PER_PAGE as i64);
    Paging {
        page: page as u64,
        per_page: per_page as u64,
    }
}

/// `GET /artifacts/list` filters: `name`, `description`, `device_type` (any compatible type),
/// each a case-insensitive "contains" (upstream's `.*<quoted>.*` regex with option `i`).
pub fn filter_artifacts(artifacts: Vec<Artifact>, params: &ArtifactListParams) -> Vec<Artifact> {
    let lowered = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::to_lowercase)
            .filter(|v| !v.is_empty())
    };
    let (name, description, device_type) = (
        lowered(&params.name),
        lowered(&params.description),
        lowered(&params.device_type),
    );
    artifacts
        .into_iter()
        .filter(|a| {
            name.as_deref()
                .is_none_or(|n| a.name.to_lowercase().contains(n))
        })
        .filter(|a| {
            description
                .as_deref()
                .is_none_or(|d| a.description.to_lowercase().contains(d))
        })
        .filter(|a| {
            device_type.as_deref().is_none_or(|t| {
                a.device_types_compatible
                    .iter()
                    .any(|x| x.to_lowercase().contains(t))
            })
        })
        .collect()
}

/// `GET /api/management/v2/deployments/artifacts` filter (upstream `getImageFilter` and
/// `ImageFilter.Validate`): repeated `name`s are exact names, or one `prefix*` (`\*` is a
/// literal `*`); exact names and a prefix together, more than one prefix, more than 100
/// names or a value over 4096 bytes is a 400. Prefixes match case-insensitively (upstream's
/// `^<quoted>.*` regex with option `i`), exact values exactly; `description` and
/// `device_type` (first value each) the same way.
#[derive(Debug, Default, PartialEq)]
pub struct ArtifactFilterV2 {
    pub exact_names: Vec<String>,
    pub name_prefixes: Vec<String>,
    pub description: Option<String>,
    pub device_type: Option<String>,
}

/// Upstream's `^<quoted prefix>.*` regex with option `i`.
fn has_prefix_ignoring_case(value: &str, prefix: &str) -> bool {
    value.to_lowercase().starts_with(&prefix.to_lowercase())
}

/// One value of the v2 filter: exact (with `\*` meaning `*`) or a prefix.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    if let Some(literal) = pattern.strip_suffix("\\*") {
        value.len() == literal.len() + 1 && value.starts_with(literal) && value.ends_with('*')
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        has_prefix_ignoring_case(value, prefix)
    } else {
        value == pattern
    }
}

/// The query parameters of `GET /api/management/v2/deployments/artifacts`, as sent
/// (`mender_http::query::parse`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ArtifactsV2Params {
    pub name: Vec<String>,
    pub description: Option<String>,
    pub device_type: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

impl ArtifactFilterV2 {
    pub fn from_params(params: &ArtifactsV2Params) -> Result<Self, Error> {
        let mut filter = ArtifactFilterV2 {
            description: params.description.clone(),
            device_type: params.device_type.clone(),
            ..Default::default()
        };
        for value in &params.name {
            match value.strip_suffix('*') {
                Some(prefix) if !value.ends_with("\\*") => {
                    filter.name_prefixes.push(prefix.to_string())
                }
                _ => filter.exact_names.push(value.replace("\\*", "*")),
            }
        }
        let invalid = |m: &str| Err(Error::BadRequest(format!("invalid filter: {m}")));
        if !filter.exact_names.is_empty() && !filter.name_prefixes.is_empty() {
            return invalid("cannot filter by both exact names and name prefix");
        }
        let mut problems = Vec::new();
        let too_long = |v: &String| v.len() > 4096;
        if filter.exact_names.len() > 100 {
            problems.push("ExactNames: the length must be no more than 100".to_string());
        } else if let Some(i) = filter.exact_names.iter().position(too_long) {
            problems.push(format!(
                "ExactNames: ({i}: the length must be no more than 4096.)"
            ));
        }
        if filter.name_prefixes.len() > 1 {
            problems.push("NamePrefixes: the length must be no more than 1".to_string());
        } else if filter.name_prefixes.iter().any(too_long) {
            problems.push("NamePrefixes: (0: the length must be no more than 4096.)".to_string());
        }
        if filter.description.as_ref().is_some_and(too_long) {
            problems.push("Description: the length must be no more than 4096".to_string());
        }
        if filter.device_type.as_ref().is_some_and(too_long) {
            problems.push("DeviceType: the length must be no more than 4096".to_string());
        }
        if problems.is_empty() {
            Ok(filter)
        } else {
            problems.sort();
            invalid(&format!("{}.", problems.join("; ")))
        }
    }

    pub fn matches(&self, a: &Artifact) -> bool {
        let name_ok = if !self.exact_names.is_empty() {
            self.exact_names.contains(&a.name)
        } else {
            self.name_prefixes
                .iter()
                .all(|p| has_prefix_ignoring_case(&a.name, p))
        };
        name_ok
            && self
                .description
                .as_deref()
                .is_none_or(|d| pattern_matches(d, &a.description))
            && self.device_type.as_deref().is_none_or(|t| {
                a.device_types_compatible
                    .iter()
                    .any(|x| pattern_matches(t, x))
            })
    }
}

/// v2 paging (`getImageFilter` then `Validate`): a `page` or `per_page` that is not a positive
/// integer is the default; a `per_page` over 500 is a 400.
pub fn paging_v2(params: &ArtifactsV2Params) -> Result<Paging, Error> {
    let per_page = positive(params.per_page.as_deref()).unwrap_or(DEFAULT_PER_PAGE as i64);
    if per_page > MAX_PER_PAGE as i64 {
        return Err(Error::BadRequest(format!(
            "invalid filter: PerPage: must be no greater than {MAX_PER_PAGE}."
        )));
    }
    Ok(Paging {
        page: positive(params.page.as_deref()).unwrap_or(1) as u64,
        per_page: per_page as u64,
    })
}

/// `GET /artifacts/list` order: `sort=<field>:<asc|desc>` with the release sort fields
/// (`getReleaseSortFieldAndOrder`); anything else is the default, name ascending. Ties (and
/// `artifacts_count` / `tags`, which artifacts do not have) by id, in the same direction.
pub fn sort_artifacts(artifacts: &mut [Artifact], sort: Option<&str>) {
    let (field, desc) = match sort.and_then(|s| s.split_once(':')) {
        Some((f @ ("name" | "modified" | "artifacts_count" | "tags"), order)) => {
            (f, order == "desc")
        }
        _ => ("name", false),
    };
    artifacts.sort_by(|a, b| {
        let primary = match field {
            "name" => a.name.cmp(&b.name),
            "modified" => cmp_time(&a.modified, &b.modified),
            _ => std::cmp::Ordering::Equal,
        };
        let order = primary.then_with(|| a.id.cmp(&b.id));
        if desc {
            order.reverse()
        } else {
            order
        }
    });
}

/// Orders RFC 3339 times by instant (their text does not sort: `...:05Z` > `...:05.5Z`);
/// unparsable ones by text, after the others.
pub fn cmp_time(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `GET /limits/{name}`: only `storage` exists; open source stores no limit (0) and upstream
/// reports no usage (`Usage: 0, // TODO`).
pub fn limit(name: &str) -> Result<Value, Error> {
    if name != "storage" {
        return Err(Error::BadRequest(format!("unsupported limit {name}")));
    }
    Ok(json!({"limit": 0, "usage": 0}))
}

impl<S: Store> Deployments<S> {
    /// `statistics/list`: each found deployment's counters, oldest first (upstream returns
    /// them in the collection's natural order); unknown ids are left out, none found = 404.
    pub async fn statistics_of(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<(String, Statistics)>, Error> {
        let unique: BTreeSet<&String> = ids.iter().collect();
        let unique: Vec<String> = unique.into_iter().cloned().collect();
        let mut found = self.store.deployment_statistics(tenant, &unique).await?;
        if found.is_empty() {
            return Err(Error::NotFound("Deployment not found".into()));
        }
        found.sort_by(|a, b| cmp_time(&a.0, &b.0).then(a.1.cmp(&b.1)));
        Ok(found
            .into_iter()
            .map(|(_, id, stats)| (id, stats))
            .collect())
    }

    /// `DELETE /deployments/devices/{id}/history`: stamps `deleted` on the device's finished
    /// device deployments that have none yet; returns how many it stamped.
    pub async fn delete_device_history(&self, tenant: &str, device: &str) -> Result<usize, Error> {
        let when = mender_http::time::now_string();
        let mut stamped = 0;
        for dd in self.store.history_for_device(tenant, device).await? {
            if dd.status.is_terminal()
                && dd.deleted.is_none()
                && self.store.mark_deleted(tenant, &dd, &when).await?
            {
                stamped += 1;
            }
        }
        Ok(stamped)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(q: &str) -> ArtifactListParams {
        mender_http::query::parse(Some(q)).unwrap()
    }

    #[test]
    fn deployment_ids() {
        let good = "0b0a35f8-6a44-4d5c-9c0d-2a4b6f3d9e11".to_string();
        assert!(check_deployment_ids(std::slice::from_ref(&good)).is_ok());
        assert!(is_uuid(&good.to_uppercase()));
        let mut ids: Vec<String> = vec![good.clone(); 12];
        ids[2] = "x".into();
        ids[10] = String::new();
        assert_eq!(
            check_deployment_ids(&ids).unwrap_err().to_string(),
            "10: must be a valid UUID; 2: must be a valid UUID."
        );
        assert_eq!(
            check_deployment_ids(&vec![good; 101])
                .unwrap_err()
                .to_string(),
            "the length must be between 1 and 100"
        );
    }

    #[test]
    fn lenient() {
        assert_eq!(
            lenient_paging(&params("page=0&per_page=501")),
            Paging::default()
        );
        assert_eq!(
            lenient_paging(&params("page=x&per_page=2")),
            Paging {
                page: 1,
                per_page: 2
            }
        );
        assert_eq!(lenient_paging(&params("page=3")).page, 3);
    }

    #[test]
    fn artifact_order_and_filters() {
        let art = |id: &str, name: &str, modified: &str| Artifact {
            id: id.into(),
            name: name.into(),
            modified: modified.into(),
            description: format!("About {name}"),
            device_types_compatible: vec![format!("Board-{id}")],
            ..Default::default()
        };
        let all = vec![art("2", "b", "1"), art("1", "b", "3"), art("3", "a", "2")];
        let ids = |sort: Option<&str>| {
            let mut v = all.clone();
            sort_artifacts(&mut v, sort);
            v.into_iter().map(|a| a.id).collect::<Vec<_>>()
        };
        assert_eq!(ids(None), ["3", "1", "2"]);
        assert_eq!(ids(Some("name:desc")), ["2", "1", "3"]);
        assert_eq!(ids(Some("modified:asc")), ["2", "3", "1"]);
        assert_eq!(ids(Some("modified")), ["3", "1", "2"]);
        assert_eq!(ids(Some("tags:desc")), ["3", "2", "1"]);
        let f = filter_artifacts(
            all.clone(),
            &params("name=B&description=ABOUT&device_type=rd-1"),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "1");
        assert_eq!(
            cmp_time("2024-01-01T00:00:05Z", "2024-01-01T00:00:05.5Z"),
            std::cmp::Ordering::Less
        );
        assert_eq!(limit("storage").unwrap(), json!({"limit": 0, "usage": 0}));
        assert_eq!(limit("x").unwrap_err().to_string(), "unsupported limit x");
    }
}
