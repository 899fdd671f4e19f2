//! A log as a client sent it, before the validate stage judges it.
//!
//! A front decodes a body straight into [`RawLog`]s: each field of API.md's log object in a slot of its
//! own, as the value sent, and the names of the keys that are not fields. There is no map of names to
//! values per log (one allocation per key and a tree node per few keys, only to be taken apart again by
//! validate), and the field names are matched as they are read, not copied. The validate stage reports a
//! log's problems in the order of the field names, as a map of them would list them.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The fields of a log object, in the order of their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Attributes,
    Environment,
    Exception,
    Fingerprint,
    Host,
    Level,
    Message,
    Service,
    SpanId,
    Timestamp,
    TraceId,
}

impl Field {
    /// In the order of their names.
    pub const ALL: [Field; 11] = [
        Field::Attributes,
        Field::Environment,
        Field::Exception,
        Field::Fingerprint,
        Field::Host,
        Field::Level,
        Field::Message,
        Field::Service,
        Field::SpanId,
        Field::Timestamp,
        Field::TraceId,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Attributes => "attributes",
            Field::Environment => "environment",
            Field::Exception => "exception",
            Field::Fingerprint => "fingerprint",
            Field::Host => "host",
            Field::Level => "level",
            Field::Message => "message",
            Field::Service => "service",
            Field::SpanId => "span_id",
            Field::Timestamp => "timestamp",
            Field::TraceId => "trace_id",
        }
    }

    pub fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "attributes" => Field::Attributes,
            "environment" => Field::Environment,
            "exception" => Field::Exception,
            "fingerprint" => Field::Fingerprint,
            "host" => Field::Host,
            "level" => Field::Level,
            "message" => Field::Message,
            "service" => Field::Service,
            "span_id" => Field::SpanId,
            "timestamp" => Field::Timestamp,
            "trace_id" => Field::TraceId,
            _ => return None,
        })
    }
}

/// One log as sent: its fields' values (`null` kept, as sent), and the keys that are not fields.
#[derive(Clone, Debug, Default)]
pub struct RawLog {
    /// By [`Field`], in its order.
    values: [Option<Value>; Field::ALL.len()],
    /// Keys that are not fields, as they came (sorted and made unique when taken apart: a client's many
    /// keys cost a sort, not an insertion each into a sorted list).
    unknown: Vec<String>,
    /// The log was not an object at all.
    not_object: bool,
}

impl RawLog {
    /// A log that is not an object (a string, a number, an array …).
    pub fn not_object() -> RawLog {
        RawLog { not_object: true, ..RawLog::default() }
    }

    pub fn is_object(&self) -> bool {
        !self.not_object
    }

    /// Sets a field; a later value of the same field replaces an earlier one, as in a JSON object.
    pub fn set(&mut self, field: Field, value: Value) {
        self.values[field as usize] = Some(value);
    }

    /// With a field set.
    pub fn with(mut self, field: Field, value: impl Into<Value>) -> RawLog {
        self.set(field, value.into());
        self
    }

    pub fn get(&self, field: Field) -> Option<&Value> {
        self.values[field as usize].as_ref()
    }

    /// The first key of the log in the order of names, if it has any.
    pub fn first_key(&self) -> Option<&str> {
        let field = Field::ALL.into_iter().find(|f| self.get(*f).is_some()).map(Field::name);
        match (field, self.unknown.iter().min()) {
            (Some(f), Some(u)) => Some(if u.as_str() < f { u.as_str() } else { f }),
            (f, u) => f.or(u.map(String::as_str)),
        }
    }

    /// Each field that was sent with its value, in order, and the unknown keys, in order, each once.
    pub fn into_parts(self) -> (impl Iterator<Item = (Field, Value)>, Vec<String>) {
        let mut unknown = self.unknown;
        unknown.sort_unstable();
        unknown.dedup();
        let fields = Field::ALL.into_iter().zip(self.values).filter_map(|(f, v)| v.map(|v| (f, v)));
        (fields, unknown)
    }

    /// Reads the value of `key` from `map` into the log: a field's value, or only the name of another key
    /// (its value is checked as well-formed and dropped). `logs` is another key here.
    pub fn read_value<'de, A: MapAccess<'de>>(&mut self, key: Key, map: &mut A) -> Result<(), A::Error> {
        match key {
            Key::Field(field) => self.set(field, map.next_value()?),
            Key::Logs => {
                map.next_value::<IgnoredAny>()?;
                self.add_unknown("logs".to_owned());
            }
            Key::Other(name) => {
                map.next_value::<IgnoredAny>()?;
                self.add_unknown(name);
            }
        }
        Ok(())
    }

    fn add_unknown(&mut self, key: String) {
        self.unknown.push(key);
    }
}

impl From<Value> for RawLog {
    fn from(value: Value) -> RawLog {
        let Value::Object(map) = value else { return RawLog::not_object() };
        let mut log = RawLog::default();
        for (key, value) in map {
            match Field::parse(&key) {
                Some(field) => log.set(field, value),
                None => log.add_unknown(key),
            }
        }
        log
    }
}

/// A key of a log object as read: a field, `logs` (meaningful only at a body's top level), or another
/// name. Fields and `logs` are matched in place; only another name is copied.
pub enum Key {
    Field(Field),
    Logs,
    Other(String),
}

/// Reads a [`Key`].
pub struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match Field::parse(key) {
            Some(field) => Key::Field(field),
            None if key == "logs" => Key::Logs,
            None => Key::Other(key.to_owned()),
        })
    }
}

impl<'de> Deserialize<'de> for RawLog {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawLog, D::Error> {
        deserializer.deserialize_any(RawLogVisitor)
    }
}

struct RawLogVisitor;

impl<'de> Visitor<'de> for RawLogVisitor {
    type Value = RawLog;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a log object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawLog, A::Error> {
        let mut log = RawLog::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            log.read_value(key, &mut map)?;
        }
        Ok(log)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawLog, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawLog::not_object())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawLog, E> {
        Ok(RawLog::not_object())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawLog, E> {
        Ok(RawLog::not_object())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawLog, E> {
        Ok(RawLog::not_object())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawLog, E> {
        Ok(RawLog::not_object())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawLog, E> {
        Ok(RawLog::not_object())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<RawLog, E> {
        Ok(RawLog::not_object())
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawLog, E> {
        Ok(RawLog::not_object())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    type Parts = (Vec<(Field, Value)>, Vec<String>);

    fn parts(log: RawLog) -> Parts {
        let (fields, unknown) = log.into_parts();
        (fields.collect(), unknown)
    }

    #[test]
    fn decoding_and_converting_agree() {
        let text = r#"{"zeta": 1, "message": "m", "level": null, "attributes": {"a": [1]}, "logs": [], "b": 2,
            "message": "again", "b": 3}"#;
        let decoded: RawLog = serde_json::from_str(text).expect("valid");
        let converted = RawLog::from(serde_json::from_str::<Value>(text).expect("valid"));
        assert_eq!(decoded.first_key(), Some("attributes"));
        assert_eq!(decoded.get(Field::Message), Some(&json!("again")), "the last of a repeated key");
        assert_eq!(decoded.get(Field::Level), Some(&Value::Null), "null is kept as sent");
        assert_eq!(decoded.get(Field::Host), None);
        let (fields, unknown) = parts(decoded);
        assert_eq!(unknown, ["b", "logs", "zeta"], "in order, each once");
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.name()).collect();
        assert_eq!(names, ["attributes", "level", "message"]);
        assert_eq!((fields, unknown), parts(converted));
        let packed = rmp_serde::to_vec_named(&json!({"message": "m", "x": {"y": 1}})).expect("pack");
        let unpacked: RawLog = rmp_serde::from_slice(&packed).expect("valid");
        assert_eq!(parts(unpacked), (vec![(Field::Message, json!("m"))], vec!["x".to_owned()]));
    }

    #[test]
    fn fields_are_in_the_order_of_their_names_and_parse_back() {
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for field in Field::ALL {
            assert_eq!(Field::parse(field.name()), Some(field));
        }
        assert_eq!(Field::parse("Message"), None);
    }

    #[test]
    fn anything_but_an_object_is_not_a_log_object() {
        for text in [r#""text""#, "[1, {}]", "3", "null", "true"] {
            let decoded: RawLog = serde_json::from_str(text).expect("valid JSON");
            assert!(!decoded.is_object(), "{text}");
            assert!(!RawLog::from(serde_json::from_str::<Value>(text).expect("valid")).is_object());
        }
        assert!(serde_json::from_str::<RawLog>(r#"{"message": }"#).is_err());
    }

    #[test]
    fn the_first_key_is_the_first_name_in_order() {
        let with_unknown = |key: &str| {
            let mut log = RawLog::default().with(Field::Host, "h");
            log.add_unknown(key.to_owned());
            log
        };
        assert_eq!(RawLog::default().first_key(), None);
        assert_eq!(with_unknown("abc").first_key(), Some("abc"));
        assert_eq!(with_unknown("x").first_key(), Some("host"));
    }
}
