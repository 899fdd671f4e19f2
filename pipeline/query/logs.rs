//! Reading logs: [`LogParams`] is the question as a front received it, [`LogParams::validate`] makes it the
//! store's [`LogQuery`] (every rule in one place), [`page`] and [`one`] answer it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledger_stages::{Level, LogRecord};
use serde::Serialize;
use uuid::Uuid;

use super::{Params, Range, bad, level};
use crate::error::ApiError;
use crate::store::logs::{Cursor, LogQuery, LogStore};

/// Terms of `q` at most, and bytes per term.
const MAX_TERMS: usize = 16;
const MAX_TERM_BYTES: usize = 256;

/// What a reader asks of a project's logs, typed but not yet judged.
#[derive(Clone, Debug, Default)]
pub struct LogParams {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub filter: LogFilter,
    /// 1 to 1000; default 100.
    pub limit: Option<u32>,
    /// A `next_cursor` this API gave.
    pub cursor: Option<String>,
}

impl LogParams {
    /// From REST's query string.
    pub(crate) fn from_query(params: &HashMap<String, String>) -> Result<LogParams, ApiError> {
        let p = Params(params);
        p.only(&[
            "from",
            "to",
            "level",
            "min_level",
            "service",
            "environment",
            "q",
            "fingerprint",
            "trace_id",
            "limit",
            "cursor",
        ])?;
        let levels = p.list("level").iter().map(|l| level("level", l)).collect::<Result<Vec<_>, _>>()?;
        let owned = |name: &str| p.text(name).map(str::to_owned);
        Ok(LogParams {
            from: p.time("from")?,
            to: p.time("to")?,
            filter: LogFilter {
                levels,
                min_level: p.level("min_level")?,
                services: p.list("service"),
                environment: owned("environment"),
                q: owned("q"),
                fingerprint: owned("fingerprint"),
                trace_id: owned("trace_id"),
            },
            limit: p.number("limit")?,
            cursor: owned("cursor"),
        })
    }

    /// The store's question for `project_id`, or a 400 naming the first bad parameter.
    pub(crate) fn validate(self, project_id: Uuid) -> Result<LogQuery, ApiError> {
        let filter = self.filter;
        let texts = [
            ("environment", filter.environment.as_deref()),
            ("q", filter.q.as_deref()),
            ("fingerprint", filter.fingerprint.as_deref()),
            ("trace_id", filter.trace_id.as_deref()),
            ("cursor", self.cursor.as_deref()),
        ];
        let services = filter.services.iter().map(|s| ("service", Some(s.as_str())));
        if let Some((name, _)) = texts.into_iter().chain(services).find(|(_, v)| v.is_some_and(|v| v.contains('\0'))) {
            // Neither database compares text holding a NUL.
            return Err(bad(name, "must not contain NUL characters"));
        }
        let Range { from, to } = Range::new(self.from, self.to)?;
        let terms = filter.q.as_deref().map(search_terms).unwrap_or_default();
        if terms.len() > MAX_TERMS || terms.iter().any(|t| t.len() > MAX_TERM_BYTES) {
            return Err(bad("q", "may hold at most 16 terms of at most 256 bytes"));
        }
        let fingerprint = match filter.fingerprint.as_deref().filter(|f| !f.is_empty()) {
            Some(f) if f.len() == 16 => {
                Some(u64::from_str_radix(f, 16).map_err(|_| bad("fingerprint", "must be 16 hex characters"))?)
            }
            Some(_) => return Err(bad("fingerprint", "must be 16 hex characters")),
            None => None,
        };
        let limit = match self.limit {
            Some(l) if (1..=1000).contains(&l) => l as usize,
            Some(_) => return Err(bad("limit", "must be 1 to 1000")),
            None => 100,
        };
        let cursor = self
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| Cursor::decode(c).ok_or_else(|| bad("cursor", "is not a cursor this API gave")))
            .transpose()?;
        Ok(LogQuery {
            project_id,
            from,
            to,
            levels: filter.levels,
            min_level: filter.min_level,
            services: filter.services.into_iter().filter(|s| !s.is_empty()).collect(),
            environment: filter.environment.filter(|e| !e.is_empty()),
            terms,
            fingerprint,
            trace_id: filter.trace_id.filter(|t| !t.is_empty()),
            limit,
            cursor,
        })
    }
}

/// The filters of `GET /v1/logs` without a range or a page: a question kept to be asked again (a
/// `query_count` alert rule's `query`). Read from JSON as clients write it (`"level": "ERROR,WARN"` or
/// `["ERROR", "WARN"]`, one name or a list for `service`), written back in one form (lists as lists).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LogFilter {
    /// Any of these (empty: any).
    #[serde(rename = "level", skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<Level>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_level: Option<Level>,
    /// Any of these (empty: any).
    #[serde(rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Words and `"quoted phrases"`, each of which must occur.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// 16 hex characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// The parameters of `GET /v1/logs` a [`LogFilter`] does not hold.
pub const NOT_FILTERS: [&str; 4] = ["from", "to", "cursor", "limit"];

impl LogFilter {
    /// From a JSON object of `GET /v1/logs` filters; a bad one is a 400 naming it. `from`, `to`, `cursor`
    /// and `limit` are not filters.
    pub(crate) fn from_json(value: &serde_json::Value) -> Result<LogFilter, ApiError> {
        use serde_json::Value;
        let Some(map) = value.as_object() else {
            return Err(ApiError::BadRequest("the filters must be an object".into()));
        };
        let text = |name: &str, v: &Value| -> Result<String, ApiError> {
            v.as_str().map(str::to_owned).ok_or_else(|| bad(name, "must be a string"))
        };
        // One name, a comma list, or an array of names.
        let list = |name: &str, v: &Value| -> Result<Vec<String>, ApiError> {
            let items: Vec<String> = match v {
                Value::Array(items) => items.iter().map(|i| text(name, i)).collect::<Result<_, _>>()?,
                other => vec![text(name, other)?],
            };
            Ok(items.iter().flat_map(|i| i.split(',')).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        };
        let mut filter = LogFilter::default();
        for (name, v) in map {
            match name.as_str() {
                "level" => filter.levels = list(name, v)?.iter().map(|l| level(name, l)).collect::<Result<_, _>>()?,
                "min_level" => filter.min_level = Some(level(name, &text(name, v)?)?),
                "service" => filter.services = list(name, v)?,
                "environment" => filter.environment = Some(text(name, v)?),
                "q" => filter.q = Some(text(name, v)?),
                "fingerprint" => filter.fingerprint = Some(text(name, v)?),
                "trace_id" => filter.trace_id = Some(text(name, v)?),
                _ => return Err(bad(name, "is unknown")),
            }
        }
        Ok(filter)
    }

    /// The question over `from`..`to`, as a front would have asked it.
    pub(crate) fn params(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> LogParams {
        LogParams { from: Some(from), to: Some(to), filter: self.clone(), ..LogParams::default() }
    }
}

impl<'de> serde::Deserialize<'de> for LogFilter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LogFilter, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        LogFilter::from_json(&value).map_err(serde::de::Error::custom)
    }
}

/// One page of logs, newest first, and the cursor of the next if there is one.
#[derive(Debug)]
pub struct Page {
    pub logs: Vec<LogRecord>,
    pub next_cursor: Option<String>,
}

pub(crate) async fn page(store: &dyn LogStore, mut query: LogQuery) -> Result<Page, ApiError> {
    let limit = query.limit;
    // One more than asked tells whether there is a next page.
    query.limit += 1;
    let mut logs = store.query(&query).await?;
    let next_cursor = (logs.len() > limit).then(|| {
        logs.truncate(limit);
        logs.last().map(|r| Cursor::after(r).encode())
    });
    Ok(Page { logs, next_cursor: next_cursor.flatten() })
}

/// One log of the project, or 404.
pub(crate) async fn one(store: &dyn LogStore, project_id: Uuid, id: Uuid) -> Result<LogRecord, ApiError> {
    store.get(project_id, id).await?.ok_or(ApiError::NotFound)
}

/// Splits `q` into terms: `"quoted phrases"` and single words.
pub(crate) fn search_terms(q: &str) -> Vec<String> {
    let mut terms = Vec::new();
    for (i, part) in q.split('"').enumerate() {
        if i % 2 == 1 {
            // Inside quotes: one phrase.
            let phrase = part.split_whitespace().collect::<Vec<_>>().join(" ");
            if !phrase.is_empty() {
                terms.push(phrase);
            }
        } else {
            terms.extend(part.split_whitespace().map(str::to_owned));
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_words_and_phrases() {
        assert_eq!(search_terms("disk  \"no space left\" Full"), ["disk", "no space left", "Full"]);
        assert_eq!(search_terms("\"unclosed phrase"), ["unclosed phrase"]);
        assert!(search_terms("  ").is_empty());
    }

    #[test]
    fn a_filter_reads_json_as_clients_write_it_and_writes_one_form() {
        let written = serde_json::json!({"level": "error, warn", "service": ["api", "db"], "q": "timeout"});
        let filter = LogFilter::from_json(&written).expect("valid");
        assert_eq!(filter.levels, [Level::Error, Level::Warning]);
        let back = serde_json::to_value(&filter).expect("serializes");
        assert_eq!(back, serde_json::json!({"level": ["ERROR", "WARNING"], "service": ["api", "db"], "q": "timeout"}));
        assert_eq!(serde_json::from_value::<LogFilter>(back).expect("reads its own form"), filter);
        for (bad_filter, param) in [
            (serde_json::json!({"level": "LOUD"}), "level"),
            (serde_json::json!({"from": "x"}), "from"),
            (serde_json::json!({"q": 5}), "q"),
        ] {
            let error = LogFilter::from_json(&bad_filter).expect_err(param);
            assert!(error.to_string().contains(&format!("`{param}`")), "{error}");
        }
    }

    #[test]
    fn every_rule_is_checked_in_one_place() {
        let project = Uuid::nil();
        let filtered = |filter: LogFilter| LogParams { filter, ..LogParams::default() };
        let ok = LogParams {
            limit: Some(5),
            filter: LogFilter { fingerprint: Some("00000000deadbeef".into()), ..LogFilter::default() },
            ..LogParams::default()
        };
        let query = ok.validate(project).expect("valid");
        assert_eq!((query.limit, query.fingerprint), (5, Some(0xdead_beef)));
        for (bad_params, param) in [
            (LogParams { limit: Some(0), ..LogParams::default() }, "limit"),
            (LogParams { limit: Some(1001), ..LogParams::default() }, "limit"),
            (filtered(LogFilter { fingerprint: Some("xyz".into()), ..LogFilter::default() }), "fingerprint"),
            (LogParams { cursor: Some("nope".into()), ..LogParams::default() }, "cursor"),
            (filtered(LogFilter { q: Some("a ".repeat(17)), ..LogFilter::default() }), "q"),
            (filtered(LogFilter { services: vec!["a\0b".into()], ..LogFilter::default() }), "service"),
        ] {
            let error = bad_params.validate(project).expect_err(param);
            assert!(error.to_string().contains(&format!("`{param}`")), "{error}");
        }
    }
}
