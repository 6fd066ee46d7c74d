//! Device admission primitives for deviceauth, compatible with Mender's Go
//! implementation: parsing device public keys (RSA, ECDSA, Ed25519) into a
//! canonical PEM form, verifying the signature a device puts on its auth
//! request, and canonicalising/hashing the device identity data.

mod encoding;
mod identity;
mod key;

pub use identity::{identity_from_json_text, identity_from_value, Identity, IdentityError};
pub use key::{KeyError, KeyKind, PublicKey};
