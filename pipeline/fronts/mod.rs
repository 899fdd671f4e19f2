//! The fronts: one module per protocol. Each authenticates from headers or metadata, decodes into the
//! core's types, calls the core, and encodes the answer in its protocol's own form; nothing else.
//!
//! Adding a protocol is a module here, a mapping into the core's types, and a line in `app`'s wiring.

pub mod elastic;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod loki;
pub mod otlp;
pub mod syslog;

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
