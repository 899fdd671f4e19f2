//! The fronts: one module per protocol. Each authenticates from headers or metadata, decodes into the
//! core's types, calls the core, and encodes the answer in its protocol's own form; nothing else.
//!
//! Every protocol stands on [`base`] (the services, the accept loop, bodies, credentials, request ids) and
//! never on another protocol; [`serve`] puts the HTTP fronts' routes on one listener.
//!
//! Adding a protocol is a module here, a mapping into the core's types, and a line in `app`'s wiring.

pub mod base;
pub mod elastic;
pub mod grpc;
pub mod http;
pub mod loki;
pub mod otlp;
pub mod serve;
pub mod syslog;
