//! Human-friendly quantities in workflow files: fuel counts (`5M`), sizes (`64MiB`) and durations (`250ms`).

use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Error, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instruction count: an integer, or a string such as `5M`, `8.15G` or `1_000_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(pub u64);

/// A byte size: an integer, or a string such as `64MiB` or `1GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// A duration such as `250ms`, `10s` or `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// Parses counts such as `1000000`, `1_000_000`, `5k`, `5M` or `2G`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (digits, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000),
        Some('M') => (&t[..t.len() - 1], 1_000_000),
        Some('G') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (&t[..], 1),
    };
    scaled(digits, mult).ok_or_else(|| format!("`{s}` is not a count: {COUNT_FORMS}"))
}

/// `digits` times `mult`, exactly: `8.15` with `1_000_000_000` is
/// 8,150,000,000, the form counts are printed in. A fraction finer than
/// the unit (`1.5` with no suffix) is refused, never rounded.
fn scaled(digits: &str, mult: u64) -> Option<u64> {
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (digits.contains('.') && frac.is_empty()) {
        return None;
    }
    let mut value = whole.parse::<u64>().ok()?.checked_mul(mult)?;
    let mut unit = mult;
    for d in frac.bytes() {
        if !unit.is_multiple_of(10) {
            return None;
        }
        unit /= 10;
        value = value.checked_add(u64::from(d - b'0') * unit)?;
    }
    Some(value)
}

/// Parses sizes such as `64MiB`, `1GB` or `4096`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("`{s}` is not a size: {BYTES_FORMS}"))
}

/// What a count may look like, for messages.
const COUNT_FORMS: &str = "write a whole number, with an optional suffix k, M or G, such as 5000000, 5_000_000, 5M or 8.15G";
/// What a size may look like, for messages.
const BYTES_FORMS: &str = "write a number of bytes, or one with a unit, such as 4096, 64MiB or 1GB";
/// What a duration may look like, for messages.
const DUR_FORMS: &str = "write a number with a unit, such as 250ms, 10s, 5m, 2h or 1m 30s";

/// Deserializes the forms a count or a size accepts: a non-negative
/// integer, or a string for `parse`. Visiting (rather than an untagged
/// enum) keeps each error at the value's own line and field.
struct IntOrStr<T> {
    what: &'static str,
    forms: &'static str,
    parse: fn(&str) -> Result<u64, String>,
    make: fn(u64) -> T,
}

impl<T> Visitor<'_> for IntOrStr<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.forms)
    }

    fn visit_u64<E: Error>(self, n: u64) -> Result<T, E> {
        Ok((self.make)(n))
    }

    fn visit_i64<E: Error>(self, n: i64) -> Result<T, E> {
        match u64::try_from(n) {
            Ok(n) => Ok((self.make)(n)),
            Err(_) => Err(E::custom(format!(
                "`{n}` is negative, not {}: {}",
                self.what, self.forms
            ))),
        }
    }

    fn visit_f64<E: Error>(self, n: f64) -> Result<T, E> {
        Err(E::custom(format!(
            "`{n}` is not {}: {}",
            self.what, self.forms
        )))
    }

    fn visit_str<E: Error>(self, s: &str) -> Result<T, E> {
        (self.parse)(s).map(self.make).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntOrStr {
            what: "a count",
            forms: COUNT_FORMS,
            parse: parse_count,
            make: Count,
        })
    }
}

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl JsonSchema for Count {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Count".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An instruction count: an integer, or a string such as `5M`, `2G` or `1_000_000`.",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9_]+([.][0-9]+[kKMG]|[kKMG]?)$" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntOrStr {
            what: "a size",
            forms: BYTES_FORMS,
            parse: parse_bytes,
            make: Bytes,
        })
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl JsonSchema for Bytes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Bytes".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A byte size: an integer, or a string such as `64MiB` or `1GB`.",
            "anyOf": [ { "type": "integer", "minimum": 0 }, { "type": "string" } ]
        })
    }
}

/// Parses durations such as `250ms`, `10s` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}): {DUR_FORMS}"))
}

struct DurVisitor;

impl Visitor<'_> for DurVisitor {
    type Value = Dur;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a duration: {DUR_FORMS}")
    }

    fn visit_u64<E: Error>(self, n: u64) -> Result<Dur, E> {
        Err(E::custom(format!("`{n}` has no unit; {DUR_FORMS}")))
    }

    fn visit_i64<E: Error>(self, n: i64) -> Result<Dur, E> {
        Err(E::custom(format!("`{n}` is not a duration: {DUR_FORMS}")))
    }

    fn visit_f64<E: Error>(self, n: f64) -> Result<Dur, E> {
        self.visit_i64(n as i64)
    }

    fn visit_str<E: Error>(self, s: &str) -> Result<Dur, E> {
        parse_duration(s).map(Dur).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurVisitor)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration such as `250ms`, `10s` or `1m 30s`.",
            "type": "string"
        })
    }
}

#[cfg(test)]
mod count_tests {
    use super::parse_count;

    #[test]
    fn counts_parse_in_the_form_they_are_printed() {
        assert_eq!(parse_count("8.15G"), Ok(8_150_000_000));
        assert_eq!(parse_count("1.5k"), Ok(1_500));
        assert_eq!(parse_count("5M"), Ok(5_000_000));
        assert_eq!(parse_count("1_000"), Ok(1_000));
        for bad in [
            "1.5",
            "1.0000000001G",
            ".5M",
            "5.M",
            "-5",
            "1.2.3G",
            "99999999999G",
        ] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
        // Every printed count reads back as itself.
        for n in [999u64, 1_500, 8_150_000_000, 10_000_000_000, 5_000_000] {
            assert_eq!(parse_count(&corral_runtime::human::count(n)), Ok(n));
        }
    }
}
