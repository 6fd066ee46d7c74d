//! Issues and verifies Mender JWTs: device tokens (deviceauth) and user tokens
//! (useradm), signed with the server key (RSA => RS256, Ed25519 => EdDSA) and
//! verified with the algorithm pinned to that key.
//!
//! ```no_run
//! # fn main() -> Result<(), mender_tokens::TokenError> {
//! use mender_tokens::{DeviceClaims, Keys};
//! let keys = Keys::from_pem(&Keys::generate_rsa_pem()?)?;
//! let token = keys.issue(&DeviceClaims::new("jti", "device-id", "", 1_700_000_000, 3600))?;
//! let claims: DeviceClaims = keys.verify(&token)?;
//! # let _ = claims;
//! # Ok(())
//! # }
//! ```

mod claims;
mod error;
mod keys;

pub use claims::{
    Addon, DeviceClaims, UserClaims, DEVICE_ISSUER, PLAN_ENTERPRISE, USER_ISSUER, USER_SCOPE,
};
pub use error::TokenError;
pub use keys::{Algorithm, Keys};
