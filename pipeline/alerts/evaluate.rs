//! Evaluation: every `alerts.evaluate_interval_secs`, one instance with the jobs role looks at every enabled
//! rule. A state change (firing, resolved) is a conditional update only one evaluation can make, and every
//! notification is a row only one insert can make, so two instances never notify one event twice.
//!
//! - error_rate: the analytics cache's 5-minute buckets covering the window (a window is rounded out to
//!   whole buckets).
//! - query_count: the log store, counting matches in the window up to the threshold + 1.
//! - new_error: the analytics cache's errors with their first-seen times: a fingerprint first seen after
//!   the rule was made, at the rule's level or above, notified once.
//! - regression: errors seen since the last look whose previous occurrence (the rule's own record, else
//!   the log store) is at least `quiet_secs` before the first new one.

use chrono::{DateTime, Duration, Utc};
use ledger_stages::log::fingerprint_hex;
use serde_json::json;

use super::Alerts;
use super::notify::Notice;
use super::rules::{Condition, Rule};
use crate::query::logs::{LogFilter, LogParams};
use crate::store::analytics::Granularity;
use crate::store::logs::LogQuery;

/// How far behind now a regression rule's `checked_until` stays.
const LOOK_BACK_SECS: i64 = 60;

fn severity(level: i16) -> &'static str {
    if level >= ledger_stages::Level::Critical.number() { "critical" } else { "error" }
}

impl Alerts {
    /// One evaluation of every enabled rule; a rule that fails is logged and the others go on.
    pub(crate) async fn evaluate_all(&self) -> Result<(), String> {
        if let Err(error) = self.resume_unfinished().await {
            tracing::warn!(%error, "could not look for unfinished alert deliveries");
        }
        let rules = self.store.enabled_rules().await.map_err(|e| e.to_string())?;
        for row in rules {
            let rule = match Rule::read(row) {
                Ok(rule) => rule,
                Err(error) => {
                    tracing::error!(%error, "alert rule skipped");
                    continue;
                }
            };
            let kind = rule.condition.kind();
            crate::metrics::metrics().alert_evaluated(kind);
            if let Err(error) = self.evaluate(&rule, Utc::now()).await {
                tracing::warn!(rule = %rule.id, kind, %error, "alert rule evaluation failed");
            }
        }
        Ok(())
    }

    async fn evaluate(&self, rule: &Rule, now: DateTime<Utc>) -> Result<(), String> {
        match &rule.condition {
            Condition::ErrorRate { threshold_percent, window_secs, min_logs } => {
                let (rate, total) = self.error_rate(rule, *window_secs, now).await?;
                let holds = total >= min_logs.unwrap_or(1) && rate * 100.0 > *threshold_percent;
                let summary = format!(
                    "error rate {:.1} % over the last {window_secs} s ({total} logs; threshold {threshold_percent} %)",
                    rate * 100.0,
                );
                let details =
                    json!({"error_rate_percent": rate * 100.0, "logs": total, "threshold_percent": threshold_percent});
                self.transition(rule, holds, now, summary, details).await
            }
            Condition::QueryCount { query, threshold, window_secs } => {
                let count = self.count(rule, query, *window_secs, now, *threshold).await?;
                let holds = count > *threshold;
                let over = if holds { "more than " } else { "" };
                let summary = format!(
                    "{over}{} logs matched in the last {window_secs} s (threshold {threshold})",
                    count.min(*threshold),
                );
                let details = json!({"count_at_least": count, "threshold": threshold, "query": query});
                self.transition(rule, holds, now, summary, details).await
            }
            Condition::NewError { min_level } => self.new_errors(rule, min_level.level().number(), now).await,
            Condition::Regression { quiet_secs } => self.regressions(rule, *quiet_secs, now).await,
        }
    }

    /// Fires when `holds` and the rule is not firing (and its cooldown has passed), resolves when it is.
    async fn transition(
        &self,
        rule: &Rule,
        holds: bool,
        now: DateTime<Utc>,
        summary: String,
        details: serde_json::Value,
    ) -> Result<(), String> {
        let cooled = rule.last_fired_at.is_none_or(|t| now - t >= Duration::seconds(rule.cooldown_secs));
        let (status, fire) = match (holds, rule.firing) {
            (true, false) if cooled => ("firing", true),
            (false, true) => ("resolved", false),
            _ => return Ok(()),
        };
        let Some(episode) = self.store.set_firing(rule.id, fire, now).await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let notice = Notice {
            status,
            event_key: format!("{status}:{episode}"),
            at: now,
            summary,
            details,
            fingerprint: None,
            severity: "error",
        };
        self.notify(rule, notice).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn error_rate(&self, rule: &Rule, window: i64, now: DateTime<Utc>) -> Result<(f64, u64), String> {
        let g = Granularity::FiveMinutes;
        let from = g.bucket(&(now - Duration::seconds(window)));
        let buckets =
            self.analytics.volume(rule.project_id, g, from, g.bucket(&now)).await.map_err(|e| e.to_string())?;
        let (total, errors) =
            buckets.iter().fold((0u64, 0u64), |(t, e), (_, c)| (t + c.iter().sum::<u64>(), e + c[3] + c[4]));
        Ok((if total == 0 { 0.0 } else { errors as f64 / total as f64 }, total))
    }

    /// Logs matching the rule's query in its window, counted up to `threshold + 1`.
    async fn count(
        &self,
        rule: &Rule,
        filter: &LogFilter,
        window: i64,
        now: DateTime<Utc>,
        threshold: u64,
    ) -> Result<u64, String> {
        let mut query: LogQuery =
            filter.params(now - Duration::seconds(window), now).validate(rule.project_id).map_err(|e| e.to_string())?;
        query.limit = usize::try_from(threshold + 1).unwrap_or(10_001);
        let logs = self.logs.query(&query).await.map_err(|e| e.to_string())?;
        Ok(logs.len() as u64)
    }

    /// The errors of the hours since the rule last looked, with what is known of each.
    async fn recent_errors(
        &self,
        rule: &Rule,
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::store::analytics::TopError>, String> {
        let g = Granularity::Hour;
        let from = g.bucket(&(rule.checked_until - Duration::hours(1)));
        self.analytics.errors(rule.project_id, g, from, g.bucket(&now)).await.map_err(|e| e.to_string())
    }

    async fn new_errors(&self, rule: &Rule, level: i16, now: DateTime<Utc>) -> Result<(), String> {
        let since = rule.created_at.timestamp_micros();
        for error in self.recent_errors(rule, now).await? {
            if error.info.first_seen < since || error.info.level < level {
                continue;
            }
            let what = match &error.info.exception_type {
                Some(t) => format!("{t}: {}", error.info.sample_message),
                None => error.info.sample_message.clone(),
            };
            let notice = Notice {
                status: "firing",
                event_key: format!("new:{}", fingerprint_hex(error.fingerprint)),
                at: now,
                summary: format!("new error: {}", what.chars().take(300).collect::<String>()),
                details: json!({
                    "service": error.info.service,
                    "exception_type": error.info.exception_type,
                    "sample_message": error.info.sample_message,
                    "first_seen": DateTime::from_timestamp_micros(error.info.first_seen).map(|t| t.to_rfc3339()),
                    "count": error.count,
                }),
                fingerprint: Some(error.fingerprint),
                severity: severity(error.info.level),
            };
            self.notify(rule, notice).await.map_err(|e| e.to_string())?;
        }
        self.store.checked(rule.id, now).await.map_err(|e| e.to_string())
    }

    async fn regressions(&self, rule: &Rule, quiet_secs: i64, now: DateTime<Utc>) -> Result<(), String> {
        let quiet = Duration::seconds(quiet_secs);
        let checked = rule.checked_until.timestamp_micros();
        for error in self.recent_errors(rule, now).await? {
            if error.info.last_seen <= checked {
                continue;
            }
            let Some(last_seen) = DateTime::from_timestamp_micros(error.info.last_seen) else { continue };
            let previous =
                match self.store.swap_seen(rule.id, error.fingerprint, last_seen).await.map_err(|e| e.to_string())? {
                    Some(previous) => Some(previous),
                    // Not seen by this rule yet: its last occurrence before the rule last looked, if any.
                    None => self.occurrence(rule, error.fingerprint, None, rule.checked_until).await?,
                };
            let Some(previous) = previous else { continue };
            // The first occurrence after the previous one.
            let Some(first_new) = self.occurrence(rule, error.fingerprint, Some(previous), now).await? else {
                continue;
            };
            if first_new - previous < quiet {
                continue;
            }
            let notice = Notice {
                status: "firing",
                event_key: format!(
                    "regression:{}:{}",
                    fingerprint_hex(error.fingerprint),
                    first_new.timestamp_micros()
                ),
                at: now,
                summary: format!(
                    "regression: {} is back after {} s without it",
                    error.info.sample_message.chars().take(300).collect::<String>(),
                    (first_new - previous).num_seconds()
                ),
                details: json!({
                    "service": error.info.service,
                    "exception_type": error.info.exception_type,
                    "previously_seen": previous.to_rfc3339(),
                    "seen_again": first_new.to_rfc3339(),
                    "quiet_secs": quiet_secs,
                }),
                fingerprint: Some(error.fingerprint),
                severity: severity(error.info.level),
            };
            self.notify(rule, notice).await.map_err(|e| e.to_string())?;
        }
        // Logs show in the cache a moment after their timestamps (commit, then the cache): look back a minute
        // each time, so none slips behind `checked_until`; `swap_seen` makes a second look harmless.
        self.store.checked(rule.id, now - Duration::seconds(LOOK_BACK_SECS)).await.map_err(|e| e.to_string())
    }

    /// With `after`: the first occurrence of `fingerprint` after it (up to `until`); without: the last one
    /// before `until` (within 30 days). Oldest of up to 1,000 newest occurrences: a fingerprint that
    /// occurs more often than that in one evaluation is not quiet.
    async fn occurrence(
        &self,
        rule: &Rule,
        fingerprint: u64,
        after: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, String> {
        let from = after.map_or(until - Duration::days(30), |a| a + Duration::microseconds(1));
        let params = LogParams {
            from: Some(from),
            to: Some(until),
            filter: LogFilter { fingerprint: Some(fingerprint_hex(fingerprint)), ..LogFilter::default() },
            limit: Some(if after.is_some() { 1000 } else { 1 }),
            ..LogParams::default()
        };
        let query = params.validate(rule.project_id).map_err(|e| e.to_string())?;
        let logs = self.logs.query(&query).await.map_err(|e| e.to_string())?;
        Ok(if after.is_some() { logs.last() } else { logs.first() }.map(|l| l.timestamp))
    }
}
