//! The error type shared by key loading, token issuing and token verification.

/// Everything that can go wrong with server keys and tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token carries an `exp` claim that lies in the past.
    #[error("token expired")]
    Expired,
    /// The token is malformed, uses an algorithm other than the key's, has a bad
    /// signature, or its claims do not match the requested claim type.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The server key could not be loaded, generated, exported or used for signing.
    #[error("server key error: {0}")]
    Key(String),
}
