//! Integers in request bodies as JSON Schema means them. The OpenAPI document (3.1, so JSON
//! Schema 2020-12) types these fields `integer`, which is "any number with a zero
//! fractional part": `3.0` is an integer to every client that follows the document, and a
//! generated client or a JavaScript caller may well send it. serde reads only `3`, so a
//! request valid by the document was refused (422 `invalid_body`). These readers take
//! both, and refuse what is not an integer of the field's type (`3.5`, `-1` for an
//! unsigned field, out of range, `1e400`) with serde's usual message.
//!
//! Use: `#[serde(default, deserialize_with = "crate::json_int::opt")]` on an
//! `Option<u64>` (or any integer type), `deserialize_with = "crate::json_int::int"` on a
//! plain one.

use std::{fmt, marker::PhantomData};

use serde::{
    de::{self, Unexpected},
    Deserializer,
};

/// 2^64, the first `f64` above every `u64`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
/// -2^63, the least `i64`, exact in `f64`.
const MIN_I64: f64 = -9_223_372_036_854_775_808.0;

struct IntVisitor<T>(PhantomData<T>);

impl<'de, T> de::Visitor<'de> for IntVisitor<T>
where
    T: TryFrom<u64> + TryFrom<i64>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer in range")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if v.is_finite() && v.fract() == 0.0 {
            // Exact: a whole f64 in these ranges converts without rounding.
            if (0.0..TWO_POW_64).contains(&v) {
                return self.visit_u64(v as u64);
            }
            if (MIN_I64..0.0).contains(&v) {
                return self.visit_i64(v as i64);
            }
            return Err(E::invalid_value(Unexpected::Float(v), &self));
        }
        Err(E::invalid_type(Unexpected::Float(v), &self))
    }
}

/// An integer field: `3` or `3.0`.
pub fn int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    d.deserialize_any(IntVisitor(PhantomData))
}

/// An optional integer field: `null`, `3` or `3.0`.
pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    struct OptVisitor<T>(PhantomData<T>);

    impl<'de, T> de::Visitor<'de> for OptVisitor<T>
    where
        T: TryFrom<u64> + TryFrom<i64>,
    {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer in range or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            int(d).map(Some)
        }
    }

    d.deserialize_option(OptVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        #[serde(default, deserialize_with = "super::opt")]
        secs: Option<u64>,
        #[serde(default, deserialize_with = "super::opt")]
        id: Option<i64>,
        #[serde(default = "one", deserialize_with = "super::int")]
        n: u32,
    }

    fn one() -> u32 {
        1
    }

    fn read(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_are_integers_in_either_spelling() {
        let b = read(r#"{"secs": 14400.0, "id": -3.0, "n": 2e0}"#).unwrap();
        assert_eq!(
            b,
            Body {
                secs: Some(14400),
                id: Some(-3),
                n: 2
            }
        );
        let b = read(r#"{"secs": 18446744073709551615, "id": null}"#).unwrap();
        assert_eq!((b.secs, b.id, b.n), (Some(u64::MAX), None, 1));
        assert_eq!(read("{}").unwrap().secs, None);
    }

    #[test]
    fn anything_else_is_refused_with_serdes_message() {
        for (json, says) in [
            (r#"{"secs": 1.5}"#, "invalid type: floating point `1.5`"),
            (r#"{"secs": -1}"#, "invalid value: integer `-1`"),
            (r#"{"secs": -1.0}"#, "invalid value: integer `-1`"),
            (r#"{"secs": 1e20}"#, "invalid value: floating point"),
            (
                r#"{"n": 4294967296}"#,
                "invalid value: integer `4294967296`",
            ),
            (r#"{"secs": "3"}"#, "invalid type: string"),
            (r#"{"n": null}"#, "invalid type: null"),
        ] {
            let e = read(json).unwrap_err();
            assert!(e.contains(says), "{json}: {e}");
        }
    }
}
