//! A device's attributes keyed by (scope, name), the value rules (strings, numbers, arrays of
//! one of them), merge/replace semantics, v1 filter matching, and the JSON shape of a device.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const INVENTORY: &str = "inventory";
pub const IDENTITY: &str = "identity";
pub const SYSTEM: &str = "system";
pub const TAGS: &str = "tags";
pub const SCOPES: [&str; 5] = [SYSTEM, IDENTITY, INVENTORY, "monitor", TAGS];
/// Per-device caps (upstream `limit_attributes`, `limit_tags`).
pub const LIMIT_ATTRIBUTES: usize = 100;
pub const LIMIT_TAGS: usize = 20;
/// A device is one DynamoDB item (400 KB max): its attributes (as JSON) stay below this, well
/// under the item limit, so every read of a device stays cheap (upstream has no such limit).
pub const MAX_DEVICE_BYTES: usize = 64 * 1024;
/// Longest attribute name and scope, in bytes (upstream `validation.Length(1, 1024)` on
/// `DeviceAttribute.Name` and `.Scope`, model/device.go).
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest string value, alone or as an array element, and longest description, in bytes
/// (upstream has no limit).
pub const MAX_STRING_BYTES: usize = 4 * 1024;
/// Most elements of an array value (upstream has no limit).
pub const MAX_ARRAY_ELEMENTS: usize = 1024;
/// Largest value as JSON, so an array of many long strings is bounded too (upstream has no
/// limit).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Most attributes one request may carry: every scope's cap together (inventory, tags, the
/// identity from deviceauth and a few system ones), refused before any value is looked at. The
/// per-scope caps ([`LIMIT_ATTRIBUTES`], [`LIMIT_TAGS`]) are checked on the merged device.
pub const MAX_ATTRIBUTES_PER_REQUEST: usize = 256;
/// Upstream's text for a request over a scope's attribute limit (inv/inventory.go).
pub const TOO_MANY_ATTRIBUTES: &str = "the number of attributes in the scope is above the limit";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attr {
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An attribute as clients send it.
#[derive(Clone, Debug, Deserialize)]
pub struct AttributeIn {
    pub name: String,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct InventoryDevice {
    pub id: String,
    /// scope -> name -> attribute.
    #[serde(default)]
    pub attributes: BTreeMap<String, BTreeMap<String, Attr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_etag: Option<String>,
    /// Revision of the last applied status update from deviceauth.
    #[serde(default)]
    pub status_revision: i64,
    /// Optimistic concurrency.
    #[serde(default)]
    pub version: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Checks a value: string, number, or an array whose elements are all strings or all numbers;
/// within [`MAX_STRING_BYTES`] per string, [`MAX_ARRAY_ELEMENTS`] and [`MAX_VALUE_BYTES`].
pub fn check_value(value: &Value) -> Result<(), Invalid> {
    let too_long = |s: &str| s.len() > MAX_STRING_BYTES;
    match value {
        Value::String(s) if too_long(s) => Err(Invalid(format!(
            "value: the length must be no more than {MAX_STRING_BYTES}."
        ))),
        Value::String(_) | Value::Number(_) => Ok(()),
        Value::Array(items) => {
            let all_strings = items.iter().all(Value::is_string);
            let all_numbers = items.iter().all(Value::is_number);
            if !(all_strings || all_numbers) {
                return Err(Invalid(
                    "array values must be of consistent type: string or float64".into(),
                ));
            }
            if items.len() > MAX_ARRAY_ELEMENTS {
                return Err(Invalid(format!(
                    "value: an array may have at most {MAX_ARRAY_ELEMENTS} elements."
                )));
            }
            if items.iter().filter_map(Value::as_str).any(too_long) {
                return Err(Invalid(format!(
                    "value: the length of an array element must be no more than {MAX_STRING_BYTES}."
                )));
            }
            if serde_json::to_vec(value).map_or(true, |v| v.len() > MAX_VALUE_BYTES) {
                return Err(Invalid(format!(
                    "value: the array must be no more than {MAX_VALUE_BYTES} bytes as JSON."
                )));
            }
            Ok(())
        }
        _ => Err(Invalid(
            "supported types are string, float64, and arrays thereof".into(),
        )),
    }
}

/// Validates incoming attributes and returns them as (scope, name, attr) for `default_scope`
/// (or each attribute's own scope when `own_scope`).
pub fn validate(
    input: Vec<AttributeIn>,
    default_scope: &str,
    own_scope: bool,
) -> Result<Vec<(String, String, Attr)>, Invalid> {
    if input.len() > MAX_ATTRIBUTES_PER_REQUEST {
        return Err(Invalid(TOO_MANY_ATTRIBUTES.into()));
    }
    input
        .into_iter()
        .map(|a| {
            if a.name.is_empty() {
                return Err(Invalid("name: cannot be blank.".into()));
            }
            if a.name.len() > MAX_NAME_BYTES {
                return Err(Invalid(format!(
                    "name: the length must be between 1 and {MAX_NAME_BYTES}."
                )));
            }
            if a.description
                .as_deref()
                .is_some_and(|d| d.len() > MAX_STRING_BYTES)
            {
                return Err(Invalid(format!(
                    "description: the length must be no more than {MAX_STRING_BYTES}."
                )));
            }
            let value = a
                .value
                .ok_or_else(|| Invalid("value: cannot be blank.".into()))?;
            check_value(&value)?;
            let scope = match (own_scope, a.scope) {
                (true, Some(s)) if !s.is_empty() => s,
                _ => default_scope.to_owned(),
            };
            if scope.len() > MAX_NAME_BYTES {
                return Err(Invalid(format!(
                    "scope: the length must be between 1 and {MAX_NAME_BYTES}."
                )));
            }
            Ok((
                scope,
                a.name,
                Attr {
                    value,
                    description: a.description,
                },
            ))
        })
        .collect()
}

impl InventoryDevice {
    pub fn new(id: &str) -> Self {
        InventoryDevice {
            id: id.into(),
            ..Default::default()
        }
    }

    pub fn scope(&self, scope: &str) -> Option<&BTreeMap<String, Attr>> {
        self.attributes.get(scope)
    }

    pub fn get(&self, scope: &str, name: &str) -> Option<&Value> {
        self.attributes.get(scope)?.get(name).map(|a| &a.value)
    }

    pub fn set(&mut self, scope: &str, name: &str, value: Value) {
        self.attributes.entry(scope.into()).or_default().insert(
            name.into(),
            Attr {
                value,
                description: None,
            },
        );
    }

    pub fn remove(&mut self, scope: &str, name: &str) {
        if let Some(attrs) = self.attributes.get_mut(scope) {
            attrs.remove(name);
            if attrs.is_empty() {
                self.attributes.remove(scope);
            }
        }
    }

    /// Upserts `attrs` (PATCH); with `replace`, attributes of `scope` not given are removed (PUT).
    pub fn apply(&mut self, scope: &str, attrs: Vec<(String, String, Attr)>, replace: bool) {
        if replace {
            self.attributes.remove(scope);
        }
        for (attr_scope, name, attr) in attrs {
            self.attributes
                .entry(attr_scope)
                .or_default()
                .insert(name, attr);
        }
    }

    pub fn count(&self, scope: &str) -> usize {
        self.attributes.get(scope).map_or(0, BTreeMap::len)
    }

    pub fn group(&self) -> Option<&str> {
        self.get(SYSTEM, "group").and_then(Value::as_str)
    }

    /// Size of the attributes as JSON, to keep the item under DynamoDB's limit.
    pub fn size(&self) -> usize {
        serde_json::to_vec(&self.attributes).map_or(usize::MAX, |v| v.len())
    }

    /// Device JSON: `{"id", "updated_ts", "attributes": [...]}`.
    pub fn to_json(&self) -> Value {
        let mut attributes = Vec::new();
        for (scope, attrs) in &self.attributes {
            for (name, attr) in attrs {
                let mut a = json!({"name": name, "value": attr.value, "scope": scope});
                if let Some(d) = &attr.description {
                    a["description"] = Value::String(d.clone());
                }
                attributes.push(a);
            }
        }
        let mut v = json!({"id": self.id, "attributes": attributes});
        if let Some(ts) = self.get(SYSTEM, "updated_ts") {
            v["updated_ts"] = ts.clone();
        }
        v
    }
}

/// v1 list equality: the stored value equals the text, or the text as a number; arrays match
/// when any element does.
pub fn matches_text(stored: &Value, text: &str) -> bool {
    match stored {
        Value::String(s) => s == text,
        Value::Number(n) => text
            .parse::<f64>()
            .ok()
            .zip(n.as_f64())
            .is_some_and(|(a, b)| a == b),
        Value::Array(items) => items.iter().any(|i| matches_text(i, text)),
        _ => false,
    }
}

/// Ordering used by v1 `sort`: numbers before strings, each in natural order.
pub fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Number(_)), Some(_)) => Ordering::Less,
        (Some(_), Some(Value::Number(_))) => Ordering::Greater,
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// Group names: non-empty, `[A-Za-z0-9_-]`, at most 256 characters.
pub fn check_group_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Invalid(
            "group: must be a valid group name (letters, digits, '_' and '-')".into(),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn attr(name: &str, value: Value) -> AttributeIn {
        AttributeIn {
            name: name.into(),
            value: Some(value),
            description: None,
            scope: None,
        }
    }

    #[test]
    fn value_rules() {
        assert!(check_value(&json!("x")).is_ok());
        assert!(check_value(&json!(1.5)).is_ok());
        assert!(check_value(&json!(["a", "b"])).is_ok());
        assert!(check_value(&json!([1, 2])).is_ok());
        assert!(check_value(&json!([])).is_ok());
        assert!(check_value(&json!(["a", 1])).is_err());
        assert!(check_value(&json!(null)).is_err());
        assert!(check_value(&json!(true)).is_err());
        assert!(check_value(&json!({"a": 1})).is_err());
    }

    #[test]
    fn patch_merges_put_replaces() {
        let mut d = InventoryDevice::new("d");
        d.apply(
            INVENTORY,
            validate(
                vec![attr("a", json!("1")), attr("b", json!("2"))],
                INVENTORY,
                false,
            )
            .unwrap(),
            false,
        );
        d.apply(
            INVENTORY,
            validate(vec![attr("b", json!("3"))], INVENTORY, false).unwrap(),
            false,
        );
        assert_eq!(d.get(INVENTORY, "a"), Some(&json!("1")));
        assert_eq!(d.get(INVENTORY, "b"), Some(&json!("3")));
        d.apply(
            INVENTORY,
            validate(vec![attr("c", json!(["x"]))], INVENTORY, false).unwrap(),
            true,
        );
        assert_eq!(d.get(INVENTORY, "a"), None);
        assert_eq!(d.count(INVENTORY), 1);
    }

    #[test]
    fn value_limits() {
        let s = |n: usize| Value::String("x".repeat(n));
        assert!(check_value(&s(MAX_STRING_BYTES)).is_ok());
        assert!(check_value(&s(MAX_STRING_BYTES + 1)).is_err());
        assert!(check_value(&s(10_000)).is_err());
        // Array elements: each string capped, the count capped, the whole capped.
        assert!(check_value(&json!([s(MAX_STRING_BYTES)])).is_ok());
        assert!(check_value(&json!([s(1), s(MAX_STRING_BYTES + 1)])).is_err());
        let numbers = Value::Array(vec![json!(1); MAX_ARRAY_ELEMENTS]);
        assert!(check_value(&numbers).is_ok());
        let too_many = Value::Array(vec![json!(1); MAX_ARRAY_ELEMENTS + 1]);
        assert!(check_value(&too_many).is_err());
        let four = Value::Array(vec![s(MAX_STRING_BYTES - 100); 4]);
        assert!(check_value(&four).is_ok());
        let five = Value::Array(vec![s(MAX_STRING_BYTES - 100); 5]);
        assert!(
            check_value(&five).is_err(),
            "over MAX_VALUE_BYTES as a whole"
        );
    }

    #[test]
    fn request_limits() {
        let named = |n: usize| attr(&"n".repeat(n), json!("v"));
        assert!(validate(vec![named(MAX_NAME_BYTES)], INVENTORY, false).is_ok());
        assert_eq!(
            validate(vec![named(MAX_NAME_BYTES + 1)], INVENTORY, false),
            Err(Invalid(
                "name: the length must be between 1 and 1024.".into()
            ))
        );
        assert_eq!(
            validate(vec![named(0)], INVENTORY, false),
            Err(Invalid("name: cannot be blank.".into()))
        );
        let mut described = attr("d", json!("v"));
        described.description = Some("d".repeat(MAX_STRING_BYTES + 1));
        assert!(validate(vec![described], INVENTORY, false).is_err());
        let mut scoped = attr("s", json!("v"));
        scoped.scope = Some("s".repeat(MAX_NAME_BYTES + 1));
        assert!(validate(vec![scoped], INVENTORY, true).is_err());

        let many = |n: usize| -> Vec<AttributeIn> {
            (0..n).map(|i| attr(&format!("a{i}"), json!("v"))).collect()
        };
        assert!(validate(many(MAX_ATTRIBUTES_PER_REQUEST), INVENTORY, false).is_ok());
        assert_eq!(
            validate(many(2000), INVENTORY, false),
            Err(Invalid(TOO_MANY_ATTRIBUTES.into()))
        );
        assert!(validate(
            vec![attr("big", json!("x".repeat(10_000)))],
            INVENTORY,
            false
        )
        .is_err());
    }

    #[test]
    fn v1_matching() {
        assert!(matches_text(&json!("abc"), "abc"));
        assert!(matches_text(&json!(2.0), "2"));
        assert!(matches_text(&json!(["x", "y"]), "y"));
        assert!(!matches_text(&json!("2"), "2.0"));
    }
}
