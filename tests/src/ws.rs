//! Websocket sessions with deviceconnect for the black-box tests: an instance served on plain
//! HTTP (as the container is behind its load balancer), device and user sockets with a bearer
//! token, the next binary frame, close and silence checks, ProtoMsg frames (msgpack), and the
//! device's connection status as the management API reports it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use deviceconnect::Deviceconnect;
use futures::StreamExt;
use rmpv::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a socket waits for a frame or a close.
pub const WAIT: Duration = Duration::from_secs(10);

/// The device side of deviceconnect.
pub const DEVICE_PATH: &str = "/api/devices/v1/deviceconnect/connect";

/// Serves one deviceconnect instance on plain HTTP on a free local port.
pub async fn serve(dc: Deviceconnect) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = mender_http::finish(deviceconnect::router(dc));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// A websocket upgrade request for `ws://{addr}{path}` with `headers`.
pub fn ws_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
) -> anyhow::Result<Request> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse()?);
    }
    Ok(request)
}

/// A websocket to `path` authenticated with `Authorization: Bearer {token}`.
pub async fn bearer_ws(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<Ws> {
    let request = ws_request(addr, path, &[("Authorization", format!("Bearer {token}"))])?;
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(ws)
}

/// A device's socket.
pub async fn device_ws(addr: SocketAddr, token: &str) -> anyhow::Result<Ws> {
    bearer_ws(addr, DEVICE_PATH, token).await
}

/// The management path a user connects to `device_id` on.
pub fn connect_path(device_id: &str) -> String {
    format!("/api/management/v1/deviceconnect/devices/{device_id}/connect")
}

/// A user's socket to `device_id`.
pub async fn user_ws(addr: SocketAddr, device_id: &str, token: &str) -> anyhow::Result<Ws> {
    bearer_ws(addr, &connect_path(device_id), token).await
}

/// The next binary frame (pings skipped); fails on close or after [`WAIT`].
pub async fn next_binary(ws: &mut Ws) -> anyhow::Result<Vec<u8>> {
    next_binary_within(ws, WAIT).await
}

/// The next binary frame (pings skipped); fails on close or after `wait`.
pub async fn next_binary_within(ws: &mut Ws, wait: Duration) -> anyhow::Result<Vec<u8>> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => bail!("no frame within {wait:?}"),
            Ok(None) => bail!("websocket ended"),
            Ok(Some(frame)) => match frame? {
                Message::Binary(data) => return Ok(data.to_vec()),
                Message::Ping(_) | Message::Pong(_) => {}
                other => bail!("unexpected frame {other:?}"),
            },
        }
    }
}

/// [`next_binary`], decoded.
pub async fn next_frame(ws: &mut Ws) -> anyhow::Result<Value> {
    decode(&next_binary(ws).await?)
}

/// Waits for the server to close the socket; returns the close code and reason (None: closed
/// without a close frame).
pub async fn closed(ws: &mut Ws) -> anyhow::Result<Option<(u16, String)>> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => bail!("socket not closed within {WAIT:?}"),
            Ok(None) | Ok(Some(Err(_))) => return Ok(None),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Ok(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// [`closed`], the close code only.
pub async fn close_code(ws: &mut Ws) -> anyhow::Result<Option<u16>> {
    Ok(closed(ws).await?.map(|(code, _)| code))
}

/// Neither a frame nor a close arrives within `within` (pings aside).
pub async fn silent(ws: &mut Ws, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => bail!("unexpected {other:?}"),
        }
    }
}

/// A msgpack frame decoded.
pub fn decode(frame: &[u8]) -> anyhow::Result<Value> {
    Ok(rmpv::decode::read_value(&mut &frame[..])?)
}

/// A ProtoMsg frame in rmpv's compact integers (the server must take any width): `hdr` with
/// `proto`, `typ`, `sid` (left out when empty) and `props` (left out when empty), and `body`
/// when given.
pub fn protomsg(
    proto: u16,
    typ: &str,
    sid: &str,
    props: Vec<(&str, Value)>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut hdr = vec![
        ("proto".into(), Value::from(proto)),
        ("typ".into(), typ.into()),
    ];
    if !sid.is_empty() {
        hdr.push(("sid".into(), sid.into()));
    }
    if !props.is_empty() {
        hdr.push((
            "props".into(),
            Value::Map(props.into_iter().map(|(k, v)| (k.into(), v)).collect()),
        ));
    }
    let mut top = vec![("hdr".into(), Value::Map(hdr))];
    if let Some(body) = body {
        top.push(("body".into(), Value::Binary(body.to_vec())));
    }
    let mut out = Vec::new();
    // writing to a Vec cannot fail
    let _ = rmpv::encode::write_value(&mut out, &Value::Map(top));
    out
}

/// [`protomsg`] as a binary websocket message.
pub fn message(
    proto: u16,
    typ: &str,
    sid: &str,
    props: Vec<(&str, Value)>,
    body: Option<&[u8]>,
) -> Message {
    Message::Binary(protomsg(proto, typ, sid, props, body).into())
}

/// `GET /api/management/v1/deviceconnect/devices/{id}`: its status code and body.
pub async fn device_status(
    admin: &crate::Mgmt,
    device_id: &str,
) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
    admin
        .request_json(
            reqwest::Method::GET,
            &format!("/api/management/v1/deviceconnect/devices/{device_id}"),
            None,
        )
        .await
}

/// Waits (up to [`WAIT`]) until the device's connection status is `want`. A device socket is
/// open once the upgrade answers, the device is `connected` a moment later (its record is
/// written after the upgrade): a user who connects in between gets 404.
pub async fn wait_device_status(
    admin: &crate::Mgmt,
    device_id: &str,
    want: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    crate::wait_for(WAIT, Duration::from_millis(100), || async {
        match device_status(admin, device_id).await {
            Ok((reqwest::StatusCode::OK, body)) if body["status"] == want => Some(()),
            _ => None,
        }
    })
    .await
    .with_context(|| format!("device status never became {want}"))
}
