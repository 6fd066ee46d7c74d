//! deployments management API: artifacts (upload, list, get, edit, delete, download link) and
//! deployments (create for devices, all devices or a group; list, get, statistics, devices,
//! logs, abort; a device's history and abort). The route table is here; the handlers are in
//! one module per resource: `artifacts` (the upload itself in `upload`, generation in
//! `generate`), `rollouts` (deployments), `releases`, `operator`.

mod artifacts;
pub mod generate;
pub mod operator;
pub mod releases;
mod rollouts;
pub mod upload;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::Router;
use mender_http::{ApiError, ApiResult, Route};
use services::Services;

/// Users' download links are valid 15 minutes.
pub const DOWNLOAD_LINK_LIFETIME: Duration = Duration::from_secs(900);
/// Direct upload links are valid an hour (upstream `storage.upload_expire_seconds`).
pub const UPLOAD_LINK_LIFETIME: Duration = Duration::from_secs(3600);
pub(crate) const V1: &str = "/api/management/v1/deployments";

/// Every route of this function and its handler (one `HttpApi` event each in the template).
/// One line per route (hence no rustfmt): grep a path, read its handler.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Services>> {
    let upload = artifacts::upload_artifact.layer(DefaultBodyLimit::max(upload::MAX_ARTIFACT_SIZE as usize));
    let generate = artifacts::generate_artifact.layer(DefaultBodyLimit::max(generate::MAX_REQUEST_SIZE));
    vec![
        Route::get("/api/management/v1/deployments/deployments/releases", releases::list_v1),
        Route::get("/api/management/v1/deployments/deployments/releases/list", releases::list_v1_paged),
        Route::get("/api/management/v2/deployments/deployments/releases", releases::list_v2),
        Route::delete("/api/management/v2/deployments/deployments/releases", releases::delete),
        Route::get("/api/management/v2/deployments/deployments/releases/{name}", releases::get),
        Route::patch("/api/management/v2/deployments/deployments/releases/{name}", releases::set_notes),
        Route::put("/api/management/v2/deployments/deployments/releases/{name}/tags", releases::set_tags),
        Route::get("/api/management/v2/deployments/releases/all/tags", releases::all_tags),
        Route::get("/api/management/v2/deployments/releases/all/types", releases::all_types),
        Route::get("/api/management/v1/deployments/artifacts", artifacts::list_artifacts),
        Route::get("/api/management/v1/deployments/artifacts/list", operator::list_artifacts_paged),
        Route::post("/api/management/v1/deployments/artifacts", upload),
        Route::post("/api/management/v1/deployments/artifacts/generate", generate),
        Route::get("/api/management/v1/deployments/artifacts/{id}", artifacts::get_artifact),
        Route::put("/api/management/v1/deployments/artifacts/{id}", artifacts::edit_artifact),
        Route::delete("/api/management/v1/deployments/artifacts/{id}", artifacts::delete_artifact),
        Route::get("/api/management/v1/deployments/artifacts/{id}/download", artifacts::download_link),
        Route::get("/api/management/v2/deployments/artifacts", artifacts::list_artifacts_v2),
        Route::post("/api/management/v1/deployments/artifacts/directupload", artifacts::start_direct_upload),
        Route::post("/api/management/v1/deployments/artifacts/directupload/{id}/complete", artifacts::complete_direct_upload),
        Route::post("/api/management/v1/deployments/deployments", rollouts::create_deployment),
        Route::post("/api/management/v1/deployments/deployments/group/{name}", rollouts::create_group_deployment),
        Route::get("/api/management/v1/deployments/deployments", rollouts::list_deployments),
        Route::get("/api/management/v2/deployments/deployments", rollouts::list_deployments),
        Route::get("/api/management/v1/deployments/deployments/{id}", rollouts::get_deployment),
        Route::put("/api/management/v1/deployments/deployments/{id}/status", rollouts::abort_deployment),
        Route::get("/api/management/v1/deployments/deployments/{id}/statistics", rollouts::statistics),
        Route::get("/api/management/v1/deployments/deployments/{id}/devices", rollouts::deployment_devices),
        Route::get("/api/management/v1/deployments/deployments/{id}/devices/list", rollouts::deployment_devices_page),
        Route::get("/api/management/v1/deployments/deployments/{id}/device_list", rollouts::device_list),
        Route::get("/api/management/v1/deployments/deployments/{id}/devices/{device_id}/log", rollouts::device_log),
        Route::get("/api/management/v1/deployments/deployments/devices/{id}", rollouts::device_history),
        Route::delete("/api/management/v1/deployments/deployments/devices/{id}", rollouts::abort_device),
        Route::delete("/api/management/v1/deployments/deployments/devices/{id}/history", operator::delete_device_history),
        Route::post("/api/management/v1/deployments/deployments/statistics/list", operator::statistics_list),
        Route::get("/api/management/v1/deployments/limits/{name}", operator::limit),
        Route::get("/api/management/v1alpha1/deployments/software", operator::list_software),
        Route::get("/api/management/v1alpha1/deployments/software/tags", operator::software_tags),
    ]
}

pub fn router(services: Services) -> Router {
    mender_http::routes::router(routes()).with_state(services)
}

pub(crate) fn check_uuid(id: &str) -> ApiResult<()> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::bad_request("ID is not a valid UUID"))
}
