//! Key parsing and signature verification against real keys and signatures
//! made with the openssl CLI (see `fixtures/generate.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use device_keys::{identity_from_json_text, KeyError, KeyKind, PublicKey};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Keys that signed `message.txt`, with the kind they must parse as.
const SIGNERS: [(&str, KeyKind); 8] = [
    ("rsa1024", KeyKind::Rsa { bits: 1024 }),
    ("rsa3072", KeyKind::Rsa { bits: 3072 }),
    ("rsa8192", KeyKind::Rsa { bits: 8192 }),
    ("p224", KeyKind::EcdsaP224),
    ("p256", KeyKind::EcdsaP256),
    ("p384", KeyKind::EcdsaP384),
    ("p521", KeyKind::EcdsaP521),
    ("ed25519", KeyKind::Ed25519),
];

fn key(name: &str) -> PublicKey {
    PublicKey::from_pem(&fixture(&format!("{name}.pub.pem"))).unwrap()
}

fn signature(name: &str) -> String {
    fixture(&format!("{name}.sig.b64"))
}

#[test]
fn parses_every_supported_kind() {
    for (name, kind) in SIGNERS {
        assert_eq!(key(name).kind(), &kind, "{name}");
    }
}

#[test]
fn signature_verifies_over_exact_message() {
    let message = fixture("message.txt");
    assert!(message.ends_with("}\n"));
    for (name, _) in SIGNERS {
        key(name)
            .verify(message.as_bytes(), &signature(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn signature_fails_over_changed_message() {
    let message = fixture("message.txt");
    let variants = [
        message.replace("00:01", "00:02").into_bytes(),
        message.trim_end().as_bytes().to_vec(),
        format!("{message}\n").into_bytes(),
    ];
    for (name, _) in SIGNERS {
        let key = key(name);
        for changed in &variants {
            assert_eq!(
                key.verify(changed, &signature(name)),
                Err(KeyError::BadSignature),
                "{name}"
            );
        }
    }
}

#[test]
fn signature_of_another_key_fails() {
    let message = fixture("message.txt");
    for (name, _) in SIGNERS {
        let key = key(name);
        for (other, _) in SIGNERS.iter().filter(|(other, _)| *other != name) {
            assert_eq!(
                key.verify(message.as_bytes(), &signature(other)),
                Err(KeyError::BadSignature),
                "{name} with signature of {other}"
            );
        }
    }
}

#[test]
fn malformed_signature_fails() {
    let message = fixture("message.txt");
    let key = key("ed25519");
    let good = signature("ed25519");
    assert!(good.ends_with("=="));
    key.verify(message.as_bytes(), &good).unwrap();
    for bad in [
        "",
        "not base64!",
        "AAAA",
        good.trim_end_matches('='),
        &good[4..],
    ] {
        assert_eq!(
            key.verify(message.as_bytes(), bad),
            Err(KeyError::BadSignature),
            "{bad:?}"
        );
    }
}

#[test]
fn real_auth_request_verifies_over_raw_body() {
    let body = fixture("auth_request.json");
    let request: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pem = request["pubkey"].as_str().unwrap();
    let key = PublicKey::from_pem(pem).unwrap();
    assert_eq!(key.kind(), &KeyKind::Rsa { bits: 3072 });
    assert_eq!(key.canonical_pem(), fixture("rsa3072.pub.pem"));

    let sig = fixture("auth_request.sig.b64");
    key.verify(body.as_bytes(), &sig).unwrap();
    assert_eq!(
        key.verify(body.trim_end().as_bytes(), &sig),
        Err(KeyError::BadSignature)
    );

    let identity = identity_from_json_text(request["id_data"].as_str().unwrap()).unwrap();
    assert_eq!(identity.canonical, r#"{"mac":"02:00:00:00:00:11"}"#);
}

#[test]
fn unsupported_algorithms() {
    for name in ["dsa", "x25519", "secp256k1", "rsa512"] {
        assert_eq!(
            PublicKey::from_pem(&fixture(&format!("{name}.pub.pem"))),
            Err(KeyError::Unsupported),
            "{name}"
        );
    }
}

#[test]
fn undecodable_input() {
    let p256 = fixture("p256.pub.pem");
    let mut truncated_der = p256.lines().collect::<Vec<_>>();
    truncated_der.remove(2);
    let inputs = [
        fixture("rsa3072.pkcs1.pem"),
        p256.replace("PUBLIC KEY", "CERTIFICATE"),
        p256.replace("END PUBLIC KEY", "END RSA PUBLIC KEY"),
        p256.lines().take(3).collect::<Vec<_>>().join("\n"),
        truncated_der.join("\n"),
        p256.replace('M', "*"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_string(),
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n".to_string(),
        "garbage".to_string(),
        String::new(),
    ];
    for input in inputs {
        assert_eq!(
            PublicKey::from_pem(&input),
            Err(KeyError::CannotDecode),
            "{input:?}"
        );
    }
}

/// Re-wraps the base64 body of a PEM at `width` characters with `eol`.
fn rewrap(pem: &str, width: usize, eol: &str) -> String {
    let lines: Vec<&str> = pem.lines().collect();
    let body: String = lines[1..lines.len() - 1].concat();
    let mut out = format!("{}{eol}", lines[0]);
    for chunk in body.as_bytes().chunks(width) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str(eol);
    }
    out.push_str(lines[lines.len() - 1]);
    out.push_str(eol);
    out
}

#[test]
fn canonical_pem_ignores_layout() {
    for (name, _) in SIGNERS {
        let original = fixture(&format!("{name}.pub.pem"));
        let canonical = key(name).canonical_pem().to_string();
        // openssl already writes the canonical layout
        assert_eq!(canonical, original, "{name}");
        assert!(canonical.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(canonical.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(canonical.lines().all(|line| line.len() <= 64));

        for variant in [
            rewrap(&original, 76, "\r\n"),
            rewrap(&original, 76, "\n"),
            rewrap(&original, 64, "\r\n"),
            rewrap(&original, 1000, "\n").trim_end().to_string(),
            format!("\n  {}\n\n", original.replace('\n', "  \n")),
        ] {
            let parsed = PublicKey::from_pem(&variant).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.canonical_pem(), canonical, "{name}: {variant:?}");
            assert_eq!(parsed, key(name));
        }
    }
}

#[test]
fn errors_display_like_mender() {
    assert_eq!(
        KeyError::CannotDecode.to_string(),
        "cannot decode public key"
    );
    assert_eq!(
        KeyError::Unsupported.to_string(),
        "unrecognized public key type"
    );
    assert_eq!(
        KeyError::BadSignature.to_string(),
        "signature verification failed"
    );
}

#[test]
fn compressed_ec_point_is_canonicalised_uncompressed() {
    let compressed = PublicKey::from_pem(&fixture("p256.compressed.pem")).unwrap();
    assert_eq!(compressed.kind(), &KeyKind::EcdsaP256);
    assert_eq!(compressed.canonical_pem(), fixture("p256.pub.pem"));
    compressed
        .verify(fixture("message.txt").as_bytes(), &signature("p256"))
        .unwrap();
}
