//! Prometheus metrics: every name in this one place, one process-wide registry.
//!
//! Counted where things happen: request durations by the HTTP middleware, writes by the embedded writer and
//! the queue workers. Read at scrape time: queue depth, pool use, cache counts, breaker state, outcomes.

use std::sync::OnceLock;

use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

pub const HTTP_DURATION: &str = "ledger_http_request_duration_seconds";
pub const LOGS_WRITTEN: &str = "ledger_logs_written_total";
pub const BATCH_LOGS: &str = "ledger_write_batch_logs";
pub const JOB_RUNS: &str = "ledger_job_runs_total";
pub const JOB_LAST_RUN: &str = "ledger_job_last_run_timestamp_seconds";
pub const JOB_DURATION: &str = "ledger_job_last_duration_seconds";
pub const DEAD_LETTER_LOGS: &str = "ledger_dead_letter_logs_total";
pub const DEAD_LETTER_ENTRIES: &str = "ledger_dead_letter_entries_total";
pub const TAIL_SUBSCRIBERS: &str = "ledger_tail_subscribers";
pub const TAIL_LOGS: &str = "ledger_tail_logs_total";
pub const ALERT_EVALUATIONS: &str = "ledger_alert_evaluations_total";
pub const ALERT_NOTIFICATIONS: &str = "ledger_alert_notifications_total";
pub const ALERT_DELIVERIES: &str = "ledger_alert_delivery_attempts_total";
pub const SEARCH_INDEX_LAG: &str = "ledger_search_index_lag_seconds";
pub const SEARCH_INDEXED_LOGS: &str = "ledger_search_indexed_logs_total";
pub const CONNECTIONS_CLOSED: &str = "ledger_connections_closed_total";

// Read at each scrape from the core and encoded by the REST front (`fronts/http/metrics.rs`).

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

/// Values the redact stage scrubbed, by rule name.
pub const REDACTIONS: &str = "ledger_redactions_total";

ledger_stages::named_enum! {
    /// Why a listener closed a connection before it was served.
    #[derive(Clone, Copy, Debug)]
    pub enum ConnectionClosed {
        /// Its address already had its share of the listener's connections.
        PerAddressCap = "per_address_cap",
        /// Nothing (or no TLS handshake) arrived within the handshake timeout.
        Silent = "silent",
        /// A syslog connection whose first message carried a key that is not valid.
        BadKey = "bad_key",
    }
}

pub struct Metrics {
    registry: Registry,
    /// By route template, method and status.
    http_duration: HistogramVec,
    /// Logs written to the log store, by backend.
    logs_written: IntCounterVec,
    /// Logs per write (one COPY or one SQLite transaction), by backend.
    batch_logs: HistogramVec,
    /// Acknowledged logs that went to the dead-letter table instead of the log store, by reason.
    dead_letter_logs: IntCounterVec,
    /// Queue entries dead-lettered, by reason.
    dead_letter_entries: IntCounterVec,
    /// Periodic job runs, by job and result (`ok`, `failed`).
    job_runs: IntCounterVec,
    /// When each job last finished (Unix seconds).
    job_last_run: GaugeVec,
    /// How long each job's last run took.
    job_duration: GaugeVec,
    /// Live-tail subscribers connected to this instance.
    tail_subscribers: prometheus::IntGauge,
    /// Logs for live-tail subscribers, by outcome (`delivered`, `dropped`: a subscriber too slow for them).
    tail_logs: IntCounterVec,
    /// Alert rule evaluations, by kind.
    alert_evaluations: IntCounterVec,
    /// Notifications made (firing, resolved, test), each once across instances.
    alert_notifications: IntCounterVec,
    /// Delivery attempts by outcome: `delivered`, `failed_attempt`, `gave_up` (all attempts failed).
    alert_deliveries: IntCounterVec,
    /// How far the search index is behind now (logs newer than that are found by scanning); set by the
    /// instance that ran the indexing job last.
    search_index_lag: prometheus::Gauge,
    /// Logs read into the search index (a late log's whole block of 15 seconds is read again).
    search_indexed_logs: prometheus::IntCounter,
    /// Connections a listener closed before serving them, by reason ([`ConnectionClosed`]).
    connections_closed: IntCounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let http_duration = HistogramVec::new(
        HistogramOpts::new(HTTP_DURATION, "HTTP request durations by route, method and status.")
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        &["route", "method", "status"],
    )?;
    let logs_written = IntCounterVec::new(Opts::new(LOGS_WRITTEN, "Logs written to the log store."), &["backend"])?;
    let batch_logs = HistogramVec::new(
        HistogramOpts::new(BATCH_LOGS, "Logs per write to the log store.")
            .buckets(vec![1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0]),
        &["backend"],
    )?;
    registry.register(Box::new(http_duration.clone()))?;
    registry.register(Box::new(logs_written.clone()))?;
    registry.register(Box::new(batch_logs.clone()))?;
    let dead_letter_logs = IntCounterVec::new(
        Opts::new(DEAD_LETTER_LOGS, "Acknowledged logs dead-lettered instead of written, by reason."),
        &["reason"],
    )?;
    let dead_letter_entries =
        IntCounterVec::new(Opts::new(DEAD_LETTER_ENTRIES, "Queue entries dead-lettered, by reason."), &["reason"])?;
    registry.register(Box::new(dead_letter_logs.clone()))?;
    registry.register(Box::new(dead_letter_entries.clone()))?;
    let job_runs =
        IntCounterVec::new(Opts::new(JOB_RUNS, "Periodic job runs, by job and result."), &["job", "result"])?;
    let job_last_run = GaugeVec::new(Opts::new(JOB_LAST_RUN, "When each periodic job last finished."), &["job"])?;
    let job_duration = GaugeVec::new(Opts::new(JOB_DURATION, "How long each periodic job's last run took."), &["job"])?;
    registry.register(Box::new(job_runs.clone()))?;
    registry.register(Box::new(job_last_run.clone()))?;
    registry.register(Box::new(job_duration.clone()))?;
    let tail_subscribers = prometheus::IntGauge::new(TAIL_SUBSCRIBERS, "Live-tail subscribers on this instance.")?;
    let tail_logs =
        IntCounterVec::new(Opts::new(TAIL_LOGS, "Logs for live-tail subscribers, by outcome."), &["outcome"])?;
    registry.register(Box::new(tail_subscribers.clone()))?;
    registry.register(Box::new(tail_logs.clone()))?;
    let alert_evaluations =
        IntCounterVec::new(Opts::new(ALERT_EVALUATIONS, "Alert rule evaluations, by kind."), &["kind"])?;
    let alert_notifications =
        IntCounterVec::new(Opts::new(ALERT_NOTIFICATIONS, "Alert notifications made, by status."), &["status"])?;
    let alert_deliveries =
        IntCounterVec::new(Opts::new(ALERT_DELIVERIES, "Alert delivery attempts, by outcome."), &["outcome"])?;
    registry.register(Box::new(alert_evaluations.clone()))?;
    registry.register(Box::new(alert_notifications.clone()))?;
    registry.register(Box::new(alert_deliveries.clone()))?;
    let search_index_lag =
        prometheus::Gauge::new(SEARCH_INDEX_LAG, "Seconds between now and the search index's watermark.")?;
    let search_indexed_logs = prometheus::IntCounter::new(SEARCH_INDEXED_LOGS, "Logs read into the search index.")?;
    registry.register(Box::new(search_index_lag.clone()))?;
    registry.register(Box::new(search_indexed_logs.clone()))?;
    let connections_closed = IntCounterVec::new(
        Opts::new(CONNECTIONS_CLOSED, "Connections closed by a listener before being served, by reason."),
        &["reason"],
    )?;
    registry.register(Box::new(connections_closed.clone()))?;
    // CPU seconds, resident memory, open file descriptors, start time.
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(Metrics {
        registry,
        http_duration,
        logs_written,
        batch_logs,
        dead_letter_logs,
        dead_letter_entries,
        job_runs,
        job_last_run,
        job_duration,
        tail_subscribers,
        tail_logs,
        alert_evaluations,
        alert_notifications,
        alert_deliveries,
        search_index_lag,
        search_indexed_logs,
        connections_closed,
    })
}

/// The process's metrics.
pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| match build() {
        Ok(metrics) => metrics,
        // Only a programming error (a duplicate or invalid name) gets here, and the tests would show it.
        Err(e) => panic!("metrics registry: {e}"),
    })
}

ledger_stages::named_enum! {
    /// How one attempt to deliver an alert notification went.
    #[derive(Clone, Copy, Debug)]
    pub enum AlertDelivery {
        Delivered = "delivered",
        /// Failed, with attempts left.
        FailedAttempt = "failed_attempt",
        /// Failed for the last time.
        GaveUp = "gave_up",
    }
}

/// Each event the daemon counts is one method here, named for what happened and typed in what it takes
/// (the model: Vector's one struct per internal event); callers never name a series or a label.
impl Metrics {
    /// Records one HTTP request to a matched route.
    pub(crate) fn request_served(&self, route: &str, method: &str, status: u16, took: std::time::Duration) {
        let status = status.to_string();
        self.http_duration.with_label_values(&[route, method, status.as_str()]).observe(took.as_secs_f64());
    }

    /// A live-tail subscriber connected (`true`) or went away (`false`).
    pub(crate) fn tail_subscriber(&self, connected: bool) {
        if connected { self.tail_subscribers.inc() } else { self.tail_subscribers.dec() }
    }

    /// A log reached a tail subscriber.
    pub(crate) fn tail_delivered(&self) {
        self.tail_logs.with_label_values(&["delivered"]).inc();
    }

    /// Logs a too slow tail subscriber missed.
    pub(crate) fn tail_dropped(&self, logs: u64) {
        self.tail_logs.with_label_values(&["dropped"]).inc_by(logs);
    }

    /// An alert rule of `kind` was evaluated.
    pub(crate) fn alert_evaluated(&self, kind: &str) {
        self.alert_evaluations.with_label_values(&[kind]).inc();
    }

    /// A notification of `status` (firing, resolved, test) was claimed for sending.
    pub(crate) fn alert_notified(&self, status: &str) {
        self.alert_notifications.with_label_values(&[status]).inc();
    }

    /// One delivery attempt's result.
    pub(crate) fn alert_delivery(&self, result: AlertDelivery) {
        self.alert_deliveries.with_label_values(&[result.name()]).inc();
    }

    /// One run of the search index job: logs indexed, and how far behind now the index is (when known).
    pub(crate) fn search_indexed(&self, logs: u64, lag_secs: Option<f64>) {
        self.search_indexed_logs.inc_by(logs);
        if let Some(lag) = lag_secs {
            self.search_index_lag.set(lag.max(0.0));
        }
    }

    /// Records one batch written by `backend`.
    pub(crate) fn written(&self, backend: &str, logs: usize) {
        self.logs_written.with_label_values(&[backend]).inc_by(logs as u64);
        self.batch_logs.with_label_values(&[backend]).observe(logs as f64);
    }

    /// Records one queue entry of `logs` logs dead-lettered for `reason`.
    pub(crate) fn dead_lettered(&self, reason: &str, logs: u64) {
        self.dead_letter_entries.with_label_values(&[reason]).inc();
        self.dead_letter_logs.with_label_values(&[reason]).inc_by(logs);
    }

    /// Records one run of a periodic job.
    pub(crate) fn job_ran(&self, job: &str, took: std::time::Duration, ok: bool) {
        self.job_runs.with_label_values(&[job, if ok { "ok" } else { "failed" }]).inc();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.job_last_run.with_label_values(&[job]).set(now.as_secs_f64());
        self.job_duration.with_label_values(&[job]).set(took.as_secs_f64());
    }

    /// Records a connection a listener closed before serving it.
    pub(crate) fn connection_closed(&self, reason: ConnectionClosed) {
        self.connections_closed.with_label_values(&[reason.name()]).inc();
    }

    /// The registry's metrics in the Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_registered_and_encoded() {
        let m = metrics();
        m.written("embedded", 10);
        m.dead_lettered("undecodable", 3);
        m.request_served("/v1/logs", "POST", 202, std::time::Duration::from_millis(2));
        m.tail_delivered();
        let text = m.encode();
        for name in [
            HTTP_DURATION,
            LOGS_WRITTEN,
            BATCH_LOGS,
            DEAD_LETTER_LOGS,
            DEAD_LETTER_ENTRIES,
            TAIL_SUBSCRIBERS,
            TAIL_LOGS,
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
