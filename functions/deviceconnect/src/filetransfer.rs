//! File transfer over HTTP (SPEC §7.3): `GET|HEAD …/devices/{id}/download?path=` and
//! `PUT …/devices/{id}/upload` (multipart). The server opens a session of its own with the
//! device (a fresh sid; frames to the device's inbox, answers on the session subject, so the
//! device may be connected to any instance) and speaks the file-transfer protocol (proto 2):
//! control `open` → `accept` listing proto 2; `stat` → `file_info` (download) or `put_file` →
//! `ack` (upload); `file_chunk`s with offsets, acknowledged in windows; a final empty chunk and
//! its ack; control `close`. A device `error` answers with its `code` (or 400/500 as upstream);
//! no answer within 60 s is 408, the device going away 409.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use mender_http::{ApiError, ApiResult, UserAuth};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::protomsg::{self, Prop, ProtoMsg, PROTO_CONTROL, PROTO_FILE_TRANSFER};
use crate::{ends_session, path_id, Deviceconnect};

/// No answer from the device for this long ends the transfer (408).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Upload chunk size.
const CHUNK: usize = 4096;
/// Download: acknowledge every this many chunks.
const ACK_EVERY: usize = 10;
/// Upload: at most this many chunks un-acknowledged.
const WINDOW: usize = 20;
/// Largest text field of the upload form.
const MAX_FIELD: usize = 4096;
/// Largest file accepted by `upload` (it is spooled to local disk first).
pub const MAX_UPLOAD_SIZE: usize = 4 * 1024 * 1024 * 1024;

/// Go's `os.ModeType` bits: a file with none of them set is a regular file.
const GO_MODE_TYPE: u32 =
    (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19);

fn disconnected() -> ApiError {
    ApiError::conflict("device disconnected")
}

/// The `code` of a device's error body, else `default`.
fn device_error(msg: &ProtoMsg, default: StatusCode, prefix: &str) -> ApiError {
    let body = protomsg::decode_body(msg.body()).unwrap_or(Value::Nil);
    let text = body["err"].as_str().unwrap_or("unknown error").to_owned();
    let status = body["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|c| c.is_client_error() || c.is_server_error())
        .unwrap_or(default);
    ApiError::new(status, format!("{prefix}{text}"))
}

/// A server-side session with one device.
struct Channel {
    dc: Deviceconnect,
    sid: String,
    user_id: String,
    inbox: String,
    from_device: async_nats::Subscriber,
    control: async_nats::Subscriber,
    /// The device connection the session was opened to.
    version: u64,
}

impl Channel {
    /// Opens a session with a connected device; `409 device disconnected` otherwise.
    async fn open(dc: &Deviceconnect, auth: &UserAuth, device_id: &str) -> ApiResult<Channel> {
        let subjects = dc
            .new_session(auth.tenant(), device_id)
            .await?
            .ok_or_else(disconnected)?;
        let from_device = dc
            .nats
            .subscribe(subjects.session)
            .await
            .map_err(ApiError::internal)?;
        let control = dc
            .nats
            .subscribe(subjects.control)
            .await
            .map_err(ApiError::internal)?;
        dc.nats.flush().await.map_err(ApiError::internal)?;
        Ok(Channel {
            dc: dc.clone(),
            sid: subjects.sid,
            user_id: auth.user_id().to_owned(),
            inbox: subjects.inbox,
            from_device,
            control,
            version: subjects.version,
        })
    }

    async fn send(&self, frame: Vec<u8>) -> ApiResult<()> {
        self.dc
            .nats
            .publish(self.inbox.clone(), frame.into())
            .await
            .map_err(ApiError::internal)
    }

    /// A file-transfer message (`props.user_id`, and `props.offset` as int64 when given).
    async fn send_ft(&self, typ: &str, offset: Option<i64>, body: Option<&[u8]>) -> ApiResult<()> {
        let user = ("user_id", Prop::Str(&self.user_id));
        let frame = match offset {
            Some(offset) => protomsg::frame(
                PROTO_FILE_TRANSFER,
                typ,
                Some(&self.sid),
                &[user, ("offset", Prop::I64(offset))],
                body,
            ),
            None => protomsg::frame(PROTO_FILE_TRANSFER, typ, Some(&self.sid), &[user], body),
        };
        self.send(frame).await
    }

    async fn send_control(&self, typ: &str, body: Option<&[u8]>) -> ApiResult<()> {
        self.send(protomsg::frame(
            PROTO_CONTROL,
            typ,
            Some(&self.sid),
            &[],
            body,
        ))
        .await
    }

    fn parse(payload: &Bytes) -> ApiResult<ProtoMsg> {
        protomsg::parse(payload)
            .map_err(|e| ApiError::internal(format!("malformed message from device: {e}")))
    }

    /// The next frame from the device (408 after [`TIMEOUT`], 409 when it disconnects).
    async fn recv(&mut self) -> ApiResult<ProtoMsg> {
        tokio::select! {
            msg = tokio::time::timeout(TIMEOUT, self.from_device.next()) => match msg {
                Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "file transfer timed out")),
                Ok(None) => Err(ApiError::internal("session subscription ended")),
                Ok(Some(msg)) => Self::parse(&msg.payload),
            },
            _ = Self::ended(&mut self.control, self.version) => Err(disconnected()),
        }
    }

    /// Resolves when an announcement ends this session (see [`ends_session`]) or the
    /// subscription ends.
    async fn ended(control: &mut async_nats::Subscriber, version: u64) {
        while let Some(msg) = control.next().await {
            if ends_session(&msg.payload, version) {
                return;
            }
        }
    }

    /// A frame from the device if one is already waiting.
    fn try_recv(&mut self) -> ApiResult<Option<ProtoMsg>> {
        if Self::ended(&mut self.control, self.version)
            .now_or_never()
            .is_some()
        {
            return Err(disconnected());
        }
        match self.from_device.next().now_or_never() {
            Some(Some(msg)) => Self::parse(&msg.payload).map(Some),
            Some(None) => Err(ApiError::internal("session subscription ended")),
            None => Ok(None),
        }
    }

    /// Answers a device ping; returns whether `msg` was one.
    async fn answer_ping(&self, msg: &ProtoMsg) -> ApiResult<bool> {
        if msg.typ() != "ping" {
            return Ok(false);
        }
        let pong = protomsg::frame(
            PROTO_CONTROL,
            "pong",
            Some(&self.sid),
            &[("user_id", Prop::Str(&self.user_id))],
            None,
        );
        self.send(pong).await?;
        Ok(true)
    }

    /// Control `open` → `accept` that lists the file-transfer protocol.
    async fn handshake(&mut self) -> ApiResult<()> {
        let open = protomsg::map_body(vec![("versions", Value::Array(vec![1.into()]))]);
        self.send_control("open", Some(&open)).await?;
        let msg = self.recv().await?;
        if msg.typ() == "error" {
            return Err(device_error(
                &msg,
                StatusCode::INTERNAL_SERVER_ERROR,
                "handshake error from client: ",
            ));
        }
        if msg.typ() != "accept" {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "file transfer not implemented on device",
            ));
        }
        let accept = protomsg::decode_body(msg.body()).unwrap_or(Value::Nil);
        let offers_ft = accept["protocols"].as_array().is_some_and(|protocols| {
            protocols
                .iter()
                .any(|p| p.as_u64() == Some(u64::from(PROTO_FILE_TRANSFER)))
        });
        if !offers_ft {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "file transfer disabled on device",
            ));
        }
        Ok(())
    }

    /// Tells the device the session is over.
    async fn close(&self) {
        if let Err(e) = self.send_control("close", None).await {
            tracing::warn!(sid = %self.sid, error = %e.message, "closing the file transfer session");
        }
    }
}

/// What `stat` said of a file.
#[derive(Debug)]
struct FileInfo {
    path: String,
    size: Option<i64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mode: Option<u32>,
}

impl Channel {
    async fn stat(&mut self, path: &str) -> ApiResult<FileInfo> {
        let body = protomsg::map_body(vec![("path", path.into())]);
        self.send_ft("stat", None, Some(&body)).await?;
        let msg = loop {
            let msg = self.recv().await?;
            if !self.answer_ping(&msg).await? {
                break msg;
            }
        };
        if msg.typ() == "error" {
            return Err(device_error(
                &msg,
                StatusCode::BAD_REQUEST,
                "failed to retrieve file info: error received from device: ",
            ));
        }
        if !msg.is(PROTO_FILE_TRANSFER, "file_info") {
            return Err(ApiError::internal(format!(
                "unexpected response from device {:?}",
                msg.typ()
            )));
        }
        let info = protomsg::decode_body(msg.body()).map_err(ApiError::internal)?;
        Ok(FileInfo {
            path: info["path"].as_str().unwrap_or(path).to_owned(),
            size: info["size"].as_i64(),
            uid: info["uid"].as_u64(),
            gid: info["gid"].as_u64(),
            mode: info["mode"].as_u64().and_then(|m| u32::try_from(m).ok()),
        })
    }
}

fn absolute_path(path: Option<&str>) -> ApiResult<String> {
    match path {
        None | Some("") => Err(ApiError::bad_request("path: cannot be blank.")),
        Some(p) if !p.starts_with('/') => Err(ApiError::bad_request("path: must be absolute.")),
        Some(p) => Ok(p.to_owned()),
    }
}

/// A header value; paths may hold any byte but control characters (those are replaced).
fn header_value(value: String) -> HeaderValue {
    HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| {
        let cleaned: String = value
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        HeaderValue::from_bytes(cleaned.as_bytes()).unwrap_or(HeaderValue::from_static(""))
    })
}

/// `GET|HEAD /api/management/v1/deviceconnect/devices/{id}/download?path=<absolute path>`.
pub async fn download(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    method: Method,
    id: Result<Path<String>, PathRejection>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Response> {
    let device_id = path_id(id)?;
    let path = absolute_path(query.get("path").map(String::as_str))?;
    let mut ch = Channel::open(&dc, &auth, &device_id).await?;
    let info = match prepare_download(&mut ch, &path).await {
        Ok(info) => info,
        Err(e) => {
            ch.close().await;
            return Err(e);
        }
    };
    let basename = info.path.rsplit('/').next().unwrap_or_default().to_owned();
    let mut headers = vec![
        (
            header::CONTENT_TYPE,
            header_value("application/octet-stream".into()),
        ),
        (
            header::CONTENT_DISPOSITION,
            header_value(format!("attachment; filename=\"{basename}\"")),
        ),
        (
            header::HeaderName::from_static("x-men-file-path"),
            header_value(info.path.clone()),
        ),
    ];
    let mut add = |name: &'static str, value: Option<String>| {
        if let Some(value) = value {
            headers.push((header::HeaderName::from_static(name), header_value(value)));
        }
    };
    add("x-men-file-uid", info.uid.map(|v| v.to_string()));
    add("x-men-file-gid", info.gid.map(|v| v.to_string()));
    add("x-men-file-mode", info.mode.map(|v| format!("{v:o}")));
    add("x-men-file-size", info.size.map(|v| v.to_string()));
    let mut response = if method == Method::HEAD {
        ch.close().await;
        Response::new(Body::empty())
    } else {
        let body = protomsg::map_body(vec![("path", path.as_str().into())]);
        if let Err(e) = ch.send_ft("get_file", None, Some(&body)).await {
            ch.close().await;
            return Err(e);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            if let Err(e) = stream_file(&mut ch, &tx).await {
                tracing::warn!(sid = %ch.sid, error = %e.message, "download failed");
                let _ = tx.send(Err(std::io::Error::other(e.message.clone()))).await;
            }
            ch.close().await;
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Response::new(Body::from_stream(stream))
    };
    response.headers_mut().extend(headers);
    Ok(response.into_response())
}

/// Handshake and `stat`: the file must be a regular file.
async fn prepare_download(ch: &mut Channel, path: &str) -> ApiResult<FileInfo> {
    ch.handshake().await?;
    let info = ch.stat(path).await?;
    match info.mode {
        Some(mode) if mode & GO_MODE_TYPE == 0 => Ok(info),
        _ => Err(ApiError::bad_request("path is not a regular file")),
    }
}

/// Receives the `file_chunk`s into `tx`: offsets must follow each other, acks every
/// [`ACK_EVERY`] chunks and for the final empty chunk.
async fn stream_file(
    ch: &mut Channel,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> ApiResult<()> {
    let mut received: i64 = 0;
    let mut unacked = 0;
    loop {
        let msg = ch.recv().await?;
        if ch.answer_ping(&msg).await? {
            continue;
        }
        match msg.typ() {
            "error" => {
                return Err(device_error(&msg, StatusCode::INTERNAL_SERVER_ERROR, ""));
            }
            "file_chunk" => {
                let body = msg.body();
                if body.is_empty() {
                    return ch.send_ft("ack", Some(received), None).await;
                }
                if msg.prop_i64("offset").unwrap_or(0) != received {
                    return Err(ApiError::internal(
                        "wrong offset received: file transfer failed",
                    ));
                }
                received += i64::try_from(body.len()).unwrap_or(i64::MAX);
                if tx.send(Ok(Bytes::copy_from_slice(body))).await.is_err() {
                    return Err(ApiError::bad_request("the client went away"));
                }
                unacked += 1;
                if unacked >= ACK_EVERY {
                    ch.send_ft("ack", Some(received), None).await?;
                    unacked = 0;
                }
            }
            _ => {}
        }
    }
}

/// The uploaded file, spooled to local disk (the multipart may carry `mode` after the file,
/// as mender-cli sends it); removed when dropped.
struct Spool {
    path: PathBuf,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The parsed upload form.
struct Upload {
    path: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    src_path: Option<String>,
    file: Option<Spool>,
}

async fn read_form(mut multipart: Multipart) -> ApiResult<Upload> {
    let bad = |e: axum::extract::multipart::MultipartError| ApiError::bad_request(e.body_text());
    let mut form = Upload {
        path: None,
        uid: None,
        gid: None,
        mode: None,
        src_path: None,
        file: None,
    };
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            form.src_path = field.file_name().map(str::to_owned);
            let spool = Spool {
                path: std::env::temp_dir()
                    .join(format!("deviceconnect-upload-{}", uuid::Uuid::new_v4())),
            };
            let mut out = tokio::fs::File::create(&spool.path)
                .await
                .map_err(ApiError::internal)?;
            while let Some(chunk) = field.chunk().await.map_err(bad)? {
                out.write_all(&chunk).await.map_err(ApiError::internal)?;
            }
            out.flush().await.map_err(ApiError::internal)?;
            form.file = Some(spool);
            continue;
        }
        let mut text = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            text.extend_from_slice(&chunk);
            if text.len() > MAX_FIELD {
                return Err(ApiError::bad_request(format!("{name}: too long")));
            }
        }
        let text = String::from_utf8(text)
            .map_err(|_| ApiError::bad_request(format!("{name}: not UTF-8")))?;
        let number = |radix: u32| {
            u32::from_str_radix(text.trim(), radix)
                .map_err(|_| ApiError::bad_request(format!("{name}: invalid value {text:?}")))
        };
        match name.as_str() {
            "path" => form.path = Some(text.clone()),
            "uid" => form.uid = Some(number(10)?),
            "gid" => form.gid = Some(number(10)?),
            "mode" => form.mode = Some(number(8)?),
            _ => {}
        }
    }
    Ok(form)
}

/// `PUT /api/management/v1/deviceconnect/devices/{id}/upload` (multipart `path`, `uid`, `gid`,
/// `mode` (octal), `file`): `201` once the device acknowledged the whole file; `409 device
/// disconnected` before any of the body is read when the device is not connected.
pub async fn upload(
    State(dc): State<Deviceconnect>,
    auth: UserAuth,
    id: Result<Path<String>, PathRejection>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<StatusCode> {
    let device_id = path_id(id)?;
    let multipart = multipart.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // The device must be connected (in the user's tenant) before the body is read: nothing is
    // spooled for a device that cannot take it. A disconnect while spooling ends in 409 too
    // (the channel's subscriptions hold the announcement).
    let mut ch = Channel::open(&dc, &auth, &device_id).await?;
    let form = read_form(multipart).await?;
    let path = absolute_path(form.path.as_deref())?;
    let Some(spool) = &form.file else {
        return Err(ApiError::bad_request("file: upload file is required."));
    };
    let result = send_file(&mut ch, &form, &path, spool).await;
    ch.close().await;
    result.map(|()| StatusCode::CREATED)
}

async fn send_file(ch: &mut Channel, form: &Upload, path: &str, spool: &Spool) -> ApiResult<()> {
    ch.handshake().await?;
    let mut request = vec![("path", Value::from(path))];
    if let Some(src) = &form.src_path {
        request.insert(0, ("src_path", Value::from(src.as_str())));
    }
    for (key, value) in [("uid", form.uid), ("gid", form.gid), ("mode", form.mode)] {
        if let Some(value) = value {
            request.push((key, Value::from(value)));
        }
    }
    ch.send_ft("put_file", None, Some(&protomsg::map_body(request)))
        .await?;
    loop {
        let msg = ch.recv().await?;
        match msg.typ() {
            "error" => return Err(device_error(&msg, StatusCode::BAD_REQUEST, "")),
            "ack" => break,
            _ => {
                ch.answer_ping(&msg).await?;
            }
        }
    }
    let mut file = tokio::fs::File::open(&spool.path)
        .await
        .map_err(ApiError::internal)?;
    let mut buf = vec![0u8; CHUNK];
    let window = i64::try_from(CHUNK * WINDOW).unwrap_or(i64::MAX);
    let (mut offset, mut acked, mut eof) = (0i64, 0i64, false);
    while !(eof && acked >= offset) {
        let msg = if !eof && offset <= acked + window {
            let n = file.read(&mut buf).await.map_err(ApiError::internal)?;
            if n == 0 {
                ch.send_ft("file_chunk", Some(offset), None).await?;
                eof = true;
            } else {
                ch.send_ft("file_chunk", Some(offset), Some(&buf[..n]))
                    .await?;
                offset += i64::try_from(n).unwrap_or(i64::MAX);
            }
            ch.try_recv()?
        } else {
            Some(ch.recv().await?)
        };
        let Some(msg) = msg else { continue };
        match msg.typ() {
            "error" => return Err(device_error(&msg, StatusCode::BAD_REQUEST, "")),
            "ack" => acked = acked.max(msg.prop_i64("offset").unwrap_or(0)),
            _ => {
                ch.answer_ping(&msg).await?;
            }
        }
    }
    Ok(())
}
