//! The periodic work and what it serves: `[analytics]`, `[retention]`, `[alerts]`, `[search]`, `[tail]`.

use std::time::Duration;

use serde::Deserialize;

/// `[analytics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Seconds between rebuilds of the last hour's 5-minute buckets.
    #[serde(rename = "five_minute_secs", deserialize_with = "super::secs")]
    pub five_minute_every: Duration,
    /// Seconds between rebuilds of the last day's hourly buckets and error info.
    #[serde(rename = "hourly_secs", deserialize_with = "super::secs")]
    pub hourly_every: Duration,
    /// Seconds between rebuilds of the last week's daily buckets.
    #[serde(rename = "daily_secs", deserialize_with = "super::secs")]
    pub daily_every: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            five_minute_every: Duration::from_secs(300),
            hourly_every: Duration::from_secs(900),
            daily_every: Duration::from_secs(3600),
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Seconds between retention runs.
    #[serde(rename = "interval_secs", deserialize_with = "super::secs")]
    pub interval: Duration,
    /// Logs deleted per statement at most.
    pub batch_rows: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { interval: Duration::from_secs(3600), batch_rows: 10_000 }
    }
}

/// `[alerts]`: alert rules' evaluation and delivery.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Seconds between evaluations of every enabled rule (by one instance with the jobs role per period).
    #[serde(rename = "evaluate_interval_secs", deserialize_with = "super::secs")]
    pub evaluate_interval: Duration,
    /// Accept channel URLs that resolve to loopback or private addresses (self-hosted receivers, tests).
    pub allow_private_targets: bool,
    /// The console's address as people reach it, for links in notifications. Empty: http://<server.http_addr>.
    pub console_url: String,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluate_interval: Duration::from_secs(5),
            allow_private_targets: false,
            console_url: String::new(),
        }
    }
}

/// `[search]`: the search index behind `q` (pipeline/store/logs/search.rs).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Build the index (a job on one instance with the jobs role). Off: every `q` query scans its range,
    /// and an index built before is used up to where it stopped.
    pub index: bool,
    /// Seconds between indexing runs.
    #[serde(rename = "index_interval_secs", deserialize_with = "super::secs")]
    pub index_interval: Duration,
    /// The share of each interval a run may spend indexing (0 < share ≤ 1): while ingestion outruns it,
    /// the index falls behind (`ledger_search_index_lag_seconds`) and the logs past it are scanned.
    pub index_share: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { index: true, index_interval: Duration::from_secs(10), index_share: 0.25 }
    }
}

/// `[tail]`: live tail (`GET /v1/logs/tail`, gRPC `QueryService.Tail`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TailConfig {
    /// Subscribers per project on one instance at most; past it, 429.
    pub max_subscribers_per_project: usize,
    /// Commits' worth of logs a subscriber may have waiting at most; past it, logs are dropped for it, and it
    /// gets a `dropped` event with their count.
    pub buffer_entries: usize,
    /// Logs kept per tailed project (about: whole commits are kept or dropped) for subscribers that
    /// reconnect with `Last-Event-ID`.
    pub keep_logs: usize,
    /// Bytes of those logs kept per tailed project at most (embedded: they are in the daemon's memory).
    pub keep_bytes: usize,
    /// Bytes of logs one subscriber may have waiting at most; past it, logs are dropped for it (counted,
    /// and it gets a `dropped` event).
    pub max_buffer_bytes: usize,
    /// Subscribers on this instance at most, all projects together; past it, 429.
    pub max_subscribers: usize,
    /// Subscribers on this instance to the projects of one account at most; past it, 429.
    pub max_subscribers_per_account: usize,
    /// Logs a reconnecting subscriber is sent from those kept at most before the live ones.
    pub max_backlog_logs: usize,
    /// Seconds between heartbeats (an SSE comment) on a quiet stream.
    #[serde(rename = "heartbeat_secs", deserialize_with = "super::secs")]
    pub heartbeat: Duration,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            max_subscribers_per_project: 16,
            buffer_entries: 256,
            keep_logs: 20_000,
            keep_bytes: 64 * 1024 * 1024,
            max_buffer_bytes: 16 * 1024 * 1024,
            max_subscribers: 1024,
            max_subscribers_per_account: 64,
            max_backlog_logs: 10_000,
            heartbeat: Duration::from_secs(15),
        }
    }
}

impl AnalyticsConfig {
    /// Why `[analytics]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        super::at_least_one_sec(&[
            ("analytics.five_minute_secs", self.five_minute_every),
            ("analytics.hourly_secs", self.hourly_every),
            ("analytics.daily_secs", self.daily_every),
        ])
    }
}

impl RetentionConfig {
    /// Why `[retention]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        super::at_least_one_sec(&[("retention.interval_secs", self.interval)])
    }
}

impl AlertsConfig {
    /// Why `[alerts]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        super::at_least_one_sec(&[("alerts.evaluate_interval_secs", self.evaluate_interval)])
    }
}

impl SearchConfig {
    /// Why `[search]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let share = self.index_share;
        if self.index_interval.is_zero() || !(share > 0.0 && share <= 1.0) {
            return Err(format!(
                "search.index_interval_secs must be at least 1 and search.index_share within (0, 1], not {share}"
            ));
        }
        Ok(())
    }
}

impl TailConfig {
    /// Why `[tail]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        super::at_least_one_sec(&[("tail.heartbeat_secs", self.heartbeat)])
    }
}
