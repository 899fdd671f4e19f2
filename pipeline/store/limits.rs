//! The shared backend's rate limiter and quota counter: Redis scripts, one atomic round trip each, that
//! apply the same rules as the in-process ones in `ledger-stages` (see `rate_limit::window_decision`).

use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use ledger_stages::auth::StoreUnavailable;
use ledger_stages::quota::QuotaCounter;
use ledger_stages::rate_limit::{Counts, Decision, RateLimiter, Window, decide, now_ms};
use uuid::Uuid;

use super::redis::RedisCache;

/// KEYS: per window, its current and previous period's counters. ARGV: now (ms), then per window its limit
/// and period (ms). Passes when every window's estimate plus this request stays within its limit, and then
/// counts it in every window. Returns the decision and the counts it read.
const RATE_LIMIT: &str = r"
local now = tonumber(ARGV[1])
local windows = (#ARGV - 1) / 2
local counts = {}
local allowed = 1
for i = 1, windows do
  local limit = tonumber(ARGV[2 * i])
  local period = tonumber(ARGV[2 * i + 1])
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local elapsed = now % period
  local estimate = previous * ((period - elapsed) / period) + current
  if estimate + 1 > limit then allowed = 0 end
  counts[2 * i - 1] = current
  counts[2 * i] = previous
end
if allowed == 1 then
  for i = 1, windows do
    redis.call('INCR', KEYS[2 * i - 1])
    redis.call('PEXPIRE', KEYS[2 * i - 1], 2 * tonumber(ARGV[2 * i + 1]))
  end
end
table.insert(counts, 1, allowed)
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

pub struct RedisLimits {
    cache: RedisCache,
    rate_limit: redis::Script,
    quota: redis::Script,
}

impl RedisLimits {
    pub fn new(cache: RedisCache) -> RedisLimits {
        RedisLimits { cache, rate_limit: redis::Script::new(RATE_LIMIT), quota: redis::Script::new(QUOTA) }
    }
}

fn period_ms(window: &Window) -> u64 {
    u64::try_from(window.period.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl RateLimiter for RedisLimits {
    async fn acquire(&self, project: Uuid, windows: &[Window]) -> Result<Decision, StoreUnavailable> {
        let now = now_ms();
        let mut invocation = self.rate_limit.prepare_invoke();
        for window in windows {
            let period = period_ms(window);
            let index = now / period;
            // One hash tag per project: the script's keys share a slot on a cluster.
            invocation.key(self.cache.key("rl", format!("{{{project}}}:{period}:{index}")));
            invocation.key(self.cache.key("rl", format!("{{{project}}}:{period}:{}", index.saturating_sub(1))));
        }
        invocation.arg(now);
        for window in windows {
            invocation.arg(window.limit).arg(period_ms(window));
        }
        let reply: Vec<u64> = self.cache.invoke(&invocation).await?;
        let allowed = reply.first().copied() == Some(1);
        let counts: Vec<Counts> =
            reply[1..].chunks(2).map(|c| Counts { current: c[0], previous: c.get(1).copied().unwrap_or(0) }).collect();
        let mut decision = decide(windows, &counts, now);
        // The script's verdict is the one that counted; the shared rule only explains it.
        decision.allowed = allowed;
        if !allowed && decision.retry_after.is_zero() {
            decision.retry_after = Duration::from_secs(1);
        }
        Ok(decision)
    }
}

#[async_trait]
impl QuotaCounter for RedisLimits {
    async fn try_add(&self, project: Uuid, day: NaiveDate, n: u64, limit: u64) -> Result<bool, StoreUnavailable> {
        let mut invocation = self.quota.prepare_invoke();
        invocation.key(self.cache.key("quota", format!("{project}:{day}"))).arg(n).arg(limit);
        let fits: i64 = self.cache.invoke(&invocation).await?;
        Ok(fits == 1)
    }

    async fn give_back(&self, project: Uuid, day: NaiveDate, n: u64) -> Result<(), StoreUnavailable> {
        let mut cmd = redis::cmd("DECRBY");
        cmd.arg(self.cache.key("quota", format!("{project}:{day}"))).arg(n);
        Ok(self.cache.run::<()>(&cmd).await?)
    }
}
