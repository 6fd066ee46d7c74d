//! Paging as upstream does it: `page` / `per_page` query parameters (strict parser, default
//! 1 / 20, maximum 500) and `Link` headers built from the request path and its re-sorted query.

use crate::ApiError;

pub const DEFAULT_PER_PAGE: u64 = 20;
pub const MAX_PER_PAGE: u64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub page: u64,
    pub per_page: u64,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

impl Paging {
    /// Parses `page` and `per_page` from query pairs with upstream's error texts.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut paging = Paging::default();
        for (key, value) in pairs {
            match key.as_str() {
                "page" => paging.page = parse_positive("page", value)?,
                "per_page" => paging.per_page = parse_positive("per_page", value)?,
                _ => {}
            }
        }
        if paging.per_page > MAX_PER_PAGE {
            return Err(ApiError::bad_request(format!(
                "parameter \"per_page\" above limit (max: {MAX_PER_PAGE})"
            )));
        }
        Ok(paging)
    }

    /// Index of the first item of this page.
    pub fn offset(&self) -> usize {
        usize::try_from((self.page - 1).saturating_mul(self.per_page)).unwrap_or(usize::MAX)
    }

    /// The slice of `items` this page covers (empty past the end).
    pub fn slice<T>(&self, items: Vec<T>) -> Vec<T> {
        let per_page = usize::try_from(self.per_page).unwrap_or(usize::MAX);
        items
            .into_iter()
            .skip(self.offset())
            .take(per_page)
            .collect()
    }
}

fn parse_positive(name: &str, raw: &str) -> Result<u64, ApiError> {
    let value: i64 = raw
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid {name} query: \"{raw}\"")))?;
    if value < 1 {
        return Err(ApiError::bad_request(format!(
            "invalid {name} query: value must be a non-zero positive integer"
        )));
    }
    Ok(value as u64)
}

/// Parses a raw query string into ordered pairs.
pub fn query_pairs(raw_query: Option<&str>) -> Vec<(String, String)> {
    raw_query
        .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
        .unwrap_or_default()
}

/// What is known about the rest of the list.
pub enum Extent {
    /// The total number of items.
    Total(u64),
    /// Only whether there is another page.
    HasNext(bool),
}

/// The `Link` header values, in upstream's order: first, prev, next, last.
pub fn link_headers(
    path: &str,
    pairs: &[(String, String)],
    paging: Paging,
    extent: Extent,
) -> Vec<String> {
    let link = |page: u64, rel: &str| {
        let mut query: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .cloned()
            .collect();
        query.push(("page".into(), page.to_string()));
        query.push(("per_page".into(), paging.per_page.to_string()));
        query.sort();
        let encoded = serde_urlencoded::to_string(&query).unwrap_or_default();
        format!("<{path}?{encoded}>; rel=\"{rel}\"")
    };
    let mut links = vec![link(1, "first")];
    if paging.page > 1 {
        links.push(link(paging.page - 1, "prev"));
    }
    match extent {
        Extent::Total(total) if total > 0 => {
            let last = total.div_ceil(paging.per_page);
            if paging.page < last {
                links.push(link(paging.page + 1, "next"));
            }
            links.push(link(last, "last"));
        }
        Extent::Total(_) => {}
        Extent::HasNext(true) => links.push(link(paging.page + 1, "next")),
        Extent::HasNext(false) => {}
    }
    links
}

/// A JSON list response with its `Link` headers and, when the total is known, `X-Total-Count`.
pub fn list_response(
    items: Vec<serde_json::Value>,
    links: Vec<String>,
    total: Option<u64>,
) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let mut response = axum::Json(serde_json::Value::Array(items)).into_response();
    for link in links {
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, value);
        }
    }
    if let Some(total) = total {
        response
            .headers_mut()
            .insert("x-total-count", HeaderValue::from(total));
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(Some(q))
    }

    #[test]
    fn defaults_and_limits() {
        assert_eq!(
            Paging::from_pairs(&[]).unwrap(),
            Paging {
                page: 1,
                per_page: 20
            }
        );
        let err = Paging::from_pairs(&pairs("per_page=501")).unwrap_err();
        assert_eq!(err.message, "parameter \"per_page\" above limit (max: 500)");
        let err = Paging::from_pairs(&pairs("page=x")).unwrap_err();
        assert_eq!(err.message, "invalid page query: \"x\"");
        let err = Paging::from_pairs(&pairs("per_page=0")).unwrap_err();
        assert_eq!(
            err.message,
            "invalid per_page query: value must be a non-zero positive integer"
        );
    }

    #[test]
    fn links_sorted_with_total() {
        let q = pairs("status=accepted&page=2&per_page=10");
        let paging = Paging::from_pairs(&q).unwrap();
        let links = link_headers("/api/x", &q, paging, Extent::Total(35));
        assert_eq!(
            links,
            vec![
                "</api/x?page=1&per_page=10&status=accepted>; rel=\"first\"",
                "</api/x?page=1&per_page=10&status=accepted>; rel=\"prev\"",
                "</api/x?page=3&per_page=10&status=accepted>; rel=\"next\"",
                "</api/x?page=4&per_page=10&status=accepted>; rel=\"last\"",
            ]
        );
        assert_eq!(
            paging.slice((0..35).collect()),
            (10..20).collect::<Vec<_>>()
        );
    }
}
