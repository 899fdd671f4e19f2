//! `GET /metrics`: Prometheus text format. Names come from this one place.
//!
//! What is here so far: ingestion outcomes per log and the queue depth. Request histograms, cache hit
//! ratios, breaker state and pool use are issue 5's.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

/// Logs by the outcome they ended in.
pub const INGEST_LOGS: &str = "ledger_ingest_logs_total";
/// Logs waiting in the queue, all projects together.
pub const QUEUE_DEPTH: &str = "ledger_queue_depth";

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {INGEST_LOGS} Logs received, by the one outcome each ended in.");
    let _ = writeln!(out, "# TYPE {INGEST_LOGS} counter");
    for (outcome, count) in state.ingestion.outcomes.totals() {
        let _ = writeln!(out, "{INGEST_LOGS}{{outcome=\"{}\"}} {count}", outcome.name());
    }
    if let Ok(depth) = state.queue.depth().await {
        let _ = writeln!(out, "# HELP {QUEUE_DEPTH} Logs acknowledged and not yet written.");
        let _ = writeln!(out, "# TYPE {QUEUE_DEPTH} gauge");
        let _ = writeln!(out, "{QUEUE_DEPTH} {depth}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
