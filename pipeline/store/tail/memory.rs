//! The embedded tail feed: per tailed project, its last entries in memory, numbered in commit order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ledger_stages::LogRecord;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{FeedEntry, TailFeed, WATCH_SECS, by_project};
use crate::store::StoreError;

struct Feed {
    /// Each entry with its weight ([`super::record_weight`] of its logs).
    entries: VecDeque<(u64, Arc<Vec<LogRecord>>, usize)>,
    /// Logs in `entries`.
    logs: usize,
    /// Their weight.
    bytes: usize,
    next: u64,
    watched_until: Instant,
}

pub struct MemoryTail {
    // A std mutex: map operations only, never held across an await.
    feeds: Mutex<HashMap<Uuid, Feed>>,
    tailed: Mutex<Arc<HashSet<Uuid>>>,
    keep: usize,
    keep_bytes: usize,
    notify: Notify,
}

impl MemoryTail {
    /// Keeps about `keep` logs and `keep_bytes` bytes of them per project (whole entries; the newest entry
    /// always).
    pub fn new(keep: usize, keep_bytes: usize) -> MemoryTail {
        MemoryTail {
            feeds: Mutex::default(),
            tailed: Mutex::default(),
            keep: keep.max(1),
            keep_bytes: keep_bytes.max(1),
            notify: Notify::new(),
        }
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Feed>> {
        self.feeds.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Republishes the tailed set: the projects with a feed.
    fn publish_tailed(&self, feeds: &HashMap<Uuid, Feed>) {
        let set: HashSet<Uuid> = feeds.keys().copied().collect();
        *self.tailed.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }

    fn position(n: u64) -> String {
        format!("{n:020}")
    }

    fn after(feeds: &HashMap<Uuid, Feed>, project: Uuid, after: Option<u64>, count: usize) -> Vec<FeedEntry> {
        let Some(feed) = feeds.get(&project) else { return Vec::new() };
        feed.entries
            .iter()
            .filter(|(n, _, _)| after.is_none_or(|a| *n > a))
            .take(count)
            .map(|(n, records, _)| FeedEntry { position: Self::position(*n), records: records.clone() })
            .collect()
    }
}

fn parse(position: Option<&str>) -> Option<u64> {
    position.and_then(|p| p.parse().ok())
}

#[async_trait]
impl TailFeed for MemoryTail {
    async fn tailed(&self) -> Arc<HashSet<Uuid>> {
        self.tailed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn watch(&self, project: Uuid) -> Result<(), StoreError> {
        let mut feeds = self.feeds();
        // A feed nobody watched for a while has a hole (its commits were not published): forgotten first.
        let now = Instant::now();
        feeds.retain(|_, f| f.watched_until > now);
        let until = now + Duration::from_secs(WATCH_SECS);
        feeds.entry(project).and_modify(|f| f.watched_until = until).or_insert(Feed {
            entries: VecDeque::new(),
            logs: 0,
            bytes: 0,
            next: 1,
            watched_until: until,
        });
        self.publish_tailed(&feeds);
        Ok(())
    }

    async fn publish(&self, records: Vec<LogRecord>, tailed: &HashSet<Uuid>) -> Result<(), StoreError> {
        if tailed.is_empty() {
            return Ok(());
        }
        {
            let mut feeds = self.feeds();
            for (project, group) in by_project(records, tailed) {
                let Some(feed) = feeds.get_mut(&project) else { continue };
                let weight = group.iter().map(super::record_weight).sum();
                feed.logs += group.len();
                feed.bytes += weight;
                feed.entries.push_back((feed.next, Arc::new(group), weight));
                feed.next += 1;
                while (feed.logs > self.keep || feed.bytes > self.keep_bytes) && feed.entries.len() > 1 {
                    if let Some((_, dropped, weight)) = feed.entries.pop_front() {
                        feed.logs -= dropped.len();
                        feed.bytes -= weight;
                    }
                }
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn end(&self, project: Uuid) -> Result<Option<String>, StoreError> {
        let feeds = self.feeds();
        Ok(feeds.get(&project).and_then(|f| f.entries.back()).map(|(n, _, _)| Self::position(*n)))
    }

    async fn read(
        &self,
        project: Uuid,
        after: Option<&str>,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let after = parse(after);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a publish between the look and the wait is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = Self::after(&self.feeds(), project, after, count);
            if !found.is_empty() {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn locate(&self, project: Uuid, log: Uuid) -> Result<Option<FeedEntry>, StoreError> {
        let feeds = self.feeds();
        let Some(feed) = feeds.get(&project) else { return Ok(None) };
        Ok(feed
            .entries
            .iter()
            .find(|(_, records, _)| records.iter().any(|r| r.id == log))
            .map(|(n, records, _)| FeedEntry { position: Self::position(*n), records: records.clone() }))
    }
}
