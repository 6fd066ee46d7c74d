//! ProtoMsg frames (`{"hdr": {"proto", "typ", "sid", "props"}, "body"}`, msgpack) handled as raw
//! bytes: the relay reads the header and re-encodes only the fields the server owns
//! (`hdr.sid`, `hdr.props.user_id`); every other key and value is copied byte for byte, because
//! the Go clients decode the exact wire integer types (CLIENTS.md §5). The body is never
//! decoded or copied: a [`ProtoMsg`] keeps the frame (`Bytes`, shared) and the body's range.

use std::ops::Range;

use bytes::Bytes;
use rmpv::Value;

/// A frame that is not a ProtoMsg.
#[derive(Debug, thiserror::Error)]
#[error("invalid ProtoMsg: {0}")]
pub struct FrameError(pub String);

fn err(message: impl std::fmt::Display) -> FrameError {
    FrameError(message.to_string())
}

/// One map entry: the key (when it is a string) and the byte ranges of key and value.
#[derive(Debug, Clone)]
struct Entry {
    key: Option<String>,
    key_span: Range<usize>,
    value_span: Range<usize>,
    /// The decoded value (`Nil` for a skipped `bin`/`str`, see `bytes`).
    value: Value,
    /// The payload range of a `bin`/`str` value read without decoding it.
    bytes: Option<Range<usize>>,
}

/// The payload range of the `bin` or `str` value at `pos` and the end of the value, without
/// decoding it; `None` for any other type.
fn skip_bytes(buf: &[u8], pos: usize) -> Option<(Range<usize>, usize)> {
    let marker = *buf.get(pos)?;
    let at = |i: usize| buf.get(pos + i).copied().map(usize::from);
    let (len, header) = match marker {
        0xa0..=0xbf => (usize::from(marker & 0x1f), 1),
        0xc4 | 0xd9 => (at(1)?, 2),
        0xc5 | 0xda => ((at(1)? << 8) | at(2)?, 3),
        0xc6 | 0xdb => ((at(1)? << 24) | (at(2)? << 16) | (at(3)? << 8) | at(4)?, 5),
        _ => return None,
    };
    let start = pos + header;
    let end = start.checked_add(len)?;
    (end <= buf.len()).then_some((start..end, end))
}

/// Reads the map starting at `start`; returns its entries and the end offset. The value of
/// `raw_key`, when it is `bin`/`str`, is skipped rather than decoded.
fn read_map(
    buf: &[u8],
    start: usize,
    raw_key: Option<&str>,
) -> Result<(Vec<Entry>, usize), FrameError> {
    let mut rd = buf.get(start..).ok_or_else(|| err("truncated"))?;
    let len = rmp::decode::read_map_len(&mut rd).map_err(|e| err(format!("{e:?}")))?;
    let mut pos = buf.len() - rd.len();
    let mut entries = Vec::new();
    for _ in 0..len {
        let key_start = pos;
        let key = rmpv::decode::read_value(&mut rd).map_err(err)?;
        pos = buf.len() - rd.len();
        let key_span = key_start..pos;
        let key = key.as_str().map(str::to_owned);
        let skipped = (key.is_some() && key.as_deref() == raw_key)
            .then(|| skip_bytes(buf, pos))
            .flatten();
        let (value, bytes, end) = match skipped {
            Some((payload, end)) => {
                rd = buf.get(end..).ok_or_else(|| err("truncated"))?;
                (Value::Nil, Some(payload), end)
            }
            None => {
                let value = rmpv::decode::read_value(&mut rd).map_err(err)?;
                (value, None, buf.len() - rd.len())
            }
        };
        let value_span = pos..end;
        pos = end;
        entries.push(Entry {
            key,
            key_span,
            value_span,
            value,
            bytes,
        });
    }
    Ok((entries, pos))
}

fn find<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| e.key.as_deref() == Some(key))
}

/// A decoded ProtoMsg header over the frame's raw bytes.
#[derive(Debug, Clone)]
pub struct ProtoMsg {
    /// The whole frame.
    data: Bytes,
    pub proto: u16,
    pub typ: Option<String>,
    pub sid: Option<String>,
    top: Vec<Entry>,
    hdr: Vec<Entry>,
}

/// Protocol numbers.
pub const PROTO_SHELL: u16 = 1;
pub const PROTO_FILE_TRANSFER: u16 = 2;
pub const PROTO_MENDER_CLIENT: u16 = 4;
pub const PROTO_CONTROL: u16 = 0xFFFF;

/// Decodes a frame: one msgpack map (nothing after it) whose `hdr` is a map with an integer
/// `proto`; `typ` and `sid`, when present, are strings (or nil).
pub fn parse(data: &Bytes) -> Result<ProtoMsg, FrameError> {
    let buf: &[u8] = data;
    let (top, end) = read_map(buf, 0, Some("body"))?;
    if end != buf.len() {
        return Err(err("trailing bytes"));
    }
    let hdr_entry = find(&top, "hdr").ok_or_else(|| err("no hdr"))?;
    if !hdr_entry.value.is_map() {
        return Err(err("hdr is not a map"));
    }
    let (hdr, _) = read_map(buf, hdr_entry.value_span.start, None)?;
    let proto = find(&hdr, "proto")
        .and_then(|e| e.value.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| err("hdr.proto is not a uint16"))?;
    let string = |key: &str| -> Result<Option<String>, FrameError> {
        match find(&hdr, key).map(|e| &e.value) {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::String(s)) => s
                .as_str()
                .map(|s| Some(s.to_owned()))
                .ok_or_else(|| err(format!("hdr.{key} is not UTF-8"))),
            Some(_) => Err(err(format!("hdr.{key} is not a string"))),
        }
    };
    let typ = string("typ")?;
    let sid = string("sid")?;
    match find(&hdr, "props").map(|e| &e.value) {
        None | Some(Value::Nil) | Some(Value::Map(_)) => {}
        Some(_) => return Err(err("hdr.props is not a map")),
    }
    Ok(ProtoMsg {
        data: data.clone(),
        proto,
        typ,
        sid,
        top,
        hdr,
    })
}

impl ProtoMsg {
    /// `hdr.typ`, empty when absent.
    pub fn typ(&self) -> &str {
        self.typ.as_deref().unwrap_or_default()
    }

    /// `proto` and `typ` together, for matching.
    pub fn is(&self, proto: u16, typ: &str) -> bool {
        self.proto == proto && self.typ() == typ
    }

    /// A property of `hdr.props`.
    pub fn prop(&self, key: &str) -> Option<&Value> {
        match find(&self.hdr, "props").map(|e| &e.value) {
            Some(Value::Map(entries)) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// An integer property (any msgpack integer width).
    pub fn prop_i64(&self, key: &str) -> Option<i64> {
        self.prop(key).and_then(Value::as_i64)
    }

    /// The body bytes (`bin` or `str`); empty when absent, nil or of another type.
    pub fn body(&self) -> &[u8] {
        find(&self.top, "body")
            .and_then(|e| e.bytes.clone())
            .and_then(|range| self.data.get(range))
            .unwrap_or_default()
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_str(out, s);
}

fn write_map_len(out: &mut Vec<u8>, len: usize) {
    let _ = rmp::encode::write_map_len(out, u32::try_from(len).unwrap_or(u32::MAX));
}

/// The frame with `hdr.sid = sid` and `hdr.props.user_id = user_id`; everything else is copied
/// unchanged (key order kept, missing `sid` / `props` appended to `hdr`).
pub fn stamp(msg: &ProtoMsg, sid: &str, user_id: &str) -> Result<Vec<u8>, FrameError> {
    let buf: &[u8] = &msg.data;
    let raw = |r: &Range<usize>| buf.get(r.clone()).unwrap_or_default();
    let mut out = Vec::with_capacity(buf.len() + 64);
    write_map_len(&mut out, msg.top.len());
    for entry in &msg.top {
        out.extend_from_slice(raw(&entry.key_span));
        if entry.key.as_deref() != Some("hdr") {
            out.extend_from_slice(raw(&entry.value_span));
            continue;
        }
        let has_sid = find(&msg.hdr, "sid").is_some();
        let has_props = find(&msg.hdr, "props").is_some();
        write_map_len(
            &mut out,
            msg.hdr.len() + usize::from(!has_sid) + usize::from(!has_props),
        );
        for h in &msg.hdr {
            out.extend_from_slice(raw(&h.key_span));
            match h.key.as_deref() {
                Some("sid") => write_str(&mut out, sid),
                Some("props") => write_props(&mut out, buf, h, user_id)?,
                _ => out.extend_from_slice(raw(&h.value_span)),
            }
        }
        if !has_sid {
            write_str(&mut out, "sid");
            write_str(&mut out, sid);
        }
        if !has_props {
            write_str(&mut out, "props");
            write_map_len(&mut out, 1);
            write_str(&mut out, "user_id");
            write_str(&mut out, user_id);
        }
    }
    Ok(out)
}

fn write_props(
    out: &mut Vec<u8>,
    buf: &[u8],
    props: &Entry,
    user_id: &str,
) -> Result<(), FrameError> {
    let entries = if props.value.is_map() {
        read_map(buf, props.value_span.start, None)?.0
    } else {
        Vec::new()
    };
    let kept: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.key.as_deref() != Some("user_id"))
        .collect();
    write_map_len(out, kept.len() + 1);
    for e in kept {
        out.extend_from_slice(buf.get(e.key_span.clone()).unwrap_or_default());
        out.extend_from_slice(buf.get(e.value_span.clone()).unwrap_or_default());
    }
    write_str(out, "user_id");
    write_str(out, user_id);
    Ok(())
}

/// A property value the server writes, in the wire type the Go clients type-assert
/// (`props["offset"].(int64)`, ...).
#[derive(Debug, Clone, Copy)]
pub enum Prop<'a> {
    Str(&'a str),
    /// Always encoded as msgpack int64 (`0xd3`), as Go's encoder writes an `int64`.
    I64(i64),
}

/// A new frame `{"hdr": {"proto": <uint16>, "typ", "sid"?, "props"?}, "body"?}` (`sid`,
/// `props` and `body` omitted when absent or empty, as upstream's `omitempty`).
pub fn frame(
    proto: u16,
    typ: &str,
    sid: Option<&str>,
    props: &[(&str, Prop)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + body.map_or(0, <[u8]>::len));
    write_map_len(&mut out, 1 + usize::from(body.is_some()));
    write_str(&mut out, "hdr");
    write_map_len(
        &mut out,
        2 + usize::from(sid.is_some()) + usize::from(!props.is_empty()),
    );
    write_str(&mut out, "proto");
    let _ = rmp::encode::write_u16(&mut out, proto);
    write_str(&mut out, "typ");
    write_str(&mut out, typ);
    if let Some(sid) = sid {
        write_str(&mut out, "sid");
        write_str(&mut out, sid);
    }
    if !props.is_empty() {
        write_str(&mut out, "props");
        write_map_len(&mut out, props.len());
        for (key, value) in props {
            write_str(&mut out, key);
            match value {
                Prop::Str(s) => write_str(&mut out, s),
                Prop::I64(n) => {
                    let _ = rmp::encode::write_i64(&mut out, *n);
                }
            }
        }
    }
    if let Some(body) = body {
        write_str(&mut out, "body");
        let _ = rmp::encode::write_bin(&mut out, body);
    }
    out
}

/// A command for the device without a session: `{"hdr": {"proto": <uint16>, "typ", "props":
/// {"user_id"}}}` (props omitted without a user), as upstream sends `check-update` /
/// `send-inventory`.
pub fn command(proto: u16, typ: &str, user_id: Option<&str>) -> Vec<u8> {
    match user_id {
        Some(user_id) => frame(proto, typ, None, &[("user_id", Prop::Str(user_id))], None),
        None => frame(proto, typ, None, &[], None),
    }
}

/// A msgpack map body (`{"path": ...}`, `{"versions": [1]}`, ...).
pub fn map_body(entries: Vec<(&str, Value)>) -> Vec<u8> {
    let map = Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    );
    let mut out = Vec::new();
    let _ = rmpv::encode::write_value(&mut out, &map);
    out
}

/// Decodes a msgpack body (a device's `file_info`, `error`, `accept`).
pub fn decode_body(body: &[u8]) -> Result<Value, FrameError> {
    let mut rd = body;
    rmpv::decode::read_value(&mut rd).map_err(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// mender-cli's first message: widths as int64 (0xd3), proto as uint16 (0xcd), no sid.
    fn cli_new() -> Vec<u8> {
        let mut b = Vec::new();
        write_map_len(&mut b, 1);
        write_str(&mut b, "hdr");
        write_map_len(&mut b, 3);
        write_str(&mut b, "proto");
        rmp::encode::write_u16(&mut b, 1).unwrap();
        write_str(&mut b, "typ");
        write_str(&mut b, "new");
        write_str(&mut b, "props");
        write_map_len(&mut b, 2);
        write_str(&mut b, "terminal_width");
        rmp::encode::write_i64(&mut b, 120).unwrap();
        write_str(&mut b, "terminal_height");
        rmp::encode::write_i64(&mut b, 30).unwrap();
        b
    }

    #[test]
    fn stamps_sid_and_user_id_and_keeps_wire_types() {
        let frame = cli_new();
        let msg = parse(&Bytes::from(frame.clone())).unwrap();
        assert_eq!(msg.proto, 1);
        assert_eq!(msg.typ.as_deref(), Some("new"));
        assert_eq!(msg.sid, None);
        let out = stamp(&msg, "s-1", "u-1").unwrap();
        let again = parse(&Bytes::from(out.clone())).unwrap();
        assert_eq!(again.sid.as_deref(), Some("s-1"));
        // int64 widths and the uint16 proto survive byte for byte
        let d3 = [0xd3, 0, 0, 0, 0, 0, 0, 0, 120];
        assert!(out.windows(d3.len()).any(|w| w == d3));
        assert!(out.windows(3).any(|w| w == [0xcd, 0, 1]));
        let value = rmpv::decode::read_value(&mut &out[..]).unwrap();
        let props = &value["hdr"]["props"];
        assert_eq!(props["user_id"].as_str(), Some("u-1"));
        assert_eq!(props["terminal_height"].as_i64(), Some(30));
    }

    #[test]
    fn replaces_an_existing_sid_and_user_id() {
        let value = Value::Map(vec![
            (
                "hdr".into(),
                Value::Map(vec![
                    ("proto".into(), 1.into()),
                    ("typ".into(), "shell".into()),
                    ("sid".into(), "forged".into()),
                    (
                        "props".into(),
                        Value::Map(vec![("user_id".into(), "someone".into())]),
                    ),
                ]),
            ),
            ("body".into(), Value::Binary(b"ls\n".to_vec())),
        ]);
        let mut frame = Vec::new();
        rmpv::encode::write_value(&mut frame, &value).unwrap();
        let msg = parse(&Bytes::from(frame.clone())).unwrap();
        let out = stamp(&msg, "mine", "me").unwrap();
        let v = rmpv::decode::read_value(&mut &out[..]).unwrap();
        assert_eq!(v["hdr"]["sid"].as_str(), Some("mine"));
        assert_eq!(v["hdr"]["props"]["user_id"].as_str(), Some("me"));
        assert_eq!(v["body"].as_slice(), Some(&b"ls\n"[..]));
    }

    #[test]
    fn reads_bodies_of_every_width_without_decoding_them() {
        for len in [0usize, 5, 31, 32, 255, 256, 300, 65_535, 65_536, 70_000] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for as_str in [false, true] {
                let mut frame = Vec::new();
                write_map_len(&mut frame, 2);
                write_str(&mut frame, "hdr");
                write_map_len(&mut frame, 1);
                write_str(&mut frame, "proto");
                rmp::encode::write_u16(&mut frame, 3).unwrap();
                write_str(&mut frame, "body");
                if as_str {
                    let text = "é".repeat(len / 2);
                    rmp::encode::write_str(&mut frame, &text).unwrap();
                    let msg = parse(&Bytes::from(frame.clone())).unwrap();
                    assert_eq!(msg.body(), text.as_bytes());
                } else {
                    rmp::encode::write_bin(&mut frame, &body).unwrap();
                    let msg = parse(&Bytes::from(frame.clone())).unwrap();
                    assert_eq!(msg.body(), &body[..], "bin of {len}");
                    // stamping copies the body byte for byte
                    let stamped = parse(&Bytes::from(stamp(&msg, "s", "u").unwrap())).unwrap();
                    assert_eq!(stamped.body(), &body[..]);
                    // a truncated body is refused
                    if len > 0 {
                        frame.pop();
                        assert!(
                            parse(&Bytes::from(frame)).is_err(),
                            "truncated bin of {len}"
                        );
                    }
                }
            }
        }
        // a body of another type reads as empty
        let mut frame = Vec::new();
        rmpv::encode::write_value(
            &mut frame,
            &Value::Map(vec![
                ("hdr".into(), Value::Map(vec![("proto".into(), 1.into())])),
                ("body".into(), Value::from(42)),
            ]),
        )
        .unwrap();
        assert!(parse(&Bytes::from(frame)).unwrap().body().is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_protomsg() {
        assert!(parse(&Bytes::from_static(b"not msgpack at all")).is_err());
        assert!(parse(&Bytes::from_static(&[0xc1])).is_err());
        let mut no_hdr = Vec::new();
        rmpv::encode::write_value(&mut no_hdr, &Value::Map(vec![("body".into(), 1.into())]))
            .unwrap();
        assert!(parse(&Bytes::from(no_hdr.clone())).is_err());
        let mut trailing = cli_new();
        trailing.push(0);
        assert!(parse(&Bytes::from(trailing.clone())).is_err());
    }

    #[test]
    fn builds_frames_with_int64_props_and_omits_what_is_empty() {
        let frame = frame(
            PROTO_FILE_TRANSFER,
            "ack",
            Some("s"),
            &[("user_id", Prop::Str("u")), ("offset", Prop::I64(4096))],
            None,
        );
        let msg = parse(&Bytes::from(frame.clone())).unwrap();
        assert!(msg.is(PROTO_FILE_TRANSFER, "ack"));
        assert_eq!(msg.prop_i64("offset"), Some(4096));
        assert!(msg.body().is_empty());
        let d3 = [0xd3, 0, 0, 0, 0, 0, 0, 0x10, 0];
        assert!(frame.windows(d3.len()).any(|w| w == d3));
        let bare = command(PROTO_MENDER_CLIENT, "check-update", None);
        let value = rmpv::decode::read_value(&mut &bare[..]).unwrap();
        assert!(value["hdr"]["props"].is_nil() && value["body"].is_nil());
        assert!(value["hdr"]["sid"].is_nil());
    }
}
