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

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity data is not valid JSON")]
    InvalidJson,
    #[error("identity data is not a JSON object")]
    NotAnObject,
}

/// Canonicalise identity data given as JSON text, which must hold an object.
pub fn identity_from_json_text(id_data: &str) -> Result<Identity, IdentityError> {
    let value: Value = serde_json::from_str(id_data).map_err(|_| IdentityError::InvalidJson)?;
    identity_from_value(&value)
}

/// Canonicalise identity data that arrived already parsed (preauthorization).
pub fn identity_from_value(v: &Value) -> Result<Identity, IdentityError> {
    let Value::Object(data) = v else {
        return Err(IdentityError::NotAnObject);
    };
    let mut canonical = String::new();
    write_value(&mut canonical, v)?;
    let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
    Ok(Identity {
        canonical,
        hash,
        data: data.clone(),
    })
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
