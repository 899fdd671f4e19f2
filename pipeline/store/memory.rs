//! The embedded backend's in-process hot cache: counters. (Its key cache is the validator's own in-process
//! tier, and its sessions live in SQLite so that a restart does not log everyone out.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Claim, Counters, HealthCheck, IdempotencyStore, StoreError};

/// Beyond this many keys, ended windows are swept on the next hit.
const SWEEP_ABOVE: usize = 10_000;

/// A window: when it ends, and its count.
#[derive(Clone, Copy)]
struct Window {
    ends: Instant,
    count: u64,
}

/// Fixed-window counters, each window starting with its first event. Ended windows are swept as the map
/// grows, so memory is bounded by the keys active within the longest window.
#[derive(Default)]
pub struct MemoryCounters {
    // A std mutex: it is never held across an await, and every critical section is a map operation.
    windows: Mutex<HashMap<String, Window>>,
}

impl MemoryCounters {
    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // A panic while holding this lock cannot leave a window half-updated, so a poisoned map is usable.
        self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn hit(&self, key: &str, window: Duration) -> Result<(u64, Duration), StoreError> {
        let now = Instant::now();
        let mut windows = self.windows();
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, w| w.ends > now);
        }
        let w = windows.entry(key.to_owned()).or_insert(Window { ends: now + window, count: 0 });
        if w.ends <= now {
            *w = Window { ends: now + window, count: 0 };
        }
        w.count += 1;
        Ok((w.count, w.ends.saturating_duration_since(now)))
    }

    async fn peek(&self, key: &str) -> Result<(u64, Duration), StoreError> {
        let now = Instant::now();
        Ok(match self.windows().get(key) {
            Some(w) if w.ends > now => (w.count, w.ends.saturating_duration_since(now)),
            _ => (0, Duration::ZERO),
        })
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.windows().remove(key);
        Ok(())
    }
}

/// The embedded backend's "cache" check: in-process, so it is up while the process is.
pub struct InProcess;

#[async_trait]
impl HealthCheck for InProcess {
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The embedded quota counter: in process, seeded from the stored usage of the day the first time a
/// project is counted, so that a restart does not hand a project a fresh quota.
pub struct SeededQuota {
    counts: ledger_stages::quota::MemoryQuotaCounter,
    store: std::sync::Arc<dyn super::AccountStore>,
    /// (project, day) already seeded. A tokio mutex: held across the one look-up that seeds.
    seeded: tokio::sync::Mutex<std::collections::HashSet<(uuid::Uuid, chrono::NaiveDate)>>,
}

impl SeededQuota {
    pub(crate) fn new(store: std::sync::Arc<dyn super::AccountStore>) -> SeededQuota {
        SeededQuota { counts: Default::default(), store, seeded: Default::default() }
    }

    async fn seed(
        &self,
        project: uuid::Uuid,
        day: chrono::NaiveDate,
    ) -> Result<(), ledger_stages::auth::StoreUnavailable> {
        let mut seeded = self.seeded.lock().await;
        if seeded.contains(&(project, day)) {
            return Ok(());
        }
        let usage = self
            .store
            .usage(project, day, day)
            .await
            .map_err(|e| ledger_stages::auth::StoreUnavailable(e.to_string()))?;
        let accepted = usage.first().map_or(0, |(_, u)| u.accepted);
        self.counts.seed(project, day, accepted);
        seeded.retain(|(_, d)| *d >= day);
        seeded.insert((project, day));
        Ok(())
    }
}

#[async_trait]
impl ledger_stages::quota::QuotaCounter for SeededQuota {
    async fn try_add(
        &self,
        project: uuid::Uuid,
        day: chrono::NaiveDate,
        n: u64,
        limit: u64,
    ) -> Result<bool, ledger_stages::auth::StoreUnavailable> {
        self.seed(project, day).await?;
        self.counts.try_add(project, day, n, limit).await
    }

    async fn give_back(
        &self,
        project: uuid::Uuid,
        day: chrono::NaiveDate,
        n: u64,
    ) -> Result<(), ledger_stages::auth::StoreUnavailable> {
        self.counts.give_back(project, day, n).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_within_a_window_and_restarts_after_it() {
        let c = MemoryCounters::default();
        let window = Duration::from_millis(200);
        assert_eq!(c.hit("a", window).await.expect("hit").0, 1);
        assert_eq!(c.hit("a", window).await.expect("hit").0, 2);
        assert_eq!(c.hit("b", window).await.expect("hit").0, 1);
        assert_eq!(c.peek("a").await.expect("peek").0, 2);
        c.clear("a").await.expect("clear");
        assert_eq!(c.peek("a").await.expect("peek").0, 0);
    }

    #[tokio::test]
    async fn an_expired_window_starts_again() {
        let c = MemoryCounters::default();
        assert_eq!(c.hit("a", Duration::ZERO).await.expect("hit").0, 1);
        // The zero-length window has ended: the next hit opens a new one.
        assert_eq!(c.hit("a", Duration::from_secs(60)).await.expect("hit").0, 1);
    }
}

/// Idempotency keys of one process (the embedded backend is one process): each with its answer once there
/// is one, and when it lapses. Lapsed keys are swept as the map grows.
#[derive(Default)]
pub struct MemoryIdempotency {
    // A std mutex: never held across an await.
    keys: Mutex<IdempotencyKeys>,
}

/// (project, key) → (the answer once there is one, when the entry lapses).
type IdempotencyKeys = HashMap<(uuid::Uuid, String), (Option<String>, Instant)>;

impl MemoryIdempotency {
    fn keys(&self) -> std::sync::MutexGuard<'_, IdempotencyKeys> {
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(&self, project: uuid::Uuid, key: &str, pending: Duration) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut keys = self.keys();
        if keys.len() > SWEEP_ABOVE {
            keys.retain(|_, (_, lapses)| *lapses > now);
        }
        match keys.get(&(project, key.to_owned())) {
            Some((Some(answer), lapses)) if *lapses > now => Ok(Claim::Answered(answer.clone())),
            Some((None, lapses)) if *lapses > now => Ok(Claim::Pending),
            _ => {
                keys.insert((project, key.to_owned()), (None, now + pending));
                Ok(Claim::Claimed)
            }
        }
    }

    async fn complete(&self, project: uuid::Uuid, key: &str, answer: &str, keep: Duration) -> Result<(), StoreError> {
        self.keys().insert((project, key.to_owned()), (Some(answer.to_owned()), Instant::now() + keep));
        Ok(())
    }

    async fn release(&self, project: uuid::Uuid, key: &str) -> Result<(), StoreError> {
        self.keys().remove(&(project, key.to_owned()));
        Ok(())
    }
}
