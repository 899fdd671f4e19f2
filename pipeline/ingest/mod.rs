//! Ingestion: the stack of stages, built once from `[ingest]` and `[stages.*]`, that every front shares (REST,
//! gRPC, OTLP, Loki, Elasticsearch, syslog).
//! The fronts decode into an [`Ingest`] request, call the stack, and encode its answer; nothing else.

use std::sync::Arc;

use ledger_stages::auth::{Authenticate, KeyValidator, authenticate};
use ledger_stages::enrich::Enrich;
use ledger_stages::fingerprint::Fingerprint;
use ledger_stages::parse::{Parse, Parser};
use ledger_stages::queue::{LogQueue, QueueService};
use ledger_stages::quota::{Quota, QuotaCounter};
use ledger_stages::rate_limit::{RateLimit, RateLimiter};
use ledger_stages::redact::{Redact, Redactor};
use ledger_stages::rules::Compiled;
use ledger_stages::sample::{Sample, Sampler};
use ledger_stages::validate::{Validate, ValidateConfig};
use ledger_stages::{Accepted, Ingest, IngestError, ProjectContext, Protocol};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::config::{IngestConfig, StagesConfig};

pub mod decode;
pub mod map;
pub mod outcome;

/// The assembled stack, cheap to clone.
pub type Stack = BoxCloneSyncService<Ingest, Accepted, IngestError>;

/// The stack and the counting of its outcomes: what every front calls, in this order:
/// [`Ingestion::admit`] with the credential from headers or metadata (before any body is read), then
/// [`Ingestion::reserve`] for the body it is about to read, then [`Ingestion::run`] with the decoded logs.
#[derive(Clone)]
pub struct Ingestion {
    pub stack: Stack,
    pub outcomes: Arc<outcome::Outcomes>,
    /// Largest body after decompression.
    pub max_body_bytes: usize,
    /// Logs per request at most (`stages.validate.max_request_logs`): decoding stops one past it.
    pub max_request_logs: usize,
    /// Bytes a protocol may share among its records at most (Loki's stream labels, OTLP's resource and
    /// scope attributes, an Elasticsearch index name): each record gets a copy, so more is refused before
    /// the copies are made. `stages.validate.max_attributes_bytes`: more would make every record invalid.
    pub max_shared_bytes: usize,
    /// Cancelled on shutdown: from then on, requests are refused with 503 instead of accepted.
    pub draining: tokio_util::sync::CancellationToken,
    pub validator: KeyValidator,
    /// KiB of request bodies being read, decoded or held by the stack, across every front of this instance.
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// Idempotency keys: in-process, or shared by every instance.
    pub idempotency: Arc<dyn crate::store::IdempotencyStore>,
    /// The parse, redact and sample stages' rules, as the stack uses them (a reload swaps them).
    pub rules: StageRuleSet,
}

/// How long a repeat of an idempotency key gets the first answer (API.md: 10 minutes).
pub use crate::store::IDEMPOTENCY_KEEP;
/// How long a claimed key waits for its request's answer at most: a request whose instance died frees its
/// key then.
const IDEMPOTENCY_PENDING: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a repeat waits for the first request with its key to finish before answering 503.
const IDEMPOTENCY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether an `Idempotency-Key` is acceptable: 1 to 128 printable ASCII characters.
pub(crate) fn idempotency_key_ok(key: &str) -> bool {
    (1..=128).contains(&key.len()) && key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A request whose credential is good, on its way to the stack. Dropped before [`Ingestion::run`] (the
/// client went away while its body was read) or refused by [`Admitted::refuse`], it still ends in one
/// counted outcome.
pub struct Admitted {
    pub project: ProjectContext,
    front: Protocol,
    received_at: chrono::DateTime<chrono::Utc>,
    outcomes: Arc<outcome::Outcomes>,
    /// Set once the request has an outcome of its own.
    settled: bool,
}

impl Admitted {
    /// The project, for a front that admits each message of a stream by it ([`Ingestion::resume`]): this
    /// admission itself ends here without an outcome of its own.
    pub(crate) fn into_project(mut self) -> ProjectContext {
        self.settled = true;
        self.project.clone()
    }

    /// The request was refused before the stack (bad body, no room): counted as `outcome`.
    pub(crate) fn refuse(self, outcome: outcome::Outcome) {
        self.settle(outcome);
    }

    /// The request succeeded without the stack: it held no logs, or its idempotency key's first answer
    /// was given again (its logs were counted the first time). Counted as accepted, with no logs.
    pub(crate) fn accepted_without_logs(self) {
        self.settle(outcome::Outcome::Accepted);
    }

    fn settle(mut self, outcome: outcome::Outcome) {
        self.settled = true;
        let day = self.received_at.date_naive();
        self.outcomes.record(self.front, Some(self.project.project_id), day, outcome, 0, 0);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.settled {
            let day = self.received_at.date_naive();
            self.outcomes.record(self.front, Some(self.project.project_id), day, outcome::Outcome::Cancelled, 0, 0);
        }
    }
}

/// Bodies are reserved in KiB, so the semaphore's count fits any sane budget.
const RESERVE_UNIT: usize = 1024;

/// A request's share of `server.max_inflight_body_bytes`: what its body holds now (read, decompressed or
/// decoded), given back when dropped.
pub struct Room {
    inflight: Arc<tokio::sync::Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Room {
    /// Holds at least `bytes`; 503 when the instance's budget has no room for the difference (what was
    /// held stays held).
    pub(crate) fn grow_to(&mut self, bytes: usize) -> Result<(), IngestError> {
        let want = bytes.div_ceil(RESERVE_UNIT).max(1);
        let have = self.permit.as_ref().map_or(0, |p| p.num_permits());
        if want <= have {
            return Ok(());
        }
        let more = u32::try_from(want - have).unwrap_or(u32::MAX);
        let more = self
            .inflight
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| IngestError::unavailable("room for request bodies on this instance"))?;
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
        Ok(())
    }

    /// Gives back all but `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(RESERVE_UNIT).max(1);
        if let Some(permit) = &mut self.permit
            && permit.num_permits() > keep
        {
            drop(permit.split(permit.num_permits() - keep));
        }
    }
}

impl Ingestion {
    /// The project of a request through `front`, from its credential alone; refusals are counted. Nothing
    /// of the body has been read when this answers, so an unknown key costs a cache look-up and nothing more.
    pub(crate) async fn admit(&self, front: Protocol, credential: Option<&str>) -> Result<Admitted, IngestError> {
        let received_at = chrono::Utc::now();
        let result = if self.draining.is_cancelled() {
            Err(IngestError::unavailable("this instance (shutting down)"))
        } else {
            match credential {
                Some(credential) => authenticate(&self.validator, credential).await,
                None => Err(IngestError::Unauthorized),
            }
        };
        match result {
            Ok(project) => {
                Ok(Admitted { project, front, received_at, outcomes: self.outcomes.clone(), settled: false })
            }
            Err(e) => {
                let outcome = outcome::Outcome::of(&Err(e.clone()));
                self.outcomes.record(front, None, received_at.date_naive(), outcome, 0, 0);
                Err(e)
            }
        }
    }

    /// A request of a project already admitted by [`Ingestion::admit`] (another message of the same call).
    pub(crate) fn resume(&self, front: Protocol, project: ProjectContext) -> Admitted {
        Admitted { project, front, received_at: chrono::Utc::now(), outcomes: self.outcomes.clone(), settled: false }
    }

    /// Room for `bytes` of a body among every body this instance holds; 503 when full. A body read as it
    /// arrives takes an empty room and grows it ([`Room::grow_to`]), so a slow client holds only what it
    /// has sent, not what it may send.
    pub(crate) fn reserve(&self, bytes: usize) -> Result<Room, IngestError> {
        let mut room = self.room();
        room.grow_to(bytes.min(self.max_body_bytes))?;
        Ok(room)
    }

    /// An empty room, to grow as a body arrives.
    pub(crate) fn room(&self) -> Room {
        Room { inflight: self.inflight.clone(), permit: None }
    }

    /// Runs one admitted request through the stack and counts its outcome (for a partial request, the logs
    /// validate left out as `invalid`; logs sample removed as `dropped_by_rule` or `sampled_out`). The stack runs as a task of its own: a client that goes away
    /// mid-request does not cut it short, so quota, queue and outcome agree.
    pub(crate) async fn run(
        &self,
        mut admitted: Admitted,
        mut request: Ingest,
    ) -> (Result<Accepted, IngestError>, Arc<ledger_stages::Report>) {
        use tower::ServiceExt;
        use tracing::Instrument;
        admitted.settled = true;
        let project = Some(admitted.project.project_id);
        let front = admitted.front;
        request.protocol = front;
        request.received_at = admitted.received_at;
        request.project = Some(admitted.project.clone());
        let report = request.report.clone();
        let (logs, bytes, day) = (request.len() as u64, request.body_bytes, request.received_at.date_naive());
        if self.draining.is_cancelled() {
            let result = Err(IngestError::unavailable("this instance (shutting down)"));
            self.outcomes.record(front, project, day, outcome::Outcome::of(&result), logs, bytes);
            return (result, report);
        }
        tracing::Span::current().record("front", front.name());
        // The queue carries the request's trace context, so the worker's batch span can link to it.
        request.traceparent = crate::telemetry::current_traceparent();
        let (stack, outcomes, counted) = (self.stack.clone(), self.outcomes.clone(), report.clone());
        let task = tokio::spawn(
            async move {
                let result = stack.oneshot(request).await;
                let rejected = counted.rejected.get().map_or(0, Vec::len) as u64;
                // Removed logs end as such only when the request was accepted: a refused one is retried.
                let removed = if result.is_ok() {
                    counted.removed.get().copied().unwrap_or_default()
                } else {
                    Default::default()
                };
                let kept = logs - rejected - removed.total();
                outcomes.record(front, project, day, outcome::Outcome::of(&result), kept, bytes);
                for (outcome, n) in [
                    (outcome::Outcome::Invalid, rejected),
                    (outcome::Outcome::DroppedByRule, removed.dropped),
                    (outcome::Outcome::SampledOut, removed.sampled_out),
                ] {
                    if n > 0 {
                        outcomes.record_logs(front, project, day, outcome, n, 0);
                    }
                }
                result
            }
            .instrument(tracing::Span::current()),
        );
        let result = match task.await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "the ingestion stack panicked");
                Err(IngestError::unavailable("ingestion"))
            }
        };
        (result, report)
    }
}

impl Ingestion {
    /// [`Ingestion::run`] once per idempotency key and project: a repeat of the key within
    /// [`IDEMPOTENCY_KEEP`] gets the first answer again and stores nothing (the flag says it is a replay);
    /// a repeat while the first runs waits for its answer. An acceptance is remembered, and so is a batch
    /// refused after it reached the queue (not confirmed by enough replicas: its logs will be stored), so
    /// a retry of it is answered with its ids; after any other refusal, a retry runs again. Without a key,
    /// this is `run`.
    pub(crate) async fn run_once(
        &self,
        admitted: Admitted,
        request: Ingest,
        key: Option<&str>,
    ) -> (Result<Accepted, IngestError>, Arc<ledger_stages::Report>, bool) {
        let Some(key) = key else {
            let (result, report) = self.run(admitted, request).await;
            return (result, report, false);
        };
        let project = admitted.project.project_id;
        let started = tokio::time::Instant::now();
        loop {
            match self.idempotency.claim(project, key, IDEMPOTENCY_PENDING).await {
                Ok(crate::store::Claim::Claimed) => break,
                Ok(crate::store::Claim::Answered(answer)) => {
                    let ids = answer.split(',').filter_map(|id| uuid::Uuid::parse_str(id).ok()).collect();
                    admitted.accepted_without_logs();
                    return (Ok(Accepted { ids }), request.report, true);
                }
                Ok(crate::store::Claim::Pending) if started.elapsed() < IDEMPOTENCY_WAIT => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Ok(crate::store::Claim::Pending) => {
                    admitted.refuse(outcome::Outcome::Unavailable);
                    let error = IngestError::unavailable("the answer of the first request with this Idempotency-Key");
                    return (Err(error), request.report, false);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read idempotency keys");
                    admitted.refuse(outcome::Outcome::Unavailable);
                    return (Err(IngestError::unavailable("idempotency keys")), request.report, false);
                }
            }
        }
        // The run and the keeping of its answer go on if the client goes away meanwhile: the key must not
        // stay claimed by a request that was stored.
        let (this, key) = (self.clone(), key.to_owned());
        let mut request = request;
        request.idempotency_key = Some(key.clone());
        let task = tokio::spawn(async move {
            let (result, report) = this.run(admitted, request).await;
            let answer = ledger_stages::queue::idempotency_answer;
            let kept = match (&result, report.unconfirmed.get()) {
                (Ok(accepted), _) => {
                    this.idempotency.complete(project, &key, &answer(&accepted.ids), IDEMPOTENCY_KEEP).await
                }
                (Err(_), Some(queued)) => {
                    this.idempotency.complete(project, &key, &answer(queued), IDEMPOTENCY_KEEP).await
                }
                (Err(_), None) => this.idempotency.release(project, &key).await,
            };
            if let Err(error) = kept {
                tracing::warn!(%error, "cannot keep an idempotency key's answer; a retry may store its logs again");
            }
            (result, report)
        });
        let (result, report) = match task.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "an idempotent ingestion panicked");
                (Err(IngestError::unavailable("ingestion")), Arc::default())
            }
        };
        (result, report, false)
    }
}

/// The compiled rules of the parse, redact and sample stages: the stack holds them, a reload swaps the
/// config's in place (requests in flight finish with the rules they started with).
#[derive(Clone)]
pub struct StageRuleSet {
    pub parse: Arc<Compiled<Parser>>,
    pub redact: Arc<Compiled<Redactor>>,
    pub sample: Arc<Compiled<Sampler>>,
}

/// The three stages' config rules, compiled; or the problems, on one line.
fn compile_rules(config: &StagesConfig) -> Result<(Parser, Redactor, Sampler), String> {
    ledger_stages::compile::compile_config(
        &config.parse.rules,
        &config.redact.rules,
        config.redact.hash_key.expose().as_bytes(),
        &config.sample.rules,
    )
}

impl StageRuleSet {
    pub(crate) fn compile(config: &StagesConfig) -> Result<StageRuleSet, String> {
        let (parse, redact, sample) = compile_rules(config)?;
        Ok(StageRuleSet {
            parse: Arc::new(Compiled::new(parse)),
            redact: Arc::new(Compiled::new(redact)),
            sample: Arc::new(Compiled::new(sample)),
        })
    }

    /// Swaps in the rules of `config`, all three or none.
    pub(crate) fn reload(&self, config: &StagesConfig) -> Result<(), String> {
        let (parse, redact, sample) = compile_rules(config)?;
        self.parse.replace(parse);
        self.redact.replace(redact);
        self.sample.replace(sample);
        Ok(())
    }

    /// The hash key the redact stage uses now, for checking a project's rules.
    pub(crate) fn hash_key(&self) -> Option<Vec<u8>> {
        self.redact.global().key().map(<[u8]>::to_vec)
    }
}

/// What the stages need from the backend.
pub struct Parts {
    pub validator: KeyValidator,
    pub limiter: Arc<dyn RateLimiter>,
    pub quota: Arc<dyn QuotaCounter>,
    pub queue: Arc<dyn LogQueue>,
    pub validate: ValidateConfig,
    pub rules: StageRuleSet,
}

/// Builds the stack. The config was checked by `Config::check`.
pub(crate) fn build(config: &IngestConfig, parts: Parts) -> Stack {
    use crate::config::Stage;
    let stack = ServiceBuilder::new()
        // First: every later stage works for a project, and unauthenticated requests cost nothing more.
        .layer(Authenticate::layer(parts.validator))
        // Before quota: a request refused for its rate must not use up the day's quota.
        .option_layer(config.has(Stage::RateLimit).then(|| RateLimit::layer(parts.limiter)))
        // Before validation: an over-quota project is refused without the cost of checking its logs. Its
        // count is given back if a later stage refuses the request.
        .option_layer(config.has(Stage::Quota).then(|| Quota::layer(parts.quota)))
        // Turns decoded logs into records, or refuses the whole batch.
        .layer(Validate::layer(parts.validate.clone()))
        // Fields out of messages, within validate's limits.
        .option_layer(config.has(Stage::Parse).then(|| Parse::layer(parts.rules.parse.clone(), parts.validate)))
        // Before anything keeps, fingerprints or queues a log, and after parse (what parse lifts is redacted).
        .option_layer(config.has(Stage::Redact).then(|| Redact::layer(parts.rules.redact.clone())))
        // Ids and times, once the batch is known to be good.
        .layer(Enrich::layer())
        // Needs the normalized record.
        .option_layer(config.has(Stage::Fingerprint).then(Fingerprint::layer))
        // Needs the fingerprint (to sample logs without a trace); after it, only what is kept is queued.
        .option_layer(config.has(Stage::Sample).then(|| Sample::layer(parts.rules.sample.clone())))
        // Innermost: the durable enqueue, after which the answer is 202.
        .service(QueueService::new(parts.queue));
    BoxCloneSyncService::new(stack)
}
