//! End-to-end tests of `mender-tokens` against openssl-generated key fixtures:
//! round trips, algorithm pinning (alg confusion attacks), expiry and key detection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::signature::{Ed25519KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mender_tokens::{Algorithm, DeviceClaims, Keys, TokenError, UserClaims};
use serde_json::{json, Value};

const RSA_PKCS1: &str = include_str!("fixtures/rsa_pkcs1.pem");
const RSA_PKCS1_AS_PKCS8: &str = include_str!("fixtures/rsa_pkcs1_as_pkcs8.pem");
const RSA_PKCS8: &str = include_str!("fixtures/rsa_pkcs8.pem");
const RSA_OTHER: &str = include_str!("fixtures/rsa_other.pem");
const ED25519: &str = include_str!("fixtures/ed25519.pem");
const EC_SEC1: &str = include_str!("fixtures/ec_p256_sec1.pem");
const EC_PKCS8: &str = include_str!("fixtures/ec_p256_pkcs8.pem");
/// Signed with `openssl dgst -sha256 -sign rsa_pkcs1.pem`, header `{"alg":"RS256","kid":0,"typ":"JWT"}`.
const OPENSSL_RS256_KID0: &str = include_str!("fixtures/openssl_rs256_kid0_device.jwt");
/// Signed with `openssl pkeyutl -sign -inkey ed25519.pem -rawin`, header with `"kid":0`, no `exp`.
const OPENSSL_EDDSA_KID0: &str = include_str!("fixtures/openssl_eddsa_kid0_user.jwt");

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn keys(pem: &str) -> Keys {
    Keys::from_pem(pem).unwrap()
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Builds `header.payload` from JSON values.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    )
}

/// Signs arbitrary header/claims with a PEM RSA key, bypassing the crate.
fn sign_rs256_raw(pem_text: &str, header: &Value, claims: &Value) -> String {
    let block = pem::parse(pem_text).unwrap();
    let pair = match block.tag() {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()).unwrap(),
        _ => RsaKeyPair::from_pkcs8(block.contents()).unwrap(),
    };
    let message = unsigned(header, claims);
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut sig)
        .unwrap();
    format!("{message}.{}", b64(&sig))
}

fn sign_eddsa_raw(pem_text: &str, header: &Value, claims: &Value) -> String {
    let block = pem::parse(pem_text).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(block.contents()).unwrap();
    let message = unsigned(header, claims);
    let sig = pair.sign(message.as_bytes());
    format!("{message}.{}", b64(sig.as_ref()))
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, TokenError>) {
    assert_invalid_with(result, "");
}

fn assert_invalid_with<T: std::fmt::Debug>(result: Result<T, TokenError>, reason: &str) {
    match result {
        Err(TokenError::Invalid(msg)) if msg.contains(reason) => {}
        other => panic!("expected TokenError::Invalid containing {reason:?}, got {other:?}"),
    }
}

fn round_trip(pem: &str, expected: Algorithm) {
    let keys = keys(pem);
    assert_eq!(keys.algorithm(), expected);

    let device = DeviceClaims::new("jti-1", "device-1", "tenant-1", now(), 3600);
    let token = keys.issue(&device).unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": expected.as_str(), "typ": "JWT"}));
    assert_eq!(keys.verify::<DeviceClaims>(&token).unwrap(), device);
    // A device token is not a user token.
    assert_invalid(keys.verify::<UserClaims>(&token));

    let user = UserClaims::new("jti-2", "user-1", "", now(), Some(3600));
    let token = keys.issue(&user).unwrap();
    assert_eq!(keys.verify::<UserClaims>(&token).unwrap(), user);
    assert_invalid(keys.verify::<DeviceClaims>(&token));

    let forever = UserClaims::new("jti-3", "user-1", "t", now() - 10 * 365 * 86400, None);
    let token = keys.issue(&forever).unwrap();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(payload.get("exp").is_none());
    assert_eq!(keys.verify::<UserClaims>(&token).unwrap(), forever);

    // Clones share the key.
    assert_eq!(keys.clone().verify::<UserClaims>(&token).unwrap(), forever);
}

#[test]
fn round_trip_rsa_pkcs1() {
    round_trip(RSA_PKCS1, Algorithm::Rs256);
}

#[test]
fn round_trip_rsa_pkcs8() {
    round_trip(RSA_PKCS8, Algorithm::Rs256);
}

#[test]
fn round_trip_ed25519() {
    round_trip(ED25519, Algorithm::EdDsa);
}

#[test]
fn generated_rsa_key_round_trips() {
    let pem = Keys::generate_rsa_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    round_trip(&pem, Algorithm::Rs256);
}

#[test]
fn pkcs1_and_pkcs8_forms_of_one_key_agree() {
    let pkcs1 = keys(RSA_PKCS1);
    let pkcs8 = keys(RSA_PKCS1_AS_PKCS8);
    assert_eq!(
        pkcs1.public_key_pem().unwrap(),
        pkcs8.public_key_pem().unwrap()
    );
    let claims = DeviceClaims::new("j", "d", "", now(), 60);
    let token = pkcs1.issue(&claims).unwrap();
    assert_eq!(pkcs8.verify::<DeviceClaims>(&token).unwrap(), claims);
    let token = pkcs8.issue(&claims).unwrap();
    assert_eq!(pkcs1.verify::<DeviceClaims>(&token).unwrap(), claims);
}

#[test]
fn public_key_pem_is_spki() {
    let public = keys(RSA_PKCS1).public_key_pem().unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(pem::parse(&public).unwrap().tag(), "PUBLIC KEY");
    // Same bytes as `openssl pkey -pubout`.
    assert_eq!(public, include_str!("fixtures/rsa_pkcs1.pub.pem"));
    let ed_public = keys(ED25519).public_key_pem().unwrap();
    assert_eq!(ed_public, include_str!("fixtures/ed25519.pub.pem"));
}

#[test]
fn openssl_signed_tokens_with_integer_kid_verify() {
    let rsa = keys(RSA_PKCS1);
    let claims: DeviceClaims = rsa.verify(OPENSSL_RS256_KID0.trim()).unwrap();
    assert_eq!(claims.sub, "device-1");
    assert_eq!(claims.tenant, "tenant-1");
    assert!(claims.device);
    assert_eq!(claims.addons.len(), 3);

    let ed = keys(ED25519);
    let claims: UserClaims = ed.verify(OPENSSL_EDDSA_KID0.trim()).unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.exp, None);
    assert_eq!(claims.tenant, "");
}

#[test]
fn integer_kid_accepted_for_crate_keys() {
    let claims = serde_json::to_value(DeviceClaims::new("j", "d", "", now(), 60)).unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": 0});
    let token = sign_rs256_raw(RSA_PKCS8, &header, &claims);
    keys(RSA_PKCS8).verify::<DeviceClaims>(&token).unwrap();

    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": 0});
    let token = sign_eddsa_raw(ED25519, &header, &claims);
    keys(ED25519).verify::<DeviceClaims>(&token).unwrap();
}

#[test]
fn tampered_payload_fails() {
    for pem in [RSA_PKCS1, ED25519] {
        let keys = keys(pem);
        let token = keys
            .issue(&DeviceClaims::new("j", "device-1", "", now(), 3600))
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload = parts[1].as_bytes().to_vec();
        // Change one character in the middle of the payload segment.
        let i = payload.len() / 2;
        payload[i] = if payload[i] == b'A' { b'B' } else { b'A' };
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            String::from_utf8(payload).unwrap(),
            parts[2]
        );
        assert_invalid_with(keys.verify::<DeviceClaims>(&tampered), "bad signature");
        assert_invalid_with(keys.verify::<Value>(&tampered), "bad signature");
    }
}

#[test]
fn alg_none_fails() {
    let claims = serde_json::to_value(DeviceClaims::new("j", "d", "", now(), 60)).unwrap();
    let token = format!(
        "{}.",
        unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims)
    );
    for pem in [RSA_PKCS1, ED25519] {
        assert_invalid_with(
            keys(pem).verify::<DeviceClaims>(&token),
            "`none` not accepted",
        );
    }
}

#[test]
fn hs256_with_public_key_as_secret_fails() {
    for pem in [RSA_PKCS1, ED25519] {
        let keys = keys(pem);
        let public = keys.public_key_pem().unwrap();
        let claims = serde_json::to_value(DeviceClaims::new("j", "d", "", now(), 60)).unwrap();
        let message = unsigned(&json!({"alg": "HS256", "typ": "JWT"}), &claims);
        let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&hmac_key, message.as_bytes());
        let token = format!("{message}.{}", b64(tag.as_ref()));
        assert_invalid_with(keys.verify::<DeviceClaims>(&token), "`HS256` not accepted");
    }
}

#[test]
fn token_signed_by_other_rsa_key_fails() {
    let token = keys(RSA_OTHER)
        .issue(&DeviceClaims::new("j", "d", "", now(), 60))
        .unwrap();
    assert_invalid_with(
        keys(RSA_PKCS1).verify::<DeviceClaims>(&token),
        "bad signature",
    );
    assert_invalid_with(
        keys(RSA_PKCS8).verify::<DeviceClaims>(&token),
        "bad signature",
    );
}

#[test]
fn expired_token_fails_with_expired() {
    let keys = keys(RSA_PKCS1);
    let token = keys
        .issue(&DeviceClaims::new("j", "d", "", now() - 7200, 3600))
        .unwrap();
    assert!(matches!(
        keys.verify::<DeviceClaims>(&token),
        Err(TokenError::Expired)
    ));
    let token = keys
        .issue(&UserClaims::new("j", "u", "", now() - 7200, Some(3600)))
        .unwrap();
    assert!(matches!(
        keys.verify::<UserClaims>(&token),
        Err(TokenError::Expired)
    ));
}

#[test]
fn expiry_has_no_leeway() {
    let keys = keys(ED25519);
    let token = keys
        .issue(&DeviceClaims::new("j", "d", "", 1000, 100))
        .unwrap();
    keys.verify_at::<DeviceClaims>(&token, 1100).unwrap();
    assert!(matches!(
        keys.verify_at::<DeviceClaims>(&token, 1101),
        Err(TokenError::Expired)
    ));
}

#[test]
fn nbf_is_not_checked() {
    let keys = keys(ED25519);
    let token = keys
        .issue(&UserClaims::new("j", "u", "", now() + 3600, Some(7200)))
        .unwrap();
    keys.verify::<UserClaims>(&token).unwrap();
}

#[test]
fn malformed_exp_fails() {
    let claims = json!({"jti": "j", "exp": "tomorrow"});
    let token = sign_eddsa_raw(ED25519, &json!({"alg": "EdDSA"}), &claims);
    assert_invalid_with(
        keys(ED25519).verify::<Value>(&token),
        "`exp` is not a number",
    );
}

#[test]
fn rs256_token_to_eddsa_key_fails() {
    let token = keys(RSA_PKCS1)
        .issue(&DeviceClaims::new("j", "d", "", now(), 60))
        .unwrap();
    assert_invalid_with(
        keys(ED25519).verify::<DeviceClaims>(&token),
        "`RS256` not accepted",
    );
    let token = keys(ED25519)
        .issue(&DeviceClaims::new("j", "d", "", now(), 60))
        .unwrap();
    assert_invalid_with(
        keys(RSA_PKCS1).verify::<DeviceClaims>(&token),
        "`EdDSA` not accepted",
    );
}

#[test]
fn other_rsa_algorithms_fail() {
    // Correctly signed RS256 bytes, but the header claims RS512 / PS256.
    let claims = serde_json::to_value(DeviceClaims::new("j", "d", "", now(), 60)).unwrap();
    for alg in ["RS512", "PS256", "rs256"] {
        let token = sign_rs256_raw(RSA_PKCS1, &json!({"alg": alg}), &claims);
        assert_invalid(keys(RSA_PKCS1).verify::<DeviceClaims>(&token));
    }
}

#[test]
fn garbage_tokens_fail() {
    let keys = keys(RSA_PKCS1);
    let good = keys
        .issue(&DeviceClaims::new("j", "d", "", now(), 60))
        .unwrap();
    for token in [
        String::new(),
        "a.b".to_string(),
        "a.b.c".to_string(),
        format!("{good}.extra"),
        format!("{good}x"),
        good.replacen('.', "..", 1),
    ] {
        assert_invalid(keys.verify::<DeviceClaims>(&token));
    }
}

#[test]
fn ecdsa_keys_are_rejected() {
    for pem in [EC_SEC1, EC_PKCS8] {
        match Keys::from_pem(pem) {
            Err(TokenError::Key(msg)) => assert!(msg.contains("ECDSA"), "{msg}"),
            other => panic!("expected TokenError::Key, got {other:?}"),
        }
    }
}

#[test]
fn non_keys_are_rejected() {
    let public = keys(RSA_PKCS1).public_key_pem().unwrap();
    for pem in ["", "not a pem", public.as_str()] {
        assert!(matches!(Keys::from_pem(pem), Err(TokenError::Key(_))));
    }
}

const ED25519_PUBLIC: &str = include_str!("fixtures/ed25519.pub.pem");
const RSA_PKCS1_PUBLIC: &str = include_str!("fixtures/rsa_pkcs1.pub.pem");

/// A verifier holds the public key only: it accepts the signer's tokens, refuses forged
/// ones, and cannot sign.
#[test]
fn public_key_alone_verifies_but_cannot_sign() {
    for (private, public, algorithm) in [
        (RSA_PKCS1, RSA_PKCS1_PUBLIC, Algorithm::Rs256),
        (ED25519, ED25519_PUBLIC, Algorithm::EdDsa),
    ] {
        let signer = keys(private);
        let verifier = Keys::from_public_pem(public).unwrap();
        assert_eq!(verifier.algorithm(), algorithm);
        assert!(signer.can_sign());
        assert!(!verifier.can_sign());
        assert_eq!(
            verifier.public_key_pem().unwrap(),
            signer.public_key_pem().unwrap()
        );
        let claims = DeviceClaims::new("jti", "device", "", now(), 3600);
        let token = signer.issue(&claims).unwrap();
        let got: DeviceClaims = verifier.verify(&token).unwrap();
        assert_eq!(got.sub, "device");
        assert!(matches!(verifier.issue(&claims), Err(TokenError::Key(_))));
        let forged = keys(RSA_OTHER).issue(&claims).unwrap();
        assert_invalid(verifier.verify::<DeviceClaims>(&forged));
        // `Debug` says whether the key signs, never what it is
        assert!(format!("{verifier:?}").contains("can_sign: false"));
    }
}

#[test]
fn public_key_pem_of_a_key_loads_as_a_verifier() {
    let signer = Keys::from_pem(&Keys::generate_rsa_pem().unwrap()).unwrap();
    let verifier = Keys::from_public_pem(&signer.public_key_pem().unwrap()).unwrap();
    let claims = UserClaims::new("jti", "user", "", now(), Some(60));
    let got: UserClaims = verifier.verify(&signer.issue(&claims).unwrap()).unwrap();
    assert_eq!(got.sub, "user");
}

#[test]
fn non_public_keys_are_rejected_as_public_keys() {
    // `openssl pkey -in ec_p256_pkcs8.pem -pubout`
    let ec_public = "-----BEGIN PUBLIC KEY-----\n\
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+6EQIcMzd6vYHsSczs+UmcYodoMo\n\
        dqKTX5XKDjQZFm0FXYBRiHpUGi5BAQy01Cden/rfmVVc5Tb9rPgzGwBFMg==\n\
        -----END PUBLIC KEY-----\n";
    match Keys::from_public_pem(ec_public) {
        Err(TokenError::Key(msg)) => assert!(msg.contains("ECDSA"), "{msg}"),
        other => panic!("expected TokenError::Key, got {other:?}"),
    }
    for pem in ["", "not a pem", RSA_PKCS1, ED25519, ec_public] {
        assert!(
            matches!(Keys::from_public_pem(pem), Err(TokenError::Key(_))),
            "{pem}"
        );
    }
}

/// What a function's configuration gives: the private key (signers), the public key
/// (verifiers), or both, which must then be one key.
#[test]
fn from_pems_takes_the_private_key_or_the_public_key() {
    assert!(Keys::from_pems(RSA_PKCS1, "").unwrap().can_sign());
    assert!(Keys::from_pems(RSA_PKCS1, RSA_PKCS1_PUBLIC)
        .unwrap()
        .can_sign());
    assert!(!Keys::from_pems("", ED25519_PUBLIC).unwrap().can_sign());
    assert!(!Keys::from_pems("  \n", ED25519_PUBLIC).unwrap().can_sign());
    assert!(matches!(
        Keys::from_pems(RSA_OTHER, RSA_PKCS1_PUBLIC),
        Err(TokenError::Key(_))
    ));
    assert!(matches!(Keys::from_pems("", ""), Err(TokenError::Key(_))));
}

/// Link secrets: one per private key (every process holding it agrees), never derivable from
/// the public key (a verifier gets a random one).
#[test]
fn link_secret_follows_the_private_key_only() {
    let a = keys(RSA_PKCS1).link_secret().to_vec();
    assert_eq!(a, keys(RSA_PKCS1).link_secret());
    assert_eq!(a, keys(RSA_PKCS1_AS_PKCS8).link_secret());
    assert_ne!(a, keys(RSA_OTHER).link_secret());
    assert_ne!(a, keys(ED25519).link_secret());
    let v1 = Keys::from_public_pem(RSA_PKCS1_PUBLIC).unwrap();
    let v2 = Keys::from_public_pem(RSA_PKCS1_PUBLIC).unwrap();
    assert_ne!(v1.link_secret(), a.as_slice());
    assert_ne!(v1.link_secret(), v2.link_secret());
}
