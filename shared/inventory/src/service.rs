//! inventory operations. Every write is a read-modify-write of the device item conditional on
//! its version, retried on conflict, so concurrent writers never lose an update; a write that
//! changes nothing is not stored.

use mender_aws::dynamo::DynamoError;
use mender_aws::retry::{lost_race, Attempts};
use mender_http::paging::{Paging, MAX_PER_PAGE};
use serde_json::Value;

use crate::listing;
use crate::model::{
    check_group_name, validate, AttributeIn, Invalid, InventoryDevice, IDENTITY, INVENTORY,
    LIMIT_ATTRIBUTES, LIMIT_TAGS, MAX_DEVICE_BYTES, SYSTEM, TAGS,
};
use crate::search::{Filter, Op, SearchError, SearchQuery, Selector, SortKey};
use crate::store::{DynamoStore, Partition, Store, ALL_STATUSES};

const MAX_ATTEMPTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storage: {0}")]
    Storage(#[from] DynamoError),
    #[error("{0}")]
    Internal(String),
}

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Self {
        Error::BadRequest(e.0)
    }
}

impl From<SearchError> for Error {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Invalid(m) => Error::BadRequest(m),
        }
    }
}

/// Every attempt of a read–modify–write of one device lost its race.
fn too_many_writes() -> Error {
    Error::Internal("too many concurrent writes to the device".into())
}

fn now_ts() -> String {
    mender_http::time::now_string()
}

/// What a write does to a device.
enum Outcome {
    /// Store the changed device.
    Store,
    /// Nothing changed: no write.
    Unchanged,
}

/// v1 list query (`GET /api/management/v1/inventory/devices`).
#[derive(Debug, Default)]
pub struct ListQuery {
    /// (scope, name, value) equality filters.
    pub filters: Vec<(String, String, String)>,
    pub has_group: Option<bool>,
    pub group: Option<String>,
    /// (scope, name, descending).
    pub sort: Option<(String, String, bool)>,
    pub paging: Paging,
}

/// The inventory service over a [`Store`] (the DynamoDB table unless told otherwise).
#[derive(Clone)]
pub struct Inventory<S = DynamoStore> {
    pub store: S,
}

impl<S: Store> Inventory<S> {
    /// Read-modify-write with retries. `change` gets the current device (or a new one, with
    /// `existed == false`) and says whether to store it.
    async fn modify<F>(
        &self,
        tenant: &str,
        id: &str,
        create: bool,
        mut change: F,
    ) -> Result<Option<InventoryDevice>, Error>
    where
        F: FnMut(&mut InventoryDevice, bool) -> Result<Outcome, Error>,
    {
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let stored = self.store.get(tenant, id).await?;
            let before = stored.clone();
            let existed = stored.is_some();
            if !existed && !create {
                return Ok(None);
            }
            let mut device = stored.unwrap_or_else(|| InventoryDevice::new(id));
            match change(&mut device, existed)? {
                Outcome::Unchanged => return Ok(Some(device)),
                Outcome::Store => {}
            }
            // A write may not make a device bigger than the cap (one stored before the cap was
            // lowered still takes writes that do not grow it: status, check-in, removals).
            let size = device.size();
            if size > MAX_DEVICE_BYTES && before.as_ref().is_none_or(|b| size > b.size()) {
                return Err(Error::BadRequest(
                    "the device's attributes are too large".into(),
                ));
            }
            if lost_race(self.store.put(tenant, &mut device, before.as_ref()).await)? {
                continue;
            }
            return Ok(Some(device));
        }
        Err(too_many_writes())
    }

    /// Device-originated PATCH (`replace == false`) or PUT (`replace == true`) of the
    /// inventory scope. Sets `updated_ts`; stores nothing when nothing changed today.
    pub async fn device_update(
        &self,
        tenant: &str,
        device_id: &str,
        input: Vec<AttributeIn>,
        replace: bool,
    ) -> Result<(), Error> {
        let attrs = validate(input, INVENTORY, false)?;
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        self.modify(tenant, device_id, true, |device, existed| {
            let before = device.attributes.get(INVENTORY).cloned();
            device.apply(INVENTORY, attrs.clone(), replace);
            if device.count(INVENTORY) > LIMIT_ATTRIBUTES {
                return Err(Error::BadRequest(
                    "the number of attributes in the scope is above the limit".into(),
                ));
            }
            let fresh = device
                .get(SYSTEM, "updated_ts")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with(&today));
            if existed && before.as_ref() == device.attributes.get(INVENTORY) && fresh {
                return Ok(Outcome::Unchanged);
            }
            let now = now_ts();
            if !existed || device.get(SYSTEM, "created_ts").is_none() {
                device.set(SYSTEM, "created_ts", Value::String(now.clone()));
            }
            device.set(SYSTEM, "updated_ts", Value::String(now));
            Ok(Outcome::Store)
        })
        .await
        .map(|_| ())
    }

    /// Internal upsert used by workflows (identity data, check-in time): each attribute in its
    /// scope (or `scope` when given); never bumps `updated_ts`.
    pub async fn upsert_scope(
        &self,
        tenant: &str,
        device_id: &str,
        scope: &str,
        input: Vec<AttributeIn>,
    ) -> Result<(), Error> {
        let attrs = validate(input, scope, false)?;
        self.modify(tenant, device_id, true, |device, existed| {
            let before = device.attributes.clone();
            device.apply(scope, attrs.clone(), false);
            if !existed {
                device.set(SYSTEM, "created_ts", Value::String(now_ts()));
            }
            Ok(if existed && before == device.attributes {
                Outcome::Unchanged
            } else {
                Outcome::Store
            })
        })
        .await
        .map(|_| ())
    }

    /// Sets `identity/status` if `revision` is newer than the last applied one; creates the
    /// device when missing. Status `decommissioned` deletes the device.
    pub async fn set_status(
        &self,
        tenant: &str,
        device_id: &str,
        status: &str,
        revision: i64,
    ) -> Result<(), Error> {
        if status == "decommissioned" {
            return self.delete_device(tenant, device_id).await;
        }
        if !["accepted", "preauthorized", "pending", "rejected", "noauth"].contains(&status) {
            return Err(Error::NotFound(format!("unrecognized status: {status}")));
        }
        self.modify(tenant, device_id, true, |device, existed| {
            if existed && device.status_revision >= revision {
                return Ok(Outcome::Unchanged);
            }
            if !existed {
                device.set(SYSTEM, "created_ts", Value::String(now_ts()));
            }
            device.status_revision = revision;
            device.set(IDENTITY, "status", Value::String(status.into()));
            Ok(Outcome::Store)
        })
        .await
        .map(|_| ())
    }

    /// Removes the device (and uncounts it); a device already gone is fine.
    pub async fn delete_device(&self, tenant: &str, device_id: &str) -> Result<(), Error> {
        let mut attempts = Attempts::new(MAX_ATTEMPTS);
        while attempts.begin().await {
            let Some(device) = self.store.get(tenant, device_id).await? else {
                return Ok(());
            };
            if lost_race(self.store.delete(tenant, &device).await)? {
                continue;
            }
            return Ok(());
        }
        Err(too_many_writes())
    }

    pub async fn get_device(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<InventoryDevice, Error> {
        self.find_device(tenant, device_id)
            .await?
            .ok_or_else(|| Error::NotFound("Device not found".into()))
    }

    /// The device, `None` when inventory does not know it (a storage error is an error, not
    /// an unknown device).
    pub async fn find_device(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<Option<InventoryDevice>, Error> {
        Ok(self.store.get(tenant, device_id).await?)
    }

    /// The group of a device, `None` when it has none or inventory does not know it.
    pub async fn group_of(&self, tenant: &str, device_id: &str) -> Result<Option<String>, Error> {
        Ok(self
            .find_device(tenant, device_id)
            .await?
            .and_then(|d| d.group().map(str::to_owned)))
    }

    /// `DELETE /devices/{id}`: clears the inventory scope only.
    pub async fn clear_inventory(&self, tenant: &str, device_id: &str) -> Result<(), Error> {
        self.modify(tenant, device_id, true, |device, _| {
            device.attributes.remove(INVENTORY);
            device.set(SYSTEM, "updated_ts", Value::String(now_ts()));
            Ok(Outcome::Store)
        })
        .await
        .map(|_| ())
    }

    /// Tags PUT (`replace`) / PATCH with optional `If-Match`. Unknown device without
    /// `If-Match` is a no-op (upstream). Returns the new etag.
    pub async fn set_tags(
        &self,
        tenant: &str,
        device_id: &str,
        input: Vec<AttributeIn>,
        replace: bool,
        if_match: Option<&str>,
    ) -> Result<(), Error> {
        let attrs = validate(input, TAGS, false)?;
        let result = self
            .modify(tenant, device_id, false, |device, _| {
                if let Some(etag) = if_match {
                    if device.tags_etag.as_deref() != Some(etag) {
                        return Err(Error::PreconditionFailed("ETag does not match".into()));
                    }
                }
                device.apply(TAGS, attrs.clone(), replace);
                if device.count(TAGS) > LIMIT_TAGS {
                    return Err(Error::BadRequest(
                        "the number of attributes in the scope is above the limit".into(),
                    ));
                }
                device.tags_etag = Some(uuid::Uuid::new_v4().to_string());
                Ok(Outcome::Store)
            })
            .await?;
        if result.is_none() && if_match.is_some() {
            return Err(Error::PreconditionFailed("ETag does not match".into()));
        }
        Ok(())
    }

    /// `PUT /devices/{id}/group`.
    pub async fn set_group(&self, tenant: &str, device_id: &str, group: &str) -> Result<(), Error> {
        check_group_name(group)?;
        let found = self
            .modify(tenant, device_id, false, |device, _| {
                if device.group() == Some(group) {
                    return Ok(Outcome::Unchanged);
                }
                device.set(SYSTEM, "group", Value::String(group.into()));
                Ok(Outcome::Store)
            })
            .await?;
        found
            .map(|_| ())
            .ok_or_else(|| Error::NotFound("Device not found".into()))
    }

    /// Removes the device from `group` if it is in it. Returns whether it was.
    pub async fn clear_group(
        &self,
        tenant: &str,
        device_id: &str,
        group: &str,
    ) -> Result<bool, Error> {
        let mut was_member = false;
        self.modify(tenant, device_id, false, |device, _| {
            was_member = device.group() == Some(group);
            if !was_member {
                return Ok(Outcome::Unchanged);
            }
            device.remove(SYSTEM, "group");
            Ok(Outcome::Store)
        })
        .await?;
        Ok(was_member)
    }

    /// `GET /groups[?status=]`: groups with at least one device (of that status), from the
    /// group counters.
    pub async fn list_groups(
        &self,
        tenant: &str,
        status: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let counts = self.store.group_counts(tenant).await?;
        Ok(counts
            .into_iter()
            .filter(|(_, by_status)| match status {
                Some(s) => by_status.get(s).is_some_and(|n| *n > 0),
                None => by_status.values().any(|n| *n > 0),
            })
            .map(|(group, _)| group)
            .collect())
    }

    /// One page of the ids of the devices in `group` and how many it has; 404 when none.
    pub async fn group_devices(
        &self,
        tenant: &str,
        group: &str,
        paging: Paging,
    ) -> Result<(Vec<String>, u64), Error> {
        let query = SearchQuery {
            page: paging.page,
            per_page: paging.per_page,
            filters: vec![eq(SYSTEM, "group", Value::String(group.into()))],
            ..SearchQuery::default()
        };
        let page = listing::search(&self.store, tenant, &query).await?;
        if page.total == 0 {
            return Err(Error::NotFound("group not found".into()));
        }
        Ok((page.devices.into_iter().map(|d| d.id).collect(), page.total))
    }

    /// Every device id of a status (all statuses: `None`) and group, read from the list
    /// indexes in one pass (deployment targets, group deletion): keys only.
    async fn all_ids(
        &self,
        tenant: &str,
        status: Option<&str>,
        group: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let statuses: Vec<&str> = status.map_or(ALL_STATUSES.to_vec(), |s| vec![s]);
        let reads = statuses.iter().map(|s| {
            let partition = match group {
                Some(g) => Partition::Group(g.to_owned(), (*s).to_owned()),
                None => Partition::Status((*s).to_owned()),
            };
            async move {
                self.store
                    .partition_keys(tenant, &partition, false, usize::MAX)
                    .await
            }
        });
        let keys = futures::future::try_join_all(reads).await?;
        Ok(keys.into_iter().flatten().map(|(_, id)| id).collect())
    }

    /// `DELETE /groups/{name}`: clears the group of all its members; returns how many.
    pub async fn delete_group(&self, tenant: &str, group: &str) -> Result<usize, Error> {
        let members = self.all_ids(tenant, None, Some(group)).await?;
        let mut updated = 0;
        for id in members {
            if self.clear_group(tenant, &id, group).await? {
                updated += 1;
            }
        }
        Ok(updated)
    }

    /// The v1 list (`GET /devices`): its filters as a v2 search, so it pages the same way.
    pub async fn list_devices(
        &self,
        tenant: &str,
        query: &ListQuery,
    ) -> Result<(Vec<InventoryDevice>, u64), Error> {
        let mut filters: Vec<Filter> = query
            .filters
            .iter()
            .map(|(scope, name, text)| {
                // v1 equality: the text, or the text as a number.
                let mut values = vec![Value::String(text.clone())];
                if let Some(n) = text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    values.push(Value::Number(n));
                }
                Filter {
                    scope: scope.clone(),
                    attribute: name.clone(),
                    op: Op::In,
                    value: Value::Array(values),
                }
            })
            .collect();
        if let Some(has) = query.has_group {
            filters.push(Filter {
                scope: SYSTEM.into(),
                attribute: "group".into(),
                op: Op::Exists,
                value: Value::Bool(has),
            });
        }
        if let Some(group) = &query.group {
            filters.push(eq(SYSTEM, "group", Value::String(group.clone())));
        }
        let sort = query
            .sort
            .iter()
            .map(|(scope, attribute, descending)| SortKey {
                scope: scope.clone(),
                attribute: attribute.clone(),
                descending: *descending,
            })
            .collect();
        let search = SearchQuery {
            page: query.paging.page,
            per_page: query.paging.per_page,
            filters,
            sort,
            ..SearchQuery::default()
        };
        let page = listing::search(&self.store, tenant, &search).await?;
        Ok((page.devices, page.total))
    }

    /// `POST /v2/inventory/filters/search`.
    pub async fn search(&self, tenant: &str, query: &SearchQuery) -> Result<listing::Page, Error> {
        if query.device_ids.len() > listing::MAX_DEVICE_IDS {
            return Err(Error::BadRequest(format!(
                "device_ids: at most {} ids",
                listing::MAX_DEVICE_IDS
            )));
        }
        Ok(listing::search(&self.store, tenant, query).await?)
    }

    /// `GET /v2/inventory/statistics`: accepted and pending devices by tier, from the counters.
    pub async fn statistics(&self, tenant: &str) -> Result<Value, Error> {
        let counts = self.store.status_counts(tenant).await?;
        let tiers = |status: &str| {
            let by_tier = counts.get(status);
            let n = |tier: &str| {
                by_tier
                    .and_then(|t| t.get(tier))
                    .copied()
                    .unwrap_or(0)
                    .max(0)
            };
            serde_json::json!({"standard": n("standard"), "micro": n("micro"), "system": n("system")})
        };
        Ok(
            serde_json::json!({"devices_by_status": {"accepted": tiers("accepted"), "pending": tiers("pending")}}),
        )
    }

    /// `GET /v2/inventory/filters/attributes`.
    pub async fn filter_attributes(&self, tenant: &str) -> Result<Value, Error> {
        let names = listing::attribute_names(&self.store, tenant).await?;
        Ok(Value::Array(
            names
                .into_iter()
                .map(|(name, scope, count)| serde_json::json!({"name": name, "scope": scope, "count": count}))
                .collect(),
        ))
    }

    /// Ids of accepted devices (optionally of one group): deployment targets.
    pub async fn accepted_devices(
        &self,
        tenant: &str,
        group: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let mut ids = self.all_ids(tenant, Some("accepted"), group).await?;
        ids.sort();
        Ok(ids)
    }
}

/// `POST /v2alpha1/inventory/identities/search` body (openapi `SearchIdentityParams`).
#[derive(serde::Deserialize)]
struct IdentitySearch {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value_prefix: Option<String>,
    #[serde(default)]
    attributes: Option<Vec<Selector>>,
    #[serde(default)]
    page: Option<i64>,
    #[serde(default)]
    per_page: Option<i64>,
}

/// The identity search as a v2 search: the identity attribute `name` (the device id for
/// `id`, or `tags/name`) starts with `value_prefix`.
pub fn identity_query(body: &[u8]) -> Result<SearchQuery, Error> {
    let body: IdentitySearch = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("failed to parse request body: {e}")))?;
    let scope = body.scope.unwrap_or_default();
    if scope != IDENTITY && scope != TAGS {
        return Err(Error::BadRequest("scope: must be a valid value.".into()));
    }
    let name = body
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::BadRequest("name: cannot be blank.".into()))?;
    let prefix = body
        .value_prefix
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::BadRequest("value_prefix: cannot be blank.".into()))?;
    let per_page = body.per_page.filter(|n| *n > 0).map_or(20, |n| n as u64);
    if per_page > MAX_PER_PAGE {
        return Err(Error::BadRequest(format!(
            "per_page: must be no greater than {MAX_PER_PAGE}."
        )));
    }
    let pattern = format!("^{}", regex::escape(&prefix));
    Ok(SearchQuery {
        page: body.page.filter(|n| *n > 0).map_or(1, |n| n as u64),
        per_page,
        filters: vec![Filter::new(scope, name, Op::Regex, Value::String(pattern))?],
        attributes: body.attributes.unwrap_or_default(),
        ..SearchQuery::default()
    })
}

fn eq(scope: &str, attribute: &str, value: Value) -> Filter {
    Filter {
        scope: scope.into(),
        attribute: attribute.into(),
        op: Op::Eq,
        value,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The service's rules against the in-memory store.

    use super::*;
    use crate::store::MemoryStore;
    use serde_json::json;

    const T: &str = "tenant";

    fn service() -> Inventory<MemoryStore> {
        Inventory {
            store: MemoryStore::new(),
        }
    }

    fn attr(name: &str, value: Value) -> AttributeIn {
        AttributeIn {
            name: name.into(),
            value: Some(value),
            description: None,
            scope: None,
        }
    }

    async fn device(inv: &Inventory<MemoryStore>, id: &str) -> InventoryDevice {
        inv.get_device(T, id).await.unwrap()
    }

    fn message(e: Error) -> (&'static str, String) {
        match e {
            Error::BadRequest(m) => ("bad request", m),
            Error::NotFound(m) => ("not found", m),
            Error::PreconditionFailed(m) => ("precondition failed", m),
            Error::Conflict(m) => ("conflict", m),
            Error::Storage(e) => ("storage", e.to_string()),
            Error::Internal(m) => ("internal", m),
        }
    }

    #[tokio::test]
    async fn device_patch_merges_put_replaces_and_no_change_writes_nothing() {
        let inv = service();
        let patch = vec![attr("a", json!(1)), attr("b", json!("x"))];
        inv.device_update(T, "d", patch, false).await.unwrap();
        let d = device(&inv, "d").await;
        assert_eq!(d.version, 1);
        assert_eq!(d.get(INVENTORY, "a"), Some(&json!(1)));
        assert!(d.get(SYSTEM, "created_ts").is_some() && d.get(SYSTEM, "updated_ts").is_some());

        inv.device_update(T, "d", vec![attr("a", json!(2))], false)
            .await
            .unwrap();
        let d = device(&inv, "d").await;
        assert_eq!(d.version, 2);
        assert_eq!(d.get(INVENTORY, "a"), Some(&json!(2)));
        assert_eq!(d.get(INVENTORY, "b"), Some(&json!("x")));

        // The same values again (updated today): nothing is written.
        inv.device_update(T, "d", vec![attr("a", json!(2))], false)
            .await
            .unwrap();
        assert_eq!(device(&inv, "d").await.version, 2);

        // PUT replaces the inventory scope only.
        inv.set_status(T, "d", "accepted", 1).await.unwrap();
        inv.device_update(T, "d", vec![attr("c", json!(3))], true)
            .await
            .unwrap();
        let d = device(&inv, "d").await;
        assert_eq!(d.count(INVENTORY), 1);
        assert_eq!(d.get(INVENTORY, "c"), Some(&json!(3)));
        assert_eq!(d.get(IDENTITY, "status"), Some(&json!("accepted")));
    }

    #[tokio::test]
    async fn limits_refuse_the_write() {
        let inv = service();
        let many: Vec<AttributeIn> = (0..LIMIT_ATTRIBUTES)
            .map(|i| attr(&format!("a{i}"), json!(i)))
            .collect();
        inv.device_update(T, "d", many, false).await.unwrap();
        let err = inv
            .device_update(T, "d", vec![attr("one-more", json!(1))], false)
            .await
            .unwrap_err();
        assert_eq!(
            message(err),
            (
                "bad request",
                "the number of attributes in the scope is above the limit".into()
            )
        );
        assert_eq!(device(&inv, "d").await.count(INVENTORY), LIMIT_ATTRIBUTES);

        // Within every per-value limit, but too big as a whole.
        let big: Vec<AttributeIn> = (0..20)
            .map(|i| attr(&format!("big{i}"), json!("x".repeat(4000))))
            .collect();
        let err = inv.device_update(T, "e", big, false).await.unwrap_err();
        assert_eq!(
            message(err),
            (
                "bad request",
                "the device's attributes are too large".into()
            )
        );
        assert!(inv.find_device(T, "e").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn status_follows_the_newest_revision() {
        let inv = service();
        inv.set_status(T, "d", "accepted", 2).await.unwrap();
        inv.set_status(T, "d", "pending", 1).await.unwrap();
        assert_eq!(
            device(&inv, "d").await.get(IDENTITY, "status"),
            Some(&json!("accepted"))
        );
        inv.set_status(T, "d", "rejected", 3).await.unwrap();
        assert_eq!(
            device(&inv, "d").await.get(IDENTITY, "status"),
            Some(&json!("rejected"))
        );
        let err = inv.set_status(T, "d", "bogus", 4).await.unwrap_err();
        assert_eq!(
            message(err),
            ("not found", "unrecognized status: bogus".into())
        );
        inv.set_status(T, "d", "decommissioned", 5).await.unwrap();
        assert_eq!(
            message(inv.get_device(T, "d").await.unwrap_err()),
            ("not found", "Device not found".into())
        );
        // Deleting a device already gone is fine.
        inv.delete_device(T, "d").await.unwrap();
    }

    #[tokio::test]
    async fn tags_check_the_etag() {
        let inv = service();
        // Unknown device: a no-op without If-Match, a failed precondition with it.
        inv.set_tags(T, "d", vec![attr("t", json!("v"))], false, None)
            .await
            .unwrap();
        assert!(inv.find_device(T, "d").await.unwrap().is_none());
        let err = inv
            .set_tags(T, "d", vec![attr("t", json!("v"))], false, Some("x"))
            .await
            .unwrap_err();
        assert_eq!(
            message(err),
            ("precondition failed", "ETag does not match".into())
        );

        inv.set_status(T, "d", "accepted", 1).await.unwrap();
        inv.set_tags(T, "d", vec![attr("t", json!("v"))], false, None)
            .await
            .unwrap();
        let etag = device(&inv, "d").await.tags_etag.unwrap();
        let err = inv
            .set_tags(T, "d", vec![attr("t", json!("w"))], false, Some("other"))
            .await
            .unwrap_err();
        assert_eq!(
            message(err),
            ("precondition failed", "ETag does not match".into())
        );
        assert_eq!(device(&inv, "d").await.get(TAGS, "t"), Some(&json!("v")));
        inv.set_tags(T, "d", vec![attr("u", json!("w"))], true, Some(&etag))
            .await
            .unwrap();
        let d = device(&inv, "d").await;
        assert_eq!(
            (d.get(TAGS, "t"), d.get(TAGS, "u")),
            (None, Some(&json!("w")))
        );
        assert_ne!(d.tags_etag, Some(etag));

        let too_many: Vec<AttributeIn> = (0..=LIMIT_TAGS)
            .map(|i| attr(&format!("t{i}"), json!("v")))
            .collect();
        let err = inv
            .set_tags(T, "d", too_many, true, None)
            .await
            .unwrap_err();
        assert_eq!(message(err).0, "bad request");
    }

    #[tokio::test]
    async fn groups_from_assignment_to_deletion() {
        let inv = service();
        let err = inv.set_group(T, "nobody", "g1").await.unwrap_err();
        assert_eq!(message(err), ("not found", "Device not found".into()));
        for (id, status) in [("d1", "accepted"), ("d2", "accepted"), ("d3", "pending")] {
            inv.set_status(T, id, status, 1).await.unwrap();
        }
        let err = inv.set_group(T, "d1", "no spaces").await.unwrap_err();
        assert_eq!(message(err).0, "bad request");
        inv.set_group(T, "d1", "g1").await.unwrap();
        inv.set_group(T, "d2", "g1").await.unwrap();
        inv.set_group(T, "d3", "g2").await.unwrap();
        // Assigning the same group again writes nothing.
        let version = device(&inv, "d1").await.version;
        inv.set_group(T, "d1", "g1").await.unwrap();
        assert_eq!(device(&inv, "d1").await.version, version);

        assert_eq!(inv.list_groups(T, None).await.unwrap(), vec!["g1", "g2"]);
        assert_eq!(
            inv.list_groups(T, Some("pending")).await.unwrap(),
            vec!["g2"]
        );
        assert_eq!(inv.group_of(T, "d3").await.unwrap().as_deref(), Some("g2"));
        let paging = Paging {
            page: 1,
            per_page: 1,
        };
        let (ids, total) = inv.group_devices(T, "g1", paging).await.unwrap();
        assert_eq!((ids.len(), total), (1, 2));
        let err = inv.group_devices(T, "none", paging).await.unwrap_err();
        assert_eq!(message(err), ("not found", "group not found".into()));
        assert_eq!(
            inv.accepted_devices(T, Some("g1")).await.unwrap(),
            vec!["d1", "d2"]
        );

        assert!(!inv.clear_group(T, "d1", "g2").await.unwrap());
        assert!(inv.clear_group(T, "d1", "g1").await.unwrap());
        assert_eq!(inv.delete_group(T, "g1").await.unwrap(), 1);
        assert_eq!(inv.list_groups(T, None).await.unwrap(), vec!["g2"]);
        assert_eq!(inv.group_of(T, "d2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn lists_filter_sort_and_count() {
        let inv = service();
        for (id, status, n) in [
            ("a", "accepted", 5),
            ("b", "accepted", 7),
            ("c", "pending", 5),
        ] {
            inv.set_status(T, id, status, 1).await.unwrap();
            inv.device_update(T, id, vec![attr("n", json!(n))], false)
                .await
                .unwrap();
        }
        inv.set_group(T, "b", "g").await.unwrap();
        let ids = |devices: Vec<InventoryDevice>| -> Vec<String> {
            devices.into_iter().map(|d| d.id).collect()
        };

        // v1 equality: "5" matches the number 5.
        let query = ListQuery {
            filters: vec![("inventory".into(), "n".into(), "5".into())],
            sort: Some(("identity".into(), "status".into(), true)),
            ..ListQuery::default()
        };
        let (devices, total) = inv.list_devices(T, &query).await.unwrap();
        assert_eq!((ids(devices), total), (vec!["c".into(), "a".into()], 2));

        let query = ListQuery {
            has_group: Some(false),
            paging: Paging {
                page: 2,
                per_page: 1,
            },
            ..ListQuery::default()
        };
        let (devices, total) = inv.list_devices(T, &query).await.unwrap();
        assert_eq!((devices.len(), total), (1, 2));

        let search = SearchQuery::parse(
            json!({"filters": [{"scope": "inventory", "attribute": "n", "type": "$gt", "value": 5}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let page = inv.search(T, &search).await.unwrap();
        assert_eq!((ids(page.devices), page.total), (vec!["b".into()], 1));

        let stats = inv.statistics(T).await.unwrap();
        assert_eq!(stats["devices_by_status"]["accepted"]["standard"], json!(2));
        assert_eq!(stats["devices_by_status"]["pending"]["standard"], json!(1));

        // Another tenant sees none of it.
        let (devices, total) = inv
            .list_devices("other", &ListQuery::default())
            .await
            .unwrap();
        assert_eq!((devices.len(), total), (0, 0));
    }

    /// A store where another writer changes the device between the service's read and its
    /// first write.
    struct Racing {
        inner: MemoryStore,
        raced: std::sync::atomic::AtomicBool,
    }

    impl Store for Racing {
        async fn get(&self, t: &str, id: &str) -> Result<Option<InventoryDevice>, DynamoError> {
            self.inner.get(t, id).await
        }
        async fn put(
            &self,
            t: &str,
            device: &mut InventoryDevice,
            before: Option<&InventoryDevice>,
        ) -> Result<(), DynamoError> {
            if !self.raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let stored = self.inner.get(t, &device.id).await?;
                let mut other = stored
                    .clone()
                    .unwrap_or_else(|| InventoryDevice::new(&device.id));
                other.set(INVENTORY, "other", json!("writer"));
                self.inner.put(t, &mut other, stored.as_ref()).await?;
            }
            self.inner.put(t, device, before).await
        }
        async fn delete(&self, t: &str, device: &InventoryDevice) -> Result<(), DynamoError> {
            self.inner.delete(t, device).await
        }
        async fn status_counts(&self, t: &str) -> Result<crate::store::StatusCounts, DynamoError> {
            self.inner.status_counts(t).await
        }
        async fn group_counts(&self, t: &str) -> Result<crate::store::GroupCounts, DynamoError> {
            self.inner.group_counts(t).await
        }
        async fn group_count(
            &self,
            t: &str,
            group: &str,
        ) -> Result<std::collections::BTreeMap<String, i64>, DynamoError> {
            self.inner.group_count(t, group).await
        }
        async fn partition_keys(
            &self,
            t: &str,
            partition: &Partition,
            descending: bool,
            limit: usize,
        ) -> Result<Vec<(String, String)>, DynamoError> {
            self.inner
                .partition_keys(t, partition, descending, limit)
                .await
        }
        async fn get_many(
            &self,
            t: &str,
            ids: &[String],
            paths: Option<&[(String, String)]>,
        ) -> Result<Vec<InventoryDevice>, DynamoError> {
            self.inner.get_many(t, ids, paths).await
        }
        async fn scan_shard(
            &self,
            t: &str,
            shard: u32,
            paths: Option<&[(String, String)]>,
            limit: Option<usize>,
            visit: &mut (dyn FnMut(InventoryDevice) + Send),
        ) -> Result<(), DynamoError> {
            self.inner.scan_shard(t, shard, paths, limit, visit).await
        }
    }

    #[tokio::test]
    async fn a_write_that_lost_a_race_is_retried_on_the_new_state() {
        let inv = Inventory {
            store: Racing {
                inner: MemoryStore::new(),
                raced: false.into(),
            },
        };
        inv.device_update(T, "d", vec![attr("mine", json!(1))], false)
            .await
            .unwrap();
        let d = inv.get_device(T, "d").await.unwrap();
        assert_eq!(d.get(INVENTORY, "mine"), Some(&json!(1)));
        assert_eq!(d.get(INVENTORY, "other"), Some(&json!("writer")));
        assert_eq!(d.version, 2);
    }
}
