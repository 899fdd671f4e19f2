//! The application: the command line, the wiring, start-up and shutdown. Nothing imports this module.
//!
//! Wiring: open the backend, build the services once, serve the fronts on their listeners until the
//! shutdown token fires, then drain within `server.shutdown_timeout_secs`.
//!
//! [`run`] takes its shutdown token, and `server.*_addr` may use port 0, so tests can start a whole daemon.

pub mod cli;
pub mod client;
pub mod secrets;
pub mod tls;

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
use crate::config::Config;
use crate::fronts::base::listen::{self, Listener};
use crate::fronts::base::{AppState, ConsoleSettings, FrontServices, operator::OperatorToken};
use crate::ingest::outcome::Outcomes;
use crate::ingest::{self, Ingestion, Parts};
use crate::jobs::retention;
use crate::jobs::{Job, Scheduler, rebuild};
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::redis::{Keys, RedisQueue};
use crate::queue::worker::Workers;
use crate::store::analytics::AnalyticsCache;
use crate::store::analytics::memory::MemoryAnalytics;
use crate::store::analytics::redis::RedisAnalytics;
use crate::store::limits::RedisLimits;
use crate::store::memory::SeededQuota;
use crate::store::setup::SetupError;
use crate::store::tail::TailFeed;
use crate::store::tail::memory::MemoryTail;
use crate::store::tail::redis::RedisTail;
use crate::store::{Backend, LogDb};

/// Why the daemon stopped other than by a shutdown signal; one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(String);

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

/// `ledger dead-letter …`: the shared backend's dead letters, for the operator. Data on stdout only.
pub async fn dead_letter(config: &Config, command: crate::app::cli::DeadLetterCommand) -> Result<(), ServeError> {
    use crate::app::cli::DeadLetterCommand as C;
    use crate::store::dead_letter;
    let backend = Backend::open(config).await?;
    let (LogDb::Postgres(store), Some(redis)) = (&backend.logs, backend.redis.clone()) else {
        return Err(ServeError(
            "the embedded backend has no dead letters: its writes commit before the 202, so a refused batch is \
             refused to its client"
                .into(),
        ));
    };
    let pool = store.pool();
    let failed = |e: &dyn std::fmt::Display| ServeError(format!("dead letters: {e}"));
    match command {
        C::List { json } => {
            let letters = dead_letter::list(pool).await.map_err(|e| failed(&e))?;
            if json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter).map_err(|e| failed(&e))?);
                }
            } else {
                println!(
                    "{:>6}  {:>5}  {:<36}  {:>5}  {:<11}  {:<27}  detail",
                    "id", "shard", "project", "logs", "reason", "failed at"
                );
                for l in &letters {
                    let project = l.project_id.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                    let at = crate::fronts::base::timestamp(&l.failed_at);
                    println!(
                        "{:>6}  {:>5}  {project:<36}  {:>5}  {:<11}  {at:<27}  {}",
                        l.id, l.shard, l.logs, l.reason, l.detail
                    );
                }
                eprintln!("{} dead letter(s)", letters.len());
            }
        }
        C::Replay { ids } => {
            let queue = RedisQueue::new(redis, config.queue.shards);
            let ids = (!ids.is_empty()).then_some(ids);
            let replayed = dead_letter::take(pool, ids.as_deref(), |letter| {
                let queue = queue.clone();
                async move {
                    let shard = u32::try_from(letter.shard).unwrap_or(0);
                    let logs = u64::try_from(letter.logs).unwrap_or(0);
                    let payload = letter.payload.unwrap_or_default();
                    queue.requeue(shard, letter.project_id, logs, &payload).await
                }
            })
            .await
            .map_err(|e| failed(&e))?;
            println!("{replayed} dead letter(s) put back on the queue");
        }
        C::Discard { ids } => {
            let discarded = dead_letter::take(pool, Some(&ids), |_| async { Ok(()) }).await.map_err(|e| failed(&e))?;
            println!("{discarded} dead letter(s) discarded");
        }
    }
    Ok(())
}

/// What the backend gives the ingestion stack.
struct Plumbing {
    queue: Arc<dyn LogQueue>,
    limiter: Arc<dyn RateLimiter>,
    quota: Arc<dyn QuotaCounter>,
    /// The embedded writer: it ends once every handle on the queue is dropped.
    writer: Option<tokio::task::JoinHandle<()>>,
    /// The shared queue's workers, writing to PostgreSQL.
    workers: Option<Workers<crate::store::logs::postgres::PgLogStore>>,
    analytics: Arc<dyn AnalyticsCache>,
    tail: Arc<dyn TailFeed>,
}

fn plumbing(config: &Config, backend: &Backend) -> Result<Plumbing, ServeError> {
    match &backend.logs {
        LogDb::Sqlite(store) => {
            let analytics: Arc<dyn AnalyticsCache> = Arc::new(MemoryAnalytics::default());
            let tail: Arc<dyn TailFeed> = Arc::new(MemoryTail::new(config.tail.keep_logs, config.tail.keep_bytes));
            let (queue, writer) = EmbeddedQueue::start(
                store.clone(),
                analytics.clone(),
                tail.clone(),
                config.queue.embedded_capacity,
                config.queue.max_write_logs,
            );
            Ok(Plumbing {
                analytics,
                tail,
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
            let analytics: Arc<dyn AnalyticsCache> = Arc::new(RedisAnalytics::new(redis.clone()));
            let tail: Arc<dyn TailFeed> = Arc::new(RedisTail::new(redis.clone(), config.tail.keep_logs));
            let queue = RedisQueue::new(redis.clone(), config.queue.shards).replicated(config.redis.min_replicas_acked);
            let workers = config.roles.workers.then(|| Workers {
                redis: redis.clone(),
                keys: Keys { prefix: redis.prefix().to_owned() },
                shards: config.queue.shards,
                writer: Arc::new(store.clone()),
                lease: config.queue.lease,
                max_write_logs: config.queue.max_write_logs,
                linger: config.queue.linger,
                owner: Uuid::new_v4().to_string(),
                analytics: analytics.clone(),
                tail: tail.clone(),
            });
            Ok(Plumbing {
                queue: Arc::new(queue),
                limiter: limits.clone(),
                quota: limits,
                writer: None,
                workers,
                analytics,
                tail,
            })
        }
    }
}

/// The typed core and what it stands on, built once from the configuration and the backend.
struct Core {
    accounts: Arc<Accounts>,
    ingestion: Ingestion,
    plumbing: Plumbing,
    breaker: Arc<BreakerStore<Arc<dyn KeyStore>>>,
}

fn core(config: &Config, backend: &Backend, shutdown: &CancellationToken) -> Result<Core, ServeError> {
    let secret = secrets::jwt_secret(config)?;
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
        config.defaults.clone(),
        config.limits.clone(),
    ));
    let plumbing = plumbing(config, backend)?;
    let rules = ingest::StageRuleSet::compile(&config.stages).map_err(ServeError)?;
    let parts = Parts {
        validator: validator.clone(),
        limiter: plumbing.limiter.clone(),
        quota: plumbing.quota.clone(),
        queue: plumbing.queue.clone(),
        validate: config.stages.validate.clone(),
        rules: rules.clone(),
    };
    let inflight_units = config.server.max_inflight_body_bytes.div_ceil(1024);
    let ingestion = Ingestion {
        stack: ingest::build(&config.ingest, parts),
        outcomes: Arc::new(Outcomes::new(backend.accounts.clone())),
        max_body_bytes: config.server.max_body_bytes,
        max_request_logs: config.stages.validate.max_request_logs,
        max_shared_bytes: config.stages.validate.max_attributes_bytes,
        draining: shutdown.clone(),
        validator,
        inflight: Arc::new(tokio::sync::Semaphore::new(inflight_units.min(tokio::sync::Semaphore::MAX_PERMITS))),
        idempotency: backend.idempotency.clone(),
        rules,
    };
    Ok(Core { accounts, ingestion, plumbing, breaker })
}

/// Alert rules' evaluation and delivery, linking to the console at `alerts.console_url` (default: the REST
/// listener's configured address).
fn alerts(
    config: &Config,
    backend: &Backend,
    accounts: &Arc<Accounts>,
    analytics: &Arc<dyn AnalyticsCache>,
) -> crate::alerts::Alerts {
    let console_url = if config.alerts.console_url.is_empty() {
        let scheme = if config.server.tls_cert_path.is_empty() { "http" } else { "https" };
        format!("{scheme}://{}", config.server.http_addr)
    } else {
        config.alerts.console_url.clone()
    };
    crate::alerts::Alerts::new(
        backend.alerts.clone(),
        accounts.clone(),
        analytics.clone(),
        backend.logs.store(),
        console_url,
        config.alerts.allow_private_targets,
    )
}

/// This instance's periodic jobs, by its roles.
fn scheduler(config: &Config, backend: &Backend, core: &Core) -> Scheduler {
    let lease = backend.redis.clone().map(|redis| Arc::new(redis) as Arc<dyn crate::store::JobLease>);
    let mut scheduler = Scheduler::new(lease);
    // Each instance's own usage counts, every second (and once more after the fronts stop).
    let outcomes = core.ingestion.outcomes.clone();
    scheduler.add(Job::new("usage flush", Duration::from_secs(1), move || {
        let outcomes = outcomes.clone();
        async move {
            outcomes.flush().await;
            Ok(())
        }
    }));
    if config.roles.jobs {
        for job in rebuild::jobs(backend.logs.store(), core.plumbing.analytics.clone(), &config.analytics) {
            scheduler.add(job);
        }
        let evaluator = alerts(config, backend, &core.accounts, &core.plumbing.analytics);
        let every = config.alerts.evaluate_interval;
        scheduler.add(
            Job::new("alert evaluation", every, move || {
                let evaluator = evaluator.clone();
                async move { evaluator.evaluate_all().await }
            })
            .jitter(Duration::ZERO)
            .once_across_instances(),
        );
        let days = config.defaults.retention_days;
        scheduler.add(retention::job(backend.accounts.clone(), backend.logs.store(), days, &config.retention));
        if config.search.index {
            let queue = core.plumbing.queue.clone();
            scheduler.add(crate::jobs::search::job(backend.logs.search(), queue, &config.search));
        }
    }
    if let (LogDb::Postgres(store), true) = (&backend.logs, config.roles.workers) {
        for job in crate::jobs::upkeep::jobs(store) {
            scheduler.add(job);
        }
    }
    scheduler
}

/// Binds the listeners (HTTP, gRPC, syslog when set) and serves the fronts as tasks until shutdown (after
/// the drain period).
async fn serve_fronts(
    config: &Config,
    backend: &Backend,
    core: Core,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) -> Result<(), ServeError> {
    let http_listener = bind(config.server.http_addr, "server.http_addr").await?;
    let grpc_listener = bind(config.server.grpc_addr, "server.grpc_addr").await?;
    let http_addr = http_listener.local_addr().map_err(|e| ServeError(e.to_string()))?;
    let grpc_addr = grpc_listener.local_addr().map_err(|e| ServeError(e.to_string()))?;
    let alerts = alerts(config, backend, &core.accounts, &core.plumbing.analytics);
    let state = AppState::new(FrontServices {
        accounts: core.accounts,
        backend: backend.clone(),
        ingestion: core.ingestion,
        logs: backend.logs.store(),
        queue: core.plumbing.queue.clone(),
        analytics: core.plumbing.analytics.clone(),
        breaker: core.breaker,
        operator: OperatorToken::new(config.server.operator_token.expose()),
        tail: crate::query::tail::TailHub::new(
            core.plumbing.tail.clone(),
            backend.accounts.clone(),
            crate::query::tail::TailSettings {
                max_subscribers_per_project: config.tail.max_subscribers_per_project,
                max_subscribers: config.tail.max_subscribers,
                max_subscribers_per_account: config.tail.max_subscribers_per_account,
                buffer_entries: config.tail.buffer_entries,
                max_buffer_bytes: config.tail.max_buffer_bytes,
                max_backlog_logs: config.tail.max_backlog_logs,
            },
        ),
        tail_heartbeat: config.tail.heartbeat,
        alerts,
        console: ConsoleSettings {
            enabled: config.console.enabled,
            secure_cookie: !config.server.tls_cert_path.is_empty(),
        },
    });
    // Shutdown drains first (new ingestion answered 503), then closes the listeners and finishes what is in
    // flight.
    let drain = config.server.shutdown_drain;
    let stop = CancellationToken::new();
    tokio::spawn({
        let (shutdown, stop) = (shutdown.clone(), stop.clone());
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
            stop.cancel();
        }
    });
    let tls = crate::app::tls::load(&config.server).map_err(ServeError)?;
    let tls_on = tls.is_some();
    let (rest_tls, grpc_tls) = tls.map(|t| (t.rest, t.grpc)).unzip();
    let server = &config.server;
    let limits = listen::Limits {
        max_connections: server.max_connections,
        max_connections_per_address: server.max_connections_per_address,
        handshake_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
    };
    let first_bytes = listen::HTTP_FIRST_BYTES;
    let syslog_addr = match config.syslog.tcp_addr.parse::<std::net::SocketAddr>() {
        Ok(addr) => {
            let listener = bind(addr, "syslog.tcp_addr").await?;
            let local = listener.local_addr().map_err(|e| ServeError(e.to_string()))?;
            let tls = if config.syslog.tls { rest_tls.clone() } else { None };
            let syslog_limits = listen::Limits {
                max_connections: config.syslog.max_connections,
                max_connections_per_address: config.syslog.max_connections_per_address,
                ..limits
            };
            // One byte: a syslog sender may send short messages far apart; the key check bounds the rest.
            let listener = Listener::new(listener, syslog_limits, tls, 1);
            let (ingestion, syslog) = (state.ingestion.clone(), config.syslog.clone());
            let stop = shutdown.clone();
            tasks.spawn("syslog server", async move {
                crate::fronts::syslog::serve(listener, ingestion, syslog, stop).await;
                Ok(())
            });
            local.to_string()
        }
        // Empty: off (`Config::check` refused anything else).
        Err(_) => String::new(),
    };
    let app = crate::fronts::serve::router(state.clone());
    let http_listener = Listener::new(http_listener, limits, rest_tls, first_bytes);
    let (body_timeout, rest_stop) = (config.server.body_read_timeout, stop.clone());
    tasks.spawn("REST server", async move {
        crate::fronts::serve::serve(http_listener, app, body_timeout, rest_stop).await;
        Ok(())
    });
    let grpc_listener = Listener::new(grpc_listener, limits, grpc_tls, first_bytes);
    tasks.spawn("gRPC server", async move {
        crate::fronts::serve::serve_grpc(grpc_listener, state, stop).await.map_err(ServeError)
    });
    tracing::info!(%http_addr, %grpc_addr, %syslog_addr, backend = %backend.kind, tls = tls_on, "ledger ready");
    Ok(())
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    for warning in &config.deprecated {
        tracing::warn!(warning = %warning, "deprecated configuration key");
    }
    let backend = Backend::open(&config).await?;
    let mut core = core(&config, &backend, &shutdown)?;
    let mut tasks = Tasks::default();
    if let Some(redis) = backend.redis.clone() {
        let subscription = redis
            .subscribe_key_revocations()
            .await
            .map_err(|e| ServeError(format!("cannot subscribe to key revocations: {e}")))?;
        let (stop, validator) = (shutdown.clone(), core.ingestion.validator.clone());
        tasks.spawn("key revocations", async move {
            redis.follow_key_revocations(subscription, validator, stop).await;
            Ok(())
        });
    }
    if let Some(workers) = core.plumbing.workers.take() {
        let stop = shutdown.clone();
        tasks.spawn("queue workers", async move {
            workers.run(stop).await;
            Ok(())
        });
    }
    let pid_file = pid_file(&config);
    let written = std::fs::create_dir_all(&config.backend.data_dir)
        .and_then(|()| std::fs::write(&pid_file, format!("{}\n", std::process::id())));
    if let Err(error) = written {
        tracing::warn!(%error, path = %pid_file.display(), "cannot write the pid file; `ledger reload` needs --pid");
    }
    let (rules, stop) = (core.ingestion.rules.clone(), shutdown.clone());
    let source = config.source.clone();
    tasks.spawn("reload on SIGHUP", async move {
        reload_on_hangup(rules, source, stop).await;
        Ok(())
    });
    let jobs = scheduler(&config, &backend, &core);
    tracing::debug!(jobs = ?jobs.names(), "jobs scheduled");
    let stop = shutdown.clone();
    tasks.spawn("jobs", async move {
        jobs.run(stop).await;
        Ok(())
    });
    let (outcomes, writer) = (core.ingestion.outcomes.clone(), core.plumbing.writer.take());
    if config.roles.gateway {
        serve_fronts(&config, &backend, core, &mut tasks, &shutdown).await?;
    } else {
        drop(core);
        tracing::info!(backend = %backend.kind, "ledger ready (no gateway role)");
    }

    let mut failure = supervise(&mut tasks, &shutdown).await;
    tracing::info!("shutting down");
    let drained = tokio::time::timeout(config.server.shutdown_timeout, async {
        while let Some((task, result)) = tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(task, error = %e, "a task failed while shutting down");
                failure.get_or_insert(e);
            }
        }
        // The servers are gone, and with them every handle on the embedded queue: its writer commits what
        // it holds and ends.
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        // The fronts are done: no outcome can be recorded after this last flush.
        outcomes.flush().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout_secs = config.server.shutdown_timeout.as_secs(), "shutdown timed out; exiting anyway");
    }
    let _ = std::fs::remove_file(&pid_file);
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Waits until shutdown is asked for or a task ends. Each task runs until shutdown, so one that ends first is
/// a failure whatever it returned; then shutdown begins for the others.
async fn supervise(tasks: &mut Tasks, shutdown: &CancellationToken) -> Option<ServeError> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        Some((task, result)) = tasks.join_next() => {
            // A task that ended because shutdown began (the signal raced this select) ended on time.
            let failure = match result {
                Err(error) => Some(error),
                Ok(()) if !shutdown.is_cancelled() => {
                    Some(ServeError(format!("{task}: ended before shutdown was asked for")))
                }
                Ok(()) => None,
            };
            if let Some(error) = &failure {
                tracing::error!(task, error = %error, "a long-running task ended; stopping");
            }
            shutdown.cancel();
            failure
        }
    }
}

/// The daemon's long-running tasks, each known by name: every one runs until shutdown.
#[derive(Default)]
struct Tasks {
    set: JoinSet<Result<(), ServeError>>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = Result<(), ServeError>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// The next task to end, by name, with its result (a panic is an error naming it).
    async fn join_next(&mut self) -> Option<(&'static str, Result<(), ServeError>)> {
        let joined = self.set.join_next_with_id().await?;
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let name = self.names.remove(&id).unwrap_or("a task");
        Some(match joined {
            Ok((_, result)) => (name, result.map_err(|e| ServeError(format!("{name}: {e}")))),
            Err(e) => (name, Err(ServeError(format!("{name} failed: {e}")))),
        })
    }
}

/// On each SIGHUP (`ledger reload`), reads the configuration again (the same file and environment) and
/// swaps in its parse, redact and sample rules; requests in flight finish with the rules they started
/// with. A configuration that does not load keeps the running rules, and the log says why. Other settings
/// take a restart.
async fn reload_on_hangup(rules: ingest::StageRuleSet, source: Option<std::path::PathBuf>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; the configuration cannot be reloaded");
            // Not a reason to stop serving.
            stop.cancelled().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        let reloaded = Config::load(source.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|config| rules.reload(&config.stages).map(|()| config));
        match reloaded {
            Ok(config) => tracing::info!(
                parse = config.stages.parse.rules.len(),
                redact = config.stages.redact.rules.len(),
                sample = config.stages.sample.rules.len(),
                "SIGHUP: stage rules reloaded"
            ),
            Err(error) => tracing::error!(%error, "SIGHUP: the configuration was not reloaded; the running rules stay"),
        }
    }
}

/// Where `ledger serve` writes its process id, for `ledger reload`.
pub(crate) fn pid_file(config: &Config) -> std::path::PathBuf {
    config.backend.data_dir.join("ledger.pid")
}

/// `ledger reload`: SIGHUP to the daemon `pid`, or to the one whose pid file is in `backend.data_dir`.
pub fn signal_reload(config: &Config, pid: Option<i32>) -> Result<i32, ServeError> {
    let pid = match pid {
        Some(pid) => pid,
        None => {
            let path = pid_file(config);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ServeError(format!("cannot read {} ({e}); is the daemon running here? Or give --pid", path.display()))
            })?;
            text.trim().parse().map_err(|_| ServeError(format!("{} does not hold a process id", path.display())))?
        }
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP)
        .map_err(|e| ServeError(format!("cannot signal process {pid}: {e}")))?;
    Ok(pid)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_early_is_a_failure_naming_it_and_stops_the_others() {
        let (mut tasks, shutdown) = (Tasks::default(), CancellationToken::new());
        let stop = shutdown.clone();
        tasks.spawn("patient", async move {
            stop.cancelled().await;
            Ok(())
        });
        tasks.spawn("quitter", async { Ok(()) });
        let failure = supervise(&mut tasks, &shutdown).await.expect("a failure");
        assert!(failure.to_string().contains("quitter: ended before shutdown"), "{failure}");
        assert!(shutdown.is_cancelled(), "the others are told to stop");
        assert!(matches!(tasks.join_next().await, Some(("patient", Ok(())))));
    }

    #[tokio::test]
    async fn a_failing_or_panicking_task_is_named() {
        let (mut tasks, shutdown) = (Tasks::default(), CancellationToken::new());
        tasks.spawn("broken", async { Err(ServeError("disk gone".into())) });
        let failure = supervise(&mut tasks, &shutdown).await.expect("a failure");
        assert_eq!(failure.to_string(), "broken: disk gone");
        let (mut tasks, shutdown) = (Tasks::default(), CancellationToken::new());
        tasks.spawn("panicky", async { panic!("boom") });
        let failure = supervise(&mut tasks, &shutdown).await.expect("a failure");
        assert!(failure.to_string().starts_with("panicky failed"), "{failure}");
    }

    #[tokio::test]
    async fn tasks_ending_after_shutdown_are_not_failures() {
        let (mut tasks, shutdown) = (Tasks::default(), CancellationToken::new());
        shutdown.cancel();
        tasks.spawn("done", async { Ok(()) });
        assert!(supervise(&mut tasks, &shutdown).await.is_none());
    }
}
