//! `GET /metrics`: Prometheus text format. Every name is in [`crate::metrics`]: the registry's series
//! (request durations, writes, jobs, …) and the gauges read at each scrape from the core
//! ([`crate::query::operations`], the ingestion outcomes, the key validations), which this front encodes.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::fronts::base::AppState;
use crate::metrics::{
    BREAKER_STATE, INGEST_LOGS, INGEST_REQUESTS, KEY_VALIDATIONS, POOL_CONNECTIONS, QUEUE_DEPTH, QUEUE_SHARD_ENTRIES,
    QUEUE_SHARD_LAG, REDACTIONS, REDIS_FAILING_FAST, REPLICA_LAG,
};

/// Times a matched route's request.
pub(crate) async fn track(
    path: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (route, method) = (path.as_str().to_owned(), request.method().as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::metrics::metrics().request_served(&route, &method, response.status().as_u16(), started.elapsed());
    response
}

pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {INGEST_LOGS} Logs received, by front and the one outcome each ended in.");
    let _ = writeln!(out, "# TYPE {INGEST_LOGS} counter");
    for (front, outcome, count) in state.ingestion.outcomes.totals() {
        let _ = writeln!(out, "{INGEST_LOGS}{{front=\"{}\",outcome=\"{}\"}} {count}", front.name(), outcome.name());
    }
    let _ = writeln!(out, "# HELP {INGEST_REQUESTS} Ingestion requests, by front and the one outcome each ended in.");
    let _ = writeln!(out, "# TYPE {INGEST_REQUESTS} counter");
    for (front, outcome, count) in state.ingestion.outcomes.requests() {
        let (front, outcome) = (front.name(), outcome.name());
        let _ = writeln!(out, "{INGEST_REQUESTS}{{front=\"{front}\",outcome=\"{outcome}\"}} {count}");
    }
    let ops = crate::query::operations::read(&state.backend, state.queue.as_ref(), &state.breaker).await;
    if let Some(depth) = ops.queue_depth {
        let _ = writeln!(out, "# HELP {QUEUE_DEPTH} Logs acknowledged and not yet written.");
        let _ = writeln!(out, "# TYPE {QUEUE_DEPTH} gauge");
        let _ = writeln!(out, "{QUEUE_DEPTH} {depth}");
    }
    if !ops.shards.is_empty() {
        let _ = writeln!(out, "# HELP {QUEUE_SHARD_ENTRIES} Batches waiting in each queue shard.");
        let _ = writeln!(out, "# TYPE {QUEUE_SHARD_ENTRIES} gauge");
        for s in &ops.shards {
            let _ = writeln!(out, "{QUEUE_SHARD_ENTRIES}{{shard=\"{}\"}} {}", s.shard, s.entries);
        }
        let _ = writeln!(out, "# HELP {QUEUE_SHARD_LAG} How long each shard's oldest batch has waited.");
        let _ = writeln!(out, "# TYPE {QUEUE_SHARD_LAG} gauge");
        for s in &ops.shards {
            let _ = writeln!(out, "{QUEUE_SHARD_LAG}{{shard=\"{}\"}} {}", s.shard, s.lag.as_secs_f64());
        }
    }
    let counts = state.accounts.validator().counts();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (all, misses, shared) = (load(&counts.validations), load(&counts.local_misses), load(&counts.shared_hits));
    let redactions = ledger_stages::redact::counts();
    if !redactions.is_empty() {
        let _ = writeln!(out, "# HELP {REDACTIONS} Values the redact stage scrubbed, by rule name.");
        let _ = writeln!(out, "# TYPE {REDACTIONS} counter");
        for (rule, count) in redactions {
            let rule = rule.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = writeln!(out, "{REDACTIONS}{{rule=\"{rule}\"}} {count}");
        }
    }
    let _ = writeln!(out, "# HELP {KEY_VALIDATIONS} API key validations by where they were answered.");
    let _ = writeln!(out, "# TYPE {KEY_VALIDATIONS} counter");
    let _ = writeln!(out, "{KEY_VALIDATIONS}{{answered_by=\"local_cache\"}} {}", all.saturating_sub(misses));
    let _ = writeln!(out, "{KEY_VALIDATIONS}{{answered_by=\"shared_cache\"}} {shared}");
    let _ = writeln!(out, "{KEY_VALIDATIONS}{{answered_by=\"store\"}} {}", misses.saturating_sub(shared));
    let breaker = match ops.breaker {
        ledger_stages::auth::BreakerState::Closed => 0,
        ledger_stages::auth::BreakerState::HalfOpen => 1,
        ledger_stages::auth::BreakerState::Open => 2,
    };
    let _ = writeln!(out, "# HELP {BREAKER_STATE} The account store's circuit breaker: 0 closed, 1 half-open, 2 open.");
    let _ = writeln!(out, "# TYPE {BREAKER_STATE} gauge");
    let _ = writeln!(out, "{BREAKER_STATE} {breaker}");
    let _ = writeln!(out, "# HELP {POOL_CONNECTIONS} Database pool connections.");
    let _ = writeln!(out, "# TYPE {POOL_CONNECTIONS} gauge");
    for (pool, (open, idle)) in ops.pools {
        let _ = writeln!(out, "{POOL_CONNECTIONS}{{pool=\"{pool}\",state=\"open\"}} {open}");
        let _ = writeln!(out, "{POOL_CONNECTIONS}{{pool=\"{pool}\",state=\"idle\"}} {idle}");
    }
    if let Some(failing_fast) = ops.redis_failing_fast {
        let _ =
            writeln!(out, "# HELP {REDIS_FAILING_FAST} 1 while Redis commands fail fast because Redis did not answer.");
        let _ = writeln!(out, "# TYPE {REDIS_FAILING_FAST} gauge");
        let _ = writeln!(out, "{REDIS_FAILING_FAST} {}", u8::from(failing_fast));
    }
    if let Some(lag) = ops.replica_lag {
        let _ = writeln!(out, "# HELP {REPLICA_LAG} How far the logs' read replica's replay is behind.");
        let _ = writeln!(out, "# TYPE {REPLICA_LAG} gauge");
        let _ = writeln!(out, "{REPLICA_LAG} {lag}");
    }
    out.push_str(&crate::metrics::metrics().encode());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
