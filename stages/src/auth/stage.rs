//! The auth stage: the request's credential → its project, which must grant the `ingest` scope.

use super::validator::{AuthError, KeyValidator};
use crate::Scope;
use crate::request::{Ingest, IngestError};
use crate::stage::{Stage, StageLayer};

pub struct Authenticate {
    validator: KeyValidator,
}

impl Authenticate {
    pub fn layer(validator: KeyValidator) -> StageLayer<Authenticate> {
        StageLayer::new(Authenticate { validator })
    }
}

#[async_trait::async_trait]
impl Stage for Authenticate {
    const NAME: &'static str = "auth";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        // Taken, not borrowed: the key goes no further than this stage.
        let credential = request.credential.take().ok_or(IngestError::Unauthorized)?;
        let project = self.validator.validate(&credential).await.map_err(|e| match e {
            AuthError::Malformed(_) | AuthError::Unknown => IngestError::Unauthorized,
            // A store outage must not look like a revocation: 503, and the client retries.
            AuthError::Unavailable(_) => IngestError::unavailable("the account store"),
        })?;
        if !project.has_scope(Scope::Ingest) {
            return Err(IngestError::InsufficientScope(Scope::Ingest));
        }
        let _ = request.report.project.set(project.project_id);
        request.project = Some(project);
        Ok(())
    }
}
