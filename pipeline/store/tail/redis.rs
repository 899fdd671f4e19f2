//! The shared tail feed, in Redis:
//! - `{prefix}tail:{project}`: a stream, one entry per commit that held the project's logs: `i` their ids
//!   (16 bytes each, in order), `d` the logs (MessagePack); trimmed to about `keep` logs (as many entries
//!   as `keep` logs make in entries the size of the newest), gone an hour after the last one;
//! - `{prefix}tailed`: a sorted set of tailed projects, scored by when the last instance's interest ends.
//!
//! Readers poll (every 150 ms while waiting) rather than block, so they share the cache's connection.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ledger_stages::LogRecord;
use redis::streams::{StreamRangeReply, StreamReadReply};
use uuid::Uuid;

use super::{FeedEntry, TailFeed, WATCH_SECS, by_project};
use crate::store::StoreError;
use crate::store::redis::RedisCache;

const POLL: Duration = Duration::from_millis(150);
const KEEP_SECS: i64 = 3600;

pub struct RedisTail {
    cache: RedisCache,
    keep: usize,
}

impl RedisTail {
    pub fn new(cache: RedisCache, keep: usize) -> RedisTail {
        RedisTail { cache, keep: keep.max(1) }
    }

    fn stream(&self, project: Uuid) -> String {
        self.cache.key("tail", project)
    }

    fn tailed_key(&self) -> String {
        self.cache.key("tailed", "projects")
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn entry(id: String, map: &mut std::collections::HashMap<String, redis::Value>) -> Option<FeedEntry> {
    let redis::Value::BulkString(bytes) = map.remove("d")? else { return None };
    let records: Vec<LogRecord> = rmp_serde::from_slice(&bytes).ok()?;
    Some(FeedEntry { position: id, records: Arc::new(records) })
}

#[async_trait]
impl TailFeed for RedisTail {
    async fn tailed(&self) -> Arc<HashSet<Uuid>> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.tailed_key()).arg(now_ms()).arg("+inf");
        match self.cache.run::<Vec<String>>(&cmd).await {
            Ok(ids) => Arc::new(ids.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect()),
            Err(error) => {
                tracing::warn!(%error, "could not read which projects are tailed; not publishing this batch");
                Arc::default()
            }
        }
    }

    async fn watch(&self, project: Uuid) -> Result<(), StoreError> {
        let until = now_ms() + i64::try_from(WATCH_SECS * 1000).unwrap_or(15_000);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE").arg(self.tailed_key()).arg("-inf").arg(now_ms()).ignore();
        pipe.cmd("ZADD").arg(self.tailed_key()).arg("GT").arg(until).arg(project.to_string());
        let (added,): (i64,) = self.cache.run_pipe(&pipe).await?;
        if added == 1 {
            // Nobody tailed it a moment ago, so commits since then were not published: what the feed still
            // holds has a hole, and a resume from it must be told so rather than be given it.
            self.cache.run::<()>(redis::cmd("DEL").arg(self.stream(project))).await?;
        }
        Ok(())
    }

    async fn publish(&self, records: Vec<LogRecord>, tailed: &HashSet<Uuid>) -> Result<(), StoreError> {
        let groups = by_project(records, tailed);
        if groups.is_empty() {
            return Ok(());
        }
        // One pipeline per project's stream: each in its own hash slot on a cluster.
        let mut pipes = Vec::with_capacity(groups.len());
        for (project, group) in groups {
            let ids: Vec<u8> = group.iter().flat_map(|r| r.id.into_bytes()).collect();
            let data = rmp_serde::to_vec(&group).map_err(|e| StoreError::Internal(e.to_string()))?;
            let key = self.stream(project);
            let entries = self.keep.div_ceil(group.len().max(1)).max(1);
            let mut pipe = redis::pipe();
            pipe.cmd("XADD").arg(&key).arg("MAXLEN").arg("~").arg(entries).arg("*");
            pipe.arg("i").arg(ids).arg("d").arg(data).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(KEEP_SECS).ignore();
            pipes.push(pipe);
        }
        self.cache.run_pipes::<()>(&pipes).await.map(drop)
    }

    async fn end(&self, project: Uuid) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.stream(project)).arg("+").arg("-").arg("COUNT").arg(1);
        let reply: StreamRangeReply = self.cache.run(&cmd).await?;
        Ok(reply.ids.into_iter().next().map(|e| e.id))
    }

    async fn read(
        &self,
        project: Uuid,
        after: Option<&str>,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(count.max(1)).arg("STREAMS").arg(self.stream(project)).arg(after.unwrap_or("0-0"));
            let reply: Option<StreamReadReply> = self.cache.run(&cmd).await?;
            let entries: Vec<FeedEntry> = reply
                .and_then(|r| r.keys.into_iter().next())
                .map(|k| k.ids.into_iter().filter_map(|mut e| entry(e.id, &mut e.map)).collect())
                .unwrap_or_default();
            if !entries.is_empty() || tokio::time::Instant::now() + POLL > deadline {
                return Ok(entries);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn locate(&self, project: Uuid, log: Uuid) -> Result<Option<FeedEntry>, StoreError> {
        let wanted = log.into_bytes();
        let mut before = String::from("+");
        // Newest first, a page at a time, over what the feed keeps.
        for _ in 0..self.keep.div_ceil(200) + 10 {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(self.stream(project)).arg(&before).arg("-").arg("COUNT").arg(200);
            let reply: StreamRangeReply = self.cache.run(&cmd).await?;
            let Some(last) = reply.ids.last().map(|e| e.id.clone()) else { return Ok(None) };
            let page = reply.ids.len();
            for mut e in reply.ids {
                if let Some(redis::Value::BulkString(ids)) = e.map.get("i")
                    && ids.chunks_exact(16).any(|id| id == wanted)
                {
                    return Ok(entry(e.id, &mut e.map));
                }
            }
            if page < 200 {
                return Ok(None);
            }
            before = format!("({last}");
        }
        Ok(None)
    }
}
