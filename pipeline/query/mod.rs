//! The query core: what a reader asks, parsed and validated once, answered by one function each, whichever
//! front asked. REST turns its query string into these types with [`Params`]; gRPC maps its message fields
//! into the same types; both then call the same answer.
//!
//! - [`logs`]: `GET /v1/logs` and one log by id.
//! - [`analytics`]: error rate, volume, top errors (from the analytics cache) and usage (from the accounts).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledger_stages::Level;

use crate::error::ApiError;

pub mod analytics;
pub mod logs;
pub mod operations;
pub mod tail;

/// A bad parameter: 400 naming it.
pub(crate) fn bad(param: &str, reason: &str) -> ApiError {
    ApiError::BadRequest(format!("query parameter `{param}` {reason}"))
}

/// A time range, by default the 24 hours before `to` (itself by default now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Range {
    pub(crate) fn new(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<Range, ApiError> {
        let to = to.unwrap_or_else(Utc::now);
        let from = from.unwrap_or(to - chrono::Duration::hours(24));
        if from > to {
            return Err(bad("from", "must not be after `to`"));
        }
        Ok(Range { from, to })
    }
}

/// A REST query string, read into typed values: each bad value a 400 naming its parameter. `project_id` is
/// always allowed (it says which project a session reads).
pub struct Params<'a>(pub &'a HashMap<String, String>);

impl Params<'_> {
    /// Refuses any parameter not in `allowed`, and any value holding a NUL character (neither database
    /// compares text with one).
    pub(crate) fn only(&self, allowed: &[&str]) -> Result<&Self, ApiError> {
        if let Some(unknown) = self.0.keys().find(|k| !allowed.contains(&k.as_str()) && k.as_str() != "project_id") {
            return Err(bad(unknown, "is unknown"));
        }
        match self.0.iter().find(|(_, v)| v.contains('\0')) {
            Some((name, _)) => Err(bad(name, "must not contain NUL characters")),
            None => Ok(self),
        }
    }

    /// A parameter's text; empty counts as absent.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub(crate) fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.text(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v).map(|t| t.to_utc()).map_err(|_| bad(name, "must be an RFC 3339 time"))
            })
            .transpose()
    }

    pub(crate) fn range(&self) -> Result<Range, ApiError> {
        Range::new(self.time("from")?, self.time("to")?)
    }

    pub(crate) fn level(&self, name: &str) -> Result<Option<Level>, ApiError> {
        self.text(name).map(|v| level(name, v)).transpose()
    }

    /// A comma list.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.text(name).map(|list| list.split(',').map(|s| s.trim().to_owned()).collect()).unwrap_or_default()
    }

    /// A whole number; its range is checked by the answer, so REST and gRPC are refused alike.
    pub(crate) fn number(&self, name: &str) -> Result<Option<u32>, ApiError> {
        self.text(name).map(|v| v.parse::<u32>().map_err(|_| bad(name, "must be a whole number"))).transpose()
    }
}

/// A level by name (API.md's names, case-insensitive; `warn` and `fatal` too).
pub(crate) fn level(param: &str, value: &str) -> Result<Level, ApiError> {
    Level::parse(value.trim()).ok_or_else(|| bad(param, "must be DEBUG, INFO, WARNING, ERROR or CRITICAL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_default_to_the_last_day_and_refuse_backwards() {
        let r = Range::new(None, None).expect("default");
        assert_eq!(r.to - r.from, chrono::Duration::hours(24));
        let (a, b) = (Utc::now(), Utc::now() - chrono::Duration::hours(1));
        assert!(Range::new(Some(a), Some(b)).is_err());
    }

    #[test]
    fn parameters_are_typed_and_named_when_bad() {
        let map: HashMap<String, String> =
            [("from", "yesterday"), ("limit", "x"), ("level", "error,warn")].map(|(k, v)| (k.into(), v.into())).into();
        let p = Params(&map);
        assert!(matches!(p.time("from"), Err(ApiError::BadRequest(m)) if m.contains("`from`")));
        assert!(matches!(p.number("limit"), Err(ApiError::BadRequest(m)) if m.contains("`limit`")));
        assert_eq!(p.list("level"), ["error", "warn"]);
        assert!(p.only(&["from", "limit"]).is_err(), "level is not allowed");
    }
}
