//! `GET /metrics`: Prometheus text format. Names come from this one place.
//!
//! Request durations, write batches and process figures come from the registry in `crate::observe`; the
//! gauges below are read at scrape time. Names come from these two places only.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::fronts::base::AppState;

/// Logs by the outcome they ended in.
pub const INGEST_LOGS: &str = "ledger_ingest_logs_total";
/// Ingestion requests by the one outcome each ended in (refused before decoding: no logs counted).
pub const INGEST_REQUESTS: &str = "ledger_ingest_requests_total";
/// Logs waiting in the queue, all projects together.
pub const QUEUE_DEPTH: &str = "ledger_queue_depth";
/// Batches waiting in each queue shard (shared backend).
pub const QUEUE_SHARD_ENTRIES: &str = "ledger_queue_shard_entries";
/// How long each shard's oldest batch has waited (shared backend).
pub const QUEUE_SHARD_LAG: &str = "ledger_queue_shard_lag_seconds";
/// Key validations by where they were answered.
pub const KEY_VALIDATIONS: &str = "ledger_key_validations_total";
/// The account store's circuit breaker: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "ledger_account_store_breaker_state";
/// 1 while Redis commands fail fast (Redis did not answer), else 0 (shared backend).
pub const REDIS_FAILING_FAST: &str = "ledger_redis_failing_fast";
pub const REPLICA_LAG: &str = "ledger_postgres_replica_lag_seconds";
/// Database pool connections by pool and state.
pub const POOL_CONNECTIONS: &str = "ledger_pool_connections";

/// Times a matched route's request.
pub async fn track(
    path: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (route, method) = (path.as_str().to_owned(), request.method().as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    crate::observe::metrics()
        .http_duration
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
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
    if let Ok(depth) = state.queue.depth().await {
        let _ = writeln!(out, "# HELP {QUEUE_DEPTH} Logs acknowledged and not yet written.");
        let _ = writeln!(out, "# TYPE {QUEUE_DEPTH} gauge");
        let _ = writeln!(out, "{QUEUE_DEPTH} {depth}");
    }
    if let Ok(shards) = state.queue.shards().await
        && !shards.is_empty()
    {
        let _ = writeln!(out, "# HELP {QUEUE_SHARD_ENTRIES} Batches waiting in each queue shard.");
        let _ = writeln!(out, "# TYPE {QUEUE_SHARD_ENTRIES} gauge");
        for s in &shards {
            let _ = writeln!(out, "{QUEUE_SHARD_ENTRIES}{{shard=\"{}\"}} {}", s.shard, s.entries);
        }
        let _ = writeln!(out, "# HELP {QUEUE_SHARD_LAG} How long each shard's oldest batch has waited.");
        let _ = writeln!(out, "# TYPE {QUEUE_SHARD_LAG} gauge");
        for s in &shards {
            let _ = writeln!(out, "{QUEUE_SHARD_LAG}{{shard=\"{}\"}} {}", s.shard, s.lag.as_secs_f64());
        }
    }
    let counts = state.accounts.validator().counts();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (all, misses, shared) = (load(&counts.validations), load(&counts.local_misses), load(&counts.shared_hits));
    let redactions = ledger_stages::redact::counts();
    if !redactions.is_empty() {
        let _ = writeln!(out, "# HELP ledger_redactions_total Values the redact stage scrubbed, by rule name.");
        let _ = writeln!(out, "# TYPE ledger_redactions_total counter");
        for (rule, count) in redactions {
            let rule = rule.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = writeln!(out, "ledger_redactions_total{{rule=\"{rule}\"}} {count}");
        }
    }
    let _ = writeln!(out, "# HELP {KEY_VALIDATIONS} API key validations by where they were answered.");
    let _ = writeln!(out, "# TYPE {KEY_VALIDATIONS} counter");
    let _ = writeln!(out, "{KEY_VALIDATIONS}{{answered_by=\"local_cache\"}} {}", all.saturating_sub(misses));
    let _ = writeln!(out, "{KEY_VALIDATIONS}{{answered_by=\"shared_cache\"}} {shared}");
    let _ = writeln!(out, "{KEY_VALIDATIONS}{{answered_by=\"store\"}} {}", misses.saturating_sub(shared));
    let breaker = match state.breaker.state() {
        ledger_stages::auth::BreakerState::Closed => 0,
        ledger_stages::auth::BreakerState::HalfOpen => 1,
        ledger_stages::auth::BreakerState::Open => 2,
    };
    let _ = writeln!(out, "# HELP {BREAKER_STATE} The account store's circuit breaker: 0 closed, 1 half-open, 2 open.");
    let _ = writeln!(out, "# TYPE {BREAKER_STATE} gauge");
    let _ = writeln!(out, "{BREAKER_STATE} {breaker}");
    let _ = writeln!(out, "# HELP {POOL_CONNECTIONS} Database pool connections.");
    let _ = writeln!(out, "# TYPE {POOL_CONNECTIONS} gauge");
    for (pool, (open, idle)) in
        [("accounts", state.backend.accounts.pool_usage()), ("logs", state.backend.logs.pool_usage())]
    {
        let _ = writeln!(out, "{POOL_CONNECTIONS}{{pool=\"{pool}\",state=\"open\"}} {open}");
        let _ = writeln!(out, "{POOL_CONNECTIONS}{{pool=\"{pool}\",state=\"idle\"}} {idle}");
    }
    if let Some(redis) = &state.backend.redis {
        let _ =
            writeln!(out, "# HELP {REDIS_FAILING_FAST} 1 while Redis commands fail fast because Redis did not answer.");
        let _ = writeln!(out, "# TYPE {REDIS_FAILING_FAST} gauge");
        let _ = writeln!(out, "{REDIS_FAILING_FAST} {}", u8::from(redis.failing_fast()));
    }
    if let crate::store::LogDb::Postgres(logs) = &state.backend.logs {
        let lag = tokio::time::timeout(std::time::Duration::from_secs(1), logs.replica_lag()).await;
        if let Ok(Ok(Some(lag))) = lag {
            let _ = writeln!(out, "# HELP {REPLICA_LAG} How far the logs' read replica's replay is behind.");
            let _ = writeln!(out, "# TYPE {REPLICA_LAG} gauge");
            let _ = writeln!(out, "{REPLICA_LAG} {lag}");
        }
    }
    out.push_str(&crate::observe::metrics().encode());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
