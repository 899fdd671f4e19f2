//! Ledger's ingestion stages.
//!
//! Each stage is a tower `Layer` + `Service` in a module of its own, independent of the transport (REST or
//! gRPC decode into the same [`Ingest`] request) and of the storage backend (a stage that needs storage
//! names a small trait here, and the daemon in `pipeline/` implements it for PostgreSQL/Redis and for
//! SQLite). The order of the stack, outermost first:
//!
//! `auth → rate_limit → quota → validate → parse → redact → enrich → fingerprint → sample → queue`
//!
//! Parse, redact and sample run rules operators configure (see [`rules`]); with none, they cost a check.
//!
//! This crate must never depend on a transport or a database driver.

pub mod auth;
pub mod compile;
pub mod context;
pub mod enrich;
pub mod fingerprint;
pub mod log;
pub mod parse;
pub mod queue;
pub mod quota;
pub mod rate_limit;
pub mod raw;
pub mod redact;
pub mod request;
pub mod rules;
pub mod sample;
pub mod stage;
#[cfg(test)]
mod testing;
pub mod validate;

pub use context::{ProjectContext, ProjectSettings, Scope, SettingsPatch};
pub use log::{Level, LogRecord};
pub use raw::RawLog;
pub use request::{Accepted, Ingest, IngestError, Problem, Protocol, RateLimitStatus, Removed, Report};
