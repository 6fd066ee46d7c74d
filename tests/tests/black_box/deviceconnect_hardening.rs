//! deviceconnect's security hardening: open sockets are checked again periodically (a user
//! session ends on logout and user deletion, a device socket on rejection and
//! decommissioning), a device reaches only the sessions opened to it, cookie-authenticated
//! websocket upgrades need an allowed `Origin`, and an upload to a disconnected device is
//! refused before its body is read.
//!
//! Needs the emulators and nats-server (`make test`).

use std::net::SocketAddr;
use std::time::Duration;

use black_box_tests::ws::{
    closed, connect_path, device_ws, message, next_frame, serve, silent, user_ws,
    wait_device_status, ws_request, Ws, WAIT,
};
use black_box_tests::{Mgmt, TestStack};
use deviceconnect::{Deviceconnect, Settings};
use futures::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The re-check interval of the instances under test.
const RECHECK: Duration = Duration::from_millis(300);

/// A second deviceconnect instance on the stack's NATS with `settings`, served on plain HTTP.
async fn instance(stack: &TestStack, settings: Settings) -> anyhow::Result<SocketAddr> {
    let dc: Deviceconnect = stack
        .stack
        .deviceconnect
        .another_instance(&stack.stack.nats_url)
        .await?
        .with_settings(settings);
    serve(dc).await
}

fn rechecking() -> Settings {
    Settings {
        recheck_interval: RECHECK,
        ..Settings::default()
    }
}

/// An accepted device: (device id, auth set id, token).
async fn accepted_device(
    stack: &TestStack,
    admin: &Mgmt,
    mac: &str,
) -> anyhow::Result<(String, String, String)> {
    let mut device = stack.device(mac)?;
    device.authenticate().await?;
    let (id, auth_id) = admin.admit(&mut device).await?;
    Ok((id, auth_id, device.issued_token()?))
}

fn new_shell() -> Message {
    message(
        1,
        "new",
        "",
        vec![
            ("terminal_width", 80.into()),
            ("terminal_height", 24.into()),
        ],
        None,
    )
}

/// Opens a shell session as `token` and returns (user socket, sid the device saw).
/// A device socket on `addr`, once the API reports the device `connected` (a user who
/// connects before that is refused with 404).
async fn connected_device(
    addr: SocketAddr,
    admin: &Mgmt,
    device_id: &str,
    token: &str,
) -> anyhow::Result<Ws> {
    let device = device_ws(addr, token).await?;
    wait_device_status(admin, device_id, "connected").await?;
    Ok(device)
}

async fn open_shell(
    addr: SocketAddr,
    device: &mut Ws,
    device_id: &str,
    token: &str,
) -> anyhow::Result<(Ws, String)> {
    let mut user = user_ws(addr, device_id, token).await?;
    user.send(new_shell()).await?;
    let got = next_frame(device).await?;
    anyhow::ensure!(got["hdr"]["typ"].as_str() == Some("new"), "{got}");
    let sid = got["hdr"]["sid"].as_str().unwrap_or_default().to_owned();
    Ok((user, sid))
}

/// The device gets an upstream-style shell `stop` for `sid`: status 2 (error), the user id,
/// `reason` as body.
async fn expect_stop(device: &mut Ws, sid: &str, reason: &str) -> anyhow::Result<()> {
    let stop = next_frame(device).await?;
    anyhow::ensure!(
        stop["hdr"]["proto"].as_u64() == Some(1)
            && stop["hdr"]["typ"].as_str() == Some("stop")
            && stop["hdr"]["sid"].as_str() == Some(sid)
            && stop["hdr"]["props"]["status"].as_i64() == Some(2)
            && stop["hdr"]["props"]["user_id"].is_str()
            && stop["body"].as_slice() == Some(reason.as_bytes()),
        "expected a shell stop ({reason}) for {sid}, got {stop}"
    );
    Ok(())
}

async fn create_user(admin: &Mgmt, email: &str, password: &str) -> anyhow::Result<String> {
    admin
        .create(
            "/api/management/v1/useradm/users",
            json!({"email": email, "password": password}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_sessions_end_on_logout_and_user_deletion() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let addr = instance(&stack, rechecking()).await?;
    let (device_id, _, device_token) = accepted_device(&stack, &admin, "dc:00:00:00:01:01").await?;
    let mut device = connected_device(addr, &admin, &device_id, &device_token).await?;
    let ops_id = create_user(&admin, "ops@example.com", "ops-password-1").await?;
    let ca_cert = stack.ca_cert();
    let login = || Mgmt::login(stack.url(), &ca_cert, "ops@example.com", "ops-password-1");

    // A valid token survives many re-checks.
    let ops = login().await?;
    let (mut user, sid) = open_shell(addr, &mut device, &device_id, ops.token()).await?;
    silent(&mut user, RECHECK * 5).await?;

    // Logout: the device's shell is stopped, the session closes with 1008.
    let (status, _, _) = ops
        .request(Method::POST, "/api/management/v1/useradm/auth/logout", None)
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        closed(&mut user).await?,
        Some((1008, "unauthorized".to_owned()))
    );
    expect_stop(&mut device, &sid, "unauthorized").await?;

    // Deleting the user ends its session the same way; the admin's session stays.
    let ops = login().await?;
    let (mut user, sid) = open_shell(addr, &mut device, &device_id, ops.token()).await?;
    let mut admins = user_ws(addr, &device_id, admin.token()).await?;
    let (status, _, _) = admin
        .request(
            Method::DELETE,
            &format!("/api/management/v1/useradm/users/{ops_id}"),
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        closed(&mut user).await?,
        Some((1008, "unauthorized".to_owned()))
    );
    expect_stop(&mut device, &sid, "unauthorized").await?;
    silent(&mut admins, RECHECK * 3).await?;
    admins
        .send(message(1, "shell", "", vec![], Some(b"ls\n")))
        .await?;
    let relayed = next_frame(&mut device).await?;
    assert_eq!(relayed["body"].as_slice(), Some(&b"ls\n"[..]), "{relayed}");

    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_sockets_end_on_rejection_and_decommissioning() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let addr = instance(&stack, rechecking()).await?;
    let (one, one_auth, one_token) = accepted_device(&stack, &admin, "dc:00:00:00:01:02").await?;
    let (two, _, two_token) = accepted_device(&stack, &admin, "dc:00:00:00:01:03").await?;
    let mut device_one = connected_device(addr, &admin, &one, &one_token).await?;
    let mut device_two = connected_device(addr, &admin, &two, &two_token).await?;
    let (mut user, _) = open_shell(addr, &mut device_one, &one, admin.token()).await?;
    // accepted devices keep their sockets over many re-checks
    silent(&mut device_one, RECHECK * 5).await?;

    // Rejected: its socket closes with 1008, the user's session with it.
    admin.set_auth_status(&one, &one_auth, "rejected").await?;
    assert_eq!(
        closed(&mut device_one).await?,
        Some((1008, "unauthorized".to_owned()))
    );
    assert_eq!(
        closed(&mut user).await?.map(|(code, _)| code),
        Some(1000),
        "the session ends with the device's socket"
    );

    // Decommissioned: the same.
    silent(&mut device_two, RECHECK * 2).await?;
    admin.decommission(&two).await?;
    assert_eq!(
        closed(&mut device_two).await?,
        Some((1008, "unauthorized".to_owned()))
    );

    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reaches_only_sessions_opened_to_it() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let addr = instance(&stack, Settings::default()).await?;
    let (one, _, one_token) = accepted_device(&stack, &admin, "dc:00:00:00:01:04").await?;
    let (two, _, two_token) = accepted_device(&stack, &admin, "dc:00:00:00:01:05").await?;
    let mut device_one = connected_device(addr, &admin, &one, &one_token).await?;
    let mut device_two = connected_device(addr, &admin, &two, &two_token).await?;
    let (mut user, sid) = open_shell(addr, &mut device_one, &one, admin.token()).await?;

    // Device two writes to device one's session: nothing reaches the user.
    device_two
        .send(message(
            1,
            "shell",
            &sid,
            vec![("status", 1.into())],
            Some(b"forged output"),
        ))
        .await?;
    silent(&mut user, Duration::from_secs(1)).await?;

    // Device one's frames for its session still do.
    device_one
        .send(message(
            1,
            "shell",
            &sid,
            vec![("status", 1.into())],
            Some(b"real output"),
        ))
        .await?;
    let got = next_frame(&mut user).await?;
    assert_eq!(got["body"].as_slice(), Some(&b"real output"[..]), "{got}");

    stack.stop().await;
    Ok(())
}

/// The race behind the flaky real-client terminal test: a device's socket writes its record
/// (connection version 1) and then announces `connect 1` on its control subject; a user who
/// opened a session in between heard the announcement of the very connection it talks to and
/// was closed with "device disconnected". Here the late announcement is replayed on NATS: it
/// must not end the session; a newer connection's must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_announcement_of_the_sessions_own_connection_keeps_it() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let addr = instance(&stack, Settings::default()).await?;
    let (id, _, token) = accepted_device(&stack, &admin, "dc:00:00:00:01:07").await?;
    let mut device = connected_device(addr, &admin, &id, &token).await?;
    let (mut user, sid) = open_shell(addr, &mut device, &id, admin.token()).await?;
    let nats = async_nats::connect(&stack.stack.nats_url).await?;
    let control = format!("deviceconnect._.control.{id}");

    nats.publish(control.clone(), "connect 1".into()).await?;
    nats.flush().await?;
    silent(&mut user, Duration::from_secs(1)).await?;
    device
        .send(message(
            1,
            "shell",
            &sid,
            vec![("status", 1.into())],
            Some(b"still here"),
        ))
        .await?;
    let got = next_frame(&mut user).await?;
    assert_eq!(got["body"].as_slice(), Some(&b"still here"[..]), "{got}");

    nats.publish(control, "connect 2".into()).await?;
    assert_eq!(
        closed(&mut user).await?,
        Some((1000, "device disconnected".to_owned()))
    );
    stack.stop().await;
    Ok(())
}

/// The HTTP status and body of a refused websocket upgrade (`101` when it was accepted).
async fn upgrade_status(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
) -> anyhow::Result<(u16, serde_json::Value)> {
    match tokio_tungstenite::connect_async(ws_request(addr, path, headers)?).await {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            Ok((101, serde_json::Value::Null))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            Ok((response.status().as_u16(), body))
        }
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_authenticated_upgrades_need_an_allowed_origin() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let gui = "https://gui.example.com";
    let addr = instance(
        &stack,
        Settings {
            allowed_origins: vec![gui.to_owned()],
            ..Settings::default()
        },
    )
    .await?;
    let (device_id, _, device_token) = accepted_device(&stack, &admin, "dc:00:00:00:01:06").await?;
    let _device = connected_device(addr, &admin, &device_id, &device_token).await?;
    let cookie = ("Cookie", format!("JWT={}", admin.token()));
    let bearer = ("Authorization", format!("Bearer {}", admin.token()));
    let connect = connect_path(&device_id);
    let playback = "/api/management/v1/deviceconnect/sessions/no-such-session/playback";

    for path in [connect.as_str(), playback] {
        // the GUI's cookie from another site, or without any Origin: refused
        for origin in [Some("https://evil.example"), Some("null"), None] {
            let mut headers = vec![cookie.clone()];
            headers.extend(origin.map(|o| ("Origin", o.to_owned())));
            let (status, body) = upgrade_status(addr, path, &headers).await?;
            assert_eq!(status, 403, "{path} from {origin:?}: {body}");
            assert_eq!(body["error"], "origin not allowed", "{body}");
            assert!(body["request_id"].is_string(), "{body}");
        }
        // the same origin (the Host the request went to), or an allowed one
        for origin in [format!("http://{addr}"), gui.to_owned()] {
            let headers = [cookie.clone(), ("Origin", origin.clone())];
            let (status, body) = upgrade_status(addr, path, &headers).await?;
            assert_eq!(status, 101, "{path} from {origin}: {body}");
        }
        // a bearer token is no ambient credential: any origin, or none
        for headers in [
            vec![bearer.clone()],
            vec![
                bearer.clone(),
                ("Origin", "https://evil.example".to_owned()),
            ],
            vec![bearer.clone(), cookie.clone()],
        ] {
            let (status, body) = upgrade_status(addr, path, &headers).await?;
            assert_eq!(status, 101, "{path} with bearer: {body}");
        }
    }

    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_a_disconnected_device_are_refused_before_the_body_is_read() -> anyhow::Result<()>
{
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let addr = instance(&stack, Settings::default()).await?;
    let (device_id, _, _) = accepted_device(&stack, &admin, "dc:00:00:00:01:07").await?;

    // A 1 GiB upload whose body has only begun: the answer must not wait for the rest.
    let boundary = "hardening-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/tmp/big\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let request = format!(
        "PUT /api/management/v1/deviceconnect/devices/{device_id}/upload HTTP/1.1\r\n\
         Host: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n{head}",
        admin.token(),
        1u64 << 30
    );
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut start = request.into_bytes();
    start.extend_from_slice(&[0x5a; 1024]);
    tcp.write_all(&start).await?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(WAIT, async {
        loop {
            let n = tcp.read(&mut buf).await?;
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if n == 0 || text.contains("device disconnected") {
                return anyhow::Ok(());
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&response).into_owned();
    anyhow::ensure!(
        read.is_ok(),
        "no answer within {WAIT:?} while the body was still coming: {text:?}"
    );
    assert!(text.starts_with("HTTP/1.1 409"), "{text}");
    assert!(text.contains("\"error\":\"device disconnected\""), "{text}");

    stack.stop().await;
    Ok(())
}
