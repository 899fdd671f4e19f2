//! The shared backend's rate limiter and quota counter: Redis scripts, one atomic round trip each, that
//! apply the same rules as the in-process ones in `ledger-stages` (see `rate_limit::window_decision`).
//!
//! The rate limit is taken a few requests at a time and spent locally, so most requests make no round trip
//! for it (a single-log request made three before its 202, with the quota and the enqueue; see the
//! README's benchmarks): a lease of up to [`RATE_LEASE_MAX`] requests (a hundredth of the tightest window's
//! limit, at least 1), counted in Redis when taken and spent within [`RATE_LEASE_MS`]; what is not spent by
//! then is dropped, and a lease taken under other limits (the settings changed) is not spent. So a project
//! is never let through more than its limits, and may be refused up to one lease per instance early (under
//! 1% of its limit; after its limits are lowered, until the lease's minute has passed).
//!
//! The quota is counted exactly, one round trip per request: an allowance held by an instance would stay
//! counted when the quota is lowered, and refuse the project until every instance had handed it back (the
//! cluster test's lowered quota caught it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use ledger_stages::RateLimitStatus;
use ledger_stages::auth::StoreUnavailable;
use ledger_stages::quota::QuotaCounter;
use ledger_stages::rate_limit::{Counts, Decision, RateLimiter, Window, decide, now_ms};
use uuid::Uuid;

use super::redis::RedisCache;

/// KEYS: per window, its current and previous period's counters. ARGV: now (ms), requests wanted, then per
/// window its limit and period (ms). Grants as many of the wanted requests as every window's estimate has
/// room for (none when one more request does not fit: the shared rule), and counts them in every window.
/// Returns the requests granted and the counts it read.
const RATE_LIMIT: &str = r"
local now = tonumber(ARGV[1])
local granted = tonumber(ARGV[2])
local windows = (#ARGV - 2) / 2
local counts = {}
for i = 1, windows do
  local limit = tonumber(ARGV[2 * i + 1])
  local period = tonumber(ARGV[2 * i + 2])
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local elapsed = now % period
  local estimate = previous * ((period - elapsed) / period) + current
  local room = math.floor(limit - estimate)
  if estimate + 1 > limit then room = 0 end
  if room < granted then granted = room end
  counts[2 * i - 1] = current
  counts[2 * i] = previous
end
if granted > 0 then
  for i = 1, windows do
    redis.call('INCRBY', KEYS[2 * i - 1], granted)
    redis.call('PEXPIRE', KEYS[2 * i - 1], 2 * tonumber(ARGV[2 * i + 2]))
  end
end
table.insert(counts, 1, granted)
return counts
";

/// KEYS: the day's counter. ARGV: logs, limit. Adds them if the sum stays within the limit.
const QUOTA: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 172800)
return 1
";

/// Requests a rate-limit lease holds at most.
pub const RATE_LEASE_MAX: u64 = 100;
/// Milliseconds a rate-limit lease may be spent in.
pub const RATE_LEASE_MS: u64 = 1000;
/// Projects with a lease remembered at most; past it, spent and expired ones are dropped.
const LEASES_KEPT: usize = 100_000;

/// Requests of `project` counted in Redis but not yet spent by this instance.
struct RateLease {
    /// The limits it was taken under: other limits (settings changed) take a new lease.
    limits: Vec<u64>,
    tokens: u64,
    until_ms: u64,
    /// The tightest window's status after the last request this lease let through.
    status: RateLimitStatus,
}

pub struct RedisLimits {
    cache: RedisCache,
    rate_limit: redis::Script,
    quota: redis::Script,
    // Std mutexes: held for a map operation, never across an await.
    rate_leases: Mutex<HashMap<Uuid, RateLease>>,
}

impl RedisLimits {
    pub(crate) fn new(cache: RedisCache) -> RedisLimits {
        RedisLimits {
            cache,
            rate_limit: redis::Script::new(RATE_LIMIT),
            quota: redis::Script::new(QUOTA),
            rate_leases: Mutex::default(),
        }
    }

    /// Spends one request of the project's lease, when it holds one for these limits.
    fn spend_rate_lease(&self, project: Uuid, windows: &[Window], now: u64) -> Option<Decision> {
        let mut leases = self.rate_leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let lease = leases.get_mut(&project)?;
        if lease.tokens == 0
            || now >= lease.until_ms
            || !lease.limits.iter().copied().eq(windows.iter().map(|w| w.limit))
        {
            return None;
        }
        lease.tokens -= 1;
        lease.status.remaining = lease.status.remaining.saturating_sub(1);
        Some(Decision { allowed: true, status: lease.status, retry_after: Duration::ZERO })
    }

    fn keep_rate_lease(&self, project: Uuid, lease: RateLease, now: u64) {
        let mut leases = self.rate_leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if leases.len() >= LEASES_KEPT {
            leases.retain(|_, l| l.tokens > 0 && now < l.until_ms);
        }
        match leases.get_mut(&project) {
            // Requests of the same project that took leases at once: the tokens add up.
            Some(held) if held.limits == lease.limits && now < held.until_ms => {
                held.tokens += lease.tokens;
                held.until_ms = held.until_ms.min(lease.until_ms);
                held.status = lease.status;
            }
            _ => {
                leases.insert(project, lease);
            }
        }
    }
}

/// Requests one lease asks for: a hundredth of the tightest limit, 1 to [`RATE_LEASE_MAX`].
fn rate_lease_size(windows: &[Window]) -> u64 {
    windows.iter().map(|w| w.limit / 100).min().unwrap_or(0).clamp(1, RATE_LEASE_MAX)
}

fn period_ms(window: &Window) -> u64 {
    u64::try_from(window.period.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The limits' keys, each shape in one place.
impl RedisLimits {
    /// A project's count in one window of `period_ms` (the `index`th since the epoch). One hash tag per
    /// project: a script's keys share a slot on a cluster.
    fn window_key(&self, project: Uuid, period_ms: u64, index: u64) -> String {
        self.cache.key("rl", format!("{{{project}}}:{period_ms}:{index}"))
    }

    /// A project's logs counted against its daily quota on `day`.
    fn quota_key(&self, project: Uuid, day: NaiveDate) -> String {
        self.cache.key("quota", format!("{project}:{day}"))
    }
}

#[async_trait]
impl RateLimiter for RedisLimits {
    async fn acquire(&self, project: Uuid, windows: &[Window]) -> Result<Decision, StoreUnavailable> {
        let now = now_ms();
        if let Some(decision) = self.spend_rate_lease(project, windows, now) {
            return Ok(decision);
        }
        let wanted = rate_lease_size(windows);
        let mut invocation = self.rate_limit.prepare_invoke();
        for window in windows {
            let period = period_ms(window);
            let index = now / period;
            // One hash tag per project: the script's keys share a slot on a cluster.
            invocation.key(self.window_key(project, period, index));
            invocation.key(self.window_key(project, period, index.saturating_sub(1)));
        }
        invocation.arg(now).arg(wanted);
        for window in windows {
            invocation.arg(window.limit).arg(period_ms(window));
        }
        let reply: Vec<u64> = self.cache.invoke(&invocation).await?;
        let granted = reply.first().copied().unwrap_or(0);
        let counts: Vec<Counts> =
            reply[1..].chunks(2).map(|c| Counts { current: c[0], previous: c.get(1).copied().unwrap_or(0) }).collect();
        let mut decision = decide(windows, &counts, now);
        // The script's verdict is the one that counted; the shared rule only explains it.
        decision.allowed = granted > 0;
        if !decision.allowed && decision.retry_after.is_zero() {
            decision.retry_after = Duration::from_secs(1);
        }
        if granted > 1 {
            // This request is one of them; the others are already counted as if they came now.
            decision.status.remaining = decision.status.remaining.saturating_sub(granted - 1);
            let limits = windows.iter().map(|w| w.limit).collect();
            let lease =
                RateLease { limits, tokens: granted - 1, until_ms: now + RATE_LEASE_MS, status: decision.status };
            self.keep_rate_lease(project, lease, now);
        }
        Ok(decision)
    }
}

#[async_trait]
impl QuotaCounter for RedisLimits {
    async fn try_add(&self, project: Uuid, day: NaiveDate, n: u64, limit: u64) -> Result<bool, StoreUnavailable> {
        let mut invocation = self.quota.prepare_invoke();
        invocation.key(self.quota_key(project, day)).arg(n).arg(limit);
        let fits: i64 = self.cache.invoke(&invocation).await?;
        Ok(fits == 1)
    }

    async fn give_back(&self, project: Uuid, day: NaiveDate, n: u64) -> Result<(), StoreUnavailable> {
        let mut cmd = redis::cmd("DECRBY");
        cmd.arg(self.quota_key(project, day)).arg(n);
        Ok(self.cache.run::<()>(&cmd).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    /// Limits over the test Redis, under a key prefix of their own.
    async fn limits(prefix: &str) -> RedisLimits {
        let url = std::env::var("LEDGER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let cache = RedisCache::connect(&url, prefix, Duration::from_secs(5)).await.expect("the test Redis");
        RedisLimits::new(cache)
    }

    fn windows(per_minute: u64, per_hour: u64) -> [Window; 2] {
        [Window { limit: per_minute, period: MINUTE }, Window { limit: per_hour, period: HOUR }]
    }

    /// The current minute's count in Redis.
    async fn counted(limits: &RedisLimits, project: Uuid) -> u64 {
        let index = now_ms() / 60_000;
        let key = limits.window_key(project, 60_000, index);
        limits.cache.run::<Option<u64>>(redis::cmd("GET").arg(key)).await.expect("GET").unwrap_or(0)
    }

    #[tokio::test]
    async fn a_lease_lets_requests_through_without_a_round_trip_each() {
        let limits = limits(&format!("t{}:", Uuid::now_v7().simple())).await;
        let (project, windows) = (Uuid::now_v7(), windows(10_000, 1_000_000));
        let first = limits.acquire(project, &windows).await.expect("acquire");
        assert!(first.allowed);
        assert_eq!(first.status.remaining, 10_000 - 100, "the lease's 100 requests count at once");
        // A minute boundary between the two reads would move the count to another key.
        if now_ms() % 60_000 < 59_000 {
            assert_eq!(counted(&limits, project).await, 100);
        }
        for i in 1..100 {
            let d = limits.acquire(project, &windows).await.expect("acquire");
            assert!(d.allowed, "request {i}");
            assert_eq!(d.status.remaining, 10_000 - 100 - i, "request {i}");
        }
        limits.acquire(project, &windows).await.expect("acquire");
        if now_ms() % 60_000 < 58_000 {
            assert_eq!(counted(&limits, project).await, 200, "the 101st request took the second lease");
        }
    }

    #[tokio::test]
    async fn small_limits_count_every_request_and_changed_limits_drop_the_lease() {
        let limits = limits(&format!("t{}:", Uuid::now_v7().simple())).await;
        let project = Uuid::now_v7();
        let allowed = |d: Decision| d.allowed;
        for i in 0..5 {
            assert!(allowed(limits.acquire(project, &windows(5, 100)).await.expect("acquire")), "request {i}");
        }
        let refused = limits.acquire(project, &windows(5, 100)).await.expect("acquire");
        // Until the minute's end, which may be under a second away (the stage rounds it up to one).
        assert!(!refused.allowed && !refused.retry_after.is_zero(), "{refused:?}");
        // A lease of 100 under generous limits, then the limits drop below what was counted.
        let other = Uuid::now_v7();
        assert!(allowed(limits.acquire(other, &windows(100_000, 1_000_000)).await.expect("acquire")));
        assert!(!allowed(limits.acquire(other, &windows(50, 1_000_000)).await.expect("acquire")), "new limits");
    }

    #[tokio::test]
    async fn instances_sharing_a_limit_never_let_more_through() {
        let prefix = format!("t{}:", Uuid::now_v7().simple());
        let (a, b) = (Arc::new(limits(&prefix).await), Arc::new(limits(&prefix).await));
        let (project, windows) = (Uuid::now_v7(), windows(700, 1_000_000));
        let mut passed = 0;
        for i in 0..1000 {
            let limits = if i % 3 == 0 { &b } else { &a };
            passed += u64::from(limits.acquire(project, &windows).await.expect("acquire").allowed);
        }
        // Leases of 7: each instance may hold up to 6 counted and unspent ones when the limit is reached.
        assert!((700 - 2 * 6..=700).contains(&passed), "{passed} passed of a limit of 700");
    }

    async fn quota_count(limits: &RedisLimits, project: Uuid, day: NaiveDate) -> u64 {
        let key = limits.quota_key(project, day);
        limits.cache.run::<Option<u64>>(redis::cmd("GET").arg(key)).await.expect("GET").unwrap_or(0)
    }

    #[tokio::test]
    async fn quotas_count_every_log_across_instances() {
        let prefix = format!("t{}:", Uuid::now_v7().simple());
        let (a, b) = (limits(&prefix).await, limits(&prefix).await);
        let (project, day) = (Uuid::now_v7(), NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"));
        assert!(a.try_add(project, day, 10, 25).await.expect("try_add"));
        assert!(b.try_add(project, day, 10, 25).await.expect("try_add"));
        assert!(!a.try_add(project, day, 10, 25).await.expect("try_add"), "30 would be over 25");
        b.give_back(project, day, 10).await.expect("give back");
        assert_eq!(quota_count(&a, project, day).await, 10);
        assert!(a.try_add(project, day, 15, 25).await.expect("try_add"), "exactly the quota");
        assert!(!b.try_add(project, day, 1, 25).await.expect("try_add"));
    }
}
