//! The deployment list query (`GET /api/management/v{1,2}/deployments/deployments`) with
//! upstream's rules (`ParseLookupQuery`, `ParseDeploymentLookupQueryV{1,2}` and the Mongo
//! filter of `datastore_mongo.go`): `status`, `type`, `created_after`/`created_before`
//! (epoch seconds, both inclusive, compared with the full creation time), `sort`, `search`
//! (v1) and repeated `id`/`name` (v2).

use chrono::{DateTime, Utc};

use serde::Deserialize;

use crate::model::{Deployment, DeploymentStatus};
use crate::service::Error;

#[derive(Debug, Default, PartialEq)]
pub struct DeploymentQuery {
    /// `pending`, `inprogress` or `finished` (`aborted` is `finished`, as upstream).
    pub status: Option<DeploymentStatus>,
    /// `software` (also matches deployments stored without a type) or `configuration`.
    pub kind: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub ascending: bool,
    pub search: Option<String>,
    pub ids: Vec<String>,
    pub names: Vec<String>,
}

fn epoch(key: &str, value: &str) -> Result<DateTime<Utc>, Error> {
    let what = if key == "created_before" {
        "timestamp parsing failed for created_before parameter"
    } else {
        "timestamp parsing failed created_after parameter"
    };
    value
        .parse::<i64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| Error::BadRequest(format!("{what}: invalid timestamp: {value}")))
}

/// The query parameters of the list, as sent (`mender_http::query::parse`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeploymentParams {
    pub id: Vec<String>,
    pub name: Vec<String>,
    pub search: Option<String>,
    pub created_before: Option<String>,
    pub created_after: Option<String>,
    pub sort: Option<String>,
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl DeploymentQuery {
    /// Validates the parameters; an empty value is as if absent.
    pub fn from_params(params: DeploymentParams) -> Result<Self, Error> {
        let given = |v: Option<String>| v.filter(|v| !v.is_empty());
        let mut query = DeploymentQuery {
            ids: params.id,
            names: params.name,
            search: given(params.search),
            ..Default::default()
        };
        if let Some(v) = given(params.created_before) {
            query.created_before = Some(epoch("created_before", &v)?);
        }
        if let Some(v) = given(params.created_after) {
            query.created_after = Some(epoch("created_after", &v)?);
        }
        query.ascending = match given(params.sort).map(|s| s.to_lowercase()).as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => {
                return Err(Error::BadRequest(
                    "invalid form value: must be one of \"asc\" or \"desc\"".into(),
                ))
            }
        };
        query.status = match given(params.status).as_deref() {
            None => None,
            Some("pending") => Some(DeploymentStatus::Pending),
            Some("inprogress") => Some(DeploymentStatus::Inprogress),
            Some("finished" | "aborted") => Some(DeploymentStatus::Finished),
            Some(other) => return Err(Error::BadRequest(format!("unknown status {other}"))),
        };
        query.kind = match given(params.kind).as_deref() {
            None => None,
            Some(t @ ("software" | "configuration")) => Some(t.to_owned()),
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "unknown deployment type {other}"
                )))
            }
        };
        Ok(query)
    }

    pub fn matches(&self, d: &Deployment) -> bool {
        let created = DateTime::parse_from_rfc3339(&d.created)
            .ok()
            .map(|c| c.with_timezone(&Utc));
        let within = |bound: Option<DateTime<Utc>>, after: bool| {
            bound.is_none_or(|b| created.is_some_and(|c| if after { c >= b } else { c <= b }))
        };
        self.status.is_none_or(|s| d.status == s)
            && self.kind.as_deref().is_none_or(|k| match k {
                "configuration" => d.is_configuration(),
                _ => !d.is_configuration(),
            })
            && within(self.created_after, true)
            && within(self.created_before, false)
            && self.search.as_ref().is_none_or(|needle| {
                let needle = needle.to_lowercase();
                d.name.to_lowercase().contains(&needle)
                    || d.artifact_name.to_lowercase().contains(&needle)
            })
            && (self.ids.is_empty() || self.ids.contains(&d.id))
            && (self.names.is_empty() || self.names.contains(&d.name))
    }

    /// Filters and orders (newest first unless `sort=asc`) the tenant's deployments.
    pub fn apply(&self, deployments: Vec<Deployment>) -> Vec<Deployment> {
        let mut out: Vec<Deployment> = deployments
            .into_iter()
            .filter(|d| self.matches(d))
            .collect();
        out.sort_by(|a, b| {
            let order = crate::operator::cmp_time(&b.created, &a.created).then(b.id.cmp(&a.id));
            if self.ascending {
                order.reverse()
            } else {
                order
            }
        });
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(q: &[(&str, &str)]) -> Result<DeploymentQuery, Error> {
        let pairs: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DeploymentQuery::from_params(mender_http::query::from_pairs(&pairs).unwrap())
    }

    fn deployment(created: &str, kind: &str) -> Deployment {
        Deployment {
            created: created.into(),
            kind: kind.into(),
            status: DeploymentStatus::Pending,
            ..Default::default()
        }
    }

    #[test]
    fn created_bounds_are_inclusive_on_the_full_time() {
        let d = deployment("2026-01-01T00:00:10.500Z", "");
        let q = |k, v| parse(&[(k, v)]).map(|q| q.matches(&d));
        let ten = "1767225610"; // 2026-01-01T00:00:10Z
        let eleven = "1767225611";
        assert_eq!(q("created_after", ten).ok(), Some(true));
        assert_eq!(q("created_before", ten).ok(), Some(false));
        assert_eq!(q("created_before", eleven).ok(), Some(true));
        assert_eq!(q("created_after", eleven).ok(), Some(false));
        let exact = deployment("2026-01-01T00:00:10Z", "");
        let both = parse(&[("created_after", ten), ("created_before", ten)]);
        assert!(both.is_ok_and(|q| q.matches(&exact)));
        assert!(matches!(
            parse(&[("created_after", "1.5")]),
            Err(Error::BadRequest(m)) if m == "timestamp parsing failed created_after parameter: invalid timestamp: 1.5"
        ));
    }

    #[test]
    fn type_filter() {
        let soft = deployment("2026-01-01T00:00:00Z", "");
        let conf = deployment("2026-01-01T00:00:00Z", "configuration");
        let q = |t| parse(&[("type", t)]);
        assert!(q("software").is_ok_and(|q| q.matches(&soft) && !q.matches(&conf)));
        assert!(q("configuration").is_ok_and(|q| !q.matches(&soft) && q.matches(&conf)));
        assert!(
            matches!(q("firmware"), Err(Error::BadRequest(m)) if m == "unknown deployment type firmware")
        );
        assert!(matches!(
            parse(&[("sort", "ASC")]),
            Ok(DeploymentQuery {
                ascending: true,
                ..
            })
        ));
    }
}
