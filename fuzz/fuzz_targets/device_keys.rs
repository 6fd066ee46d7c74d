//! Fuzz target `device_keys`: `device_keys` parsing on raw input, without the JSON wrapping
//! of `auth_request` (faster to reach the PEM, DER and identity code).
//!
//! Input: one mode byte, then data. Mode 0: a PEM public key (then, when it parses, a
//! signature check with a signature from the key's own bytes). Mode 1: identity data text.
//! Mode 2: `PEM` `\0` `base64 signature` `\0` `message`. Checks: no panic; canonical forms
//! are fixed points.

#![no_main]

use device_keys::{identity_from_json_text, PublicKey};
use libfuzzer_sys::fuzz_target;

fn check_key(pem: &str) -> Option<PublicKey> {
    let key = PublicKey::from_pem(pem).ok()?;
    let again = PublicKey::from_pem(key.canonical_pem()).expect("canonical key parses");
    assert_eq!(again.canonical_pem(), key.canonical_pem());
    assert_eq!(again.kind(), key.kind());
    Some(key)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => {
            if let Some(key) = check_key(&text) {
                let _ = key.verify(rest, "AAAA");
            }
        }
        1 => {
            if let Ok(identity) = identity_from_json_text(&text) {
                let again =
                    identity_from_json_text(&identity.canonical).expect("canonical identity");
                assert_eq!(again.canonical, identity.canonical);
                assert_eq!(again.hash, identity.hash);
            }
        }
        _ => {
            let mut parts = rest.splitn(3, |&b| b == 0);
            let pem = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let sig = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let message = parts.next().unwrap_or_default();
            if let Some(key) = check_key(&pem) {
                let _ = key.verify(message, &sig);
            }
        }
    }
});
