//! Base64 and PEM armour, decoded as leniently as Go's `encoding/pem` and
//! `base64.StdEncoding` (any line length, CRLF, text around the block) and
//! encoded canonically (64-character lines, trailing newline).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// Standard alphabet, padding required; like Go's `StdEncoding` it accepts
/// non-zero bits in the last character.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Decodes padded standard base64, ignoring CR and LF as Go does.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    BASE64.decode(cleaned).ok()
}

/// Returns the payload of the first PEM block in `text` if its type is
/// exactly `label`. Whitespace inside the base64 body is ignored.
pub(crate) fn decode_pem(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut lines = text.lines().map(str::trim);
    // As in Go's pem.Decode, the first block found is the one we get.
    if lines.find(|line| line.starts_with("-----BEGIN "))? != begin {
        return None;
    }
    let mut body = String::new();
    for line in lines {
        if line == end {
            return BASE64.decode(body).ok();
        }
        body.extend(line.chars().filter(|c| !c.is_ascii_whitespace()));
    }
    None
}

/// Encodes `der` as a PEM block: base64 in 64-character lines, every line
/// (including the END line) terminated by "\n".
pub(crate) fn encode_pem(der: &[u8], label: &str) -> String {
    let b64 = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for start in (0..b64.len()).step_by(64) {
        out.push_str(&b64[start..b64.len().min(start + 64)]);
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
