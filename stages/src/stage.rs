//! The tower plumbing every stage shares.
//!
//! A stage is a [`Stage`]: one async step over the request that either lets it through or refuses it.
//! [`StageLayer`] and [`StageService`] turn any stage into a tower `Layer` and `Service` wrapping the next
//! service, so each stage module holds only its logic, its config and its error.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::request::{Accepted, Ingest, IngestError};

/// One step of the ingestion stack.
#[async_trait::async_trait]
pub trait Stage: Send + Sync + 'static {
    /// The stage's name, for spans and metrics.
    const NAME: &'static str;

    /// Checks or changes the request; an error ends it with that outcome.
    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError>;

    /// A later stage refused the request this stage let through, or `request.logs` of it (a front that
    /// answers per log, see [`Ingest::partial`]): undo what `apply` counted for them.
    async fn refused_later(&self, _request: &Summary) {}
}

/// What a stage may need to know of a request once it has been handed on.
#[derive(Clone, Debug)]
pub struct Summary {
    pub project: Option<crate::ProjectContext>,
    /// The logs refused.
    pub logs: usize,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// A stage as a tower `Layer`: a cheap clone of the stage.
pub struct StageLayer<T> {
    stage: Arc<T>,
}

impl<T> Clone for StageLayer<T> {
    fn clone(&self) -> Self {
        StageLayer { stage: self.stage.clone() }
    }
}

impl<T: Stage> StageLayer<T> {
    pub fn new(stage: T) -> Self {
        StageLayer { stage: Arc::new(stage) }
    }
}

impl<T, S> Layer<S> for StageLayer<T> {
    type Service = StageService<T, S>;

    fn layer(&self, inner: S) -> Self::Service {
        StageService { stage: self.stage.clone(), inner }
    }
}

/// A stage in front of the next service.
pub struct StageService<T, S> {
    stage: Arc<T>,
    inner: S,
}

impl<T, S: Clone> Clone for StageService<T, S> {
    fn clone(&self) -> Self {
        StageService { stage: self.stage.clone(), inner: self.inner.clone() }
    }
}

impl<T, S> Service<Ingest> for StageService<T, S>
where
    T: Stage,
    S: Service<Ingest, Response = Accepted, Error = IngestError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Accepted;
    type Error = IngestError;
    type Future = BoxFuture<'static, Result<Accepted, IngestError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Ingest) -> Self::Future {
        // The clone that was polled ready is the one to call; leave a fresh clone behind (tower's idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let stage = self.stage.clone();
        Box::pin(async move {
            let span = tracing::debug_span!("stage", otel.name = T::NAME, name = T::NAME);
            tracing::Instrument::instrument(stage.apply(&mut request), span).await?;
            let mut summary =
                Summary { project: request.project.clone(), logs: request.len(), received_at: request.received_at };
            let report = request.report.clone();
            let result = inner.call(request).await;
            if result.is_ok() {
                // Accepted, but perhaps without the logs a partial request had refused, or those a rule
                // removed (which count against nothing).
                let removed = report.removed.get().map_or(0, |r| r.total() as usize);
                summary.logs = report.rejected.get().map_or(0, Vec::len) + removed;
            }
            if summary.logs > 0 {
                stage.refused_later(&summary).await;
            }
            result
        })
    }
}

/// Runs `apply` over a request's records: inline when only the operator's rules apply, on the blocking pool
/// ([`crate::rules::off_the_runtime`]) when the project's own do, so that their cost is paid by the project's requests
/// and not by the async workers every tenant shares.
pub async fn over_records<R: Send + 'static>(
    records: &mut Vec<crate::LogRecord>,
    project_rules: bool,
    apply: impl FnOnce(&mut [crate::LogRecord]) -> R + Send + 'static,
) -> Result<R, crate::IngestError> {
    if !project_rules {
        return Ok(apply(records));
    }
    let mut taken = std::mem::take(records);
    let (taken, result) = crate::rules::off_the_runtime(move || {
        let result = apply(&mut taken);
        (taken, result)
    })
    .await
    .ok_or_else(|| crate::IngestError::unavailable("the project's stage rules"))?;
    *records = taken;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::{Layer, ServiceExt};
    use tower_test::mock;

    use super::*;
    use crate::request::Protocol;

    /// Counts what it lets through, and what it is told was refused later.
    #[derive(Default)]
    struct Counting {
        applied: AtomicUsize,
        undone: AtomicUsize,
        refuse: bool,
    }

    #[async_trait::async_trait]
    impl Stage for Arc<Counting> {
        const NAME: &'static str = "counting";

        async fn apply(&self, _request: &mut Ingest) -> Result<(), IngestError> {
            self.applied.fetch_add(1, Ordering::SeqCst);
            if self.refuse { Err(IngestError::Unauthorized) } else { Ok(()) }
        }

        async fn refused_later(&self, _request: &Summary) {
            self.undone.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn request() -> Ingest {
        Ingest::new("r".into(), Protocol::Http, None, vec![serde_json::json!({"message": "m"}).into()])
    }

    /// The mock's errors are boxed; the stack's are `IngestError`.
    fn unbox(e: tower::BoxError) -> IngestError {
        match e.downcast::<IngestError>() {
            Ok(e) => *e,
            Err(other) => panic!("unexpected mock error: {other}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stage_passes_the_request_on_and_is_told_when_a_later_stage_refuses_it() {
        let counting = Arc::new(Counting::default());
        let (inner, mut handle) = mock::pair::<Ingest, Accepted>();
        let service =
            StageLayer::new(counting.clone()).layer(inner.map_err(unbox as fn(tower::BoxError) -> IngestError));

        let call = tokio::spawn(service.clone().oneshot(request()));
        let (seen, reply) = handle.next_request().await.expect("passed on");
        assert_eq!(seen.len(), 1);
        reply.send_response(Accepted { ids: vec![] });
        assert!(call.await.expect("joined").is_ok());
        assert_eq!(counting.undone.load(Ordering::SeqCst), 0);

        let call = tokio::spawn(service.oneshot(request()));
        let (_, reply) = handle.next_request().await.expect("passed on");
        reply.send_error(IngestError::QueueFull { retry_after: std::time::Duration::from_secs(1) });
        let refused = call.await.expect("joined").expect_err("refused");
        assert_eq!(refused, IngestError::QueueFull { retry_after: std::time::Duration::from_secs(1) });
        assert_eq!(counting.undone.load(Ordering::SeqCst), 1, "the stage undid its count");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_stage_never_reaches_the_next_service() {
        let counting = Arc::new(Counting { refuse: true, ..Counting::default() });
        let (inner, mut handle) = mock::pair::<Ingest, Accepted>();
        handle.allow(1);
        let service =
            StageLayer::new(counting.clone()).layer(inner.map_err(unbox as fn(tower::BoxError) -> IngestError));
        assert_eq!(service.oneshot(request()).await.expect_err("refused"), IngestError::Unauthorized);
        assert!(handle.next_request().await.is_none(), "nothing reached the inner service");
        assert_eq!(counting.undone.load(Ordering::SeqCst), 0, "a stage is not told about its own refusal");
    }
}
