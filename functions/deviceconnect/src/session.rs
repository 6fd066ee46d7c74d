//! User sessions: the terminal / port-forward websocket
//! (`GET /api/management/v1/deviceconnect/devices/{id}/connect`) and the playback of a recorded
//! terminal session (`GET /api/management/v1/deviceconnect/sessions/{id}/playback`).
//!
//! A session gets a server-assigned id (stored with its user, device and start time). Every
//! frame from the user gets `hdr.sid` and `props.user_id` stamped and goes to the device's
//! inbox; frames the device sends with that sid come back on the session subject. Shell output
//! and resizes are recorded (see [`crate::recording`]); past the session byte limit the device
//! gets a shell `stop` and the socket closes with 1008. When the user leaves while a shell runs,
//! the device gets a shell `stop` ("user disconnected"). The user's token is checked again
//! every [`crate::Settings::recheck_interval`] (see [`crate::recheck`]): once it no longer holds
//! (expired, logged out, user deleted) the device gets a shell `stop` with that reason and the
//! socket closes with 1008. Both websockets check the `Origin` of cookie-authenticated
//! upgrades ([`crate::origin`]).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use mender_http::{ApiError, ApiResult, UserAuth};

use crate::protomsg::{self, Prop, PROTO_SHELL};
use crate::recording::{self, LimitExceeded, Record, Recorder};
use crate::{
    close, ends_session, origin, path_id, recheck, upgrade, Deviceconnect, Session,
    CLOSE_GOING_AWAY, CLOSE_INVALID, CLOSE_POLICY,
};

/// Buffered recording is written at least this often.
const RECORDING_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Default pause between two playback messages.
const PLAYBACK_SLEEP_MS: u64 = 100;

/// `GET /api/management/v1/deviceconnect/devices/{id}/connect`: a user's session.
pub async fn connect(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    origin::check(&dc, &headers)?;
    let device_id = path_id(id)?;
    let tenant = auth.tenant().to_owned();
    let Some(subjects) = dc.new_session(&tenant, &device_id).await? else {
        return Err(ApiError::not_found(
            "failed to connect to device: device disconnected",
        ));
    };
    let ws = upgrade(&dc, ws)?;
    let sid = subjects.sid;
    let session = Session {
        id: sid.clone(),
        user_id: auth.user_id().to_owned(),
        device_id,
        start_ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    dc.store()
        .create_session(&tenant, &session)
        .await
        .map_err(ApiError::internal)?;
    let recorder = Recorder::new(dc.services.artifacts.clone(), &tenant, &sid);
    let user = UserSession {
        dc,
        auth,
        session,
        inbox: subjects.inbox,
        subject: subjects.session,
        control: subjects.control,
        version: subjects.version,
    };
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = user.run(socket, recorder).await {
            tracing::error!(error = %e, "user session failed");
        }
    }))
}

struct UserSession {
    dc: Deviceconnect,
    /// The user's token, checked again every [`crate::Settings::recheck_interval`].
    auth: UserAuth,
    session: Session,
    /// The device's inbox subject.
    inbox: String,
    /// This session's subject.
    subject: String,
    control: String,
    /// The device connection the session was opened to.
    version: u64,
}

/// What the relay loop tracks besides the sockets.
struct Tracking {
    recorder: Recorder,
    shell_open: bool,
}

impl UserSession {
    async fn run(self, socket: WebSocket, recorder: Recorder) -> anyhow::Result<()> {
        let nats = &self.dc.nats;
        let mut from_device = nats.subscribe(self.subject.clone()).await?;
        let mut control = nats.subscribe(self.control.clone()).await?;
        nats.flush().await?;
        let sid = &self.session.id;
        tracing::info!(%sid, device_id = %self.session.device_id, user_id = %self.session.user_id, "session opened");
        let mut tracking = Tracking {
            recorder,
            shell_open: false,
        };
        let result = self
            .relay(socket, &mut from_device, &mut control, &mut tracking)
            .await;
        if tracking.shell_open {
            if let Err(e) = self.stop_shell(2, b"user disconnected").await {
                tracing::warn!(%sid, error = %e, "stopping the device's shell");
            }
        }
        if let Err(e) = tracking.recorder.flush().await {
            tracing::error!(%sid, error = %e, "writing the recording failed");
        }
        tracing::info!(%sid, "session closed");
        result
    }

    /// Sends the device a shell `stop` for this session.
    async fn stop_shell(&self, status: i64, body: &[u8]) -> anyhow::Result<()> {
        let stop = protomsg::frame(
            PROTO_SHELL,
            "stop",
            Some(&self.session.id),
            &[
                ("status", Prop::I64(status)),
                ("user_id", Prop::Str(&self.session.user_id)),
            ],
            Some(body),
        );
        self.dc
            .nats
            .publish(self.inbox.clone(), stop.into())
            .await?;
        Ok(())
    }

    async fn relay(
        &self,
        socket: WebSocket,
        from_device: &mut async_nats::Subscriber,
        control: &mut async_nats::Subscriber,
        tracking: &mut Tracking,
    ) -> anyhow::Result<()> {
        let (mut tx, mut rx) = socket.split();
        let mut flush = tokio::time::interval(RECORDING_FLUSH_INTERVAL);
        let mut recheck = recheck::timer(&self.dc);
        let sid = &self.session.id;
        loop {
            let mut flush_due = false;
            let recorded: Result<(), LimitExceeded> = tokio::select! {
                frame = rx.next() => match frame {
                    Some(Ok(Message::Binary(data))) => {
                        let stamped = protomsg::parse(&data).and_then(|msg| {
                            let frame = protomsg::stamp(&msg, sid, &self.session.user_id)?;
                            Ok((msg, frame))
                        });
                        let (msg, frame) = match stamped {
                            Ok(stamped) => stamped,
                            Err(e) => {
                                tracing::warn!(%sid, error = %e, "closing user socket");
                                let _ = tx.send(close(CLOSE_INVALID, "invalid ProtoMsg")).await;
                                return Ok(());
                            }
                        };
                        self.dc.nats.publish(self.inbox.clone(), frame.into()).await?;
                        from_user_frame(&msg, tracking)
                    }
                    Some(Ok(Message::Text(_))) => {
                        let _ = tx.send(close(CLOSE_INVALID, "binary ProtoMsg frames only")).await;
                        return Ok(());
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                },
                msg = from_device.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    let recorded = match protomsg::parse(&msg.payload) {
                        Ok(parsed) => from_device_frame(&parsed, tracking),
                        Err(_) => Ok(()),
                    };
                    tx.send(Message::Binary(msg.payload)).await?;
                    recorded
                }
                msg = control.next() => match msg {
                    // The device connected again or went away: this session's peer is gone.
                    Some(msg) if ends_session(&msg.payload, self.version) => {
                        let _ = tx.send(close(1000, "device disconnected")).await;
                        return Ok(());
                    }
                    // The announcement of the connection this session was opened to.
                    Some(_) => Ok(()),
                    None => return Ok(()),
                },
                _ = self.dc.shutting_down() => {
                    let _ = tx.send(close(CLOSE_GOING_AWAY, "server shutting down")).await;
                    return Ok(());
                }
                _ = flush.tick() => {
                    flush_due = true;
                    Ok(())
                }
                _ = recheck.tick() => {
                    if let Some(reason) = recheck::user(&self.dc, &self.auth).await {
                        tracing::info!(%sid, user_id = %self.session.user_id, reason, "closing the session: the user's token no longer holds");
                        if tracking.shell_open {
                            self.stop_shell(2, reason.as_bytes()).await?;
                            tracking.shell_open = false;
                        }
                        let _ = tx.send(close(CLOSE_POLICY, reason)).await;
                        return Ok(());
                    }
                    Ok(())
                }
            };
            if recorded.is_err() {
                tracing::warn!(%sid, "session byte limit exceeded");
                self.stop_shell(2, b"session byte limit exceeded").await?;
                tracking.shell_open = false;
                let _ = tx
                    .send(close(CLOSE_POLICY, "session byte limit exhausted"))
                    .await;
                return Ok(());
            }
            if tracking.recorder.wants_flush() || flush_due {
                if let Err(e) = tracking.recorder.flush().await {
                    tracing::error!(%sid, error = %e, "writing the recording failed");
                }
            }
        }
    }
}

/// Tracks a frame from the user: shell start/stop, recorded resizes.
fn from_user_frame(msg: &protomsg::ProtoMsg, tracking: &mut Tracking) -> Result<(), LimitExceeded> {
    if msg.proto != PROTO_SHELL {
        return Ok(());
    }
    match msg.typ() {
        "new" => tracking.shell_open = true,
        "stop" => tracking.shell_open = false,
        "resize" => {
            let dim = |key| {
                msg.prop_i64(key)
                    .and_then(|v| u16::try_from(v).ok())
                    .unwrap_or(0)
            };
            return tracking
                .recorder
                .resize(dim("terminal_width"), dim("terminal_height"));
        }
        _ => {}
    }
    Ok(())
}

/// Tracks a frame from the device: recorded shell output, the shell ending.
fn from_device_frame(
    msg: &protomsg::ProtoMsg,
    tracking: &mut Tracking,
) -> Result<(), LimitExceeded> {
    if msg.proto != PROTO_SHELL {
        return Ok(());
    }
    match msg.typ() {
        "shell" => tracking.recorder.output(msg.body()),
        "stop" => {
            tracking.shell_open = false;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `GET /api/management/v1/deviceconnect/sessions/{id}/playback[?sleep_ms=N]` (websocket):
/// the recording as shell `shell` / `delay` / `resize` messages, one per `sleep_ms` (default
/// 100), then a normal close. An unknown session ends the stream at once.
pub async fn playback(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    origin::check(&dc, &headers)?;
    let sid = id
        .map(|Path(id)| id)
        .map_err(|_| ApiError::bad_request("invalid session id"))?;
    let sleep_ms = match query.get("sleep_ms") {
        None => PLAYBACK_SLEEP_MS,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("sleep_ms: must be a non-negative integer"))?,
    };
    let ws = upgrade(&dc, ws)?;
    let session = dc
        .store()
        .session(auth.tenant(), &sid)
        .await
        .map_err(ApiError::internal)?;
    let records = match session {
        Some(_) => recording::load(&dc.services.artifacts, auth.tenant(), &sid)
            .await
            .map_err(ApiError::internal)?,
        None => Vec::new(),
    };
    Ok(ws.on_upgrade(move |socket| async move {
        if let Err(e) = play(socket, &sid, records, Duration::from_millis(sleep_ms)).await {
            tracing::debug!(%sid, error = %e, "playback ended early");
        }
    }))
}

/// The playback message of one record.
pub fn playback_frame(sid: &str, record: &Record) -> Vec<u8> {
    match record {
        Record::Output(bytes) => protomsg::frame(PROTO_SHELL, "shell", Some(sid), &[], Some(bytes)),
        Record::Delay(ms) => protomsg::frame(
            PROTO_SHELL,
            "delay",
            Some(sid),
            &[("delay_value", Prop::I64(i64::from(*ms)))],
            None,
        ),
        Record::Resize { width, height } => protomsg::frame(
            PROTO_SHELL,
            "resize",
            Some(sid),
            &[
                ("terminal_width", Prop::I64(i64::from(*width))),
                ("terminal_height", Prop::I64(i64::from(*height))),
            ],
            None,
        ),
    }
}

async fn play(
    socket: WebSocket,
    sid: &str,
    records: Vec<Record>,
    pause: Duration,
) -> anyhow::Result<()> {
    let (mut tx, mut rx) = socket.split();
    for record in &records {
        tx.send(Message::Binary(playback_frame(sid, record).into()))
            .await?;
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                frame = rx.next() => {
                    if matches!(frame, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                        return Ok(());
                    }
                }
            }
        }
    }
    tx.send(close(1000, "")).await?;
    Ok(())
}
