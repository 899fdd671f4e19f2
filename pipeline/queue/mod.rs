//! The queue behind the ingestion stack, and what drains it into the log store.
//!
//! - [`embedded`]: requests that arrive together share one SQLite transaction; the 202 is sent after it
//!   commits. The queue is the set of requests waiting for that commit.
//! - [`redis`]: the 202 is sent after XADD to one of N Redis stream shards; [`worker`]s, one per shard
//!   at a time by lease, COPY batches into PostgreSQL with the shard's offset in the same transaction, so
//!   a replay after a crash stores nothing twice.
//!
//! Both count pending logs per project and refuse a project whose queue holds `max_queue_depth` logs.

pub mod embedded;
pub mod redis;
pub mod worker;

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
        pub(crate) fn try_add(&self, project: Uuid, n: u64, max: u64) -> bool {
            let mut counts = self.lock();
            let count = counts.entry(project).or_insert(0);
            if *count >= max {
                return false;
            }
            *count += n;
            true
        }

        pub(crate) fn remove(&self, project: Uuid, n: u64) {
            let mut counts = self.lock();
            if let Some(count) = counts.get_mut(&project) {
                *count = count.saturating_sub(n);
                if *count == 0 {
                    counts.remove(&project);
                }
            }
        }

        pub(crate) fn total(&self) -> u64 {
            self.lock().values().sum()
        }
    }
}
