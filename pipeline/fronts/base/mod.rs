//! What every front stands on, REST included: the services a handler calls ([`AppState`]), the accept loop
//! ([`listen`]), reading and admitting a body ([`body`]), credentials and read access ([`credential`]),
//! request ids ([`request_id`]), the operator token ([`operator`]), and API.md's shared formats. Nothing here
//! names a protocol module: every protocol depends on the base, never on another protocol.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;

pub mod body;
pub mod credential;
pub mod listen;
pub mod operator;
pub mod request_id;
pub mod rpc;
mod state;

pub use state::{AppState, ConsoleSettings, FrontServices};

/// API.md's timestamps: RFC 3339, UTC, microseconds.
pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Ids in paths are opaque: one that is not a UUID names nothing, so it is a 404 like any unknown id.
pub(crate) fn path_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// The first few of a request's refused records, for a protocol that answers in one line of text (OTLP's
/// `partial_success` and error status, Loki's error body): `"entry 3: message must not be empty; …"`, each
/// refusal as (index, field, reason), `item` naming a record in the protocol's words.
pub(crate) fn refusals<'a>(
    problems: impl ExactSizeIterator<Item = (Option<usize>, &'a str, &'a str)>,
    item: &str,
) -> String {
    const LISTED: usize = 5;
    let total = problems.len();
    let listed: Vec<String> = problems
        .take(LISTED)
        .map(|(index, field, reason)| format!("{item} {}: {field} {reason}", index.unwrap_or_default()))
        .collect();
    let more = if total > listed.len() { "; …" } else { "" };
    format!("{}{more}", listed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_microseconds_and_z() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T08:00:00.123456789+00:00").expect("valid").to_utc();
        assert_eq!(timestamp(&t), "2026-11-27T08:00:00.123456Z");
    }
}
