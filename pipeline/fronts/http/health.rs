//! `/health` (the process serves) and `/health/deep` (each dependency, with its latency).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::fronts::base::AppState;

/// A dependency that does not answer within this is down, as far as a health check is concerned.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health),
    (status = 503, body = Health, description = "Shutting down: `{\"status\": \"shutting_down\"}`")))]
pub(crate) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    if state.ingestion.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "shutting_down" }));
    }
    (StatusCode::OK, Json(Health { status: "ok" }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// `ok` or `down`.
    status: &'static str,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The read replica's replay lag, in seconds (`replica` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_seconds: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeepHealth {
    /// `ok` when every check passes, `down` when none does, `degraded` otherwise.
    status: &'static str,
    checks: Checks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    #[serde(flatten)]
    dependencies: BTreeMap<&'static str, Check>,
    queue: QueueCheck,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueCheck {
    /// `ok`, or `down` when the depth cannot be read.
    status: &'static str,
    /// Logs waiting to be written, all projects together.
    depth: Option<u64>,
    /// How long the oldest waiting batch has waited, in seconds (shared backend; 0 when none waits).
    lag_seconds: Option<f64>,
}

#[utoipa::path(get, path = "/health/deep", tag = "operations",
    responses((status = 200, body = DeepHealth), (status = 503, body = DeepHealth, description = "A dependency is down")))]
pub(crate) async fn deep(State(state): State<AppState>) -> (StatusCode, Json<DeepHealth>) {
    let runs = state.backend.checks.iter().map(|(name, check)| async move {
        let started = Instant::now();
        let result = tokio::time::timeout(CHECK_TIMEOUT, check.lag_seconds()).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (lag_seconds, error) = match result {
            Ok(Ok(lag)) => (lag, None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (None, Some(format!("no answer within {CHECK_TIMEOUT:?}"))),
        };
        let status = if error.is_none() { "ok" } else { "down" };
        (*name, Check { status, latency_ms, error, lag_seconds })
    });
    let dependencies: BTreeMap<_, _> = futures::future::join_all(runs).await.into_iter().collect();
    let depth = tokio::time::timeout(CHECK_TIMEOUT, state.queue.depth()).await.ok().and_then(Result::ok);
    let shards = tokio::time::timeout(CHECK_TIMEOUT, state.queue.shards()).await.ok().and_then(Result::ok);
    let lag_seconds =
        shards.filter(|s| !s.is_empty()).map(|s| s.iter().map(|b| b.lag).max().unwrap_or_default().as_secs_f64());
    let queue = QueueCheck { status: if depth.is_some() { "ok" } else { "down" }, depth, lag_seconds };
    let down = dependencies.values().filter(|c| c.status != "ok").count() + usize::from(depth.is_none());
    let (status, code) = match down {
        0 => ("ok", StatusCode::OK),
        n if n == dependencies.len() + 1 => ("down", StatusCode::SERVICE_UNAVAILABLE),
        _ => ("degraded", StatusCode::SERVICE_UNAVAILABLE),
    };
    (code, Json(DeepHealth { status, checks: Checks { dependencies, queue } }))
}
