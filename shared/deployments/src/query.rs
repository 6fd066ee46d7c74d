//! Upstream's lenient positive integers of paging (Go: `strconv.Atoi`, then `> 0`), for the
//! query parameters the typed parameter structs keep as text.

/// `value` when it is a positive integer.
pub fn positive(value: Option<&str>) -> Option<i64> {
    value.and_then(|v| v.parse::<i64>().ok()).filter(|v| *v > 0)
}
