//! Decoding an ingestion body: Content-Encoding (gzip, zstd) with the size limit enforced while
//! decompressing, so a compression bomb is stopped at the limit instead of inflated whole; then
//! Content-Type (JSON, MessagePack); then the shape: one log object, or `{"logs": [...]}`.

use std::cell::Cell;
use std::io::Read;

use ledger_stages::RawLog;
use ledger_stages::raw::{Key, KeySeed};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{ApiError, FieldProblem};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    MessagePack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

/// The format of a Content-Type value, or 415.
pub(crate) fn format(content_type: Option<&str>) -> Result<Format, ApiError> {
    let mime = content_type.and_then(|v| v.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
    match mime.as_deref() {
        Some("application/json") => Ok(Format::Json),
        Some("application/msgpack" | "application/x-msgpack") => Ok(Format::MessagePack),
        _ => Err(ApiError::UnsupportedMediaType(
            "send logs as Content-Type: application/json or application/msgpack".into(),
        )),
    }
}

/// The encoding of a Content-Encoding value, or 415.
pub(crate) fn encoding(content_encoding: Option<&str>) -> Result<Encoding, ApiError> {
    match content_encoding.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "identity") => Ok(Encoding::Identity),
        Some("gzip" | "x-gzip") => Ok(Encoding::Gzip),
        Some("zstd") => Ok(Encoding::Zstd),
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding `{other}` is not supported; use gzip or zstd"
        ))),
    }
}

/// Decompresses `body`, refusing anything that inflates beyond `limit` bytes.
pub(crate) fn decompress(body: &[u8], encoding: Encoding, limit: usize) -> Result<Vec<u8>, ApiError> {
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => {
            return if body.len() > limit {
                Err(ApiError::PayloadTooLarge { limit_bytes: limit })
            } else {
                Ok(body.to_vec())
            };
        }
        Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(body)),
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid zstd: {e}")))?,
        ),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // Reading one byte past the limit tells "exactly at the limit" from "over it".
    let read = reader.take(limit as u64 + 1).read_to_end(&mut out);
    read.map_err(|e| ApiError::BadRequest(format!("the body could not be decompressed: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit_bytes: limit });
    }
    Ok(out)
}

/// What a body held, before the logs themselves are judged by the validate stage.
enum Shape {
    Logs(Vec<RawLog>),
    /// The body is one log (boxed: a log's slots are large beside the other shapes).
    One(Box<RawLog>),
    /// `logs` beside other keys: the first other key.
    Mixed(String),
    /// `logs` that is not an array.
    LogsNotArray,
    NotObject,
}

/// Decodes the body's shape, stopping at `max_logs + 1` logs: a batch that is too large costs no more to
/// refuse than a full one costs to accept, whatever it claims or holds.
struct BodySeed<'a> {
    max_logs: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Shape;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Shape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a log object or {\"logs\": [...]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        // The body is one log, unless it has `logs`.
        let mut one = RawLog::default();
        let mut logs = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Logs => {
                    logs = Some(map.next_value_seed(LogsSeed { max_logs: self.max_logs, too_many: self.too_many })?);
                }
                key => one.read_value(key, &mut map)?,
            }
        }
        let Some(logs) = logs else { return Ok(Shape::One(Box::new(one))) };
        if let Some(first) = one.first_key() {
            return Ok(Shape::Mixed(first.to_owned()));
        }
        Ok(match logs {
            Some(logs) => Shape::Logs(logs),
            None => Shape::LogsNotArray,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::NotObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::NotObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::NotObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::NotObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::NotObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::NotObject)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Shape, E> {
        Ok(Shape::NotObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::NotObject)
    }
}

/// The `logs` array, at most `max_logs` of them; `None` when `logs` is not an array.
struct LogsSeed<'a> {
    max_logs: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for LogsSeed<'_> {
    type Value = Option<Vec<RawLog>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LogsSeed<'_> {
    type Value = Option<Vec<RawLog>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of log objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // A length prefix (MessagePack) is the client's claim: never reserve more than a batch may hold.
        let mut logs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max_logs));
        while let Some(log) = seq.next_element::<RawLog>()? {
            if logs.len() == self.max_logs {
                self.too_many.set(true);
                return Err(de::Error::custom("too many logs"));
            }
            logs.push(log);
        }
        Ok(Some(logs))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Parses a decoded body into its logs: at most `max_logs` (more is 413 `batch_too_large`, found without
/// decoding the rest), and nothing after the body (trailing bytes are 400, in either format).
pub fn logs(body: &[u8], format: Format, max_logs: usize) -> Result<Vec<RawLog>, ApiError> {
    let too_many = Cell::new(false);
    let seed = BodySeed { max_logs, too_many: &too_many };
    let shape = match format {
        Format::Json => {
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            seed.deserialize(&mut deserializer)
                .and_then(|shape| deserializer.end().map(|()| shape))
                .map_err(|e| (!too_many.get()).then(|| format!("the body is not valid JSON: {e}")))
        }
        Format::MessagePack => {
            let mut rest = body;
            let shape = {
                let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
                seed.deserialize(&mut deserializer)
                    .map_err(|e| (!too_many.get()).then(|| format!("the body is not valid MessagePack: {e}")))
            };
            match shape {
                Ok(_) if !rest.is_empty() => {
                    Err(Some(format!("the body is not valid MessagePack: {} bytes after its end", rest.len())))
                }
                other => other,
            }
        }
    };
    match shape {
        Err(None) => Err(ApiError::BatchTooLarge { max: max_logs }),
        Err(Some(message)) => Err(ApiError::BadRequest(message)),
        Ok(Shape::Logs(logs)) => Ok(logs),
        Ok(Shape::One(log)) => Ok(vec![*log]),
        Ok(Shape::Mixed(other)) => Err(ApiError::validation(other, "unknown field beside `logs`")),
        Ok(Shape::LogsNotArray) => Err(ApiError::validation("logs", "must be an array of log objects")),
        Ok(Shape::NotObject) => {
            Err(ApiError::Validation(vec![FieldProblem::new("body", "must be a log object or {\"logs\": [...]}")]))
        }
    }
}

/// How many elements the arrays at `path` hold in a JSON body, counting up to `max + 1` and allocating
/// nothing: `["resourceLogs", "scopeLogs", "logRecords"]` counts an OTLP request's records, so a body of
/// ten million empty records is refused before anything is built from it. The keys on the way are
/// objects' keys, each followed by an array of objects; anything else on the way counts nothing.
pub(crate) fn count_json(body: &[u8], path: &[&str], max: usize) -> Result<usize, serde_json::Error> {
    let count = Cell::new(0);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // A body with more than `max` is cut short on purpose: the count says so.
    match (PathSeed { path, max, count: &count }).deserialize(&mut deserializer) {
        Ok(()) => deserializer.end().map(|()| count.get()),
        Err(_) if count.get() > max => Ok(count.get()),
        Err(e) => Err(e),
    }
}

/// An object whose key `path[0]` holds an array of what `path[1..]` describes; an empty path counts.
struct PathSeed<'a, 'p> {
    path: &'p [&'p str],
    max: usize,
    count: &'a Cell<usize>,
}

impl<'de> DeserializeSeed<'de> for PathSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            <IgnoredAny as serde::Deserialize>::deserialize(deserializer)?;
            self.count.set(self.count.get() + 1);
            if self.count.get() > self.max {
                return Err(de::Error::custom("too many"));
            }
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PathSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object with `{}`", self.path.first().copied().unwrap_or_default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.path[0] {
                map.next_value_seed(ArraySeed {
                    inner: PathSeed { path: &self.path[1..], max: self.max, count: self.count },
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// An array, each element by `inner`; anything else counts nothing.
struct ArraySeed<'a, 'p> {
    inner: PathSeed<'a, 'p>,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let PathSeed { path, max, count } = self.inner;
        while seq.next_element_seed(PathSeed { path, max, count })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use ledger_stages::raw::Field;
    use serde_json::json;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("write");
        encoder.finish().expect("finish")
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        assert!(matches!(decompress(&bomb, Encoding::Gzip, 1024 * 1024), Err(ApiError::PayloadTooLarge { .. })));
        let zbomb = zstd::encode_all(&vec![b' '; 50 * 1024 * 1024][..], 3).expect("zstd");
        assert!(matches!(decompress(&zbomb, Encoding::Zstd, 1024 * 1024), Err(ApiError::PayloadTooLarge { .. })));
    }

    #[test]
    fn exactly_the_limit_passes() {
        let body = vec![b'x'; 1000];
        assert_eq!(decompress(&gzip(&body), Encoding::Gzip, 1000).expect("fits").len(), 1000);
        assert!(decompress(&body, Encoding::Identity, 999).is_err());
    }

    #[test]
    fn shapes() {
        let logs = |body: &[u8], format| logs(body, format, 1000);
        assert_eq!(logs(br#"{"message": "a"}"#, Format::Json).expect("one").len(), 1);
        assert_eq!(logs(br#"{"logs": [{"message": "a"}, {"message": "b"}]}"#, Format::Json).expect("two").len(), 2);
        assert!(matches!(logs(br#"[{"message": "a"}]"#, Format::Json), Err(ApiError::Validation(_))));
        assert!(matches!(logs(br#""text""#, Format::Json), Err(ApiError::Validation(_))));
        assert!(matches!(logs(br#"{"logs": {"message": "a"}}"#, Format::Json), Err(ApiError::Validation(_))));
        assert!(matches!(logs(br#"{"logs": [], "x": 1}"#, Format::Json), Err(ApiError::Validation(_))));
        assert!(matches!(logs(b"{not json", Format::Json), Err(ApiError::BadRequest(_))));
        assert!(matches!(logs(br#"{"message": "a"} {}"#, Format::Json), Err(ApiError::BadRequest(_))));
        let packed = rmp_serde::to_vec_named(&json!({"logs": [{"message": "a", "level": "error"}]})).expect("pack");
        let level = logs(&packed, Format::MessagePack).expect("msgpack")[0].get(Field::Level).cloned();
        assert_eq!(level, Some(json!("error")));
    }

    #[test]
    fn messagepack_with_bytes_after_the_body_is_refused() {
        let mut packed = rmp_serde::to_vec_named(&json!({"message": "a"})).expect("pack");
        packed.push(0xc0);
        let error = logs(&packed, Format::MessagePack, 1000).expect_err("trailing byte");
        assert!(matches!(&error, ApiError::BadRequest(m) if m.contains("after its end")), "{error:?}");
    }

    #[test]
    fn decoding_stops_one_log_past_the_batch_limit() {
        // 10 MiB of nils under `logs`, with an array32 header claiming all of them.
        let n = 10 * 1024 * 1024;
        let mut packed = vec![0x81, 0xa4, b'l', b'o', b'g', b's', 0xdd];
        packed.extend_from_slice(&u32::try_from(n).expect("fits").to_be_bytes());
        packed.resize(packed.len() + n, 0xc0);
        let error = logs(&packed, Format::MessagePack, 1000).expect_err("too many");
        assert!(matches!(error, ApiError::BatchTooLarge { max: 1000 }), "{error:?}");
        let json = format!("{{\"logs\": [{}]}}", vec!["{}"; 1001].join(","));
        assert!(matches!(logs(json.as_bytes(), Format::Json, 1000), Err(ApiError::BatchTooLarge { max: 1000 })));
        let json = format!("{{\"logs\": [{}]}}", vec!["{}"; 1000].join(","));
        assert_eq!(logs(json.as_bytes(), Format::Json, 1000).expect("exactly the limit").len(), 1000);
    }

    #[test]
    fn json_paths_are_counted_without_building_them() {
        let body = br#"{"resourceLogs": [{"scopeLogs": [{"logRecords": [{}, {"body": {"stringValue": "x"}}]},
            {"logRecords": [{}]}], "resource": {}}, {"scopeLogs": []}]}"#;
        let path = ["resourceLogs", "scopeLogs", "logRecords"];
        assert_eq!(count_json(body, &path, 100).expect("valid"), 3);
        assert_eq!(count_json(body, &path, 1).expect("cut short"), 2);
        assert!(count_json(b"{not json", &path, 100).is_err());
        let many = format!("{{\"streams\": [{{\"values\": [{}]}}]}}", vec!["[\"1\", \"x\"]"; 5000].join(","));
        assert_eq!(count_json(many.as_bytes(), &["streams", "values"], 1000).expect("cut short"), 1001);
    }

    #[test]
    fn media_types() {
        assert_eq!(format(Some("application/json; charset=utf-8")).expect("json"), Format::Json);
        assert_eq!(format(Some("application/x-msgpack")).expect("msgpack"), Format::MessagePack);
        assert!(format(Some("text/plain")).is_err());
        assert!(format(None).is_err());
        assert!(encoding(Some("br")).is_err());
        assert_eq!(encoding(Some("zstd")).expect("zstd"), Encoding::Zstd);
    }
}
