//! inventory operations. Every write is a read-modify-write of the device item conditional on
//! its version, retried on conflict, so concurrent writers never lose an update; a write that
//! changes nothing is not stored.

use mender_aws::dynamo::DynamoError;
use mender_aws::retry::{lost_race, Attempts};
use mender_http::paging::{Paging, MAX_PER_PAGE};
use mender_http::ApiError;
use serde_json::Value;

use crate::listing;
use crate::model::{
    check_group_name, validate, AttributeIn, Invalid, InventoryDevice, IDENTITY, INVENTORY,
    LIMIT_ATTRIBUTES, LIMIT_TAGS, MAX_DEVICE_BYTES, SYSTEM, TAGS,
};
use crate::search::{Filter, Op, SearchError, SearchQuery, Selector, SortKey};
use crate::store::{Partition, Store, ALL_STATUSES};

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

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::NotFound(m) => ApiError::not_found(m),
            Error::PreconditionFailed(m) => {
                ApiError::new(mender_http::error::StatusCode::PRECONDITION_FAILED, m)
            }
            Error::Conflict(m) => ApiError::conflict(m),
            Error::Storage(e) => ApiError::internal(e),
            Error::Internal(m) => ApiError::internal(m),
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

#[derive(Clone)]
pub struct Inventory {
    pub store: Store,
}

impl Inventory {
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
