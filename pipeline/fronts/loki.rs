//! The Loki push front: `POST /loki/api/v1/push`, as Promtail, Alloy, winston-loki or python-logging-loki
//! send it: JSON (`{"streams": [{"stream": {labels}, "values": [["<unix ns>", "line", {metadata}?]]}]}`, and
//! the legacy `{"streams": [{"labels": "{a=\"b\"}", "entries": [{"ts", "line"}]}]}`), or snappy-compressed
//! protobuf (`logproto.PushRequest`, `application/x-protobuf`). Gzip as Content-Encoding on JSON.
//!
//! Stream labels and each entry's structured metadata map by API.md's shared rules (`service_name`,
//! `job`, `app` → `service`; `level`, `detected_level` → `level`; …). Success is 204 with no body, as Loki
//! answers; errors are Loki's: a plain-text reason with the status. Entries the validate stage refuses
//! are left out and the others stored, and the answer is then 400 naming them, as Loki does.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ledger_stages::{Ingest, Protocol, RawLog};
use prost::Message;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::fronts::base::body::{admit, media_type, read_body};
use crate::fronts::base::credential::shipper_credential;
use crate::fronts::base::{AppState, request_id};
use crate::ingest::decode;
use crate::ingest::map::LogBuilder;
use crate::ingest::outcome::Outcome;

/// Parses a stream's labels in LogQL selector form: `{job="api", env="prod"}` (`\"`, `\\` and `\n`
/// escaped in values).
pub(crate) fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| format!("labels must be {{name=\"value\", ...}}, not `{text}`"))?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(labels);
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if name.is_empty() || chars.next() != Some('=') {
            return Err(format!("cannot parse labels `{text}`: expected name=\"value\""));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('"') {
            return Err(format!("cannot parse labels `{text}`: the value of `{name}` must be quoted"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(c) => value.push(c),
                    None => return Err(format!("cannot parse labels `{text}`: unterminated value")),
                },
                Some(c) => value.push(c),
                None => return Err(format!("cannot parse labels `{text}`: unterminated value")),
            }
        }
        labels.push((name, value));
    }
}

/// The JSON push body, both shapes.
#[derive(Deserialize)]
struct PushJson {
    streams: Vec<StreamJson>,
}

#[derive(Deserialize)]
struct StreamJson {
    #[serde(default)]
    stream: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<ValueJson>,
    /// Legacy shape.
    #[serde(default)]
    labels: Option<String>,
    #[serde(default)]
    entries: Vec<EntryJson>,
}

/// `["<unix ns>", "line"]` or `["<unix ns>", "line", {structured metadata}]`.
#[derive(Deserialize)]
struct ValueJson(Nanos, String, #[serde(default)] BTreeMap<String, String>);

/// Unix nanoseconds, as a string (what Loki documents) or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Nanos {
    Text(String),
    Number(i64),
}

#[derive(Deserialize)]
struct EntryJson {
    ts: String,
    line: String,
}

/// One entry, whatever its encoding.
struct Entry {
    time: Option<DateTime<Utc>>,
    line: String,
    metadata: Vec<(String, String)>,
}

fn nanos(n: i64) -> Option<DateTime<Utc>> {
    (n > 0).then(|| DateTime::from_timestamp_nanos(n))
}

fn log(labels: &[(String, String)], entry: Entry) -> Value {
    let mut b = LogBuilder::new();
    b.message(entry.line);
    if let Some(t) = entry.time {
        b.timestamp(t);
    }
    for (name, value) in labels.iter().cloned().chain(entry.metadata) {
        b.attribute(name, Value::String(value));
    }
    b.build()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// A stream's labels, which every entry of the stream gets a copy of: at most `max` bytes of names and
/// values together (Loki refuses long labels with a 400 too).
fn shared(labels: Vec<(String, String)>, max: usize) -> Result<Vec<(String, String)>, ApiError> {
    let size: usize = labels.iter().map(|(name, value)| name.len() + value.len()).sum();
    if size > max {
        return Err(bad(format!("a stream's labels take {size} bytes; at most {max} are accepted")));
    }
    Ok(labels)
}

fn from_json(body: &[u8], max_logs: usize, max_shared: usize) -> Result<Vec<Value>, ApiError> {
    let invalid = |e: serde_json::Error| bad(format!("the body is not a valid Loki push request: {e}"));
    let count = decode::count_json(body, &["streams", "values"], max_logs).map_err(invalid)?
        + decode::count_json(body, &["streams", "entries"], max_logs).map_err(invalid)?;
    if count > max_logs {
        return Err(ApiError::BatchTooLarge { max: max_logs });
    }
    let push: PushJson = serde_json::from_slice(body).map_err(invalid)?;
    let mut logs = Vec::with_capacity(count);
    for stream in push.streams {
        let labels = match &stream.labels {
            Some(text) => parse_labels(text).map_err(bad)?,
            None => stream.stream.into_iter().collect(),
        };
        let labels = shared(labels, max_shared)?;
        for ValueJson(ns, line, metadata) in stream.values {
            let ns = match ns {
                Nanos::Number(n) => n,
                Nanos::Text(t) => t.parse().map_err(|_| bad(format!("timestamp `{t}` is not Unix nanoseconds")))?,
            };
            logs.push(log(&labels, Entry { time: nanos(ns), line, metadata: metadata.into_iter().collect() }));
        }
        for entry in stream.entries {
            let time = DateTime::parse_from_rfc3339(&entry.ts)
                .map_err(|_| bad(format!("timestamp `{}` is not an RFC 3339 time", entry.ts)))?;
            logs.push(log(&labels, Entry { time: Some(time.to_utc()), line: entry.line, metadata: Vec::new() }));
        }
    }
    Ok(logs)
}

fn from_protobuf(body: &[u8], limit: usize, max_logs: usize, max_shared: usize) -> Result<Vec<Value>, ApiError> {
    let size = snap::raw::decompress_len(body).map_err(|e| bad(format!("the body is not valid snappy: {e}")))?;
    if size > limit {
        return Err(ApiError::PayloadTooLarge { limit_bytes: limit });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| bad(format!("the body is not valid snappy: {e}")))?;
    if ledger_proto::codec::count_nested(&raw, &[1, 2], max_logs) > max_logs {
        return Err(ApiError::BatchTooLarge { max: max_logs });
    }
    let push = ledger_proto::loki::PushRequest::decode(raw.as_slice())
        .map_err(|e| bad(format!("the body is not a valid logproto.PushRequest: {e}")))?;
    let mut logs = Vec::new();
    for stream in push.streams {
        let labels = shared(parse_labels(&stream.labels).map_err(bad)?, max_shared)?;
        for entry in stream.entries {
            let time = entry.timestamp.and_then(|t| {
                let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
                DateTime::from_timestamp(t.seconds, nanos)
            });
            let metadata = entry.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect();
            logs.push(log(&labels, Entry { time, line: entry.line, metadata }));
        }
    }
    Ok(logs)
}

/// Loki's error answer: the reason as plain text, Retry-After when retrying helps.
fn failure(error: &ApiError) -> Response {
    if let ApiError::Internal(cause) = error {
        tracing::error!(error = %cause, "Loki push failed");
    }
    let text = match error {
        ApiError::Validation(problems) => {
            let listed = problems.iter().map(|p| (p.index, p.field.as_str(), p.reason.as_str()));
            format!("every entry was refused: {}\n", crate::fronts::base::refusals(listed, "entry"))
        }
        ApiError::Internal(_) => "internal error\n".to_owned(),
        other => format!("{other}\n"),
    };
    let mut response = (error.status(), text).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(secs) = error.retry_after_secs() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[derive(Clone, Copy)]
enum Encoding {
    Json,
    Protobuf,
}

/// `POST /loki/api/v1/push`.
pub(crate) async fn push(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    // Loki takes a body without a type as protobuf.
    let encoding = match media_type(&headers).as_deref() {
        Some("application/json") => Encoding::Json,
        None | Some("" | "application/x-protobuf" | "application/protobuf") => Encoding::Protobuf,
        Some(other) => {
            let reason = format!("unsupported Content-Type `{other}`: use application/json or application/x-protobuf");
            return failure(&ApiError::UnsupportedMediaType(reason));
        }
    };
    let ingestion = &state.ingestion;
    let credential = shipper_credential(&headers, false);
    let (admitted, mut room) = match admit(ingestion, Protocol::Loki, credential.as_deref()).await {
        Ok(admitted) => admitted,
        Err(e) => return failure(&e),
    };
    let (limit, max_logs, max_shared) =
        (ingestion.max_body_bytes, ingestion.max_request_logs, ingestion.max_shared_bytes);
    let decoded = read_body(&headers, body, limit, &mut room, move |bytes| match encoding {
        Encoding::Json => from_json(bytes, max_logs, max_shared),
        Encoding::Protobuf => from_protobuf(bytes, limit, max_logs, max_shared),
    })
    .await;
    let (logs, size) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            admitted.refuse(Outcome::of_refusal(&e));
            return failure(&e);
        }
    };
    if logs.is_empty() {
        admitted.accepted_without_logs();
        return StatusCode::NO_CONTENT.into_response();
    }
    let logs = logs.into_iter().map(RawLog::from).collect();
    let mut request = Ingest::new(request_id::current().unwrap_or_default(), Protocol::Loki, None, logs);
    request.partial = true;
    request.body_bytes = size as u64;
    let (result, report) = ingestion.run(admitted, request).await;
    if let Err(e) = result {
        return failure(&ApiError::from(e));
    }
    match report.rejected.get() {
        Some(rejected) if !rejected.is_empty() => {
            let listed = crate::fronts::base::refusals(
                rejected.iter().map(|p| (p.index, p.field.as_str(), p.reason.as_str())),
                "entry",
            );
            let text = format!("{} entries refused, the others stored: {listed}", rejected.len());
            failure(&ApiError::BadRequest(text))
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use ledger_proto::loki::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter};
    use serde_json::json;

    use super::*;

    #[test]
    fn labels_parse_with_escapes() {
        let labels = parse_labels(r#"{job="api", msg="say \"hi\"", env = "prod"}"#).expect("valid");
        assert_eq!(labels[0], ("job".into(), "api".into()));
        assert_eq!(labels[1], ("msg".into(), "say \"hi\"".into()));
        assert_eq!(labels[2], ("env".into(), "prod".into()));
        assert_eq!(parse_labels("{}").expect("empty"), vec![]);
        assert!(parse_labels("job=api").is_err());
        assert!(parse_labels(r#"{job="api}"#).is_err());
        assert!(parse_labels(r#"{job=api}"#).is_err());
    }

    #[test]
    fn both_json_shapes_and_structured_metadata() {
        let body = json!({"streams": [
            {"stream": {"service_name": "api", "level": "error"},
             "values": [["1764000000000000000", "first"], ["1764000000000000001", "second", {"trace_id": "ab".repeat(16)}]]},
            {"labels": "{job=\"legacy\"}", "entries": [{"ts": "2025-11-24T16:00:00Z", "line": "old"}]},
        ]});
        let logs = from_json(body.to_string().as_bytes(), 100, 1024).expect("valid");
        assert_eq!(logs.len(), 3);
        assert_eq!(logs[0]["service"], "api");
        assert_eq!(logs[0]["level"], "ERROR");
        assert_eq!(logs[1]["trace_id"], "ab".repeat(16));
        assert_eq!(logs[2]["service"], "legacy");
        assert_eq!(logs[2]["message"], "old");
        assert!(matches!(from_json(body.to_string().as_bytes(), 2, 1024), Err(ApiError::BatchTooLarge { max: 2 })));
        let long = json!({"streams": [{"stream": {"job": "x".repeat(2000)}, "values": [["1", "l"]]}]});
        let refused = from_json(long.to_string().as_bytes(), 10, 1024);
        assert!(matches!(refused, Err(ApiError::BadRequest(m)) if m.contains("at most 1024")));
        assert!(matches!(
            from_json(br#"{"streams": [{"values": [["x", "l"]]}]}"#, 10, 1024),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn snappy_protobuf() {
        let push = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{app="web", env="prod"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(prost_types::Timestamp { seconds: 1_764_000_000, nanos: 5 }),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPairAdapter { name: "user".into(), value: "ada".into() }],
                    parsed: vec![],
                }],
                hash: 0,
            }],
        };
        let body = snap::raw::Encoder::new().compress_vec(&push.encode_to_vec()).expect("snappy");
        let logs = from_protobuf(&body, 1 << 20, 10, 1024).expect("valid");
        assert_eq!(logs[0]["service"], "web");
        assert_eq!(logs[0]["environment"], "prod");
        assert_eq!(logs[0]["attributes"], json!({"user": "ada"}));
        assert!(matches!(from_protobuf(b"not snappy at all", 1 << 20, 10, 1024), Err(ApiError::BadRequest(_))));
        assert!(matches!(from_protobuf(&body, 10, 10, 1024), Err(ApiError::PayloadTooLarge { .. })));
    }
}
