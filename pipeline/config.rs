//! Configuration: `config.toml` (or `--config PATH`), then `LEDGER__SECTION__KEY` environment variables.
//!
//! Every section refuses unknown keys (a typo is an error naming the key, not a silently ignored setting),
//! every field has a default, and names carry their unit (`_secs`, `_bytes`). Read the file `config.toml`
//! at the repository root for the documentation of each key; this module is its schema.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ledger_stages::ProjectSettings;
use serde::Deserialize;

/// A secret setting (a token, a key): read like any string, never shown. Its `Debug` says only whether it is
/// set, so a configuration can be logged whole and a new secret field cannot leak by being forgotten.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
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

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// REST listener. Port 0 picks a free port (the chosen one is logged in the `ledger ready` line).
    pub http_addr: SocketAddr,
    /// gRPC listener.
    pub grpc_addr: SocketAddr,
    /// Largest request body, after decompression.
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for requests and batches in hand before exiting anyway.
    pub shutdown_timeout_secs: u64,
    /// On SIGTERM, how long the listeners stay open answering new ingestion 503 (and `/health` 503, so
    /// load balancers take the instance out) before they close. Requests begun before are finished.
    pub shutdown_drain_ms: u64,
    /// TLS for both listeners: a PEM certificate chain and its PEM private key. Both empty = plain TCP.
    pub tls_cert_path: String,
    pub tls_key_path: String,
    /// Connections open at once per listener at most; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections open at once per listener from one client address (an IPv6 /64 counts as one) at most;
    /// past it, a new one from that address is closed at once. At most `max_connections`.
    pub max_connections_per_address: usize,
    /// Seconds for a TLS handshake, then for a connection's first bytes, then for a request head to arrive;
    /// an idle keep-alive connection is closed after it too.
    pub header_read_timeout_secs: u64,
    /// Seconds an HTTP/2 connection (REST or gRPC) may stay open with no request in flight before it is
    /// closed (a GOAWAY; clients reconnect when they next need to).
    pub idle_timeout_secs: u64,
    /// Seconds for a whole request body to arrive once its handler reads it; slower is 408.
    pub body_read_timeout_secs: u64,
    /// Bytes of ingestion bodies read, decoded or in the stack at once on this instance; a request that
    /// would go past it gets 503 with Retry-After.
    pub max_inflight_body_bytes: usize,
    /// When set, `/metrics`, `/health/deep` and gRPC reflection require `Authorization: Bearer <token>`.
    pub operator_token: Secret,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_timeout_secs: 30,
            shutdown_drain_ms: 500,
            tls_cert_path: String::new(),
            tls_key_path: String::new(),
            max_connections: 1024,
            max_connections_per_address: 128,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 30,
            max_inflight_body_bytes: 256 * 1024 * 1024,
            operator_token: Secret::default(),
        }
    }
}

impl ServerConfig {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// SQLite files in `data_dir` and in-process caches: one node, nothing to install.
    #[default]
    Embedded,
    /// PostgreSQL and Redis: for production and several instances.
    Shared,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Shared => "shared",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    pub kind: BackendKind,
    /// The embedded backend's files and generated secrets.
    pub data_dir: PathBuf,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig { kind: BackendKind::Embedded, data_dir: PathBuf::from("./data") }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Users, sessions' owners, projects, keys, usage.
    pub auth_url: String,
    /// Logs. May be the same server as `auth_url`, or the same database.
    pub logs_url: String,
    /// A streaming replica of `logs_url`'s server for queries, search and metrics rebuilds; empty: none.
    pub logs_read_url: String,
    /// Connections per pool (each of the two databases has one pool).
    pub max_connections: u32,
    /// How long to wait for a connection before answering 503.
    pub connect_timeout_secs: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            auth_url: "postgres://postgres@127.0.0.1:5432/ledger_auth".into(),
            logs_url: "postgres://postgres@127.0.0.1:5432/ledger_logs".into(),
            logs_read_url: String::new(),
            max_connections: 16,
            connect_timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// One Redis, or the nodes of a Redis Cluster (one is enough; comma-separated). Which it is, the first
    /// node that answers says.
    pub url: String,
    /// Every key Ledger writes starts with this, so deployments (and tests) can share one Redis.
    pub key_prefix: String,
    /// How long to wait for Redis before answering 503.
    pub timeout_secs: u64,
    /// Replicas that must hold a batch before its 202 (`WAIT`), so that a failover to one of them loses no
    /// acknowledged log. 0: the 202 follows the primary's write.
    pub min_replicas_acked: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "ledger:".into(),
            timeout_secs: 2,
            min_replicas_acked: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[auth]`: accounts' sessions, passwords and logins (API keys are `[stages.auth]`, [`ledger_stages::auth::AuthConfig`]).
pub struct AccountsConfig {
    /// HS256 secret for session tokens, at least 32 bytes. Required when shared; when embedded and empty,
    /// one is generated on first start and kept in `data_dir/jwt_secret` (mode 0600).
    pub jwt_secret: Secret,
    /// Lifetime of a session token.
    pub session_ttl_secs: u64,
    /// bcrypt cost for passwords (4 to 31). Each step doubles the time of a login.
    pub bcrypt_cost: u32,
    /// Login attempts per (e-mail, client IP) within `login_window_secs` before 429
    /// `too_many_login_attempts`; counted before the password is checked, cleared by a success.
    pub login_max_failures: u32,
    pub login_window_secs: u64,
    /// Failed logins per e-mail from every IP together within `login_window_secs` before 429: the looser
    /// ceiling on guessing from many addresses. The owner's own IP is not locked out by others below it.
    pub login_max_failures_per_email: u32,
    /// Login and register requests per client IP per minute, before 429.
    pub attempts_per_ip_per_minute: u32,
    /// Password hashes (bcrypt) computed at once at most; 0 = the number of cores. Past it, and after
    /// waiting `bcrypt_queue_ms`, login and register answer 503 with Retry-After.
    pub bcrypt_concurrency: usize,
    pub bcrypt_queue_ms: u64,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            jwt_secret: Secret::default(),
            session_ttl_secs: 3600,
            bcrypt_cost: 12,
            login_max_failures: 10,
            login_window_secs: 900,
            login_max_failures_per_email: 100,
            attempts_per_ip_per_minute: 60,
            bcrypt_concurrency: 0,
            bcrypt_queue_ms: 1000,
        }
    }
}

/// Which parts of Ledger this instance runs; all by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolesConfig {
    /// REST and gRPC fronts.
    pub gateway: bool,
    /// Queue consumers that write logs to the log store, and the log store's upkeep (partitions, BRIN).
    pub workers: bool,
    /// The periodic jobs of the whole deployment: analytics rebuilds and retention (each run by one
    /// instance per period). (Was `analytics`; the old name is accepted, with a warning, for one release.)
    #[serde(alias = "analytics")]
    pub jobs: bool,
}

impl Default for RolesConfig {
    fn default() -> Self {
        RolesConfig { gateway: true, workers: true, jobs: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector for traces, e.g. `http://127.0.0.1:4317`; empty = off.
    pub otlp_endpoint: String,
    /// `json` (one object per line) or `text`.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `ledger=debug,info`. `RUST_LOG` wins when set.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { otlp_endpoint: String::new(), log_format: LogFormat::Json, log_level: "info".into() }
    }
}

ledger_stages::named_enum! {
    /// The ingestion stages. Declared in the order the stack runs them, outermost first: that order is the
    /// only one a configuration may list them in.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Stage {
        Auth = "auth",
        RateLimit = "rate_limit",
        Quota = "quota",
        Validate = "validate",
        Parse = "parse",
        Redact = "redact",
        Enrich = "enrich",
        Fingerprint = "fingerprint",
        Sample = "sample",
        Queue = "queue",
    }
}

impl Stage {
    /// Without these a request has no project, no records, no ids, or no home.
    pub fn required(self) -> bool {
        matches!(self, Stage::Auth | Stage::Validate | Stage::Enrich | Stage::Queue)
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The stages to run, in stack order. `rate_limit`, `quota`, `parse`, `redact`, `fingerprint` and
    /// `sample` may be left out.
    pub stages: Vec<Stage>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { stages: Stage::ALL.to_vec() }
    }
}

impl IngestConfig {
    /// Why the stage list is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        let order = || Stage::ALL.map(Stage::name).join(" → ");
        if let Some(missing) = Stage::ALL.iter().find(|s| s.required() && !self.stages.contains(s)) {
            return Some(format!("ingest.stages: `{}` cannot be left out", missing.name()));
        }
        if self.stages.windows(2).any(|w| w[0] >= w[1]) {
            return Some(format!("ingest.stages: stages run in the order {}, each once", order()));
        }
        None
    }

    pub fn has(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Redis stream shards (shared backend). Each is written by one worker at a time; more shards, more
    /// parallel COPY streams. Default 4.
    pub shards: u32,
    /// Seconds a worker's lease on a shard lasts without renewal; another instance takes the shard over
    /// after it lapses. Default 15.
    pub lease_secs: u64,
    /// Logs per write (one COPY, or one SQLite transaction) at most. Default 5000: writes of 10,000 stored no
    /// faster and held more memory. (Was `max_batch_logs`,
    /// which read as if it bounded requests; the old name is accepted, with a warning, for one release.)
    #[serde(alias = "max_batch_logs")]
    pub max_write_logs: usize,
    /// Requests waiting for the embedded writer at most; beyond, 503 `queue_full`. Default 4096.
    pub embedded_capacity: usize,
    /// Shared backend: after a write that did not fill a whole read, a worker waits this long (ms) before
    /// reading again, so a trickle of small requests is written in few large COPYs. Adds at most this much
    /// to the time until a log is readable. Default 100.
    pub linger_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { shards: 4, lease_secs: 15, max_write_logs: 5_000, embedded_capacity: 4096, linger_ms: 100 }
    }
}

/// `[analytics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Seconds between rebuilds of the last hour's 5-minute buckets. Default 300.
    pub five_minute_secs: u64,
    /// Seconds between rebuilds of the last day's hourly buckets and error info. Default 900.
    pub hourly_secs: u64,
    /// Seconds between rebuilds of the last week's daily buckets. Default 3600.
    pub daily_secs: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig { five_minute_secs: 300, hourly_secs: 900, daily_secs: 3600 }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Seconds between retention runs. Default 3600.
    pub interval_secs: u64,
    /// Logs deleted per statement at most. Default 10000.
    pub batch_rows: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { interval_secs: 3600, batch_rows: 10_000 }
    }
}

/// `[alerts]`: alert rules' evaluation and delivery.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Seconds between evaluations of every enabled rule (by one instance with the jobs role per period).
    pub evaluate_interval_secs: u64,
    /// Accept channel URLs that resolve to loopback or private addresses (self-hosted receivers, tests).
    pub allow_private_targets: bool,
    /// The console's address as people reach it, for links in notifications. Empty: http://<server.http_addr>.
    pub console_url: String,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { evaluate_interval_secs: 5, allow_private_targets: false, console_url: String::new() }
    }
}

/// `[search]`: the search index behind `q` (pipeline/store/logs/search.rs).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Build the index (a job on one instance with the jobs role). Off: every `q` query scans its range,
    /// and an index built before is used up to where it stopped.
    pub index: bool,
    /// Seconds between indexing runs.
    pub index_interval_secs: u64,
    /// The share of each interval a run may spend indexing (0 < share ≤ 1): while ingestion outruns it,
    /// the index falls behind (`ledger_search_index_lag_seconds`) and the logs past it are scanned.
    pub index_share: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { index: true, index_interval_secs: 10, index_share: 0.25 }
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
    /// The ceilings as project settings, one per setting.
    pub fn project_settings(&self) -> ProjectSettings {
        ProjectSettings {
            rate_limit_per_minute: self.max_rate_limit_per_minute,
            rate_limit_per_hour: self.max_rate_limit_per_hour,
            daily_quota: self.max_daily_quota,
            retention_days: self.max_retention_days,
            max_queue_depth: self.max_queue_depth,
        }
    }
}

/// `[tail]`: live tail (`GET /v1/logs/tail`, gRPC `QueryService.Tail`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TailConfig {
    /// Subscribers per project on one instance at most; past it, 429.
    pub max_subscribers_per_project: usize,
    /// Commits' worth of logs a subscriber may have waiting at most; past it, logs are dropped for it, and it
    /// gets a `dropped` event with their count.
    pub buffer_entries: usize,
    /// Logs kept per tailed project (about: whole commits are kept or dropped) for subscribers that
    /// reconnect with `Last-Event-ID`.
    pub keep_logs: usize,
    /// Bytes of those logs kept per tailed project at most (embedded: they are in the daemon's memory).
    pub keep_bytes: usize,
    /// Bytes of logs one subscriber may have waiting at most; past it, logs are dropped for it (counted,
    /// and it gets a `dropped` event).
    pub max_buffer_bytes: usize,
    /// Subscribers on this instance at most, all projects together; past it, 429.
    pub max_subscribers: usize,
    /// Subscribers on this instance to the projects of one account at most; past it, 429.
    pub max_subscribers_per_account: usize,
    /// Logs a reconnecting subscriber is sent from those kept at most before the live ones.
    pub max_backlog_logs: usize,
    /// Seconds between heartbeats (an SSE comment) on a quiet stream.
    pub heartbeat_secs: u64,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            max_subscribers_per_project: 16,
            buffer_entries: 256,
            keep_logs: 20_000,
            keep_bytes: 64 * 1024 * 1024,
            max_buffer_bytes: 16 * 1024 * 1024,
            max_subscribers: 1024,
            max_subscribers_per_account: 64,
            max_backlog_logs: 10_000,
            heartbeat_secs: 15,
        }
    }
}

/// `[console]`: the web console the REST listener serves at `/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console (its page at `/`, its files and browser sessions under `/console/`).
    pub enabled: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig { enabled: true }
    }
}

/// `[syslog]`: the syslog front (RFC 5424 and RFC 3164 over TCP).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogConfig {
    /// TCP listener, e.g. `127.0.0.1:6514`. Empty (the default) = off.
    pub tcp_addr: String,
    /// TLS on that listener, with the server's certificate (`server.tls_cert_path` / `tls_key_path`).
    pub tls: bool,
    /// The API key for messages that carry none (devices that cannot add a `[ledger@41058 key="…"]`
    /// structured-data element). Empty = every message must carry its key.
    pub api_key: Secret,
    /// Connections open at once at most; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections open at once from one client address (an IPv6 /64) at most; past it, a new one from
    /// that address is closed at once.
    pub max_connections_per_address: usize,
    /// Bytes of one message (a line, or an octet-counted frame) at most; a longer one is cut there,
    /// stored with `attributes["syslog.truncated"] = true`.
    pub max_message_bytes: usize,
    /// Messages of one connection sent to the stack together at most.
    pub batch_logs: usize,
    /// Milliseconds a connection's messages wait for more before they go to the stack.
    pub linger_ms: u64,
    /// Seconds a connection may stay silent before it is closed.
    pub idle_timeout_secs: u64,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            tcp_addr: String::new(),
            tls: false,
            api_key: Secret::default(),
            max_connections: 256,
            max_connections_per_address: 16,
            max_message_bytes: 64 * 1024,
            batch_logs: 500,
            linger_ms: 200,
            idle_timeout_secs: 120,
        }
    }
}

/// `[stages.*]`: tuning of the ingestion stages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StagesConfig {
    pub auth: ledger_stages::auth::AuthConfig,
    pub validate: ledger_stages::validate::ValidateConfig,
    pub parse: ParseConfig,
    pub redact: RedactConfig,
    pub sample: SampleConfig,
}

/// `[stages.parse]`: rules for every project (each project may add its own, tried first).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParseConfig {
    pub rules: Vec<ledger_stages::parse::ParseRule>,
}

/// `[stages.redact]`: rules for every project (a project's own rules apply too, after these).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactConfig {
    /// The key of the `hash` action (HMAC-SHA256), at least 16 bytes; required when a rule (here or a
    /// project's) hashes. Changing it changes every hash from then on.
    pub hash_key: Secret,
    pub rules: Vec<ledger_stages::redact::RedactRule>,
}

/// `[stages.sample]`: drop and sample rules for every project (a project's own are tried first).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleConfig {
    pub rules: Vec<ledger_stages::sample::SampleRule>,
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

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
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

    fn check(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(format!("invalid configuration: {msg}")));
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            return fail(format!("auth.bcrypt_cost must be 4 to 31, not {}", self.auth.bcrypt_cost));
        }
        if self.auth.session_ttl_secs == 0 {
            return fail("auth.session_ttl_secs must be at least 1".into());
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
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < 32 {
            return fail("auth.jwt_secret must be at least 32 bytes".into());
        }
        if self.postgres.max_connections == 0 {
            return fail("postgres.max_connections must be at least 1".into());
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
        let limits = &self.limits;
        if limits.max_projects_per_account == 0
            || limits.max_alert_rules_per_project == 0
            || limits.max_query_rules_per_project == 0
        {
            return fail(
                "limits.max_projects_per_account, max_alert_rules_per_project and max_query_rules_per_project must \
                 be at least 1"
                    .into(),
            );
        }
        let server = &self.server;
        if server.max_connections == 0
            || server.max_connections_per_address == 0
            || server.idle_timeout_secs == 0
            || server.header_read_timeout_secs == 0
            || server.body_read_timeout_secs == 0
            || server.max_inflight_body_bytes < server.max_body_bytes
        {
            return fail(
                "server.max_connections, max_connections_per_address, header_read_timeout_secs, idle_timeout_secs \
                 and body_read_timeout_secs must be at least 1, \
                 and server.max_inflight_body_bytes at least server.max_body_bytes"
                    .into(),
            );
        }
        if !server.operator_token.is_empty() && server.operator_token.len() < 16 {
            return fail(
                "server.operator_token must be at least 16 bytes (or empty: operations endpoints open)".into(),
            );
        }
        if self.auth.login_max_failures == 0
            || self.auth.login_max_failures_per_email == 0
            || self.auth.attempts_per_ip_per_minute == 0
        {
            return fail("auth.login_max_failures, login_max_failures_per_email and attempts_per_ip_per_minute must be at least 1".into());
        }
        if !self.syslog.tcp_addr.is_empty() && self.syslog.tcp_addr.parse::<SocketAddr>().is_err() {
            return fail(format!("syslog.tcp_addr `{}` is not an address like 127.0.0.1:6514", self.syslog.tcp_addr));
        }
        if self.syslog.tls && self.server.tls_cert_path.is_empty() {
            return fail("syslog.tls needs server.tls_cert_path and server.tls_key_path".into());
        }
        if self.syslog.max_message_bytes < 480
            || self.syslog.batch_logs == 0
            || self.syslog.max_connections == 0
            || self.syslog.max_connections_per_address == 0
            || self.syslog.idle_timeout_secs == 0
        {
            return fail(
                "syslog.max_message_bytes must be at least 480 (RFC 5424's minimum), syslog.batch_logs, \
                 max_connections, max_connections_per_address and idle_timeout_secs at least 1"
                    .into(),
            );
        }
        if self.server.tls_cert_path.is_empty() != self.server.tls_key_path.is_empty() {
            return fail("server.tls_cert_path and server.tls_key_path go together: set both, or neither".into());
        }
        if let Some(problem) = self.ingest.problem() {
            return fail(problem);
        }
        if self.stages.validate.max_request_logs == 0 || self.queue.shards == 0 || self.queue.max_write_logs == 0 {
            return fail(
                "stages.validate.max_request_logs, queue.shards and queue.max_write_logs must be at least 1".into(),
            );
        }
        // Periods and leases of zero would spin a loop or expire at once: refused, never clamped where used.
        for (key, secs) in [
            ("queue.lease_secs", self.queue.lease_secs),
            ("analytics.five_minute_secs", self.analytics.five_minute_secs),
            ("analytics.hourly_secs", self.analytics.hourly_secs),
            ("analytics.daily_secs", self.analytics.daily_secs),
            ("retention.interval_secs", self.retention.interval_secs),
            ("alerts.evaluate_interval_secs", self.alerts.evaluate_interval_secs),
            ("tail.heartbeat_secs", self.tail.heartbeat_secs),
        ] {
            if secs == 0 {
                return fail(format!("{key} must be at least 1"));
            }
        }
        let share = self.search.index_share;
        if self.search.index_interval_secs == 0 || !(share > 0.0 && share <= 1.0) {
            return fail(format!(
                "search.index_interval_secs must be at least 1 and search.index_share within (0, 1], not {share}"
            ));
        }
        Ok(())
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
