//! The embedded queue: a group-commit writer into SQLite.
//!
//! Each request hands its batch to the writer over a bounded channel and waits. The writer takes every
//! batch that is waiting (up to `max_write_logs`), writes them in one transaction, commits, and only then
//! answers each request: a 202 means committed, with `synchronous = FULL` so a commit survives power loss.
//! Concurrent requests share one commit, which is what makes SQLite fast here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ledger_stages::queue::{BatchMeta, LogQueue, QueueError};
use ledger_stages::{LogRecord, ProjectContext};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::pending::Pending;
use crate::store::analytics::{AnalyticsCache, Stats};
use crate::store::logs::search::late_blocks;
use crate::store::logs::{KeptAnswer, Late, RecordWriter, WriteBatch, WriteError};
use crate::store::tail::TailFeed;

struct Job {
    project: uuid::Uuid,
    records: Vec<LogRecord>,
    meta: BatchMeta,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Clone)]
pub struct EmbeddedQueue {
    jobs: mpsc::Sender<Job>,
    pending: Arc<Pending>,
}

impl EmbeddedQueue {
    /// Starts the writer. It stops once every clone of the queue is dropped and the batches in hand are
    /// written: that is the embedded backend's graceful shutdown.
    pub(crate) fn start<W: RecordWriter>(
        store: W,
        metrics: Arc<dyn AnalyticsCache>,
        tail: Arc<dyn TailFeed>,
        capacity: usize,
        max_write_logs: usize,
    ) -> (EmbeddedQueue, JoinHandle<()>) {
        let (jobs, receiver) = mpsc::channel(capacity.max(1));
        let writer = tokio::spawn(write_loop(store, metrics, tail, receiver, max_write_logs.max(1)));
        (EmbeddedQueue { jobs, pending: Arc::new(Pending::default()) }, writer)
    }
}

async fn write_loop<W: RecordWriter>(
    store: W,
    metrics: Arc<dyn AnalyticsCache>,
    tail: Arc<dyn TailFeed>,
    mut receiver: mpsc::Receiver<Job>,
    max_write_logs: usize,
) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        let mut logs = jobs[0].records.len();
        while logs < max_write_logs {
            match receiver.try_recv() {
                Ok(job) => {
                    logs += job.records.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let batch = crate::telemetry::batch_span("embedded", jobs.iter().map(|j| j.meta.traceparent.as_deref()));
        batch.record("logs", logs);
        let insert = tracing::info_span!(parent: &batch, "insert", otel.name = "INSERT logs", logs);
        let result = write(&store, &jobs).instrument(insert).await.map_err(|e| e.to_string());
        drop(batch);
        let stats = result.is_ok().then(|| Stats::of(jobs.iter().flat_map(|j| &j.records)));
        // The committed logs of tailed projects, published after the answers.
        let tailed = if result.is_ok() { tail.tailed().await } else { Arc::default() };
        let tailing: Vec<LogRecord> = if tailed.is_empty() {
            Vec::new()
        } else {
            jobs.iter().flat_map(|j| &j.records).filter(|r| tailed.contains(&r.project_id)).cloned().collect()
        };
        if let Err(error) = &result {
            tracing::error!(%error, requests = jobs.len(), logs, "embedded write failed; requests answered 503");
        } else {
            tracing::debug!(requests = jobs.len(), logs, "embedded batch committed");
            crate::metrics::metrics().written("embedded", logs);
        }
        for job in jobs {
            // The request may have given up waiting; then nobody is told, and that is fine: it was not
            // answered 202.
            let _ = job.done.send(result.clone());
        }
        // After the answers: the live tail and live analytics must not delay a 202.
        if !tailing.is_empty()
            && let Err(error) = tail.publish(tailing, &tailed).await
        {
            tracing::warn!(%error, "could not publish committed logs to the live tail");
        }
        if let Some(stats) = stats
            && let Err(error) = metrics.add(&stats).await
        {
            tracing::warn!(%error, "could not update live analytics; the rebuild job will");
        }
    }
}

/// The waiting requests' logs, in one transaction through the store's write port.
async fn write<W: RecordWriter>(store: &W, jobs: &[Job]) -> Result<(), WriteError> {
    let groups: Vec<&[ledger_stages::LogRecord]> = jobs.iter().map(|job| job.records.as_slice()).collect();
    let decided = std::time::Instant::now();
    let late = late_blocks(groups.iter().flat_map(|g| g.iter()), chrono::Utc::now());
    let late = Late { blocks: &late, decided };
    let expires_at = chrono::Utc::now() + crate::store::IDEMPOTENCY_KEEP;
    let answers: Vec<KeptAnswer> = jobs
        .iter()
        .filter_map(|job| {
            let (key, answer) = job.meta.idempotency.as_ref()?;
            Some(KeptAnswer { project: job.project, key, answer, expires_at })
        })
        .collect();
    let batch = WriteBatch { rows: &groups[..], dead_letters: &[], offset: None, late, answers: &answers };
    store.write(batch).await
}

#[async_trait]
impl LogQueue for EmbeddedQueue {
    async fn enqueue(
        &self,
        project: &ProjectContext,
        records: Vec<LogRecord>,
        meta: BatchMeta,
    ) -> Result<(), QueueError> {
        let n = records.len() as u64;
        let full = QueueError::Full { retry_after: Duration::from_secs(1) };
        if !self.pending.try_add(project.project_id, n, project.settings.max_queue_depth) {
            return Err(full);
        }
        // Whatever happens next, these logs stop being pending when this request ends.
        struct Release<'a>(&'a Pending, uuid::Uuid, u64);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.remove(self.1, self.2);
            }
        }
        let _release = Release(&self.pending, project.project_id, n);
        let (done, answer) = oneshot::channel();
        self.jobs.try_send(Job { project: project.project_id, records, meta, done }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Unavailable("the writer has stopped".into()),
        })?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(cause)) => Err(QueueError::Unavailable(cause)),
            Err(_) => Err(QueueError::Unavailable("the writer stopped before committing".into())),
        }
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.pending.total())
    }
}
