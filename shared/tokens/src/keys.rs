//! The server signing key: loading it from PEM (detecting RS256 or EdDSA), generating
//! a fresh RSA key, issuing tokens and verifying them with the algorithm pinned to the key.
//! A function that only verifies tokens loads the public key alone
//! ([`Keys::from_public_pem`]); such keys refuse to sign.
//!
//! Signing and signature checks go through jsonwebtoken's aws-lc-rs `CryptoProvider`,
//! called explicitly rather than through jsonwebtoken's process-wide default, so the
//! result does not depend on which jsonwebtoken features other crates enable.
//! Verification parses the JWT header itself because upstream Mender puts an integer
//! `kid` (`"kid": 0`) in it, which `jsonwebtoken::decode` (with `kid: Option<String>`)
//! rejects.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::crypto::{aws_lc::DEFAULT_PROVIDER, CryptoProvider};
use jsonwebtoken::{DecodingKey, EncodingKey, Header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::TokenError;

/// The signing algorithm, fixed by the type of the server key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA server key).
    Rs256,
    /// Ed25519 (Ed25519 server key).
    EdDsa,
}

impl Algorithm {
    /// The JWT `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Domain separation of [`Keys::link_secret`].
const LINK_SECRET_CONTEXT: &[u8] = b"mender-rs link secret\n";

/// The crypto backend, chosen explicitly (see the module docs).
fn provider() -> &'static CryptoProvider {
    &DEFAULT_PROVIDER
}

struct Inner {
    algorithm: Algorithm,
    /// `None` for a verification-only key (loaded from the public key alone).
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// SubjectPublicKeyInfo DER of the public key.
    public_spki_der: Vec<u8>,
    /// See [`Keys::link_secret`].
    link_secret: [u8; 32],
}

/// Server signing key plus the matching verification key, or the verification key alone.
/// Cheap to clone.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("algorithm", &self.inner.algorithm)
            .field("can_sign", &self.can_sign())
            .finish_non_exhaustive()
    }
}

/// The parts of a JWT header this crate looks at; everything else (including a
/// `kid` of any JSON type) is ignored.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

fn key_err(msg: impl fmt::Display) -> TokenError {
    TokenError::Key(msg.to_string())
}

fn invalid(msg: impl fmt::Display) -> TokenError {
    TokenError::Invalid(msg.to_string())
}

impl Keys {
    /// Loads a PEM private key: PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`
    /// holding RSA => RS256; PKCS#8 holding Ed25519 => EdDSA. ECDSA and anything else
    /// is rejected. Other PEM blocks before the key (e.g. `EC PARAMETERS`) are skipped.
    pub fn from_pem(pem: &str) -> Result<Keys, TokenError> {
        let blocks = pem::parse_many(pem).map_err(|e| key_err(format!("bad PEM: {e}")))?;
        let block = blocks
            .iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| key_err("no private key found in PEM"))?;
        let der = block.contents();
        match block.tag() {
            "RSA PRIVATE KEY" => Self::from_rsa_pkcs1(der),
            "PRIVATE KEY" => {
                if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
                    // jsonwebtoken's RSA signer wants the PKCS#1 RSAPrivateKey nested inside.
                    let encoding = EncodingKey::from_rsa_pem(pem::encode(block).as_bytes())
                        .map_err(|e| key_err(format!("bad PKCS#8 RSA key: {e}")))?;
                    Self::from_rsa_parts(&pair, encoding)
                } else if let Ok(pair) = Ed25519KeyPair::from_pkcs8(der) {
                    let public = pair.public_key();
                    let spki = public
                        .as_der()
                        .map_err(|_| key_err("cannot encode Ed25519 public key"))?;
                    Self::assemble(
                        Algorithm::EdDsa,
                        Some(EncodingKey::from_ed_der(der)),
                        DecodingKey::from_ed_der(public.as_ref()),
                        spki.as_ref().to_vec(),
                    )
                } else {
                    Err(key_err(
                        "unsupported PKCS#8 private key: only RSA (2048-8192 bit) and Ed25519 \
                         server keys are supported (ECDSA is not)",
                    ))
                }
            }
            "EC PRIVATE KEY" => Err(key_err("ECDSA server keys are not supported")),
            "ENCRYPTED PRIVATE KEY" => Err(key_err("encrypted private keys are not supported")),
            other => Err(key_err(format!("unsupported PEM block `{other}`"))),
        }
    }

    fn from_rsa_pkcs1(der: &[u8]) -> Result<Keys, TokenError> {
        let pair =
            RsaKeyPair::from_der(der).map_err(|e| key_err(format!("bad RSA private key: {e}")))?;
        Self::from_rsa_parts(&pair, EncodingKey::from_rsa_der(der))
    }

    fn from_rsa_parts(pair: &RsaKeyPair, encoding: EncodingKey) -> Result<Keys, TokenError> {
        // Make sure what jsonwebtoken will sign with is the key we derived the public part from.
        let check = RsaKeyPair::from_der(encoding.as_bytes())
            .map_err(|e| key_err(format!("bad RSA private key: {e}")))?;
        if check.public_key().as_ref() != pair.public_key().as_ref() {
            return Err(key_err("inconsistent RSA private key"));
        }
        let public = pair.public_key();
        let spki: PublicKeyX509Der<'static> = public
            .as_der()
            .map_err(|_| key_err("cannot encode RSA public key"))?;
        Self::assemble(
            Algorithm::Rs256,
            Some(encoding),
            // RFC 8017 RSAPublicKey DER, what aws-lc-rs expects for RS256 verification.
            DecodingKey::from_rsa_der(public.as_ref()),
            spki.as_ref().to_vec(),
        )
    }

    fn assemble(
        algorithm: Algorithm,
        encoding: Option<EncodingKey>,
        decoding: DecodingKey,
        public_spki_der: Vec<u8>,
    ) -> Result<Keys, TokenError> {
        let link_secret = match &encoding {
            // derived from the private key: the same in every process holding it
            Some(encoding) => {
                let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                context.update(LINK_SECRET_CONTEXT);
                context.update(encoding.as_bytes());
                let mut secret = [0; 32];
                secret.copy_from_slice(context.finish().as_ref());
                secret
            }
            // no private key: random, so whatever this process signs is unforgeable (and
            // valid in this process only)
            None => {
                let mut secret = [0; 32];
                aws_lc_rs::rand::fill(&mut secret)
                    .map_err(|_| key_err("no randomness for the link secret"))?;
                secret
            }
        };
        Ok(Keys {
            inner: Arc::new(Inner {
                algorithm,
                encoding,
                decoding,
                public_spki_der,
                link_secret,
            }),
        })
    }

    /// Loads a verification-only key from a SubjectPublicKeyInfo `PUBLIC KEY` PEM (what
    /// [`Keys::public_key_pem`] and `openssl pkey -pubout` write): RSA (2048-8192 bit) =>
    /// RS256, Ed25519 => EdDSA. [`Keys::issue`] fails with such a key.
    pub fn from_public_pem(pem: &str) -> Result<Keys, TokenError> {
        let blocks = pem::parse_many(pem).map_err(|e| key_err(format!("bad PEM: {e}")))?;
        let block = blocks
            .iter()
            .find(|b| b.tag() == "PUBLIC KEY")
            .ok_or_else(|| key_err("no `PUBLIC KEY` block found in PEM"))?;
        let spki = block.contents();
        if let Ok(rsa) = aws_lc_rs::rsa::PublicEncryptingKey::from_der(spki) {
            let bits = rsa.key_size_bits();
            if !(2048..=8192).contains(&bits) {
                return Err(key_err(format!(
                    "RSA public key of {bits} bits: only 2048-8192 bit keys are supported"
                )));
            }
            let decoding = DecodingKey::from_rsa_pem(pem::encode(block).as_bytes())
                .map_err(|e| key_err(format!("bad RSA public key: {e}")))?;
            return Self::assemble(Algorithm::Rs256, None, decoding, spki.to_vec());
        }
        // SubjectPublicKeyInfo of Ed25519 (RFC 8410): this prefix, then the 32 key bytes.
        const ED25519_SPKI_PREFIX: [u8; 12] = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(raw) if raw.len() == 32 => Self::assemble(
                Algorithm::EdDsa,
                None,
                DecodingKey::from_ed_der(raw),
                spki.to_vec(),
            ),
            _ => Err(key_err(
                "unsupported public key: only RSA (2048-8192 bit) and Ed25519 server keys \
                 are supported (ECDSA is not)",
            )),
        }
    }

    /// The server key as a function's configuration gives it: the private key PEM when it
    /// signs tokens (empty otherwise), the public key PEM when it only verifies them (may
    /// be empty when the private key is given). With both, the public key must be the private
    /// key's, so a signer and the verifiers never disagree about the key.
    pub fn from_pems(private_pem: &str, public_pem: &str) -> Result<Keys, TokenError> {
        match (private_pem.trim().is_empty(), public_pem.trim().is_empty()) {
            (false, true) => Self::from_pem(private_pem),
            (false, false) => {
                let keys = Self::from_pem(private_pem)?;
                let public = Self::from_public_pem(public_pem)?;
                if public.inner.public_spki_der != keys.inner.public_spki_der {
                    return Err(key_err(
                        "the public key is not the public half of the private key",
                    ));
                }
                Ok(keys)
            }
            (true, false) => Self::from_public_pem(public_pem),
            (true, true) => Err(key_err("neither a private nor a public key is configured")),
        }
    }

    /// Whether this key can sign (it was loaded from the private key).
    pub fn can_sign(&self) -> bool {
        self.inner.encoding.is_some()
    }

    /// A 32-byte secret for HMAC-signed links (configuration download links). Derived from the
    /// private key, so every process holding it signs and checks the same links; a
    /// verification-only key has a random one (its links are valid in this process only,
    /// never forgeable).
    pub fn link_secret(&self) -> &[u8] {
        &self.inner.link_secret
    }

    /// A new RSA-3072 key as PKCS#8 `PRIVATE KEY` PEM (LF line endings), e.g. for a
    /// first local run without a configured key.
    pub fn generate_rsa_pem() -> Result<String, TokenError> {
        let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa3072)
            .map_err(|_| key_err("RSA key generation failed"))?;
        let der: Pkcs8V1Der<'static> = pair
            .as_der()
            .map_err(|_| key_err("cannot encode generated RSA key"))?;
        Ok(encode_pem("PRIVATE KEY", der.as_ref()))
    }

    /// The algorithm pinned to this key.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// The public key as SubjectPublicKeyInfo `PUBLIC KEY` PEM.
    pub fn public_key_pem(&self) -> Result<String, TokenError> {
        Ok(encode_pem("PUBLIC KEY", &self.inner.public_spki_der))
    }

    /// Signs `claims` into a compact JWT with header `{"typ":"JWT","alg":<key's alg>}`
    /// (no `kid`).
    pub fn issue<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let alg = self.inner.algorithm.jwt();
        let header = serde_json::to_vec(&Header::new(alg))
            .map_err(|e| key_err(format!("cannot serialise header: {e}")))?;
        let payload = serde_json::to_vec(claims)
            .map_err(|e| invalid(format!("cannot serialise claims: {e}")))?;
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let encoding = self.inner.encoding.as_ref().ok_or_else(|| {
            key_err("this function has the public key only: it verifies tokens, it cannot sign")
        })?;
        let signer = (provider().signer_factory)(&alg, encoding)
            .map_err(|e| key_err(format!("cannot create signer: {e}")))?;
        let signature = signer
            .try_sign(message.as_bytes())
            .map_err(|e| key_err(format!("signing failed: {e}")))?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// Verifies `token` and returns its claims: the header `alg` must be this key's
    /// algorithm, the signature must be valid, and `exp`, when present, must not be in
    /// the past (no leeway; `exp == now` is still valid). `nbf`, `iss` and audience are
    /// not checked. Header `kid` is ignored whatever its type.
    pub fn verify<C: DeserializeOwned>(&self, token: &str) -> Result<C, TokenError> {
        self.verify_at(token, chrono::Utc::now().timestamp())
    }

    /// [`Keys::verify`] with an explicit current time (Unix seconds).
    pub fn verify_at<C: DeserializeOwned>(&self, token: &str, now: i64) -> Result<C, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS (expected three segments)"));
        };

        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|e| invalid(format!("bad header encoding: {e}")))?;
        let header: RawHeader = serde_json::from_slice(&header_json)
            .map_err(|e| invalid(format!("bad header: {e}")))?;
        let expected = self.inner.algorithm;
        if header.alg != expected.as_str() {
            return Err(invalid(format!(
                "algorithm `{}` not accepted, key requires `{expected}`",
                header.alg
            )));
        }
        if header.crit.is_some() {
            return Err(invalid("critical header extensions are not supported"));
        }

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|e| invalid(format!("bad signature encoding: {e}")))?;
        let verifier = (provider().verifier_factory)(&expected.jwt(), &self.inner.decoding)
            .map_err(|e| key_err(format!("cannot create verifier: {e}")))?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let message = token.as_bytes().get(..signed_len).unwrap_or_default();
        verifier
            .verify(message, &signature)
            .map_err(|_| invalid("bad signature"))?;

        let payload_json = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|e| invalid(format!("bad payload encoding: {e}")))?;
        let payload: serde_json::Value = serde_json::from_slice(&payload_json)
            .map_err(|e| invalid(format!("bad payload: {e}")))?;
        if !payload.is_object() {
            return Err(invalid("payload is not a JSON object"));
        }
        check_exp(payload.get("exp"), now)?;
        serde_json::from_value(payload).map_err(|e| invalid(format!("unexpected claims: {e}")))
    }
}

/// `exp` absent => fine; numeric and `< now` => expired; anything else => invalid.
fn check_exp(exp: Option<&serde_json::Value>, now: i64) -> Result<(), TokenError> {
    let Some(exp) = exp else {
        return Ok(());
    };
    let expired = if let Some(exp) = exp.as_i64() {
        exp < now
    } else if exp.is_u64() {
        // Beyond i64::MAX: far future.
        false
    } else if let Some(exp) = exp.as_f64() {
        exp < now as f64
    } else {
        return Err(invalid("`exp` is not a number"));
    };
    if expired {
        Err(TokenError::Expired)
    } else {
        Ok(())
    }
}

fn encode_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
