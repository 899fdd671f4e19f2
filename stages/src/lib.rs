//! Ledger's ingestion stages.
//!
//! Each stage is a tower `Layer` + `Service` in a module of its own, independent of the transport (REST or
//! gRPC decode into the same request type) and of the storage backend (a stage that needs storage names a
//! small trait here and the daemon in `pipeline/` implements it for PostgreSQL/Redis and for SQLite).
//!
//! This crate must never depend on a transport or a database driver.

pub mod auth;
pub mod context;

pub use context::{ProjectContext, ProjectSettings, Scope};
