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

/// A fieldless enum whose variants each have a name, listed once: the enum, `ALL` (in declaration order),
/// `name()` and `index()` (the place in `ALL`: the declaration order itself) all come from the one list,
/// so a new variant cannot be missing from any of them.
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// The variant's name, as metrics, spans and configuration say it.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The variant's place in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

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
