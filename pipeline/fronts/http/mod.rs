//! The REST front (axum): `/v1/…`, `/health`, `/metrics`, `/openapi.json` and the console. Handlers decode,
//! call the core (`accounts`, the ingestion stack, query, alerts), and encode; every error is an
//! [`ApiError`](crate::error::ApiError). [`crate::fronts::serve`] serves these routes with the other HTTP
//! fronts' on one listener.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};

use crate::fronts::base::AppState;
use crate::fronts::base::operator;

pub mod accounts;
pub mod alerts;
pub mod analytics;
pub mod console;
pub mod error;
pub mod extract;
pub mod health;
pub mod ingest;
pub mod keys;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod projects;
pub mod tail;

/// Account and project bodies are small; ingestion has its own, configurable limit.
pub const ACCOUNT_BODY_LIMIT: usize = 64 * 1024;

/// The REST routes (the console's among them when it is enabled), without the layers every HTTP answer gets
/// ([`crate::fronts::serve::router`] adds those).
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let console = state.console.enabled;
    let operator = || middleware::from_fn_with_state(state.operator.clone(), operator::required);
    Router::new()
        .merge(if console { console::routes() } else { Router::new() })
        .route("/v1/register", post(accounts::register))
        .route("/v1/login", post(accounts::login))
        .route("/v1/logout", post(accounts::logout))
        .route("/v1/me", get(accounts::me))
        .route("/v1/projects", post(projects::create).get(projects::list))
        .route("/v1/projects/{id}", get(projects::get).patch(projects::update).delete(projects::delete))
        .route("/v1/projects/{id}/keys", post(keys::create).get(keys::list))
        .route("/v1/projects/{id}/keys/{key_id}", delete(keys::revoke))
        .route("/v1/projects/{id}/alerts", post(alerts::create).get(alerts::list))
        .route("/v1/projects/{id}/alerts/{alert_id}", get(alerts::get).patch(alerts::update).delete(alerts::delete))
        .route("/v1/projects/{id}/alerts/{alert_id}/test", post(alerts::test))
        .route("/v1/projects/{id}/alerts/{alert_id}/deliveries", get(alerts::deliveries))
        // Ingestion reads its body itself, with its own (configurable) limit.
        .route("/v1/logs", post(ingest::ingest).get(logs::list).layer(DefaultBodyLimit::disable()))
        .route("/v1/logs/tail", get(tail::tail))
        .route("/v1/logs/{id}", get(logs::get))
        .route("/v1/metrics/error-rate", get(analytics::error_rate))
        .route("/v1/metrics/volume", get(analytics::volume))
        .route("/v1/metrics/top-errors", get(analytics::top_errors))
        .route("/v1/usage", get(analytics::usage))
        .route("/health", get(health::health))
        .route("/health/deep", get(health::deep).route_layer(operator()))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics::metrics).route_layer(operator()))
}
