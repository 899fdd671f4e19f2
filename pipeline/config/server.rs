//! `[server]` (the listeners), `[roles]`, `[telemetry]` and `[console]`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;

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
    #[serde(rename = "shutdown_timeout_secs", deserialize_with = "super::secs")]
    pub shutdown_timeout: Duration,
    /// On SIGTERM, how long the listeners stay open answering new ingestion 503 (and `/health` 503, so
    /// load balancers take the instance out) before they close. Requests begun before are finished.
    #[serde(rename = "shutdown_drain_ms", deserialize_with = "super::millis")]
    pub shutdown_drain: Duration,
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
    #[serde(rename = "header_read_timeout_secs", deserialize_with = "super::secs")]
    pub header_read_timeout: Duration,
    /// Seconds an HTTP/2 connection (REST or gRPC) may stay open with no request in flight before it is
    /// closed (a GOAWAY; clients reconnect when they next need to).
    #[serde(rename = "idle_timeout_secs", deserialize_with = "super::secs")]
    pub idle_timeout: Duration,
    /// Seconds for a whole request body to arrive once its handler reads it; slower is 408.
    #[serde(rename = "body_read_timeout_secs", deserialize_with = "super::secs")]
    pub body_read_timeout: Duration,
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
            shutdown_timeout: Duration::from_secs(30),
            shutdown_drain: Duration::from_millis(500),
            tls_cert_path: String::new(),
            tls_key_path: String::new(),
            max_connections: 1024,
            max_connections_per_address: 128,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_inflight_body_bytes: 256 * 1024 * 1024,
            operator_token: Secret::default(),
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

impl ServerConfig {
    /// Why `[server]` is unusable, if it is.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0
            || self.max_connections_per_address == 0
            || self.idle_timeout.is_zero()
            || self.header_read_timeout.is_zero()
            || self.body_read_timeout.is_zero()
            || self.max_inflight_body_bytes < self.max_body_bytes
        {
            return Err("server.max_connections, max_connections_per_address, header_read_timeout_secs, \
                        idle_timeout_secs and body_read_timeout_secs must be at least 1, \
                        and server.max_inflight_body_bytes at least server.max_body_bytes"
                .into());
        }
        if !self.operator_token.is_empty() && self.operator_token.len() < 16 {
            return Err("server.operator_token must be at least 16 bytes (or empty: operations endpoints open)".into());
        }
        if self.tls_cert_path.is_empty() != self.tls_key_path.is_empty() {
            return Err("server.tls_cert_path and server.tls_key_path go together: set both, or neither".into());
        }
        Ok(())
    }
}
