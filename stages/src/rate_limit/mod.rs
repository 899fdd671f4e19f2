//! The rate_limit stage: requests per project per sliding minute and hour, from the project's settings.
//!
//! The algorithm is the sliding window counter: a window of length P holds a count per fixed period; the
//! estimate at time t is `previous × (1 − elapsed/P) + current`, so the limit slides with time without a
//! log of every request. A request passes when the estimate plus itself stays within the limit in every
//! window, and then counts in all of them. [`window_decision`] is that rule; the in-process limiter
//! ([`MemoryRateLimiter`]) and the shared one (a Redis script in the daemon) both apply it, so both
//! backends refuse the same request.
//!
//! Settings changes apply from the next request: limits are read from the request's project, never cached
//! here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use uuid::Uuid;

use crate::auth::StoreUnavailable;
use crate::request::{Ingest, IngestError, RateLimitStatus};
use crate::stage::{Stage, StageLayer};

/// One window: at most `limit` requests per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub period: Duration,
}

/// What a limiter decided, with the tightest window's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub status: RateLimitStatus,
    /// When refused: how long until the request would pass.
    pub retry_after: Duration,
}

/// The two counts of one window at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub previous: u64,
    pub current: u64,
}

/// The rule for one window at `now_ms`: (passes, remaining after it, reset secs, retry after ms).
///
/// The estimate is a float, compared unrounded: the Redis script computes the same IEEE doubles.
pub fn window_decision(window: Window, counts: Counts, now_ms: u64) -> (bool, u64, u64, u64) {
    let period_ms = u64::try_from(window.period.as_millis()).unwrap_or(u64::MAX).max(1);
    let elapsed = now_ms % period_ms;
    let weight = (period_ms - elapsed) as f64 / period_ms as f64;
    let estimate = counts.previous as f64 * weight + counts.current as f64;
    let limit = window.limit as f64;
    let passes = estimate + 1.0 <= limit;
    let remaining = if passes { (limit - estimate - 1.0).floor() as u64 } else { 0 };
    let reset_secs = (period_ms - elapsed).div_ceil(1000);
    let retry_after_ms = if passes {
        0
    } else if counts.current + 1 > window.limit || counts.previous == 0 {
        // Only the next period's start lowers the estimate enough.
        period_ms - elapsed
    } else {
        // Wait until previous × (1 − e/P) + current + 1 ≤ limit.
        let room = (window.limit - counts.current - 1) as f64;
        let needed_elapsed = (period_ms as f64 * (1.0 - room / counts.previous as f64)).ceil() as u64;
        needed_elapsed.saturating_sub(elapsed).clamp(1, period_ms - elapsed)
    };
    (passes, remaining, reset_secs, retry_after_ms)
}

/// Combines the windows' decisions: refused if any refuses; the status of the window with least room.
pub fn decide(windows: &[Window], counts: &[Counts], now_ms: u64) -> Decision {
    let mut decision = Decision {
        allowed: true,
        status: RateLimitStatus { limit: 0, remaining: u64::MAX, reset_secs: 0 },
        retry_after: Duration::ZERO,
    };
    for (window, counts) in windows.iter().zip(counts) {
        let (passes, remaining, reset_secs, retry_ms) = window_decision(*window, *counts, now_ms);
        decision.allowed &= passes;
        decision.retry_after = decision.retry_after.max(Duration::from_millis(retry_ms));
        if remaining < decision.status.remaining || (remaining == decision.status.remaining && !passes) {
            decision.status = RateLimitStatus { limit: window.limit, remaining, reset_secs };
        }
    }
    decision
}

pub fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Counts requests; in-process or shared.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Decides one request of `project` against `windows`, counting it when it passes.
    async fn acquire(&self, project: Uuid, windows: &[Window]) -> Result<Decision, StoreUnavailable>;
}

/// The embedded backend's limiter: the same rule over counts in memory.
#[derive(Default)]
pub struct MemoryRateLimiter {
    /// (project, period) → (period index, counts). A std mutex: held for a map operation, never an await.
    windows: Mutex<HashMap<(Uuid, u64), (u64, Counts)>>,
}

impl MemoryRateLimiter {
    /// Decides at an explicit time (for tests); [`RateLimiter::acquire`] uses the wall clock.
    pub fn acquire_at(&self, project: Uuid, windows: &[Window], now_ms: u64) -> Decision {
        let mut map = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() > 100_000 {
            // Forget windows idle for more than a period: their counts no longer matter.
            map.retain(|(_, period), (index, _)| (now_ms / (*period).max(1)).saturating_sub(*index) <= 1);
        }
        let mut counts = Vec::with_capacity(windows.len());
        for window in windows {
            let period = u64::try_from(window.period.as_millis()).unwrap_or(u64::MAX).max(1);
            let index = now_ms / period;
            let entry = map.entry((project, period)).or_insert((index, Counts::default()));
            // Roll the window forward to this period.
            if entry.0 != index {
                let previous = if entry.0 + 1 == index { entry.1.current } else { 0 };
                *entry = (index, Counts { previous, current: 0 });
            }
            counts.push(entry.1);
        }
        let decision = decide(windows, &counts, now_ms);
        if decision.allowed {
            for window in windows {
                let period = u64::try_from(window.period.as_millis()).unwrap_or(u64::MAX).max(1);
                if let Some(entry) = map.get_mut(&(project, period)) {
                    entry.1.current += 1;
                }
            }
        }
        decision
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, project: Uuid, windows: &[Window]) -> Result<Decision, StoreUnavailable> {
        Ok(self.acquire_at(project, windows, now_ms()))
    }
}

pub struct RateLimit {
    limiter: std::sync::Arc<dyn RateLimiter>,
}

impl RateLimit {
    pub fn layer(limiter: std::sync::Arc<dyn RateLimiter>) -> StageLayer<RateLimit> {
        StageLayer::new(RateLimit { limiter })
    }
}

#[async_trait]
impl Stage for RateLimit {
    const NAME: &'static str = "rate_limit";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        let project = request.project()?;
        let windows = [
            Window { limit: u64::from(project.settings.rate_limit_per_minute), period: Duration::from_secs(60) },
            Window { limit: u64::from(project.settings.rate_limit_per_hour), period: Duration::from_secs(3600) },
        ];
        let decision = self
            .limiter
            .acquire(project.project_id, &windows)
            .await
            .map_err(|_| IngestError::unavailable("the rate limiter"))?;
        let _ = request.report.rate_limit.set(decision.status);
        if decision.allowed {
            Ok(())
        } else {
            Err(IngestError::RateLimited { retry_after: decision.retry_after.max(Duration::from_secs(1)) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Window = Window { limit: 5, period: Duration::from_secs(60) };
    const HOUR: Window = Window { limit: 8, period: Duration::from_secs(3600) };

    #[test]
    fn exactly_the_limit_passes_then_refused_with_retry_after() {
        let limiter = MemoryRateLimiter::default();
        let project = Uuid::now_v7();
        let t0 = 3_600_000 * 1000; // the start of an hour and of a minute
        for i in 0..5 {
            let d = limiter.acquire_at(project, &[MINUTE], t0 + i);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.status.remaining, 4 - i);
        }
        let refused = limiter.acquire_at(project, &[MINUTE], t0 + 10);
        assert!(!refused.allowed);
        assert_eq!(refused.status.remaining, 0);
        assert!(refused.retry_after > Duration::from_secs(59), "{:?}", refused.retry_after);
        // Another project has its own windows.
        assert!(limiter.acquire_at(Uuid::now_v7(), &[MINUTE], t0 + 10).allowed);
    }

    #[test]
    fn the_window_slides() {
        let limiter = MemoryRateLimiter::default();
        let project = Uuid::now_v7();
        let t0 = 3_600_000 * 1000;
        for i in 0..5 {
            assert!(limiter.acquire_at(project, &[MINUTE], t0 + i).allowed);
        }
        // Early in the next minute the previous minute still weighs almost fully.
        assert!(!limiter.acquire_at(project, &[MINUTE], t0 + 60_000 + 1_000).allowed);
        // Past 20% of it, 5 × 0.8 = 4 < 5: one more passes.
        assert!(limiter.acquire_at(project, &[MINUTE], t0 + 60_000 + 12_001).allowed);
        assert!(!limiter.acquire_at(project, &[MINUTE], t0 + 60_000 + 12_002).allowed);
        // Two periods later nothing weighs.
        for i in 0..5 {
            assert!(limiter.acquire_at(project, &[MINUTE], t0 + 180_000 + i).allowed);
        }
    }

    #[test]
    fn every_window_must_pass_and_the_tightest_is_reported() {
        let limiter = MemoryRateLimiter::default();
        let project = Uuid::now_v7();
        let t0 = 3_600_000 * 1000;
        let mut allowed = 0;
        // 5 per minute for 2 minutes would be 10, but the hour allows 8.
        for minute in 0..2u64 {
            for i in 0..5 {
                let d = limiter.acquire_at(project, &[MINUTE, HOUR], t0 + minute * 120_000 + i);
                allowed += u64::from(d.allowed);
            }
        }
        assert_eq!(allowed, 8);
        let d = limiter.acquire_at(project, &[MINUTE, HOUR], t0 + 600_000);
        assert!(!d.allowed);
        assert_eq!(d.status.limit, 8);
    }

    #[test]
    fn refused_requests_do_not_count() {
        let limiter = MemoryRateLimiter::default();
        let project = Uuid::now_v7();
        let t0 = 3_600_000 * 1000;
        for i in 0..20 {
            limiter.acquire_at(project, &[MINUTE], t0 + i);
        }
        // Half way through the next minute the previous one weighs half. Had the 15 refusals counted, its
        // 20 × 0.5 = 10 would refuse everything; its 5 passes weigh 2.5, which leaves room for 2.
        let passed = (0..10).filter(|i| limiter.acquire_at(project, &[MINUTE], t0 + 90_000 + i).allowed).count();
        assert_eq!(passed, 2);
    }
}
