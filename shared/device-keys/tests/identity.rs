//! Identity canonicalisation matches what Go's encoding/json produces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use device_keys::{identity_from_json_text, identity_from_value, IdentityError};
use serde_json::json;

fn canonical(text: &str) -> String {
    identity_from_json_text(text).unwrap().canonical
}

#[test]
fn key_order_and_whitespace_do_not_matter() {
    let a = identity_from_json_text(r#"{"mac":"02:00","sn":"1"}"#).unwrap();
    let b = identity_from_json_text(r#"{ "sn": "1", "mac": "02:00" }"#).unwrap();
    assert_eq!(a.canonical, r#"{"mac":"02:00","sn":"1"}"#);
    assert_eq!(a.canonical, b.canonical);
    assert_eq!(a.hash, b.hash);
    // printf '%s' '{"mac":"02:00","sn":"1"}' | sha256sum
    assert_eq!(
        a.hash,
        "dbfd3ea7cd5102227280a98a5e020c2c0b8f72dc0b3dc55b9f2ecb059f37b5e3"
    );
    assert_eq!(a.data.get("sn"), Some(&json!("1")));
    assert_eq!(a.data.len(), 2);
}

#[test]
fn nested_objects_are_sorted() {
    assert_eq!(
        canonical(r#"{"z":{"b":1,"a":{"d":[{"y":1,"x":2}],"c":null}},"a":true,"B":false}"#),
        r#"{"B":false,"a":true,"z":{"a":{"c":null,"d":[{"x":2,"y":1}]},"b":1}}"#
    );
}

#[test]
fn keys_sort_by_bytes() {
    assert_eq!(
        canonical(r#"{"é":1,"z":2,"Z":3,"_":4,"aa":5,"a":6}"#),
        r#"{"Z":3,"_":4,"a":6,"aa":5,"z":2,"é":1}"#
    );
}

#[test]
fn strings_are_escaped_like_go() {
    assert_eq!(
        canonical(r#"{"k<>&":"<b>&amp;\u2028\u2029 \"q\" \\ \/ \n\r\t\u0001 é €"}"#),
        r#"{"k\u003c\u003e\u0026":"\u003cb\u003e\u0026amp;\u2028\u2029 \"q\" \\ / \n\r\t\u0001 é €"}"#
    );
}

#[test]
fn numbers_are_float64_like_go() {
    let cases = [
        ("1", "1"),
        ("1.0", "1"),
        ("-1.50", "-1.5"),
        ("1e2", "100"),
        ("1e21", "1e+21"),
        ("1e20", "100000000000000000000"),
        ("1e-7", "1e-7"),
        ("0.000001", "0.000001"),
        ("0.0000001234", "1.234e-7"),
        ("-0", "-0"),
        ("123456789012345678901234", "1.2345678901234569e+23"),
        ("12345678901234567890", "12345678901234567000"),
        ("-9223372036854775808", "-9223372036854776000"),
        ("9007199254740993", "9007199254740992"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            canonical(&format!(r#"{{"n":{input}}}"#)),
            format!(r#"{{"n":{expected}}}"#),
            "{input}"
        );
    }
}

#[test]
fn arrays_keep_order() {
    assert_eq!(
        canonical(r#"{"mac":["02:00:00:00:00:02", "02:00:00:00:00:01"],"e":[]}"#),
        r#"{"e":[],"mac":["02:00:00:00:00:02","02:00:00:00:00:01"]}"#
    );
}

#[test]
fn duplicate_keys_last_wins() {
    assert_eq!(canonical(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
}

#[test]
fn empty_object_is_an_identity() {
    assert_eq!(canonical(" {} \n"), "{}");
}

#[test]
fn non_objects_are_refused() {
    for text in ["[]", "[{\"a\":1}]", "\"mac\"", "1", "null", "true"] {
        assert_eq!(
            identity_from_json_text(text),
            Err(IdentityError::NotAnObject),
            "{text}"
        );
    }
    assert_eq!(
        identity_from_value(&json!(["a"])),
        Err(IdentityError::NotAnObject)
    );
}

#[test]
fn invalid_json_is_refused() {
    for text in [
        "",
        "{",
        "{\"a\":}",
        "{'a':1}",
        "{\"a\":1} x",
        "{\"a\":1e400}",
    ] {
        assert_eq!(
            identity_from_json_text(text),
            Err(IdentityError::InvalidJson),
            "{text}"
        );
    }
}

#[test]
fn value_and_text_agree() {
    let value = json!({"sn": "1", "mac": "02:00", "n": 12345678901234567890u64, "x": {"b": 1.0, "a": [1, "<"]}});
    let from_value = identity_from_value(&value).unwrap();
    let from_text = identity_from_json_text(&value.to_string()).unwrap();
    assert_eq!(from_value, from_text);
    assert_eq!(
        from_value.canonical,
        r#"{"mac":"02:00","n":12345678901234567000,"sn":"1","x":{"a":[1,"\u003c"],"b":1}}"#
    );
}
