//! Every log ends in exactly one outcome, and every outcome is counted: in process-wide counters (for
//! `/metrics`) and, for logs whose project is known, in that project's daily usage.
//!
//! Usage is added up in memory and written to the account store every second, so counting costs the hot
//! path one map update, not a database write. A crash loses at most the last second of usage counts (never
//! logs). Unknown-credential and unavailable outcomes have no project, so they are only in the counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::NaiveDate;
use ledger_stages::{Accepted, IngestError, Protocol};
use uuid::Uuid;

use crate::store::{AccountStore, Usage};

ledger_stages::named_enum! {
    /// The one outcome a request (and each of its logs) ended in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Outcome {
        Accepted = "accepted",
        RateLimited = "rate_limited",
        QuotaExceeded = "quota_exceeded",
        Backpressure = "backpressure",
        Invalid = "invalid",
        Unauthorized = "unauthorized",
        Unavailable = "unavailable",
        /// The client went away before its request reached the stack (its body was being read).
        Cancelled = "cancelled",
        /// Acknowledged, and removed by a drop rule of the sample stage.
        DroppedByRule = "dropped_by_rule",
        /// Acknowledged, and not kept by a sample rule.
        SampledOut = "sampled_out",
    }
}

impl Outcome {
    pub(crate) fn of(result: &Result<Accepted, IngestError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Accepted,
            Err(IngestError::RateLimited { .. }) => Outcome::RateLimited,
            Err(IngestError::QuotaExceeded { .. }) => Outcome::QuotaExceeded,
            Err(IngestError::QueueFull { .. }) => Outcome::Backpressure,
            Err(IngestError::Invalid(_) | IngestError::BatchTooLarge { .. }) => Outcome::Invalid,
            Err(IngestError::Unauthorized | IngestError::InsufficientScope(_)) => Outcome::Unauthorized,
            Err(IngestError::Unavailable { .. }) => Outcome::Unavailable,
        }
    }

    /// The outcome of a request a front refused before the stack (its body could not be used).
    pub(crate) fn of_refusal(error: &crate::error::ApiError) -> Outcome {
        use crate::error::ApiError as E;
        match error {
            E::Unavailable { .. } | E::QueueFull { .. } | E::Internal(_) => Outcome::Unavailable,
            E::RequestTimeout | E::BodyIncomplete => Outcome::Cancelled,
            E::Unauthorized | E::InsufficientScope(_) => Outcome::Unauthorized,
            E::RateLimited { .. } | E::TooManyLoginAttempts { .. } => Outcome::RateLimited,
            E::QuotaExceeded { .. } => Outcome::QuotaExceeded,
            _ => Outcome::Invalid,
        }
    }
}

/// Counters by front, then outcome.
type ByFront = [[AtomicU64; Outcome::ALL.len()]; Protocol::ALL.len()];

pub struct Outcomes {
    logs: ByFront,
    /// Requests by outcome: a request refused before its body was decoded has no log count.
    requests: ByFront,
    // A std mutex: one map update per request, never held across an await.
    usage: Mutex<HashMap<(Uuid, NaiveDate), Usage>>,
    store: Arc<dyn AccountStore>,
}

impl Outcomes {
    pub(crate) fn new(store: Arc<dyn AccountStore>) -> Outcomes {
        Outcomes { logs: Default::default(), requests: Default::default(), usage: Mutex::default(), store }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, NaiveDate), Usage>> {
        self.usage.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one request through `front`, and its `logs` logs, ending in `outcome`.
    pub(crate) fn record(
        &self,
        front: Protocol,
        project: Option<Uuid>,
        day: NaiveDate,
        outcome: Outcome,
        logs: u64,
        bytes: u64,
    ) {
        self.requests[front.index()][outcome.index()].fetch_add(1, Ordering::Relaxed);
        self.record_logs(front, project, day, outcome, logs, bytes);
    }

    /// Counts `logs` logs of a request counted already (a part of it that ended otherwise).
    pub(crate) fn record_logs(
        &self,
        front: Protocol,
        project: Option<Uuid>,
        day: NaiveDate,
        outcome: Outcome,
        logs: u64,
        bytes: u64,
    ) {
        self.logs[front.index()][outcome.index()].fetch_add(logs, Ordering::Relaxed);
        let Some(project) = project else { return };
        let mut pending = self.pending();
        let usage = pending.entry((project, day)).or_default();
        match outcome {
            Outcome::Accepted => {
                usage.accepted += logs;
                usage.bytes += bytes;
            }
            Outcome::RateLimited => usage.rejected_rate_limited += logs,
            Outcome::QuotaExceeded => usage.rejected_quota += logs,
            Outcome::Backpressure => usage.rejected_backpressure += logs,
            Outcome::Invalid => usage.rejected_invalid += logs,
            Outcome::DroppedByRule => usage.dropped_by_rule += logs,
            Outcome::SampledOut => usage.sampled_out += logs,
            Outcome::Unauthorized | Outcome::Unavailable | Outcome::Cancelled => {}
        }
    }

    /// Logs counted per front and outcome since start.
    pub(crate) fn totals(&self) -> Vec<(Protocol, Outcome, u64)> {
        Self::read(&self.logs)
    }

    /// Requests counted per front and outcome since start.
    pub(crate) fn requests(&self) -> Vec<(Protocol, Outcome, u64)> {
        Self::read(&self.requests)
    }

    fn read(counters: &ByFront) -> Vec<(Protocol, Outcome, u64)> {
        let by_outcome = |front: Protocol| {
            Outcome::ALL.iter().map(move |o| (front, *o, counters[front.index()][o.index()].load(Ordering::Relaxed)))
        };
        Protocol::ALL.into_iter().flat_map(by_outcome).collect()
    }

    /// Writes the usage counted so far; on failure keeps it for the next try.
    pub(crate) async fn flush(&self) {
        let rows: Vec<(Uuid, NaiveDate, Usage)> = self.pending().drain().map(|((p, d), u)| (p, d, u)).collect();
        if rows.is_empty() {
            return;
        }
        if let Err(error) = self.store.add_usage(&rows).await {
            tracing::warn!(%error, rows = rows.len(), "could not write usage; will retry");
            let mut pending = self.pending();
            for (project, day, usage) in rows {
                pending.entry((project, day)).or_default().add(&usage);
            }
        }
    }
}
