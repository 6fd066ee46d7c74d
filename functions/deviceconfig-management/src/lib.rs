//! deviceconfig management API: a device's configured and reported configurations (`GET`), the
//! configured one replaced (`PUT`, an upsert), and deployed (`POST .../deploy`): a new
//! deployment id is recorded and a configuration deployment of the device created in
//! deployments, in process (upstream's `deploy_device_configuration` workflow calls deployments'
//! internal API for it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use bytes::Bytes;
use deployments::configuration::NewConfigurationDeployment;
use deviceconfig::{parse_configuration, DeviceConfig};
use mender_http::{ApiError, ApiResult, Route, UserAuth};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use services::Services;

/// Every route of this function and its handler (one `HttpApi` event each in the template).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    vec![
        Route::get("/api/management/v1/deviceconfig/configurations/device/{device_id}", get_configuration),
        Route::put("/api/management/v1/deviceconfig/configurations/device/{device_id}", set_configuration),
        Route::post("/api/management/v1/deviceconfig/configurations/device/{device_id}/deploy", deploy_configuration),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

async fn get_configuration(
    State(s): State<Services>,
    auth: UserAuth,
    Path(device_id): Path<String>,
) -> ApiResult<Json<DeviceConfig>> {
    Ok(Json(
        s.deviceconfig.device(auth.tenant(), &device_id).await?,
    ))
}

async fn set_configuration(
    State(s): State<Services>,
    auth: UserAuth,
    Path(device_id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let configured = parse_configuration(&body)?;
    s.deviceconfig
        .set_configured(auth.tenant(), &device_id, &configured)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Upstream's `DeployConfigurationRequest`.
#[derive(Deserialize)]
struct DeployRequest {
    #[serde(default)]
    retries: u64,
    #[serde(default)]
    update_control_map: Option<Map<String, Value>>,
}

/// Go's `encoding/json` texts for what clients get wrong most.
fn malformed(body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some("EOF".into());
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(e.to_string()),
    };
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let Value::Object(map) = &value else {
        return (!value.is_null()).then(|| {
            format!(
                "json: cannot unmarshal {} into Go value of type model.DeployConfigurationRequest",
                kind(&value)
            )
        });
    };
    match map.get("retries") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some() => {}
        Some(other) => {
            let shown = match other {
                Value::Number(n) => format!("number {n}"),
                other => kind(other).to_owned(),
            };
            return Some(format!(
                "json: cannot unmarshal {shown} into Go struct field \
                 DeployConfigurationRequest.retries of type uint"
            ));
        }
    }
    match map.get("update_control_map") {
        None | Some(Value::Null) | Some(Value::Object(_)) => None,
        Some(other) => Some(format!(
            "json: cannot unmarshal {} into Go struct field \
             DeployConfigurationRequest.update_control_map of type map[string]interface {{}}",
            kind(other)
        )),
    }
}

async fn deploy_configuration(
    State(s): State<Services>,
    auth: UserAuth,
    Path(device_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let tenant = auth.tenant();
    // Upstream looks the device up before it reads the body.
    s.deviceconfig.device(tenant, &device_id).await?;
    if let Some(problem) = malformed(&body) {
        return Err(ApiError::bad_request(format!(
            "malformed request body: {problem}"
        )));
    }
    let request: DeployRequest = serde_json::from_slice::<Option<DeployRequest>>(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed request body: {e}")))?
        .unwrap_or(DeployRequest {
            retries: 0,
            update_control_map: None,
        });
    if request.update_control_map.is_some_and(|m| !m.is_empty()) {
        // open source: no plan claim in user tokens reaches Enterprise
        return Err(ApiError::forbidden(
            "forbidden: update control map is available only for Enterprise customers",
        ));
    }
    let (deployment_id, configured) = s.deviceconfig.new_deployment(tenant, &device_id).await?;
    let groups = s
        .inventory
        .group_of(tenant, &device_id)
        .await?
        .into_iter()
        .collect();
    let configuration = serde_json::to_string(&configured).map_err(ApiError::internal)?;
    s.deployments
        .create_configuration_deployment(
            tenant,
            NewConfigurationDeployment {
                name: format!("configuration-{deployment_id}"),
                deployment_id: deployment_id.clone(),
                device_id: device_id.clone(),
                configuration,
                retries: request.retries,
                groups,
            },
        )
        .await
        .map_err(|e| ApiError::internal(format!("configuration deployment failed: {e}")))?;
    Ok(Json(json!({ "deployment_id": deployment_id })))
}
