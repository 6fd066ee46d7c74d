//! Timestamps as Mender writes them: RFC 3339, UTC, fractional seconds only as needed.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// RFC 3339 with `Z`, milliseconds kept only when non-zero (like Mongo-backed upstream).
pub fn format(t: DateTime<Utc>) -> String {
    let millis = t
        .with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t);
    millis.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn now_string() -> String {
    format(now())
}
