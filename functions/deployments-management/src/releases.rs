//! Release routes (v1 and v2): list with filters, sorting and paging, get, notes, tags,
//! delete, and the tenant's tags and update types.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use deployments::releases::Release;
use mender_aws::s3::ArtifactStorage;
use mender_http::paging::{link_headers, list_response, query_pairs, Extent, Paging};
use mender_http::{query, ApiError, ApiResult, MenderJson, UserAuth};
use serde::Deserialize;
use serde_json::{json, Value};
use services::Services;

/// The lists' query parameters.
#[derive(Default, Deserialize)]
#[serde(default)]
struct ReleaseQuery {
    name: Option<String>,
    tag: Vec<String>,
    update_type: Option<String>,
    description: Option<String>,
    device_type: Option<String>,
    sort: Option<String>,
}

/// Filters shared by the lists: `name` (case-insensitive "contains", as upstream's unanchored
/// regex), `tag` (any of, lower-cased), `update_type`, `description` and `device_type`.
fn filtered(mut releases: Vec<Release>, query: &ReleaseQuery) -> Vec<Release> {
    if let Some(name) = query.name.as_ref().map(|n| n.to_ascii_lowercase()) {
        releases.retain(|r| r.name.to_ascii_lowercase().contains(&name));
    }
    let tags: Vec<String> = query.tag.iter().map(|t| t.to_ascii_lowercase()).collect();
    if !tags.is_empty() {
        releases.retain(|r| r.tags.iter().any(|t| tags.contains(t)));
    }
    if let Some(kind) = &query.update_type {
        releases.retain(|r| r.update_types().contains(kind));
    }
    if let Some(d) = query.description.as_ref().map(|d| d.to_ascii_lowercase()) {
        releases.retain(|r| {
            r.artifacts
                .iter()
                .any(|a| a.description.to_ascii_lowercase().contains(&d))
        });
    }
    if let Some(t) = &query.device_type {
        releases.retain(|r| {
            r.artifacts
                .iter()
                .any(|a| a.device_types_compatible.contains(t))
        });
    }
    releases
}

/// `sort=name|modified|artifacts_count|tags[:asc|desc]`, default name ascending.
fn sorted(mut releases: Vec<Release>, query: &ReleaseQuery) -> ApiResult<Vec<Release>> {
    let sort = query.sort.as_deref().unwrap_or("name:asc");
    let (field, order) = sort.split_once(':').unwrap_or((sort, "asc"));
    match field {
        "name" => releases.sort_by(|a, b| a.name.cmp(&b.name)),
        "modified" => releases.sort_by(|a, b| a.modified.cmp(&b.modified)),
        "artifacts_count" => releases.sort_by_key(|r| r.artifacts.len()),
        "tags" => releases.sort_by(|a, b| a.tags.cmp(&b.tags)),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid sort field: {field}"
            )))
        }
    }
    match order {
        "asc" => {}
        "desc" => releases.reverse(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid sort order: {order}"
            )))
        }
    }
    Ok(releases)
}

/// `GET /api/management/v1/deployments/deployments/releases` (v1 shape, no paging).
pub async fn list_v1(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let query: ReleaseQuery = query::parse(q.as_deref())?;
    let releases = filtered(s.deployments.releases(auth.tenant()).await?, &query);
    Ok(Json(Value::Array(
        releases.iter().map(Release::to_json_v1).collect(),
    )))
}

async fn page(
    s: &Services,
    auth: &UserAuth,
    path: &str,
    q: Option<&str>,
    v2: bool,
) -> ApiResult<Response> {
    let pairs = query_pairs(q);
    let paging = Paging::from_pairs(&pairs)?;
    let query: ReleaseQuery = query::from_pairs(&pairs)?;
    let releases = sorted(
        filtered(s.deployments.releases(auth.tenant()).await?, &query),
        &query,
    )?;
    let total = releases.len() as u64;
    let body: Vec<Value> = paging
        .slice(releases)
        .iter()
        .map(|r| if v2 { r.to_json_v2() } else { r.to_json_v1() })
        .collect();
    let links = link_headers(path, &pairs, paging, Extent::Total(total));
    Ok(list_response(body, links, Some(total)))
}

/// `GET /api/management/v1/deployments/deployments/releases/list` (v1 shape, paged).
pub async fn list_v1_paged(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    page(
        &s,
        &auth,
        "/api/management/v1/deployments/deployments/releases/list",
        q.as_deref(),
        false,
    )
    .await
}

/// `GET /api/management/v2/deployments/deployments/releases`.
pub async fn list_v2(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    page(
        &s,
        &auth,
        "/api/management/v2/deployments/deployments/releases",
        q.as_deref(),
        true,
    )
    .await
}

pub async fn get(
    State(s): State<Services>,
    auth: UserAuth,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        s.deployments
            .release(auth.tenant(), &name)
            .await?
            .to_json_v2(),
    ))
}

#[derive(Deserialize)]
pub struct Notes {
    #[serde(default)]
    notes: String,
}

pub async fn set_notes(
    State(s): State<Services>,
    auth: UserAuth,
    Path(name): Path<String>,
    MenderJson(body): MenderJson<Notes>,
) -> ApiResult<StatusCode> {
    s.deployments
        .set_release_notes(auth.tenant(), &name, body.notes)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_tags(
    State(s): State<Services>,
    auth: UserAuth,
    Path(name): Path<String>,
    MenderJson(tags): MenderJson<Vec<String>>,
) -> ApiResult<StatusCode> {
    s.deployments
        .set_release_tags(auth.tenant(), &name, tags)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The releases to delete.
#[derive(Deserialize)]
pub struct ReleaseNames {
    #[serde(default)]
    name: Vec<String>,
}

/// `DELETE /api/management/v2/deployments/deployments/releases?name=a&name=b`.
pub async fn delete(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<StatusCode> {
    let names: ReleaseNames = query::parse(q.as_deref())?;
    for id in s
        .deployments
        .delete_releases(auth.tenant(), &names.name)
        .await?
    {
        s.artifacts
            .delete(&ArtifactStorage::key(auth.tenant(), &id))
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn all_tags(State(s): State<Services>, auth: UserAuth) -> ApiResult<Json<Value>> {
    let mut tags: Vec<String> = s
        .deployments
        .releases(auth.tenant())
        .await?
        .into_iter()
        .flat_map(|r| r.tags)
        .collect();
    tags.sort();
    tags.dedup();
    Ok(Json(json!(tags)))
}

pub async fn all_types(State(s): State<Services>, auth: UserAuth) -> ApiResult<Json<Value>> {
    let mut types: Vec<String> = s
        .deployments
        .releases(auth.tenant())
        .await?
        .iter()
        .flat_map(Release::update_types)
        .collect();
    types.sort();
    types.dedup();
    Ok(Json(json!(types)))
}
