//! deviceauth management API (`/api/management/v2/devauth/...`): devices list, search, count,
//! get, preauthorize, decommission, auth set status and removal, token revocation, limits.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use deviceauth::service::DeviceFilter;
use deviceauth::Device;
use mender_http::json::{check_json_content_type, parse_json};
use mender_http::paging::{link_headers, list_response, query_pairs, Extent, Paging};
use mender_http::{query, ApiResult, MenderJson, Route, UserAuth};
use serde::Deserialize;
use serde_json::{json, Value};
use services::Services;

const BASE: &str = "/api/management/v2/devauth";

/// Every route of this function and its handler. `infra/template.yaml` has one `HttpApi` event
/// per entry and the local server serves exactly these (checked by `tests/tests/template.rs`).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::get("/api/management/v2/devauth/devices", list_devices),
        Route::post("/api/management/v2/devauth/devices", preauthorize),
        Route::post("/api/management/v2/devauth/devices/search", search_devices),
        Route::get("/api/management/v2/devauth/devices/count", count_devices),
        Route::get("/api/management/v2/devauth/devices/{id}", get_device),
        Route::delete("/api/management/v2/devauth/devices/{id}", decommission),
        Route::delete("/api/management/v2/devauth/devices/{id}/auth/{aid}", delete_auth_set),
        Route::get("/api/management/v2/devauth/devices/{id}/auth/{aid}/status", get_auth_status),
        Route::put("/api/management/v2/devauth/devices/{id}/auth/{aid}/status", set_auth_status),
        Route::delete("/api/management/v2/devauth/tokens/{id}", revoke_token),
        Route::get("/api/management/v2/devauth/limits/{name}", get_limit),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

/// A page of devices with upstream's "has next" `Link` headers (no total).
async fn device_page(
    s: &Services,
    auth: &UserAuth,
    path: &str,
    pairs: &[(String, String)],
    filter: &DeviceFilter,
) -> ApiResult<Response> {
    let paging = Paging::from_pairs(pairs)?;
    let (devices, has_next) = s
        .deviceauth
        .list_devices(auth.tenant(), filter, paging)
        .await?;
    let page: Vec<Value> = devices.iter().map(Device::to_json).collect();
    let links = link_headers(path, pairs, paging, Extent::HasNext(has_next));
    Ok(list_response(page, links, None))
}

/// The list filters, in the query or a form body: repeatable `status` (checked by the
/// service, with upstream's text) and `id`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct FilterParams {
    status: Vec<String>,
    id: Vec<String>,
}

impl From<FilterParams> for DeviceFilter {
    fn from(params: FilterParams) -> Self {
        DeviceFilter {
            statuses: params.status,
            ids: params.id,
        }
    }
}

async fn list_devices(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(q.as_deref());
    let filter = query::from_pairs::<FilterParams>(&pairs)?.into();
    device_page(&s, &auth, &format!("{BASE}/devices"), &pairs, &filter).await
}

/// A string or a list of strings.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Default)]
struct SearchBody {
    #[serde(default)]
    status: OneOrMany,
    #[serde(default)]
    id: OneOrMany,
}

async fn search_devices(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let filter = if content_type.starts_with("application/x-www-form-urlencoded") {
        query::parse::<FilterParams>(std::str::from_utf8(&body).ok())?.into()
    } else {
        check_json_content_type(&headers)?;
        let search: SearchBody = if body.is_empty() {
            SearchBody::default()
        } else {
            parse_json(&body)?
        };
        DeviceFilter {
            statuses: search.status.into_vec(),
            ids: search.id.into_vec(),
        }
    };
    let pairs = query_pairs(q.as_deref());
    device_page(
        &s,
        &auth,
        &format!("{BASE}/devices/search"),
        &pairs,
        &filter,
    )
    .await
}

/// `status` (checked by the service, with upstream's text).
#[derive(Deserialize)]
struct CountParams {
    status: Option<String>,
}

async fn count_devices(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let params: CountParams = query::parse(q.as_deref())?;
    let count = s
        .deviceauth
        .count_devices(auth.tenant(), params.status.as_deref())
        .await?;
    Ok(Json(json!({ "count": count })))
}

async fn get_device(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        s.deviceauth.get_device(auth.tenant(), &id).await?.to_json(),
    ))
}

#[derive(Deserialize)]
struct Preauthorization {
    identity_data: Value,
    #[serde(default)]
    pubkey: String,
    #[serde(default)]
    force: bool,
}

async fn preauthorize(
    State(s): State<Services>,
    auth: UserAuth,
    MenderJson(body): MenderJson<Preauthorization>,
) -> ApiResult<Response> {
    match s
        .deviceauth
        .preauthorize(auth.tenant(), &body.identity_data, &body.pubkey, body.force)
        .await
    {
        Ok(id) => Ok((
            StatusCode::CREATED,
            [(header::LOCATION, format!("devices/{id}"))],
        )
            .into_response()),
        Err(deviceauth::Error::Exists(device)) => {
            Ok((StatusCode::CONFLICT, Json(device)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn decommission(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.deviceauth.decommission(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_auth_set(
    State(s): State<Services>,
    auth: UserAuth,
    Path((id, aid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.deviceauth
        .delete_auth_set(auth.tenant(), &id, &aid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_auth_status(
    State(s): State<Services>,
    auth: UserAuth,
    Path((id, aid)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let status = s.deviceauth.auth_status(auth.tenant(), &id, &aid).await?;
    Ok(Json(json!({ "status": status })))
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

async fn set_auth_status(
    State(s): State<Services>,
    auth: UserAuth,
    Path((id, aid)): Path<(String, String)>,
    MenderJson(body): MenderJson<StatusBody>,
) -> ApiResult<StatusCode> {
    s.deviceauth
        .set_auth_status(auth.tenant(), &id, &aid, &body.status)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_token(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.deviceauth.revoke_token(auth.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_limit(
    State(s): State<Services>,
    auth: UserAuth,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let limit = s.deviceauth.limit(auth.tenant(), &name).await?;
    Ok(Json(json!({ "limit": limit })))
}
