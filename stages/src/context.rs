//! What the auth stage learns about a request's credential and hands to every later stage.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A permission an API key carries. Keys are scoped so that a key baked into an application (ingest) cannot
/// read back the logs of every other application of the project (query).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Ingest,
    Query,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Ingest, Scope::Query];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

/// A project's limits. Defaults come from `[defaults]` in config.toml (this very type: the settings are
/// declared once); each project may override them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectSettings {
    /// Ingestion requests per sliding minute.
    pub rate_limit_per_minute: u32,
    /// Ingestion requests per sliding hour.
    pub rate_limit_per_hour: u32,
    /// Logs accepted per UTC day.
    pub daily_quota: u64,
    /// Days a log is kept.
    pub retention_days: u32,
    /// Logs that may wait in the queue before ingestion answers 503 `queue_full`.
    pub max_queue_depth: u64,
}

impl Default for ProjectSettings {
    fn default() -> Self {
        ProjectSettings {
            rate_limit_per_minute: 1000,
            rate_limit_per_hour: 50_000,
            daily_quota: 10_000_000,
            retention_days: 30,
            max_queue_depth: 100_000,
        }
    }
}

/// The project an API key belongs to, as the auth stage resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectContext {
    pub project_id: Uuid,
    pub key_id: Uuid,
    pub scopes: Vec<Scope>,
    pub settings: ProjectSettings,
}

impl ProjectContext {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}
