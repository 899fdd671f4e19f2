//! The quota stage: logs per project per UTC day, against the project's `daily_quota`.
//!
//! A request is taken whole or refused whole: its logs are counted only if they all fit. When a later
//! stage refuses the request (invalid, queue full), its count is given back, so the quota counts logs
//! that were accepted. Refused: 429 `quota_exceeded` with Retry-After until midnight UTC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::auth::StoreUnavailable;
use crate::request::{Ingest, IngestError};
use crate::stage::{Stage, StageLayer, Summary};

/// Counts logs per project per day; in-process or shared.
#[async_trait]
pub trait QuotaCounter: Send + Sync + 'static {
    /// Adds `n` to the day's count if the sum stays within `limit`; whether it did.
    async fn try_add(&self, project: Uuid, day: NaiveDate, n: u64, limit: u64) -> Result<bool, StoreUnavailable>;
    /// Takes back `n` that `try_add` added.
    async fn give_back(&self, project: Uuid, day: NaiveDate, n: u64) -> Result<(), StoreUnavailable>;
}

/// Time until the next midnight UTC, at least one second.
pub fn until_midnight(now: DateTime<Utc>) -> Duration {
    let tomorrow = now.date_naive().succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    tomorrow.and_then(|t| (t - now).to_std().ok()).unwrap_or(Duration::from_secs(1)).max(Duration::from_secs(1))
}

/// The embedded backend's counter. Counts start at zero when the process starts, unless seeded.
#[derive(Default)]
pub struct MemoryQuotaCounter {
    // A std mutex: held for one map operation, never across an await.
    counts: Mutex<HashMap<(Uuid, NaiveDate), u64>>,
}

impl MemoryQuotaCounter {
    /// Sets a day's count (from stored usage, after a restart).
    pub fn seed(&self, project: Uuid, day: NaiveDate, count: u64) {
        self.lock().insert((project, day), count);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, NaiveDate), u64>> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl QuotaCounter for MemoryQuotaCounter {
    async fn try_add(&self, project: Uuid, day: NaiveDate, n: u64, limit: u64) -> Result<bool, StoreUnavailable> {
        let mut counts = self.lock();
        // Past days no longer matter.
        counts.retain(|(_, d), _| *d >= day);
        let count = counts.entry((project, day)).or_insert(0);
        if *count + n > limit {
            return Ok(false);
        }
        *count += n;
        Ok(true)
    }

    async fn give_back(&self, project: Uuid, day: NaiveDate, n: u64) -> Result<(), StoreUnavailable> {
        if let Some(count) = self.lock().get_mut(&(project, day)) {
            *count = count.saturating_sub(n);
        }
        Ok(())
    }
}

pub struct Quota {
    counter: Arc<dyn QuotaCounter>,
}

impl Quota {
    pub fn layer(counter: Arc<dyn QuotaCounter>) -> StageLayer<Quota> {
        StageLayer::new(Quota { counter })
    }
}

#[async_trait]
impl Stage for Quota {
    const NAME: &'static str = "quota";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        let project = request.project()?;
        let day = request.received_at.date_naive();
        let n = request.len() as u64;
        let fits = self
            .counter
            .try_add(project.project_id, day, n, project.settings.daily_quota)
            .await
            .map_err(|_| IngestError::unavailable("the quota counter"))?;
        if fits { Ok(()) } else { Err(IngestError::QuotaExceeded { retry_after: until_midnight(request.received_at) }) }
    }

    async fn refused_later(&self, request: &Summary) {
        let Some(project) = &request.project else { return };
        let day = request.received_at.date_naive();
        if let Err(error) = self.counter.give_back(project.project_id, day, request.logs as u64).await {
            tracing::warn!(%error, project_id = %project.project_id, "could not give back quota of a refused request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_whole_requests_within_the_limit() {
        let c = MemoryQuotaCounter::default();
        let (p, day) = (Uuid::now_v7(), NaiveDate::from_ymd_opt(2026, 11, 27).expect("date"));
        assert!(c.try_add(p, day, 6, 10).await.expect("ok"));
        assert!(!c.try_add(p, day, 5, 10).await.expect("ok"), "5 more would make 11");
        assert!(c.try_add(p, day, 4, 10).await.expect("ok"));
        c.give_back(p, day, 4).await.expect("ok");
        assert!(c.try_add(p, day, 4, 10).await.expect("ok"));
        let tomorrow = day.succ_opt().expect("date");
        assert!(c.try_add(p, tomorrow, 10, 10).await.expect("ok"), "a new day starts at zero");
    }

    #[test]
    fn retry_after_runs_to_midnight_utc() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T23:59:30Z").expect("valid").to_utc();
        assert_eq!(until_midnight(now), Duration::from_secs(30));
    }
}
