//! The REST front (axum). Handlers decode, call the domain (`accounts`, the ingestion stack, query), and
//! encode; every error is an [`ApiError`](crate::error::ApiError).

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use tower_http::catch_panic::CatchPanicLayer;
use uuid::Uuid;

use crate::accounts::Accounts;
use crate::error::ApiError;
use crate::store::Backend;

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
pub mod operator;
pub mod projects;
pub mod request_id;
pub mod serve;
pub mod tail;

/// Account and project bodies are small; ingestion has its own, configurable limit.
pub const ACCOUNT_BODY_LIMIT: usize = 64 * 1024;

/// What the handlers of every front use. Axum clones the state for each request: one shared allocation
/// makes that one reference count instead of one per service (the profile of single-log requests had the
/// clone and drop of the whole struct at ~6% of the daemon's time).
#[derive(Clone)]
pub struct AppState(Arc<FrontServices>);

impl AppState {
    pub fn new(services: FrontServices) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = FrontServices;

    fn deref(&self) -> &FrontServices {
        &self.0
    }
}

pub struct FrontServices {
    pub accounts: Arc<Accounts>,
    pub backend: Backend,
    pub ingestion: crate::ingest::Ingestion,
    pub logs: Arc<dyn crate::store::logs::LogStore>,
    pub queue: Arc<dyn ledger_stages::queue::LogQueue>,
    pub analytics: Arc<dyn crate::store::analytics::AnalyticsCache>,
    /// The account store's circuit breaker, for `/metrics`.
    pub breaker: Arc<ledger_stages::auth::BreakerStore<Arc<dyn ledger_stages::auth::KeyStore>>>,
    /// Who may read `/metrics`, `/health/deep` and gRPC reflection.
    pub operator: operator::OperatorToken,
    pub console: console::ConsoleSettings,
    /// Live tail: this instance's subscribers and their readers.
    pub tail: crate::query::tail::TailHub,
    /// How often a quiet tail stream gets a heartbeat.
    pub tail_heartbeat: std::time::Duration,
    /// Alert rules' checks and notifications (the test notification).
    pub alerts: crate::alerts::Alerts,
}

/// Every REST route. Tests and `server::run` both start from here.
pub fn router(state: AppState) -> Router {
    let console = state.console.enabled;
    Router::new()
        .route("/", get(root))
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
        // The compatibility fronts, each reading its body itself like `POST /v1/logs`.
        .route("/otlp/v1/logs", post(crate::fronts::otlp::http).layer(DefaultBodyLimit::disable()))
        .route("/loki/api/v1/push", post(crate::fronts::loki::push).layer(DefaultBodyLimit::disable()))
        .merge(crate::fronts::elastic::routes().layer(DefaultBodyLimit::disable()))
        .route("/v1/metrics/error-rate", get(analytics::error_rate))
        .route("/v1/metrics/volume", get(analytics::volume))
        .route("/v1/metrics/top-errors", get(analytics::top_errors))
        .route("/v1/usage", get(analytics::usage))
        .route("/health", get(health::health))
        .route(
            "/health/deep",
            get(health::deep).route_layer(middleware::from_fn_with_state(state.clone(), operator::required)),
        )
        .route("/openapi.json", get(openapi::document))
        .route(
            "/metrics",
            get(metrics::metrics).route_layer(middleware::from_fn_with_state(state.clone(), operator::required)),
        )
        // On matched routes only, where the route template is known: durations by route, not by raw path.
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(ACCOUNT_BODY_LIMIT))
        // A browser's session cookie as the API's bearer credential (with its CSRF token to change state).
        .layer(tower::util::option_layer(console.then(|| middleware::from_fn(console::cookie_session))))
        // Inside the request id, so that a panic's 500 still carries the id of its request.
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| -> Response {
            ApiError::internal("a handler panicked").into_response()
        }))
        // Every answer is what its Content-Type says: browsers must not sniff a log's text into HTML.
        .layer(tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            axum::http::header::X_CONTENT_TYPE_OPTIONS,
            axum::http::HeaderValue::from_static("nosniff"),
        ))
        // Outermost: every response, errors from the layers above included, gets the id.
        .layer(middleware::from_fn(request_id::middleware))
        .layer(middleware::from_fn_with_state(state.clone(), close_when_draining))
        .with_state(state)
}

/// `GET /`: the console for a browser (it asks for HTML), Elasticsearch's cluster info for a shipper's probe.
async fn root(axum::extract::State(state): axum::extract::State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if state.console.enabled && console::wants_html(&headers) {
        console::index(&headers).await
    } else {
        crate::fronts::elastic::info().await
    }
}

/// While shutting down, each answer closes its connection, so no client sends another request on a
/// connection that is about to close.
async fn close_when_draining(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    if state.ingestion.draining.is_cancelled() {
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

/// API.md's timestamps: RFC 3339, UTC, microseconds.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Ids in paths are opaque: one that is not a UUID names nothing, so it is a 404 like any unknown id.
pub fn path_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
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
