//! The tail feed: committed logs of the projects someone is tailing, in commit order, kept for a while so
//! a subscriber that reconnects resumes where it left off.
//!
//! Writers publish after each commit (never before: only durable logs are tailed). The feed holds, per
//! tailed project, a bounded run of entries (one per commit, the project's logs of it), each at a position
//! that orders them. Readers ask for the entries after a position, waiting a while for new ones.
//!
//! Shared: a Redis stream per project (`{prefix}tail:{project}`), so a log committed by any worker on any
//! instance reaches subscribers on every instance; which projects are tailed is a sorted set of expiry
//! times the subscribed instances keep fresh. Embedded: the same in memory.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ledger_stages::LogRecord;
use uuid::Uuid;

use crate::store::StoreError;

pub mod memory;
pub mod redis;

/// One commit's logs of one project, at its position in the project's feed.
#[derive(Clone, Debug)]
pub struct FeedEntry {
    /// Opaque, ordered within the project's feed.
    pub position: String,
    pub records: Arc<Vec<LogRecord>>,
}

/// How long an instance's interest in a project lasts unless renewed.
pub const WATCH_SECS: u64 = 15;

#[async_trait]
pub trait TailFeed: Send + Sync + 'static {
    /// The projects someone tails now. A writer asks after it has read a batch and before it commits it,
    /// so a log accepted after a subscriber's [`watch`](TailFeed::watch) is always published.
    async fn tailed(&self) -> Arc<HashSet<Uuid>>;
    /// Says this instance tails `project`, for [`WATCH_SECS`]; renewed while it does.
    async fn watch(&self, project: Uuid) -> Result<(), StoreError>;
    /// After a commit: the committed logs of tailed projects (those of others are skipped).
    async fn publish(&self, records: Vec<LogRecord>, tailed: &HashSet<Uuid>) -> Result<(), StoreError>;
    /// The position of the feed's newest entry (where a new reader starts), `None` for an empty feed.
    async fn end(&self, project: Uuid) -> Result<Option<String>, StoreError>;
    /// Entries after `after` (exclusive; `None`: from the oldest kept), oldest first, at most `count`,
    /// waiting up to `wait` when there are none yet.
    async fn read(
        &self,
        project: Uuid,
        after: Option<&str>,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<FeedEntry>, StoreError>;
    /// The kept entry holding `log`, if the feed still has it.
    async fn locate(&self, project: Uuid, log: Uuid) -> Result<Option<FeedEntry>, StoreError>;
}

/// About how many bytes a log holds in memory: what the tail's byte bounds count.
pub(crate) fn record_weight(record: &LogRecord) -> usize {
    fn json(value: &serde_json::Value) -> usize {
        use serde_json::Value;
        match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => 16,
            Value::String(s) => 24 + s.len(),
            Value::Array(items) => 24 + items.iter().map(json).sum::<usize>(),
            Value::Object(map) => 48 + map.iter().map(|(k, v)| 24 + k.len() + json(v)).sum::<usize>(),
        }
    }
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    std::mem::size_of::<LogRecord>()
        + record.message.len()
        + text(&record.service)
        + text(&record.environment)
        + text(&record.host)
        + text(&record.trace_id)
        + text(&record.span_id)
        + json(&record.attributes)
        + record.exception.as_ref().map_or(0, |e| serde_json::to_vec(e).map_or(0, |v| v.len()))
}

/// Groups committed logs by project, keeping only tailed projects' logs.
pub(crate) fn by_project(records: Vec<LogRecord>, tailed: &HashSet<Uuid>) -> Vec<(Uuid, Vec<LogRecord>)> {
    let mut groups: Vec<(Uuid, Vec<LogRecord>)> = Vec::new();
    for record in records.into_iter().filter(|r| tailed.contains(&r.project_id)) {
        match groups.iter_mut().find(|(p, _)| *p == record.project_id) {
            Some((_, group)) => group.push(record),
            None => groups.push((record.project_id, vec![record])),
        }
    }
    groups
}
