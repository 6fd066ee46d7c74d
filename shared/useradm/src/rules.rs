//! Validation rules for users, passwords, settings and personal access tokens, with upstream's
//! messages. Pure functions over plain values.

use serde_json::{Map, Value};

pub const MAX_PAT_PER_USER: usize = 10;
pub const MAX_SESSIONS_PER_USER: usize = 10;
pub const MAX_PAT_EXPIRES_IN: i64 = 31_536_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// 400: malformed input.
    Bad(String),
    /// 422: well-formed but refused.
    Refused(String),
}

/// E-mail: ASCII, `local@domain`, at most 256 characters. Returned lower-cased.
pub fn email(raw: &str) -> Result<String, Invalid> {
    let email = raw.trim().to_ascii_lowercase();
    let valid = email.is_ascii()
        && email.len() <= 256
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@')
               && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email)
    } else {
        Err(Invalid::Bad("email: must be a valid email address.".into()))
    }
}

/// Password: ASCII, 8..=72 characters (bcrypt's limit), not contained in the e-mail.
pub fn password(password: &str, email: &str) -> Result<(), Invalid> {
    if !password.is_ascii() || password.len() > 256 {
        return Err(Invalid::Bad(
            "password: must be ASCII, at most 256 characters".into(),
        ));
    }
    // bcrypt reads only the first 72 bytes: a longer password would be cut silently
    if password.len() > 72 {
        return Err(Invalid::Bad(
            "password: must be at most 72 characters (bcrypt)".into(),
        ));
    }
    if password.len() < 8 {
        return Err(Invalid::Refused(
            "password: must be minimum 8 characters long".into(),
        ));
    }
    if email
        .to_ascii_lowercase()
        .contains(&password.to_ascii_lowercase())
    {
        return Err(Invalid::Refused(
            "password is too similar to the email".into(),
        ));
    }
    Ok(())
}

/// Settings: at most 1024 keys of at most 128 characters; string values at most 4096.
pub fn settings(settings: &Map<String, Value>) -> Result<(), Invalid> {
    if settings.len() > 1024 {
        return Err(Invalid::Bad("too many settings (max 1024)".into()));
    }
    for (key, value) in settings {
        if key.len() > 128 {
            return Err(Invalid::Bad(format!(
                "setting key too long (max 128): {key}"
            )));
        }
        if matches!(value, Value::String(s) if s.len() > 4096) {
            return Err(Invalid::Bad(format!(
                "setting value too long (max 4096): {key}"
            )));
        }
    }
    Ok(())
}

/// Personal access token request: non-empty name up to 4096, expiry 0..=1 year (0 = never).
pub fn personal_access_token(name: &str, expires_in: i64) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::Bad("name: cannot be blank.".into()));
    }
    if name.len() > 4096 {
        return Err(Invalid::Bad(
            "name: the length must be no more than 4096.".into(),
        ));
    }
    if !(0..=MAX_PAT_EXPIRES_IN).contains(&expires_in) {
        return Err(Invalid::Bad(format!(
            "expires_in: must be no less than 0 and no greater than {MAX_PAT_EXPIRES_IN}."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email("Admin@Example.COM"), Ok("admin@example.com".into()));
        assert!(email("no-at-sign").is_err());
        assert!(email("a@b").is_err());
        assert!(email("a b@c.d").is_err());
    }

    #[test]
    fn passwords() {
        assert!(matches!(
            password("short", "a@b.c"),
            Err(Invalid::Refused(_))
        ));
        assert_eq!(
            password("example", "example@example.com.example"),
            Err(Invalid::Refused(
                "password: must be minimum 8 characters long".into()
            ))
        );
        assert_eq!(
            password("admin@ex", "admin@example.com"),
            Err(Invalid::Refused(
                "password is too similar to the email".into()
            ))
        );
        assert_eq!(password("correct horse", "admin@example.com"), Ok(()));
    }

    #[test]
    fn pats() {
        assert!(personal_access_token("", 0).is_err());
        assert!(personal_access_token("ci", -1).is_err());
        assert!(personal_access_token("ci", MAX_PAT_EXPIRES_IN + 1).is_err());
        assert!(personal_access_token("ci", 0).is_ok());
    }
}
