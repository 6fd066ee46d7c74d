//! deviceconnect: two instances on one nats-server bridge a user on instance A to a device on
//! instance B (server-assigned session id, `props.user_id` stamped, everything else relayed
//! byte for byte), connection status follows the device socket, and bad input is refused
//! without disturbing other sessions.
//!
//! Needs the emulators and nats-server (`make test`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use black_box_tests::form::{multipart, Part};
use black_box_tests::mgmt::https_client;
use black_box_tests::ws::{
    bearer_ws, close_code, decode, device_status as status, device_ws, next_binary,
    next_binary_within, protomsg, serve, silent, user_ws, wait_device_status as wait_status, Ws,
    WAIT,
};
use black_box_tests::{wait_for, Mgmt, TestStack};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use rmpv::Value;
use tokio_tungstenite::tungstenite::Message;

/// Two instances: A is the stack's own deviceconnect, B a second one with its own NATS
/// connection.
async fn two_instances(stack: &TestStack) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let a = stack.stack.deviceconnect.clone();
    let b = a.another_instance(&stack.stack.nats_url).await?;
    Ok((serve(a).await?, serve(b).await?))
}

async fn accepted_device(
    stack: &TestStack,
    admin: &Mgmt,
    mac: &str,
) -> anyhow::Result<(String, String)> {
    let (device, id) = stack.admitted_device(admin, mac).await?;
    Ok((id, device.issued_token()?))
}

/// A stack, two deviceconnect instances on its NATS and one accepted device.
struct Setup {
    stack: TestStack,
    admin: Mgmt,
    a: SocketAddr,
    b: SocketAddr,
    device_id: String,
    device_token: String,
}

async fn setup(mac: &str) -> anyhow::Result<Setup> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (a, b) = two_instances(&stack).await?;
    let (device_id, device_token) = accepted_device(&stack, &admin, mac).await?;
    Ok(Setup {
        stack,
        admin,
        a,
        b,
        device_id,
        device_token,
    })
}

fn str_(out: &mut Vec<u8>, s: &str) -> anyhow::Result<()> {
    rmp::encode::write_str(out, s)?;
    Ok(())
}

/// mender-cli's first message: proto as uint16 (0xcd), widths as int64 (0xd3), no sid.
fn cli_new_shell() -> anyhow::Result<Vec<u8>> {
    let mut b = Vec::new();
    rmp::encode::write_map_len(&mut b, 1)?;
    str_(&mut b, "hdr")?;
    rmp::encode::write_map_len(&mut b, 3)?;
    str_(&mut b, "proto")?;
    rmp::encode::write_u16(&mut b, 1)?;
    str_(&mut b, "typ")?;
    str_(&mut b, "new")?;
    str_(&mut b, "props")?;
    rmp::encode::write_map_len(&mut b, 2)?;
    str_(&mut b, "terminal_width")?;
    rmp::encode::write_i64(&mut b, 120)?;
    str_(&mut b, "terminal_height")?;
    rmp::encode::write_i64(&mut b, 30)?;
    Ok(b)
}

/// A user shell frame without sid (keystrokes).
fn cli_shell(keys: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut b = Vec::new();
    rmp::encode::write_map_len(&mut b, 2)?;
    str_(&mut b, "hdr")?;
    rmp::encode::write_map_len(&mut b, 2)?;
    str_(&mut b, "proto")?;
    rmp::encode::write_u16(&mut b, 1)?;
    str_(&mut b, "typ")?;
    str_(&mut b, "shell")?;
    str_(&mut b, "body")?;
    rmp::encode::write_bin(&mut b, keys)?;
    Ok(b)
}

/// What mender-connect answers: `status` as int64, body bytes.
fn device_frame(typ: &str, sid: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut b = Vec::new();
    rmp::encode::write_map_len(&mut b, 2)?;
    str_(&mut b, "hdr")?;
    rmp::encode::write_map_len(&mut b, 4)?;
    str_(&mut b, "proto")?;
    rmp::encode::write_u16(&mut b, 1)?;
    str_(&mut b, "typ")?;
    str_(&mut b, typ)?;
    str_(&mut b, "sid")?;
    str_(&mut b, sid)?;
    str_(&mut b, "props")?;
    rmp::encode::write_map_len(&mut b, 1)?;
    str_(&mut b, "status")?;
    rmp::encode::write_i64(&mut b, 1)?;
    str_(&mut b, "body")?;
    rmp::encode::write_bin(&mut b, body)?;
    Ok(b)
}

/// The `sub` (user id) of a JWT.
fn jwt_sub(token: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)?;
    Ok(claims["sub"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_on_one_instance_reaches_device_on_another() -> anyhow::Result<()> {
    let Setup {
        stack,
        admin,
        a,
        b,
        device_id,
        device_token,
    } = setup("dc:00:00:00:00:01").await?;

    // accepted (provisioned) but never connected: `disconnected` (through the stack's HTTPS
    // origin); an unknown device: 404 with Mender's body
    wait_status(&admin, &device_id, "disconnected").await?;
    let (code, body) = status(&admin, "00000000-0000-0000-0000-00000000ffff").await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "device not found");

    let mut device = device_ws(b, &device_token).await?;
    wait_status(&admin, &device_id, "connected").await?;
    let (_, body) = status(&admin, &device_id).await?;
    assert_eq!(body["device_id"], device_id.as_str());

    let mut user = user_ws(a, &device_id, admin.token()).await?;
    let new = cli_new_shell()?;
    user.send(Message::Binary(new.clone().into())).await?;

    // the device sees a server-assigned sid and the user id; the rest byte for byte
    let got = next_binary(&mut device).await?;
    let value = decode(&got)?;
    let sid = value["hdr"]["sid"].as_str().unwrap_or_default().to_owned();
    assert!(uuid::Uuid::parse_str(&sid).is_ok(), "sid {sid:?}");
    assert_eq!(
        value["hdr"]["props"]["user_id"].as_str(),
        Some(jwt_sub(admin.token())?.as_str())
    );
    assert_eq!(value["hdr"]["typ"].as_str(), Some("new"));
    let int64_120 = [0xd3, 0, 0, 0, 0, 0, 0, 0, 120];
    assert!(got.windows(9).any(|w| w == int64_120), "widths stay int64");
    assert!(
        got.windows(3).any(|w| w == [0xcd, 0, 1]),
        "proto stays uint16"
    );

    // device -> user: relayed unchanged
    let started = device_frame("new", &sid, b"Shell started")?;
    device.send(Message::Binary(started.clone().into())).await?;
    assert_eq!(next_binary(&mut user).await?, started);

    // keystrokes and output
    user.send(Message::Binary(cli_shell(b"echo hello\n")?.into()))
        .await?;
    let keys = decode(&next_binary(&mut device).await?)?;
    assert_eq!(keys["hdr"]["sid"].as_str(), Some(sid.as_str()));
    assert_eq!(keys["body"].as_slice(), Some(&b"echo hello\n"[..]));
    let output = device_frame("shell", &sid, b"hello\r\n")?;
    device.send(Message::Binary(output.clone().into())).await?;
    assert_eq!(next_binary(&mut user).await?, output);

    // mender-client commands reach the device with the user id
    let (code, body) = admin
        .request_json(
            Method::POST,
            &format!("/api/management/v1/deviceconnect/devices/{device_id}/check-update"),
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(body, serde_json::Value::Null);
    let command = decode(&next_binary(&mut device).await?)?;
    assert_eq!(command["hdr"]["proto"].as_u64(), Some(4));
    assert_eq!(command["hdr"]["typ"].as_str(), Some("check-update"));
    assert_eq!(
        command["hdr"]["props"]["user_id"].as_str(),
        Some(jwt_sub(admin.token())?.as_str())
    );

    // the device goes away: disconnected, and the user's session ends
    device.close(None).await?;
    wait_status(&admin, &device_id, "disconnected").await?;
    close_code(&mut user).await?;
    // and a user cannot open a session to a disconnected device
    let refused = user_ws(a, &device_id, admin.token()).await;
    assert!(
        refused.is_err(),
        "connect to a disconnected device must fail"
    );
    let (code, body) = admin
        .request_json(
            Method::POST,
            &format!("/api/management/v1/deviceconnect/devices/{device_id}/send-inventory"),
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "device not connected");

    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_device_connection_replaces_the_older_one() -> anyhow::Result<()> {
    let Setup {
        stack,
        admin,
        a,
        b,
        device_id,
        device_token,
    } = setup("dc:00:00:00:00:02").await?;

    let mut first = device_ws(a, &device_token).await?;
    wait_status(&admin, &device_id, "connected").await?;
    let mut second = device_ws(b, &device_token).await?;
    // the first connection is closed by the newer one (on another instance) ...
    close_code(&mut first).await?;
    // ... and its late disconnect does not mark the device disconnected
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, body) = status(&admin, &device_id).await?;
    assert_eq!(body["status"], "connected");

    // the newer connection works
    let mut user = user_ws(a, &device_id, admin.token()).await?;
    user.send(Message::Binary(cli_new_shell()?.into())).await?;
    next_binary(&mut second).await?;

    second.close(None).await?;
    wait_status(&admin, &device_id, "disconnected").await?;
    stack.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_without_disturbing_other_sessions() -> anyhow::Result<()> {
    let Setup {
        stack,
        admin,
        a,
        b,
        device_id,
        device_token,
    } = setup("dc:00:00:00:00:03").await?;
    let http = https_client(&stack.ca_cert())?;
    let mgmt_path = format!("/api/management/v1/deviceconnect/devices/{device_id}");

    // a device token on the user endpoints, a user token on the device endpoint: 4xx with
    // Mender's body
    let device_as_user = Mgmt::with_token(stack.url(), &stack.ca_cert(), &device_token)?;
    let (code, body) = device_as_user
        .request_json(Method::GET, &mgmt_path, None)
        .await?;
    assert!(code.is_client_error(), "{code}");
    assert!(body["error"].is_string(), "{body}");
    let response = http
        .get(format!(
            "{}/api/devices/v1/deviceconnect/connect",
            stack.url()
        ))
        .bearer_auth(admin.token())
        .send()
        .await?;
    assert!(response.status().is_client_error(), "{}", response.status());
    assert!(user_ws(a, &device_id, &device_token).await.is_err());
    assert!(device_ws(b, admin.token()).await.is_err());
    // unknown device
    let (code, body) = status(&admin, "00000000-0000-0000-0000-000000000000").await?;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "device not found");
    // the connect endpoint without a websocket upgrade
    let (code, body) = admin
        .request_json(Method::GET, &format!("{mgmt_path}/connect"), None)
        .await?;
    assert!(code.is_client_error(), "{code}");
    assert!(body["error"].is_string());

    let mut device = device_ws(b, &device_token).await?;
    wait_status(&admin, &device_id, "connected").await?;

    // a user token of another tenant (same user id, signed with the server key): refused
    let mut claims: mender_tokens::UserClaims = stack.stack.services.keys.verify(admin.token())?;
    claims.tenant = "0123456789abcdef01234567".into();
    let other_tenant = stack.stack.services.keys.issue(&claims)?;
    let stranger = Mgmt::with_token(stack.url(), &stack.ca_cert(), &other_tenant)?;
    let (code, _) = stranger.request_json(Method::GET, &mgmt_path, None).await?;
    assert!(code.is_client_error(), "{code}");
    assert!(user_ws(a, &device_id, &other_tenant).await.is_err());

    // two sessions on the device
    let mut one = user_ws(a, &device_id, admin.token()).await?;
    let mut two = user_ws(b, &device_id, admin.token()).await?;
    one.send(Message::Binary(cli_new_shell()?.into())).await?;
    let sid_one = decode(&next_binary(&mut device).await?)?["hdr"]["sid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    two.send(Message::Binary(cli_new_shell()?.into())).await?;
    let sid_two = decode(&next_binary(&mut device).await?)?["hdr"]["sid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(sid_one, sid_two);

    // a user frame that is not msgpack closes that session only
    one.send(Message::Binary(b"definitely not msgpack".to_vec().into()))
        .await?;
    assert_eq!(close_code(&mut one).await?, Some(1003));
    // its shell on the device is stopped
    let stop = decode(&next_binary(&mut device).await?)?;
    assert_eq!(stop["hdr"]["typ"].as_str(), Some("stop"));
    assert_eq!(stop["hdr"]["sid"].as_str(), Some(sid_one.as_str()));
    assert_eq!(stop["body"].as_slice(), Some(&b"user disconnected"[..]));
    assert_eq!(stop["hdr"]["props"]["status"].as_i64(), Some(2));
    assert_eq!(
        stop["hdr"]["props"]["user_id"].as_str(),
        Some(jwt_sub(admin.token())?.as_str())
    );
    // a text frame likewise
    let mut three = user_ws(a, &device_id, admin.token()).await?;
    three.send(Message::Text("{}".into())).await?;
    assert_eq!(close_code(&mut three).await?, Some(1003));

    // a user cannot pick another session's id: the server's sid wins
    let mut forged = Vec::new();
    rmpv::encode::write_value(
        &mut forged,
        &Value::Map(vec![(
            "hdr".into(),
            Value::Map(vec![
                ("proto".into(), Value::from(1u16)),
                ("typ".into(), "shell".into()),
                ("sid".into(), sid_one.as_str().into()),
            ]),
        )]),
    )?;
    two.send(Message::Binary(forged.into())).await?;
    let got = decode(&next_binary(&mut device).await?)?;
    assert_eq!(got["hdr"]["sid"].as_str(), Some(sid_two.as_str()));

    // device frames for an unknown session or with a sid that is no subject token: dropped
    for sid in [
        uuid::Uuid::new_v4().to_string(),
        "a.b".to_owned(),
        ">".to_owned(),
    ] {
        device
            .send(Message::Binary(
                device_frame("shell", &sid, b"lost")?.into(),
            ))
            .await?;
    }
    silent(&mut two, Duration::from_millis(300)).await?;
    // session two is undisturbed
    let output = device_frame("shell", &sid_two, b"still here")?;
    device.send(Message::Binary(output.clone().into())).await?;
    assert_eq!(next_binary(&mut two).await?, output);

    // a device frame that is not a ProtoMsg closes the device socket
    device
        .send(Message::Binary(vec![0x93, 1, 2, 3].into()))
        .await?;
    assert_eq!(close_code(&mut device).await?, Some(1003));
    wait_status(&admin, &device_id, "disconnected").await?;
    close_code(&mut two).await?;

    stack.stop().await;
    Ok(())
}

fn msgpack(value: Value) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &value)?;
    Ok(out)
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// The next frame for the device, decoded, skipping nothing: asserts its proto and type.
async fn expect(device: &mut Ws, proto: u64, typ: &str) -> anyhow::Result<Value> {
    let frame = decode(&next_binary(device).await?)?;
    anyhow::ensure!(
        frame["hdr"]["proto"].as_u64() == Some(proto) && frame["hdr"]["typ"].as_str() == Some(typ),
        "expected proto {proto} {typ}, got {frame}"
    );
    Ok(frame)
}

/// The device's side of the handshake: `open` → `accept` offering protocols 1-4; returns the
/// session id the server chose.
async fn accept_open(device: &mut Ws) -> anyhow::Result<String> {
    let open = expect(device, 0xFFFF, "open").await?;
    let sid = open["hdr"]["sid"].as_str().unwrap_or_default().to_owned();
    let versions = decode(open["body"].as_slice().unwrap_or_default())?;
    assert_eq!(versions["versions"][0].as_u64(), Some(1), "{versions}");
    let accept = msgpack(map(vec![
        ("version", 1.into()),
        (
            "protocols",
            Value::Array(vec![1.into(), 2.into(), 3.into(), 4.into()]),
        ),
    ]))?;
    device
        .send(Message::Binary(
            protomsg(0xFFFF, "accept", &sid, vec![], Some(&accept)).into(),
        ))
        .await?;
    Ok(sid)
}

async fn send_dev(device: &mut Ws, frame: Vec<u8>) -> anyhow::Result<()> {
    device.send(Message::Binary(frame.into())).await?;
    Ok(())
}

/// Download and upload over HTTP, spoken as proto 2 to a scripted device on another instance:
/// handshake, stat / put_file, chunk offsets, ack windows, device errors mapped to their codes,
/// and the refusals (relative path, missing file, disconnected device).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_transfer_speaks_proto_2_to_the_device() -> anyhow::Result<()> {
    let Setup {
        stack,
        admin,
        a,
        b,
        device_id,
        device_token,
    } = setup("dc:00:00:00:00:05").await?;
    let http = reqwest::Client::new();
    let base = format!("http://{a}/api/management/v1/deviceconnect/devices/{device_id}");
    let user_id = jwt_sub(admin.token())?;

    // refused before anything reaches the device
    let response = http
        .get(format!("{base}/download"))
        .query(&[("path", "relative/file")])
        .bearer_auth(admin.token())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["error"], "path: must be absolute.");
    assert!(body["request_id"].is_string());
    // the device is not connected yet
    let response = http
        .get(format!("{base}/download"))
        .query(&[("path", "/etc/hostname")])
        .bearer_auth(admin.token())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        response.json::<serde_json::Value>().await?["error"],
        "device disconnected"
    );

    // an upload too, before its form is read (upstream's order)
    let (content_type, form) = multipart(&[Part::Text("path", "/tmp/x")]);
    let response = http
        .put(format!("{base}/upload"))
        .header("Content-Type", content_type)
        .body(form)
        .bearer_auth(admin.token())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::CONFLICT);

    let mut device = device_ws(b, &device_token).await?;
    wait_status(&admin, &device_id, "connected").await?;

    // a bad form is refused before anything reaches the device (the next frame the device
    // sees is the download's `open`)
    let (content_type, form) = multipart(&[Part::Text("path", "/tmp/x")]);
    let response = http
        .put(format!("{base}/upload"))
        .header("Content-Type", content_type)
        .body(form)
        .bearer_auth(admin.token())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<serde_json::Value>().await?["error"],
        "file: upload file is required."
    );

    // download: 25 chunks of 1000 bytes
    let data: Vec<u8> = (0..25_000u32).map(|i| (i % 251) as u8).collect();
    let request = http
        .get(format!("{base}/download"))
        .query(&[("path", "/var/log/app.log")])
        .bearer_auth(admin.token())
        .send();
    let download = tokio::spawn(request);
    let sid = accept_open(&mut device).await?;
    let stat = expect(&mut device, 2, "stat").await?;
    assert_eq!(stat["hdr"]["sid"].as_str(), Some(sid.as_str()));
    assert_eq!(
        stat["hdr"]["props"]["user_id"].as_str(),
        Some(user_id.as_str())
    );
    assert_eq!(
        decode(stat["body"].as_slice().unwrap_or_default())?["path"].as_str(),
        Some("/var/log/app.log")
    );
    let info = msgpack(map(vec![
        ("path", "/var/log/app.log".into()),
        ("size", Value::from(data.len() as i64)),
        ("uid", 1000.into()),
        ("gid", 100.into()),
        ("mode", 0o640.into()),
        ("modtime", Value::Nil),
    ]))?;
    send_dev(
        &mut device,
        protomsg(2, "file_info", &sid, vec![], Some(&info)),
    )
    .await?;
    expect(&mut device, 2, "get_file").await?;
    for (i, chunk) in data.chunks(1000).enumerate() {
        let offset = Value::from((i * 1000) as i64);
        send_dev(
            &mut device,
            protomsg(2, "file_chunk", &sid, vec![("offset", offset)], Some(chunk)),
        )
        .await?;
    }
    send_dev(
        &mut device,
        protomsg(
            2,
            "file_chunk",
            &sid,
            vec![("offset", Value::from(25_000))],
            None,
        ),
    )
    .await?;
    // acks every 10 chunks, then for the end; offsets as int64 (0xd3)
    for want in [10_000, 20_000, 25_000] {
        let ack = next_binary(&mut device).await?;
        let value = decode(&ack)?;
        assert_eq!(value["hdr"]["typ"].as_str(), Some("ack"), "{value}");
        assert_eq!(value["hdr"]["props"]["offset"].as_i64(), Some(want));
        assert_eq!(ack[ack.len() - 9], 0xd3, "offset is an int64");
    }
    expect(&mut device, 0xFFFF, "close").await?;
    let response = download.await??;
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-men-file-mode"), "640");
    assert_eq!(header("x-men-file-uid"), "1000");
    assert_eq!(header("x-men-file-gid"), "100");
    assert_eq!(header("x-men-file-size"), "25000");
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"app.log\""
    );
    assert_eq!(response.bytes().await?.as_ref(), &data[..]);

    // stat errors: the device's code, or 400; a directory is refused
    let not_found = msgpack(map(vec![
        ("err", "file not found".into()),
        ("code", 404.into()),
    ]))?;
    let directory = msgpack(map(vec![
        ("path", "/var".into()),
        ("mode", Value::from(0x8000_01edu32)), // Go's ModeDir | 0755
    ]))?;
    for (typ, answer, status, error) in [
        (
            "error",
            &not_found,
            StatusCode::NOT_FOUND,
            "failed to retrieve file info: error received from device: file not found",
        ),
        (
            "file_info",
            &directory,
            StatusCode::BAD_REQUEST,
            "path is not a regular file",
        ),
    ] {
        let request = http
            .get(format!("{base}/download"))
            .query(&[("path", "/var")])
            .bearer_auth(admin.token())
            .send();
        let download = tokio::spawn(request);
        let sid = accept_open(&mut device).await?;
        expect(&mut device, 2, "stat").await?;
        send_dev(&mut device, protomsg(2, typ, &sid, vec![], Some(answer))).await?;
        expect(&mut device, 0xFFFF, "close").await?;
        let response = download.await??;
        assert_eq!(response.status(), status);
        assert_eq!(response.json::<serde_json::Value>().await?["error"], error);
    }
    // HEAD stops after the headers: no get_file
    let request = http
        .head(format!("{base}/download"))
        .query(&[("path", "/var/log/app.log")])
        .bearer_auth(admin.token())
        .send();
    let head = tokio::spawn(request);
    let sid = accept_open(&mut device).await?;
    expect(&mut device, 2, "stat").await?;
    send_dev(
        &mut device,
        protomsg(2, "file_info", &sid, vec![], Some(&info)),
    )
    .await?;
    expect(&mut device, 0xFFFF, "close").await?;
    let response = head.await??;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("x-men-file-size")
            .and_then(|v| v.to_str().ok()),
        Some("25000")
    );

    // upload: 10,000 bytes with mode 600 and owner 1000:100
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 256) as u8).collect();
    // mode after the file, as mender-cli sends it
    let (content_type, form) = multipart(&[
        Part::Text("path", "/srv/upload.bin"),
        Part::Text("uid", "1000"),
        Part::Text("gid", "100"),
        Part::File("file", "local.bin", &payload),
        Part::Text("mode", "600"),
    ]);
    let request = http
        .put(format!("{base}/upload"))
        .header("Content-Type", content_type)
        .body(form)
        .bearer_auth(admin.token())
        .send();
    let upload = tokio::spawn(request);
    let sid = accept_open(&mut device).await?;
    let put = expect(&mut device, 2, "put_file").await?;
    let meta = decode(put["body"].as_slice().unwrap_or_default())?;
    assert_eq!(meta["path"].as_str(), Some("/srv/upload.bin"));
    assert_eq!(meta["src_path"].as_str(), Some("local.bin"));
    assert_eq!(meta["mode"].as_u64(), Some(0o600));
    assert_eq!(meta["uid"].as_u64(), Some(1000));
    assert_eq!(meta["gid"].as_u64(), Some(100));
    send_dev(
        &mut device,
        protomsg(2, "ack", &sid, vec![("offset", Value::from(0))], None),
    )
    .await?;
    let mut received = Vec::new();
    loop {
        let chunk = expect(&mut device, 2, "file_chunk").await?;
        assert_eq!(
            chunk["hdr"]["props"]["offset"].as_i64(),
            Some(received.len() as i64)
        );
        let body = chunk["body"].as_slice().unwrap_or_default();
        assert!(body.len() <= 4096);
        received.extend_from_slice(body);
        let ack = protomsg(
            2,
            "ack",
            &sid,
            vec![("offset", Value::from(received.len() as i64))],
            None,
        );
        send_dev(&mut device, ack).await?;
        if body.is_empty() {
            break;
        }
    }
    assert_eq!(received, payload);
    expect(&mut device, 0xFFFF, "close").await?;
    assert_eq!(upload.await??.status(), StatusCode::CREATED);

    // a device error during the upload: its code and message
    let (content_type, form) = multipart(&[
        Part::Text("path", "/root/denied"),
        Part::File("file", "f", b"x"),
    ]);
    let request = http
        .put(format!("{base}/upload"))
        .header("Content-Type", content_type)
        .body(form)
        .bearer_auth(admin.token())
        .send();
    let upload = tokio::spawn(request);
    let sid = accept_open(&mut device).await?;
    expect(&mut device, 2, "put_file").await?;
    let error = msgpack(map(vec![
        ("err", "permission denied".into()),
        ("code", 403.into()),
    ]))?;
    send_dev(
        &mut device,
        protomsg(2, "error", &sid, vec![], Some(&error)),
    )
    .await?;
    let response = upload.await??;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.json::<serde_json::Value>().await?["error"],
        "permission denied"
    );
    expect(&mut device, 0xFFFF, "close").await?;

    // a chunk at the wrong offset aborts the download mid-body
    let request = http
        .get(format!("{base}/download"))
        .query(&[("path", "/var/log/app.log")])
        .bearer_auth(admin.token())
        .send();
    let download = tokio::spawn(request);
    let sid = accept_open(&mut device).await?;
    expect(&mut device, 2, "stat").await?;
    send_dev(
        &mut device,
        protomsg(2, "file_info", &sid, vec![], Some(&info)),
    )
    .await?;
    expect(&mut device, 2, "get_file").await?;
    send_dev(
        &mut device,
        protomsg(
            2,
            "file_chunk",
            &sid,
            vec![("offset", Value::from(5))],
            Some(b"zzz"),
        ),
    )
    .await?;
    let response = download.await??;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.bytes().await.is_err(),
        "a broken download must not look complete"
    );

    device.close(None).await?;
    stack.stop().await;
    Ok(())
}

/// The internal endpoints: provision (201, kept when present), delete (202), tenant delete
/// (204), commands to a device that is not connected (404); the workflow steps create the
/// record on acceptance and delete it on decommissioning; shutdown closes the sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_and_the_device_lifecycle() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let (a, b) = two_instances(&stack).await?;
    let http = reqwest::Client::new();
    let store = &stack.stack.services.deviceconnect;
    let internal = format!("http://{a}/api/internal/v1/deviceconnect");

    let response = http
        .post(format!("{internal}/tenants/tenant-1/devices"))
        .json(&serde_json::json!({"device_id": ""}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<serde_json::Value>().await?["error"],
        "device_id is empty"
    );
    for id in ["d-1", "d-2", "d-1"] {
        let response = http
            .post(format!("{internal}/tenants/tenant-1/devices"))
            .json(&serde_json::json!({"device_id": id}))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let record = store.get("tenant-1", "d-1").await?.context("no record")?;
    assert_eq!(record.status, "disconnected");
    for command in ["check-update", "send-inventory"] {
        let response = http
            .post(format!("{internal}/tenants/tenant-1/devices/d-1/{command}"))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.json::<serde_json::Value>().await?["error"],
            "device not connected"
        );
    }
    let response = http
        .delete(format!("{internal}/tenants/tenant-1/devices/d-1"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(store.get("tenant-1", "d-1").await?.is_none());
    assert!(store.get("tenant-1", "d-2").await?.is_some());
    let response = http
        .delete(format!("{internal}/tenants/tenant-1"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(store.get("tenant-1", "d-2").await?.is_none());
    // an instance that died without writing its disconnects: once its heartbeat runs out its
    // devices read as disconnected; a device of an instance that never wrote one likewise
    store
        .heartbeat("short-lived", Duration::from_secs(1))
        .await?;
    store.connect("tenant-2", "crashed", "short-lived").await?;
    let status_of = |id: &'static str| async move {
        anyhow::Ok(store.get("tenant-2", id).await?.context("record")?.status)
    };
    assert_eq!(status_of("crashed").await?, "connected");
    store.connect("tenant-2", "orphan", "never-started").await?;
    assert_eq!(status_of("orphan").await?, "disconnected");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(status_of("crashed").await?, "disconnected");

    // internal routes are not on the public origin
    let (code, _) = admin
        .request_json(
            Method::DELETE,
            "/api/internal/v1/deviceconnect/tenants/tenant-1",
            None,
        )
        .await?;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // acceptance provisions the record (disconnected); connecting keeps it current; a
    // provisioning that arrives late does not mark a connected device disconnected
    let (device_id, device_token) = accepted_device(&stack, &admin, "dc:00:00:00:00:06").await?;
    wait_status(&admin, &device_id, "disconnected").await?;
    let mut device = device_ws(b, &device_token).await?;
    wait_status(&admin, &device_id, "connected").await?;
    store.provision("", &device_id).await?;
    assert_eq!(
        store.get("", &device_id).await?.context("record")?.status,
        "connected"
    );

    // shutdown of instance B closes its device socket with "going away"
    let response = http
        .get(format!("http://{b}/api/internal/v1/deviceconnect/shutdown"))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(close_code(&mut device).await?, Some(1001));
    wait_status(&admin, &device_id, "disconnected").await?;
    assert!(
        device_ws(b, &device_token).await.is_err(),
        "B takes no new sockets"
    );
    let _device = device_ws(a, &device_token).await?;
    wait_status(&admin, &device_id, "connected").await?;

    // decommissioning deletes the record
    admin.decommission(&device_id).await?;
    wait_for(WAIT, Duration::from_millis(100), || async {
        matches!(
            status(&admin, &device_id).await,
            Ok((StatusCode::NOT_FOUND, _))
        )
        .then_some(())
    })
    .await
    .context("the deviceconnect record outlived decommissioning")?;

    stack.stop().await;
    Ok(())
}

/// A session that records more than 8 MiB is stopped: the device gets a shell `stop`
/// (status 2), the user's socket closes with 1008; the playback of an unknown session, or of
/// another tenant's, ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_byte_limit_and_playback_scoping() -> anyhow::Result<()> {
    let Setup {
        stack,
        admin,
        a,
        b,
        device_id,
        device_token,
    } = setup("dc:00:00:00:00:07").await?;
    let mut device = device_ws(b, &device_token).await?;
    wait_status(&admin, &device_id, "connected").await?;
    let mut user = user_ws(a, &device_id, admin.token()).await?;
    user.send(Message::Binary(cli_new_shell()?.into())).await?;
    let sid = decode(&next_binary(&mut device).await?)?["hdr"]["sid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mib = vec![b'x'; 1024 * 1024];
    // the user reads while the device writes (the relay waits for a slow reader)
    let reader = tokio::spawn(async move {
        let mut frames = 0;
        loop {
            match tokio::time::timeout(WAIT, user.next()).await? {
                Some(Ok(Message::Binary(_))) => frames += 1,
                Some(Ok(Message::Close(frame))) => {
                    return anyhow::Ok((frames, frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => {}
                other => bail!("unexpected {other:?}"),
            }
        }
    });
    for _ in 0..8 {
        send_dev(&mut device, device_frame("shell", &sid, &mib)?).await?;
    }
    let stop = expect(&mut device, 1, "stop")
        .await
        .context("the device got no stop")?;
    assert_eq!(stop["hdr"]["sid"].as_str(), Some(sid.as_str()));
    assert_eq!(stop["hdr"]["props"]["status"].as_i64(), Some(2));
    assert_eq!(
        stop["body"].as_slice(),
        Some(&b"session byte limit exceeded"[..])
    );
    let (frames, code) = reader.await??;
    assert_eq!(code, Some(1008));
    assert!(
        frames >= 7,
        "the output before the limit was relayed ({frames})"
    );

    // the recording exists for its tenant only
    let recorded = wait_for(WAIT, Duration::from_millis(200), || async {
        let shown = playback(a, &sid, admin.token()).await.ok()?;
        (shown.len() >= 7 * mib.len()).then_some(shown.len())
    })
    .await?;
    assert!(recorded <= 8 * mib.len());
    assert!(
        playback(a, &uuid::Uuid::new_v4().to_string(), admin.token())
            .await?
            .is_empty()
    );
    // a real user of another tenant
    let useradm = &stack.stack.services.useradm;
    let email = format!("other-{}@example.com", uuid::Uuid::new_v4());
    useradm
        .ensure_user("0123456789abcdef01234567", &email, "other-secret-1")
        .await?;
    let other_tenant = useradm.login(&email, "other-secret-1", false).await?;
    assert!(playback(a, &sid, &other_tenant).await?.is_empty());

    device.close(None).await?;
    stack.stop().await;
    Ok(())
}

/// A child process killed (by its PID) and reaped when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let mut cmd = std::process::Command::new("/usr/bin/setpriv");
    cmd.args(["--pdeathsig", "KILL", "--", program])
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    Ok(Proc(
        cmd.spawn().with_context(|| format!("starting {program}"))?,
    ))
}

const DBUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=@SOCKET@</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#;

/// The real `mender` daemon (DBus API on a private bus) and `mender-connect` on the stack's
/// HTTPS origin: a user on a second instance opens a shell and runs `echo hello`, the playback
/// of that session shows the command and its output; `mender-cli terminal` (tmux), `mender-cli
/// cp` both ways (mode kept, bytes identical), `mender-cli port-forward` to an HTTP server on
/// the device side; stopping mender-connect makes the device `disconnected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mender_connect_terminal_files_port_forward_playback() -> anyhow::Result<()> {
    use black_box_tests::{mender_available, ClientOptions, MenderClient};
    for bin in [
        "/usr/bin/mender-connect",
        "/usr/bin/dbus-daemon",
        "/usr/bin/setpriv",
    ] {
        if !std::path::Path::new(bin).is_file() || !mender_available() {
            eprintln!("skipped: {bin} or mender-client missing");
            return Ok(());
        }
    }
    let stack = TestStack::start().await?;
    let admin = stack.admin().await?;
    let user_instance = serve(
        stack
            .stack
            .deviceconnect
            .another_instance(&stack.stack.nats_url)
            .await?,
    )
    .await?;
    let dir = black_box_tests::tempdir::TempDir::new("deviceconnect-real")?;
    let socket = dir.path().join("system_bus_socket");
    let dbus_conf = dir.path().join("dbus.conf");
    std::fs::write(
        &dbus_conf,
        DBUS_CONFIG.replace("@SOCKET@", &socket.to_string_lossy()),
    )?;
    let _dbus = spawn(
        "/usr/bin/dbus-daemon",
        &[
            &format!("--config-file={}", dbus_conf.display()),
            "--nofork",
        ],
        &[],
        &dir.path().join("dbus.log"),
    )?;
    wait_for(WAIT, Duration::from_millis(50), || async {
        socket.exists().then_some(())
    })
    .await?;
    let bus = format!("unix:path={}", socket.display());

    let mac = "dc:00:00:00:00:04";
    let mut options = ClientOptions::new(stack.url(), &stack.ca_cert(), mac);
    options
        .extra_config
        .insert("DBus".into(), serde_json::json!({"Enabled": true}));
    options
        .env
        .push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.clone()));
    let client = MenderClient::start_with(options)?;
    let listed = admin
        .wait_for_device_by_mac(mac, black_box_tests::FIRST_REQUEST_WAIT)
        .await?;
    let device_id = listed["id"].as_str().unwrap_or_default().to_owned();
    admin.accept_device(&device_id).await?;

    let connect_conf = dir.path().join("mender-connect.conf");
    std::fs::write(
        &connect_conf,
        serde_json::json!({"ShellCommand": "/bin/sh", "ShellArguments": ["-i"], "User": "root",
            "ReconnectIntervalSeconds": 2})
        .to_string(),
    )?;
    let connect_log = dir.path().join("mender-connect.log");
    let connect = spawn(
        "/usr/bin/mender-connect",
        &[
            "--config",
            &connect_conf.to_string_lossy(),
            "--fallback-config",
            "none",
            // debug: a failure below shows what mender-connect read and wrote
            "--debug",
            "daemon",
        ],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus)],
        &connect_log,
    )?;
    let connected = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            match status(&admin, &device_id).await {
                Ok((StatusCode::OK, body)) if body["status"] == "connected" => Some(()),
                _ => None,
            }
        },
    )
    .await;
    if let Err(e) = connected {
        bail!(
            "mender-connect never connected: {e}\nmender-connect log:\n{}\nclient log:\n{}",
            std::fs::read_to_string(&connect_log).unwrap_or_default(),
            client.log_tail(40)
        );
    }

    let (mut user, sid, mut output) =
        open_terminal(user_instance, &device_id, &admin, &connect_log, &client).await?;
    user.send(Message::Binary(cli_shell(b"echo hel''lo\n")?.into()))
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&output)
        .lines()
        .any(|l| l.trim() == "hello")
    {
        if std::time::Instant::now() > deadline {
            bail!("no hello in {:?}", String::from_utf8_lossy(&output));
        }
        let frame = decode(&next_binary(&mut user).await?)?;
        if frame["hdr"]["typ"].as_str() == Some("shell") {
            output.extend_from_slice(frame["body"].as_slice().unwrap_or_default());
        }
    }
    user.close(None).await?;

    // the recording plays back what was typed (the terminal echoes it) and what was shown
    let deadline = std::time::Instant::now() + 3 * WAIT;
    loop {
        let shown = playback(user_instance, &sid, admin.token()).await?;
        let text = String::from_utf8_lossy(&shown).into_owned();
        if text.contains("echo hel''lo") && text.lines().any(|l| l.trim() == "hello") {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("the playback never showed the command and its output: {text:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if black_box_tests::mender_cli_available() {
        let cli = black_box_tests::MenderCli::new(stack.url(), &stack.ca_cert())?;
        cli.login(
            black_box_tests::stack::ADMIN_EMAIL,
            black_box_tests::stack::ADMIN_PASSWORD,
        )
        .await?
        .ensure_success()?;
        // mender-cli terminal (needs a TTY: tmux) on the stack's HTTPS origin
        if std::path::Path::new("/usr/bin/tmux").is_file() {
            mender_cli_terminal(&stack, &cli, &device_id, dir.path(), &connect_log).await?;
        }
        mender_cli_cp(&stack, &cli, &admin, &device_id, dir.path()).await?;
        mender_cli_port_forward(&stack, &cli, &device_id, dir.path()).await?;
    }

    // mender-connect stops: the device becomes disconnected
    drop(connect);
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            match status(&admin, &device_id).await {
                Ok((StatusCode::OK, body)) if body["status"] == "disconnected" => Some(()),
                _ => None,
            }
        },
    )
    .await
    .context("the device never became disconnected after mender-connect stopped")?;
    drop(client);
    stack.stop().await;
    Ok(())
}

/// How long the shell's first output (its prompt) may take on a loaded machine.
const PROMPT_WAIT: Duration = Duration::from_secs(30);

/// Opens a terminal session on `instance` and starts the device's shell: the session, its id
/// and the output so far (ending with the prompt). The answer to `new` and the shell's first
/// output may come in either order: mender-connect starts relaying the terminal before it
/// answers. The shell reads its input only once it has started, so the caller types after the
/// prompt shows (typed earlier, it is echoed before the prompt and its output line reads
/// "# hello"). A session whose shell output mender-connect never reads
/// ([`mender_connect_lost_the_output_reader`]) is closed and another one opened, twice at most.
async fn open_terminal(
    instance: SocketAddr,
    device_id: &str,
    admin: &Mgmt,
    connect_log: &std::path::Path,
    client: &black_box_tests::MenderClient,
) -> anyhow::Result<(Ws, String, Vec<u8>)> {
    for attempt in 1..=3 {
        let mut user = user_ws(instance, device_id, admin.token()).await?;
        user.send(Message::Binary(cli_new_shell()?.into())).await?;
        let mut started = None;
        let mut output = Vec::new();
        let deadline = std::time::Instant::now() + PROMPT_WAIT;
        let waited = loop {
            if started.is_some() && shows_prompt(&output) {
                break Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let frame = match next_binary_within(&mut user, left).await {
                Ok(frame) => decode(&frame)?,
                Err(e) => break Err(e),
            };
            match frame["hdr"]["typ"].as_str() {
                Some("new") => {
                    let status = frame["hdr"]["props"]["status"].as_i64();
                    anyhow::ensure!(status == Some(1), "the shell did not start: {frame}");
                    started = Some(frame);
                }
                Some("shell") => {
                    output.extend_from_slice(frame["body"].as_slice().unwrap_or_default())
                }
                _ => {}
            }
        };
        let sid = started
            .as_ref()
            .and_then(|s| s["hdr"]["sid"].as_str())
            .unwrap_or_default()
            .to_owned();
        let e = match waited {
            Ok(()) => return Ok((user, sid, output)),
            Err(e) => e,
        };
        let lost = if started.is_some() && output.is_empty() && attempt < 3 {
            // closing the session stops the shell: the log then tells whether it had a reader
            let _ = user.close(None).await;
            mender_connect_lost_the_output_reader(connect_log, &sid).await
        } else {
            false
        };
        if !lost {
            bail!(
                "no answer to the new shell or no prompt (answered: {}, output {:?}): {e}\n\
                 mender-connect log:\n{}\n\
                 mender client log (its websocket proxy carries mender-connect's socket):\n{}",
                started.is_some(),
                String::from_utf8_lossy(&output),
                std::fs::read_to_string(connect_log).unwrap_or_default(),
                client.log_tail(60)
            );
        }
        eprintln!(
            "attempt {attempt}: mender-connect never read session {sid}'s shell output \
             (its known start-up race); opening another session"
        );
    }
    bail!("unreachable: the last attempt returns or fails")
}

/// Whether mender-connect lost the reader of session `sid`'s shell output, told by its log
/// once the session has stopped. mender-connect 2.1.0 (upstream's master still) starts the
/// reader before marking the shell running (`shell/exec.go`, `MenderShell::Start`:
/// `go s.pipeStdout(); s.running = true`); when the goroutine runs first it sees a stopped
/// shell and returns at once, so the answer to `new` arrives and no output ever does (seen
/// about once in 20 runs on a loaded machine; NATS showed the one answer frame on the session
/// subject and nothing after it). A live reader logs "error reading stdout" when the stopped
/// shell's pty closes, a lost one logs nothing: that line missing after the session's stop is
/// the sign. False when the stop is not logged within 20 s.
async fn mender_connect_lost_the_output_reader(log: &std::path::Path, sid: &str) -> bool {
    let stop = format!("session {sid} status:");
    let stopped = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            std::fs::read_to_string(log)
                .ok()
                .filter(|text| !sid.is_empty() && text.contains(&stop))
                .map(|_| ())
        },
    )
    .await;
    if stopped.is_err() {
        return false;
    }
    // a live reader's error follows the stop within about 2 s (the shell is killed first)
    tokio::time::sleep(Duration::from_secs(6)).await;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let after_stop = text
        .split_once(&stop)
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let this_session = after_stop
        .split("created a new session")
        .next()
        .unwrap_or_default();
    !this_session.contains("error reading stdout")
}

/// Whether the terminal output ends with the device shell's prompt (`sh -i` as root: "# ").
fn shows_prompt(output: &[u8]) -> bool {
    String::from_utf8_lossy(output).trim_end().ends_with('#')
}

/// The shell output of a session's playback (`sleep_ms=0`).
async fn playback(addr: SocketAddr, sid: &str, token: &str) -> anyhow::Result<Vec<u8>> {
    let mut ws = bearer_ws(
        addr,
        &format!("/api/management/v1/deviceconnect/sessions/{sid}/playback?sleep_ms=0"),
        token,
    )
    .await?;
    let mut shown = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => bail!("playback did not end within {WAIT:?}"),
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Ok(shown),
            Ok(Some(Ok(Message::Binary(frame)))) => {
                let value = decode(&frame)?;
                anyhow::ensure!(value["hdr"]["sid"].as_str() == Some(sid), "{value}");
                if value["hdr"]["typ"].as_str() == Some("shell") {
                    shown.extend_from_slice(value["body"].as_slice().unwrap_or_default());
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.into()),
        }
    }
}

/// `mender-cli cp` to the device and back: the device-side file has the local file's mode and
/// bytes, the downloaded copy is byte-identical; the download headers describe the file.
async fn mender_cli_cp(
    stack: &TestStack,
    cli: &black_box_tests::MenderCli,
    admin: &Mgmt,
    device_id: &str,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let local = dir.join("upload-src.bin");
    // 300 KiB of varied bytes: more than one 20-chunk ack window
    let data: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&local, &data)?;
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640))?;
    let device_dir = dir.join("on-device");
    std::fs::create_dir_all(&device_dir)?;
    let remote = device_dir.join("uploaded.bin");
    let remote = remote.to_string_lossy();
    cli.run([
        "cp",
        &local.to_string_lossy(),
        &format!("{device_id}:{remote}"),
    ])
    .await?
    .ensure_success()?;
    let written = std::fs::read(&*remote)?;
    anyhow::ensure!(written == data, "uploaded file differs");
    let mode = std::fs::metadata(&*remote)?.permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "uploaded mode {mode:o}");

    let back = dir.join("downloaded.bin");
    cli.run([
        "cp".to_owned(),
        format!("{device_id}:{remote}"),
        back.to_string_lossy().into_owned(),
    ])
    .await?
    .ensure_success()?;
    anyhow::ensure!(std::fs::read(&back)? == data, "downloaded file differs");

    let response = admin
        .http()
        .get(format!(
            "{}/api/management/v1/deviceconnect/devices/{device_id}/download",
            stack.url()
        ))
        .query(&[("path", &*remote)])
        .bearer_auth(admin.token())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-men-file-mode"), "640");
    assert_eq!(header("x-men-file-size"), data.len().to_string());
    assert_eq!(header("x-men-file-path"), &*remote);
    assert_eq!(header("content-type"), "application/octet-stream");
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"uploaded.bin\""
    );
    assert_eq!(response.bytes().await?.as_ref(), &data[..]);
    Ok(())
}

/// `mender-cli port-forward` carries HTTP requests to a server on the device side.
async fn mender_cli_port_forward(
    stack: &TestStack,
    cli: &black_box_tests::MenderCli,
    device_id: &str,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let served = dir.join("served");
    std::fs::create_dir_all(&served)?;
    let page = format!("forwarded through deviceconnect {}\n", uuid::Uuid::new_v4());
    std::fs::write(served.join("page.txt"), &page)?;
    let (remote, local) = (
        local_stack::nats::free_port()?,
        local_stack::nats::free_port()?,
    );
    let _server = spawn(
        "/usr/bin/python3",
        &[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            &served.to_string_lossy(),
            &remote.to_string(),
        ],
        &[],
        &dir.join("http-server.log"),
    )?;
    let forward_log = dir.join("port-forward.log");
    let _forward = spawn(
        "/usr/bin/mender-cli",
        &[
            "--server",
            stack.url(),
            "port-forward",
            device_id,
            &format!("{local}:{remote}"),
        ],
        &[
            ("HOME", &cli.home().to_string_lossy()),
            ("SSL_CERT_FILE", &stack.ca_cert().to_string_lossy()),
        ],
        &forward_log,
    )?;
    let http = reqwest::Client::new();
    let got = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            let response = http
                .get(format!("http://127.0.0.1:{local}/page.txt"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            response.text().await.ok()
        },
    )
    .await;
    let got = match got {
        Ok(got) => got,
        Err(e) => bail!(
            "no answer through the forwarded port: {e}\nport-forward log:\n{}",
            std::fs::read_to_string(&forward_log).unwrap_or_default()
        ),
    };
    assert_eq!(got, page);
    // a second request over a new TCP connection
    let again = http
        .get(format!("http://127.0.0.1:{local}/page.txt"))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(again, page);
    Ok(())
}

/// A private tmux server, killed when dropped.
struct Tmux(std::path::PathBuf);

impl Tmux {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new("/usr/bin/tmux")
            .arg("-S")
            .arg(&self.0)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn wait_for_screen(&self, what: &str, f: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        let found = wait_for(
            Duration::from_secs(20),
            Duration::from_millis(200),
            || async {
                self.run(&["capture-pane", "-p"])
                    .ok()
                    .filter(|s| f(s))
                    .map(|_| ())
            },
        )
        .await;
        if found.is_err() {
            bail!(
                "{what} never showed; screen:\n{}",
                self.run(&["capture-pane", "-p"]).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

async fn mender_cli_terminal(
    stack: &TestStack,
    cli: &black_box_tests::MenderCli,
    device_id: &str,
    dir: &std::path::Path,
    connect_log: &std::path::Path,
) -> anyhow::Result<()> {
    let command = format!(
        "env HOME='{}' SSL_CERT_FILE='{}' /usr/bin/mender-cli --server '{}' terminal '{}'; sleep 60",
        cli.home().display(),
        stack.ca_cert().display(),
        stack.url(),
        device_id
    );
    // mender-cli prints its banner before it asks for the shell, and the device starts the
    // shell only after stopping the previous session's (mender-connect takes seconds): type
    // only once the shell's prompt shows, or the keys are lost or echoed before the prompt
    // (the output line then reads "# hello").
    let after_banner = |screen: &str| -> Vec<String> {
        screen
            .lines()
            .skip_while(|l| !l.contains("Press CTRL+]"))
            .skip(1)
            .map(|l| l.trim().to_owned())
            .collect()
    };
    let mut attempt = 1;
    let tmux = loop {
        let tmux = Tmux(dir.join(format!("tmux-{attempt}.sock")));
        tmux.run(&["new-session", "-d", "-x", "120", "-y", "30", &command])?;
        tmux.wait_for_screen("the session banner", |s| s.contains("Press CTRL+]"))
            .await?;
        let prompt = wait_for(PROMPT_WAIT, Duration::from_millis(200), || async {
            tmux.run(&["capture-pane", "-p"])
                .ok()
                .filter(|s| after_banner(s).iter().any(|l| l == "#"))
                .map(|_| ())
        })
        .await;
        if prompt.is_ok() {
            break tmux;
        }
        let screen = tmux.run(&["capture-pane", "-p"]).unwrap_or_default();
        // CTRL+] quits mender-cli, which ends the session: the device stops its shell
        tmux.run(&["send-keys", "C-]"])?;
        let log = std::fs::read_to_string(connect_log).unwrap_or_default();
        let sid = log
            .rsplit_once("created a new session: ")
            .and_then(|(_, rest)| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        if attempt == 3 || !mender_connect_lost_the_output_reader(connect_log, &sid).await {
            bail!(
                "the shell prompt never showed; screen:\n{screen}\nmender-connect log:\n{}",
                std::fs::read_to_string(connect_log).unwrap_or_default()
            );
        }
        eprintln!(
            "attempt {attempt}: mender-connect never read session {sid}'s shell output \
             (its known start-up race); starting mender-cli terminal again"
        );
        attempt += 1;
    };
    tmux.run(&["send-keys", "echo hel''lo", "Enter"])?;
    tmux.wait_for_screen("hello", |s| after_banner(s).iter().any(|l| l == "hello"))
        .await?;
    // CTRL+] quits mender-cli
    tmux.run(&["send-keys", "C-]"])?;
    Ok(())
}
