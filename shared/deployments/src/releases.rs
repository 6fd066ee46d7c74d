//! Releases: the artifacts that share a name, with the release's tags and notes (SPEC §5.7).
//! Their rules (tag syntax and limits, notes) are plain functions; the service reads artifacts
//! and the release items of the store.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::model::Artifact;
use crate::service::{Deployments, Error};
use crate::store::{ReleaseMeta, Store};

pub const MAX_TAGS_PER_RELEASE: usize = 20;
pub const MAX_DISTINCT_TAGS: usize = 100;

#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    pub name: String,
    pub modified: String,
    pub artifacts: Vec<Artifact>,
    pub tags: Vec<String>,
    pub notes: String,
}

impl Release {
    pub fn update_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .artifacts
            .iter()
            .flat_map(|a| a.updates.iter().map(|u| u.type_info.kind.clone()))
            .collect();
        types.sort();
        types.dedup();
        types
    }

    pub fn to_json_v2(&self) -> Value {
        json!({
            "name": self.name, "modified": self.modified,
            "artifacts": self.artifacts.iter().map(Artifact::to_json).collect::<Vec<_>>(),
            "artifacts_count": self.artifacts.len(), "tags": self.tags, "notes": self.notes,
        })
    }

    pub fn to_json_v1(&self) -> Value {
        json!({
            "Name": self.name, "Modified": self.modified,
            "Artifacts": self.artifacts.iter().map(Artifact::to_json).collect::<Vec<_>>(),
            "ArtifactsCount": self.artifacts.len(), "tags": self.tags, "notes": self.notes,
        })
    }
}

/// Tags: lower-cased, `[a-z0-9._-]`, 1..=1024 characters, at most 20, duplicates removed.
pub fn clean_tags(tags: Vec<String>) -> Result<Vec<String>, Error> {
    let mut clean: Vec<String> = tags.into_iter().map(|t| t.to_ascii_lowercase()).collect();
    clean.sort();
    clean.dedup();
    if clean.len() > MAX_TAGS_PER_RELEASE {
        return Err(Error::BadRequest(format!(
            "too many tags (max {MAX_TAGS_PER_RELEASE})"
        )));
    }
    for tag in &clean {
        let ok = !tag.is_empty()
            && tag.len() <= 1024
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
        if !ok {
            return Err(Error::BadRequest(format!(
                "invalid tag {tag:?}: letters, digits, '.', '-' and '_' only"
            )));
        }
    }
    Ok(clean)
}

/// Notes: at most 1024 bytes of printable characters.
pub fn check_notes(notes: &str) -> Result<(), Error> {
    if notes.len() > 1024
        || notes
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::BadRequest(
            "notes: at most 1024 printable characters".into(),
        ));
    }
    Ok(())
}

impl<S: Store> Deployments<S> {
    /// Every release, sorted by name.
    pub async fn releases(&self, tenant: &str) -> Result<Vec<Release>, Error> {
        let metas: BTreeMap<String, ReleaseMeta> = self
            .store
            .release_metas(tenant)
            .await?
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        let mut by_name: BTreeMap<String, Vec<Artifact>> = BTreeMap::new();
        for artifact in self.artifacts(tenant).await? {
            by_name
                .entry(artifact.name.clone())
                .or_default()
                .push(artifact);
        }
        Ok(by_name
            .into_iter()
            .map(|(name, artifacts)| {
                let meta = metas.get(&name).cloned().unwrap_or_default();
                let modified = artifacts
                    .iter()
                    .map(|a| a.modified.clone())
                    .max()
                    .unwrap_or_default();
                Release {
                    name,
                    modified,
                    artifacts,
                    tags: meta.tags,
                    notes: meta.notes,
                }
            })
            .collect())
    }

    pub async fn release(&self, tenant: &str, name: &str) -> Result<Release, Error> {
        self.releases(tenant)
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::NotFound("release not found".into()))
    }

    pub async fn set_release_notes(
        &self,
        tenant: &str,
        name: &str,
        notes: String,
    ) -> Result<(), Error> {
        check_notes(&notes)?;
        let release = self.release(tenant, name).await?;
        let meta = ReleaseMeta {
            name: release.name,
            tags: release.tags,
            notes,
        };
        Ok(self.store.put_release_meta(tenant, &meta).await?)
    }

    pub async fn set_release_tags(
        &self,
        tenant: &str,
        name: &str,
        tags: Vec<String>,
    ) -> Result<(), Error> {
        let tags = clean_tags(tags)?;
        let releases = self.releases(tenant).await?;
        let release = releases
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::NotFound("release not found".into()))?;
        let mut distinct: Vec<&String> = releases
            .iter()
            .filter(|r| r.name != name)
            .flat_map(|r| r.tags.iter())
            .chain(tags.iter())
            .collect();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > MAX_DISTINCT_TAGS {
            return Err(Error::Conflict(
                "the limit of unique tags has been reached".into(),
            ));
        }
        let meta = ReleaseMeta {
            name: name.to_owned(),
            tags,
            notes: release.notes.clone(),
        };
        Ok(self.store.put_release_meta(tenant, &meta).await?)
    }

    /// Deletes releases (their artifacts); refused with the active deployments that use them.
    /// Returns the deleted artifact ids (the caller removes the objects).
    pub async fn delete_releases(
        &self,
        tenant: &str,
        names: &[String],
    ) -> Result<Vec<String>, Error> {
        if names.is_empty() {
            return Err(Error::BadRequest("no release names given".into()));
        }
        let active: Vec<String> = self
            .deployments(tenant)
            .await?
            .into_iter()
            .filter(|d| {
                d.status != crate::model::DeploymentStatus::Finished
                    && names.contains(&d.artifact_name)
            })
            .map(|d| d.id)
            .collect();
        if !active.is_empty() {
            return Err(Error::ReleasesInUse(active));
        }
        let mut deleted = Vec::new();
        for artifact in self
            .artifacts(tenant)
            .await?
            .into_iter()
            .filter(|a| names.contains(&a.name))
        {
            self.delete_artifact(tenant, &artifact.id).await?;
            deleted.push(artifact.id);
        }
        for name in names {
            self.store.delete_release_meta(tenant, name).await?;
        }
        Ok(deleted)
    }
}
