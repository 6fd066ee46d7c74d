//! useradm management API (`/api/management/v{1,2}/useradm/...`): login/logout, users,
//! settings, personal access tokens, plans. One small handler per route; rules live in the
//! `useradm` crate.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine;
use mender_http::json::parse_json;
use mender_http::paging::{query_pairs, Paging};
use mender_http::{query, ApiError, ApiResult, MenderJson, Route, UserAuth};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use services::Services;
use useradm::service::{UserFilter, UserUpdate};

/// Every route of this function and its handler. `infra/template.yaml` has one `HttpApi` event
/// per entry and the local server serves exactly these (checked by `tests/tests/template.rs`).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::post("/api/management/v1/useradm/auth/login", login),
        Route::post("/api/management/v1/useradm/auth/logout", logout),
        Route::get("/api/management/v1/useradm/users", list_users),
        Route::post("/api/management/v1/useradm/users", create_user),
        Route::get("/api/management/v1/useradm/users/{id}", get_user),
        Route::put("/api/management/v1/useradm/users/{id}", update_user),
        Route::delete("/api/management/v1/useradm/users/{id}", delete_user),
        Route::put("/api/management/v2/useradm/users/me", update_me_v2),
        Route::get("/api/management/v1/useradm/settings", get_settings),
        Route::post("/api/management/v1/useradm/settings", set_settings),
        Route::get("/api/management/v1/useradm/settings/me", get_my_settings),
        Route::post("/api/management/v1/useradm/settings/me", set_my_settings),
        Route::get("/api/management/v1/useradm/settings/tokens", list_tokens),
        Route::post("/api/management/v1/useradm/settings/tokens", create_token),
        Route::delete("/api/management/v1/useradm/settings/tokens/{id}", delete_token),
        Route::get("/api/management/v1/useradm/plans", plans),
        Route::get("/api/management/v1/useradm/plan_binding", plan_binding),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

fn jwt_response(token: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/jwt")],
        token,
    )
        .into_response()
}

/// Email and password from `Authorization: Basic`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[derive(Deserialize, Default)]
struct LoginOptions {
    #[serde(default)]
    no_expiry: bool,
}

async fn login(State(s): State<Services>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let (email, password) = basic_credentials(&headers)
        .ok_or_else(|| ApiError::unauthorized("invalid or missing auth header"))?;
    let options: LoginOptions = if body.iter().all(u8::is_ascii_whitespace) {
        LoginOptions::default()
    } else {
        parse_json(&body)?
    };
    let token = s
        .useradm
        .login(&email, &password, options.no_expiry)
        .await?;
    Ok(jwt_response(token))
}

async fn logout(State(s): State<Services>, auth: UserAuth) -> ApiResult<StatusCode> {
    s.useradm.logout(&auth.claims).await?;
    Ok(StatusCode::ACCEPTED)
}

/// The users list filters: repeatable `id` and `email`, and Unix-time bounds (a bound that is
/// not an integer is `invalid <key> query: "<value>"`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct UsersParams {
    id: Vec<String>,
    email: Vec<String>,
    created_after: Option<i64>,
    created_before: Option<i64>,
    updated_after: Option<i64>,
    updated_before: Option<i64>,
}

async fn list_users(
    State(s): State<Services>,
    auth: UserAuth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let params: UsersParams = query::parse(q.as_deref())?;
    let filter = UserFilter {
        ids: params.id,
        emails: params.email,
        created_after: params.created_after,
        created_before: params.created_before,
        updated_after: params.updated_after,
        updated_before: params.updated_before,
    };
    let users = s.useradm.list_users(auth.tenant(), &filter).await?;
    Ok(Json(json!(users)))
}

#[derive(Deserialize)]
struct NewUser {
    email: String,
    password: String,
}

async fn create_user(
    State(s): State<Services>,
    auth: UserAuth,
    MenderJson(body): MenderJson<NewUser>,
) -> ApiResult<Response> {
    let user = s
        .useradm
        .create_user(auth.tenant(), &body.email, &body.password)
        .await?;
    let location = format!("/api/management/v1/useradm/users/{}", user.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

fn resolve<'a>(auth: &'a UserAuth, id: &'a str) -> &'a str {
    if id == "me" {
        auth.user_id()
    } else {
        id
    }
}

async fn get_user(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = s
        .useradm
        .get_user(auth.tenant(), resolve(&auth, &id))
        .await?;
    Ok(Json(json!(user)))
}

async fn update_user(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
    MenderJson(update): MenderJson<UserUpdate>,
) -> ApiResult<StatusCode> {
    s.useradm
        .update_user(&auth.claims, resolve(&auth, &id), update)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PasswordChange {
    password: Option<String>,
    current_password: Option<String>,
}

async fn update_me_v2(
    State(s): State<Services>,
    auth: UserAuth,
    MenderJson(body): MenderJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    let update = UserUpdate {
        email: None,
        password: body.password,
        current_password: body.current_password,
    };
    s.useradm
        .update_user(&auth.claims, auth.user_id(), update)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_user(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.useradm
        .delete_user(auth.tenant(), resolve(&auth, &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn settings_response(s: &Services, tenant: &str, user: Option<&str>) -> ApiResult<Response> {
    let (document, etag) = s.useradm.get_settings(tenant, user).await?;
    let mut response = Json(Value::Object(document)).into_response();
    if let Some(etag) = etag.and_then(|e| header::HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

async fn store_settings(
    s: &Services,
    tenant: &str,
    user: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<StatusCode> {
    mender_http::json::check_json_content_type(headers)?;
    let document: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("cannot parse request body as json"))?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"'));
    s.useradm
        .put_settings(tenant, user, document, if_match)
        .await?;
    Ok(StatusCode::CREATED)
}

async fn get_settings(State(s): State<Services>, auth: UserAuth) -> ApiResult<Response> {
    settings_response(&s, auth.tenant(), None).await
}

async fn set_settings(
    State(s): State<Services>,
    auth: UserAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    store_settings(&s, auth.tenant(), None, &headers, &body).await
}

async fn get_my_settings(State(s): State<Services>, auth: UserAuth) -> ApiResult<Response> {
    settings_response(&s, auth.tenant(), Some(auth.user_id())).await
}

async fn set_my_settings(
    State(s): State<Services>,
    auth: UserAuth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    store_settings(&s, auth.tenant(), Some(auth.user_id()), &headers, &body).await
}

async fn list_tokens(State(s): State<Services>, auth: UserAuth) -> ApiResult<Json<Value>> {
    Ok(Json(Value::Array(s.useradm.list_pats(&auth.claims).await?)))
}

#[derive(Deserialize)]
struct NewToken {
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_in: i64,
}

async fn create_token(
    State(s): State<Services>,
    auth: UserAuth,
    MenderJson(body): MenderJson<NewToken>,
) -> ApiResult<Response> {
    let token = s
        .useradm
        .create_pat(&auth.claims, &body.name, body.expires_in)
        .await?;
    Ok(jwt_response(token))
}

async fn delete_token(
    State(s): State<Services>,
    auth: UserAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.useradm.delete_pat(&auth.claims, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Open source Mender configures no plans.
async fn plans(_auth: UserAuth, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    Paging::from_pairs(&query_pairs(q.as_deref()))?;
    Ok(Json(json!([])))
}

async fn plan_binding(_auth: UserAuth) -> Json<Value> {
    Json(json!({"plan": {"name": "", "display_name": "", "features": null}}))
}
