//! A log record as the stages produce it, and its level.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Severity, numbered as Python's logging so that `min_level` is a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub const ALL: [Level; 5] = [Level::Debug, Level::Info, Level::Warning, Level::Error, Level::Critical];

    /// Case-insensitive; `warn` is WARNING and `fatal` is CRITICAL.
    pub fn parse(s: &str) -> Option<Level> {
        let matches = |name: &str| s.eq_ignore_ascii_case(name);
        Some(match () {
            _ if matches("debug") => Level::Debug,
            _ if matches("info") => Level::Info,
            _ if matches("warning") || matches("warn") => Level::Warning,
            _ if matches("error") => Level::Error,
            _ if matches("critical") || matches("fatal") => Level::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// 10, 20, 30, 40, 50: what the log store keeps.
    pub fn number(self) -> i16 {
        match self {
            Level::Debug => 10,
            Level::Info => 20,
            Level::Warning => 30,
            Level::Error => 40,
            Level::Critical => 50,
        }
    }

    pub fn from_number(n: i16) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.number() == n)
    }
}

/// An exception attached to a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: Option<String>,
    pub stacktrace: Option<String>,
}

/// A validated, enriched log: what the queue carries and the log store keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// UUIDv7: time-ordered, so ids sort roughly by arrival.
    pub id: Uuid,
    pub project_id: Uuid,
    pub timestamp: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub level: Level,
    pub message: String,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub host: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    /// Always an object (`{}` when the client sent none).
    pub attributes: serde_json::Value,
    pub exception: Option<Exception>,
    /// The grouping key; computed by the fingerprint stage unless the client overrode it.
    pub fingerprint: u64,
    /// The client's override, until the fingerprint stage has used it.
    #[serde(skip)]
    pub fingerprint_override: Option<String>,
}

impl LogRecord {
    /// A log of `project_id` with its time, level and message and nothing else: a new id, received at its
    /// timestamp, no service, environment, host, trace or exception, attributes `{}`, fingerprint 0. Fill
    /// in more with struct update syntax.
    pub fn new(project_id: Uuid, timestamp: DateTime<Utc>, level: Level, message: impl Into<String>) -> LogRecord {
        LogRecord {
            id: Uuid::now_v7(),
            project_id,
            timestamp,
            received_at: timestamp,
            level,
            message: message.into(),
            service: None,
            environment: None,
            host: None,
            trace_id: None,
            span_id: None,
            attributes: serde_json::json!({}),
            exception: None,
            fingerprint: 0,
            fingerprint_override: None,
        }
    }
}

/// A fingerprint as API.md prints it: 16 lowercase hex characters.
pub fn fingerprint_hex(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively_with_aliases() {
        assert_eq!(Level::parse("warn"), Some(Level::Warning));
        assert_eq!(Level::parse("FATAL"), Some(Level::Critical));
        assert_eq!(Level::parse("Error"), Some(Level::Error));
        assert_eq!(Level::parse("trace"), None);
        for level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
            assert_eq!(Level::from_number(level.number()), Some(level));
        }
        assert!(Level::Error > Level::Warning);
    }
}
