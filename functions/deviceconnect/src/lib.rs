//! deviceconnect: the long-running service (a container, not a Lambda) that holds the device
//! and user websockets of remote terminal, file transfer and port forwarding (SPEC §7) and
//! relays msgpack ProtoMsg frames between them over NATS, so a user connected to one instance
//! reaches a device connected to another.
//!
//! NATS subjects (`<tenant>` is `_` for the open-source tenant, whose id is empty):
//! * `deviceconnect.<tenant>.device.<device id>`: frames for the device (its inbox);
//! * `deviceconnect.<tenant>.session.<device id>.<session id>`: frames from the device for one
//!   session (a user's terminal websocket, or a file transfer the server runs for an HTTP
//!   request). The device's socket publishes only under its own device id, so a device reaches
//!   only the sessions opened to it, whatever `hdr.sid` it writes;
//! * `deviceconnect.<tenant>.control.<device id>`: `connect <version>` / `disconnect <version>`
//!   announcements; an older connection of the same device closes itself on a newer
//!   `connect`, sessions of the device end on either.
//!
//! The device sockets of an instance read their inbox and control subject through one
//! subscription of the instance ([`inboxes`]).
//!
//! Modules: [`device`] (the device socket), [`session`] (user terminal sessions, recording,
//! playback), [`filetransfer`] (HTTP upload/download spoken as proto 2 to the device),
//! [`internal`] (endpoints for the other services), [`recheck`] (the tokens of open sockets,
//! checked again every [`Settings::recheck_interval`]), [`origin`] (the `Origin` check of
//! cookie-authenticated websockets). Connection status and session records live in DynamoDB
//! (`deviceconnect-store`), recordings in S3 ([`recording`]).

pub mod device;
pub mod filetransfer;
pub mod inboxes;
pub mod internal;
pub mod origin;
pub mod protomsg;
pub mod recheck;
pub mod recording;
pub mod session;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use mender_http::{ApiError, ApiResult, Authenticator, Route, UserAuth};
use services::Services;
use std::sync::Arc;
use std::time::Duration;

pub use deviceconnect_store::{
    DeviceRecord, Session, Store, HEARTBEAT_INTERVAL, HEARTBEAT_LIFETIME,
};

/// Largest websocket message (SPEC §7.1).
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// The NATS server's `max_payload` must allow this: a largest message plus the stamped header.
pub const NATS_MAX_PAYLOAD: usize = MAX_MESSAGE + 64 * 1024;
/// Initial websocket read buffer, resident per socket: most sockets are idle devices whose
/// frames are pings and short terminal frames. A larger frame gets a buffer of its size for
/// as long as it is read (up to [`MAX_MESSAGE`]); reads from the socket are at most this size.
const READ_BUFFER: usize = 1024;
/// Close code for a frame that is not a ProtoMsg (unsupported data).
const CLOSE_INVALID: u16 = 1003;
/// Close code when the instance shuts down.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a policy violation: the token no longer holds, the session byte limit.
const CLOSE_POLICY: u16 = 1008;
const SUBPROTOCOL: &str = "protomsg/msgpack";

/// Default of [`Settings::recheck_interval`].
pub const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The service's settings (the container reads them from its environment, see `main.rs`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often the token of an open socket is checked again (expiry, logout or revocation,
    /// user deleted, device rejected or decommissioned): one token read per socket each time.
    pub recheck_interval: Duration,
    /// Origins (`scheme://host[:port]`) that may open cookie-authenticated websockets besides
    /// the request's own host (a GUI served from another host name).
    pub allowed_origins: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            recheck_interval: DEFAULT_RECHECK_INTERVAL,
            allowed_origins: Vec::new(),
        }
    }
}

impl Settings {
    /// `DEVICECONNECT_RECHECK_SECONDS` (default 60) and `DEVICECONNECT_ALLOWED_ORIGINS`
    /// (comma-separated origins, default none).
    pub fn from_env() -> Result<Self, String> {
        let mut settings = Settings::default();
        if let Ok(secs) = std::env::var("DEVICECONNECT_RECHECK_SECONDS") {
            let secs: u64 =
                secs.trim().parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("DEVICECONNECT_RECHECK_SECONDS: invalid value {secs:?}")
                })?;
            settings.recheck_interval = Duration::from_secs(secs);
        }
        if let Ok(origins) = std::env::var("DEVICECONNECT_ALLOWED_ORIGINS") {
            settings.allowed_origins = origins
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect();
        }
        Ok(settings)
    }
}

/// The service's state: the shared services (token checks, the deviceconnect store, the
/// bucket recordings go to), NATS, this instance's id (its heartbeat vouches for the devices it
/// holds), its settings and its shutdown switch. Every open socket keeps a clone, so the
/// services are behind an `Arc` (a `Services` clone copies its configuration: table names,
/// queue URLs, key PEMs — kilobytes per socket).
#[derive(Clone)]
pub struct Deviceconnect {
    pub services: Arc<Services>,
    pub nats: async_nats::Client,
    pub instance: String,
    /// This instance's device sockets, fed by its one subscription to every device's inbox
    /// and control subject.
    pub inboxes: Arc<inboxes::Inboxes>,
    settings: Arc<Settings>,
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("connecting to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error("writing the instance heartbeat: {0}")]
    Store(#[from] deviceconnect_store::StoreError),
    #[error("subscribing to the device subjects: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error("flushing the device subscription to NATS: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

impl FromRef<Deviceconnect> for Authenticator {
    fn from_ref(dc: &Deviceconnect) -> Authenticator {
        dc.services.auth.clone()
    }
}

impl Deviceconnect {
    /// Connects to NATS at `nats_url`, writes this instance's first heartbeat and keeps
    /// writing it (every [`HEARTBEAT_INTERVAL`], until the instance shuts down or is dropped).
    pub async fn connect(services: Services, nats_url: &str) -> Result<Self, StartError> {
        let nats = async_nats::connect(nats_url).await?;
        let devices = nats.subscribe(inboxes::ALL_DEVICE_SUBJECTS).await?;
        // the server has the interest before any socket is accepted
        nats.flush().await?;
        let inboxes = Arc::new(inboxes::Inboxes::default());
        tokio::spawn(inboxes::dispatch(devices, Arc::downgrade(&inboxes)));
        let instance = uuid::Uuid::new_v4().to_string();
        services
            .deviceconnect
            .heartbeat(&instance, HEARTBEAT_LIFETIME)
            .await?;
        let shutdown = Arc::new(tokio::sync::watch::channel(false).0);
        tokio::spawn(heartbeat(
            services.deviceconnect.clone(),
            instance.clone(),
            Arc::downgrade(&shutdown),
        ));
        Ok(Deviceconnect {
            services: Arc::new(services),
            nats,
            instance,
            inboxes,
            settings: Arc::new(Settings::default()),
            shutdown,
        })
    }

    /// The same instance with other settings (for the sockets opened from now on).
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Closes every websocket of this instance ("going away": the clients reconnect, to another
    /// instance behind the load balancer) and refuses new ones.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Deviceconnect::shut_down`] was called.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Another instance with the same services and settings and its own NATS connection (as
    /// a second container would have).
    pub async fn another_instance(&self, nats_url: &str) -> Result<Self, StartError> {
        Ok(Self::connect(Services::clone(&self.services), nats_url)
            .await?
            .with_settings(Settings::clone(&self.settings)))
    }

    pub fn store(&self) -> &Store {
        &self.services.deviceconnect
    }

    /// A new session id and its subjects when the device is connected (`None` otherwise, or
    /// when an id is no subject token).
    async fn new_session(
        &self,
        tenant: &str,
        device_id: &str,
    ) -> ApiResult<Option<SessionSubjects>> {
        let sid = uuid::Uuid::new_v4().to_string();
        let (Some(inbox), Some(control), Some(session)) = (
            device_subject(tenant, device_id),
            control_subject(tenant, device_id),
            session_subject(tenant, device_id, &sid),
        ) else {
            return Ok(None);
        };
        let Some(version) = self.connection(tenant, device_id).await? else {
            return Ok(None);
        };
        Ok(Some(SessionSubjects {
            sid,
            inbox,
            control,
            session,
            version,
        }))
    }

    /// The version of the device's connection, if it is connected (its record says so and
    /// the instance holding it is alive).
    async fn connection(&self, tenant: &str, device_id: &str) -> ApiResult<Option<u64>> {
        let record = self
            .store()
            .get(tenant, device_id)
            .await
            .map_err(ApiError::internal)?;
        Ok(record.filter(|r| r.is_connected()).map(|r| r.version))
    }
}

/// Writes the instance's heartbeat until it shuts down or every handle to it is gone.
async fn heartbeat(
    store: Store,
    instance: String,
    shutdown: std::sync::Weak<tokio::sync::watch::Sender<bool>>,
) {
    let mut every = tokio::time::interval(HEARTBEAT_INTERVAL);
    every.tick().await;
    loop {
        every.tick().await;
        match shutdown.upgrade() {
            Some(down) if !*down.borrow() => {}
            _ => return,
        }
        if let Err(e) = store.heartbeat(&instance, HEARTBEAT_LIFETIME).await {
            tracing::error!(%instance, error = %e, "writing the instance heartbeat");
        }
    }
}

/// Every route of the service.
#[rustfmt::skip]
pub fn routes() -> Vec<Route<Deviceconnect>> {
    vec![
        Route::get("/api/devices/v1/deviceconnect/connect", device::connect),
        Route::get("/api/management/v1/deviceconnect/devices/{id}", device_status),
        Route::get("/api/management/v1/deviceconnect/devices/{id}/connect", session::connect),
        Route::post("/api/management/v1/deviceconnect/devices/{id}/check-update", check_update),
        Route::post("/api/management/v1/deviceconnect/devices/{id}/send-inventory", send_inventory),
        Route::get("/api/management/v1/deviceconnect/devices/{id}/download", filetransfer::download),
        Route::put("/api/management/v1/deviceconnect/devices/{id}/upload", filetransfer::upload.layer(DefaultBodyLimit::max(filetransfer::MAX_UPLOAD_SIZE))),
        Route::get("/api/management/v1/deviceconnect/sessions/{id}/playback", session::playback),
        Route::get("/api/internal/v1/deviceconnect/alive", internal::alive),
        Route::get("/api/internal/v1/deviceconnect/health", internal::health),
        Route::get("/api/internal/v1/deviceconnect/shutdown", internal::shutdown),
        Route::delete("/api/internal/v1/deviceconnect/tenants/{tenant}", internal::delete_tenant),
        Route::post("/api/internal/v1/deviceconnect/tenants/{tenant}/devices", internal::provision_device),
        Route::delete("/api/internal/v1/deviceconnect/tenants/{tenant}/devices/{id}", internal::delete_device),
        Route::post("/api/internal/v1/deviceconnect/tenants/{tenant}/devices/{id}/check-update", internal::check_update),
        Route::post("/api/internal/v1/deviceconnect/tenants/{tenant}/devices/{id}/send-inventory", internal::send_inventory),
    ]
}

/// The service's router (without the common layers: see [`mender_http::finish`]).
pub fn router(dc: Deviceconnect) -> Router {
    mender_http::routes::router(routes()).with_state(dc)
}

/// The routes clients may reach: all but `/api/internal/...`, which only the other services
/// call (inside the VPC in AWS). The local stack serves these on its public origin.
pub fn public_router(dc: Deviceconnect) -> Router {
    let public = routes()
        .into_iter()
        .filter(|r| !r.path.starts_with("/api/internal/"))
        .collect();
    mender_http::routes::router(public).with_state(dc)
}

/// A NATS subject token: the tenant (`_` when empty) or an id; anything that could change the
/// subject's shape (dots, wildcards, spaces) is refused.
fn subject_token(value: &str) -> Option<&str> {
    if value.is_empty() {
        return Some("_");
    }
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        .then_some(value)
}

/// An id as a subject token (an empty id is refused).
fn subject_id(id: &str) -> Option<&str> {
    Some(id).filter(|i| !i.is_empty()).and_then(subject_token)
}

fn subject(tenant: &str, kind: &str, id: &str) -> Option<String> {
    let tenant = subject_token(tenant)?;
    let id = subject_id(id)?;
    Some(format!("deviceconnect.{tenant}.{kind}.{id}"))
}

fn device_subject(tenant: &str, device_id: &str) -> Option<String> {
    subject(tenant, "device", device_id)
}

/// `deviceconnect.<tenant>.*.<device id>`: exactly the device's inbox and control subject
/// (session subjects have one token more); the key of the device's sockets in
/// [`inboxes::Inboxes`].
fn device_subjects(tenant: &str, device_id: &str) -> Option<String> {
    subject(tenant, "*", device_id)
}

/// Frames from device `device_id` for session `sid` (only that device's socket publishes
/// here).
fn session_subject(tenant: &str, device_id: &str, sid: &str) -> Option<String> {
    let tenant = subject_token(tenant)?;
    let device = subject_id(device_id)?;
    let sid = subject_id(sid)?;
    Some(format!("deviceconnect.{tenant}.session.{device}.{sid}"))
}

fn control_subject(tenant: &str, device_id: &str) -> Option<String> {
    subject(tenant, "control", device_id)
}

/// A session with a device: its server-assigned id and NATS subjects.
struct SessionSubjects {
    sid: String,
    /// The device's inbox.
    inbox: String,
    /// The device's connect/disconnect announcements.
    control: String,
    /// Frames from the device for this session.
    session: String,
    /// The device connection the session was opened to (see [`ends_session`]).
    version: u64,
}

/// Whether an announcement on the device's control subject (`connect N` / `disconnect N`,
/// published by [`device`]) ends a session opened to connection `version`: a newer
/// connection replaced it, or it (or a newer one) went away. The device publishes
/// `connect N` after writing its record, so a session that read version N from the record
/// in between hears its own connection's announcement: that one, and a late `disconnect` of
/// an older connection, are ignored. Anything unreadable ends the session.
pub(crate) fn ends_session(announcement: &[u8], version: u64) -> bool {
    let text = std::str::from_utf8(announcement).unwrap_or_default();
    let parsed = text
        .split_once(' ')
        .and_then(|(kind, n)| n.parse::<u64>().ok().map(|n| (kind, n)));
    match parsed {
        Some(("connect", n)) => n > version,
        Some(("disconnect", n)) => n >= version,
        _ => true,
    }
}

fn path_id(id: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    id.map(|Path(id)| id)
        .map_err(|_| ApiError::bad_request("invalid device id"))
}

fn upgrade(
    dc: &Deviceconnect,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<WebSocketUpgrade> {
    if dc.is_shutting_down() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    let ws = ws.map_err(|e| ApiError::bad_request(format!("websocket upgrade required: {e}")))?;
    // A small read buffer: most sockets are idle devices (the default 128 KiB would be resident
    // per socket); it grows for large frames.
    Ok(ws
        .protocols([SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// `GET /api/management/v1/deviceconnect/devices/{id}`.
async fn device_status(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = path_id(id)?;
    let record = dc
        .store()
        .get(auth.tenant(), &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found("device not found"))?;
    Ok(axum::Json(record).into_response())
}

/// `POST /api/management/v1/deviceconnect/devices/{id}/check-update`.
async fn check_update(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = path_id(id)?;
    client_command(
        &dc,
        auth.tenant(),
        &id,
        "check-update",
        Some(auth.user_id()),
    )
    .await
}

/// `POST /api/management/v1/deviceconnect/devices/{id}/send-inventory`.
async fn send_inventory(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = path_id(id)?;
    client_command(
        &dc,
        auth.tenant(),
        &id,
        "send-inventory",
        Some(auth.user_id()),
    )
    .await
}

/// Sends a mender-client command (proto 4) to a connected device: `202` with body `null`,
/// `404 device not connected` otherwise.
async fn client_command(
    dc: &Deviceconnect,
    tenant: &str,
    device_id: &str,
    typ: &str,
    user_id: Option<&str>,
) -> ApiResult<Response> {
    let not_connected = || ApiError::not_found("device not connected");
    let inbox = device_subject(tenant, device_id).ok_or_else(not_connected)?;
    if dc.connection(tenant, device_id).await?.is_none() {
        return Err(not_connected());
    }
    let frame = protomsg::command(protomsg::PROTO_MENDER_CLIENT, typ, user_id);
    dc.nats
        .publish(inbox, frame.into())
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, axum::Json(serde_json::Value::Null)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_newer_connections_and_their_ends_end_a_session() {
        // the session was opened to connection 7
        assert!(
            !ends_session(b"connect 7", 7),
            "its own connect, heard late"
        );
        assert!(!ends_session(b"connect 6", 7));
        assert!(
            !ends_session(b"disconnect 6", 7),
            "an older connection's late end"
        );
        assert!(ends_session(b"connect 8", 7), "the device connected again");
        assert!(ends_session(b"disconnect 7", 7));
        assert!(ends_session(b"disconnect 9", 7));
        assert!(ends_session(b"garbage", 7));
        assert!(ends_session(b"connect x", 7));
        assert!(ends_session(&[0xff, 0xfe], 7));
    }

    #[test]
    fn subjects_refuse_what_would_change_their_shape() {
        assert_eq!(
            device_subject("", "0b6c").as_deref(),
            Some("deviceconnect._.device.0b6c")
        );
        assert_eq!(
            session_subject("abc123", "0b6c", "5f0e-1").as_deref(),
            Some("deviceconnect.abc123.session.0b6c.5f0e-1")
        );
        assert_eq!(session_subject("", "0b6c", "a.b"), None);
        assert_eq!(session_subject("", "0b6c", "*"), None);
        assert_eq!(session_subject("", "0b6c", ">"), None);
        assert_eq!(session_subject("", "0b6c", ""), None);
        assert_eq!(session_subject("", "", "5f0e"), None);
        assert_eq!(session_subject("", "*", "5f0e"), None);
        assert_eq!(device_subject("t x", "d"), None);
        assert_eq!(
            device_subjects("", "0b6c").as_deref(),
            Some("deviceconnect._.*.0b6c")
        );
        assert_eq!(device_subjects("", "*"), None);
        assert_eq!(device_subjects("a.b", "0b6c"), None);
    }
}
