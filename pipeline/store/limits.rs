//! The shared backend's rate limiter and quota counter: Redis scripts, one atomic round trip each, that
//! apply the same rules as the in-process ones in `ledger-stages` (see `rate_limit::window_decision`).
//!
//! Each instance takes a few requests' (or logs') worth at a time and spends them locally, so most requests
//! make no round trip for their limits (a single-log request made three, with the enqueue; see the README's
//! benchmarks):
//! - rate limit: a lease of up to [`RATE_LEASE_MAX`] requests (a hundredth of the tightest window's limit,
//!   at least 1), counted in Redis when taken and spent within [`RATE_LEASE_MS`]; what is not spent by then
//!   is dropped. So a project is never let through more than its limits, and may be refused up to one
//!   lease per instance early (under 1% of its limit).
//! - daily quota: an allowance of up to [`QUOTA_LEASE_MAX`] logs beyond the request's (a thousandth of the
//!   quota; none below a quota of 1,000, so small quotas count exactly), added to the day's count when
//!   taken. Logs given back by refused requests return to the allowance. A project is never let through
//!   more than its quota, and may be refused up to one allowance per instance early (0.1% of its quota,
//!   more after restarts, which drop what an instance held).

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

/// KEYS: the day's counter. ARGV: logs, limit, logs wanted beyond them. Refuses (0) when the logs do not
/// fit; else adds them and as many of the extra as fit, and returns how many it added.
const QUOTA: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if used + n > limit then return 0 end
local granted = math.min(n + tonumber(ARGV[3]), limit - used)
redis.call('INCRBY', KEYS[1], granted)
redis.call('EXPIRE', KEYS[1], 172800)
return granted
";

/// Requests a rate-limit lease holds at most.
pub const RATE_LEASE_MAX: u64 = 100;
/// Milliseconds a rate-limit lease may be spent in.
pub const RATE_LEASE_MS: u64 = 1000;
/// Logs a quota allowance holds at most beyond the request that took it.
pub const QUOTA_LEASE_MAX: u64 = 10_000;
/// Projects with a lease or an allowance remembered at most; past it, spent and expired ones are dropped.
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
    /// Logs of (project, day) added to the day's count in Redis and not yet spent by this instance.
    allowances: Mutex<HashMap<(Uuid, NaiveDate), u64>>,
}

impl RedisLimits {
    pub fn new(cache: RedisCache) -> RedisLimits {
        RedisLimits {
            cache,
            rate_limit: redis::Script::new(RATE_LIMIT),
            quota: redis::Script::new(QUOTA),
            rate_leases: Mutex::default(),
            allowances: Mutex::default(),
        }
    }

    /// Spends one request of the project's lease, when it holds one for these limits.
    fn spend_rate_lease(&self, project: Uuid, limits: &[u64], now: u64) -> Option<Decision> {
        let mut leases = self.rate_leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let lease = leases.get_mut(&project)?;
        if lease.tokens == 0 || now >= lease.until_ms || lease.limits != limits {
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

    fn allowances(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, NaiveDate), u64>> {
        self.allowances.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Requests one lease asks for: a hundredth of the tightest limit, 1 to [`RATE_LEASE_MAX`].
fn rate_lease_size(windows: &[Window]) -> u64 {
    windows.iter().map(|w| w.limit / 100).min().unwrap_or(0).clamp(1, RATE_LEASE_MAX)
}

/// Logs an allowance asks for beyond the request: a thousandth of the quota, at most [`QUOTA_LEASE_MAX`].
fn quota_lease_size(limit: u64) -> u64 {
    (limit / 1000).min(QUOTA_LEASE_MAX)
}

fn period_ms(window: &Window) -> u64 {
    u64::try_from(window.period.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl RateLimiter for RedisLimits {
    async fn acquire(&self, project: Uuid, windows: &[Window]) -> Result<Decision, StoreUnavailable> {
        let now = now_ms();
        let limits: Vec<u64> = windows.iter().map(|w| w.limit).collect();
        if let Some(decision) = self.spend_rate_lease(project, &limits, now) {
            return Ok(decision);
        }
        let wanted = rate_lease_size(windows);
        let mut invocation = self.rate_limit.prepare_invoke();
        for window in windows {
            let period = period_ms(window);
            let index = now / period;
            // One hash tag per project: the script's keys share a slot on a cluster.
            invocation.key(self.cache.key("rl", format!("{{{project}}}:{period}:{index}")));
            invocation.key(self.cache.key("rl", format!("{{{project}}}:{period}:{}", index.saturating_sub(1))));
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
        if let Some(held) = self.allowances().get_mut(&(project, day))
            && *held >= n
        {
            *held -= n;
            return Ok(true);
        }
        let mut invocation = self.quota.prepare_invoke();
        invocation
            .key(self.cache.key("quota", format!("{project}:{day}")))
            .arg(n)
            .arg(limit)
            .arg(quota_lease_size(limit));
        let granted: u64 = self.cache.invoke(&invocation).await?;
        if granted == 0 {
            return Ok(false);
        }
        let extra = granted.saturating_sub(n);
        if extra > 0 {
            let mut allowances = self.allowances();
            if allowances.len() >= LEASES_KEPT {
                // Past days' allowances no longer count; of today's, the empty ones go.
                allowances.retain(|(_, d), held| *d >= day && *held > 0);
            }
            *allowances.entry((project, day)).or_insert(0) += extra;
        }
        Ok(true)
    }

    async fn give_back(&self, project: Uuid, day: NaiveDate, n: u64) -> Result<(), StoreUnavailable> {
        // Counted in Redis already: this instance spends them on its next requests.
        *self.allowances().entry((project, day)).or_insert(0) += n;
        Ok(())
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
        let key = limits.cache.key("rl", format!("{{{project}}}:60000:{index}"));
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
        let key = limits.cache.key("quota", format!("{project}:{day}"));
        limits.cache.run::<Option<u64>>(redis::cmd("GET").arg(key)).await.expect("GET").unwrap_or(0)
    }

    #[tokio::test]
    async fn quota_allowances_stay_within_the_quota_across_instances() {
        let prefix = format!("t{}:", Uuid::now_v7().simple());
        let (a, b) = (limits(&prefix).await, limits(&prefix).await);
        let (project, day) = (Uuid::now_v7(), NaiveDate::from_ymd_opt(2026, 12, 1).expect("date"));
        // A quota of 20,000: allowances of 20 logs beyond the request.
        assert!(a.try_add(project, day, 10, 20_000).await.expect("try_add"));
        assert_eq!(quota_count(&a, project, day).await, 30, "10 logs and an allowance of 20");
        assert!(a.try_add(project, day, 20, 20_000).await.expect("try_add"));
        assert_eq!(quota_count(&a, project, day).await, 30, "spent from the allowance");
        a.give_back(project, day, 5).await.expect("give back");
        assert!(a.try_add(project, day, 5, 20_000).await.expect("try_add"));
        assert_eq!(quota_count(&a, project, day).await, 30, "what was given back is spent again");
        let mut accepted = 30 - 5;
        for i in 0..3000 {
            let l = if i % 2 == 0 { &a } else { &b };
            if l.try_add(project, day, 10, 20_000).await.expect("try_add") {
                accepted += 10;
            }
        }
        assert!(quota_count(&a, project, day).await <= 20_000);
        // Each instance may hold an allowance of up to 20 it did not spend.
        assert!((20_000 - 2 * 20..=20_000).contains(&accepted), "{accepted} accepted of a quota of 20,000");
        // Small quotas have no allowance: every log counted, as before.
        let small = Uuid::now_v7();
        for _ in 0..5 {
            assert!(b.try_add(small, day, 1, 5).await.expect("try_add"));
        }
        assert!(!a.try_add(small, day, 1, 5).await.expect("try_add"));
    }
}
