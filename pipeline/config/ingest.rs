//! `[ingest]` (the stages of the stack), `[queue]`, `[syslog]` and `[stages.*]`.

use std::net::SocketAddr;

use std::time::Duration;

use serde::Deserialize;

use super::Secret;

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
    pub(crate) fn required(self) -> bool {
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
    /// Why `[ingest]` (its stage list) is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let order = || Stage::ALL.map(Stage::name).join(" → ");
        if let Some(missing) = Stage::ALL.iter().find(|s| s.required() && !self.stages.contains(s)) {
            return Err(format!("ingest.stages: `{}` cannot be left out", missing.name()));
        }
        if self.stages.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("ingest.stages: stages run in the order {}, each once", order()));
        }
        Ok(())
    }

    pub(crate) fn has(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Redis stream shards (shared backend). Each is written by one worker at a time; more shards, more
    /// parallel COPY streams.
    pub shards: u32,
    /// Seconds a worker's lease on a shard lasts without renewal; another instance takes the shard over
    /// after it lapses.
    #[serde(rename = "lease_secs", deserialize_with = "super::secs")]
    pub lease: Duration,
    /// Logs per write (one COPY, or one SQLite transaction) at most: writes of 10,000 stored no
    /// faster and held more memory. (Was `max_batch_logs`,
    /// which read as if it bounded requests; the old name is accepted, with a warning, for one release.)
    #[serde(alias = "max_batch_logs")]
    pub max_write_logs: usize,
    /// Requests waiting for the embedded writer at most; beyond, 503 `queue_full`.
    pub embedded_capacity: usize,
    /// Shared backend: after a write that did not fill a whole read, a worker waits this long (ms) before
    /// reading again, so a trickle of small requests is written in few large COPYs. Adds at most this much
    /// to the time until a log is readable.
    #[serde(rename = "linger_ms", deserialize_with = "super::millis")]
    pub linger: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            shards: 4,
            lease: Duration::from_secs(15),
            max_write_logs: 5_000,
            embedded_capacity: 4096,
            linger: Duration::from_millis(100),
        }
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
    #[serde(rename = "linger_ms", deserialize_with = "super::millis")]
    pub linger: Duration,
    /// Seconds a connection may stay silent before it is closed.
    #[serde(rename = "idle_timeout_secs", deserialize_with = "super::secs")]
    pub idle_timeout: Duration,
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
            linger: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(120),
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

impl QueueConfig {
    /// Why `[queue]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.shards == 0 || self.max_write_logs == 0 {
            return Err("queue.shards and queue.max_write_logs must be at least 1".into());
        }
        super::at_least_one_sec(&[("queue.lease_secs", self.lease)])
    }
}

impl SyslogConfig {
    /// Why `[syslog]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !self.tcp_addr.is_empty() && self.tcp_addr.parse::<SocketAddr>().is_err() {
            return Err(format!("syslog.tcp_addr `{}` is not an address like 127.0.0.1:6514", self.tcp_addr));
        }
        if self.max_message_bytes < 480
            || self.batch_logs == 0
            || self.max_connections == 0
            || self.max_connections_per_address == 0
            || self.idle_timeout.is_zero()
        {
            return Err("syslog.max_message_bytes must be at least 480 (RFC 5424's minimum), syslog.batch_logs, \
                        max_connections, max_connections_per_address and idle_timeout_secs at least 1"
                .into());
        }
        Ok(())
    }
}
