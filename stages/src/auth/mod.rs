//! The auth stage: an API key in, a [`ProjectContext`](crate::ProjectContext) out.
//!
//! - [`key`]: the key format. `ledger_` + 32 base62 characters, the last 6 a checksum of the rest, so a
//!   mistyped or truncated key is refused without touching storage. Only SHA-256 of a key is ever stored
//!   or used as a cache key: a random 155-bit key needs no slow hash.
//! - [`validator`]: resolves a key through an in-process cache (seconds), the shared cache (minutes) and
//!   the account store, with negative caching for unknown keys, and forgets a key everywhere at once when
//!   it is revoked.
//!
//! This module must never log a key: log its `prefix` or its key id.

pub mod breaker;
pub mod config;
pub mod key;
pub mod stage;
pub mod validator;

pub use breaker::{BreakerSettings, BreakerState, BreakerStore};
pub use config::AuthConfig;
pub use key::{ApiKey, KeyDigest, KeyFormatError};
pub use stage::{Authenticate, authenticate};
pub use validator::{
    AuthError, CachedKey, KeyStore, KeyValidator, SharedKeyCache, StoreUnavailable, ValidatorCounts, ValidatorSettings,
};
