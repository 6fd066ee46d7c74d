//! Typed query parameters: [`parse`] reads a query string into a `#[derive(Deserialize)]`
//! struct whose field names (serde names) are the query keys, the way upstream's Go handlers
//! read `url.Values`:
//!
//! - a `Vec<T>` field gets every value of its key, in order (`id=a&id=b`);
//! - any other field (`String`, `Option<T>`, a number, `bool`, an enum) gets the first value
//!   (Go's `Values.Get`);
//! - keys the struct does not name are ignored; a missing `Option` is `None`, other missing
//!   fields need `#[serde(default)]`.
//!
//! A value that does not parse is a 400 with these texts: `invalid <key> query: "<value>"` for
//! a number, `<key> must be true or false` for a `bool`, serde's `unknown variant ...` for an
//! enum, or the `Display` of the error of a `#[serde(try_from = "String")]` type. Fields are
//! read in the struct's declaration order, so with several bad values the first declared one
//! is reported. Paging stays with [`crate::paging::Paging`], and `Link` headers with the raw
//! [`crate::paging::query_pairs`].

use serde::de::value::{Error, MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use crate::paging::query_pairs;
use crate::ApiError;

/// Parses a raw query string (or a form body) into `T`; errors are 400s.
pub fn parse<T: DeserializeOwned>(raw_query: Option<&str>) -> Result<T, ApiError> {
    from_pairs(&query_pairs(raw_query))
}

/// [`parse`] for pairs already split with [`query_pairs`].
pub fn from_pairs<T: DeserializeOwned>(pairs: &[(String, String)]) -> Result<T, ApiError> {
    T::deserialize(Query(pairs)).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The whole query: a struct, one map entry per field whose key is present.
struct Query<'de>(&'de [(String, String)]);

impl<'de> Deserializer<'de> for Query<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("query parameters are read into a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let pairs = self.0;
        let present = fields.iter().filter_map(move |&key| {
            let values: Vec<&str> = pairs
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect();
            (!values.is_empty()).then_some((key, Values { key, values }))
        });
        visitor.visit_map(MapDeserializer::new(present))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Every value of one key (at least one).
struct Values<'de> {
    key: &'static str,
    values: Vec<&'de str>,
}

impl<'de> Values<'de> {
    fn first(&self) -> One<'de> {
        One {
            key: self.key,
            value: self.values.first().copied().unwrap_or_default(),
        }
    }
}

impl<'de> IntoDeserializer<'de, Error> for Values<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Methods that read the first value.
macro_rules! first_value {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                self.first().$method(visitor)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Values<'de> {
    type Error = Error;

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let key = self.key;
        let values = self.values.into_iter().map(|value| One { key, value });
        visitor.visit_seq(SeqDeserializer::new(values))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.first().deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    first_value! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_f32 deserialize_f64 deserialize_char deserialize_str deserialize_string
        deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_identifier
    }

    forward_to_deserialize_any! {
        i128 u128 unit_struct tuple tuple_struct map struct
    }
}

/// One value of a key.
struct One<'de> {
    key: &'static str,
    value: &'de str,
}

impl<'de> IntoDeserializer<'de, Error> for One<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Number methods: the value parsed with `str::parse`.
macro_rules! number {
    ($($method:ident $visit:ident $ty:ty)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                match self.value.parse::<$ty>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(de::Error::custom(format!(
                        "invalid {} query: \"{}\"",
                        self.key, self.value
                    ))),
                }
            }
        )*
    };
}

impl<'de> Deserializer<'de> for One<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.value)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value.parse::<bool>() {
            Ok(b) => visitor.visit_bool(b),
            Err(_) => Err(de::Error::custom(format!(
                "{} must be true or false",
                self.key
            ))),
        }
    }

    number! {
        deserialize_i8 visit_i8 i8
        deserialize_i16 visit_i16 i16
        deserialize_i32 visit_i32 i32
        deserialize_i64 visit_i64 i64
        deserialize_u8 visit_u8 u8
        deserialize_u16 visit_u16 u16
        deserialize_u32 visit_u32 u32
        deserialize_u64 visit_u64 u64
        deserialize_f32 visit_f32 f32
        deserialize_f64 visit_f64 f64
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(self.value.into_deserializer())
    }

    forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map
        struct identifier ignored_any
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Color {
        Red,
        #[serde(rename = "light-blue")]
        LightBlue,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Params {
        id: Vec<String>,
        name: Option<String>,
        sort: String,
        count: Option<i64>,
        flag: Option<bool>,
        color: Option<Color>,
        #[serde(rename = "type")]
        kind: Vec<Color>,
    }

    #[test]
    fn repeated_first_and_missing() {
        let p: Params = parse(Some("id=a&name=x&id=b&name=y&other=1&sort=")).unwrap();
        assert_eq!(p.id, vec!["a", "b"]);
        assert_eq!(p.name.as_deref(), Some("x"));
        assert_eq!(p.sort, "");
        assert_eq!(p.count, None);
        let p: Params = parse(None).unwrap();
        assert_eq!(p, Params::default());
        let p: Params = parse(Some(
            "count=-3&flag=true&color=light-blue&type=red&type=light-blue",
        ))
        .unwrap();
        assert_eq!(p.count, Some(-3));
        assert_eq!(p.flag, Some(true));
        assert_eq!(p.color, Some(Color::LightBlue));
        assert_eq!(p.kind, vec![Color::Red, Color::LightBlue]);
        let p: Params = parse(Some("name=a%20b+c&id=%2A")).unwrap();
        assert_eq!(p.name.as_deref(), Some("a b c"));
        assert_eq!(p.id, vec!["*"]);
    }

    #[test]
    fn error_texts_in_field_order() {
        let err = |q: &str| parse::<Params>(Some(q)).unwrap_err().message;
        assert_eq!(err("count=x"), "invalid count query: \"x\"");
        assert_eq!(err("flag=yes"), "flag must be true or false");
        assert_eq!(
            err("color=green"),
            "unknown variant `green`, expected `red` or `light-blue`"
        );
        assert_eq!(err("flag=no&count=1.5"), "invalid count query: \"1.5\"");
        assert_eq!(
            err("type=red&type=x").split(',').next(),
            Some("unknown variant `x`")
        );
    }
}
