//! Wiring: open the backend, build the services once, serve REST and gRPC on their listeners until the
//! shutdown token fires, then drain within `server.shutdown_timeout_secs`.
//!
//! [`run`] takes its shutdown token, and `server.*_addr` may use port 0, so tests can start a whole daemon.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ledger_stages::auth::{BreakerStore, KeyStore, KeyValidator};
use ledger_stages::queue::LogQueue;
use ledger_stages::quota::QuotaCounter;
use ledger_stages::rate_limit::{MemoryRateLimiter, RateLimiter};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

use crate::accounts::Accounts;
use crate::analytics::memory::MemoryMetrics;
use crate::analytics::redis::RedisMetrics;
use crate::analytics::{MetricsCache, rebuild};
use crate::backend::limits::RedisLimits;
use crate::backend::memory::SeededQuota;
use crate::backend::setup::SetupError;
use crate::backend::{Backend, LogDb};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::ingest::outcome::Outcomes;
use crate::ingest::{self, Ingestion, Parts};
use crate::logs::retention;
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::redis::{Keys, RedisQueue};
use crate::queue::worker::Workers;
use crate::{grpc, secrets};

/// Why the daemon stopped other than by a shutdown signal; one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(String);

impl ServeError {
    pub fn new(message: String) -> ServeError {
        ServeError(message)
    }
}

impl From<SetupError> for ServeError {
    fn from(e: SetupError) -> Self {
        ServeError(e.0)
    }
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|e| ServeError(format!("cannot listen on {addr} ({key}): {e}")))
}

/// Applies the migrations (creating the databases when missing) and returns.
pub async fn migrate(config: &Config) -> Result<(), ServeError> {
    Backend::open(config).await?;
    Ok(())
}

/// What the backend gives the ingestion stack.
struct Plumbing {
    queue: Arc<dyn LogQueue>,
    limiter: Arc<dyn RateLimiter>,
    quota: Arc<dyn QuotaCounter>,
    /// The embedded writer: it ends once every handle on the queue is dropped.
    writer: Option<tokio::task::JoinHandle<()>>,
    workers: Option<Workers>,
    metrics: Arc<dyn MetricsCache>,
}

fn plumbing(config: &Config, backend: &Backend) -> Result<Plumbing, ServeError> {
    match &backend.logs {
        LogDb::Sqlite(store) => {
            let metrics: Arc<dyn MetricsCache> = Arc::new(MemoryMetrics::default());
            let (queue, writer) = EmbeddedQueue::start(
                store.clone(),
                metrics.clone(),
                config.queue.embedded_capacity,
                config.queue.max_batch_logs,
            );
            Ok(Plumbing {
                metrics,
                queue: Arc::new(queue),
                limiter: Arc::new(MemoryRateLimiter::default()),
                quota: Arc::new(SeededQuota::new(backend.accounts.clone())),
                writer: Some(writer),
                workers: None,
            })
        }
        LogDb::Postgres(store) => {
            let redis = backend.redis.clone().ok_or_else(|| ServeError("the shared backend has no Redis".into()))?;
            let limits = Arc::new(RedisLimits::new(redis.clone()));
            let metrics: Arc<dyn MetricsCache> = Arc::new(RedisMetrics::new(redis.clone()));
            let queue = RedisQueue::new(redis.clone(), config.queue.shards);
            let workers = config.roles.workers.then(|| Workers {
                client: redis.client(),
                keys: Keys { prefix: redis.prefix().to_owned() },
                shards: config.queue.shards,
                logs: store.pool().clone(),
                lease: Duration::from_secs(config.queue.lease_secs.max(1)),
                max_batch_logs: config.queue.max_batch_logs,
                linger: Duration::from_millis(config.queue.linger_ms),
                owner: Uuid::new_v4().to_string(),
                metrics: metrics.clone(),
            });
            Ok(Plumbing {
                queue: Arc::new(queue),
                limiter: limits.clone(),
                quota: limits,
                writer: None,
                workers,
                metrics,
            })
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    let backend = Backend::open(&config).await?;
    let secret = secrets::jwt_secret(&config)?;
    let accounts_store: Arc<dyn KeyStore> = backend.accounts.clone();
    // The breaker sits between the caches and the store: cache hits never touch it.
    let breaker = Arc::new(BreakerStore::new(accounts_store, config.stages.auth.breaker_settings()));
    let key_store: Arc<dyn KeyStore> = breaker.clone();
    let validator = KeyValidator::new(key_store, backend.shared_keys.clone(), config.stages.auth.validator_settings());
    let accounts = Arc::new(Accounts::new(
        backend.clone(),
        validator.clone(),
        config.auth.clone(),
        &secret,
        config.defaults.settings(),
    ));

    let mut tasks = JoinSet::new();
    if let Some(redis) = backend.redis.clone() {
        let subscription = redis
            .subscribe_key_revocations()
            .await
            .map_err(|e| ServeError(format!("cannot subscribe to key revocations: {e}")))?;
        let (stop, validator) = (shutdown.clone(), validator.clone());
        tasks.spawn(async move {
            redis.follow_key_revocations(subscription, validator, stop).await;
            Ok(())
        });
    }
    let Plumbing { queue, limiter, quota, writer, workers, metrics } = plumbing(&config, &backend)?;
    if config.roles.analytics {
        let (store, cache, analytics, stop) =
            (backend.logs.store(), metrics.clone(), config.analytics.clone(), shutdown.clone());
        tasks.spawn(async move {
            rebuild::run(store, cache, analytics, stop).await;
            Ok(())
        });
        let (accounts, logs, stop) = (backend.accounts.clone(), backend.logs.store(), shutdown.clone());
        let (days, retention_config) = (config.defaults.retention_days, config.retention.clone());
        tasks.spawn(async move {
            retention::run(accounts, logs, days, retention_config, stop).await;
            Ok(())
        });
    }
    if let Some(workers) = workers {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            workers.run(stop).await;
            Ok(())
        });
    }
    let outcomes = Arc::new(Outcomes::new(backend.accounts.clone()));
    {
        let (stop, outcomes) = (shutdown.clone(), outcomes.clone());
        tasks.spawn(async move {
            outcomes.flush_every_second(stop).await;
            Ok(())
        });
    }
    let parts = Parts { validator, limiter, quota, queue: queue.clone(), validate: config.stages.validate.clone() };
    let ingestion = Ingestion {
        stack: ingest::build(&config.ingest, parts),
        outcomes,
        max_body_bytes: config.server.max_body_bytes,
        draining: shutdown.clone(),
    };

    if config.roles.gateway {
        let http_listener = bind(config.server.http_addr, "server.http_addr").await?;
        let grpc_listener = bind(config.server.grpc_addr, "server.grpc_addr").await?;
        let http_addr = http_listener.local_addr().map_err(|e| ServeError(e.to_string()))?;
        let grpc_addr = grpc_listener.local_addr().map_err(|e| ServeError(e.to_string()))?;

        let state = AppState {
            accounts,
            backend: backend.clone(),
            ingestion,
            logs: backend.logs.store(),
            queue,
            metrics,
            breaker,
        };
        let app = http::router(state.clone());
        // Shutdown drains first (new ingestion answered 503), then closes the listeners and finishes what
        // is in flight.
        let drain = Duration::from_millis(config.server.shutdown_drain_ms);
        let drained = |stop: CancellationToken| async move {
            stop.cancelled().await;
            tokio::time::sleep(drain).await;
        };
        let tls = crate::tls::load(&config.server).await?;
        let tls_on = tls.is_some();
        let (rest_tls, grpc_tls) = tls.map(|t| (t.rest, t.grpc)).unzip();
        let stop = drained(shutdown.clone());
        let failed = |e: std::io::Error| ServeError(format!("HTTP server failed: {e}"));
        match rest_tls {
            None => {
                tasks.spawn(async move {
                    axum::serve(http_listener, app).with_graceful_shutdown(stop).await.map_err(failed)
                });
            }
            Some(rustls) => {
                let listener = http_listener.into_std().map_err(failed)?;
                let handle = axum_server::Handle::new();
                let closing = handle.clone();
                tasks.spawn(async move {
                    stop.await;
                    // No bound of its own: `server.shutdown_timeout_secs` bounds the whole shutdown.
                    closing.graceful_shutdown(None);
                    Ok(())
                });
                let server = axum_server::from_tcp_rustls(listener, rustls).map_err(failed)?.handle(handle);
                tasks.spawn(async move { server.serve(app.into_make_service()).await.map_err(failed) });
            }
        }
        let stop = drained(shutdown.clone());
        tasks.spawn(async move { grpc::serve(grpc_listener, state, grpc_tls, stop).await.map_err(ServeError) });
        tracing::info!(%http_addr, %grpc_addr, backend = %backend.kind, tls = tls_on, "ledger ready");
    } else {
        drop((ingestion, queue, accounts, metrics));
        tracing::info!(backend = %backend.kind, "ledger ready (no gateway role)");
    }

    // Either a task fails (then stop the others) or shutdown is asked for (then let them drain).
    let mut failure = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        Some(joined) = tasks.join_next() => {
            failure = task_failure(joined);
            shutdown.cancel();
        }
    }
    tracing::info!("shutting down");
    let drained = tokio::time::timeout(config.server.shutdown_timeout(), async {
        while let Some(joined) = tasks.join_next().await {
            if let Some(e) = task_failure(joined) {
                failure.get_or_insert(e);
            }
        }
        // The servers are gone, and with them every handle on the embedded queue: its writer commits what
        // it holds and ends.
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout_secs = config.server.shutdown_timeout_secs, "shutdown timed out; exiting anyway");
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

fn task_failure(joined: Result<Result<(), ServeError>, tokio::task::JoinError>) -> Option<ServeError> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(ServeError(format!("a server task failed: {e}"))),
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
    token.cancel();
}
