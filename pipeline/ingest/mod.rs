//! Ingestion: the stack of stages, built once from `[ingest]` and `[stages.*]`, that REST and gRPC share.
//! The fronts decode into an [`Ingest`] request, call the stack, and encode its answer; nothing else.

use std::sync::Arc;

use ledger_stages::auth::{Authenticate, KeyValidator};
use ledger_stages::enrich::Enrich;
use ledger_stages::fingerprint::Fingerprint;
use ledger_stages::queue::{LogQueue, QueueService};
use ledger_stages::quota::{Quota, QuotaCounter};
use ledger_stages::rate_limit::{RateLimit, RateLimiter};
use ledger_stages::validate::{Validate, ValidateConfig};
use ledger_stages::{Accepted, Ingest, IngestError};
use serde::Deserialize;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

pub mod decode;
pub mod outcome;

/// Every stage, in the only order the stack runs them.
pub const STAGES: [&str; 7] = ["auth", "rate_limit", "quota", "validate", "enrich", "fingerprint", "queue"];
/// Stages that cannot be left out: without them a request has no project, no records, no ids, or no home.
pub const REQUIRED: [&str; 4] = ["auth", "validate", "enrich", "queue"];

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The stages to run, in stack order. `rate_limit`, `quota` and `fingerprint` may be left out.
    pub stages: Vec<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { stages: STAGES.iter().map(|s| (*s).to_owned()).collect() }
    }
}

impl IngestConfig {
    /// Why the stage list is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        if let Some(unknown) = self.stages.iter().find(|s| !STAGES.contains(&s.as_str())) {
            return Some(format!("ingest.stages: unknown stage `{unknown}` (stages: {})", STAGES.join(", ")));
        }
        if let Some(missing) = REQUIRED.iter().find(|r| !self.stages.iter().any(|s| s == *r)) {
            return Some(format!("ingest.stages: `{missing}` cannot be left out"));
        }
        let positions: Vec<usize> =
            self.stages.iter().filter_map(|s| STAGES.iter().position(|known| known == s)).collect();
        if positions.windows(2).any(|w| w[0] >= w[1]) {
            return Some(format!("ingest.stages: stages run in the order {}, each once", STAGES.join(" → ")));
        }
        None
    }

    fn has(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
}

/// The assembled stack, cheap to clone.
pub type Stack = BoxCloneSyncService<Ingest, Accepted, IngestError>;

/// The stack and the counting of its outcomes: what both fronts call.
#[derive(Clone)]
pub struct Ingestion {
    pub stack: Stack,
    pub outcomes: Arc<outcome::Outcomes>,
    /// Largest body after decompression.
    pub max_body_bytes: usize,
    /// Cancelled on shutdown: from then on, requests are refused with 503 instead of accepted.
    pub draining: tokio_util::sync::CancellationToken,
}

impl Ingestion {
    /// Runs one request through the stack and counts its outcome.
    pub async fn run(&self, mut request: Ingest) -> (Result<Accepted, IngestError>, Arc<ledger_stages::Report>) {
        use tower::ServiceExt;
        let report = request.report.clone();
        if self.draining.is_cancelled() {
            return (Err(IngestError::unavailable("this instance (shutting down)")), report);
        }
        // The queue carries the request's trace context, so the worker's batch span can link to it.
        request.traceparent = crate::telemetry::current_traceparent();
        let (logs, bytes, day) = (request.len() as u64, request.body_bytes, request.received_at.date_naive());
        let result = self.stack.clone().oneshot(request).await;
        self.outcomes.record(report.project.get().copied(), day, outcome::Outcome::of(&result), logs, bytes);
        (result, report)
    }
}

/// What the stages need from the backend.
pub struct Parts {
    pub validator: KeyValidator,
    pub limiter: Arc<dyn RateLimiter>,
    pub quota: Arc<dyn QuotaCounter>,
    pub queue: Arc<dyn LogQueue>,
    pub validate: ValidateConfig,
}

/// Builds the stack. The config was checked by `Config::check`.
pub fn build(config: &IngestConfig, parts: Parts) -> Stack {
    let stack = ServiceBuilder::new()
        // First: every later stage works for a project, and unauthenticated requests cost nothing more.
        .layer(Authenticate::layer(parts.validator))
        // Before quota: a request refused for its rate must not use up the day's quota.
        .option_layer(config.has("rate_limit").then(|| RateLimit::layer(parts.limiter)))
        // Before validation: an over-quota project is refused without the cost of checking its logs. Its
        // count is given back if a later stage refuses the request.
        .option_layer(config.has("quota").then(|| Quota::layer(parts.quota)))
        // Turns decoded logs into records, or refuses the whole batch.
        .layer(Validate::layer(parts.validate))
        // Ids and times, once the batch is known to be good.
        .layer(Enrich::layer())
        // Needs the normalized record.
        .option_layer(config.has("fingerprint").then(Fingerprint::layer))
        // Innermost: the durable enqueue, after which the answer is 202.
        .service(QueueService::new(parts.queue));
    BoxCloneSyncService::new(stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(stages: &[&str]) -> IngestConfig {
        IngestConfig { stages: stages.iter().map(|s| (*s).to_owned()).collect() }
    }

    #[test]
    fn stage_lists_are_checked() {
        assert_eq!(IngestConfig::default().problem(), None);
        assert_eq!(config(&["auth", "validate", "enrich", "queue"]).problem(), None);
        assert!(config(&["auth", "validate", "enrich"]).problem().expect("queue missing").contains("queue"));
        assert!(config(&["auth", "validat", "enrich", "queue"]).problem().expect("typo").contains("validat"));
        assert!(config(&["validate", "auth", "enrich", "queue"]).problem().expect("order").contains("order"));
        assert!(config(&["auth", "auth", "validate", "enrich", "queue"]).problem().expect("twice").contains("once"));
    }
}
