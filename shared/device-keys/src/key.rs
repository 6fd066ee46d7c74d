//! Device public keys: parsing a PKIX ("PUBLIC KEY") PEM, producing its
//! canonical PEM form, and verifying the signature a device puts on its
//! auth request.

use rsa::pkcs1v15;
use sha2::{Digest as _, Sha256};
use signature::hazmat::PrehashVerifier as _;
use signature::Verifier as _;
use spki::der::Decode as _;
use spki::{DecodePublicKey, EncodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::encoding::{decode_base64, decode_pem, encode_pem};

const PEM_LABEL: &str = "PUBLIC KEY";

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const SECP224R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.33");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Smallest RSA modulus accepted (Go refuses smaller keys too).
const RSA_MIN_BITS: usize = 1024;
/// Largest RSA modulus accepted; the `rsa` crate's default cap is 4096.
const RSA_MAX_BITS: usize = 16384;

/// The algorithm (and for RSA the modulus size) of a [`PublicKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcdsaP224,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
}

/// Why a key could not be used or a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot decode public key")]
    CannotDecode,
    #[error("unrecognized public key type")]
    Unsupported,
    #[error("signature verification failed")]
    BadSignature,
}

#[derive(Debug, Clone)]
enum Verifier {
    Rsa(pkcs1v15::VerifyingKey<Sha256>),
    P224(p224::ecdsa::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(ecdsa::VerifyingKey<p521::NistP521>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A parsed device public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    kind: KeyKind,
    canonical_pem: String,
    verifier: Verifier,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.canonical_pem == other.canonical_pem
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    /// Parse a PEM block of type exactly "PUBLIC KEY" (SubjectPublicKeyInfo).
    /// PKCS#1 "RSA PUBLIC KEY", certificates, garbage => [`KeyError::CannotDecode`].
    /// Other PKIX algorithms (DSA, X25519, other curves) and RSA keys under
    /// 1024 bits => [`KeyError::Unsupported`].
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let der = decode_pem(pem, PEM_LABEL).ok_or(KeyError::CannotDecode)?;
        let spki = SubjectPublicKeyInfoRef::from_der(&der).map_err(|_| KeyError::CannotDecode)?;
        let (kind, verifier, canonical_der) = match spki.algorithm.oid {
            RSA_ENCRYPTION => parse_rsa(&spki)?,
            EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| KeyError::CannotDecode)?;
                parse_ecdsa(curve, &der)?
            }
            ED25519 => {
                let key = ed25519_dalek::VerifyingKey::from_public_key_der(&der)
                    .map_err(|_| KeyError::CannotDecode)?;
                (KeyKind::Ed25519, Verifier::Ed25519(key), reencode(&key)?)
            }
            _ => return Err(KeyError::Unsupported),
        };
        Ok(PublicKey {
            kind,
            canonical_pem: encode_pem(&canonical_der, PEM_LABEL),
            verifier,
        })
    }

    /// The key's algorithm (and RSA modulus size).
    pub fn kind(&self) -> &KeyKind {
        &self.kind
    }

    /// Canonical form: the PKIX DER re-encoded from the parsed key (as Go's
    /// `x509.MarshalPKIXPublicKey` does) in a PEM block with 64-character
    /// lines and a trailing newline. Equal keys give byte-equal strings.
    pub fn canonical_pem(&self) -> &str {
        &self.canonical_pem
    }

    /// Verify `signature_b64` (standard base64, padded) over `message`:
    /// - RSA: PKCS#1 v1.5 over SHA-256 of the message;
    /// - ECDSA: DER `SEQUENCE{r,s}` over the SHA-256 digest of the message,
    ///   whatever the curve;
    /// - Ed25519: pure Ed25519 over the raw message, 64-byte signature.
    ///
    /// Bad base64 or a wrong signature => [`KeyError::BadSignature`].
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> Result<(), KeyError> {
        let sig = decode_base64(signature_b64).ok_or(KeyError::BadSignature)?;
        let digest = Sha256::digest(message);
        let result = match &self.verifier {
            Verifier::Rsa(key) => pkcs1v15::Signature::try_from(sig.as_slice())
                .and_then(|sig| key.verify(message, &sig)),
            Verifier::P224(key) => p224::ecdsa::Signature::from_der(&sig)
                .and_then(|sig| key.verify_prehash(&prehash(&digest, 28), &sig)),
            Verifier::P256(key) => p256::ecdsa::Signature::from_der(&sig)
                .and_then(|sig| key.verify_prehash(&prehash(&digest, 32), &sig)),
            Verifier::P384(key) => p384::ecdsa::Signature::from_der(&sig)
                .and_then(|sig| key.verify_prehash(&prehash(&digest, 48), &sig)),
            Verifier::P521(key) => p521::ecdsa::Signature::from_der(&sig)
                .and_then(|sig| key.verify_prehash(&prehash(&digest, 66), &sig)),
            Verifier::Ed25519(key) => {
                ed25519_dalek::Signature::from_slice(&sig).and_then(|sig| key.verify(message, &sig))
            }
        };
        result.map_err(|_| KeyError::BadSignature)
    }
}

/// The digest as handed to ECDSA verification for a curve whose scalars are
/// `field_len` bytes. A longer digest is truncated by the verifier itself
/// (P-224). A shorter one is left-padded with zeroes, which keeps its integer
/// value (what Go's hashToInt uses) and avoids the `ecdsa` crate refusing
/// prehashes shorter than half the field size (P-521: 32 < 33 bytes).
fn prehash(digest: &[u8], field_len: usize) -> Vec<u8> {
    let mut padded = vec![0; field_len.saturating_sub(digest.len())];
    padded.extend_from_slice(digest);
    padded
}

type Parsed = (KeyKind, Verifier, Vec<u8>);

fn parse_rsa(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<Parsed, KeyError> {
    // Decoded by hand rather than with `RsaPublicKey::from_public_key_der`,
    // which refuses moduli over 4096 bits.
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or(KeyError::CannotDecode)?;
    let pkcs1 = rsa::pkcs1::RsaPublicKey::from_der(bits).map_err(|_| KeyError::CannotDecode)?;
    let n = rsa::BigUint::from_bytes_be(pkcs1.modulus.as_bytes());
    let e = rsa::BigUint::from_bytes_be(pkcs1.public_exponent.as_bytes());
    let size = n.bits();
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&size) {
        return Err(KeyError::Unsupported);
    }
    let key = rsa::RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS)
        .map_err(|_| KeyError::CannotDecode)?;
    let canonical = reencode(&key)?;
    Ok((
        KeyKind::Rsa { bits: size },
        Verifier::Rsa(pkcs1v15::VerifyingKey::new(key)),
        canonical,
    ))
}

fn parse_ecdsa(curve: ObjectIdentifier, der: &[u8]) -> Result<Parsed, KeyError> {
    let bad = |_| KeyError::CannotDecode;
    // Re-encoding from the parsed point always yields the uncompressed form.
    match curve {
        SECP224R1 => {
            let key = p224::PublicKey::from_public_key_der(der).map_err(bad)?;
            Ok((
                KeyKind::EcdsaP224,
                Verifier::P224(key.into()),
                reencode(&key)?,
            ))
        }
        SECP256R1 => {
            let key = p256::PublicKey::from_public_key_der(der).map_err(bad)?;
            Ok((
                KeyKind::EcdsaP256,
                Verifier::P256(key.into()),
                reencode(&key)?,
            ))
        }
        SECP384R1 => {
            let key = p384::PublicKey::from_public_key_der(der).map_err(bad)?;
            Ok((
                KeyKind::EcdsaP384,
                Verifier::P384(key.into()),
                reencode(&key)?,
            ))
        }
        SECP521R1 => {
            let key = p521::PublicKey::from_public_key_der(der).map_err(bad)?;
            Ok((
                KeyKind::EcdsaP521,
                Verifier::P521(key.into()),
                reencode(&key)?,
            ))
        }
        _ => Err(KeyError::Unsupported),
    }
}

fn reencode(key: &impl EncodePublicKey) -> Result<Vec<u8>, KeyError> {
    key.to_public_key_der()
        .map(|doc| doc.into_vec())
        .map_err(|_| KeyError::CannotDecode)
}
