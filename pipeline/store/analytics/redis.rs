//! The shared backend's metrics cache, in Redis hashes:
//! - `{prefix}vol:{{project}}:{granularity}:{bucket}`: level index → count;
//! - `{prefix}err:{{project}}:{granularity}:{bucket}`: fingerprint → count of ERROR and CRITICAL logs;
//! - `{prefix}errfirst|errlast|errlevel|errinfo:{{project}}`: fingerprint → first seen, last seen (µs),
//!   highest level, and JSON of service, sample message and exception type.
//!
//! A project's keys share its hash tag, so on a Redis Cluster they are in one slot. Live additions are one
//! pipeline per project in a batch, sent together; reads one pipeline per query.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AnalyticsCache, ErrorInfo, Granularity, LevelCounts, Stats, TopError};
use crate::store::StoreError;
use crate::store::redis::RedisCache;

/// KEYS: first, last, level, info hashes. ARGV: fingerprint, first µs, last µs, level, info JSON.
/// Keeps the earliest first, the latest last, the highest level, and the first info seen. Values are
/// written back as given (Lua numbers would round 16-digit microseconds).
const MERGE: &str = r"
local f = redis.call('HGET', KEYS[1], ARGV[1])
if not f or tonumber(ARGV[2]) < tonumber(f) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
local l = redis.call('HGET', KEYS[2], ARGV[1])
if not l or tonumber(ARGV[3]) > tonumber(l) then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
local v = redis.call('HGET', KEYS[3], ARGV[1])
if not v or tonumber(ARGV[4]) > tonumber(v) then redis.call('HSET', KEYS[3], ARGV[1], ARGV[4]) end
redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[5])
return 1
";

/// Kept as long as the daily buckets.
const INFO_KEEP_SECS: i64 = 400 * 86_400;

#[derive(Serialize, Deserialize)]
struct Details {
    service: Option<String>,
    sample_message: String,
    exception_type: Option<String>,
}

pub struct RedisAnalytics {
    cache: RedisCache,
}

impl RedisAnalytics {
    pub fn new(cache: RedisCache) -> RedisAnalytics {
        RedisAnalytics { cache }
    }

    fn volume_key(&self, project: Uuid, g: Granularity, bucket: i64) -> String {
        self.cache.key("vol", format!("{{{project}}}:{}:{bucket}", g.name()))
    }

    fn errors_key(&self, project: Uuid, g: Granularity, bucket: i64) -> String {
        self.cache.key("err", format!("{{{project}}}:{}:{bucket}", g.name()))
    }

    fn info_keys(&self, project: Uuid) -> [String; 4] {
        ["errfirst", "errlast", "errlevel", "errinfo"].map(|kind| self.cache.key(kind, format!("{{{project}}}")))
    }

    fn details(info: &ErrorInfo) -> String {
        let details = Details {
            service: info.service.clone(),
            sample_message: info.sample_message.clone(),
            exception_type: info.exception_type.clone(),
        };
        serde_json::to_string(&details).unwrap_or_default()
    }

    /// Adds to each project's pipeline the merge of its fingerprints' info, each key kept as long as the
    /// daily buckets.
    fn push_merges(&self, pipes: &mut Pipes, stats: &Stats) {
        for ((project, fingerprint), info) in &stats.info {
            let keys = self.info_keys(*project);
            let pipe = pipes.of(*project);
            pipe.cmd("EVAL").arg(MERGE).arg(4).arg(&keys[..]);
            pipe.arg(hex(*fingerprint))
                .arg(info.first_seen)
                .arg(info.last_seen)
                .arg(info.level)
                .arg(Self::details(info))
                .ignore();
            for key in &keys {
                pipe.cmd("EXPIRE").arg(key).arg(INFO_KEEP_SECS).ignore();
            }
        }
    }

    fn buckets(g: Granularity, from: i64, to: i64) -> impl Iterator<Item = i64> {
        (from..=to).step_by(usize::try_from(g.seconds()).unwrap_or(300))
    }
}

/// One pipeline per project: a project's keys are in one hash slot, several projects' are not.
#[derive(Default)]
struct Pipes {
    atomic: bool,
    by_project: HashMap<Uuid, redis::Pipeline>,
}

impl Pipes {
    fn atomic() -> Pipes {
        Pipes { atomic: true, by_project: HashMap::new() }
    }

    fn of(&mut self, project: Uuid) -> &mut redis::Pipeline {
        let atomic = self.atomic;
        self.by_project.entry(project).or_insert_with(|| {
            let mut pipe = redis::pipe();
            if atomic {
                pipe.atomic();
            }
            pipe
        })
    }

    fn into_vec(self) -> Vec<redis::Pipeline> {
        self.by_project.into_values().collect()
    }
}

use ledger_stages::log::fingerprint_hex as hex;

#[async_trait]
impl AnalyticsCache for RedisAnalytics {
    async fn add(&self, stats: &Stats) -> Result<(), StoreError> {
        let mut pipes = Pipes::default();
        for ((project, g, bucket), counts) in &stats.volume {
            let key = self.volume_key(*project, *g, *bucket);
            let pipe = pipes.of(*project);
            for (level, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                pipe.cmd("HINCRBY").arg(&key).arg(level).arg(*count).ignore();
            }
            pipe.cmd("EXPIRE").arg(&key).arg(g.keep_secs()).ignore();
        }
        for ((project, g, bucket, fingerprint), count) in &stats.errors {
            let key = self.errors_key(*project, *g, *bucket);
            let pipe = pipes.of(*project);
            pipe.cmd("HINCRBY").arg(&key).arg(hex(*fingerprint)).arg(*count).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(g.keep_secs()).ignore();
        }
        self.push_merges(&mut pipes, stats);
        self.cache.run_pipes::<()>(&pipes.into_vec()).await.map(drop)
    }

    async fn replace(&self, stats: &Stats) -> Result<(), StoreError> {
        // Each project's buckets are replaced at once (one transaction in its slot).
        let mut pipes = Pipes::atomic();
        for ((project, g, bucket), counts) in &stats.volume {
            let key = self.volume_key(*project, *g, *bucket);
            let pipe = pipes.of(*project);
            pipe.cmd("DEL").arg(&key).ignore();
            for (level, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                pipe.cmd("HSET").arg(&key).arg(level).arg(*count).ignore();
            }
            pipe.cmd("EXPIRE").arg(&key).arg(g.keep_secs()).ignore();
        }
        let mut cleared = std::collections::HashSet::new();
        for ((project, g, bucket, fingerprint), count) in &stats.errors {
            let key = self.errors_key(*project, *g, *bucket);
            let pipe = pipes.of(*project);
            if cleared.insert(key.clone()) {
                pipe.cmd("DEL").arg(&key).ignore();
            }
            pipe.cmd("HSET").arg(&key).arg(hex(*fingerprint)).arg(*count).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(g.keep_secs()).ignore();
        }
        // A rebuild sees only its window: widen what is known rather than replace it.
        self.push_merges(&mut pipes, stats);
        self.cache.run_pipes::<()>(&pipes.into_vec()).await.map(drop)
    }

    async fn volume(
        &self,
        project: Uuid,
        g: Granularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, LevelCounts)>, StoreError> {
        let buckets: Vec<i64> = Self::buckets(g, from, to).collect();
        let mut pipe = redis::pipe();
        for bucket in &buckets {
            pipe.cmd("HGETALL").arg(self.volume_key(project, g, *bucket));
        }
        let replies: Vec<HashMap<usize, u64>> = self.cache.run_pipe(&pipe).await?;
        Ok(buckets
            .into_iter()
            .zip(replies)
            .filter(|(_, counts)| !counts.is_empty())
            .map(|(bucket, fields)| {
                let mut counts = LevelCounts::default();
                for (level, count) in fields {
                    if let Some(slot) = counts.get_mut(level) {
                        *slot = count;
                    }
                }
                (bucket, counts)
            })
            .collect())
    }

    async fn errors(&self, project: Uuid, g: Granularity, from: i64, to: i64) -> Result<Vec<TopError>, StoreError> {
        let buckets: Vec<i64> = Self::buckets(g, from, to).collect();
        let mut pipe = redis::pipe();
        for bucket in &buckets {
            pipe.cmd("HGETALL").arg(self.errors_key(project, g, *bucket));
        }
        let replies: Vec<HashMap<String, u64>> = self.cache.run_pipe(&pipe).await?;
        // Buckets in ascending order, so each series comes out ascending.
        let mut series: HashMap<String, Vec<(i64, u64)>> = HashMap::new();
        for (bucket, reply) in buckets.into_iter().zip(replies) {
            for (fingerprint, count) in reply {
                series.entry(fingerprint).or_default().push((bucket, count));
            }
        }
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<&String> = series.keys().collect();
        let mut pipe = redis::pipe();
        for key in self.info_keys(project) {
            pipe.cmd("HMGET").arg(key).arg(&fields[..]);
        }
        type Column = Vec<Option<String>>;
        let (first, last, level, details): (Column, Column, Column, Column) = self.cache.run_pipe(&pipe).await?;
        let mut out = Vec::with_capacity(fields.len());
        for (i, field) in fields.iter().enumerate() {
            let parse = |column: &Column| column.get(i).cloned().flatten().and_then(|v| v.parse::<i64>().ok());
            let (Some(first_seen), Some(last_seen), Some(level)) = (parse(&first), parse(&last), parse(&level)) else {
                continue;
            };
            let Some(details) =
                details.get(i).cloned().flatten().and_then(|d| serde_json::from_str::<Details>(&d).ok())
            else {
                continue;
            };
            let Ok(fingerprint) = u64::from_str_radix(field, 16) else { continue };
            let series = series[*field].clone();
            out.push(TopError {
                fingerprint,
                count: series.iter().map(|(_, c)| c).sum(),
                series,
                info: ErrorInfo {
                    first_seen,
                    last_seen,
                    level: i16::try_from(level).unwrap_or(40),
                    service: details.service,
                    sample_message: details.sample_message,
                    exception_type: details.exception_type,
                },
            });
        }
        Ok(out)
    }
}
