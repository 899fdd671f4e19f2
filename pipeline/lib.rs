//! Ledger, the daemon. Its modules are layers whose imports only point down (docs/ARCHITECTURE.md; the
//! rule is checked by tests/architecture.rs):
//!
//! - [`app`]: wiring, start-up, shutdown, the command line. Nothing imports it.
//! - [`fronts`]: one module per protocol (REST with the console, gRPC, OTLP, Loki, Elasticsearch, syslog)
//!   on a shared base; each decodes into the core's types and encodes its answers. Nothing but `app`
//!   imports it.
//! - the typed core: [`ingest`], [`query`], [`accounts`], [`alerts`]: one type per question, parsed and validated once,
//!   answered by one function, whichever front asked.
//! - [`jobs`] (the scheduler and its periodic jobs) and [`queue`] (the durable queue and its workers).
//! - [`store`]: the ports (log read and write, analytics cache, accounts) and their PostgreSQL, SQLite,
//!   Redis and in-process implementations.
//! - leaves every layer may use: [`config`], [`error`], [`telemetry`], [`metrics`].
//!
//! The ingestion stages themselves live in the `ledger-stages` crate and know nothing of transports or
//! databases; this crate implements their storage traits and assembles them.

pub mod accounts;
pub mod alerts;
pub mod app;
pub mod config;
pub mod error;
pub mod fronts;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod query;
pub mod queue;
pub mod store;
pub mod telemetry;
