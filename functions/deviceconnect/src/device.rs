//! The device's websocket (`GET /api/devices/v1/deviceconnect/connect`): marks the device
//! connected, writes what arrives on its NATS inbox to the socket, publishes each frame from the
//! device to the session named by its `hdr.sid` (among the sessions opened to this device: the
//! subject carries the device's own id), pings it, checks its token again periodically (closed
//! with 1008 once rejected, decommissioned or revoked, see [`crate::recheck`]), and marks it
//! disconnected when the socket ends (unless a newer connection of the same device exists by
//! then). The record names this instance, whose heartbeat vouches for it (see
//! `deviceconnect-store`).

use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use mender_http::{ApiError, ApiResult, DeviceAuth};

use crate::inboxes::Inbox;
use crate::{
    close, control_subject, device_subject, device_subjects, protomsg, recheck, session_subject,
    upgrade, Deviceconnect, CLOSE_GOING_AWAY, CLOSE_INVALID, CLOSE_POLICY,
};

/// The server pings the device this often ...
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// ... and drops it after this long without any frame.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// `GET /api/devices/v1/deviceconnect/connect`: the device's websocket.
pub async fn connect(
    State(dc): State<Deviceconnect>,
    auth: DeviceAuth,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let tenant = auth.tenant().to_owned();
    let device_id = auth.device_id().to_owned();
    let (Some(inbox), Some(control), Some(subjects)) = (
        device_subject(&tenant, &device_id),
        control_subject(&tenant, &device_id),
        device_subjects(&tenant, &device_id),
    ) else {
        return Err(ApiError::bad_request("invalid device identity"));
    };
    let ws = upgrade(&dc, ws)?;
    Ok(ws.on_upgrade(move |socket| async move {
        let device = DeviceConn {
            dc,
            auth,
            tenant,
            device_id,
            inbox,
            control,
            subjects,
        };
        if let Err(e) = device.run(socket).await {
            tracing::error!(error = %e, "device connection failed");
        }
    }))
}

struct DeviceConn {
    dc: Deviceconnect,
    /// The device's token, checked again every [`crate::Settings::recheck_interval`].
    auth: DeviceAuth,
    tenant: String,
    device_id: String,
    inbox: String,
    control: String,
    /// The inbox and the control subject (see [`device_subjects`]).
    subjects: String,
}

impl DeviceConn {
    async fn run(self, socket: WebSocket) -> anyhow::Result<()> {
        let nats = &self.dc.nats;
        // The inbox and the control subject, from the instance's subscription (see
        // `crate::inboxes`), registered before the store says the device is connected.
        let mut subjects = self.dc.inboxes.register(&self.subjects);
        // The store calls and the relay loop are boxed: this future stays allocated for as
        // long as the device is connected, and an inlined AWS SDK call would make it kilobytes
        // larger for its whole life (debug build: 14,960 bytes inlined, 2,400 + 2,096 boxed).
        let version = Box::pin(self.dc.store().connect(
            &self.tenant,
            &self.device_id,
            &self.dc.instance,
        ))
        .await?;
        nats.publish(self.control.clone(), format!("connect {version}").into())
            .await?;
        tracing::info!(device_id = %self.device_id, version, "device connected");
        let result = Box::pin(self.relay(socket, &mut subjects, version)).await;
        drop(subjects);
        let marked = Box::pin(
            self.dc
                .store()
                .disconnect(&self.tenant, &self.device_id, version),
        )
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
        subjects: &mut Inbox,
        version: u64,
    ) -> anyhow::Result<()> {
        let (mut tx, mut rx) = socket.split();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let mut last_seen = Instant::now();
        let mut recheck = recheck::timer(&self.dc);
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
                            match msg.sid.as_deref().and_then(|sid| session_subject(&self.tenant, &self.device_id, sid)) {
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
                msg = subjects.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    if msg.subject.as_str() == self.inbox {
                        tx.send(Message::Binary(msg.payload)).await?;
                        continue;
                    }
                    if msg.subject.as_str() != self.control {
                        continue;
                    }
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
                _ = self.dc.shutting_down() => {
                    let _ = tx.send(close(CLOSE_GOING_AWAY, "server shutting down")).await;
                    return Ok(());
                }
                _ = recheck.tick() => {
                    if let Some(reason) = Box::pin(recheck::device(&self.dc, &self.auth)).await {
                        tracing::info!(device_id = %self.device_id, reason, "closing device socket: its token no longer holds");
                        let _ = tx.send(close(CLOSE_POLICY, reason)).await;
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
