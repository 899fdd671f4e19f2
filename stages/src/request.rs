//! What flows through the stack: one request (its context and its logs), its answer, and its error.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::log::LogRecord;
use crate::raw::RawLog;
use crate::{ProjectContext, Scope};

crate::named_enum! {
    /// Which front a request came through.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Protocol {
        Http = "http",
        Grpc = "grpc",
        /// OTLP logs, over HTTP or gRPC.
        Otlp = "otlp",
        /// Loki's push API.
        Loki = "loki",
        /// Elasticsearch's bulk API.
        Elasticsearch = "elasticsearch",
        /// Syslog over TCP.
        Syslog = "syslog",
    }
}

/// The state of the tightest rate-limit window, for `X-RateLimit-*` headers (or gRPC metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window has room again.
    pub reset_secs: u64,
}

/// What the stages learn that the front needs after the stack has consumed the request, whatever the
/// outcome: the project (for usage) and the rate-limit status (for headers, on errors too).
#[derive(Debug, Default)]
pub struct Report {
    /// Set by auth.
    pub project: OnceLock<Uuid>,
    /// Set by rate_limit.
    pub rate_limit: OnceLock<RateLimitStatus>,
    /// Set by validate for a [partial](Ingest::partial) request: the logs it left out, and why (indexes
    /// into the request's logs).
    pub rejected: OnceLock<Vec<Problem>>,
    /// Set by sample: the logs it removed by rule (acknowledged, never stored).
    pub removed: OnceLock<Removed>,
    /// Set by queue when the batch reached the queue but not the replicas it must (the request is refused
    /// all the same): the ids it was queued under, so that a retry with the request's idempotency key is
    /// answered with them instead of storing the batch again.
    pub unconfirmed: OnceLock<Vec<Uuid>>,
}

/// Logs the sample stage removed from a request, by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub dropped: u64,
    pub sampled_out: u64,
}

impl Removed {
    pub fn total(&self) -> u64 {
        self.dropped + self.sampled_out
    }
}

/// One ingestion request.
#[derive(Debug)]
pub struct Ingest {
    pub request_id: String,
    pub protocol: Protocol,
    pub received_at: DateTime<Utc>,
    /// The raw credential (`Authorization: Bearer` or `X-API-Key`): read by auth, then dropped.
    pub credential: Option<String>,
    /// W3C `traceparent`, carried into the queue so the write can link to the request.
    pub traceparent: Option<String>,
    /// The request's `Idempotency-Key`, carried into the queue with its answer ([`crate::queue::BatchMeta`]).
    pub idempotency_key: Option<String>,
    /// Size of the decoded body, for usage.
    pub body_bytes: u64,
    /// Set by auth.
    pub project: Option<ProjectContext>,
    /// The logs as decoded; the validate stage turns them into `records`.
    pub logs: Vec<RawLog>,
    pub records: Vec<LogRecord>,
    /// Set by a stage that removed logs (sample): every id to acknowledge, in request order, where
    /// `records` holds only the logs to store.
    pub acknowledged: Option<Vec<Uuid>>,
    pub report: Arc<Report>,
    /// The front answers per log (Elasticsearch's per-item results, OTLP's partial success, syslog): the
    /// validate stage leaves out the logs it refuses (listing them in [`Report::rejected`]) instead of
    /// refusing the request, unless it refuses them all.
    pub partial: bool,
}

impl Ingest {
    pub fn new(request_id: String, protocol: Protocol, credential: Option<String>, logs: Vec<RawLog>) -> Ingest {
        Ingest {
            request_id,
            protocol,
            received_at: Utc::now(),
            credential,
            traceparent: None,
            idempotency_key: None,
            body_bytes: 0,
            project: None,
            logs,
            records: Vec::new(),
            acknowledged: None,
            report: Arc::default(),
            partial: false,
        }
    }

    /// The project, once auth has run. Stages after auth may rely on it.
    pub fn project(&self) -> Result<&ProjectContext, IngestError> {
        self.project.as_ref().ok_or(IngestError::Unauthorized)
    }

    /// How many logs the request carries, whichever form they are in.
    pub fn len(&self) -> usize {
        self.logs.len().max(self.records.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A 202: the logs are durable in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// In request order.
    pub ids: Vec<Uuid>,
}

/// One problem with one field of one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The log's position in the batch (`None` for a problem with the batch itself).
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

/// Why a request was refused. Every variant is one outcome of API.md; the fronts map them to HTTP and gRPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("missing, malformed, unknown or revoked API key")]
    Unauthorized,
    #[error("this API key lacks the `{}` scope", .0.as_str())]
    InsufficientScope(Scope),
    #[error("too many requests for this project; retry later")]
    RateLimited { retry_after: Duration },
    #[error("the project's daily quota is used up; it resets at midnight UTC")]
    QuotaExceeded { retry_after: Duration },
    #[error("the request has invalid logs; nothing was stored")]
    Invalid(Vec<Problem>),
    #[error("a batch holds at most {max} logs")]
    BatchTooLarge { max: usize },
    #[error("the project's queue is full; retry later")]
    QueueFull { retry_after: Duration },
    #[error("{what} is unavailable; retry later")]
    Unavailable { what: &'static str, retry_after: Duration },
}

impl IngestError {
    pub fn unavailable(what: &'static str) -> IngestError {
        IngestError::Unavailable { what, retry_after: Duration::from_secs(1) }
    }
}
