//! The v2 search DSL (SPEC §4.4, `POST /api/management/v2/inventory/filters/search` and the
//! internal twin) as plain Rust: no I/O, no AWS.
//!
//! Upstream (`model/filters.go`, `api/http/api_inventory.go`) validates the body with
//! ozzo-validation and hands the filters to MongoDB (`store/mongo/datastore_mongo.go`
//! `SearchDevices`), so part of its behaviour is MongoDB's:
//!
//! * [`SearchQuery::parse`] decodes and validates the body with upstream's messages, then
//!   applies the checks MongoDB makes when it parses the query (`$ltne` is an unknown operator,
//!   `$in` needs an array, ...), with the message upstream's handler passes through as a 400.
//! * [`Filter::matches`] evaluates one predicate with MongoDB's query semantics on a device's
//!   stored value: type brackets (a string never equals a number), array traversal, missing
//!   fields. The date attributes (`system/created_ts`, `updated_ts`, `check_in_time`) are
//!   stored here as RFC 3339 strings but compare as dates, like upstream's BSON dates: a filter
//!   operand on them that parses as RFC 3339 is a date (millisecond precision, as in BSON).
//! * [`sort_values`]/[`compare_keys`] (or [`sort_key`]) order devices like a MongoDB sort.
//! * [`text_keywords`]/[`text_score`] reproduce the `$text` search over upstream's derived text
//!   field (`utils/search.go`) and MongoDB's text score; no stemming or diacritic folding.
//! * [`project`] is the `attributes` projection, [`needed_attributes`] tells a store which
//!   attributes it must read.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use chrono::DateTime;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::{InventoryDevice, IDENTITY, INVENTORY, SCOPES, SYSTEM, TAGS};

/// `page` when absent or below 1 (upstream `utils.PageDefault`).
pub const PAGE_DEFAULT: u64 = 1;
/// `per_page` when absent or below 1 (upstream `utils.PerPageDefault`).
pub const PER_PAGE_DEFAULT: u64 = 20;
/// Largest accepted `per_page` (upstream `rest.PerPageMax`).
pub const PER_PAGE_MAX: u64 = 500;
/// Compiled size limit of a `$regex` pattern (bytes of the regex crate's program).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The `(scope, attribute)` that upstream maps to the document id rather than an attribute.
const ID_ATTRIBUTE: &str = "id";
/// System attributes that upstream stores as BSON dates.
const DATE_ATTRIBUTES: [&str; 3] = ["created_ts", "updated_ts", "check_in_time"];
/// Upstream wraps store errors twice (`inv.SearchDevices`, `mongo.SearchDevices`) and the
/// handler answers 400 with the whole chain when MongoDB reports a bad value.
const DB_ERROR: &str = "failed to fetch devices: failed to search devices: ";
/// Filter `type`s upstream's validation accepts (`validSelectors`), `$ltne` included.
const VALID_TYPES: [&str; 11] = [
    "$eq", "$gt", "$gte", "$in", "$lt", "$lte", "$ltne", "$ne", "$nin", "$exists", "$regex",
];
/// MongoDB's English stop words (`src/mongo/db/fts/stop_words_english.txt`), the ones that
/// can survive upstream's `TextToKeywords` (words with an apostrophe cannot).
const STOP_WORDS: [&str; 124] = [
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "cannot",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "ought",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// A rejected search body; every variant is an HTTP 400 with the message as `error`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// Decoding, validation or query errors, with upstream's message.
    #[error("{0}")]
    Invalid(String),
}

/// A parsed and validated search body.
///
/// Evaluation: a device is in the result when [`SearchQuery::matches`] holds and, with
/// `text`, its [`text_score`] is above zero; results are ordered by text score (descending)
/// when `text` is present, else by `sort` (ignored with `text`), then paged.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    /// 1-based page.
    pub page: u64,
    /// Page size, 1..=500.
    pub per_page: u64,
    /// Predicates, AND-ed.
    pub filters: Vec<Filter>,
    /// Sort keys in order of precedence.
    pub sort: Vec<SortKey>,
    /// Projection; empty returns whole devices.
    pub attributes: Vec<Selector>,
    /// When non-empty, only these devices.
    pub device_ids: Vec<String>,
    /// Free-text search; `None` when absent or empty (upstream ignores `""`).
    pub text: Option<String>,
}

/// One filter predicate. [`SearchQuery::parse`] builds them through [`Filter::new`], which
/// checks the operand like MongoDB; one built directly with an operand MongoDB would reject
/// (`$in` without an array, a `$regex` that does not compile) matches no device (`$nin`: all).
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    /// Attribute scope (`identity` with attribute `id` means the device id).
    pub scope: String,
    /// Attribute name.
    pub attribute: String,
    /// The operator.
    pub op: Op,
    /// The operand as sent.
    pub value: Value,
}

/// The MongoDB query operators a filter may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `$eq`
    Eq,
    /// `$ne`
    Ne,
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
    /// `$in`
    In,
    /// `$nin`
    Nin,
    /// `$exists`
    Exists,
    /// `$regex`
    Regex,
}

/// One sort key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    /// Attribute scope (`identity` with attribute `id` means the device id).
    pub scope: String,
    /// Attribute name.
    pub attribute: String,
    /// `order: desc`.
    pub descending: bool,
}

/// One `(scope, attribute)` of the projection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub struct Selector {
    /// Attribute scope.
    pub scope: String,
    /// Attribute name.
    pub attribute: String,
}

#[derive(Deserialize, Default)]
struct RawParams {
    page: Option<i64>,
    per_page: Option<i64>,
    filters: Option<Vec<Option<RawFilter>>>,
    sort: Option<Vec<Option<RawSort>>>,
    attributes: Option<Vec<Option<RawSelector>>>,
    device_ids: Option<Vec<Option<String>>>,
    text: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawFilter {
    scope: Option<String>,
    attribute: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawSort {
    scope: Option<String>,
    attribute: Option<String>,
    order: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawSelector {
    scope: Option<String>,
    attribute: Option<String>,
}

impl Default for SearchQuery {
    fn default() -> Self {
        SearchQuery {
            page: PAGE_DEFAULT,
            per_page: PER_PAGE_DEFAULT,
            filters: Vec::new(),
            sort: Vec::new(),
            attributes: Vec::new(),
            device_ids: Vec::new(),
            text: None,
        }
    }
}

impl SearchQuery {
    /// Parses and validates the JSON body as upstream does: `page`/`per_page` below 1 take
    /// the defaults 1/20, `per_page` above 500 is an error; `scope` must be one of
    /// system/identity/inventory/monitor/tags, `attribute` is required, the filter `type` must
    /// be one of upstream's list and its `value` not null, sort `order` is asc/desc (messages
    /// of ozzo-validation: `scope: cannot be blank; type: must be a valid value.`). Then the
    /// checks MongoDB makes (`$ltne` is unknown, `$in`/`$nin` need an array, `$regex` a string
    /// that compiles), with upstream's wrapped database message. JSON `null` in place of any
    /// field or list element is its zero value, as Go decodes it; unknown fields are ignored.
    pub fn parse(body: &[u8]) -> Result<SearchQuery, SearchError> {
        let raw = decode(body)?;

        let filters: Vec<RawFilter> = elements(raw.filters);
        let sort: Vec<RawSort> = elements(raw.sort);
        let attributes: Vec<RawSelector> = elements(raw.attributes);
        let page = positive(raw.page).unwrap_or(PAGE_DEFAULT);
        let per_page = positive(raw.per_page).unwrap_or(PER_PAGE_DEFAULT);

        for f in &filters {
            let kind = f.kind.as_deref().unwrap_or_default();
            check_struct(&[
                ("attribute", required(&f.attribute)),
                ("scope", scope_error(&f.scope)),
                (
                    "type",
                    if kind.is_empty() {
                        Some("cannot be blank".into())
                    } else if !VALID_TYPES.contains(&kind) {
                        Some("must be a valid value".into())
                    } else {
                        None
                    },
                ),
                ("value", f.value.is_none().then(|| "is required".into())),
            ])?;
        }
        for s in &sort {
            let order = s.order.as_deref().unwrap_or_default();
            check_struct(&[
                ("attribute", required(&s.attribute)),
                (
                    "order",
                    if order.is_empty() {
                        Some("cannot be blank".into())
                    } else if order != "asc" && order != "desc" {
                        Some("must be a valid value".into())
                    } else {
                        None
                    },
                ),
                ("scope", scope_error(&s.scope)),
            ])?;
        }
        for a in &attributes {
            check_struct(&[
                ("attribute", required(&a.attribute)),
                ("scope", scope_error(&a.scope)),
            ])?;
        }
        if per_page > PER_PAGE_MAX {
            return Err(invalid(format!(
                "per_page: must be no greater than {PER_PAGE_MAX}."
            )));
        }

        // What MongoDB rejects when it parses the query, first filter first.
        let filters = filters
            .into_iter()
            .map(|f| {
                let kind = f.kind.unwrap_or_default();
                let op = Op::parse(&kind)
                    .ok_or_else(|| db_error(&format!("(BadValue) unknown operator: {kind}")))?;
                Filter::new(
                    f.scope.unwrap_or_default(),
                    f.attribute.unwrap_or_default(),
                    op,
                    f.value.unwrap_or_default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(SearchQuery {
            page,
            per_page,
            filters,
            sort: sort
                .into_iter()
                .map(|s| SortKey {
                    scope: s.scope.unwrap_or_default(),
                    attribute: s.attribute.unwrap_or_default(),
                    descending: s.order.as_deref() == Some("desc"),
                })
                .collect(),
            attributes: attributes
                .into_iter()
                .map(|a| Selector {
                    scope: a.scope.unwrap_or_default(),
                    attribute: a.attribute.unwrap_or_default(),
                })
                .collect(),
            device_ids: raw
                .device_ids
                .unwrap_or_default()
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
            text: raw.text.filter(|t| !t.is_empty()),
        })
    }

    /// Number of matching devices to skip: `(page - 1) * per_page`.
    pub fn offset(&self) -> u64 {
        self.page.saturating_sub(1).saturating_mul(self.per_page)
    }

    /// The device passes `device_ids` and every filter (`text` is scored by [`text_score`]).
    pub fn matches(&self, device: &InventoryDevice) -> bool {
        (self.device_ids.is_empty() || self.device_ids.contains(&device.id))
            && self.filters.iter().all(|f| f.matches(device))
    }
}

/// Go's `json.Decoder.Decode`: the first JSON value of the body, trailing bytes ignored.
fn decode(body: &[u8]) -> Result<RawParams, SearchError> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Option<RawParams>>();
    match values.next() {
        None => Err(invalid("failed to decode request body: EOF".into())),
        Some(Err(e)) => Err(invalid(format!("failed to decode request body: {e}"))),
        Some(Ok(raw)) => Ok(raw.unwrap_or_default()),
    }
}

fn elements<T: Default>(list: Option<Vec<Option<T>>>) -> Vec<T> {
    list.unwrap_or_default()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

fn positive(n: Option<i64>) -> Option<u64> {
    n.and_then(|n| u64::try_from(n).ok()).filter(|n| *n >= 1)
}

fn invalid(message: String) -> SearchError {
    SearchError::Invalid(message)
}

fn db_error(message: &str) -> SearchError {
    invalid(format!("{DB_ERROR}{message}"))
}

fn required(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .unwrap_or_default()
        .is_empty()
        .then(|| "cannot be blank".into())
}

/// `validation.Required` then `Scope.Validate`.
fn scope_error(scope: &Option<String>) -> Option<String> {
    let scope = scope.as_deref().unwrap_or_default();
    if scope.is_empty() {
        Some("cannot be blank".into())
    } else if !SCOPES.contains(&scope) {
        Some(format!("must be one of {}", SCOPES.join(", ")))
    } else {
        None
    }
}

/// ozzo-validation's `Errors.Error()`: `key: message` sorted by key, joined by `; `, then `.`.
fn check_struct(fields: &[(&str, Option<String>)]) -> Result<(), SearchError> {
    let mut errors: Vec<(&str, &str)> = fields
        .iter()
        .filter_map(|(key, err)| err.as_deref().map(|e| (*key, e)))
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort_unstable();
    let joined: Vec<String> = errors.iter().map(|(k, e)| format!("{k}: {e}")).collect();
    Err(invalid(format!("{}.", joined.join("; "))))
}

impl Op {
    /// The operator for a filter `type` (`$ltne` and anything else: `None`).
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "$eq" => Op::Eq,
            "$ne" => Op::Ne,
            "$gt" => Op::Gt,
            "$gte" => Op::Gte,
            "$lt" => Op::Lt,
            "$lte" => Op::Lte,
            "$in" => Op::In,
            "$nin" => Op::Nin,
            "$exists" => Op::Exists,
            "$regex" => Op::Regex,
            _ => return None,
        })
    }

    /// The filter `type` of the operator.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "$eq",
            Op::Ne => "$ne",
            Op::Gt => "$gt",
            Op::Gte => "$gte",
            Op::Lt => "$lt",
            Op::Lte => "$lte",
            Op::In => "$in",
            Op::Nin => "$nin",
            Op::Exists => "$exists",
            Op::Regex => "$regex",
        }
    }
}

impl Filter {
    /// A predicate, checked as MongoDB checks it: `$in`/`$nin` need an array (`(BadValue) $in
    /// needs an array`), `$regex` a string (`(BadValue) $regex has to be a string`) that
    /// compiles within [`REGEX_SIZE_LIMIT`]. `$exists` takes any operand by its truth value
    /// (`false`, `0` and `null` are false), as MongoDB does.
    pub fn new(
        scope: impl Into<String>,
        attribute: impl Into<String>,
        op: Op,
        value: Value,
    ) -> Result<Filter, SearchError> {
        match op {
            Op::In | Op::Nin if !value.is_array() => {
                return Err(db_error(&format!(
                    "(BadValue) {} needs an array",
                    op.as_str()
                )));
            }
            Op::Regex => {
                compile_regex(&value)?;
            }
            _ => {}
        }
        Ok(Filter {
            scope: scope.into(),
            attribute: attribute.into(),
            op,
            value,
        })
    }

    /// MongoDB semantics of the predicate on the device's stored value for (scope, attribute);
    /// `identity`/`id` is the device id. A missing attribute behaves like MongoDB's missing
    /// field: only `$ne`, `$nin` and `$exists: false` match it.
    pub fn matches(&self, device: &InventoryDevice) -> bool {
        let (stored, dates) = if is_id(&self.scope, &self.attribute) {
            (Some(Item::Str(&device.id)), false)
        } else {
            let dates = is_date(&self.scope, &self.attribute);
            (
                device
                    .get(&self.scope, &self.attribute)
                    .map(|v| Item::of(v, dates)),
                dates,
            )
        };
        let present = stored.is_some();
        let stored = stored.unwrap_or(Item::Null);
        let operand = Item::of(&self.value, dates);
        let compare = |want: fn(Ordering) -> bool| {
            stored.any(|x| x.rank() == operand.rank() && want(x.cmp_total(&operand)))
        };
        match self.op {
            Op::Eq => stored.equals(&operand),
            Op::Ne => !stored.equals(&operand),
            Op::In => self.in_list(&stored, dates),
            Op::Nin => !self.in_list(&stored, dates),
            Op::Gt => compare(Ordering::is_gt),
            Op::Gte => compare(Ordering::is_ge),
            Op::Lt => compare(Ordering::is_lt),
            Op::Lte => compare(Ordering::is_le),
            Op::Exists => present == truthy(&self.value),
            Op::Regex => match &self.value {
                Value::String(pattern) => with_regex(pattern, |re| {
                    re.is_some_and(|re| stored.any(|x| matches!(x, Item::Str(s) if re.is_match(s))))
                }),
                _ => false,
            },
        }
    }

    fn in_list(&self, stored: &Item, dates: bool) -> bool {
        match &self.value {
            Value::Array(list) => list.iter().any(|v| stored.equals(&Item::of(v, dates))),
            _ => false,
        }
    }
}

fn compile_regex(value: &Value) -> Result<Regex, SearchError> {
    let Value::String(pattern) = value else {
        return Err(db_error("(BadValue) $regex has to be a string"));
    };
    build_regex(pattern)
}

fn build_regex(pattern: &str) -> Result<Regex, SearchError> {
    if pattern.contains('\0') {
        return Err(db_error(
            "(BadValue) Regular expression cannot contain an embedded null byte",
        ));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            let reason = text
                .lines()
                .find_map(|l| l.strip_prefix("error: "))
                .map_or_else(|| text.replace('\n', " "), str::to_owned);
            db_error(&format!(
                "(Location51091) Regular expression is invalid: {reason}"
            ))
        })
}

thread_local! {
    /// Compiled `$regex` patterns (`None`: does not compile), so that matching a filter
    /// against many devices compiles its pattern once per thread.
    static REGEX_CACHE: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

/// Patterns kept in [`REGEX_CACHE`] before it is emptied.
const REGEX_CACHE_MAX: usize = 64;

/// Runs `f` with the compiled `pattern` (`None` when it does not compile).
fn with_regex<R>(pattern: &str, f: impl FnOnce(Option<&Regex>) -> R) -> R {
    REGEX_CACHE.with(|cache| match cache.try_borrow_mut() {
        Ok(mut cache) => {
            if !cache.contains_key(pattern) {
                if cache.len() >= REGEX_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(pattern.to_owned(), build_regex(pattern).ok());
            }
            f(cache.get(pattern).and_then(Option::as_ref))
        }
        // Only if `f` itself matched a regex filter: compile without the cache.
        Err(_) => f(build_regex(pattern).ok().as_ref()),
    })
}

fn is_id(scope: &str, attribute: &str) -> bool {
    scope == IDENTITY && attribute == ID_ATTRIBUTE
}

fn is_date(scope: &str, attribute: &str) -> bool {
    scope == SYSTEM && DATE_ATTRIBUTES.contains(&attribute)
}

/// RFC 3339 to BSON date precision (milliseconds since the epoch).
fn parse_date(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// MongoDB's `BSONElement::trueValue` for the JSON types.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => true,
    }
}

/// A JSON value seen as a BSON value, for comparisons.
#[derive(Clone, Copy)]
enum Item<'a> {
    Null,
    Num(f64),
    Str(&'a str),
    Obj(&'a Map<String, Value>),
    /// Elements and whether strings in them are dates.
    Arr(&'a [Value], bool),
    Bool(bool),
    /// Milliseconds since the epoch.
    Date(i64),
}

impl<'a> Item<'a> {
    fn of(value: &'a Value, dates: bool) -> Item<'a> {
        match value {
            Value::Null => Item::Null,
            Value::Bool(b) => Item::Bool(*b),
            Value::Number(n) => Item::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => match dates.then(|| parse_date(s)).flatten() {
                Some(ms) => Item::Date(ms),
                None => Item::Str(s),
            },
            Value::Array(a) => Item::Arr(a, dates),
            Value::Object(o) => Item::Obj(o),
        }
    }

    /// MongoDB's canonical type order (BSON `canonicalizeBSONType`).
    fn rank(&self) -> u8 {
        match self {
            Item::Null => 5,
            Item::Num(_) => 10,
            Item::Str(_) => 15,
            Item::Obj(_) => 20,
            Item::Arr(..) => 25,
            Item::Bool(_) => 40,
            Item::Date(_) => 45,
        }
    }

    /// BSON comparison: by type bracket, then value.
    fn cmp_total(&self, other: &Item) -> Ordering {
        match (self, other) {
            (Item::Num(a), Item::Num(b)) => num_cmp(*a, *b),
            (Item::Str(a), Item::Str(b)) => a.cmp(b),
            (Item::Bool(a), Item::Bool(b)) => a.cmp(b),
            (Item::Date(a), Item::Date(b)) => a.cmp(b),
            (Item::Arr(a, da), Item::Arr(b, db)) => a
                .iter()
                .zip(b.iter())
                .map(|(x, y)| Item::of(x, *da).cmp_total(&Item::of(y, *db)))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.len().cmp(&b.len())),
            (Item::Obj(a), Item::Obj(b)) => a
                .iter()
                .zip(b.iter())
                .map(|((ka, va), (kb, vb))| {
                    let (va, vb) = (Item::of(va, false), Item::of(vb, false));
                    va.rank()
                        .cmp(&vb.rank())
                        .then_with(|| ka.cmp(kb))
                        .then_with(|| va.cmp_total(&vb))
                })
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.len().cmp(&b.len())),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// The value itself or, for an array, any element satisfies `f` (MongoDB's implicit
    /// array traversal, one level deep).
    fn any(&self, f: impl Fn(&Item) -> bool) -> bool {
        f(self)
            || match self {
                Item::Arr(items, dates) => items.iter().any(|v| f(&Item::of(v, *dates))),
                _ => false,
            }
    }

    /// `$eq`: the value, or an element of it, equals the operand.
    fn equals(&self, operand: &Item) -> bool {
        self.any(|x| x.rank() == operand.rank() && x.cmp_total(operand).is_eq())
    }
}

/// Numeric order with `-0 == 0`.
fn num_cmp(a: f64, b: f64) -> Ordering {
    let norm = |x: f64| if x == 0.0 { 0.0 } else { x };
    norm(a).total_cmp(&norm(b))
}

/// An `f64` with a total order (`-0 == 0`), for sort keys.
#[derive(Clone, Copy, Debug)]
pub struct OrdF64(pub f64);

impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        num_cmp(self.0, other.0)
    }
}

/// A device's value for one sort key, in MongoDB's sort order (variant order): an empty
/// array sorts before a missing attribute, then numbers, strings, booleans and dates.
/// Objects (never stored) sort as missing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue {
    /// An empty array.
    EmptyArray,
    /// No such attribute.
    Missing,
    /// A number.
    Number(OrdF64),
    /// A string, compared bytewise.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A date attribute (milliseconds since the epoch).
    Date(i64),
}

impl SortValue {
    fn of_scalar(value: &Value, dates: bool) -> SortValue {
        match value {
            Value::Number(n) => SortValue::Number(OrdF64(n.as_f64().unwrap_or(f64::NAN))),
            Value::String(s) => match dates.then(|| parse_date(s)).flatten() {
                Some(ms) => SortValue::Date(ms),
                None => SortValue::Text(s.clone()),
            },
            Value::Bool(b) => SortValue::Bool(*b),
            Value::Null | Value::Object(_) | Value::Array(_) => SortValue::Missing,
        }
    }
}

/// A device's values for `sort`: `identity/id` is the device id, an array sorts by its
/// smallest element ascending and its largest descending (MongoDB), date attributes by time.
pub fn sort_values(device: &InventoryDevice, sort: &[SortKey]) -> Vec<SortValue> {
    sort.iter()
        .map(|key| {
            if is_id(&key.scope, &key.attribute) {
                return SortValue::Text(device.id.clone());
            }
            let dates = is_date(&key.scope, &key.attribute);
            match device.get(&key.scope, &key.attribute) {
                None => SortValue::Missing,
                Some(Value::Array(items)) => {
                    let values = items.iter().map(|v| SortValue::of_scalar(v, dates));
                    let pick = if key.descending {
                        values.max()
                    } else {
                        values.min()
                    };
                    pick.unwrap_or(SortValue::EmptyArray)
                }
                Some(v) => SortValue::of_scalar(v, dates),
            }
        })
        .collect()
}

/// Orders two devices' [`sort_values`] for the same `sort`, applying each key's direction;
/// `Equal` when all keys tie (add a tie-break such as the id for a stable order).
pub fn compare_keys(a: &[SortValue], b: &[SortValue], sort: &[SortKey]) -> Ordering {
    a.iter()
        .zip(b.iter())
        .zip(sort.iter())
        .map(|((x, y), key)| {
            let o = x.cmp(y);
            if key.descending {
                o.reverse()
            } else {
                o
            }
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// A sort value with its key's direction, so that `Vec<Directed>` (and `(Vec<Directed>, id)`)
/// orders devices by [`compare_keys`] on its own, e.g. in a `BinaryHeap`. Only values built
/// for the same `sort` are comparable meaningfully.
#[derive(Clone, Debug)]
pub struct Directed {
    /// The value.
    pub value: SortValue,
    /// The key's `order: desc`.
    pub descending: bool,
}

impl PartialEq for Directed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Directed {}

impl PartialOrd for Directed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Directed {
    fn cmp(&self, other: &Self) -> Ordering {
        let o = self.value.cmp(&other.value);
        if self.descending {
            o.reverse()
        } else {
            o
        }
    }
}

/// [`sort_values`] with each key's direction applied: compare the results directly.
pub fn sort_key(device: &InventoryDevice, sort: &[SortKey]) -> Vec<Directed> {
    sort_values(device, sort)
        .into_iter()
        .zip(sort.iter())
        .map(|(value, key)| Directed {
            value,
            descending: key.descending,
        })
        .collect()
}

/// Upstream's `utils.TextToKeywords`: letters and digits kept, every other run of characters
/// becomes one space (none at the start).
fn text_to_keywords(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out
}

fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// The search terms of a `text` query as MongoDB's `$text` sees upstream's
/// `TextToKeywords(text)`: lower-cased, distinct, English stop words dropped (so a text of
/// only stop words or punctuation has no terms and matches nothing).
pub fn text_keywords(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text_to_keywords(text).split(' ') {
        let word = word.to_lowercase();
        if !word.is_empty() && !is_stop_word(&word) && !out.contains(&word) {
            out.push(word);
        }
    }
    out
}

/// Upstream's `utils.GetTextField`: the device id, its group and the non-empty string values
/// of identity/inventory/tags attributes, each through `TextToKeywords`.
fn text_field(device: &InventoryDevice) -> String {
    let mut text = text_to_keywords(&device.id);
    let mut add = |s: &str| {
        text.push(' ');
        text.push_str(&text_to_keywords(s));
    };
    if let Some(group) = device.group().filter(|g| !g.is_empty()) {
        add(group);
    }
    for scope in [IDENTITY, INVENTORY, TAGS] {
        for attr in device.scope(scope).into_iter().flat_map(|a| a.values()) {
            if let Value::String(s) = &attr.value {
                if !s.is_empty() {
                    add(s);
                }
            }
        }
    }
    text
}

/// MongoDB's text score (`FTSSpec::_scoreStringV2`, weight 1) of the device's text field for
/// `keywords` (from [`text_keywords`]): for each keyword found, `freq * (0.5 * count /
/// tokens + 0.5)`, where the n-th occurrence adds `1 / 2^(n-1)` to `freq` (times 1.1 when
/// the keyword is the whole field). 0.0 when no keyword occurs: the device is not a match.
pub fn text_score(device: &InventoryDevice, keywords: &[String]) -> f64 {
    if keywords.is_empty() {
        return 0.0;
    }
    let raw = text_field(device);
    // term -> (count, freq)
    let mut terms: HashMap<String, (f64, f64)> = HashMap::new();
    let mut tokens = 0.0_f64;
    for token in raw.split(' ').filter(|t| !t.is_empty()) {
        let term = token.to_lowercase();
        if is_stop_word(&term) {
            continue;
        }
        let (count, freq) = terms.entry(term).or_insert((0.0, 0.0));
        // The n-th occurrence (from 0) adds 1 / 2^n.
        *freq += 0.5_f64.powf(*count);
        *count += 1.0;
        tokens += 1.0;
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut score = 0.0;
    for keyword in keywords {
        if seen.contains(&keyword.as_str()) {
            continue;
        }
        seen.push(keyword);
        if let Some((count, freq)) = terms.get(keyword) {
            let coeff = 0.5 * count / tokens + 0.5;
            let whole = raw.len() == keyword.len() && raw.to_lowercase() == *keyword;
            let adjustment = if whole { 1.1 } else { 1.0 };
            score += freq * coeff * adjustment;
        }
    }
    score
}

/// The `attributes` projection: keeps only the listed (scope, name) attributes plus
/// `system/updated_ts` (upstream always projects it); an empty list keeps everything.
pub fn project(mut device: InventoryDevice, selectors: &[Selector]) -> InventoryDevice {
    if selectors.is_empty() {
        return device;
    }
    for (scope, attrs) in device.attributes.iter_mut() {
        attrs.retain(|name, _| {
            (scope == SYSTEM && name == "updated_ts")
                || selectors
                    .iter()
                    .any(|s| s.scope == *scope && s.attribute == *name)
        });
    }
    device.attributes.retain(|_, attrs| !attrs.is_empty());
    device
}

/// The (scope, name) pairs needed to evaluate the query's filters and sort and to build its
/// projection (`system/updated_ts` included; `identity/id` is the id, not an attribute),
/// sorted and distinct, so a store can read only those. `None` when whole devices are needed:
/// with `text` (the text field spans all attributes) or an empty projection.
pub fn needed_attributes(q: &SearchQuery) -> Option<Vec<(String, String)>> {
    if q.text.is_some() || q.attributes.is_empty() {
        return None;
    }
    let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
    needed.insert((SYSTEM.to_owned(), "updated_ts".to_owned()));
    let pairs = q
        .filters
        .iter()
        .map(|f| (&f.scope, &f.attribute))
        .chain(q.sort.iter().map(|s| (&s.scope, &s.attribute)))
        .filter(|(scope, attribute)| !is_id(scope, attribute))
        .chain(q.attributes.iter().map(|s| (&s.scope, &s.attribute)));
    for (scope, attribute) in pairs {
        needed.insert((scope.clone(), attribute.clone()));
    }
    Some(needed.into_iter().collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    const DB: &str = "failed to fetch devices: failed to search devices: ";

    fn device(id: &str, attrs: &[(&str, &str, Value)]) -> InventoryDevice {
        let mut d = InventoryDevice::new(id);
        for (scope, name, value) in attrs {
            d.set(scope, name, value.clone());
        }
        d
    }

    fn with(value: Value) -> InventoryDevice {
        device("d1", &[("inventory", "k", value)])
    }

    fn filter(op: &str, value: Value) -> Filter {
        filter_on("inventory", "k", op, value)
    }

    fn filter_on(scope: &str, attribute: &str, op: &str, value: Value) -> Filter {
        Filter::new(scope, attribute, Op::parse(op).unwrap(), value).unwrap()
    }

    fn parse(body: Value) -> Result<SearchQuery, SearchError> {
        SearchQuery::parse(body.to_string().as_bytes())
    }

    fn parse_err(body: Value) -> String {
        match parse(body) {
            Err(SearchError::Invalid(m)) => m,
            Ok(q) => panic!("accepted: {q:?}"),
        }
    }

    #[test]
    fn parses_the_spec_example() {
        let q = parse(json!({"page": 2, "per_page": 5,
            "filters": [{"scope": "inventory", "attribute": "idx", "type": "$eq", "value": 1}],
            "sort": [{"scope": "inventory", "attribute": "idx", "order": "desc"}],
            "attributes": [{"scope": "identity", "attribute": "mac"}],
            "device_ids": ["a", null], "text": "free text", "unknown": {"x": 1}}))
        .unwrap();
        assert_eq!(q.page, 2);
        assert_eq!(q.per_page, 5);
        assert_eq!(q.offset(), 5);
        assert_eq!(
            q.filters,
            vec![Filter::new("inventory", "idx", Op::Eq, json!(1)).unwrap()]
        );
        assert_eq!(
            q.sort,
            vec![SortKey {
                scope: "inventory".into(),
                attribute: "idx".into(),
                descending: true
            }]
        );
        assert_eq!(
            q.attributes,
            vec![Selector {
                scope: "identity".into(),
                attribute: "mac".into()
            }]
        );
        assert_eq!(q.device_ids, vec!["a".to_owned(), String::new()]);
        assert_eq!(q.text.as_deref(), Some("free text"));
    }

    #[test]
    fn defaults_nulls_and_decoding() {
        let d = SearchQuery::default();
        for body in [
            json!({}),
            json!(null),
            json!({"page": 0, "per_page": -3}),
            json!({"page": null, "per_page": null, "filters": null, "sort": null,
                   "attributes": null, "device_ids": null, "text": null}),
            json!({"text": ""}),
        ] {
            assert_eq!(parse(body).unwrap(), d);
        }
        assert_eq!(d.page, 1);
        assert_eq!(d.per_page, 20);
        assert_eq!(parse(json!({"per_page": 500})).unwrap().per_page, 500);
        // Go's decoder reads the first value only.
        assert_eq!(
            SearchQuery::parse(b"{\"page\": 3} trailing").unwrap().page,
            3
        );
        assert_eq!(
            SearchQuery::parse(b""),
            Err(SearchError::Invalid(
                "failed to decode request body: EOF".into()
            ))
        );
        assert_eq!(
            SearchQuery::parse(b"  \n"),
            Err(SearchError::Invalid(
                "failed to decode request body: EOF".into()
            ))
        );
        for body in [&b"{"[..], b"[]", b"{\"page\": 1.5}", b"{\"page\": \"1\"}"] {
            match SearchQuery::parse(body) {
                Err(SearchError::Invalid(m)) => {
                    assert!(m.starts_with("failed to decode request body: "), "{m}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn validation_messages_match_upstream() {
        let all_blank =
            "attribute: cannot be blank; scope: cannot be blank; type: cannot be blank; value: is required.";
        assert_eq!(parse_err(json!({"filters": [{}]})), all_blank);
        assert_eq!(parse_err(json!({"filters": [null]})), all_blank);
        let ok = json!({"scope": "inventory", "attribute": "a", "type": "$eq", "value": "v"});
        assert_eq!(
            parse_err(json!({"filters": [ok, {"scope": "system", "type": "$eq", "value": "v"}]})),
            "attribute: cannot be blank."
        );
        assert_eq!(
            parse_err(
                json!({"filters": [{"scope": "scope", "attribute": "a", "type": "$eq", "value": 1}]})
            ),
            "scope: must be one of system, identity, inventory, monitor, tags."
        );
        assert_eq!(
            parse_err(
                json!({"filters": [{"scope": "tags", "attribute": "a", "type": "$type", "value": 1}]})
            ),
            "type: must be a valid value."
        );
        assert_eq!(
            parse_err(
                json!({"filters": [{"scope": "tags", "attribute": "a", "type": "$eq", "value": null}]})
            ),
            "value: is required."
        );
        assert_eq!(
            parse_err(json!({"sort": [{}]})),
            "attribute: cannot be blank; order: cannot be blank; scope: cannot be blank."
        );
        assert_eq!(
            parse_err(json!({"sort": [{"scope": "system", "attribute": "a", "order": "up"}]})),
            "order: must be a valid value."
        );
        assert_eq!(
            parse_err(json!({"sort": [{"scope": "scope", "attribute": "a", "order": "asc"}]})),
            "scope: must be one of system, identity, inventory, monitor, tags."
        );
        assert_eq!(
            parse_err(json!({"attributes": [{"scope": "system"}]})),
            "attribute: cannot be blank."
        );
        assert_eq!(
            parse_err(json!({"attributes": [{"scope": "scope", "attribute": "a"}]})),
            "scope: must be one of system, identity, inventory, monitor, tags."
        );
        assert_eq!(
            parse_err(json!({"per_page": 501})),
            "per_page: must be no greater than 500."
        );
        // Upstream's order: filters, sort, attributes, per_page; then the database.
        assert_eq!(
            parse_err(json!({"per_page": 501, "sort": [{"scope": "system", "attribute": "a"}]})),
            "order: cannot be blank."
        );
        assert_eq!(
            parse_err(
                json!({"filters": [{"scope": "tags", "attribute": "a", "type": "$ltne", "value": 1}],
                             "per_page": 501})
            ),
            "per_page: must be no greater than 500."
        );
    }

    #[test]
    fn database_errors() {
        let f = |t: &str, v: Value| {
            parse_err(
                json!({"filters": [{"scope": "inventory", "attribute": "a", "type": t, "value": v}]}),
            )
        };
        assert_eq!(
            f("$ltne", json!(1)),
            format!("{DB}(BadValue) unknown operator: $ltne")
        );
        assert_eq!(
            f("$in", json!("foo")),
            format!("{DB}(BadValue) $in needs an array")
        );
        assert_eq!(
            f("$nin", json!({"a": 1})),
            format!("{DB}(BadValue) $nin needs an array")
        );
        assert_eq!(
            f("$regex", json!(5)),
            format!("{DB}(BadValue) $regex has to be a string")
        );
        assert_eq!(
            f("$regex", json!("a\u{0}b")),
            format!("{DB}(BadValue) Regular expression cannot contain an embedded null byte")
        );
        let bad = f("$regex", json!("(abc"));
        assert!(
            bad.starts_with(&format!(
                "{DB}(Location51091) Regular expression is invalid: "
            )),
            "{bad}"
        );
        assert!(!bad.contains('\n'), "{bad}");
        let huge = f("$regex", json!("\\w{1000}{1000}"));
        assert!(huge.contains("Regular expression is invalid"), "{huge}");
        // Not a Mongo error: $exists takes any non-null operand.
        assert!(parse(json!({"filters": [{"scope": "inventory", "attribute": "a", "type": "$exists", "value": "x"}]})).is_ok());
    }

    #[test]
    fn eq_is_type_sensitive() {
        assert!(filter("$eq", json!("1")).matches(&with(json!("1"))));
        assert!(!filter("$eq", json!(1)).matches(&with(json!("1"))));
        assert!(!filter("$eq", json!("1")).matches(&with(json!(1))));
        assert!(filter("$eq", json!(1.0)).matches(&with(json!(1))));
        assert!(filter("$eq", json!(1)).matches(&with(json!(1.0))));
        assert!(!filter("$eq", json!(true)).matches(&with(json!("true"))));
        assert!(!filter("$eq", json!("x")).matches(&InventoryDevice::new("d1")));
        assert!(filter("$eq", json!("")).matches(&with(json!(""))));
        // Other scope, same name.
        assert!(!filter_on("tags", "k", "$eq", json!("1")).matches(&with(json!("1"))));
    }

    #[test]
    fn eq_on_arrays() {
        let d = with(json!(["a", "b"]));
        assert!(filter("$eq", json!("a")).matches(&d));
        assert!(filter("$eq", json!("b")).matches(&d));
        assert!(!filter("$eq", json!("c")).matches(&d));
        assert!(filter("$eq", json!(["a", "b"])).matches(&d));
        assert!(!filter("$eq", json!(["b", "a"])).matches(&d));
        assert!(!filter("$eq", json!(["a"])).matches(&d));
        assert!(!filter("$eq", json!("a")).matches(&with(json!("ab"))));
        assert!(filter("$eq", json!(2)).matches(&with(json!([1, 2.0]))));
        assert!(filter("$eq", json!([])).matches(&with(json!([]))));
        assert!(!filter("$eq", json!(["a"])).matches(&with(json!("a"))));
    }

    #[test]
    fn ne_matches_missing() {
        assert!(filter("$ne", json!("x")).matches(&InventoryDevice::new("d1")));
        assert!(!filter("$ne", json!("x")).matches(&with(json!("x"))));
        assert!(filter("$ne", json!("x")).matches(&with(json!("y"))));
        assert!(filter("$ne", json!(1)).matches(&with(json!("1"))));
        assert!(!filter("$ne", json!("a")).matches(&with(json!(["a", "b"]))));
        assert!(filter("$ne", json!("c")).matches(&with(json!(["a", "b"]))));
    }

    #[test]
    fn in_and_nin() {
        let f = filter("$in", json!(["x", 2]));
        assert!(f.matches(&with(json!("x"))));
        assert!(f.matches(&with(json!(2.0))));
        assert!(!f.matches(&with(json!("2"))));
        assert!(f.matches(&with(json!(["q", "x"]))));
        assert!(!f.matches(&InventoryDevice::new("d1")));
        assert!(!filter("$in", json!([])).matches(&with(json!("x"))));
        assert!(filter("$in", json!([[1, 2]])).matches(&with(json!([1, 2]))));
        assert!(filter("$in", json!([null])).matches(&InventoryDevice::new("d1")));

        let f = filter("$nin", json!(["x", 2]));
        assert!(!f.matches(&with(json!("x"))));
        assert!(!f.matches(&with(json!(["x", "y"]))));
        assert!(f.matches(&with(json!("2"))));
        assert!(f.matches(&InventoryDevice::new("d1")));
        assert!(filter("$nin", json!([])).matches(&with(json!("x"))));
        assert!(!filter("$nin", json!([null])).matches(&InventoryDevice::new("d1")));
    }

    #[test]
    fn comparisons_are_same_type() {
        let n = with(json!(5));
        assert!(filter("$gt", json!(4)).matches(&n));
        assert!(!filter("$gt", json!(5)).matches(&n));
        assert!(filter("$gte", json!(5.0)).matches(&n));
        assert!(filter("$lt", json!(5.5)).matches(&n));
        assert!(!filter("$lt", json!(5)).matches(&n));
        assert!(filter("$lte", json!(5)).matches(&n));
        assert!(!filter("$lt", json!("9")).matches(&n));
        assert!(!filter("$gt", json!("0")).matches(&n));

        let s = with(json!("b"));
        assert!(filter("$gt", json!("a")).matches(&s));
        assert!(filter("$lt", json!("ba")).matches(&s));
        assert!(!filter("$gt", json!(1)).matches(&s));
        assert!(!filter("$lt", json!(1)).matches(&s));
        assert!(filter("$lt", json!("9")).matches(&with(json!("10"))));

        let a = with(json!([1, 10]));
        assert!(filter("$gt", json!(5)).matches(&a));
        assert!(filter("$lt", json!(5)).matches(&a));
        assert!(!filter("$gt", json!(10)).matches(&a));
        assert!(filter("$gte", json!(10)).matches(&a));
        assert!(!filter("$lt", json!(1)).matches(&a));
        assert!(filter("$lte", json!([1, 10])).matches(&a));
        assert!(filter("$gt", json!([1, 9])).matches(&a));

        for op in ["$gt", "$gte", "$lt", "$lte"] {
            assert!(!filter(op, json!(0)).matches(&InventoryDevice::new("d1")));
            assert!(!filter(op, json!("")).matches(&InventoryDevice::new("d1")));
        }
    }

    #[test]
    fn dates_compare_as_dates() {
        let d = device(
            "d1",
            &[
                ("system", "created_ts", json!("2024-01-01T00:00:00Z")),
                ("inventory", "when", json!("2024-01-01T00:00:00Z")),
            ],
        );
        let created = |op: &str, v: &str| filter_on("system", "created_ts", op, json!(v));
        // Lexicographically ".5Z" < "Z"; in time it is later.
        assert!(created("$lt", "2024-01-01T00:00:00.5Z").matches(&d));
        assert!(created("$gt", "2023-12-31T23:59:59.999Z").matches(&d));
        assert!(created("$eq", "2024-01-01T01:00:00+01:00").matches(&d));
        assert!(filter_on(
            "system",
            "created_ts",
            "$in",
            json!(["x", "2024-01-01T00:00:00.000Z"])
        )
        .matches(&d));
        // A string that is no date is another type.
        assert!(!created("$gt", "2000").matches(&d));
        assert!(!created("$regex", "^2024").matches(&d));
        assert!(created("$exists", "x").matches(&d));
        // Other attributes are strings.
        let when = |op: &str, v: &str| filter_on("inventory", "when", op, json!(v));
        assert!(!when("$lt", "2024-01-01T00:00:00.5Z").matches(&d));
        assert!(when("$regex", "^2024").matches(&d));
    }

    #[test]
    fn exists() {
        let d = with(json!("v"));
        let empty = InventoryDevice::new("d1");
        assert!(filter("$exists", json!(true)).matches(&d));
        assert!(!filter("$exists", json!(true)).matches(&empty));
        assert!(filter("$exists", json!(false)).matches(&empty));
        assert!(!filter("$exists", json!(false)).matches(&d));
        // MongoDB's truth value of the operand.
        assert!(filter("$exists", json!(0)).matches(&empty));
        assert!(filter("$exists", json!(1)).matches(&d));
        assert!(filter("$exists", json!("false")).matches(&d));
        assert!(filter("$exists", json!([])).matches(&d));
    }

    #[test]
    fn regex() {
        assert!(filter("$regex", json!("^ab")).matches(&with(json!("abc"))));
        assert!(filter("$regex", json!("b")).matches(&with(json!("abc"))));
        assert!(!filter("$regex", json!("^b")).matches(&with(json!("abc"))));
        assert!(!filter("$regex", json!("AB")).matches(&with(json!("abc"))));
        assert!(filter("$regex", json!("(?i)AB")).matches(&with(json!("abc"))));
        assert!(!filter("$regex", json!("1")).matches(&with(json!(1))));
        assert!(filter("$regex", json!("^z")).matches(&with(json!(["abc", "zed"]))));
        assert!(!filter("$regex", json!("^z")).matches(&with(json!(["abc"]))));
        assert!(!filter("$regex", json!("")).matches(&InventoryDevice::new("d1")));
        assert!(filter("$regex", json!("")).matches(&with(json!(""))));
        // Built directly with operands MongoDB would reject: no match.
        let bad = |op, value| Filter {
            scope: "inventory".into(),
            attribute: "k".into(),
            op,
            value,
        };
        assert!(!bad(Op::Regex, json!("(")).matches(&with(json!("("))));
        assert!(!bad(Op::Regex, json!(1)).matches(&with(json!(1))));
        assert!(!bad(Op::In, json!("x")).matches(&with(json!("x"))));
        assert!(bad(Op::Nin, json!("x")).matches(&with(json!("x"))));
        // Many patterns: the cache is bounded and stays correct.
        for i in 0..(REGEX_CACHE_MAX * 2) {
            let f = filter("$regex", json!(format!("^v{i}$")));
            assert!(f.matches(&with(json!(format!("v{i}")))));
            assert!(!f.matches(&with(json!("v"))));
        }
    }

    #[test]
    fn identity_id_is_the_device_id() {
        let d = device("dev-7", &[("identity", "id", json!("other"))]);
        let f = |op: &str, v: Value| filter_on("identity", "id", op, v);
        assert!(f("$eq", json!("dev-7")).matches(&d));
        assert!(!f("$eq", json!("other")).matches(&d));
        assert!(f("$in", json!(["x", "dev-7"])).matches(&d));
        assert!(f("$ne", json!("other")).matches(&d));
        assert!(f("$regex", json!("^dev-")).matches(&d));
        assert!(f("$gt", json!("dev-6")).matches(&d));
        assert!(f("$exists", json!(true)).matches(&InventoryDevice::new("x")));
        assert!(!f("$exists", json!(false)).matches(&InventoryDevice::new("x")));
        // Only identity/id is special.
        assert!(filter_on("inventory", "id", "$exists", json!(false)).matches(&d));
    }

    #[test]
    fn query_matches_ids_and_all_filters() {
        let q = parse(json!({"device_ids": ["a", "b"], "filters": [
            {"scope": "inventory", "attribute": "k", "type": "$eq", "value": 1},
            {"scope": "inventory", "attribute": "j", "type": "$exists", "value": false}]}))
        .unwrap();
        let d = |id: &str, attrs: &[(&str, &str, Value)]| device(id, attrs);
        assert!(q.matches(&d("a", &[("inventory", "k", json!(1))])));
        assert!(!q.matches(&d("c", &[("inventory", "k", json!(1))])));
        assert!(!q.matches(&d("a", &[("inventory", "k", json!(2))])));
        assert!(!q.matches(&d(
            "b",
            &[("inventory", "k", json!(1)), ("inventory", "j", json!(1))]
        )));
        assert!(SearchQuery::default().matches(&d("z", &[])));
    }

    fn sorted(devices: &[InventoryDevice], sort: &[SortKey]) -> Vec<String> {
        let mut keyed: Vec<(Vec<SortValue>, String)> = devices
            .iter()
            .map(|d| (sort_values(d, sort), d.id.clone()))
            .collect();
        keyed.sort_by(|a, b| compare_keys(&a.0, &b.0, sort).then_with(|| a.1.cmp(&b.1)));
        let ids: Vec<String> = keyed.into_iter().map(|(_, id)| id).collect();
        // `sort_key` orders the same way.
        let mut directed: Vec<(Vec<Directed>, String)> = devices
            .iter()
            .map(|d| (sort_key(d, sort), d.id.clone()))
            .collect();
        directed.sort();
        assert_eq!(
            directed.into_iter().map(|(_, id)| id).collect::<Vec<_>>(),
            ids
        );
        ids
    }

    fn key(scope: &str, attribute: &str, descending: bool) -> SortKey {
        SortKey {
            scope: scope.into(),
            attribute: attribute.into(),
            descending,
        }
    }

    #[test]
    fn sort_like_mongo() {
        let devices = vec![
            device("missing", &[("inventory", "j", json!(1))]),
            device("three", &[("inventory", "k", json!(3))]),
            device("text-a", &[("inventory", "k", json!("a"))]),
            device("text-10", &[("inventory", "k", json!("10"))]),
            device("empty", &[("inventory", "k", json!([]))]),
            device("array", &[("inventory", "k", json!([1, 10]))]),
            device("float", &[("inventory", "k", json!(2.5))]),
        ];
        assert_eq!(
            sorted(&devices, &[key("inventory", "k", false)]),
            ["empty", "missing", "array", "float", "three", "text-10", "text-a"]
        );
        // Descending: an array sorts by its largest element.
        assert_eq!(
            sorted(&devices, &[key("inventory", "k", true)]),
            ["text-a", "text-10", "array", "three", "float", "missing", "empty"]
        );
    }

    #[test]
    fn two_key_sort_with_mixed_types() {
        let devices = vec![
            device(
                "d1",
                &[("inventory", "k", json!("x")), ("tags", "n", json!(1))],
            ),
            device(
                "d2",
                &[("inventory", "k", json!("x")), ("tags", "n", json!("1"))],
            ),
            device(
                "d3",
                &[("inventory", "k", json!(7)), ("tags", "n", json!(5))],
            ),
            device("d4", &[("inventory", "k", json!("x"))]),
            device(
                "d5",
                &[("inventory", "k", json!(7)), ("tags", "n", json!(9))],
            ),
        ];
        let sort = [key("inventory", "k", false), key("tags", "n", true)];
        assert_eq!(sorted(&devices, &sort), ["d5", "d3", "d2", "d1", "d4"]);
        let sort = [key("tags", "n", false), key("identity", "id", true)];
        assert_eq!(sorted(&devices, &sort), ["d4", "d1", "d3", "d5", "d2"]);
        assert_eq!(
            compare_keys(
                &sort_values(&devices[0], &sort),
                &sort_values(&devices[0], &sort),
                &sort
            ),
            Ordering::Equal
        );
    }

    #[test]
    fn sort_dates_by_time_and_id() {
        let devices = vec![
            device(
                "a",
                &[("system", "created_ts", json!("2024-01-01T00:00:00Z"))],
            ),
            device(
                "b",
                &[("system", "created_ts", json!("2024-01-01T00:00:00.5Z"))],
            ),
            device(
                "c",
                &[("system", "created_ts", json!("2023-06-01T00:00:00Z"))],
            ),
        ];
        assert_eq!(
            sorted(&devices, &[key("system", "created_ts", false)]),
            ["c", "a", "b"]
        );
        assert_eq!(
            sorted(&devices, &[key("identity", "id", true)]),
            ["c", "b", "a"]
        );
        assert_eq!(
            sort_values(&devices[0], &[key("system", "created_ts", false)]),
            vec![SortValue::Date(1_704_067_200_000)]
        );
        assert!(SortValue::Number(OrdF64(-0.0)) == SortValue::Number(OrdF64(0.0)));
    }

    #[test]
    fn keywords() {
        assert_eq!(
            text_keywords("Hello, World! the hello-world  RPi4"),
            ["hello", "world", "rpi4"]
        );
        assert!(text_keywords("the and of").is_empty());
        assert!(text_keywords("--- !!!").is_empty());
        assert!(text_keywords("").is_empty());
        assert_eq!(text_keywords("Ünïcode ÄÖ"), ["ünïcode", "äö"]);
        assert_eq!(text_to_keywords("--a--b c!"), "a b c ");
        let mut sorted = STOP_WORDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            STOP_WORDS.to_vec(),
            "binary search needs a sorted list"
        );
    }

    #[test]
    fn scores() {
        let d = device(
            "dev-1",
            &[
                ("inventory", "device_type", json!("raspberry pi")),
                ("tags", "name", json!("Kitchen Pi")),
                ("system", "group", json!("Garden")),
                ("system", "other", json!("system strings are not indexed")),
                ("inventory", "list", json!(["arrays", "neither"])),
                ("identity", "mac", json!("")),
            ],
        );
        let score = |q: &str| text_score(&d, &text_keywords(q));
        // Tokens: dev 1 garden raspberry pi kitchen pi (7).
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(score("pi"), 1.5 * (0.5 * 2.0 / 7.0 + 0.5)));
        assert!(close(score("RASPBERRY"), 0.5 / 7.0 + 0.5));
        assert!(close(
            score("raspberry pi"),
            score("pi") + score("raspberry")
        ));
        assert!(score("raspberry pi") > score("pi"));
        assert!(score("pi") > score("kitchen"));
        assert!(score("garden") > 0.0);
        assert!(score("dev") > 0.0);
        assert_eq!(score("system"), 0.0);
        assert_eq!(score("arrays"), 0.0);
        assert_eq!(score("nothing here"), 0.0);
        assert_eq!(score("the"), 0.0);
        assert_eq!(text_score(&d, &[]), 0.0);
        assert_eq!(score("pi pi"), score("pi"));
        assert_eq!(score("pi"), score("pi"));
        // The whole field is the keyword: MongoDB's 1.1 boost.
        let alone = device("abc", &[]);
        assert!(close(text_score(&alone, &text_keywords("ABC")), 1.1));
        // Prefixes do not match.
        assert_eq!(score("rasp"), 0.0);
    }

    #[test]
    fn projection() {
        let d = device(
            "d1",
            &[
                ("identity", "mac", json!("m")),
                ("identity", "sn", json!("s")),
                ("inventory", "k", json!(1)),
                ("system", "updated_ts", json!("2024-01-01T00:00:00Z")),
                ("system", "group", json!("g")),
            ],
        );
        assert_eq!(project(d.clone(), &[]), d);
        let p = project(
            d.clone(),
            &[
                Selector {
                    scope: "identity".into(),
                    attribute: "mac".into(),
                },
                Selector {
                    scope: "tags".into(),
                    attribute: "nope".into(),
                },
            ],
        );
        assert_eq!(p.id, "d1");
        assert_eq!(p.get("identity", "mac"), Some(&json!("m")));
        assert_eq!(p.get("identity", "sn"), None);
        assert_eq!(p.get("system", "group"), None);
        assert!(p.get("system", "updated_ts").is_some());
        assert!(p.scope("inventory").is_none());
        assert_eq!(p.attributes.len(), 2);
    }

    #[test]
    fn needed() {
        let mut q = parse(json!({
            "filters": [{"scope": "inventory", "attribute": "k", "type": "$ne", "value": 1},
                        {"scope": "identity", "attribute": "id", "type": "$eq", "value": "x"}],
            "sort": [{"scope": "tags", "attribute": "name", "order": "asc"},
                     {"scope": "identity", "attribute": "id", "order": "asc"}],
            "attributes": [{"scope": "identity", "attribute": "mac"},
                           {"scope": "inventory", "attribute": "k"}]}))
        .unwrap();
        let pair = |s: &str, a: &str| (s.to_owned(), a.to_owned());
        assert_eq!(
            needed_attributes(&q),
            Some(vec![
                pair("identity", "mac"),
                pair("inventory", "k"),
                pair("system", "updated_ts"),
                pair("tags", "name"),
            ])
        );
        q.text = Some("x".into());
        assert_eq!(needed_attributes(&q), None);
        q.text = None;
        q.attributes.clear();
        assert_eq!(needed_attributes(&q), None);
    }
}
