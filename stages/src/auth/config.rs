//! `[stages.auth]`: the auth stage's caches and circuit breaker.

use std::time::Duration;

use serde::Deserialize;

use super::{BreakerSettings, ValidatorSettings};

/// `[stages.auth]`. Every duration in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Seconds this instance trusts its own memory of a key; default 5. Revocation clears it at once regardless.
    pub local_cache_secs: u64,
    /// Seconds the shared cache (Redis) keeps a validated key; default 300.
    pub shared_cache_secs: u64,
    /// Seconds an unknown key is remembered as unknown; default 30.
    pub negative_cache_secs: u64,
    /// Keys kept in the in-process cache at most; default 100000.
    pub local_cache_capacity: u64,
    /// Consecutive account store failures that open the circuit breaker; default 5.
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before letting one look-up through; default 30.
    pub breaker_open_secs: u64,
    /// Seconds a key's last good answer is served while the breaker is open; default 600.
    pub breaker_stale_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            local_cache_secs: 5,
            shared_cache_secs: 300,
            negative_cache_secs: 30,
            local_cache_capacity: 100_000,
            breaker_failures: 5,
            breaker_open_secs: 30,
            breaker_stale_secs: 600,
        }
    }
}

impl AuthConfig {
    pub fn validator_settings(&self) -> ValidatorSettings {
        ValidatorSettings {
            local_ttl: Duration::from_secs(self.local_cache_secs),
            shared_ttl: Duration::from_secs(self.shared_cache_secs),
            negative_ttl: Duration::from_secs(self.negative_cache_secs),
            local_capacity: self.local_cache_capacity,
        }
    }

    pub fn breaker_settings(&self) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: self.breaker_failures.max(1),
            open_for: Duration::from_secs(self.breaker_open_secs),
            stale_for: Duration::from_secs(self.breaker_stale_secs),
        }
    }
}
