//! `X-Request-ID`: the client's value when it sent a sane one, else a new UUIDv7; echoed on every response,
//! carried by the request's span (so every log line of the request has it), and readable from anywhere in
//! the request's task, which is how error bodies get it.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `future` as the work of request `id` (for fronts other than HTTP).
pub(crate) async fn scope<F: std::future::Future>(id: String, future: F) -> F::Output {
    REQUEST_ID.scope(id, future).await
}

/// The id of the request this task serves, if any.
pub(crate) fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The request's id: the client's `x-request-id` when it is acceptable, else a new UUIDv7.
pub(crate) fn of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

/// A client's id is kept when it is 1 to 128 visible ASCII characters; anything else is replaced, so a
/// request id can never inject into headers or log lines.
fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The route of a compatibility front's ingestion request, which names its span beside the method (Ledger's
/// own routes are named by the method alone).
fn front_route(path: &str) -> Option<&'static str> {
    match path {
        "/otlp/v1/logs" => Some("/otlp/v1/logs"),
        "/loki/api/v1/push" => Some("/loki/api/v1/push"),
        "/_bulk" => Some("/_bulk"),
        _ if path.ends_with("/_bulk") => Some("/{index}/_bulk"),
        _ => None,
    }
}

pub(crate) async fn middleware(request: Request, next: Next) -> Response {
    let id = of(request.headers());
    let (method, path) = (request.method().as_str(), request.uri().path());
    let name = front_route(path).map_or_else(|| method.to_owned(), |route| format!("{method} {route}"));
    let span = crate::telemetry::request_span(&name, path, &id, request.headers());
    let started = Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request).instrument(span.clone())).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The access log: refusals and failures at info and above; successes, which /metrics counts, at debug,
    // so a busy instance does not spend its time writing a line per accepted request.
    span.in_scope(|| match status {
        500.. => tracing::warn!(status, latency_ms, "request finished"),
        400.. => tracing::info!(status, latency_ms, "request finished"),
        _ => tracing::debug!(status, latency_ms, "request finished"),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(acceptable("abc-123"));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable(&"x".repeat(129)));
        assert!(!acceptable("new\nline"));
    }
}
