//! inventory operations. Every write is a read-modify-write of the device item conditional on
//! its version, retried on conflict, so concurrent writers never lose an update; a write that
//! changes nothing is not stored.

use mender_aws::dynamo::DynamoError;
use mender_http::paging::Paging;
use mender_http::ApiError;
use serde_json::Value;

use crate::model::{
    check_group_name, compare, matches_text, validate, AttributeIn, Invalid, InventoryDevice,
    IDENTITY, INVENTORY, LIMIT_ATTRIBUTES, LIMIT_TAGS, MAX_DEVICE_BYTES, SYSTEM, TAGS,
};
use crate::store::Store;

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
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                mender_aws::dynamo::backoff(attempt).await;
            }
            let stored = self.store.get(tenant, id).await?;
            let read_version = stored.as_ref().map(|d| d.version);
            let existed = stored.is_some();
            if !existed && !create {
                return Ok(None);
            }
            let mut device = stored.unwrap_or_else(|| InventoryDevice::new(id));
            match change(&mut device, existed)? {
                Outcome::Unchanged => return Ok(Some(device)),
                Outcome::Store => {}
            }
            if device.size() > MAX_DEVICE_BYTES {
                return Err(Error::BadRequest(
                    "the device's attributes are too large".into(),
                ));
            }
            match self.store.put(tenant, &mut device, read_version).await {
                Ok(()) => return Ok(Some(device)),
                Err(DynamoError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(
            "too many concurrent writes to the device".into(),
        ))
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
            return Ok(self.store.delete(tenant, device_id).await?);
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

    pub async fn delete_device(&self, tenant: &str, device_id: &str) -> Result<(), Error> {
        Ok(self.store.delete(tenant, device_id).await?)
    }

    pub async fn get_device(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> Result<InventoryDevice, Error> {
        self.store
            .get(tenant, device_id)
            .await?
            .ok_or_else(|| Error::NotFound("Device not found".into()))
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

    pub async fn list_groups(
        &self,
        tenant: &str,
        status: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let mut groups: Vec<String> = self
            .store
            .list(tenant)
            .await?
            .iter()
            .filter(|d| {
                status.is_none_or(|s| d.get(IDENTITY, "status").and_then(Value::as_str) == Some(s))
            })
            .filter_map(|d| d.group().map(str::to_owned))
            .collect();
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Ids of the devices in `group`, sorted; 404 when no device has it.
    pub async fn group_devices(&self, tenant: &str, group: &str) -> Result<Vec<String>, Error> {
        let mut ids: Vec<String> = self
            .store
            .list(tenant)
            .await?
            .into_iter()
            .filter(|d| d.group() == Some(group))
            .map(|d| d.id)
            .collect();
        if ids.is_empty() {
            return Err(Error::NotFound("group not found".into()));
        }
        ids.sort();
        Ok(ids)
    }

    /// `DELETE /groups/{name}`: clears the group of all its members; returns how many.
    pub async fn delete_group(&self, tenant: &str, group: &str) -> Result<usize, Error> {
        let members = self.group_devices(tenant, group).await.unwrap_or_default();
        let mut updated = 0;
        for id in members {
            if self.clear_group(tenant, &id, group).await? {
                updated += 1;
            }
        }
        Ok(updated)
    }

    /// The v1 list: filtered, sorted, paged. Returns (page, total).
    pub async fn list_devices(
        &self,
        tenant: &str,
        query: &ListQuery,
    ) -> Result<(Vec<InventoryDevice>, u64), Error> {
        let mut devices: Vec<InventoryDevice> = self
            .store
            .list(tenant)
            .await?
            .into_iter()
            .filter(|d| {
                query.filters.iter().all(|(scope, name, value)| {
                    d.get(scope, name).is_some_and(|v| matches_text(v, value))
                })
            })
            .filter(|d| query.has_group.is_none_or(|has| d.group().is_some() == has))
            .filter(|d| query.group.as_deref().is_none_or(|g| d.group() == Some(g)))
            .collect();
        match &query.sort {
            Some((scope, name, descending)) => devices.sort_by(|a, b| {
                let order =
                    compare(a.get(scope, name), b.get(scope, name)).then_with(|| a.id.cmp(&b.id));
                if *descending {
                    order.reverse()
                } else {
                    order
                }
            }),
            None => devices.sort_by(|a, b| {
                let created = |d: &InventoryDevice| {
                    d.get(SYSTEM, "created_ts")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                created(a).cmp(&created(b)).then_with(|| a.id.cmp(&b.id))
            }),
        }
        let total = devices.len() as u64;
        Ok((query.paging.slice(devices), total))
    }
}

impl Inventory {
    /// Ids of accepted devices (optionally of one group): deployment targets.
    pub async fn accepted_devices(
        &self,
        tenant: &str,
        group: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        let mut ids: Vec<String> = self
            .store
            .list(tenant)
            .await?
            .into_iter()
            .filter(|d| d.get(IDENTITY, "status").and_then(Value::as_str) == Some("accepted"))
            .filter(|d| group.is_none_or(|g| d.group() == Some(g)))
            .map(|d| d.id)
            .collect();
        ids.sort();
        Ok(ids)
    }
}
