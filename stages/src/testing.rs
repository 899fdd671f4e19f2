//! What the stages' unit tests share: a log, a project, and a run of one stage in front of a mock next
//! service.

use std::sync::Arc;

use chrono::Utc;
use tower::{Layer, ServiceExt};
use tower_test::mock;
use uuid::Uuid;

use crate::log::{Level, LogRecord};
use crate::request::{Accepted, Ingest, IngestError};
use crate::rules::StageRules;
use crate::stage::{Stage, StageLayer};

/// An INFO log with `message` and nothing else.
pub fn log(message: &str) -> LogRecord {
    LogRecord { id: Uuid::nil(), ..LogRecord::new(Uuid::nil(), Utc::now(), Level::Info, message) }
}

/// A project (as auth resolves it) with `stages` as its own rules.
pub fn project(stages: Option<StageRules>) -> crate::ProjectContext {
    crate::ProjectContext {
        project_id: Uuid::now_v7(),
        key_id: Uuid::nil(),
        scopes: vec![],
        settings: crate::ProjectSettings::default(),
        stages: stages.map(Arc::new),
    }
}

/// Runs `records` of `project` through the stage `layer`, and returns the request the next service got.
pub async fn passed_on<T: Stage>(
    layer: StageLayer<T>,
    project: crate::ProjectContext,
    records: Vec<LogRecord>,
) -> Ingest {
    let (inner, mut handle) = mock::pair::<Ingest, Accepted>();
    let service = layer.layer(inner.map_err(unavailable as fn(tower::BoxError) -> IngestError));
    let mut request = Ingest::new("r".into(), crate::Protocol::Http, None, vec![]);
    request.project = Some(project);
    request.records = records;
    let call = tokio::spawn(service.oneshot(request));
    let (seen, reply) = handle.next_request().await.expect("passed on");
    reply.send_response(Accepted { ids: vec![] });
    call.await.expect("joined").expect("accepted");
    seen
}

/// A mock's boxed error as the stack's.
fn unavailable(_: tower::BoxError) -> IngestError {
    IngestError::unavailable("the mock")
}
