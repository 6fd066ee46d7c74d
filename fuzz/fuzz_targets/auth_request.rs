//! Fuzz target `auth_request`: the body of `POST /api/devices/v1/authentication/auth_requests`
//! through the same parsing and validation `deviceauth::Deviceauth::auth_request` applies
//! before any AWS call: `mender_http::json::from_go_json::<deviceauth::service::AuthRequest>`, the
//! public key (`device_keys::PublicKey::from_pem`), the identity
//! (`device_keys::identity_from_json_text`) and the signature check over the body.
//!
//! Checks: no panic; canonical forms are fixed points (a canonical key or identity parses
//! back to itself, with the same identity hash).

#![no_main]

use device_keys::{identity_from_json_text, PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = mender_http::json::from_go_json::<deviceauth::service::AuthRequest>(data)
    else {
        return;
    };
    if let Ok(key) = PublicKey::from_pem(&request.pubkey) {
        let again = PublicKey::from_pem(key.canonical_pem()).expect("canonical key parses");
        assert_eq!(again.canonical_pem(), key.canonical_pem());
        assert_eq!(again.kind(), key.kind());
        // The signature header is attacker-chosen too; the tenant token stands in for it.
        let _ = key.verify(data, &request.tenant_token);
    }
    if let Ok(identity) = identity_from_json_text(&request.id_data) {
        let again = identity_from_json_text(&identity.canonical).expect("canonical identity");
        assert_eq!(again.canonical, identity.canonical);
        assert_eq!(again.hash, identity.hash);
    }
});
