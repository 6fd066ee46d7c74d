//! Fuzz target `protomsg`: deviceconnect's ProtoMsg frame decoding
//! (`functions/deviceconnect/src/protomsg.rs`, compiled in here with `#[path]`, since
//! deviceconnect is a service binary with a heavy dependency tree), on the bytes of a
//! websocket message from a device or a user.
//!
//! Checks: no panic; a frame that parses can be stamped with the server's `sid` and
//! `user_id`, and the stamped frame parses again with those values and the same `proto`,
//! `typ` and body.

#![no_main]

#[allow(dead_code, clippy::all)]
#[path = "../../functions/deviceconnect/src/protomsg.rs"]
mod protomsg;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let _ = protomsg::decode_body(data);
    let Ok(msg) = protomsg::parse(&frame) else {
        return;
    };
    let _ = msg.typ();
    let _ = msg.prop_i64("offset");
    let _ = protomsg::decode_body(msg.body());
    let stamped = match protomsg::stamp(&msg, "fuzz-session", "fuzz-user") {
        Ok(s) => s,
        Err(_) => return,
    };
    let again = match protomsg::parse(&Bytes::from(stamped)) {
        Ok(m) => m,
        Err(e) => panic!("stamped frame does not parse: {e}"),
    };
    assert_eq!(again.proto, msg.proto);
    assert_eq!(again.typ, msg.typ);
    assert_eq!(again.sid.as_deref(), Some("fuzz-session"));
    assert_eq!(
        again.prop("user_id").and_then(|v| v.as_str()),
        Some("fuzz-user")
    );
    assert_eq!(again.body(), msg.body());
});
