//! Decoding an ingestion body: Content-Encoding (gzip, zstd) with the size limit enforced while
//! decompressing, so a compression bomb is stopped at the limit instead of inflated whole; then
//! Content-Type (JSON, MessagePack); then the shape: one log object, or `{"logs": [...]}`.

use std::io::Read;

use serde_json::Value;

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
pub fn format(content_type: Option<&str>) -> Result<Format, ApiError> {
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
pub fn encoding(content_encoding: Option<&str>) -> Result<Encoding, ApiError> {
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
pub fn decompress(body: &[u8], encoding: Encoding, limit: usize) -> Result<Vec<u8>, ApiError> {
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

/// Parses a decoded body into its logs.
pub fn logs(body: &[u8], format: Format) -> Result<Vec<Value>, ApiError> {
    let value: Value = match format {
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?,
        Format::MessagePack => rmp_serde::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid MessagePack: {e}")))?,
    };
    match value {
        Value::Object(mut map) if map.contains_key("logs") => {
            if let Some(other) = map.keys().find(|k| *k != "logs") {
                return Err(ApiError::validation(other.as_str(), "unknown field beside `logs`"));
            }
            match map.remove("logs") {
                Some(Value::Array(logs)) => Ok(logs),
                _ => Err(ApiError::validation("logs", "must be an array of log objects")),
            }
        }
        Value::Object(_) => Ok(vec![value]),
        _ => Err(ApiError::Validation(vec![FieldProblem::new("body", "must be a log object or {\"logs\": [...]}")])),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

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
        assert_eq!(logs(br#"{"message": "a"}"#, Format::Json).expect("one").len(), 1);
        assert_eq!(logs(br#"{"logs": [{"message": "a"}, {"message": "b"}]}"#, Format::Json).expect("two").len(), 2);
        assert!(matches!(logs(br#"[{"message": "a"}]"#, Format::Json), Err(ApiError::Validation(_))));
        assert!(matches!(logs(br#"{"logs": {"message": "a"}}"#, Format::Json), Err(ApiError::Validation(_))));
        assert!(matches!(logs(b"{not json", Format::Json), Err(ApiError::BadRequest(_))));
        let packed = rmp_serde::to_vec_named(&json!({"logs": [{"message": "a", "level": "error"}]})).expect("pack");
        assert_eq!(logs(&packed, Format::MessagePack).expect("msgpack")[0]["level"], "error");
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
