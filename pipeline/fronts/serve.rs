//! One HTTP listener for the HTTP fronts: REST (with the console), OTLP/HTTP, Loki and Elasticsearch, each
//! front's routes under the layers every answer gets (request id, panic → 500, `nosniff`, `Connection:
//! close` while draining, durations by route), served on the shared accept loop ([`listen`]); and one gRPC
//! listener for the gRPC fronts (`ledger.v1`, OTLP/gRPC, health, reflection) behind one guard
//! ([`serve_grpc`]). Syslog has its own ([`crate::fronts::syslog::serve`]).

use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ledger_stages::Protocol;
use tonic::Status;
use tonic_health::ServingStatus;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::fronts::base::body::deadline_body;
use crate::fronts::base::credential::{read_access, shipper_credential};
use crate::fronts::base::listen::{self, Listener};
use crate::fronts::base::rpc::{Admission, ReadAccess, status};
use crate::fronts::base::{AppState, request_id};
use crate::fronts::http::{self, ACCOUNT_BODY_LIMIT, console, metrics};
use crate::fronts::{elastic, grpc, loki, otlp};

/// Every HTTP route of every HTTP front. Tests and the daemon both start from here.
pub(crate) fn router(state: AppState) -> Router {
    let console = state.console.enabled;
    Router::new()
        .route("/", get(root))
        .merge(http::routes(&state))
        // The compatibility fronts, each reading its body itself like `POST /v1/logs`.
        .route("/otlp/v1/logs", post(otlp::http).layer(DefaultBodyLimit::disable()))
        .route("/loki/api/v1/push", post(loki::push).layer(DefaultBodyLimit::disable()))
        .merge(elastic::routes().layer(DefaultBodyLimit::disable()))
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
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Outermost: every response, errors from the layers above included, gets the id.
        .layer(middleware::from_fn(request_id::middleware))
        .layer(middleware::from_fn_with_state(state.clone(), close_when_draining))
        .with_state(state)
}

/// `GET /`: the console for a browser (it asks for HTML), Elasticsearch's cluster info for a shipper's probe.
async fn root(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.console.enabled && console::wants_html(&headers) {
        console::index(&headers).await
    } else {
        elastic::info().await
    }
}

/// While shutting down, each answer closes its connection, so no client sends another request on a
/// connection that is about to close.
async fn close_when_draining(State(state): State<AppState>, request: Request, next: middleware::Next) -> Response {
    let mut response = next.run(request).await;
    if state.ingestion.draining.is_cancelled() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Serves [`router`] on `listener` (see [`listen`] for its limits) until `shutdown`, then lets open
/// connections finish their requests. Each request carries its peer address (for per-address limits) and a
/// deadline for its body.
pub(crate) async fn serve(
    listener: Listener,
    app: Router,
    body_read_timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let prepare = move |mut request: Request, peer: std::net::SocketAddr| {
        request.extensions_mut().insert(ConnectInfo(peer));
        deadline_body(request, body_read_timeout)
    };
    listen::serve_http(listener, listen::Versions::Any, app, prepare, shutdown).await;
}

/// Sets the call's `x-request-id` as REST does (the caller's when acceptable, else a new one): the call's id
/// in its span, its log lines and its error details.
fn with_request_id<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    if let Ok(id) = axum::http::HeaderValue::from_str(&request_id::of(request.headers())) {
        request.headers_mut().insert(request_id::HEADER, id);
    }
    request
}

/// A call's span, named by its gRPC method and continuing the caller's `traceparent`.
fn call_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let id = request.headers().get(request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    crate::telemetry::request_span(path.trim_start_matches('/'), path, id, request.headers())
}

/// In front of every service, before tonic reads a message: ingestion calls (`ledger.v1.IngestService` and
/// OTLP's `LogsService`) and query calls (`ledger.v1.QueryService`) are authenticated from their metadata
/// alone (an unknown key costs no decoding), and reflection asks for the operator token when one is set.
#[derive(Clone)]
struct Guard<S> {
    inner: S,
    state: AppState,
}

impl<S, B> tower::Service<axum::http::Request<B>> for Guard<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        // The clone that was polled ready is the one to call (tower's idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        if path.starts_with("/grpc.reflection.") && !self.state.operator.allows(request.headers()) {
            let refused = Status::unauthenticated("server reflection needs the operator token");
            return Box::pin(async move { Ok(refused.into_http()) });
        }
        if path.starts_with("/ledger.v1.QueryService/") {
            let state = self.state.clone();
            return Box::pin(async move {
                match read_access(request.headers(), &state.accounts, None).await {
                    Ok(project) => {
                        request.extensions_mut().insert(ReadAccess(project));
                        inner.call(request).await
                    }
                    Err(e) => Ok(status(&e).into_http()),
                }
            });
        }
        let front = if path.starts_with("/ledger.v1.IngestService/") {
            Protocol::Grpc
        } else if path.strip_prefix('/').is_some_and(|p| p.starts_with(otlp::SERVICE)) {
            Protocol::Otlp
        } else {
            return Box::pin(inner.call(request));
        };
        let ingestion = self.state.ingestion.clone();
        Box::pin(async move {
            let credential = shipper_credential(request.headers(), false);
            match ingestion.admit(front, credential.as_deref()).await {
                Ok(admitted) => {
                    request.extensions_mut().insert(Admission(admitted.into_project()));
                    inner.call(request).await
                }
                Err(e) => Ok(status(&ApiError::from(e)).into_http()),
            }
        })
    }
}

/// Serves gRPC on `listener` (HTTP/2 on the shared accept loop, [`crate::fronts::base::listen`]) until `shutdown`.
pub(crate) async fn serve_grpc(
    listener: crate::fronts::base::listen::Listener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let ingestion = state.ingestion.clone();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ledger_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;
    ledger_proto::codec::set_max_repeated(ingestion.max_request_logs);
    let guarded = state.clone();
    let routes = tonic::service::Routes::new(health)
        .add_service(grpc::ingest_service(ingestion.clone()))
        .add_service(grpc::query_service(state))
        .add_service(otlp::Grpc::new(ingestion))
        .add_service(reflection)
        .prepare();
    let service = tower::ServiceBuilder::new()
        .map_request(with_request_id)
        .layer(tower_http::trace::TraceLayer::new_for_grpc().make_span_with(call_span))
        .layer(tower::layer::layer_fn(move |inner| Guard { inner, state: guarded.clone() }))
        .service(routes);
    let prepare = |request, _peer| request;
    crate::fronts::base::listen::serve_http(
        listener,
        crate::fronts::base::listen::Versions::Http2,
        service,
        prepare,
        shutdown,
    )
    .await;
    Ok(())
}
