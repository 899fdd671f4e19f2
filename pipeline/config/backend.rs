//! `[backend]`, `[postgres]` and `[redis]`: where data lives.

use std::path::PathBuf;

use std::time::Duration;

use serde::Deserialize;

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
    #[serde(rename = "connect_timeout_secs", deserialize_with = "super::secs")]
    pub connect_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            auth_url: "postgres://postgres@127.0.0.1:5432/ledger_auth".into(),
            logs_url: "postgres://postgres@127.0.0.1:5432/ledger_logs".into(),
            logs_read_url: String::new(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
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
    #[serde(rename = "timeout_secs", deserialize_with = "super::secs")]
    pub timeout: Duration,
    /// Replicas that must hold a batch before its 202 (`WAIT`), so that a failover to one of them loses no
    /// acknowledged log. 0: the 202 follows the primary's write.
    pub min_replicas_acked: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "ledger:".into(),
            timeout: Duration::from_secs(2),
            min_replicas_acked: 0,
        }
    }
}

impl PostgresConfig {
    /// Why `[postgres]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("postgres.max_connections must be at least 1".into());
        }
        Ok(())
    }
}
