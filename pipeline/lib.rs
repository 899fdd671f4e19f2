//! Ledger, the daemon: configuration, the backends, the REST and gRPC fronts, and their wiring.
//!
//! The ingestion stages themselves live in the `ledger-stages` crate and know nothing of transports or
//! databases; this crate implements their storage traits and assembles them.

pub mod accounts;
pub mod analytics;
pub mod backend;
pub mod cli;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod logs;
pub mod observe;
pub mod queue;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod tls;
