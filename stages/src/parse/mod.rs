//! The parse stage: lifts fields out of unstructured messages into attributes, by rules for some services
//! (or all): JSON messages, logfmt (`key=value key2="quoted value"`), and regular expressions with named
//! captures.
//!
//! What a rule finds becomes attributes, except these, which fill the log's own fields when their value
//! is good: `message` or `msg` (the message becomes it), `level`, `severity` or `lvl` (a level name),
//! `timestamp`, `time` or `ts` (RFC 3339 or Unix seconds), `trace_id` (32 hex characters) and `span_id`
//! (16). An attribute the client sent is never overwritten. A message no rule parses, or whose fields would
//! break the validate stage's limits (attribute size and nesting), stays as it was: parsing never refuses
//! a log.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::log::{Level, LogRecord};
use crate::request::{Ingest, IngestError};
use crate::rules::{Compiled, RuleProblem};
pub use crate::rules::{Format, ParseRule};
use crate::stage::{Stage, StageLayer};
use crate::validate::ValidateConfig;

enum How {
    Json,
    Logfmt,
    Regex(regex::Regex),
}

struct Rule {
    services: Vec<String>,
    how: How,
}

/// Parse rules, compiled.
#[derive(Default)]
pub struct Parser {
    rules: Vec<Rule>,
}

impl Parser {
    /// Compiles `rules`; every problem names its field under `field` (`stages.parse[1].pattern`).
    pub fn compile(rules: &[ParseRule], field: &str) -> Result<Parser, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        if rules.len() > crate::rules::MAX_RULES {
            problems.push(RuleProblem::new(field, format!("at most {} rules", crate::rules::MAX_RULES)));
        }
        let mut compiled = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let how = match (rule.format, &rule.pattern) {
                (Format::Json, None) => How::Json,
                (Format::Logfmt, None) => How::Logfmt,
                (Format::Regex, Some(pattern)) => {
                    match crate::rules::regex(pattern, &format!("{field}[{i}].pattern")) {
                        Ok(re) if re.capture_names().flatten().next().is_some() => How::Regex(re),
                        Ok(_) => {
                            problems.push(RuleProblem::new(
                                format!("{field}[{i}].pattern"),
                                "has no named capture, e.g. (?P<user>\\w+)",
                            ));
                            continue;
                        }
                        Err(problem) => {
                            problems.push(problem);
                            continue;
                        }
                    }
                }
                (Format::Regex, None) => {
                    problems.push(RuleProblem::new(format!("{field}[{i}].pattern"), "is required with format regex"));
                    continue;
                }
                (_, Some(_)) => {
                    problems.push(RuleProblem::new(format!("{field}[{i}].pattern"), "is only for format regex"));
                    continue;
                }
            };
            compiled.push(Rule { services: rule.services.clone(), how });
        }
        if problems.is_empty() { Ok(Parser { rules: compiled }) } else { Err(problems) }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Parses `record` by the first rule for its service that reads its message; whether one did.
    pub fn apply(&self, record: &mut LogRecord, limits: &ValidateConfig, now: DateTime<Utc>) -> bool {
        for rule in &self.rules {
            if !rule.services.is_empty()
                && !record.service.as_deref().is_some_and(|s| rule.services.iter().any(|r| r == s))
            {
                continue;
            }
            let fields = match &rule.how {
                How::Json => json_fields(&record.message),
                How::Logfmt => logfmt_fields(&record.message),
                How::Regex(re) => regex_fields(re, &record.message),
            };
            if let Some(fields) = fields
                && lift(record, fields, limits, now)
            {
                return true;
            }
        }
        false
    }
}

fn json_fields(message: &str) -> Option<Map<String, Value>> {
    if !message.trim_start().starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Value>(message) {
        Ok(Value::Object(map)) if !map.is_empty() => Some(map),
        _ => None,
    }
}

/// `key=value` pairs; every space-separated token must be one (a sentence is not logfmt).
fn logfmt_fields(message: &str) -> Option<Map<String, Value>> {
    let mut map = Map::new();
    let mut rest = message.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = &rest[..eq];
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '"') {
            return None;
        }
        rest = &rest[eq + 1..];
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, 't')) => value.push('\t'),
                        Some((_, other)) => value.push(other),
                        None => return None,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = &quoted[end? + 1..];
            if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
                return None;
            }
            value
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let value = &rest[..end];
            if value.contains('"') {
                return None;
            }
            rest = &rest[end..];
            value.to_owned()
        };
        map.insert(key.to_owned(), Value::String(value));
        rest = rest.trim_start();
    }
    if map.is_empty() { None } else { Some(map) }
}

fn regex_fields(re: &regex::Regex, message: &str) -> Option<Map<String, Value>> {
    let captures = re.captures(message)?;
    let map: Map<String, Value> = re
        .capture_names()
        .flatten()
        .filter_map(|name| captures.name(name).map(|m| (name.to_owned(), Value::String(m.as_str().to_owned()))))
        .collect();
    if map.is_empty() { None } else { Some(map) }
}

fn text(value: &Value) -> Option<&str> {
    value.as_str()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    let secs = match value {
        Value::String(s) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.to_utc());
            }
            s.parse::<f64>().ok()?
        }
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    (secs.is_finite() && (0.0..1e11).contains(&secs))
        .then(|| Utc.timestamp_micros((secs * 1e6).round() as i64).single())
        .flatten()
}

/// Moves `fields` into `record` (see the module's doc); false, and `record` untouched, when the result
/// would break a limit.
fn lift(record: &mut LogRecord, fields: Map<String, Value>, limits: &ValidateConfig, now: DateTime<Utc>) -> bool {
    let mut attributes = match &record.attributes {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let (mut message, mut level, mut timestamp, mut trace_id, mut span_id) = (None, None, None, None, None);
    let max_future = chrono::Duration::seconds(i64::try_from(limits.max_future_secs).unwrap_or(i64::MAX / 2));
    for (key, value) in fields {
        let special = match key.as_str() {
            "message" | "msg" => text(&value)
                .filter(|m| !m.is_empty() && m.len() <= limits.max_message_bytes && !m.contains('\0'))
                .map(|m| message = Some(m.to_owned())),
            "level" | "severity" | "lvl" => text(&value).and_then(Level::parse).map(|l| level = Some(l)),
            "timestamp" | "time" | "ts" => time(&value).filter(|t| *t <= now + max_future).map(|t| timestamp = Some(t)),
            "trace_id" => text(&value).filter(|s| is_hex(s, 32)).map(|s| trace_id = Some(s.to_ascii_lowercase())),
            "span_id" => text(&value).filter(|s| is_hex(s, 16)).map(|s| span_id = Some(s.to_ascii_lowercase())),
            _ => None,
        };
        if special.is_none() && !attributes.contains_key(&key) {
            attributes.insert(key, value);
        }
    }
    let attributes = Value::Object(attributes);
    if crate::validate::depth(&attributes) > limits.max_attributes_depth
        || crate::validate::has_nul(&attributes)
        || crate::validate::json_len(&attributes) > limits.max_attributes_bytes
    {
        return false;
    }
    record.attributes = attributes;
    if let Some(message) = message {
        record.message = message;
    }
    if let Some(level) = level {
        record.level = level;
    }
    if let Some(timestamp) = timestamp {
        record.timestamp = timestamp;
    }
    if trace_id.is_some() {
        record.trace_id = trace_id;
    }
    if span_id.is_some() {
        record.span_id = span_id;
    }
    true
}

/// The parse stage: the config's rules and each project's.
pub struct Parse {
    rules: Arc<Compiled<Parser>>,
    limits: ValidateConfig,
}

impl Parse {
    pub fn new(rules: Arc<Compiled<Parser>>, limits: ValidateConfig) -> Parse {
        Parse { rules, limits }
    }

    pub fn layer(rules: Arc<Compiled<Parser>>, limits: ValidateConfig) -> StageLayer<Parse> {
        StageLayer::new(Parse::new(rules, limits))
    }
}

#[async_trait::async_trait]
impl Stage for Parse {
    const NAME: &'static str = "parse";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        let project = request.project()?;
        let own = self
            .rules
            .project(project.project_id, project.stages.as_ref().filter(|s| !s.parse.is_empty()), |rules| {
                Parser::compile(&rules.parse, "stages.parse")
            })
            .await;
        let global = self.rules.global();
        if global.is_empty() && own.is_none() {
            return Ok(());
        }
        let (limits, now) = (self.limits.clone(), Utc::now());
        crate::stage::over_records(&mut request.records, own.is_some(), move |records| {
            for record in records {
                if !own.as_ref().is_some_and(|own| own.apply(record, &limits, now)) {
                    global.apply(record, &limits, now);
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rules::StageRules;
    use crate::testing;

    fn record(message: &str, service: Option<&str>) -> LogRecord {
        LogRecord { service: service.map(Into::into), attributes: json!({"kept": "client"}), ..testing::log(message) }
    }

    fn parser(rules: Value) -> Parser {
        let rules: Vec<ParseRule> = serde_json::from_value(rules).expect("rules");
        Parser::compile(&rules, "stages.parse").unwrap_or_else(|p| panic!("{p:?}"))
    }

    #[test]
    fn logfmt_lifts_fields_and_fills_level_and_trace() {
        let p = parser(json!([{"format": "logfmt"}]));
        let mut r = record(
            r#"level=error msg="payment failed" user_id=42 kept=line trace_id=0AF7651916CD43DD8448EB211C80319C"#,
            None,
        );
        assert!(p.apply(&mut r, &ValidateConfig::default(), Utc::now()));
        assert_eq!(r.level, Level::Error);
        assert_eq!(r.message, "payment failed");
        assert_eq!(r.trace_id.as_deref(), Some("0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(r.attributes, json!({"kept": "client", "user_id": "42"}), "the client's attribute wins");
    }

    #[test]
    fn a_sentence_is_not_logfmt_and_stays_as_it_is() {
        let p = parser(json!([{"format": "logfmt"}]));
        for line in ["user logged in", "a=b then words", "x=\"unterminated", "=v", ""] {
            let mut r = record(line, None);
            let before = r.clone();
            assert!(!p.apply(&mut r, &ValidateConfig::default(), Utc::now()), "{line:?}");
            assert_eq!(r, before);
        }
    }

    #[test]
    fn json_messages_lift_nested_values_and_time() {
        let p = parser(json!([{"format": "json"}]));
        let mut r = record(r#"{"msg": "done", "ts": 1764576000.5, "ctx": {"n": 1}, "severity": "warn"}"#, None);
        assert!(p.apply(&mut r, &ValidateConfig::default(), Utc::now()));
        assert_eq!(r.message, "done");
        assert_eq!(r.level, Level::Warning);
        assert_eq!(r.timestamp.timestamp_micros(), 1_764_576_000_500_000);
        assert_eq!(r.attributes["ctx"], json!({"n": 1}));
    }

    #[test]
    fn regex_rules_apply_to_their_services_only() {
        let p = parser(json!([{"services": ["nginx"], "format": "regex",
            "pattern": r#"^(?P<client>\S+) "(?P<method>[A-Z]+) (?P<path>\S+)" (?P<status>\d{3})$"#}]));
        let line = r#"10.1.2.3 "GET /health" 200"#;
        let mut other = record(line, Some("api"));
        assert!(!p.apply(&mut other, &ValidateConfig::default(), Utc::now()));
        let mut r = record(line, Some("nginx"));
        assert!(p.apply(&mut r, &ValidateConfig::default(), Utc::now()));
        assert_eq!(r.attributes["status"], "200");
        assert_eq!(r.attributes["path"], "/health");
        assert_eq!(r.message, line, "no `message` capture: the line stays the message");
    }

    #[test]
    fn fields_over_the_attribute_limits_leave_the_log_as_it_was() {
        let p = parser(json!([{"format": "json"}]));
        let limits = ValidateConfig { max_attributes_bytes: 40, ..ValidateConfig::default() };
        let line = r#"{"big": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
        let mut r = record(line, None);
        let before = r.clone();
        assert!(!p.apply(&mut r, &limits, Utc::now()));
        assert_eq!(r, before);
    }

    #[test]
    fn bad_rules_name_their_field() {
        let rules: Vec<ParseRule> = serde_json::from_value(json!([
            {"format": "regex", "pattern": "(?P<x>"}, {"format": "regex"}, {"format": "json", "pattern": "a"},
            {"format": "regex", "pattern": "no captures"}
        ]))
        .expect("rules");
        let problems = Parser::compile(&rules, "stages.parse").err().expect("refused");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "stages.parse[0].pattern",
                "stages.parse[1].pattern",
                "stages.parse[2].pattern",
                "stages.parse[3].pattern"
            ]
        );
        assert!(problems[0].reason.contains("not a valid regular expression"), "{}", problems[0].reason);
    }

    #[tokio::test]
    async fn the_stage_tries_the_projects_rules_before_the_configs() {
        let global = parser(json!([{"format": "logfmt"}]));
        let stage = Parse::layer(Arc::new(Compiled::new(global)), ValidateConfig::default());
        let own = StageRules {
            parse: serde_json::from_value(json!([{"format": "regex", "pattern": "^order (?P<order>\\d+)"}]))
                .expect("rule"),
            ..StageRules::default()
        };
        let records = vec![record("order 7 paid", None), record("a=1 b=2", None)];
        let seen = testing::passed_on(stage, testing::project(Some(own)), records).await;
        assert_eq!(seen.records[0].attributes["order"], "7", "the project's rule");
        assert_eq!(seen.records[1].attributes["b"], "2", "the config's rule");
    }
}
