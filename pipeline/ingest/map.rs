//! The field mapping every compatibility front shares (API.md, "Compatibility fronts"): a front hands over
//! what its protocol calls attributes, labels or fields, one key at a time, and gets the log object
//! `POST /v1/logs` would have decoded, so one validate stage judges every front alike.
//!
//! Well-known keys fill the log's own fields (`service.name` → `service`, `host.name` → `host`, a `level`
//! text → `level`, `exception.*` → `exception`, …); every other key goes into `attributes` under its dotted
//! name. When several keys name the same field, the one earlier in API.md's list wins whatever the order
//! they come in (`service.name` beats `job`), and the others stay in `attributes`: nothing is lost.

use chrono::{DateTime, Utc};
use ledger_stages::Level;
use serde_json::{Map, Value};

/// The log fields a key may fill, each with the keys that fill it, strongest first.
const FIELDS: [(&str, &[&str]); 4] = [
    ("service", &["service.name", "service_name", "service", "app", "job"]),
    ("environment", &["deployment.environment.name", "deployment.environment", "environment", "env"]),
    ("host", &["host.name", "hostname", "host"]),
    ("level", &["level", "severity", "log.level", "detected_level"]),
];

/// A level's text as shippers write it: what `POST /v1/logs` accepts, and the syslog and OpenTelemetry
/// names beside it (`trace`, `notice`, `err`, `crit`, `alert`, `emerg`).
pub(crate) fn level_from_text(text: &str) -> Option<Level> {
    let text = text.trim();
    Level::parse(text).or_else(|| {
        let lower = text.to_ascii_lowercase();
        Some(match lower.as_str() {
            "trace" | "dbg" => Level::Debug,
            "notice" | "information" | "informational" | "inf" => Level::Info,
            "wrn" => Level::Warning,
            "err" | "eror" => Level::Error,
            "crit" | "alert" | "emerg" | "emergency" | "panic" => Level::Critical,
            _ => return None,
        })
    })
}

/// OTLP's `severity_number`: 1–8 DEBUG, 9–12 INFO, 13–16 WARNING, 17–20 ERROR, 21–24 CRITICAL; 0 is unset.
pub(crate) fn otlp_level(severity_number: i32) -> Option<Level> {
    Some(match severity_number {
        1..=8 => Level::Debug,
        9..=12 => Level::Info,
        13..=16 => Level::Warning,
        17..=20 => Level::Error,
        21..=24 => Level::Critical,
        _ => return None,
    })
}

/// Syslog's severity: 0–2 CRITICAL, 3 ERROR, 4 WARNING, 5–6 INFO, 7 DEBUG.
pub(crate) fn syslog_level(severity: u8) -> Level {
    match severity {
        0..=2 => Level::Critical,
        3 => Level::Error,
        4 => Level::Warning,
        5 | 6 => Level::Info,
        _ => Level::Debug,
    }
}

/// Whether `s` is `len` hex digits, not all zero (OTLP's "no id").
fn hex_id(s: &str, len: usize) -> Option<String> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0'))
        .then(|| s.to_ascii_lowercase())
}

/// Lowercase hex of an id's bytes; `None` for an empty or all-zero id (OTLP's "no id").
pub(crate) fn bytes_id(bytes: &[u8]) -> Option<String> {
    use std::fmt::Write;
    if bytes.iter().all(|b| *b == 0) {
        return None;
    }
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    Some(hex)
}

/// A scalar as the text of a field; objects and arrays are no field's text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One log being assembled by a front. Cloned, it is the start of another log with the same context (a
/// resource's attributes, say).
#[derive(Debug, Default, Clone)]
pub struct LogBuilder {
    message: Option<String>,
    timestamp: Option<DateTime<Utc>>,
    /// Set by the protocol's own severity: beats any `level` key.
    severity: Option<Level>,
    /// For each of [`FIELDS`]: the strength (index in its list) and key of the value that holds it.
    fields: [Option<(usize, String, String)>; FIELDS.len()],
    trace_id: Option<String>,
    span_id: Option<String>,
    exception: [Option<String>; 3],
    attributes: Map<String, Value>,
}

impl LogBuilder {
    pub(crate) fn new() -> LogBuilder {
        LogBuilder::default()
    }

    pub(crate) fn message(&mut self, message: impl Into<String>) -> &mut Self {
        self.message = Some(message.into());
        self
    }

    pub(crate) fn has_message(&self) -> bool {
        self.message.as_ref().is_some_and(|m| !m.is_empty())
    }

    pub(crate) fn timestamp(&mut self, time: DateTime<Utc>) -> &mut Self {
        self.timestamp = Some(time);
        self
    }

    /// The level the protocol itself states (OTLP's severity number, syslog's PRI).
    pub(crate) fn severity(&mut self, level: Level) -> &mut Self {
        self.severity = Some(level);
        self
    }

    /// A trace id from the protocol's own field (hex); an invalid one is kept as an attribute.
    pub(crate) fn trace_id(&mut self, id: &str) -> &mut Self {
        match hex_id(id, 32) {
            Some(id) => self.trace_id = Some(id),
            None if id.is_empty() => {}
            None => {
                self.attributes.insert("trace_id".into(), Value::String(id.into()));
            }
        }
        self
    }

    pub(crate) fn span_id(&mut self, id: &str) -> &mut Self {
        match hex_id(id, 16) {
            Some(id) => self.span_id = Some(id),
            None if id.is_empty() => {}
            None => {
                self.attributes.insert("span_id".into(), Value::String(id.into()));
            }
        }
        self
    }

    /// One key and its value, by the shared rules; later calls for the same key replace earlier ones.
    pub(crate) fn attribute(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        let key = key.into();
        if let Some(text) = text(&value) {
            for (field, (_, keys)) in FIELDS.iter().enumerate() {
                let Some(strength) = keys.iter().position(|k| *k == key) else { continue };
                if field == 3 && level_from_text(&text).is_none() {
                    // A level no one can read stays what it was, an attribute.
                    break;
                }
                match &self.fields[field] {
                    Some((held, _, _)) if *held < strength => break,
                    _ => {}
                }
                if let Some((_, old_key, old)) = self.fields[field].replace((strength, key.clone(), text))
                    && old_key != key
                {
                    self.attributes.insert(old_key, Value::String(old));
                }
                return self;
            }
            match key.as_str() {
                "trace_id" | "trace.id" | "traceid" | "traceId" if self.trace_id.is_none() => {
                    if let Some(id) = hex_id(&text, 32) {
                        self.trace_id = Some(id);
                        return self;
                    }
                }
                "span_id" | "span.id" | "spanid" | "spanId" if self.span_id.is_none() => {
                    if let Some(id) = hex_id(&text, 16) {
                        self.span_id = Some(id);
                        return self;
                    }
                }
                "exception.type" => {
                    self.exception[0] = Some(text);
                    return self;
                }
                "exception.message" => {
                    self.exception[1] = Some(text);
                    return self;
                }
                "exception.stacktrace" => {
                    self.exception[2] = Some(text);
                    return self;
                }
                _ => {}
            }
        }
        self.attributes.insert(key, value);
        self
    }

    /// The log object, in `POST /v1/logs`'s shape.
    pub(crate) fn build(self) -> Value {
        let mut log = Map::new();
        log.insert("message".into(), Value::String(self.message.unwrap_or_default()));
        if let Some(t) = self.timestamp {
            log.insert("timestamp".into(), Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)));
        }
        let [service, environment, host, level] = self.fields;
        let level = self.severity.or_else(|| level.as_ref().and_then(|(_, _, text)| level_from_text(text)));
        if let Some(level) = level {
            log.insert("level".into(), Value::String(level.as_str().into()));
        }
        for (name, value) in [("service", service), ("environment", environment), ("host", host)] {
            if let Some((_, _, value)) = value {
                log.insert(name.into(), Value::String(value));
            }
        }
        if let Some(id) = self.trace_id {
            log.insert("trace_id".into(), Value::String(id));
        }
        if let Some(id) = self.span_id {
            log.insert("span_id".into(), Value::String(id));
        }
        let mut attributes = self.attributes;
        let [kind, value, stacktrace] = self.exception;
        match kind {
            Some(kind) if !kind.is_empty() => {
                let exception = serde_json::json!({"type": kind, "value": value, "stacktrace": stacktrace});
                log.insert("exception".into(), exception);
            }
            _ => {
                // Without a type it is no exception Ledger can group: the parts stay attributes.
                for (name, part) in [("exception.message", value), ("exception.stacktrace", stacktrace)] {
                    if let Some(part) = part {
                        attributes.insert(name.into(), Value::String(part));
                    }
                }
            }
        }
        if !attributes.is_empty() {
            log.insert("attributes".into(), Value::Object(attributes));
        }
        Value::Object(log)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_strongest_key_fills_a_field_and_the_others_stay_attributes() {
        let mut b = LogBuilder::new();
        b.message("m").attribute("job", json!("varlogs")).attribute("service.name", json!("api"));
        b.attribute("app", json!("web")).attribute("env", json!("prod")).attribute("host.name", json!("h1"));
        let log = b.build();
        assert_eq!(log["service"], "api");
        assert_eq!(log["environment"], "prod");
        assert_eq!(log["host"], "h1");
        assert_eq!(log["attributes"], json!({"job": "varlogs", "app": "web"}));
    }

    #[test]
    fn levels_severities_ids_and_exceptions() {
        let mut b = LogBuilder::new();
        b.message("m").attribute("level", json!("warn")).attribute("detected_level", json!("error"));
        assert_eq!(b.build()["level"], "WARNING");
        let mut b = LogBuilder::new();
        b.message("m").attribute("level", json!("verbose-ish"));
        let log = b.build();
        assert!(log.get("level").is_none());
        assert_eq!(log["attributes"]["level"], "verbose-ish");
        let mut b = LogBuilder::new();
        b.message("m").severity(Level::Error).attribute("level", json!("info"));
        assert_eq!(b.build()["level"], "ERROR", "the protocol's severity wins");
        let mut b = LogBuilder::new();
        b.message("m").trace_id("0AF7651916CD43DD8448EB211C80319C").span_id("0000000000000000");
        b.attribute("exception.type", json!("ValueError")).attribute("exception.message", json!("bad"));
        let log = b.build();
        assert_eq!(log["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert!(log.get("span_id").is_none(), "all zero is no id");
        assert_eq!(log["exception"], json!({"type": "ValueError", "value": "bad", "stacktrace": null}));
    }

    #[test]
    fn level_numbers() {
        assert_eq!(otlp_level(9), Some(Level::Info));
        assert_eq!(otlp_level(17), Some(Level::Error));
        assert_eq!(otlp_level(0), None);
        assert_eq!(syslog_level(3), Level::Error);
        assert_eq!(syslog_level(6), Level::Info);
        assert_eq!(level_from_text("notice"), Some(Level::Info));
        assert_eq!(bytes_id(&[0, 0]), None);
        assert_eq!(bytes_id(&[0xab, 0x01]).as_deref(), Some("ab01"));
    }
}
