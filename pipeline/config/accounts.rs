//! `[auth]` (accounts' sessions, passwords and logins) and `[limits]` (the operator's ceilings).

use ledger_stages::ProjectSettings;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[auth]`: accounts' sessions, passwords and logins (API keys are `[stages.auth]`, [`ledger_stages::auth::AuthConfig`]).
pub struct AccountsConfig {
    /// HS256 secret for session tokens, at least 32 bytes. Required when shared; when embedded and empty,
    /// one is generated on first start and kept in `data_dir/jwt_secret` (mode 0600).
    pub jwt_secret: Secret,
    /// Lifetime of a session token.
    #[serde(rename = "session_ttl_secs", deserialize_with = "super::secs")]
    pub session_ttl: Duration,
    /// bcrypt cost for passwords (4 to 31). Each step doubles the time of a login.
    pub bcrypt_cost: u32,
    /// Login attempts per (e-mail, client IP) within `login_window_secs` before 429
    /// `too_many_login_attempts`; counted before the password is checked, cleared by a success.
    pub login_max_failures: u32,
    #[serde(rename = "login_window_secs", deserialize_with = "super::secs")]
    pub login_window: Duration,
    /// Failed logins per e-mail from every IP together within `login_window_secs` before 429: the looser
    /// ceiling on guessing from many addresses. The owner's own IP is not locked out by others below it.
    pub login_max_failures_per_email: u32,
    /// Login and register requests per client IP per minute, before 429.
    pub attempts_per_ip_per_minute: u32,
    /// Password hashes (bcrypt) computed at once at most; 0 = the number of cores. Past it, and after
    /// waiting `bcrypt_queue_ms`, login and register answer 503 with Retry-After.
    pub bcrypt_concurrency: usize,
    #[serde(rename = "bcrypt_queue_ms", deserialize_with = "super::millis")]
    pub bcrypt_queue: Duration,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            jwt_secret: Secret::default(),
            session_ttl: Duration::from_secs(3600),
            bcrypt_cost: 12,
            login_max_failures: 10,
            login_window: Duration::from_secs(900),
            login_max_failures_per_email: 100,
            attempts_per_ip_per_minute: 60,
            bcrypt_concurrency: 0,
            bcrypt_queue: Duration::from_millis(1000),
        }
    }
}

/// `[limits]`: the operator's ceilings on what project owners may set or create for themselves.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// The most a project's `rate_limit_per_minute` may be set to.
    pub max_rate_limit_per_minute: u32,
    /// The most a project's `rate_limit_per_hour` may be set to.
    pub max_rate_limit_per_hour: u32,
    /// The most a project's `daily_quota` (logs per UTC day) may be set to.
    pub max_daily_quota: u64,
    /// The most a project's `retention_days` may be set to.
    pub max_retention_days: u32,
    /// The most a project's `max_queue_depth` may be set to.
    pub max_queue_depth: u64,
    /// Projects one account may own at most.
    pub max_projects_per_account: usize,
    /// Alert rules one project may have at most.
    pub max_alert_rules_per_project: usize,
    /// Of them, `query_count` rules at most: each runs a query over the project's logs at every evaluation.
    pub max_query_rules_per_project: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_rate_limit_per_minute: 60_000,
            max_rate_limit_per_hour: 3_600_000,
            max_daily_quota: 1_000_000_000,
            max_retention_days: 365,
            max_queue_depth: 10_000_000,
            max_projects_per_account: 100,
            max_alert_rules_per_project: 100,
            max_query_rules_per_project: 10,
        }
    }
}

impl LimitsConfig {
    /// Why `[limits]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_projects_per_account == 0
            || self.max_alert_rules_per_project == 0
            || self.max_query_rules_per_project == 0
        {
            return Err(
                "limits.max_projects_per_account, max_alert_rules_per_project and max_query_rules_per_project \
                        must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    /// The ceilings as project settings, one per setting.
    pub(crate) fn project_settings(&self) -> ProjectSettings {
        ProjectSettings {
            rate_limit_per_minute: self.max_rate_limit_per_minute,
            rate_limit_per_hour: self.max_rate_limit_per_hour,
            daily_quota: self.max_daily_quota,
            retention_days: self.max_retention_days,
            max_queue_depth: self.max_queue_depth,
        }
    }
}

impl AccountsConfig {
    /// Why `[auth]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(format!("auth.bcrypt_cost must be 4 to 31, not {}", self.bcrypt_cost));
        }
        if self.session_ttl.is_zero() {
            return Err("auth.session_ttl_secs must be at least 1".into());
        }
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            return Err("auth.jwt_secret must be at least 32 bytes".into());
        }
        if self.login_max_failures == 0
            || self.login_max_failures_per_email == 0
            || self.attempts_per_ip_per_minute == 0
        {
            return Err("auth.login_max_failures, login_max_failures_per_email and attempts_per_ip_per_minute must \
                        be at least 1"
                .into());
        }
        Ok(())
    }
}
