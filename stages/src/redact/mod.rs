//! The redact stage: scrubs personal data and secrets out of a log before anything keeps it. It runs
//! after validate and parse and before fingerprint and queue, so what the queue, the log store, the live
//! tail, traces and the daemon's own logs ever see is the redacted log.
//!
//! A rule is one of:
//! - a built-in `detector`: `email`; `card` (13 to 19 digits, spaces or dashes between, passing the Luhn
//!   check); `ipv4`; `ipv6`; `jwt`; `bearer` (the token after `Bearer `); `cloud_keys` (AWS access key ids,
//!   GitHub, Slack, Google API and Stripe keys, and Ledger's own API keys);
//! - a custom `pattern` (a regular expression; the whole match is redacted);
//! - an `attribute` name: that attribute's value, at any depth, whatever it holds (names compare
//!   case-insensitively).
//!
//! Detectors and patterns apply to the message, every string inside attributes, and the exception's value
//! and stacktrace. Each rule has an `action`: `mask` (the default: `***`, `***@***` for e-mails, `****1111`
//! for cards), `hash` (`hash:` and 16 hex characters of HMAC-SHA256 under `stages.redact.hash_key`, so equal
//! values still group and can be searched for by their hash), or `remove`. Each redaction is counted per
//! rule name ([`counts`], `ledger_redactions_total` in `/metrics`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::log::LogRecord;
use crate::request::{Ingest, IngestError};
pub use crate::rules::{Action, Detector, RedactRule};
use crate::rules::{Compiled, RuleProblem};
use crate::stage::{Stage, StageLayer};

impl Detector {
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Card => "card",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::Jwt => "jwt",
            Detector::Bearer => "bearer",
            Detector::CloudKeys => "cloud_keys",
        }
    }

    /// The candidates' expression; [`Detector::confirms`] then checks each. ASCII word boundaries keep
    /// every expression in the regex crate's fast automata whatever the text's script.
    fn pattern(self) -> &'static str {
        match self {
            Detector::Email => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            Detector::Card => r"(?-u:\b)(?:[0-9][ -]?){12,18}[0-9](?-u:\b)",
            Detector::Ipv4 => {
                r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?-u:\b)"
            }
            Detector::Ipv6 => r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
            Detector::Jwt => r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
            Detector::Bearer => r"(?i:bearer)[ \t]+([A-Za-z0-9._~+/-]+=*)",
            Detector::CloudKeys => concat!(
                r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
                r"|(?-u:\b)gh[pousr]_[A-Za-z0-9]{36,}",
                r"|(?-u:\b)xox[baprs]-[A-Za-z0-9-]{10,}",
                r"|AIza[0-9A-Za-z_-]{35}",
                r"|(?-u:\b)[rs]k_(?:live|test)_[0-9A-Za-z]{16,}",
                r"|(?-u:\b)ledger_[0-9A-Za-z]{32}(?-u:\b)",
            ),
        }
    }

    /// Whether a candidate match at `start..end` of `text` is the real thing.
    fn confirms(self, text: &str, start: usize, end: usize) -> bool {
        let found = &text[start..end];
        match self {
            Detector::Card => luhn(found),
            Detector::Ipv6 => {
                let before = text[..start].chars().next_back();
                let after = text[end..].chars().next();
                let joined = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == ':' || c == '_');
                !joined(before)
                    && !joined(after)
                    && found.bytes().filter(u8::is_ascii_hexdigit).count() >= 4
                    && found.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => true,
        }
    }
}

/// The Luhn check over the digits of `s` (13 to 19 of them).
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum.is_multiple_of(10)
}

/// What happens to what a rule finds.
/// Redactions so far, by rule name, for `/metrics`.
static COUNTS: LazyLock<Mutex<BTreeMap<String, Arc<AtomicU64>>>> = LazyLock::new(Mutex::default);

fn counter(name: &str) -> Arc<AtomicU64> {
    let mut counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    counts.entry(name.to_owned()).or_default().clone()
}

/// Redactions counted since start, by rule name.
pub fn counts() -> Vec<(String, u64)> {
    let counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    counts.iter().map(|(name, n)| (name.clone(), n.load(Ordering::Relaxed))).collect()
}

enum Finder {
    Detector(Detector),
    Pattern,
}

struct TextRule {
    re: regex::Regex,
    finder: Finder,
    action: Action,
    count: Arc<AtomicU64>,
}

/// Bytes of `stages.redact.hash_key` at least.
pub const MIN_HASH_KEY_BYTES: usize = 16;

/// Redact rules, compiled: one regex set finds which text rules can apply to a string at all (most strings
/// match none, and pay one pass), then only those run.
#[derive(Default)]
pub struct Redactor {
    set: Option<regex::RegexSet>,
    text: Vec<TextRule>,
    /// Attribute names (lower case), their action and count.
    attributes: Vec<(String, Action, Arc<AtomicU64>)>,
    key: Option<Arc<[u8]>>,
}

impl Redactor {
    /// Compiles `rules`; `key`: the hash key (required when a rule hashes). Problems name their field under
    /// `field`.
    pub fn compile(rules: &[RedactRule], key: Option<&[u8]>, field: &str) -> Result<Redactor, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        if rules.len() > crate::rules::MAX_RULES {
            problems.push(RuleProblem::new(field, format!("at most {} rules", crate::rules::MAX_RULES)));
        }
        let mut redactor = Redactor { key: key.map(Arc::from), ..Redactor::default() };
        let mut sources = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{field}[{i}]");
            if rule.action == Action::Hash && key.is_none() {
                problems.push(RuleProblem::new(
                    format!("{at}.action"),
                    format!(
                        "hash needs `stages.redact.hash_key` in the daemon's config.toml (at least \
                         {MIN_HASH_KEY_BYTES} bytes, e.g. `openssl rand -hex 32`)"
                    ),
                ));
                continue;
            }
            let name = |default: String| rule.name.clone().unwrap_or(default);
            match (rule.detector, &rule.pattern, &rule.attribute) {
                (Some(detector), None, None) => {
                    let re = regex::Regex::new(detector.pattern()).expect("a built-in detector compiles");
                    sources.push(detector.pattern().to_owned());
                    let count = counter(&name(detector.name().to_owned()));
                    redactor.text.push(TextRule { re, finder: Finder::Detector(detector), action: rule.action, count });
                }
                (None, Some(pattern), None) => match crate::rules::regex(pattern, &format!("{at}.pattern")) {
                    Ok(re) if re.is_match("") => {
                        problems.push(RuleProblem::new(format!("{at}.pattern"), "matches the empty string"));
                    }
                    Ok(re) => {
                        sources.push(pattern.clone());
                        let count = counter(&name(format!("pattern_{i}")));
                        redactor.text.push(TextRule { re, finder: Finder::Pattern, action: rule.action, count });
                    }
                    Err(problem) => problems.push(problem),
                },
                (None, None, Some(attribute)) if !attribute.is_empty() => {
                    let count = counter(&name(format!("attribute_{attribute}")));
                    redactor.attributes.push((attribute.to_lowercase(), rule.action, count));
                }
                _ => problems.push(RuleProblem::new(&at, "needs exactly one of detector, pattern and attribute")),
            }
        }
        if !sources.is_empty() && problems.is_empty() {
            match regex::RegexSetBuilder::new(&sources).size_limit(crate::rules::MAX_COMPILED_BYTES * 8).build() {
                Ok(set) => redactor.set = Some(set),
                Err(e) => problems.push(RuleProblem::new(field, format!("the patterns together are too large: {e}"))),
            }
        }
        if problems.is_empty() { Ok(redactor) } else { Err(problems) }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.attributes.is_empty()
    }

    /// The hash key these rules were compiled with.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    fn hash(&self, value: &str) -> String {
        let key = self.key.as_deref().unwrap_or_default();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("hash:{hex}")
    }

    /// Redacts `record` in place.
    pub fn apply(&self, record: &mut LogRecord) {
        self.text(&mut record.message);
        if let Some(exception) = &mut record.exception {
            if let Some(value) = &mut exception.value {
                self.text(value);
            }
            if let Some(stacktrace) = &mut exception.stacktrace {
                self.text(stacktrace);
            }
        }
        if !self.is_empty() {
            self.value(&mut record.attributes);
        }
    }

    /// The attribute rule for `key`, compared case-insensitively (without allocating for ASCII keys).
    fn attribute_rule(&self, key: &str) -> Option<(Action, &Arc<AtomicU64>)> {
        let lower = (!key.is_ascii()).then(|| key.to_lowercase());
        self.attributes.iter().find_map(|(name, action, count)| {
            let same = match &lower {
                Some(lower) => lower == name,
                None => name.eq_ignore_ascii_case(key),
            };
            same.then_some((*action, count))
        })
    }

    fn value(&self, value: &mut Value) {
        match value {
            Value::String(s) => self.text(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            Value::Object(map) => {
                if !self.attributes.is_empty() && map.keys().any(|k| self.attribute_rule(k).is_some()) {
                    let named: Vec<(String, Action, Arc<AtomicU64>)> = map
                        .keys()
                        .filter_map(|k| self.attribute_rule(k).map(|(a, c)| (k.clone(), a, c.clone())))
                        .collect();
                    for (key, action, count) in named {
                        count.fetch_add(1, Ordering::Relaxed);
                        match action {
                            Action::Remove => {
                                map.remove(&key);
                            }
                            Action::Mask => {
                                map.insert(key, Value::String("***".into()));
                            }
                            Action::Hash => {
                                let plain = match map.get(&key) {
                                    Some(Value::String(s)) => s.clone(),
                                    Some(other) => other.to_string(),
                                    None => String::new(),
                                };
                                map.insert(key, Value::String(self.hash(&plain)));
                            }
                        }
                    }
                }
                for (key, v) in map.iter_mut() {
                    if self.attributes.is_empty() || self.attribute_rule(key).is_none() {
                        self.value(v);
                    }
                }
            }
            _ => {}
        }
    }

    /// Redacts one string in place.
    fn text(&self, s: &mut String) {
        let Some(set) = &self.set else { return };
        let matched = set.matches(s);
        if !matched.matched_any() {
            return;
        }
        for i in matched.iter() {
            let rule = &self.text[i];
            let haystack: &str = s;
            let replaced = rule.re.replace_all(haystack, |caps: &regex::Captures<'_>| {
                let whole = caps.get(0).expect("group 0 is the match");
                if let Finder::Detector(d) = rule.finder
                    && !d.confirms(haystack, whole.start(), whole.end())
                {
                    return whole.as_str().to_owned();
                }
                rule.count.fetch_add(1, Ordering::Relaxed);
                // The bearer detector keeps its `Bearer ` and redacts the token.
                let (kept, secret) = match caps.get(1) {
                    Some(token) if matches!(rule.finder, Finder::Detector(Detector::Bearer)) => {
                        (&haystack[whole.start()..token.start()], token.as_str())
                    }
                    _ => ("", whole.as_str()),
                };
                let redacted = match rule.action {
                    Action::Remove => String::new(),
                    Action::Hash => self.hash(secret),
                    Action::Mask => match rule.finder {
                        Finder::Detector(Detector::Email) => "***@***".into(),
                        Finder::Detector(Detector::Card) => {
                            let digits: String = secret.chars().filter(char::is_ascii_digit).collect();
                            format!("****{}", &digits[digits.len().saturating_sub(4)..])
                        }
                        _ => "***".into(),
                    },
                };
                format!("{kept}{redacted}")
            });
            if let Cow::Owned(redacted) = replaced {
                *s = redacted;
            }
        }
    }
}

/// The redact stage: the config's rules, then each project's.
pub struct Redact {
    rules: Arc<Compiled<Redactor>>,
}

impl Redact {
    pub fn new(rules: Arc<Compiled<Redactor>>) -> Redact {
        Redact { rules }
    }

    pub fn layer(rules: Arc<Compiled<Redactor>>) -> StageLayer<Redact> {
        StageLayer::new(Redact::new(rules))
    }
}

#[async_trait::async_trait]
impl Stage for Redact {
    const NAME: &'static str = "redact";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        let project = request.project()?;
        let global = self.rules.global();
        let key = global.key().map(<[u8]>::to_vec);
        let own = self
            .rules
            .project(project.project_id, project.stages.as_ref().filter(|s| !s.redact.is_empty()), move |rules| {
                Redactor::compile(&rules.redact, key.as_deref(), "stages.redact")
            })
            .await;
        if global.is_empty() && own.is_none() {
            return Ok(());
        }
        crate::stage::over_records(&mut request.records, own.is_some(), move |records| {
            for record in records {
                global.apply(record);
                if let Some(own) = &own {
                    own.apply(record);
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
    use crate::log::Exception;
    use crate::rules::StageRules;
    use crate::testing;

    fn record(message: &str, attributes: Value) -> LogRecord {
        LogRecord { attributes, ..testing::log(message) }
    }

    fn redactor(rules: Value, key: Option<&[u8]>) -> Redactor {
        let rules: Vec<RedactRule> = serde_json::from_value(rules).expect("rules");
        Redactor::compile(&rules, key, "stages.redact").unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn all_detectors() -> Value {
        json!(
            ["email", "card", "ipv4", "ipv6", "jwt", "bearer", "cloud_keys"]
                .iter()
                .map(|d| json!({"detector": d}))
                .collect::<Vec<_>>()
        )
    }

    #[test]
    fn detectors_mask_what_they_find_and_leave_the_rest() {
        let r = redactor(all_detectors(), None);
        let cases = [
            ("user alice@example.com paid with 4111 1111 1111 1111", "user ***@*** paid with ****1111"),
            ("card 4111-1111-1111-1112 fails Luhn", "card 4111-1111-1111-1112 fails Luhn"),
            ("order 1234567890123 is not a card", "order 1234567890123 is not a card"),
            ("from 10.0.42.7 and 2001:db8::1 at 12:30:45", "from *** and *** at 12:30:45"),
            ("in core::fmt::Write and 999.1.1.1", "in core::fmt::Write and 999.1.1.1"),
            ("Authorization: Bearer abc.DEF-123_x=", "Authorization: Bearer ***"),
            ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_1 ok", "token *** ok"),
            ("key AKIAIOSFODNN7EXAMPLE and ledger_0123456789abcdefghijABCDEFGHIJ01", "key *** and ***"),
            ("nothing to see, Zürich 東京", "nothing to see, Zürich 東京"),
        ];
        for (input, expected) in cases {
            let mut rec = record(input, json!({}));
            r.apply(&mut rec);
            assert_eq!(rec.message, expected, "{input:?}");
        }
    }

    #[test]
    fn attributes_and_exceptions_are_redacted_at_any_depth() {
        let r = redactor(
            json!([{"detector": "email"}, {"attribute": "password"}, {"attribute": "Token", "action": "remove"}]),
            None,
        );
        let mut rec = record(
            "m",
            json!({"user": {"mail": "bob@example.org", "PASSWORD": {"nested": 1}, "token": "t"},
                   "list": ["x", "carol@example.net"]}),
        );
        rec.exception =
            Some(Exception { kind: "E".into(), value: Some("for dave@example.com".into()), stacktrace: None });
        r.apply(&mut rec);
        assert_eq!(rec.attributes, json!({"user": {"mail": "***@***", "PASSWORD": "***"}, "list": ["x", "***@***"]}));
        assert_eq!(rec.exception.and_then(|e| e.value).as_deref(), Some("for ***@***"));
    }

    #[test]
    fn hashing_is_keyed_and_stable_and_removal_cuts() {
        let key = b"0123456789abcdef0123456789abcdef";
        let r = redactor(
            json!([{"detector": "email", "action": "hash"}, {"pattern": "ORD-\\d+", "action": "remove"}]),
            Some(key),
        );
        let mut a = record("a@b.io bought ORD-42", json!({}));
        let mut b = record("a@b.io again", json!({}));
        r.apply(&mut a);
        r.apply(&mut b);
        let hash = a.message.split(' ').next().expect("word").to_owned();
        assert!(hash.starts_with("hash:") && hash.len() == 21, "{hash}");
        assert_eq!(a.message, format!("{hash} bought "));
        assert_eq!(b.message, format!("{hash} again"), "equal values, equal hashes");
        let other = redactor(json!([{"detector": "email", "action": "hash"}]), Some(b"another key, 16+ bytes"));
        let mut c = record("a@b.io", json!({}));
        other.apply(&mut c);
        assert_ne!(c.message, hash, "another key, another hash");
    }

    #[test]
    fn bad_rules_are_refused_with_their_field() {
        let rules: Vec<RedactRule> = serde_json::from_value(json!([
            {"pattern": "([a-z"}, {"detector": "email", "pattern": "x"}, {"pattern": "a*"},
            {"detector": "email", "action": "hash"}
        ]))
        .expect("rules");
        let problems = Redactor::compile(&rules, None, "stages.redact").err().expect("refused");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["stages.redact[0].pattern", "stages.redact[1]", "stages.redact[2].pattern", "stages.redact[3].action"]
        );
        assert!(serde_json::from_value::<RedactRule>(json!({"detector": "passport"})).is_err());
    }

    #[tokio::test]
    async fn the_stage_applies_the_configs_rules_then_the_projects() {
        let global = redactor(json!([{"detector": "email"}]), None);
        let stage = Redact::layer(Arc::new(Compiled::new(global)));
        let own = StageRules {
            redact: serde_json::from_value(json!([{"pattern": "ORD-[0-9]+", "action": "remove"}])).expect("rule"),
            ..StageRules::default()
        };
        let seen =
            testing::passed_on(stage, testing::project(Some(own)), vec![record("a@b.io ordered ORD-7", json!({}))])
                .await;
        assert_eq!(seen.records[0].message, "***@*** ordered ", "both rule sets applied before the next stage");
    }

    #[test]
    fn each_redaction_is_counted_by_rule_name() {
        let r = redactor(json!([{"pattern": "secret-\\d", "name": "counted_secret"}]), None);
        let before = counts().into_iter().find(|(n, _)| n == "counted_secret").map_or(0, |(_, n)| n);
        let mut rec = record("secret-1 and secret-2", json!({"k": "secret-3"}));
        r.apply(&mut rec);
        let after = counts().into_iter().find(|(n, _)| n == "counted_secret").map_or(0, |(_, n)| n);
        assert_eq!(after - before, 3);
        assert_eq!(rec.message, "*** and ***");
    }
}
