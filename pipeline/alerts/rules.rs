//! A rule, typed: what it watches ([`Condition`], one variant per kind with its parameters) and where it
//! notifies ([`Channel`]). A rule as clients send it (`POST` and `PATCH /v1/projects/{id}/alerts…`) is
//! checked once, every problem named as 422 `validation_failed`, and becomes these types; the store keeps
//! them as JSON and they are read back strictly (a row that does not read is an error, never a default).

use std::net::IpAddr;

use chrono::Utc;
use ledger_stages::Level;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::{ApiError, FieldProblem};
use crate::query::logs::{LogFilter, NOT_FILTERS};
use crate::store::alerts::{AlertRule, Watch};

/// What a rule watches: its `kind` and `params` in the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params", rename_all = "snake_case")]
pub enum Condition {
    /// The share of logs at ERROR or above over the window, in percent, above `threshold_percent`.
    ErrorRate {
        threshold_percent: f64,
        window_secs: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_logs: Option<u64>,
    },
    /// More than `threshold` logs matching `query` over the window.
    QueryCount { query: LogFilter, threshold: u64, window_secs: i64 },
    /// A fingerprint first seen after the rule was made, at `min_level` or above.
    NewError {
        #[serde(default)]
        min_level: ErrorLevel,
    },
    /// A fingerprint seen again after `quiet_secs` without it.
    Regression { quiet_secs: i64 },
}

impl Condition {
    pub const QUERY_COUNT: &str = "query_count";

    /// The kind's name in the API.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Condition::ErrorRate { .. } => "error_rate",
            Condition::QueryCount { .. } => "query_count",
            Condition::NewError { .. } => "new_error",
            Condition::Regression { .. } => "regression",
        }
    }

    /// The kind's parameters in the API's form.
    pub(crate) fn params(&self) -> Value {
        serde_json::to_value(self).ok().and_then(|mut v| v.get_mut("params").map(Value::take)).unwrap_or(json!({}))
    }

    /// From a kind and its parameters as the API (and the store) write them.
    pub(crate) fn from_parts(kind: &str, params: Value) -> Result<Condition, serde_json::Error> {
        serde_json::from_value(json!({"kind": kind, "params": params}))
    }
}

/// The levels a new_error rule can start at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ErrorLevel {
    #[default]
    Error,
    Critical,
}

impl ErrorLevel {
    pub(crate) fn level(self) -> Level {
        match self {
            ErrorLevel::Error => Level::Error,
            ErrorLevel::Critical => Level::Critical,
        }
    }

    fn parse(name: &str) -> Option<ErrorLevel> {
        match name.to_ascii_uppercase().as_str() {
            "ERROR" => Some(ErrorLevel::Error),
            "CRITICAL" => Some(ErrorLevel::Critical),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for ErrorLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ErrorLevel, D::Error> {
        let name = String::deserialize(deserializer)?;
        ErrorLevel::parse(&name).ok_or_else(|| serde::de::Error::custom("min_level must be ERROR or CRITICAL"))
    }
}

/// Where a rule notifies: `channel` in the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Channel {
    /// A JSON POST, signed with the rule's secret.
    Webhook { url: String },
    /// A Slack incoming webhook.
    Slack { url: String },
    /// PagerDuty's Events API v2.
    Pagerduty { routing_key: String, url: String },
}

impl Channel {
    pub(crate) fn url(&self) -> &str {
        match self {
            Channel::Webhook { url } | Channel::Slack { url } | Channel::Pagerduty { url, .. } => url,
        }
    }
}

/// A rule with its state, typed.
pub type Rule = AlertRule<Condition, Channel>;

impl Rule {
    /// A stored rule, read strictly: one that does not read names itself and why.
    pub fn read(row: AlertRule) -> Result<Rule, String> {
        let id = row.id;
        let unreadable = |what: &str, e: serde_json::Error| format!("alert rule {id}: its {what} does not read: {e}");
        row.try_map(
            |watch| Condition::from_parts(&watch.kind, watch.params).map_err(|e| unreadable("params", e)),
            |channel| serde_json::from_value(channel).map_err(|e| unreadable("channel", e)),
        )
    }

    /// The rule as the store keeps it.
    pub fn stored(&self) -> AlertRule {
        let watch =
            |c: Condition| Ok::<_, std::convert::Infallible>(Watch { kind: c.kind().to_owned(), params: c.params() });
        let channel = |n: Channel| Ok(serde_json::to_value(n).unwrap_or(Value::Null));
        match self.clone().try_map(watch, channel) {
            Ok(stored) => stored,
            Err(never) => match never {},
        }
    }
}

pub const KINDS: [&str; 4] = ["error_rate", "query_count", "new_error", "regression"];
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// The body of a create (every field but the optional ones required) or an update (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub params: Option<Value>,
    pub channel: Option<Value>,
    pub cooldown_secs: Option<i64>,
    pub enabled: Option<bool>,
}

fn number(params: &Value, name: &str, min: f64, max: f64, problems: &mut Vec<FieldProblem>) -> Option<f64> {
    match params.get(name).and_then(Value::as_f64) {
        Some(v) if (min..=max).contains(&v) => Some(v),
        Some(_) => {
            problems.push(FieldProblem::new(format!("params.{name}"), format!("must be {min} to {max}")));
            None
        }
        None => {
            problems.push(FieldProblem::new(format!("params.{name}"), "is required (a number)"));
            None
        }
    }
}

fn whole(params: &Value, name: &str, min: i64, max: i64, problems: &mut Vec<FieldProblem>) {
    match params.get(name).map(|v| v.as_i64()) {
        Some(Some(v)) if (min..=max).contains(&v) => {}
        Some(_) => problems
            .push(FieldProblem::new(format!("params.{name}"), format!("must be a whole number, {min} to {max}"))),
        None => problems.push(FieldProblem::new(format!("params.{name}"), "is required")),
    }
}

/// Every problem with a kind's parameters.
pub(crate) fn check_params(kind: &str, params: &Value, problems: &mut Vec<FieldProblem>) {
    if !params.is_object() {
        problems.push(FieldProblem::new("params", "must be an object"));
        return;
    }
    let allowed: &[&str] = match kind {
        "error_rate" => &["threshold_percent", "window_secs", "min_logs"],
        "query_count" => &["query", "threshold", "window_secs"],
        "new_error" => &["min_level"],
        "regression" => &["quiet_secs"],
        _ => return,
    };
    if let Some(map) = params.as_object() {
        for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
            problems.push(FieldProblem::new(format!("params.{key}"), format!("is not a parameter of {kind}")));
        }
    }
    match kind {
        "error_rate" => {
            number(params, "threshold_percent", 0.0, 100.0, problems);
            whole(params, "window_secs", 60, 86_400, problems);
            if params.get("min_logs").is_some() {
                whole(params, "min_logs", 1, 1_000_000_000, problems);
            }
        }
        "query_count" => {
            whole(params, "threshold", 0, 10_000, problems);
            whole(params, "window_secs", 1, 86_400, problems);
            match params.get("query") {
                Some(query) if query.is_object() => {
                    let now = Utc::now();
                    if let Some(bad) = NOT_FILTERS.iter().find(|k| query.get(**k).is_some()) {
                        problems.push(FieldProblem::new(format!("params.query.{bad}"), "is set by the rule's window"));
                    } else if let Err(e) =
                        LogFilter::from_json(query).and_then(|f| f.params(now, now).validate(Uuid::nil()))
                    {
                        problems.push(FieldProblem::new("params.query", e.to_string()));
                    }
                }
                Some(_) => {
                    problems.push(FieldProblem::new("params.query", "must be an object of GET /v1/logs filters"))
                }
                None => problems.push(FieldProblem::new("params.query", "is required")),
            }
        }
        "new_error" if params.get("min_level").is_some_and(|l| l.as_str().and_then(ErrorLevel::parse).is_none()) => {
            problems.push(FieldProblem::new("params.min_level", "must be ERROR or CRITICAL"));
        }
        "regression" => whole(params, "quiet_secs", 1, 365 * 86_400, problems),
        _ => {}
    }
}

/// Whether an address is one a public service should not be made to call: loopback, private, link-local,
/// shared (CGNAT), reserved, and every IPv6 form that embeds an IPv4 address (mapped, compatible, NAT64,
/// 6to4, Teredo), whatever the address it embeds.
pub(crate) fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some()
                // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16),
                // Teredo (2001::/32): each reaches an IPv4 address through the IPv6 form.
                || s[..6].iter().all(|x| *x == 0)
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
        }
    }
}

/// The message for a target refused as private.
const PRIVATE: &str = "resolves to a loopback or private address (see alerts.allow_private_targets)";

/// A channel URL's problem, if it has one: http(s), a host that resolves, and (unless allowed) not to a
/// private address. Checked when a rule is saved; each delivery resolves again through
/// [`PublicResolver`] and connects only to the addresses it checked.
pub(crate) async fn check_url(field: &str, url: &str, allow_private: bool) -> Option<FieldProblem> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some(FieldProblem::new(field, "is not a URL"));
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Some(FieldProblem::new(field, "must be an http:// or https:// URL"));
    }
    let Some(host) = parsed.host_str() else { return Some(FieldProblem::new(field, "has no host")) };
    if allow_private {
        return None;
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    // An address literal is checked as it is (the client connects to it without resolving); a name is
    // resolved.
    let addrs: Vec<IpAddr> = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
            Err(_) => Vec::new(),
        },
    };
    if addrs.is_empty() {
        return Some(FieldProblem::new(field, "has a host name that does not resolve"));
    }
    addrs.iter().any(|ip| private(*ip)).then(|| FieldProblem::new(field, PRIVATE))
}

/// Whether a delivery to `url` must not be made: a private address literal (a name is checked by the
/// client's [`PublicResolver`] as it connects; a name that does not resolve now is a failed attempt, retried).
pub(crate) fn refused_literal(url: &str, allow_private: bool) -> bool {
    let host = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned));
    let literal = host.and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok());
    !allow_private && literal.is_some_and(private)
}

/// The alert client's resolver: a name's addresses, refused whole when any of them is private, so the
/// client connects to exactly the addresses checked (a name cannot resolve to a public address for the
/// check and a private one for the connection).
pub struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.iter().any(|a| private(a.ip())) {
                return Err(format!("{host} {PRIVATE}").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Every problem with a channel; the channel as stored (PagerDuty's default URL filled in).
pub(crate) async fn check_channel(channel: &Value, allow_private: bool, problems: &mut Vec<FieldProblem>) -> Value {
    let kind = channel.get("type").and_then(Value::as_str).unwrap_or_default();
    let allowed: &[&str] = match kind {
        "webhook" | "slack" => &["type", "url"],
        "pagerduty" => &["type", "routing_key", "url"],
        _ => {
            problems.push(FieldProblem::new("channel.type", "must be webhook, slack or pagerduty"));
            return channel.clone();
        }
    };
    if let Some(map) = channel.as_object() {
        for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
            problems.push(FieldProblem::new(format!("channel.{key}"), format!("is not a field of a {kind} channel")));
        }
    }
    let mut stored = channel.clone();
    // PagerDuty's own address when the client gives none: not the client's input, so not resolved here
    // (a daemon without outside DNS could not save the rule); each delivery still resolves it checked.
    let defaulted = kind == "pagerduty" && channel.get("url").is_none();
    if kind == "pagerduty" {
        match channel.get("routing_key").and_then(Value::as_str) {
            Some(k) if (1..=64).contains(&k.len()) => {}
            _ => problems.push(FieldProblem::new("channel.routing_key", "is required (1 to 64 characters)")),
        }
        if channel.get("url").is_none() {
            stored["url"] = json!(PAGERDUTY_URL);
        }
    }
    match stored.get("url").and_then(Value::as_str) {
        Some(_) if defaulted => {}
        Some(url) => {
            if let Some(problem) = check_url("channel.url", url, allow_private).await {
                problems.push(problem);
            }
        }
        None => problems.push(FieldProblem::new("channel.url", "is required")),
    }
    stored
}

/// The checked parts of a rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub name: String,
    pub condition: Condition,
    pub channel: Channel,
    pub cooldown_secs: i64,
    pub enabled: bool,
}

/// Checks an input against the rule it changes (`base`; none for a create), returning the whole rule.
pub(crate) async fn check(input: RuleInput, base: Option<&Rule>, allow_private: bool) -> Result<Checked, ApiError> {
    let mut problems = Vec::new();
    let name = input.name.or_else(|| base.map(|b| b.name.clone()));
    match &name {
        Some(n) if (1..=200).contains(&n.trim().len()) => {}
        Some(_) => problems.push(FieldProblem::new("name", "must be 1 to 200 characters")),
        None => problems.push(FieldProblem::new("name", "is required")),
    }
    if base.is_some() && input.kind.is_some() {
        problems.push(FieldProblem::new("kind", "cannot change: create another rule"));
    }
    let kind = base.map(|b| b.condition.kind().to_owned()).or(input.kind);
    match &kind {
        Some(k) if KINDS.contains(&k.as_str()) => {}
        Some(_) => problems.push(FieldProblem::new("kind", "must be error_rate, query_count, new_error or regression")),
        None => problems.push(FieldProblem::new("kind", "is required")),
    }
    let params = input.params.or_else(|| base.map(|b| b.condition.params())).unwrap_or_else(|| json!({}));
    if let Some(kind) = &kind {
        check_params(kind, &params, &mut problems);
    }
    let channel = match input.channel {
        Some(channel) => check_channel(&channel, allow_private, &mut problems).await,
        None => match base {
            Some(b) => serde_json::to_value(&b.channel).unwrap_or(Value::Null),
            None => {
                problems.push(FieldProblem::new("channel", "is required"));
                Value::Null
            }
        },
    };
    let cooldown_secs = input.cooldown_secs.or(base.map(|b| b.cooldown_secs)).unwrap_or(300);
    if !(0..=7 * 86_400).contains(&cooldown_secs) {
        problems.push(FieldProblem::new("cooldown_secs", "must be 0 to 604800"));
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    // Checked above field by field, so these read; should one not, the client hears which.
    let condition = Condition::from_parts(kind.as_deref().unwrap_or_default(), params)
        .map_err(|e| ApiError::validation("params", e.to_string()))?;
    let channel = serde_json::from_value(channel).map_err(|e| ApiError::validation("channel", e.to_string()))?;
    Ok(Checked {
        name: name.unwrap_or_default().trim().to_owned(),
        condition,
        channel,
        cooldown_secs,
        enabled: input.enabled.or(base.map(|b| b.enabled)).unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_problem_is_named() {
        let input = RuleInput {
            name: Some(String::new()),
            kind: Some("error_rate".into()),
            params: Some(json!({"threshold_percent": 150, "colour": 1})),
            channel: Some(json!({"type": "webhook", "url": "ftp://example.com"})),
            cooldown_secs: Some(-1),
            enabled: None,
        };
        let Err(ApiError::Validation(problems)) = check(input, None, false).await else { panic!("invalid") };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for field in
            ["name", "params.colour", "params.threshold_percent", "params.window_secs", "channel.url", "cooldown_secs"]
        {
            assert!(fields.contains(&field), "{field} missing from {fields:?}");
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://localhost./",
            "http://ip6-localhost/",
            "http://hook.invalid/",
        ] {
            assert!(check_url("channel.url", url, false).await.is_some(), "{url}");
            assert!(check_url("channel.url", url, true).await.is_none(), "{url}");
        }
        let unresolved = check_url("channel.url", "http://hook.invalid/", false).await.expect("refused");
        assert!(unresolved.reason.contains("does not resolve"), "{}", unresolved.reason);
        assert!(private("100.64.0.1".parse().expect("ip")));
        assert!(!private("93.184.216.34".parse().expect("ip")));
    }

    #[tokio::test]
    async fn the_delivery_client_never_connects_to_a_private_name() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().expect("a name");
        assert!(PublicResolver.resolve(name).await.is_err());
        // The alerts' own client, on a listener that "localhost" reaches: refused before connecting.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let http = crate::alerts::http_client(false);
        let sent = http.post(format!("http://localhost:{port}/hook")).send().await;
        assert!(sent.is_err(), "refused by the resolver");
        let accepted = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected to the private address");
    }

    #[tokio::test]
    async fn a_checked_rule_is_typed_and_reads_back_as_stored() {
        let input = RuleInput {
            name: Some(" errors ".into()),
            kind: Some("query_count".into()),
            params: Some(json!({"query": {"level": "error", "q": "timeout"}, "threshold": 5, "window_secs": 60})),
            channel: Some(json!({"type": "pagerduty", "routing_key": "abc"})),
            cooldown_secs: None,
            enabled: None,
        };
        let checked = check(input, None, false).await.expect("valid");
        let Condition::QueryCount { query, threshold, window_secs } = &checked.condition else { panic!("query_count") };
        assert_eq!(
            (query.levels.as_slice(), query.q.as_deref(), *threshold, *window_secs),
            (&[Level::Error][..], Some("timeout"), 5, 60)
        );
        assert_eq!(checked.channel, Channel::Pagerduty { routing_key: "abc".into(), url: PAGERDUTY_URL.into() });
        let params = checked.condition.params();
        assert_eq!(params, json!({"query": {"level": ["ERROR"], "q": "timeout"}, "threshold": 5, "window_secs": 60}));
        assert_eq!(Condition::from_parts("query_count", params).expect("reads"), checked.condition);
        // A stored row that does not read is an error naming the rule, not a default.
        assert!(Condition::from_parts("error_rate", json!({"window_secs": 60})).is_err());
        assert!(Condition::from_parts("new_error", json!({"min_level": "error"})).is_ok(), "older rows' lowercase");
    }

    #[tokio::test]
    async fn query_count_filters_are_those_of_get_logs() {
        let mut problems = Vec::new();
        check_params(
            "query_count",
            &json!({"query": {"level": ["ERROR"], "q": "timeout"}, "threshold": 5, "window_secs": 60}),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        check_params(
            "query_count",
            &json!({"query": {"level": "LOUD"}, "threshold": 5, "window_secs": 60}),
            &mut problems,
        );
        check_params("query_count", &json!({"query": {"from": "x"}, "threshold": 5, "window_secs": 60}), &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
