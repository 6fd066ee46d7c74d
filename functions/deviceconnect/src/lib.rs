//! deviceconnect: the long-running service (a container, not a Lambda) that holds the device
//! and user websockets of remote terminal, file transfer and port forwarding (SPEC §7) and
//! relays msgpack ProtoMsg frames between them over NATS, so a user connected to one instance
//! reaches a device connected to another.
//!
//! NATS subjects (`<tenant>` is `_` for the open-source tenant, whose id is empty):
//! * `deviceconnect.<tenant>.device.<device id>`: frames for the device (its inbox);
//! * `deviceconnect.<tenant>.session.<session id>`: frames from the device for one user session;
//! * `deviceconnect.<tenant>.control.<device id>`: `connect <version>` / `disconnect <version>`
//!   announcements; an older connection of the same device closes itself on a newer
//!   `connect`, user sessions of the device close on either.
//!
//! Connection status lives in DynamoDB ([`store`]) with a connection version, so a stale
//! disconnect never overwrites a newer connect.

pub mod protomsg;
pub mod store;

use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use mender_http::{ApiError, ApiResult, Authenticator, DeviceAuth, Route, UserAuth};
use services::Services;

pub use store::{DeviceRecord, Store};

/// Largest websocket message (SPEC §7.1).
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// The server pings the device this often ...
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// ... and drops it after this long without any frame.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Close code for a frame that is not a ProtoMsg (unsupported data).
const CLOSE_INVALID: u16 = 1003;
const SUBPROTOCOL: &str = "protomsg/msgpack";

/// The service's state: the shared services (token checks), the status store and NATS.
#[derive(Clone)]
pub struct Deviceconnect {
    pub services: Services,
    pub store: Store,
    pub nats: async_nats::Client,
}

impl FromRef<Deviceconnect> for Authenticator {
    fn from_ref(dc: &Deviceconnect) -> Authenticator {
        dc.services.auth.clone()
    }
}

impl Deviceconnect {
    /// Connects to NATS at `nats_url`; `table` is the `DeviceconnectTable`.
    pub async fn connect(
        services: Services,
        dynamodb: aws_sdk_dynamodb::Client,
        table: &str,
        nats_url: &str,
    ) -> Result<Self, async_nats::ConnectError> {
        let nats = async_nats::connect(nats_url).await?;
        Ok(Deviceconnect {
            services,
            store: Store::new(dynamodb, table),
            nats,
        })
    }
}

impl Deviceconnect {
    /// Another instance with the same services and store and its own NATS connection (as a
    /// second container would have).
    pub async fn another_instance(&self, nats_url: &str) -> Result<Self, async_nats::ConnectError> {
        Ok(Deviceconnect {
            nats: async_nats::connect(nats_url).await?,
            ..self.clone()
        })
    }
}

/// Every route of the service.
pub fn routes() -> Vec<Route<Deviceconnect>> {
    vec![
        Route::get("/api/devices/v1/deviceconnect/connect", device_connect),
        Route::get(
            "/api/management/v1/deviceconnect/devices/{id}",
            device_status,
        ),
        Route::get(
            "/api/management/v1/deviceconnect/devices/{id}/connect",
            user_connect,
        ),
        Route::post(
            "/api/management/v1/deviceconnect/devices/{id}/check-update",
            check_update,
        ),
        Route::post(
            "/api/management/v1/deviceconnect/devices/{id}/send-inventory",
            send_inventory,
        ),
        Route::get("/api/internal/v1/deviceconnect/alive", alive),
        Route::get("/api/internal/v1/deviceconnect/health", health),
    ]
}

/// The service's router (without the common layers: see [`mender_http::finish`]).
pub fn router(dc: Deviceconnect) -> Router {
    mender_http::routes::router(routes()).with_state(dc)
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

fn subject(tenant: &str, kind: &str, id: &str) -> Option<String> {
    let tenant = subject_token(tenant)?;
    let id = Some(id).filter(|i| !i.is_empty()).and_then(subject_token)?;
    Some(format!("deviceconnect.{tenant}.{kind}.{id}"))
}

fn device_subject(tenant: &str, device_id: &str) -> Option<String> {
    subject(tenant, "device", device_id)
}

fn session_subject(tenant: &str, sid: &str) -> Option<String> {
    subject(tenant, "session", sid)
}

fn control_subject(tenant: &str, device_id: &str) -> Option<String> {
    subject(tenant, "control", device_id)
}

fn upgrade(ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> ApiResult<WebSocketUpgrade> {
    let ws = ws.map_err(|e| ApiError::bad_request(format!("websocket upgrade required: {e}")))?;
    Ok(ws.protocols([SUBPROTOCOL]).max_message_size(MAX_MESSAGE))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn alive() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn health(State(dc): State<Deviceconnect>) -> ApiResult<StatusCode> {
    match dc.nats.connection_state() {
        async_nats::connection::State::Connected => Ok(StatusCode::NO_CONTENT),
        other => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("nats: {other}"),
        )),
    }
}

/// `GET /api/devices/v1/deviceconnect/connect`: the device's websocket.
async fn device_connect(
    State(dc): State<Deviceconnect>,
    auth: DeviceAuth,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let tenant = auth.tenant().to_owned();
    let device_id = auth.device_id().to_owned();
    let (Some(inbox), Some(control)) = (
        device_subject(&tenant, &device_id),
        control_subject(&tenant, &device_id),
    ) else {
        return Err(ApiError::bad_request("invalid device identity"));
    };
    let ws = upgrade(ws)?;
    Ok(ws.on_upgrade(move |socket| async move {
        let device = DeviceConn {
            dc,
            tenant,
            device_id,
            inbox,
            control,
        };
        if let Err(e) = device.run(socket).await {
            tracing::error!(error = %e, "device connection failed");
        }
    }))
}

struct DeviceConn {
    dc: Deviceconnect,
    tenant: String,
    device_id: String,
    inbox: String,
    control: String,
}

impl DeviceConn {
    async fn run(self, socket: WebSocket) -> anyhow::Result<()> {
        let nats = &self.dc.nats;
        let mut inbox = nats.subscribe(self.inbox.clone()).await?;
        let mut control = nats.subscribe(self.control.clone()).await?;
        nats.flush().await?;
        let version = self.dc.store.connect(&self.tenant, &self.device_id).await?;
        nats.publish(self.control.clone(), format!("connect {version}").into())
            .await?;
        tracing::info!(device_id = %self.device_id, version, "device connected");
        let result = self.relay(socket, &mut inbox, &mut control, version).await;
        drop(inbox);
        drop(control);
        let marked = self
            .dc
            .store
            .disconnect(&self.tenant, &self.device_id, version)
            .await;
        nats.publish(self.control.clone(), format!("disconnect {version}").into())
            .await?;
        tracing::info!(device_id = %self.device_id, version, "device disconnected");
        marked?;
        result
    }

    async fn relay(
        &self,
        socket: WebSocket,
        inbox: &mut async_nats::Subscriber,
        control: &mut async_nats::Subscriber,
        version: u64,
    ) -> anyhow::Result<()> {
        let (mut tx, mut rx) = socket.split();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let mut last_seen = Instant::now();
        loop {
            tokio::select! {
                frame = rx.next() => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Ok(Message::Binary(data))) => {
                            let msg = match protomsg::parse(&data) {
                                Ok(msg) => msg,
                                Err(e) => {
                                    tracing::warn!(device_id = %self.device_id, error = %e, "closing device socket");
                                    let _ = tx.send(close(CLOSE_INVALID, "invalid ProtoMsg")).await;
                                    return Ok(());
                                }
                            };
                            // Frames for a session nobody holds are dropped (NATS has no
                            // subscriber); a sid that is not a subject token is dropped here.
                            match msg.sid.as_deref().and_then(|sid| session_subject(&self.tenant, sid)) {
                                Some(subject) => self.dc.nats.publish(subject, data).await?,
                                None => tracing::debug!(device_id = %self.device_id, "frame without a usable sid dropped"),
                            }
                        }
                        Some(Ok(Message::Text(_))) => {
                            let _ = tx.send(close(CLOSE_INVALID, "binary ProtoMsg frames only")).await;
                            return Ok(());
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                    }
                }
                msg = inbox.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    tx.send(Message::Binary(msg.payload)).await?;
                }
                msg = control.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    let text = String::from_utf8_lossy(&msg.payload);
                    let newer = text
                        .strip_prefix("connect ")
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(|v| v > version);
                    if newer {
                        let _ = tx.send(close(1000, "replaced by a newer connection")).await;
                        return Ok(());
                    }
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > IDLE_LIMIT {
                        let _ = tx.send(close(1000, "keep-alive timeout")).await;
                        return Ok(());
                    }
                    tx.send(Message::Ping(Bytes::from_static(b"60"))).await?;
                }
            }
        }
    }
}

/// `GET /api/management/v1/deviceconnect/devices/{id}`.
async fn device_status(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(id) = id.map_err(|_| ApiError::bad_request("invalid device id"))?;
    let record = dc
        .store
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
    client_command(&dc, &auth, id, "check-update").await
}

/// `POST /api/management/v1/deviceconnect/devices/{id}/send-inventory`.
async fn send_inventory(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    client_command(&dc, &auth, id, "send-inventory").await
}

/// Sends a mender-client command (proto 4) to a connected device: `202` with body `null`,
/// `404 device not connected` otherwise.
async fn client_command(
    dc: &Deviceconnect,
    auth: &UserAuth,
    id: Result<Path<String>, PathRejection>,
    typ: &str,
) -> ApiResult<Response> {
    let Path(device_id) = id.map_err(|_| ApiError::bad_request("invalid device id"))?;
    let not_connected = || ApiError::not_found("device not connected");
    let inbox = device_subject(auth.tenant(), &device_id).ok_or_else(not_connected)?;
    let record = dc
        .store
        .get(auth.tenant(), &device_id)
        .await
        .map_err(ApiError::internal)?;
    if record.is_none_or(|r| r.status != "connected") {
        return Err(not_connected());
    }
    let frame = protomsg::command(protomsg::PROTO_MENDER_CLIENT, typ, Some(auth.user_id()));
    dc.nats
        .publish(inbox, frame.into())
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, axum::Json(serde_json::Value::Null)).into_response())
}

/// `GET /api/management/v1/deviceconnect/devices/{id}/connect`: a user's terminal session.
async fn user_connect(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    id: Result<Path<String>, PathRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let Path(device_id) = id.map_err(|_| ApiError::bad_request("invalid device id"))?;
    let tenant = auth.tenant().to_owned();
    let disconnected = || ApiError::not_found("failed to connect to device: device disconnected");
    let (Some(inbox), Some(control)) = (
        device_subject(&tenant, &device_id),
        control_subject(&tenant, &device_id),
    ) else {
        return Err(disconnected());
    };
    let record = dc
        .store
        .get(&tenant, &device_id)
        .await
        .map_err(ApiError::internal)?;
    if record.is_none_or(|r| r.status != "connected") {
        return Err(disconnected());
    }
    let ws = upgrade(ws)?;
    let sid = uuid::Uuid::new_v4().to_string();
    let Some(session) = session_subject(&tenant, &sid) else {
        return Err(ApiError::internal("session subject"));
    };
    let user = UserSession {
        dc,
        user_id: auth.user_id().to_owned(),
        device_id,
        sid,
        inbox,
        session,
        control,
    };
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = user.run(socket).await {
            tracing::error!(error = %e, "user session failed");
        }
    }))
}

struct UserSession {
    dc: Deviceconnect,
    user_id: String,
    device_id: String,
    sid: String,
    /// The device's inbox subject.
    inbox: String,
    /// This session's subject.
    session: String,
    control: String,
}

impl UserSession {
    async fn run(self, socket: WebSocket) -> anyhow::Result<()> {
        let nats = &self.dc.nats;
        let mut from_device = nats.subscribe(self.session.clone()).await?;
        let mut control = nats.subscribe(self.control.clone()).await?;
        nats.flush().await?;
        tracing::info!(sid = %self.sid, device_id = %self.device_id, user_id = %self.user_id, "session opened");
        let mut shell_open = false;
        let result = self
            .relay(socket, &mut from_device, &mut control, &mut shell_open)
            .await;
        if shell_open {
            let stop = protomsg::build(1, "stop", &self.sid, &self.user_id, b"user disconnected");
            nats.publish(self.inbox.clone(), stop.into()).await?;
        }
        tracing::info!(sid = %self.sid, "session closed");
        result
    }

    async fn relay(
        &self,
        socket: WebSocket,
        from_device: &mut async_nats::Subscriber,
        control: &mut async_nats::Subscriber,
        shell_open: &mut bool,
    ) -> anyhow::Result<()> {
        let (mut tx, mut rx) = socket.split();
        loop {
            tokio::select! {
                frame = rx.next() => match frame {
                    Some(Ok(Message::Binary(data))) => {
                        let stamped = protomsg::parse(&data).and_then(|msg| {
                            track_shell(&msg, shell_open);
                            protomsg::stamp(&data, &msg, &self.sid, &self.user_id)
                        });
                        match stamped {
                            Ok(frame) => self.dc.nats.publish(self.inbox.clone(), frame.into()).await?,
                            Err(e) => {
                                tracing::warn!(sid = %self.sid, error = %e, "closing user socket");
                                let _ = tx.send(close(CLOSE_INVALID, "invalid ProtoMsg")).await;
                                return Ok(());
                            }
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        let _ = tx.send(close(CLOSE_INVALID, "binary ProtoMsg frames only")).await;
                        return Ok(());
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                },
                msg = from_device.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    if let Ok(parsed) = protomsg::parse(&msg.payload) {
                        if parsed.proto == protomsg::PROTO_SHELL && parsed.typ.as_deref() == Some("stop") {
                            *shell_open = false;
                        }
                    }
                    tx.send(Message::Binary(msg.payload)).await?;
                }
                msg = control.next() => {
                    // The device connected again or went away: this session's shell is gone.
                    if msg.is_some() {
                        let _ = tx.send(close(1000, "device disconnected")).await;
                    }
                    return Ok(());
                }
            }
        }
    }
}

fn track_shell(msg: &protomsg::ProtoMsg, shell_open: &mut bool) {
    if msg.proto == protomsg::PROTO_SHELL {
        match msg.typ.as_deref() {
            Some("new") => *shell_open = true,
            Some("stop") => *shell_open = false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_refuse_what_would_change_their_shape() {
        assert_eq!(
            device_subject("", "0b6c").as_deref(),
            Some("deviceconnect._.device.0b6c")
        );
        assert_eq!(
            session_subject("abc123", "5f0e-1").as_deref(),
            Some("deviceconnect.abc123.session.5f0e-1")
        );
        assert_eq!(session_subject("", "a.b"), None);
        assert_eq!(session_subject("", "*"), None);
        assert_eq!(session_subject("", ">"), None);
        assert_eq!(session_subject("", ""), None);
        assert_eq!(device_subject("t x", "d"), None);
    }
}
