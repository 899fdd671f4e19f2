//! The validate stage: the decoded logs → [`LogRecord`]s, or every problem with them.
//!
//! The batch is judged whole: one bad log refuses the request and nothing of it goes further. Each problem
//! names the log's index, the field and the reason. Limits are `[stages.validate]`; API.md gives the rules.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::log::{Exception, Level, LogRecord};
use crate::raw::{Field, RawLog};
use crate::request::{Ingest, IngestError, Problem};
use crate::stage::{Stage, StageLayer};

/// `[stages.validate]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidateConfig {
    /// Logs per request at most; more is 413 `batch_too_large`. Default 1000. (Was `max_batch_logs`; the
    /// old name is accepted, with a warning, for one release.)
    #[serde(alias = "max_batch_logs")]
    pub max_request_logs: usize,
    /// Bytes of `message` at most. Default 32768 (32 KiB).
    pub max_message_bytes: usize,
    /// Bytes of `service`, `environment` and `host` at most. Default 128.
    pub max_field_bytes: usize,
    /// Bytes of `attributes` as compact JSON at most. Default 16384 (16 KiB).
    pub max_attributes_bytes: usize,
    /// Nesting of `attributes` at most (the object itself is level 1). Default 8.
    pub max_attributes_depth: usize,
    /// Bytes of an exception's type, value and stacktrace together at most. Default 65536 (64 KiB).
    pub max_exception_bytes: usize,
    /// Seconds a timestamp may lie ahead of the server's clock. Default 86400 (1 day).
    pub max_future_secs: u64,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            max_request_logs: 1000,
            max_message_bytes: 32 * 1024,
            max_field_bytes: 128,
            max_attributes_bytes: 16 * 1024,
            max_attributes_depth: 8,
            max_exception_bytes: 64 * 1024,
            max_future_secs: 86_400,
        }
    }
}

pub struct Validate {
    config: ValidateConfig,
}

impl Validate {
    pub fn new(config: ValidateConfig) -> Validate {
        Validate { config }
    }

    pub fn layer(config: ValidateConfig) -> StageLayer<Validate> {
        StageLayer::new(Validate::new(config))
    }

    /// Validates a batch for `project` received at `received_at`.
    pub fn check(
        &self,
        logs: Vec<RawLog>,
        project: Uuid,
        received_at: DateTime<Utc>,
    ) -> Result<Vec<LogRecord>, IngestError> {
        if logs.is_empty() {
            let reason = format!("must hold 1 to {} logs", self.config.max_request_logs);
            return Err(IngestError::Invalid(vec![Problem { index: None, field: "logs".into(), reason }]));
        }
        if logs.len() > self.config.max_request_logs {
            return Err(IngestError::BatchTooLarge { max: self.config.max_request_logs });
        }
        let mut records = Vec::with_capacity(logs.len());
        let mut problems = Problems::default();
        for (index, log) in logs.into_iter().enumerate() {
            let mut checker = Checker { index, problems: &mut problems, config: &self.config };
            if let Some(record) = checker.log(log, project, received_at) {
                records.push(record);
            }
        }
        if problems.total == 0 { Ok(records) } else { Err(problems.into_error()) }
    }

    /// Validates each log on its own: the good ones, and the problems of the others (at most one per log,
    /// its first). All refused is the batch's error, as [`Validate::check`] gives it.
    pub fn check_each(
        &self,
        logs: Vec<RawLog>,
        project: Uuid,
        received_at: DateTime<Utc>,
    ) -> Result<(Vec<LogRecord>, Vec<Problem>), IngestError> {
        if logs.is_empty() || logs.len() > self.config.max_request_logs {
            return self.check(logs, project, received_at).map(|records| (records, Vec::new()));
        }
        let mut records = Vec::with_capacity(logs.len());
        let mut rejected = Vec::new();
        let mut problems = Problems::default();
        for (index, log) in logs.into_iter().enumerate() {
            let mut own = Problems::default();
            let mut checker = Checker { index, problems: &mut own, config: &self.config };
            match checker.log(log, project, received_at) {
                Some(record) => records.push(record),
                None => {
                    if let Some(first) = own.list.first() {
                        rejected.push(first.clone());
                    }
                    for problem in own.list {
                        problems.push(problem);
                    }
                }
            }
        }
        if records.is_empty() { Err(problems.into_error()) } else { Ok((records, rejected)) }
    }
}

#[async_trait::async_trait]
impl Stage for Validate {
    const NAME: &'static str = "validate";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        let project = request.project()?.project_id;
        let logs = std::mem::take(&mut request.logs);
        if request.partial {
            let (records, rejected) = self.check_each(logs, project, request.received_at)?;
            request.records = records;
            if !rejected.is_empty() {
                let _ = request.report.rejected.set(rejected);
            }
        } else {
            request.records = self.check(logs, project, request.received_at)?;
        }
        Ok(())
    }
}

/// Problems listed in an answer at most; beyond, they are counted, so an error body stays small whatever
/// the request held.
pub const MAX_PROBLEMS: usize = 100;
/// Bytes of a field name echoed back at most (an unknown field's name is the client's text).
const MAX_ECHOED_FIELD_BYTES: usize = 64;

/// The problems of a batch: the first [`MAX_PROBLEMS`], and how many there were in all.
#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    total: usize,
}

impl Problems {
    fn push(&mut self, problem: Problem) {
        self.total += 1;
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(problem);
        }
    }

    /// The listed problems, with a last one saying how many more were left out.
    fn into_error(mut self) -> IngestError {
        let more = self.total - self.list.len();
        if more > 0 {
            let reason = format!("{more} more problems not listed (the first {MAX_PROBLEMS} are)");
            self.list.push(Problem { index: None, field: "logs".into(), reason });
        }
        IngestError::Invalid(self.list)
    }
}

/// A client's field name, cut to a bounded length on a character boundary.
fn echoed(field: &str) -> String {
    if field.len() <= MAX_ECHOED_FIELD_BYTES {
        return field.to_owned();
    }
    let mut end = MAX_ECHOED_FIELD_BYTES;
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &field[..end])
}

/// Checks one log, collecting its problems.
struct Checker<'a> {
    index: usize,
    problems: &'a mut Problems,
    config: &'a ValidateConfig,
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether a JSON value holds a NUL character in any string or key. PostgreSQL's text and jsonb cannot
/// store one, so such a log is refused here, on both backends alike, instead of failing its write later.
pub(crate) fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

const NUL: &str = "must not contain NUL (\\u0000) characters";

/// Nesting depth of a JSON value: scalars 0, an object or array one more than its deepest member.
pub(crate) fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Bytes of a value as compact JSON, without building the string.
pub(crate) fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and a Value always serializes.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl Checker<'_> {
    fn problem(&mut self, field: &str, reason: impl Into<String>) {
        self.problems.push(Problem { index: Some(self.index), field: echoed(field), reason: reason.into() });
    }

    fn unknown(&mut self, key: &str) {
        self.problem(key, "unknown field; put custom data in `attributes`");
    }

    /// An optional string of at most `max` bytes; `null` is absent.
    fn optional_string(&mut self, field: &str, value: Value, max: usize) -> Option<String> {
        match value {
            Value::Null => None,
            Value::String(s) if s.contains('\0') => {
                self.problem(field, NUL);
                None
            }
            Value::String(s) if s.len() <= max => Some(s),
            Value::String(_) => {
                self.problem(field, format!("must be at most {max} bytes"));
                None
            }
            _ => {
                self.problem(field, "must be a string");
                None
            }
        }
    }

    fn hex_id(&mut self, field: &str, value: Value, len: usize) -> Option<String> {
        let s = self.optional_string(field, value, usize::MAX)?;
        if is_lower_hex(&s, len) {
            Some(s)
        } else {
            self.problem(field, format!("must be {len} lowercase hex characters"));
            None
        }
    }

    fn timestamp(&mut self, value: Value, received_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let parsed = match value {
            Value::Null => return None,
            Value::String(s) => match DateTime::parse_from_rfc3339(&s) {
                Ok(t) => Some(t.to_utc()),
                Err(_) => {
                    self.problem("timestamp", "must be an RFC 3339 time or Unix seconds");
                    return None;
                }
            },
            Value::Number(n) => n
                .as_f64()
                .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs < 1e11)
                .and_then(|secs| Utc.timestamp_micros((secs * 1e6).round() as i64).single()),
            _ => None,
        };
        let Some(t) = parsed else {
            self.problem("timestamp", "must be an RFC 3339 time or Unix seconds");
            return None;
        };
        let limit =
            received_at + chrono::Duration::seconds(i64::try_from(self.config.max_future_secs).unwrap_or(i64::MAX / 2));
        if t > limit {
            self.problem(
                "timestamp",
                format!("is more than {} seconds ahead of the server's clock", self.config.max_future_secs),
            );
            return None;
        }
        Some(t)
    }

    fn attributes(&mut self, value: Value) -> Value {
        match value {
            Value::Null => Value::Object(Map::new()),
            Value::Object(_) if depth(&value) > self.config.max_attributes_depth => {
                self.problem("attributes", format!("must nest at most {} levels", self.config.max_attributes_depth));
                Value::Null
            }
            Value::Object(_) if has_nul(&value) => {
                self.problem("attributes", NUL);
                Value::Null
            }
            Value::Object(_) if json_len(&value) > self.config.max_attributes_bytes => {
                self.problem(
                    "attributes",
                    format!("must be at most {} bytes as JSON", self.config.max_attributes_bytes),
                );
                Value::Null
            }
            Value::Object(_) => value,
            _ => {
                self.problem("attributes", "must be an object");
                Value::Null
            }
        }
    }

    fn exception(&mut self, value: Value) -> Option<Exception> {
        let map = match value {
            Value::Null => return None,
            Value::Object(map) => map,
            _ => {
                self.problem("exception", "must be an object with `type`, `value`, `stacktrace`");
                return None;
            }
        };
        let (mut kind, mut text, mut stacktrace) = (None, None, None);
        for (key, value) in map {
            let max = self.config.max_exception_bytes;
            match key.as_str() {
                "type" => kind = self.optional_string("exception.type", value, max),
                "value" => text = self.optional_string("exception.value", value, max),
                "stacktrace" => stacktrace = self.optional_string("exception.stacktrace", value, max),
                other => {
                    self.problem(&format!("exception.{other}"), "unknown field (allowed: type, value, stacktrace)")
                }
            }
        }
        let Some(kind) = kind.filter(|k| !k.is_empty()) else {
            self.problem("exception.type", "is required");
            return None;
        };
        let total = kind.len() + text.as_ref().map_or(0, String::len) + stacktrace.as_ref().map_or(0, String::len);
        if total > self.config.max_exception_bytes {
            self.problem("exception", format!("must be at most {} bytes in all", self.config.max_exception_bytes));
            return None;
        }
        Some(Exception { kind, value: text, stacktrace })
    }

    fn log(&mut self, log: RawLog, project_id: Uuid, received_at: DateTime<Utc>) -> Option<LogRecord> {
        if !log.is_object() {
            self.problem("log", "must be an object");
            return None;
        }
        let before = self.problems.total;
        let mut record = LogRecord {
            id: Uuid::nil(),
            project_id,
            timestamp: received_at,
            received_at,
            level: Level::Info,
            message: String::new(),
            service: None,
            environment: None,
            host: None,
            trace_id: None,
            span_id: None,
            attributes: Value::Object(Map::new()),
            exception: None,
            fingerprint: 0,
            fingerprint_override: None,
        };
        let mut message = None;
        let mut message_seen = false;
        let max_field = self.config.max_field_bytes;
        let (fields, unknown) = log.into_parts();
        // Problems in the order of the keys' names, unknown keys among the fields.
        let mut unknown = unknown.into_iter().peekable();
        for (field, value) in fields {
            while let Some(key) = unknown.next_if(|key| key.as_str() < field.name()) {
                self.unknown(&key);
            }
            match field {
                Field::Message => {
                    message_seen = true;
                    match value {
                        Value::String(s) if s.is_empty() => self.problem("message", "must not be empty"),
                        Value::String(s) if s.contains('\0') => self.problem("message", NUL),
                        Value::String(s) if s.len() > self.config.max_message_bytes => {
                            let max = self.config.max_message_bytes;
                            self.problem("message", format!("must be at most {max} bytes"));
                        }
                        Value::String(s) => message = Some(s),
                        _ => self.problem("message", "must be a string"),
                    }
                }
                Field::Level => match value {
                    Value::Null => {}
                    Value::String(s) => match Level::parse(&s) {
                        Some(level) => record.level = level,
                        None => self.problem("level", "must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
                    },
                    _ => self.problem("level", "must be a string"),
                },
                Field::Timestamp => {
                    if let Some(t) = self.timestamp(value, received_at) {
                        record.timestamp = t;
                    }
                }
                Field::Service => record.service = self.optional_string("service", value, max_field),
                Field::Environment => record.environment = self.optional_string("environment", value, max_field),
                Field::Host => record.host = self.optional_string("host", value, max_field),
                Field::TraceId => record.trace_id = self.hex_id("trace_id", value, 32),
                Field::SpanId => record.span_id = self.hex_id("span_id", value, 16),
                Field::Attributes => record.attributes = self.attributes(value),
                Field::Exception => record.exception = self.exception(value),
                Field::Fingerprint => match self.optional_string("fingerprint", value, 128) {
                    Some(f) if f.is_empty() => self.problem("fingerprint", "must not be empty"),
                    Some(f) => {
                        // Taken here, so the client's key holds whether or not the fingerprint stage runs.
                        record.fingerprint = crate::fingerprint::client_key(&f);
                        record.fingerprint_override = Some(f);
                    }
                    None => {}
                },
            }
        }
        for key in unknown {
            self.unknown(&key);
        }
        match message {
            Some(m) => record.message = m,
            // A message of the wrong type was reported already; only a missing one is reported here.
            None if !message_seen => self.problem("message", "is required"),
            None => {}
        }
        (self.problems.total == before).then_some(record)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(logs: Vec<Value>) -> Vec<RawLog> {
        logs.into_iter().map(RawLog::from).collect()
    }

    fn check(logs: Vec<Value>) -> Result<Vec<LogRecord>, IngestError> {
        Validate::new(ValidateConfig::default()).check(raw(logs), Uuid::nil(), Utc::now())
    }

    #[test]
    fn each_log_on_its_own_keeps_the_good_ones() {
        let validate = Validate::new(ValidateConfig::default());
        let logs = vec![json!({"message": "a"}), json!({"message": ""}), json!({"message": "c", "level": "nope"})];
        let (records, rejected) = validate.check_each(raw(logs), Uuid::nil(), Utc::now()).expect("one is good");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].message, "a");
        let refused: Vec<_> = rejected.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(refused, [(Some(1), "message"), (Some(2), "level")]);
        let all_bad = validate.check_each(raw(vec![json!({"message": ""})]), Uuid::nil(), Utc::now());
        assert!(matches!(all_bad, Err(IngestError::Invalid(p)) if p[0].field == "message"));
    }

    fn problems(logs: Vec<Value>) -> Vec<(Option<usize>, String)> {
        match check(logs) {
            Err(IngestError::Invalid(problems)) => problems.into_iter().map(|p| (p.index, p.field)).collect(),
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn a_full_log_is_accepted_and_normalized() {
        let records = check(vec![json!({
            "message": "disk full", "level": "warn", "timestamp": "2026-11-27T08:00:00.123456+01:00",
            "service": "api", "environment": "prod", "host": "web-1",
            "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
            "attributes": {"user": {"id": 7}}, "exception": {"type": "OSError", "value": "no space"},
            "fingerprint": "disk"
        })])
        .expect("valid");
        let r = &records[0];
        assert_eq!(r.level, Level::Warning);
        assert_eq!(r.timestamp.to_rfc3339(), "2026-11-27T07:00:00.123456+00:00");
        assert_eq!(r.exception.as_ref().map(|e| e.kind.as_str()), Some("OSError"));
        assert_eq!(r.fingerprint_override.as_deref(), Some("disk"));
    }

    #[test]
    fn defaults_and_unix_seconds() {
        let received = Utc::now();
        let records = Validate::new(ValidateConfig::default())
            .check(
                raw(vec![json!({"message": "a"}), json!({"message": "b", "timestamp": 1_700_000_000.25})]),
                Uuid::nil(),
                received,
            )
            .expect("valid");
        assert_eq!(records[0].level, Level::Info);
        assert_eq!(records[0].timestamp, received);
        assert_eq!(records[0].attributes, json!({}));
        assert_eq!(records[1].timestamp.timestamp_micros(), 1_700_000_000_250_000);
    }

    #[test]
    fn every_problem_of_every_log_is_reported() {
        let tomorrow_and_more = (Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
        let found = problems(vec![
            json!({"message": "ok"}),
            json!({"level": "LOUD", "timestamp": tomorrow_and_more}),
            json!({"message": "", "trace_id": "ABC", "span_id": "b7ad6b7169203331", "colour": "red"}),
            json!("not an object"),
            json!({"message": 5, "attributes": [1], "exception": {"value": "x"}}),
        ]);
        let expected: Vec<(Option<usize>, String)> = [
            (1, "level"),
            (1, "timestamp"),
            (1, "message"),
            (2, "message"),
            (2, "trace_id"),
            (2, "colour"),
            (3, "log"),
            (4, "message"),
            (4, "attributes"),
            (4, "exception.type"),
        ]
        .into_iter()
        .map(|(i, f)| (Some(i), f.to_owned()))
        .collect();
        let mut found_sorted = found.clone();
        found_sorted.sort();
        let mut expected_sorted = expected;
        expected_sorted.sort();
        assert_eq!(found_sorted, expected_sorted, "{found:?}");
    }

    #[test]
    fn a_logs_problems_come_in_the_order_of_its_keys_names() {
        let log = json!({"zz": 1, "timestamp": "yesterday", "b": 2, "message": 3, "host": 4, "colour": "red"});
        let fields: Vec<String> = problems(vec![log]).into_iter().map(|(_, f)| f).collect();
        assert_eq!(fields, ["b", "colour", "host", "message", "timestamp", "zz"]);
    }

    #[test]
    fn size_and_depth_limits() {
        let deep = json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}});
        let eight = json!({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}});
        assert_eq!(problems(vec![json!({"message": "m", "attributes": deep})]), vec![(Some(0), "attributes".into())]);
        assert!(check(vec![json!({"message": "m", "attributes": eight})]).is_ok());
        let big = json!({"message": "m", "attributes": {"x": "y".repeat(16 * 1024)}});
        assert_eq!(problems(vec![big]), vec![(Some(0), "attributes".into())]);
        let long = json!({"message": "m".repeat(32 * 1024 + 1)});
        assert_eq!(problems(vec![long]), vec![(Some(0), "message".into())]);
        assert!(check(vec![json!({"message": "m".repeat(32 * 1024)})]).is_ok());
        let service = json!({"message": "m", "service": "s".repeat(129)});
        assert_eq!(problems(vec![service]), vec![(Some(0), "service".into())]);
    }

    #[test]
    fn nul_characters_are_refused_everywhere() {
        let found = problems(vec![
            json!({"message": "a\0b"}),
            json!({"message": "m", "service": "s\0"}),
            json!({"message": "m", "attributes": {"k": ["x", {"deep": "\0"}]}}),
            json!({"message": "m", "attributes": {"k\0": 1}}),
            json!({"message": "m", "exception": {"type": "E", "stacktrace": "\0"}}),
        ]);
        let fields: Vec<&str> = found.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(fields, ["message", "service", "attributes", "attributes", "exception.stacktrace"]);
    }

    #[test]
    fn batch_bounds() {
        assert_eq!(problems(vec![]), vec![(None, "logs".into())]);
        let full: Vec<Value> = (0..1000).map(|i| json!({"message": format!("m{i}")})).collect();
        assert_eq!(check(full).expect("valid").len(), 1000);
        let over: Vec<Value> = (0..1001).map(|i| json!({"message": format!("m{i}")})).collect();
        assert_eq!(check(over), Err(IngestError::BatchTooLarge { max: 1000 }));
    }
}
