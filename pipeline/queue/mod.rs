//! The queue behind the ingestion stack, and what drains it into the log store.
//!
//! - [`embedded`]: requests that arrive together share one SQLite transaction; the 202 is sent after it
//!   commits. The queue is the set of requests waiting for that commit.
//! - [`redis`]: the 202 is sent after XADD to one of N Redis stream shards; [`worker`]s, one per shard
//!   at a time by lease, COPY batches into PostgreSQL with the shard's offset in the same transaction, so
//!   a replay after a crash stores nothing twice.
//!
//! Both count pending logs per project and refuse a project whose queue holds `max_queue_depth` logs.

use serde::Deserialize;

pub mod dead_letter;
pub mod embedded;
pub mod redis;
pub mod worker;

/// `[queue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Redis stream shards (shared backend). Each is written by one worker at a time; more shards, more
    /// parallel COPY streams. Default 4.
    pub shards: u32,
    /// Seconds a worker's lease on a shard lasts without renewal; another instance takes the shard over
    /// after it lapses. Default 15.
    pub lease_secs: u64,
    /// Logs per write (one COPY, or one SQLite transaction) at most. Default 10000.
    pub max_batch_logs: usize,
    /// Requests waiting for the embedded writer at most; beyond, 503 `queue_full`. Default 4096.
    pub embedded_capacity: usize,
    /// Shared backend: after a write that did not fill a whole read, a worker waits this long (ms) before
    /// reading again, so a trickle of small requests is written in few large COPYs. Adds at most this much
    /// to the time until a log is readable. Default 100.
    pub linger_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { shards: 4, lease_secs: 15, max_batch_logs: 10_000, embedded_capacity: 4096, linger_ms: 100 }
    }
}

/// Per-project counts of logs in the queue, for the backpressure limit.
pub mod pending {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use uuid::Uuid;

    #[derive(Default)]
    pub struct Pending {
        // A std mutex: one map operation per use, never held across an await.
        counts: Mutex<HashMap<Uuid, u64>>,
    }

    impl Pending {
        fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, u64>> {
            self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
        }

        /// Adds `n` unless the project already holds `max` or more; whether it did.
        pub fn try_add(&self, project: Uuid, n: u64, max: u64) -> bool {
            let mut counts = self.lock();
            let count = counts.entry(project).or_insert(0);
            if *count >= max {
                return false;
            }
            *count += n;
            true
        }

        pub fn remove(&self, project: Uuid, n: u64) {
            let mut counts = self.lock();
            if let Some(count) = counts.get_mut(&project) {
                *count = count.saturating_sub(n);
                if *count == 0 {
                    counts.remove(&project);
                }
            }
        }

        pub fn total(&self) -> u64 {
            self.lock().values().sum()
        }
    }
}
