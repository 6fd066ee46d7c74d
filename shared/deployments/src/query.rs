//! Query parameters read the way upstream's Go handlers read `url.Values`: the first value of
//! a key (`Get`), every value of a repeatable key, and the lenient positive integers of paging.

pub fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub fn all(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The first value of `key` when it is a positive integer (Go: `strconv.Atoi`, then `> 0`).
pub fn positive(pairs: &[(String, String)], key: &str) -> Option<i64> {
    first(pairs, key)
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|v| *v > 0)
}
