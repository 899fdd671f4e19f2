//! Configuration: `config.toml` (or `--config PATH`), then `LEDGER__SECTION__KEY` environment variables.
//!
//! Every section refuses unknown keys (a typo is an error naming the key, not a silently ignored setting),
//! every field has a default, and names carry their unit (`_secs`, `_bytes`). Read the file `config.toml`
//! at the repository root for the documentation of each key; this module is its schema.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ledger_stages::ProjectSettings;
use serde::Deserialize;

mod accounts;
mod backend;
mod ingest;
mod jobs;
mod server;

pub use accounts::{AccountsConfig, LimitsConfig};
pub use backend::{BackendConfig, BackendKind, PostgresConfig, RedisConfig};
pub use ingest::{
    IngestConfig, ParseConfig, QueueConfig, RedactConfig, SampleConfig, Stage, StagesConfig, SyslogConfig,
};
pub use jobs::{AlertsConfig, AnalyticsConfig, RetentionConfig, SearchConfig, TailConfig};
pub use server::{ConsoleConfig, LogFormat, RolesConfig, ServerConfig, TelemetryConfig};

/// A duration written as whole seconds (keys ending `_secs`), read into a `Duration` once, here.
fn secs<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<std::time::Duration, D::Error> {
    u64::deserialize(deserializer).map(std::time::Duration::from_secs)
}

/// A duration written as whole milliseconds (keys ending `_ms`).
fn millis<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<std::time::Duration, D::Error> {
    u64::deserialize(deserializer).map(std::time::Duration::from_millis)
}

/// A secret setting (a token, a key): read like any string, never shown. Its `Debug` says only whether it is
/// set, so a configuration can be logged whole and a new secret field cannot leak by being forgotten.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "(empty)" } else { "(set)" })
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub backend: BackendConfig,
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
    pub auth: AccountsConfig,
    pub roles: RolesConfig,
    pub telemetry: TelemetryConfig,
    /// `[defaults]`: the settings of new projects, declared once (API.md's project settings).
    pub defaults: ProjectSettings,
    pub ingest: IngestConfig,
    pub queue: QueueConfig,
    pub analytics: AnalyticsConfig,
    pub retention: RetentionConfig,
    pub stages: StagesConfig,
    pub syslog: SyslogConfig,
    pub console: ConsoleConfig,
    pub tail: TailConfig,
    pub alerts: AlertsConfig,
    pub search: SearchConfig,
    pub limits: LimitsConfig,
    /// Deprecated keys this configuration used, with what replaces them: logged at start.
    #[serde(skip)]
    pub deprecated: Vec<String>,
    /// The file given to [`Config::load`], so a reload (SIGHUP) reads the same one.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
}

/// Renamed keys: (old, new). The old names are serde aliases, accepted with a warning for one release.
const DEPRECATED: [(&str, &str); 3] = [
    ("queue.max_batch_logs", "queue.max_write_logs"),
    ("stages.validate.max_batch_logs", "stages.validate.max_request_logs"),
    ("roles.analytics", "roles.jobs"),
];

/// A configuration that cannot be used, with a one-line reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Reads `path` (which must exist when given explicitly; `config.toml` in the working directory is
    /// used when present otherwise), then the environment, then checks the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        match path {
            Some(path) if !path.is_file() => {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file_exact("config.toml")),
        }
        let mut config = Self::from_figment(figment.merge(Env::prefixed("LEDGER__").split("__")))?;
        config.source = path.map(Path::to_path_buf);
        Ok(config)
    }

    pub(crate) fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| {
            // figment's errors say what and where (the key, the file or variable); keep them on one line.
            ConfigError(format!("invalid configuration: {}", e.to_string().replace('\n', "; ")))
        })?;
        for (old, new) in DEPRECATED {
            if figment.find_value(old).is_ok() {
                if figment.find_value(new).is_ok() {
                    return Err(ConfigError(format!("invalid configuration: {old} is the old name of {new}: set one")));
                }
                config.deprecated.push(format!("{old} is now {new}; the old name goes in the next release"));
            }
        }
        config.check()?;
        Ok(config)
    }

    /// Each section's own checks, then those across sections.
    fn check(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(format!("invalid configuration: {msg}")));
        let sections = [
            self.server.validate(),
            self.postgres.validate(),
            self.auth.validate(),
            self.limits.validate(),
            self.ingest.validate(),
            self.queue.validate(),
            self.syslog.validate(),
            self.analytics.validate(),
            self.retention.validate(),
            self.alerts.validate(),
            self.search.validate(),
            self.tail.validate(),
        ];
        if let Some(Err(problem)) = sections.into_iter().find(Result::is_err) {
            return fail(problem);
        }
        if self.backend.kind == BackendKind::Shared {
            if self.auth.jwt_secret.is_empty() {
                return fail(
                    "auth.jwt_secret is required when backend.kind = \"shared\" (set LEDGER__AUTH__JWT_SECRET)".into(),
                );
            }
            if self.redis.key_prefix.is_empty() {
                return fail("redis.key_prefix must not be empty".into());
            }
        }
        let (stages, redact) = (&self.stages, &self.stages.redact);
        let key = redact.hash_key.expose().as_bytes();
        if let Err(problem) =
            ledger_stages::compile::compile_config(&stages.parse.rules, &redact.rules, key, &stages.sample.rules)
        {
            return fail(problem);
        }
        for (stage, has_rules) in [
            (Stage::Parse, !self.stages.parse.rules.is_empty()),
            (Stage::Redact, !self.stages.redact.rules.is_empty()),
            (Stage::Sample, !self.stages.sample.rules.is_empty()),
        ] {
            if has_rules && !self.ingest.has(stage) {
                let name = stage.name();
                return fail(format!("stages.{name} has rules but `{name}` is not in ingest.stages"));
            }
        }
        let d = &self.defaults;
        if d.rate_limit_per_minute == 0
            || d.rate_limit_per_hour == 0
            || d.daily_quota == 0
            || d.retention_days == 0
            || d.max_queue_depth == 0
        {
            return fail("every [defaults] setting must be at least 1".into());
        }
        let ceiling = self.limits.project_settings();
        let defaults_patch = ledger_stages::SettingsPatch {
            rate_limit_per_minute: Some(d.rate_limit_per_minute.into()),
            rate_limit_per_hour: Some(d.rate_limit_per_hour.into()),
            daily_quota: Some(d.daily_quota),
            retention_days: Some(d.retention_days.into()),
            max_queue_depth: Some(d.max_queue_depth),
        };
        if let Some((setting, reason)) = defaults_patch.problems_within(&ceiling).into_iter().next() {
            return fail(format!("defaults.{setting} {reason} (its [limits] ceiling)"));
        }
        if self.syslog.tls && self.server.tls_cert_path.is_empty() {
            return fail("syslog.tls needs server.tls_cert_path and server.tls_key_path".into());
        }
        if self.stages.validate.max_request_logs == 0 {
            return fail("stages.validate.max_request_logs must be at least 1".into());
        }
        Ok(())
    }
}

/// A period or lease of zero would spin a loop or expire at once: refused, never clamped where used.
fn at_least_one_sec(settings: &[(&str, std::time::Duration)]) -> Result<(), String> {
    match settings.iter().find(|(_, period)| period.is_zero()) {
        Some((key, _)) => Err(format!("{key} must be at least 1")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::Serialized;

    use super::*;

    fn from_toml(toml: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    #[test]
    fn the_shipped_config_toml_is_valid_and_embedded() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let config = Config::from_figment(Figment::new().merge(Toml::file_exact(path))).expect("valid");
        assert_eq!(config.backend.kind, BackendKind::Embedded);
        assert_eq!(config.server.http_addr.port(), 8000);
        assert_eq!(config.defaults, ProjectSettings::default());
    }

    #[test]
    fn the_shipped_config_toml_says_the_defaults() {
        // Every value config.toml writes out is the default in code: the file documents the defaults, it
        // does not set other ones. (`Debug` shows every field; secrets only as set or empty.)
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let shipped = Config::from_figment(Figment::new().merge(Toml::file_exact(path))).expect("valid");
        assert_eq!(format!("{shipped:#?}"), format!("{:#?}", Config::default()));
    }

    #[test]
    fn secrets_are_never_shown() {
        let config = from_toml(
            "[server]\noperator_token = \"operator-token-0123\"\n[auth]\njwt_secret = \"jwt-0123456789abcdef0123456789abcdef\"\n\
             [syslog]\napi_key = \"ledger_syslogkey\"\n[stages.redact]\nhash_key = \"hash-key-0123456789\"\n",
        )
        .expect("valid");
        let shown = format!("{config:?}");
        for secret in ["operator-token-0123", "jwt-0123456789abcdef", "ledger_syslogkey", "hash-key-0123456789"] {
            assert!(!shown.contains(secret), "{secret} shown");
        }
        assert_eq!(config.server.operator_token.expose(), "operator-token-0123");
    }

    #[test]
    fn periods_of_zero_are_refused_not_clamped() {
        for (section, key) in
            [("queue", "lease_secs"), ("alerts", "evaluate_interval_secs"), ("tail", "heartbeat_secs")]
        {
            let err = from_toml(&format!("[{section}]\n{key} = 0\n")).expect_err(key);
            assert!(err.to_string().contains(&format!("{section}.{key}")), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = from_toml("[server]\nhttp_adr = \"127.0.0.1:1\"\n").expect_err("typo");
        assert!(err.to_string().contains("http_adr"), "{err}");
        let err = from_toml("[sever]\n").expect_err("typo");
        assert!(err.to_string().contains("sever"), "{err}");
    }

    #[test]
    fn shared_mode_requires_a_secret() {
        let err = from_toml("[backend]\nkind = \"shared\"\n").expect_err("no secret");
        assert!(err.to_string().contains("jwt_secret"), "{err}");
        let ok = from_toml("[backend]\nkind = \"shared\"\n[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n");
        assert!(ok.is_ok());
    }

    #[test]
    fn nested_overrides_merge_like_environment_variables() {
        let figment = Figment::new()
            .merge(Toml::string("[server]\nhttp_addr = \"127.0.0.1:1\"\n"))
            .merge(Serialized::default("server.http_addr", "127.0.0.1:18000"));
        let config = Config::from_figment(figment).expect("valid");
        assert_eq!(config.server.http_addr.port(), 18000);
    }

    #[test]
    fn stage_lists_are_checked() {
        let stages = |list: &str| from_toml(&format!("[ingest]\nstages = {list}\n"));
        assert!(stages(r#"["auth", "validate", "enrich", "queue"]"#).is_ok());
        let err = stages(r#"["auth", "validate", "enrich"]"#).expect_err("queue missing");
        assert!(err.to_string().contains("`queue` cannot be left out"), "{err}");
        let err = stages(r#"["auth", "validat", "enrich", "queue"]"#).expect_err("typo");
        assert!(err.to_string().contains("validat"), "{err}");
        let err = stages(r#"["validate", "auth", "enrich", "queue"]"#).expect_err("order");
        assert!(err.to_string().contains("order"), "{err}");
        let err = stages(r#"["auth", "auth", "validate", "enrich", "queue"]"#).expect_err("twice");
        assert!(err.to_string().contains("once"), "{err}");
        // The rule stages: parse before redact (what it lifts is redacted), redact before fingerprint,
        // sample after it.
        assert!(
            stages(r#"["auth", "validate", "parse", "redact", "enrich", "fingerprint", "sample", "queue"]"#).is_ok()
        );
        for wrong in [
            r#"["auth", "validate", "redact", "parse", "enrich", "queue"]"#,
            r#"["auth", "validate", "enrich", "fingerprint", "redact", "queue"]"#,
            r#"["auth", "validate", "enrich", "sample", "fingerprint", "queue"]"#,
        ] {
            assert!(stages(wrong).expect_err(wrong).to_string().contains("order"));
        }
    }

    #[test]
    fn stage_rules_are_checked_at_load() {
        let load = |toml: &str| from_toml(toml);
        let err = load("[stages.redact]\nrules = [{ pattern = \"(\" }]").expect_err("bad regex");
        assert!(err.to_string().contains("stages.redact.rules[0].pattern"), "{err}");
        let err = load("[stages.redact]\nrules = [{ detector = \"email\", action = \"hash\" }]").expect_err("no key");
        assert!(err.to_string().contains("hash_key"), "{err}");
        let err = load("[stages.redact]\nhash_key = \"short\"").expect_err("short key");
        assert!(err.to_string().contains("at least 16 bytes"), "{err}");
        let err = load("[ingest]\nstages = [\"auth\", \"validate\", \"enrich\", \"queue\"]\n[stages.sample]\nrules = [{ action = \"drop\" }]")
            .expect_err("stage left out");
        assert!(err.to_string().contains("`sample` is not in ingest.stages"), "{err}");
        assert!(load("[stages.sample]\nrules = [{ services = [\"api\"], action = \"sample\", one_in = 10 }]").is_ok());
    }

    #[test]
    fn renamed_keys_keep_their_old_name_with_a_warning() {
        let config = from_toml("[queue]\nmax_batch_logs = 500\n[roles]\nanalytics = false\n").expect("old names");
        assert_eq!(config.queue.max_write_logs, 500);
        assert!(!config.roles.jobs);
        assert_eq!(config.deprecated.len(), 2, "{:?}", config.deprecated);
        assert!(config.deprecated[0].contains("queue.max_write_logs"), "{:?}", config.deprecated);
        // Both names at once is an error (serde's duplicate field, or ours when they come from two sources).
        let both = from_toml("[queue]\nmax_batch_logs = 500\nmax_write_logs = 600\n").expect_err("both");
        assert!(both.to_string().contains("max_write_logs"), "{both}");
        let split = Figment::new()
            .merge(Toml::string("[queue]\nmax_batch_logs = 500\n"))
            .merge(Serialized::default("queue.max_write_logs", 600));
        let both = Config::from_figment(split).expect_err("both");
        assert!(both.to_string().contains("set one") || both.to_string().contains("duplicate"), "{both}");
        assert!(from_toml("[queue]\nmax_write_logs = 600\n").expect("new name").deprecated.is_empty());
    }

    #[test]
    fn a_bad_bcrypt_cost_is_refused() {
        let err = from_toml("[auth]\nbcrypt_cost = 3\n").expect_err("too low");
        assert!(err.to_string().contains("bcrypt_cost"), "{err}");
    }
}
