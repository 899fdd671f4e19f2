//! Analytics: error rate, volume by level, top errors, answered from a cache (Redis when shared, memory
//! when embedded) that the writers update as batches commit, so a log shows within seconds of its 202.
//! A scheduled job rebuilds recent buckets from the log store, so a flushed or lost cache heals by itself.
//!
//! The cache holds, per project: log counts per level in 5-minute, 1-hour and 1-day buckets; counts per
//! fingerprint of ERROR and CRITICAL logs in 1-hour and 1-day buckets; and per fingerprint its first and
//! last time seen, highest level, service, a sample message and exception type.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_stages::{Level, LogRecord};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::StoreError;

pub mod memory;
pub mod redis;

/// Bucket sizes, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    FiveMinutes,
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::FiveMinutes, Granularity::Hour, Granularity::Day];

    pub(crate) fn seconds(self) -> i64 {
        match self {
            Granularity::FiveMinutes => 300,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
        }
    }

    /// API.md's names: `5m`, `1h`, `1d`.
    pub(crate) fn parse(s: &str) -> Option<Granularity> {
        match s {
            "5m" => Some(Granularity::FiveMinutes),
            "1h" => Some(Granularity::Hour),
            "1d" => Some(Granularity::Day),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Granularity::FiveMinutes => "5m",
            Granularity::Hour => "1h",
            Granularity::Day => "1d",
        }
    }

    /// The start (Unix seconds) of the bucket holding `t`.
    pub fn bucket(self, t: &DateTime<Utc>) -> i64 {
        t.timestamp().div_euclid(self.seconds()) * self.seconds()
    }

    /// How long the cache keeps buckets of this size.
    pub fn keep_secs(self) -> i64 {
        match self {
            Granularity::FiveMinutes => 8 * 86_400,
            Granularity::Hour => 35 * 86_400,
            Granularity::Day => 400 * 86_400,
        }
    }
}

/// Counts per level, indexed DEBUG..CRITICAL.
pub type LevelCounts = [u64; 5];

pub(crate) fn level_index(level: Level) -> usize {
    Level::ALL.iter().position(|l| *l == level).unwrap_or(1)
}

/// What is known of one fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub first_seen: i64,
    pub last_seen: i64,
    pub level: i16,
    pub service: Option<String>,
    pub sample_message: String,
    pub exception_type: Option<String>,
}

impl ErrorInfo {
    /// Widens `self` by `other`: earliest first, latest last, highest level; the rest stays the first's.
    pub(crate) fn merge(&mut self, other: &ErrorInfo) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.level = self.level.max(other.level);
    }
}

/// Counts to add to (live) or to set in (rebuild) the cache.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub volume: HashMap<(Uuid, Granularity, i64), LevelCounts>,
    /// Only hourly and daily buckets.
    pub errors: HashMap<(Uuid, Granularity, i64, u64), u64>,
    pub info: HashMap<(Uuid, u64), ErrorInfo>,
}

impl Stats {
    /// The counts of a committed batch.
    pub(crate) fn of<'a>(records: impl IntoIterator<Item = &'a LogRecord>) -> Stats {
        let mut stats = Stats::default();
        for r in records {
            stats.add(r);
        }
        stats
    }

    /// Counts one more log.
    pub(crate) fn add(&mut self, r: &LogRecord) {
        for g in Granularity::ALL {
            self.volume.entry((r.project_id, g, g.bucket(&r.timestamp))).or_default()[level_index(r.level)] += 1;
        }
        if r.level < Level::Error {
            return;
        }
        for g in [Granularity::Hour, Granularity::Day] {
            *self.errors.entry((r.project_id, g, g.bucket(&r.timestamp), r.fingerprint)).or_default() += 1;
        }
        let micros = r.timestamp.timestamp_micros();
        let info = ErrorInfo {
            first_seen: micros,
            last_seen: micros,
            level: r.level.number(),
            service: r.service.clone(),
            sample_message: r.message.chars().take(1024).collect(),
            exception_type: r.exception.as_ref().map(|e| e.kind.clone()),
        };
        self.info.entry((r.project_id, r.fingerprint)).and_modify(|i| i.merge(&info)).or_insert(info);
    }
}

/// One row of top errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopError {
    pub fingerprint: u64,
    pub count: u64,
    /// The non-empty buckets of the range asked for (start, count), ascending; their counts sum to `count`.
    pub series: Vec<(i64, u64)>,
    pub info: ErrorInfo,
}

#[async_trait]
pub trait AnalyticsCache: Send + Sync + 'static {
    /// Adds a committed batch's counts.
    async fn add(&self, stats: &Stats) -> Result<(), StoreError>;
    /// Replaces buckets with counts rebuilt from the log store (buckets absent from `stats` are left alone).
    async fn replace(&self, stats: &Stats) -> Result<(), StoreError>;
    /// Level counts of the buckets from `from` to `to` (bucket starts, inclusive), ascending; empty buckets
    /// may be left out.
    async fn volume(
        &self,
        project: Uuid,
        g: Granularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, LevelCounts)>, StoreError>;
    /// Error counts per fingerprint over the buckets from `from` to `to`, bucket by bucket, with what is
    /// known of each.
    async fn errors(&self, project: Uuid, g: Granularity, from: i64, to: i64) -> Result<Vec<TopError>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_start_on_their_boundary() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T08:07:59Z").expect("time").to_utc();
        assert_eq!(Granularity::FiveMinutes.bucket(&t) % 300, 0);
        assert_eq!(t.timestamp() - Granularity::FiveMinutes.bucket(&t), 179);
        assert_eq!(t.timestamp() - Granularity::Hour.bucket(&t), 479);
        assert_eq!(Granularity::parse("1h"), Some(Granularity::Hour));
        assert_eq!(Granularity::parse("2h"), None);
    }
}
