//! The shared queue: Redis stream shards `{prefix}logs:{shard}`.
//!
//! One script checks the project's pending count against `max_queue_depth`, XADDs the batch and counts
//! it, atomically and in one round trip. The 202 follows the XADD: the batch is as durable as Redis is
//! configured to be (AOF with `appendfsync always` for zero loss; see the README).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ledger_stages::queue::{LogQueue, QueueError, ShardBacklog};
use ledger_stages::{LogRecord, ProjectContext};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::redis::RedisCache;

/// What one stream entry carries (field `d`, MessagePack with field names, so versions can add fields).
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub traceparent: Option<String>,
    pub records: Vec<LogRecord>,
}

/// KEYS: stream, project's pending counter, total pending counter. ARGV: logs, max depth, project, payload.
/// A project that already holds `max` pending logs is refused; otherwise the batch goes in whole.
const ENQUEUE: &str = r"
local pending = tonumber(redis.call('GET', KEYS[2]) or '0')
if pending >= tonumber(ARGV[2]) then return false end
local id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[3], 'n', ARGV[1], 'd', ARGV[4])
redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[1])
return id
";

/// KEYS: stream, project's pending counter (or the total again when the project is unknown), total
/// pending counter. ARGV: logs, project, payload. Puts an entry back without the depth check: it was
/// acknowledged once already.
const REQUEUE: &str = r"
local id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[2], 'n', ARGV[1], 'd', ARGV[3])
if KEYS[2] ~= KEYS[3] then redis.call('INCRBY', KEYS[2], ARGV[1]) end
redis.call('INCRBY', KEYS[3], ARGV[1])
return id
";

/// Key names, from one place.
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn stream(&self, shard: u32) -> String {
        format!("{}logs:{shard}", self.prefix)
    }

    pub fn pending(&self, project: Uuid) -> String {
        format!("{}pending:{project}", self.prefix)
    }

    pub fn pending_total(&self) -> String {
        format!("{}pending", self.prefix)
    }

    pub fn lease(&self, shard: u32) -> String {
        format!("{}lease:{shard}", self.prefix)
    }
}

#[derive(Clone)]
pub struct RedisQueue {
    /// Its deadline and fail-fast are the cache's: one view of whether Redis answers.
    redis: RedisCache,
    keys: Keys,
    shards: u32,
    next_shard: Arc<AtomicU32>,
    script: Arc<redis::Script>,
}

impl RedisQueue {
    pub fn new(redis: RedisCache, shards: u32) -> RedisQueue {
        RedisQueue {
            keys: Keys { prefix: redis.prefix().to_owned() },
            redis,
            shards: shards.max(1),
            next_shard: Arc::new(AtomicU32::new(0)),
            script: Arc::new(redis::Script::new(ENQUEUE)),
        }
    }
}

impl RedisQueue {
    /// Puts a dead letter's payload back on its shard (`ledger dead-letter replay`).
    pub async fn requeue(&self, shard: u32, project: Option<Uuid>, logs: u64, payload: &[u8]) -> Result<(), String> {
        let script = redis::Script::new(REQUEUE);
        let mut invocation = script.prepare_invoke();
        let pending = project.map_or_else(|| self.keys.pending_total(), |p| self.keys.pending(p));
        invocation
            .key(self.keys.stream(shard % self.shards))
            .key(pending)
            .key(self.keys.pending_total())
            .arg(logs)
            .arg(project.map(|p| p.to_string()).unwrap_or_default())
            .arg(payload);
        let _: String = self.redis.invoke(&invocation).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

#[async_trait]
impl LogQueue for RedisQueue {
    async fn enqueue(
        &self,
        project: &ProjectContext,
        records: Vec<LogRecord>,
        traceparent: Option<String>,
    ) -> Result<(), QueueError> {
        let n = records.len();
        let payload = rmp_serde::to_vec_named(&Entry { traceparent, records }).map_err(unavailable)?;
        // Round robin: a busy project spreads over every shard, and so over every worker.
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.stream(shard))
            .key(self.keys.pending(project.project_id))
            .key(self.keys.pending_total())
            .arg(n)
            .arg(project.settings.max_queue_depth)
            .arg(project.project_id.to_string())
            .arg(payload);
        let id: Option<String> = self.redis.invoke(&invocation).await.map_err(unavailable)?;
        match id {
            Some(_) => Ok(()),
            None => Err(QueueError::Full { retry_after: Duration::from_secs(1) }),
        }
    }

    async fn shards(&self) -> Result<Vec<ShardBacklog>, QueueError> {
        // Released entries are deleted, so a stream holds only what is not yet written.
        let mut pipe = redis::pipe();
        for shard in 0..self.shards {
            let stream = self.keys.stream(shard);
            pipe.cmd("XLEN").arg(&stream).cmd("XRANGE").arg(&stream).arg("-").arg("+").arg("COUNT").arg(1);
        }
        let replies: Vec<redis::Value> = self.redis.run_pipe(&pipe).await.map_err(unavailable)?;
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let mut replies = replies.into_iter();
        let backlog = (0..self.shards)
            .map(|shard| {
                let entries = match replies.next() {
                    Some(redis::Value::Int(n)) => u64::try_from(n).unwrap_or(0),
                    _ => 0,
                };
                let oldest: Option<redis::streams::StreamRangeReply> =
                    replies.next().and_then(|v| redis::FromRedisValue::from_redis_value(v).ok());
                // An entry id is `<milliseconds>-<sequence>`: when it was added.
                let added_ms = oldest
                    .and_then(|r| r.ids.into_iter().next())
                    .and_then(|e| e.id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()));
                let lag = added_ms.map_or(Duration::ZERO, |ms| Duration::from_millis(now_ms.saturating_sub(ms)));
                ShardBacklog { shard, entries, lag }
            })
            .collect();
        Ok(backlog)
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let depth: Option<i64> =
            self.redis.run(redis::cmd("GET").arg(self.keys.pending_total())).await.map_err(unavailable)?;
        Ok(u64::try_from(depth.unwrap_or(0)).unwrap_or(0))
    }
}
