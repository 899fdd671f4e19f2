//! The shared queue: Redis stream shards `{prefix}logs:{N}`.
//!
//! One script checks the project's pending count on the shard against its share of `max_queue_depth`,
//! XADDs the batch and counts it, atomically and in one round trip. The 202 follows the XADD: the batch is
//! as durable as Redis is configured to be (AOF with `appendfsync always` for zero loss; see the README),
//! and with `redis.min_replicas_acked` = n it also waits (`WAIT`) until n replicas have it, so a failover
//! to one of them loses no acknowledged log.
//!
//! Every key the shard's scripts touch carries the shard's hash tag `{N}`: the stream, the shard's pending
//! count and the project's pending count on that shard are in one hash slot, so the same scripts run on a
//! Redis Cluster. A project's pending logs are the sum over the shards; it is refused when every shard
//! holds its share (`max_queue_depth / shards`, rounded up), each shard taking at most one batch past it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_stages::log::Exception;
use ledger_stages::queue::{BatchMeta, LogQueue, QueueError, ShardBacklog};
use ledger_stages::{Level, LogRecord, ProjectContext};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::redis::RedisCache;

/// What one stream entry carries (field `d`): MessagePack `[traceparent, [record, ...]]`, each record an
/// array of its fields in order, its times as microseconds since the epoch (the log stores' precision). No
/// field names and no time strings to format and parse: 229 bytes per log of the bench payload, against 403
/// with names and RFC 3339 times (`benches/per_log.rs`). Entries of earlier versions (field names, or RFC
/// 3339 times) decode too.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub traceparent: Option<String>,
    pub records: Vec<LogRecord>,
}

/// A record's fields in [`Entry`]'s order: id, project, time, received (µs), level, message, service,
/// environment, host, trace id, span id, attributes, exception, fingerprint.
type Fields<Id, Lv, Text, Opt, Attrs, Exc> = (Id, Id, i64, i64, Lv, Text, Opt, Opt, Opt, Opt, Opt, Attrs, Exc, u64);

/// As written.
type WireRef<'a> =
    Fields<&'a Uuid, &'a Level, &'a str, &'a Option<String>, &'a serde_json::Value, &'a Option<Exception>>;

/// As read.
type Wire = Fields<Uuid, Level, String, Option<String>, serde_json::Value, Option<Exception>>;

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(micros: i64) -> Result<DateTime<Utc>, rmp_serde::decode::Error> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| rmp_serde::decode::Error::Syntax(format!("a time out of range: {micros} µs")))
}

impl Entry {
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        let records: Vec<WireRef<'_>> = self
            .records
            .iter()
            .map(|r| {
                (
                    &r.id,
                    &r.project_id,
                    micros(&r.timestamp),
                    micros(&r.received_at),
                    &r.level,
                    r.message.as_str(),
                    &r.service,
                    &r.environment,
                    &r.host,
                    &r.trace_id,
                    &r.span_id,
                    &r.attributes,
                    &r.exception,
                    r.fingerprint,
                )
            })
            .collect();
        rmp_serde::to_vec(&(&self.traceparent, records))
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, rmp_serde::decode::Error> {
        let (traceparent, wire): (Option<String>, Vec<Wire>) = match rmp_serde::from_slice(bytes) {
            Ok(decoded) => decoded,
            // An earlier version's entry: records as structs, times as RFC 3339.
            Err(error) => return rmp_serde::from_slice::<Entry>(bytes).map_err(|_| error),
        };
        let mut records = Vec::with_capacity(wire.len());
        // In [`Fields`]' order.
        for w in wire {
            records.push(LogRecord {
                id: w.0,
                project_id: w.1,
                timestamp: time(w.2)?,
                received_at: time(w.3)?,
                level: w.4,
                message: w.5,
                service: w.6,
                environment: w.7,
                host: w.8,
                trace_id: w.9,
                span_id: w.10,
                attributes: w.11,
                exception: w.12,
                fingerprint: w.13,
                fingerprint_override: None,
            });
        }
        Ok(Entry { traceparent, records })
    }
}

/// KEYS: stream, the project's pending counter on the shard, the shard's pending counter. ARGV: logs, the
/// project's share of its max depth on this shard, project, payload. A project that already holds its share
/// on the shard is refused here; otherwise the batch goes in whole.
const ENQUEUE: &str = r"
local pending = tonumber(redis.call('GET', KEYS[2]) or '0')
if pending >= tonumber(ARGV[2]) then return false end
local id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[3], 'n', ARGV[1], 'd', ARGV[4])
redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[1])
return id
";

/// KEYS: stream, the project's pending counter on the shard (or the shard's again when the project is
/// unknown), the shard's pending counter. ARGV: logs, project, payload. Puts an entry back without the
/// depth check: it was acknowledged once already.
const REQUEUE: &str = r"
local id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[2], 'n', ARGV[1], 'd', ARGV[3])
if KEYS[2] ~= KEYS[3] then redis.call('INCRBY', KEYS[2], ARGV[1]) end
redis.call('INCRBY', KEYS[3], ARGV[1])
return id
";

/// Key names, from one place. Each carries its shard's hash tag `{N}`.
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn stream(&self, shard: u32) -> String {
        format!("{}logs:{{{shard}}}", self.prefix)
    }

    /// The project's logs on the shard that are not written yet.
    pub fn pending(&self, shard: u32, project: Uuid) -> String {
        format!("{}{project}", self.pending_prefix(shard))
    }

    /// What [`Keys::pending`] starts with: the release script appends each entry's project to it.
    pub(crate) fn pending_prefix(&self, shard: u32) -> String {
        format!("{}pending:{{{shard}}}:", self.prefix)
    }

    /// All the shard's logs that are not written yet.
    pub(crate) fn pending_shard(&self, shard: u32) -> String {
        format!("{}pending:{{{shard}}}", self.prefix)
    }

    pub fn lease(&self, shard: u32) -> String {
        format!("{}lease:{{{shard}}}", self.prefix)
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
    /// Replicas that must hold a batch before its 202 (`redis.min_replicas_acked`).
    min_replicas: u32,
}

impl RedisQueue {
    pub fn new(redis: RedisCache, shards: u32) -> RedisQueue {
        RedisQueue {
            keys: Keys { prefix: redis.prefix().to_owned() },
            redis,
            shards: shards.max(1),
            next_shard: Arc::new(AtomicU32::new(0)),
            script: Arc::new(redis::Script::new(ENQUEUE)),
            min_replicas: 0,
        }
    }

    /// Waits for `replicas` replicas to hold each batch before acknowledging it.
    pub(crate) fn replicated(mut self, replicas: u32) -> RedisQueue {
        self.min_replicas = replicas;
        self
    }

    /// A project's share of its max depth on one shard.
    fn share(&self, max_depth: u64) -> u64 {
        max_depth.div_ceil(u64::from(self.shards)).max(1)
    }
}

impl RedisQueue {
    /// Puts a dead letter's payload back on its shard (`ledger dead-letter replay`).
    pub(crate) async fn requeue(
        &self,
        shard: u32,
        project: Option<Uuid>,
        logs: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        let script = redis::Script::new(REQUEUE);
        let mut invocation = script.prepare_invoke();
        let shard = shard % self.shards;
        let pending = project.map_or_else(|| self.keys.pending_shard(shard), |p| self.keys.pending(shard, p));
        invocation
            .key(self.keys.stream(shard))
            .key(pending)
            .key(self.keys.pending_shard(shard))
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
        meta: BatchMeta,
    ) -> Result<(), QueueError> {
        // The idempotency key's answer is kept in Redis by the idempotency store, for every instance.
        let n = records.len();
        let payload = Entry { traceparent: meta.traceparent, records }.encode().map_err(unavailable)?;
        let share = self.share(project.settings.max_queue_depth);
        // Round robin: a busy project spreads over every shard, and so over every worker. A shard that holds
        // the project's share refuses; the next one is tried, and the batch is refused when all have.
        let first = self.next_shard.fetch_add(1, Ordering::Relaxed);
        for attempt in 0..self.shards {
            let shard = first.wrapping_add(attempt) % self.shards;
            let stream = self.keys.stream(shard);
            let mut invocation = self.script.prepare_invoke();
            invocation
                .key(&stream)
                .key(self.keys.pending(shard, project.project_id))
                .key(self.keys.pending_shard(shard))
                .arg(n)
                .arg(share)
                .arg(project.project_id.to_string())
                .arg(&payload);
            let id: Option<String> = self.redis.invoke(&invocation).await.map_err(unavailable)?;
            if id.is_some() {
                if self.min_replicas > 0 {
                    self.redis
                        .wait_replicas(&stream, self.min_replicas)
                        .await
                        .map_err(|e| QueueError::Unconfirmed(e.to_string()))?;
                }
                return Ok(());
            }
        }
        Err(QueueError::Full { retry_after: Duration::from_secs(1) })
    }

    async fn shards(&self) -> Result<Vec<ShardBacklog>, QueueError> {
        // Released entries are deleted, so a stream holds only what is not yet written.
        let pipes: Vec<redis::Pipeline> = (0..self.shards)
            .map(|shard| {
                let stream = self.keys.stream(shard);
                let mut pipe = redis::pipe();
                pipe.cmd("XLEN").arg(&stream).cmd("XRANGE").arg(&stream).arg("-").arg("+").arg("COUNT").arg(1);
                pipe
            })
            .collect();
        let replies: Vec<(u64, redis::streams::StreamRangeReply)> =
            self.redis.run_pipes(&pipes).await.map_err(unavailable)?;
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let backlog = (0..self.shards)
            .zip(replies)
            .map(|(shard, (entries, oldest))| {
                // An entry id is `<milliseconds>-<sequence>`: when it was added.
                let added_ms = oldest
                    .ids
                    .into_iter()
                    .next()
                    .and_then(|e| e.id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()));
                let lag = added_ms.map_or(Duration::ZERO, |ms| Duration::from_millis(now_ms.saturating_sub(ms)));
                ShardBacklog { shard, entries, lag }
            })
            .collect();
        Ok(backlog)
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let pipes: Vec<redis::Pipeline> = (0..self.shards)
            .map(|shard| {
                let mut pipe = redis::pipe();
                pipe.cmd("GET").arg(self.keys.pending_shard(shard));
                pipe
            })
            .collect();
        let depths: Vec<(Option<i64>,)> = self.redis.run_pipes(&pipes).await.map_err(unavailable)?;
        Ok(depths.into_iter().map(|(d,)| u64::try_from(d.unwrap_or(0)).unwrap_or(0)).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn a_shards_keys_share_one_hash_slot_and_shards_spread() {
        for prefix in ["ledger:", "t1:"] {
            let keys = Keys { prefix: prefix.into() };
            let project = Uuid::now_v7();
            for shard in 0..8 {
                let slot = Slot::for_key(keys.stream(shard));
                assert_eq!(Slot::for_key(keys.pending(shard, project)), slot);
                assert_eq!(Slot::for_key(keys.pending_shard(shard)), slot);
                assert_eq!(Slot::for_key(format!("{}{project}", keys.pending_prefix(shard))), slot);
            }
            let slots: std::collections::HashSet<Slot> = (0..4).map(|s| Slot::for_key(keys.stream(s))).collect();
            assert_eq!(slots.len(), 4, "each shard in its own slot, so shards spread over a cluster's primaries");
        }
    }

    #[test]
    fn entries_are_compact_and_those_of_earlier_versions_still_decode() {
        // Times travel to the microsecond, as the log stores keep them.
        let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now");
        let record = LogRecord {
            service: Some("api".into()),
            environment: Some("production".into()),
            host: Some("web-1".into()),
            attributes: serde_json::json!({"method": "GET", "status": 200}),
            fingerprint: 42,
            ..LogRecord::new(Uuid::now_v7(), now, ledger_stages::Level::Info, "GET /api/v1/orders/10001 200 in 12ms")
        };
        let entry = Entry { traceparent: None, records: vec![record.clone(); 3] };
        let compact = entry.encode().expect("encodes");
        let named = rmp_serde::to_vec_named(&entry).expect("encodes");
        let positional = rmp_serde::to_vec(&entry).expect("encodes");
        assert!(compact.len() * 3 < named.len() * 2, "{} bytes vs {} with field names", compact.len(), named.len());
        assert!(
            compact.len() < positional.len(),
            "{} bytes vs {} with RFC 3339 times",
            compact.len(),
            positional.len()
        );
        for bytes in [&compact, &named, &positional] {
            let decoded = Entry::decode(bytes).expect("decodes");
            assert_eq!(decoded.records, vec![record.clone(); 3]);
        }
    }
}
