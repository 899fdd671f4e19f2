//! The queue stage, innermost: a durable enqueue, then the 202.
//!
//! When [`LogQueue::enqueue`] returns, the logs are durable (in a Redis stream, or committed to SQLite) and
//! will be stored exactly once; only then is the request answered 202. A project whose queue holds its
//! `max_queue_depth` logs is refused with 503 `queue_full` and Retry-After.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tower::Service;

use crate::ProjectContext;
use crate::log::LogRecord;
use crate::request::{Accepted, Ingest, IngestError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the project's queue is full")]
    Full { retry_after: Duration },
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    /// The batch is in the queue, but fewer replicas confirmed it than required: the request is refused
    /// (no promise of durability was kept), yet its logs will be stored unless the queue loses them.
    #[error("the batch is queued but not confirmed by enough replicas: {0}")]
    Unconfirmed(String),
}

/// What travels with a batch besides its logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchMeta {
    /// W3C `traceparent` of the request, so the write can link to it.
    pub traceparent: Option<String>,
    /// The request's idempotency key and its answer ([`idempotency_answer`] of every id acknowledged): a
    /// queue that commits the batch itself (embedded) keeps them in the same transaction, so a retry after
    /// any restart or crash is answered from them.
    pub idempotency: Option<(String, String)>,
}

/// How an idempotency key keeps its answer: the ids acknowledged, comma-separated, in request order.
pub fn idempotency_answer(ids: &[uuid::Uuid]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// A durable queue of log batches.
#[async_trait]
pub trait LogQueue: Send + Sync + 'static {
    /// Makes the batch durable, with what travels with it.
    async fn enqueue(
        &self,
        project: &ProjectContext,
        records: Vec<LogRecord>,
        meta: BatchMeta,
    ) -> Result<(), QueueError>;

    /// Logs waiting to be written, all projects together.
    async fn depth(&self) -> Result<u64, QueueError>;

    /// Each shard's backlog; empty for a queue without shards.
    async fn shards(&self) -> Result<Vec<ShardBacklog>, QueueError> {
        Ok(Vec::new())
    }
}

/// What one queue shard holds, unwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardBacklog {
    pub shard: u32,
    /// Batches waiting.
    pub entries: u64,
    /// How long the oldest has waited: the shard's lag. Zero when it is empty.
    pub lag: Duration,
}

/// The innermost service of the ingestion stack.
#[derive(Clone)]
pub struct QueueService {
    queue: Arc<dyn LogQueue>,
}

impl QueueService {
    pub fn new(queue: Arc<dyn LogQueue>) -> QueueService {
        QueueService { queue }
    }
}

impl Service<Ingest> for QueueService {
    type Response = Accepted;
    type Error = IngestError;
    type Future = BoxFuture<'static, Result<Accepted, IngestError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per project (its queue depth), so it is decided per request in `enqueue`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Ingest) -> Self::Future {
        let queue = self.queue.clone();
        Box::pin(async move {
            let project = request.project()?.clone();
            let records = std::mem::take(&mut request.records);
            let ids = match request.acknowledged.take() {
                // A stage removed logs by rule: all are acknowledged; none may be left to store.
                Some(ids) if records.is_empty() => return Ok(Accepted { ids }),
                Some(ids) => ids,
                None if records.is_empty() => {
                    return Err(IngestError::unavailable("the ingestion stack (no validate stage ran)"));
                }
                None => records.iter().map(|r| r.id).collect(),
            };
            let span = tracing::debug_span!("stage", otel.name = "queue", name = "queue", logs = records.len());
            let meta = BatchMeta {
                traceparent: request.traceparent.take(),
                idempotency: request.idempotency_key.take().map(|key| (key, idempotency_answer(&ids))),
            };
            let enqueued = tracing::Instrument::instrument(queue.enqueue(&project, records, meta), span);
            enqueued.await.map_err(|e| match e {
                QueueError::Full { retry_after } => IngestError::QueueFull { retry_after },
                QueueError::Unavailable(cause) => {
                    tracing::warn!(%cause, "queue unavailable");
                    IngestError::unavailable("the queue")
                }
                QueueError::Unconfirmed(cause) => {
                    tracing::warn!(%cause, "batch queued but not confirmed by the queue's replicas");
                    let _ = request.report.unconfirmed.set(ids.clone());
                    IngestError::unavailable("the queue's replicas")
                }
            })?;
            Ok(Accepted { ids })
        })
    }
}
