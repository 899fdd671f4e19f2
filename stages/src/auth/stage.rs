//! The auth stage: the request's credential → its project, which must grant the `ingest` scope.

use super::validator::{AuthError, KeyValidator};
use crate::request::{Ingest, IngestError};
use crate::stage::{Stage, StageLayer};
use crate::{ProjectContext, Scope};

pub struct Authenticate {
    validator: KeyValidator,
}

impl Authenticate {
    pub fn layer(validator: KeyValidator) -> StageLayer<Authenticate> {
        StageLayer::new(Authenticate { validator })
    }
}

/// The project of an ingestion credential, which must grant the `ingest` scope. Fronts call this with the
/// credential from headers or metadata before they read a body, so an unknown key costs no decoding; the
/// stage then finds the request's project already set.
pub async fn authenticate(validator: &KeyValidator, credential: &str) -> Result<ProjectContext, IngestError> {
    let project = validator.validate(credential).await.map_err(|e| match e {
        AuthError::Malformed(_) | AuthError::Unknown => IngestError::Unauthorized,
        // A store outage must not look like a revocation: 503, and the client retries.
        AuthError::Unavailable(_) => IngestError::unavailable("the account store"),
    })?;
    if !project.has_scope(Scope::Ingest) {
        return Err(IngestError::InsufficientScope(Scope::Ingest));
    }
    Ok(project)
}

#[async_trait::async_trait]
impl Stage for Authenticate {
    const NAME: &'static str = "auth";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        // Taken, not borrowed: the key goes no further than this stage.
        let credential = request.credential.take();
        let project = match (request.project.take(), credential) {
            // Authenticated by the front before it read the body.
            (Some(project), _) => project,
            (None, Some(credential)) => authenticate(&self.validator, &credential).await?,
            (None, None) => return Err(IngestError::Unauthorized),
        };
        let _ = request.report.project.set(project.project_id);
        request.project = Some(project);
        Ok(())
    }
}
