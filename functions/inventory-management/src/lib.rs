//! inventory management API: v1 (`/api/management/v1/inventory/...`: devices list and get,
//! clearing a device's inventory, tags, groups) and v2 (`/api/management/v2/inventory/...`:
//! the filter search, attribute names, statistics; `v2alpha1` identity search) the GUI uses.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use inventory::search::SearchQuery;
use inventory::service::ListQuery;
use inventory::{AttributeIn, InventoryDevice};
use mender_http::json::check_json_content_type;
use mender_http::paging::{link_headers, list_response, query_pairs, Extent, Paging};
use mender_http::{query, ApiError, ApiResult, MenderJson, Route, UserAuth};
use serde::Deserialize;
use serde_json::{json, Value};
use services::Services;

const BASE: &str = "/api/management/v1/inventory";

/// Every route of this function and its handler. `infra/template.yaml` has one `HttpApi` event
/// per entry and the local server serves exactly these (checked by `tests/tests/template.rs`).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::get("/api/management/v1/inventory/devices", list_devices),
        Route::get("/api/management/v1/inventory/devices/{id}", get_device),
        Route::delete("/api/management/v1/inventory/devices/{id}", clear_device),
        Route::put("/api/management/v1/inventory/devices/{id}/tags", replace_tags),
        Route::patch("/api/management/v1/inventory/devices/{id}/tags", merge_tags),
        Route::get("/api/management/v1/inventory/devices/{id}/group", get_group),
        Route::put("/api/management/v1/inventory/devices/{id}/group", set_group),
        Route::delete("/api/management/v1/inventory/devices/{id}/group/{name}", clear_group),
        Route::get("/api/management/v1/inventory/groups", list_groups),
        Route::delete("/api/management/v1/inventory/groups/{name}", delete_group),
        Route::get("/api/management/v1/inventory/groups/{name}/devices", group_devices),
        Route::post("/api/management/v2/inventory/filters/search", search_devices),
        Route::get("/api/management/v2/inventory/filters/attributes", filter_attributes),
        Route::get("/api/management/v2/inventory/statistics", statistics),
        Route::post("/api/management/v2alpha1/inventory/identities/search", search_identities),
        Route::patch("/api/management/v1/inventory/groups/{name}/devices", add_to_group),
        Route::delete("/api/management/v1/inventory/groups/{name}/devices", remove_from_group),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

/// `GET /devices` parameters besides paging; every other key is an attribute filter. Each
/// value of a repeated key is checked and the last one counts.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ListDevicesParams {
    has_group: Vec<bool>,
    group: Vec<String>,
    sort: Vec<String>,
}

/// The keys that are not attribute filters.
const LIST_DEVICES_KEYS: [&str; 5] = ["page", "per_page", "has_group", "group", "sort"];

/// `sort=[scope/]name[:asc|desc]` (default descending) as (scope, name, descending).
fn device_sort(value: &str) -> ApiResult<(String, String, bool)> {
    let (attr, order) = value.split_once(':').unwrap_or((value, "desc"));
    let descending = match order {
        "asc" => false,
        "desc" => true,
        _ => return Err(ApiError::bad_request("invalid sort order")),
    };
    let (scope, name) = attr.split_once('/').unwrap_or(("inventory", attr));
    Ok((scope.into(), name.into(), descending))
}

/// `GET /devices`: filters `name=value` / `scope/name=eq:value`, `has_group`, `group`, `sort`.
async fn list_devices(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(q.as_deref());
    let paging = Paging::from_pairs(&pairs)?;
    let params: ListDevicesParams = query::from_pairs(&pairs)?;
    let sorts = params
        .sort
        .iter()
        .map(|v| device_sort(v))
        .collect::<ApiResult<Vec<_>>>()?;
    let filters = pairs
        .iter()
        .filter(|(key, _)| !LIST_DEVICES_KEYS.contains(&key.as_str()))
        .map(|(key, value)| {
            let (scope, name) = key.split_once('/').unwrap_or(("inventory", key.as_str()));
            let value = value.strip_prefix("eq:").unwrap_or(value);
            (scope.into(), name.into(), value.into())
        })
        .collect();
    let query = ListQuery {
        paging,
        has_group: params.has_group.last().copied(),
        group: params.group.last().cloned(),
        sort: sorts.last().cloned(),
        filters,
    };
    let (devices, total) = s.inventory.list_devices(auth.tenant(), &query).await?;
    let body: Vec<Value> = devices.iter().map(InventoryDevice::to_json).collect();
    let links = link_headers(
        &format!("{BASE}/devices"),
        &pairs,
        query.paging,
        Extent::Total(total),
    );
    Ok(list_response(body, links, Some(total)))
}

async fn get_device(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let device = s.inventory.get_device(auth.tenant(), &id).await?;
    let mut response = Json(device.to_json()).into_response();
    if let Some(etag) = device
        .tags_etag
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

async fn clear_device(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.inventory.clear_inventory(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn if_match(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"'))
}

async fn replace_tags(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    MenderJson(tags): MenderJson<Vec<AttributeIn>>,
) -> ApiResult<StatusCode> {
    s.inventory
        .set_tags(auth.tenant(), &id, tags, true, if_match(&headers))
        .await?;
    Ok(StatusCode::OK)
}

async fn merge_tags(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    MenderJson(tags): MenderJson<Vec<AttributeIn>>,
) -> ApiResult<StatusCode> {
    s.inventory
        .set_tags(auth.tenant(), &id, tags, false, if_match(&headers))
        .await?;
    Ok(StatusCode::OK)
}

async fn get_group(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let device = s.inventory.get_device(auth.tenant(), &id).await?;
    Ok(Json(json!({ "group": device.group() })))
}

#[derive(Deserialize)]
struct GroupBody {
    group: String,
}

async fn set_group(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    MenderJson(body): MenderJson<GroupBody>,
) -> ApiResult<StatusCode> {
    s.inventory
        .set_group(auth.tenant(), &id, &body.group)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_group(
    State(s): State<Services>,
    auth: UserAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if s.inventory.clear_group(auth.tenant(), &id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("Device not found"))
    }
}

#[derive(Deserialize)]
struct GroupsParams {
    status: Option<String>,
}

async fn list_groups(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let params: GroupsParams = query::parse(q.as_deref())?;
    Ok(Json(json!(
        s.inventory
            .list_groups(auth.tenant(), params.status.as_deref())
            .await?
    )))
}

/// `{"matched_count", "updated_count"}` with zero values left out, as upstream.
fn counts(matched: usize, updated: usize) -> Json<Value> {
    let mut body = serde_json::Map::new();
    if matched > 0 {
        body.insert("matched_count".into(), json!(matched));
    }
    if updated > 0 {
        body.insert("updated_count".into(), json!(updated));
    }
    Json(Value::Object(body))
}

async fn delete_group(
    State(s): State<Services>,
    auth: UserAuth,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let n = s.inventory.delete_group(auth.tenant(), &name).await?;
    Ok(counts(n, n))
}

async fn group_devices(
    State(s): State<Services>,
    auth: UserAuth,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(q.as_deref());
    let paging = Paging::from_pairs(&pairs)?;
    let (ids, total) = s
        .inventory
        .group_devices(auth.tenant(), &name, paging)
        .await?;
    let links = link_headers(
        &format!("{BASE}/groups/{name}/devices"),
        &pairs,
        paging,
        Extent::Total(total),
    );
    Ok(list_response(
        ids.into_iter().map(Value::String).collect(),
        links,
        Some(total),
    ))
}

/// A search result: the devices, `X-Total-Count`, no `Link` (as upstream).
fn search_response(page: inventory::listing::Page) -> Response {
    let body = page.devices.iter().map(InventoryDevice::to_json).collect();
    list_response(body, Vec::new(), Some(page.total))
}

/// `POST /v2/inventory/filters/search` (SPEC §4.4).
async fn search_devices(
    State(s): State<Services>,
    auth: UserAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_json_content_type(&headers)?;
    let query = SearchQuery::parse(&body).map_err(inventory::Error::from)?;
    let page = s.inventory.search(auth.tenant(), &query).await?;
    Ok(search_response(page))
}

async fn filter_attributes(State(s): State<Services>, auth: UserAuth) -> ApiResult<Json<Value>> {
    Ok(Json(s.inventory.filter_attributes(auth.tenant()).await?))
}

async fn statistics(State(s): State<Services>, auth: UserAuth) -> ApiResult<Json<Value>> {
    Ok(Json(s.inventory.statistics(auth.tenant()).await?))
}

/// `POST /v2alpha1/inventory/identities/search`: devices whose identity attribute (or
/// `tags/name`, or the id) starts with `value_prefix`.
async fn search_identities(
    State(s): State<Services>,
    auth: UserAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_json_content_type(&headers)?;
    let query = inventory::service::identity_query(&body)?;
    let page = s.inventory.search(auth.tenant(), &query).await?;
    Ok(search_response(page))
}

fn non_empty(ids: Vec<String>) -> ApiResult<Vec<String>> {
    if ids.is_empty() {
        Err(ApiError::bad_request("no device IDs present in payload"))
    } else {
        Ok(ids)
    }
}

async fn add_to_group(
    State(s): State<Services>,
    auth: UserAuth,
    Path(name): Path<String>,
    MenderJson(ids): MenderJson<Vec<String>>,
) -> ApiResult<Json<Value>> {
    inventory::model::check_group_name(&name).map_err(|e| ApiError::bad_request(e.0))?;
    let (mut matched, mut updated) = (0, 0);
    for id in non_empty(ids)? {
        let Some(before) = s.inventory.find_device(auth.tenant(), &id).await? else {
            continue;
        };
        matched += 1;
        if before.group() != Some(name.as_str()) {
            s.inventory.set_group(auth.tenant(), &id, &name).await?;
            updated += 1;
        }
    }
    Ok(counts(matched, updated))
}

async fn remove_from_group(
    State(s): State<Services>,
    auth: UserAuth,
    Path(name): Path<String>,
    MenderJson(ids): MenderJson<Vec<String>>,
) -> ApiResult<Json<Value>> {
    let mut updated = 0;
    for id in non_empty(ids)? {
        if s.inventory.clear_group(auth.tenant(), &id, &name).await? {
            updated += 1;
        }
    }
    Ok(counts(updated, updated))
}
