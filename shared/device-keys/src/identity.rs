//! Device identity canonicalisation, byte-compatible with Mender's Go
//! deviceauth (`json.Unmarshal` into `map[string]interface{}`, then
//! `json.Marshal`), so that identical identities hash identically.

use serde_json::{Map, Number, Value};
use sha2::{Digest as _, Sha256};

/// A device identity in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Go-style JSON: keys sorted by bytes, no whitespace, numbers as float64.
    pub canonical: String,
    /// Lowercase hex SHA-256 of `canonical`.
    pub hash: String,
    /// The identity attributes as parsed (numbers not converted).
    pub data: Map<String, Value>,
}

/// Most attributes an identity may have (upstream has no limit; Mender clients send one to a
/// handful: `mac`, `serial`, ...). Bounds the device item and every auth set in its listing.
pub const MAX_IDENTITY_ATTRIBUTES: usize = 32;
/// Longest attribute name, in bytes of UTF-8.
pub const MAX_IDENTITY_NAME_BYTES: usize = 256;
/// Largest attribute value, in bytes of its canonical JSON (quotes and escapes included).
pub const MAX_IDENTITY_VALUE_BYTES: usize = 1024;
/// Largest identity, in bytes of its canonical JSON (what the device item stores and
/// inventory receives as the identity scope).
pub const MAX_IDENTITY_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity data is not valid JSON")]
    InvalidJson,
    #[error("identity data is not a JSON object")]
    NotAnObject,
    #[error("identity data has more than {} attributes", MAX_IDENTITY_ATTRIBUTES)]
    TooManyAttributes,
    #[error(
        "identity data has an attribute name longer than {} bytes",
        MAX_IDENTITY_NAME_BYTES
    )]
    NameTooLong,
    #[error(
        "identity data has an attribute value larger than {} bytes",
        MAX_IDENTITY_VALUE_BYTES
    )]
    ValueTooLarge,
    #[error("identity data is larger than {} bytes", MAX_IDENTITY_BYTES)]
    TooLarge,
}

/// Canonicalise identity data given as JSON text, which must hold an object.
pub fn identity_from_json_text(id_data: &str) -> Result<Identity, IdentityError> {
    let value: Value = serde_json::from_str(id_data).map_err(|_| IdentityError::InvalidJson)?;
    identity_from_value(&value)
}

/// Canonicalise identity data that arrived already parsed (preauthorization). Enforces the
/// `MAX_IDENTITY_*` limits.
pub fn identity_from_value(v: &Value) -> Result<Identity, IdentityError> {
    let Value::Object(data) = v else {
        return Err(IdentityError::NotAnObject);
    };
    check_limits(data)?;
    let mut canonical = String::new();
    write_value(&mut canonical, v)?;
    if canonical.len() > MAX_IDENTITY_BYTES {
        return Err(IdentityError::TooLarge);
    }
    let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
    Ok(Identity {
        canonical,
        hash,
        data: data.clone(),
    })
}

/// The per-attribute limits: count, name length, and each value's canonical size. Cheap checks
/// first, so an oversized identity is refused before anything large is written.
pub fn check_limits(data: &Map<String, Value>) -> Result<(), IdentityError> {
    if data.len() > MAX_IDENTITY_ATTRIBUTES {
        return Err(IdentityError::TooManyAttributes);
    }
    if data.keys().any(|name| name.len() > MAX_IDENTITY_NAME_BYTES) {
        return Err(IdentityError::NameTooLong);
    }
    for value in data.values() {
        // A string's canonical form is at least as long as its bytes plus the quotes.
        if matches!(value, Value::String(s) if s.len() + 2 > MAX_IDENTITY_VALUE_BYTES) {
            return Err(IdentityError::ValueTooLarge);
        }
        let mut out = String::new();
        write_value(&mut out, value)?;
        if out.len() > MAX_IDENTITY_VALUE_BYTES {
            return Err(IdentityError::ValueTooLarge);
        }
    }
    Ok(())
}

fn write_value(out: &mut String, value: &Value) -> Result<(), IdentityError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&format_number(n)?),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted explicitly so the result does not depend on serde_json's
            // `preserve_order` feature; `str` ordering is byte ordering, as in Go.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Go decodes every JSON number into a float64, so integers beyond 2^53
/// lose precision exactly as they do there.
fn format_number(n: &Number) -> Result<String, IdentityError> {
    match n.as_f64() {
        Some(f) if f.is_finite() => Ok(format_go_float(f)),
        _ => Err(IdentityError::InvalidJson),
    }
}

/// Formats like Go's encoding/json floatEncoder: shortest round-trip digits,
/// plain decimal for 1e-6 <= |x| < 1e21 (and 0), otherwise exponent form
/// with a signed exponent without leading zeroes ("1e+21", "1e-7").
fn format_go_float(f: f64) -> String {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        // Rust's Display is shortest round-trip, never uses an exponent, and
        // prints integral values without ".0" (and -0 as "-0", as Go does).
        return f.to_string();
    }
    // Rust's LowerExp gives the same shortest digits, e.g. "1.5e21", "1e-7".
    let exp_form = format!("{f:e}");
    match exp_form.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => exp_form,
    }
}

/// Escapes like Go's encoding/json with HTML escaping on (Go >= 1.22, which
/// also uses the short `\b` and `\f` escapes).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_like_go() {
        let cases = [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-12.5, "-12.5"),
            (0.1, "0.1"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (1e-10, "1e-10"),
            (5e-324, "5e-324"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (-1e21, "-1e+21"),
            (123456789012345678901234.0, "1.2345678901234569e+23"),
            (12345678901234567890.0, "12345678901234567000"),
            (f64::MAX, "1.7976931348623157e+308"),
            (9007199254740993.0, "9007199254740992"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_go_float(value), expected, "{value:?}");
        }
    }

    #[test]
    fn identity_limits() {
        let within = serde_json::json!({
            "mac": "02:00:00:00:00:01",
            "n": "x".repeat(MAX_IDENTITY_NAME_BYTES),
            "v": "y".repeat(MAX_IDENTITY_VALUE_BYTES - 2),
        });
        assert!(identity_from_value(&within).is_ok());

        let mut many = Map::new();
        for i in 0..MAX_IDENTITY_ATTRIBUTES {
            many.insert(format!("a{i}"), Value::String("v".into()));
        }
        assert!(identity_from_value(&Value::Object(many.clone())).is_ok());
        many.insert("one-more".into(), Value::String("v".into()));
        assert_eq!(
            identity_from_value(&Value::Object(many)),
            Err(IdentityError::TooManyAttributes)
        );

        let long_name = serde_json::json!({ "x".repeat(MAX_IDENTITY_NAME_BYTES + 1): "v" });
        assert_eq!(
            identity_from_value(&long_name),
            Err(IdentityError::NameTooLong)
        );

        let big_value = serde_json::json!({ "mac": "y".repeat(MAX_IDENTITY_VALUE_BYTES - 1) });
        assert_eq!(
            identity_from_value(&big_value),
            Err(IdentityError::ValueTooLarge)
        );
        // Escapes count: 200 '<' are 1200 canonical bytes.
        let escaped = serde_json::json!({ "mac": "<".repeat(200) });
        assert_eq!(
            identity_from_value(&escaped),
            Err(IdentityError::ValueTooLarge)
        );
        // Nested values are measured as a whole.
        let nested = serde_json::json!({ "list": vec!["abcdefgh"; 200] });
        assert_eq!(
            identity_from_value(&nested),
            Err(IdentityError::ValueTooLarge)
        );

        // Each value within its limit, the whole over its own.
        let mut wide = Map::new();
        for i in 0..8 {
            wide.insert(format!("a{i}"), Value::String("z".repeat(600)));
        }
        assert_eq!(
            identity_from_value(&Value::Object(wide)),
            Err(IdentityError::TooLarge)
        );

        let text = format!("{{\"mac\":\"{}\"}}", "m".repeat(1_000_000));
        assert_eq!(
            identity_from_json_text(&text),
            Err(IdentityError::ValueTooLarge)
        );
    }

    #[test]
    fn strings_escape_like_go() {
        let mut out = String::new();
        write_string(
            &mut out,
            "a\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}<>&\u{2028}\u{2029}é€😀",
        );
        assert_eq!(
            out,
            "\"a\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\u{7f}\\u003c\\u003e\\u0026\\u2028\\u2029é€😀\""
        );
    }
}
