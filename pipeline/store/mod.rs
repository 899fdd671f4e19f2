//! Storage and the hot path behind traits, each with a shared (PostgreSQL + Redis) and an embedded (SQLite +
//! in-process) implementation. Which one runs is `backend.kind`; nothing above this module knows.
//!
//! | trait | shared | embedded |
//! |---|---|---|
//! | [`AccountStore`] (users, projects, keys) | [`sql::SqlStore`] on PostgreSQL | [`sql::SqlStore`] on SQLite |
//! | [`SessionStore`] | [`redis::RedisCache`] | [`sql::SqlStore`] on SQLite |
//! | [`Counters`] (login failures) | [`redis::RedisCache`] | [`memory::MemoryCounters`] |
//! | [`SharedKeyCache`] | [`redis::RedisCache`] | none: the in-process tier is the only one |
//!
//! The account store is one implementation over both databases: its SQL is written in the dialect both
//! understand, so the two cannot drift apart. The conformance suite (`tests/conformance.rs`) runs every
//! trait method against both implementations.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_stages::auth::{KeyDigest, KeyStore, SharedKeyCache};
use ledger_stages::{ProjectSettings, Scope};
use uuid::Uuid;

use crate::config::{BackendKind, Config};

pub mod alerts;
pub mod analytics;
pub mod dead_letter;
pub mod idempotency;
pub mod limits;
pub mod logs;
pub mod memory;
pub mod redis;
pub mod setup;
pub mod sql;
pub mod tail;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub settings: ProjectSettings,
    /// The project's own rules for the parse, redact and sample stages.
    pub stages: Option<std::sync::Arc<ledger_stages::rules::StageRules>>,
}

/// An API key as stored: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One project's usage on one UTC day: every log it sent ends in exactly one of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub accepted: u64,
    pub rejected_rate_limited: u64,
    pub rejected_quota: u64,
    pub rejected_backpressure: u64,
    pub rejected_invalid: u64,
    /// Acknowledged and removed by a drop rule.
    pub dropped_by_rule: u64,
    /// Acknowledged and not kept by a sample rule.
    pub sampled_out: u64,
    /// Bytes of the accepted requests' decoded bodies.
    pub bytes: u64,
}

impl Usage {
    pub(crate) fn add(&mut self, other: &Usage) {
        self.accepted += other.accepted;
        self.rejected_rate_limited += other.rejected_rate_limited;
        self.rejected_quota += other.rejected_quota;
        self.rejected_backpressure += other.rejected_backpressure;
        self.rejected_invalid += other.rejected_invalid;
        self.dropped_by_rule += other.dropped_by_rule;
        self.sampled_out += other.sampled_out;
        self.bytes += other.bytes;
    }
}

/// A storage failure, classified so that callers answer 409 (where they say which value is taken), 503 or 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same unique value exists; which value is for the caller to say.
    #[error("a row with the same unique value exists")]
    Duplicate,
    /// The row changed under a conditional update: another writer moved it first.
    #[error("the row changed under this update")]
    Moved,
    /// The database or cache could not be reached in time: a 503 with Retry-After.
    #[error("{what} unavailable: {cause}")]
    Unavailable { what: &'static str, cause: String },
    /// Anything else: a bug or a schema problem, a 500.
    #[error("{0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable { what: "database", cause: e.to_string() }
            }
            sqlx::Error::Database(ref db) if db.is_unique_violation() => StoreError::Duplicate,
            other => StoreError::Internal(other.to_string()),
        }
    }
}

/// Users, projects and API keys. Every project method takes the owner, so one user can never reach
/// another's project: a project that is not the caller's is simply not found.
#[async_trait]
pub trait AccountStore: KeyStore {
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError>;
    /// The user with this (lower-cased) e-mail and their password hash.
    async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>, StoreError>;
    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError>;

    async fn create_project(&self, project: &Project) -> Result<(), StoreError>;
    /// The owner's projects, oldest first.
    async fn projects(&self, owner: Uuid) -> Result<Vec<Project>, StoreError>;
    async fn project(&self, owner: Uuid, id: Uuid) -> Result<Option<Project>, StoreError>;
    /// The account that owns a project, if the project exists.
    async fn project_owner(&self, id: Uuid) -> Result<Option<Uuid>, StoreError>;
    /// Replaces name and settings; `None` when the owner has no such project.
    async fn update_project(&self, owner: Uuid, project: &Project) -> Result<Option<Project>, StoreError>;
    /// Deletes the project and its keys; the digests of its keys, for the caches to forget, or `None`.
    async fn delete_project(&self, owner: Uuid, id: Uuid) -> Result<Option<Vec<KeyDigest>>, StoreError>;

    async fn create_key(&self, key: &KeyRecord, digest: &KeyDigest) -> Result<(), StoreError>;
    /// The project's keys, oldest first, revoked ones included.
    async fn keys(&self, project_id: Uuid) -> Result<Vec<KeyRecord>, StoreError>;
    /// Revokes a key of the project (idempotent); its digest, or `None` when the project has no such key.
    async fn revoke_key(
        &self,
        project_id: Uuid,
        key_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<KeyDigest>, StoreError>;
    /// Digests of the project's live keys: what the caches must forget when its settings change.
    async fn key_digests(&self, project_id: Uuid) -> Result<Vec<KeyDigest>, StoreError>;

    /// Every project and its `retention_days`.
    async fn retention(&self) -> Result<Vec<(Uuid, u32)>, StoreError>;

    /// Adds to the usage of each (project, day).
    async fn add_usage(&self, rows: &[(Uuid, chrono::NaiveDate, Usage)]) -> Result<(), StoreError>;
    /// A project's usage per day from `from` to `to` inclusive, days without usage left out.
    async fn usage(
        &self,
        project_id: Uuid,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<(chrono::NaiveDate, Usage)>, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;

    /// Connections of the store's pool: (open, idle).
    fn pool_usage(&self) -> (u32, usize) {
        (0, 0)
    }
}

/// Server-side sessions, so that logout revokes a token at once.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn create_session(&self, id: Uuid, user_id: Uuid, ttl: Duration) -> Result<(), StoreError>;
    /// The user of a live session.
    async fn session_user(&self, id: Uuid) -> Result<Option<Uuid>, StoreError>;
    async fn delete_session(&self, id: Uuid) -> Result<(), StoreError>;
}

/// Who may run a periodic job this period, across instances (the scheduler's `once_across_instances`).
#[async_trait]
pub trait JobLease: Send + Sync + 'static {
    /// Takes the job's lease for `period` if nobody holds it; whether this instance got it.
    async fn take(&self, job: &str, period: std::time::Duration) -> Result<bool, String>;
}

/// Fixed-window counters (failed logins per e-mail).
#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Counts one event under `key`; the count in the current window and the time until it ends. The window
    /// starts with its first event.
    async fn hit(&self, key: &str, window: Duration) -> Result<(u64, Duration), StoreError>;
    /// The count in the current window, without counting.
    async fn peek(&self, key: &str) -> Result<(u64, Duration), StoreError>;
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
}

/// What an idempotency key holds (API.md, "Idempotent ingestion").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now this request's, until it completes or is released.
    Claimed,
    /// Another request with the key is running.
    Pending,
    /// A request with the key was answered: its answer, as stored.
    Answered(String),
}

/// How long a repeat of an idempotency key gets the first answer (API.md: 10 minutes).
pub const IDEMPOTENCY_KEEP: Duration = Duration::from_secs(600);

/// Idempotency keys per project: in SQLite (embedded, answers kept across restarts) or in Redis (shared,
/// so a retry may reach any instance).
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` of `project` for `pending` at most (a request that dies holding it frees it then), or
    /// says what holds it.
    async fn claim(&self, project: Uuid, key: &str, pending: Duration) -> Result<Claim, StoreError>;
    /// Keeps `answer` under the key for `keep`.
    async fn complete(&self, project: Uuid, key: &str, answer: &str, keep: Duration) -> Result<(), StoreError>;
    /// Frees a claimed key: the request did not succeed, and a retry must run again.
    async fn release(&self, project: Uuid, key: &str) -> Result<(), StoreError>;
}

/// A dependency's health, for `/health/deep`.
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    async fn check(&self) -> Result<(), StoreError>;

    /// The check, and how far behind the dependency is (a replica's replay), when that applies.
    async fn lag_seconds(&self) -> Result<Option<f64>, StoreError> {
        self.check().await.map(|()| None)
    }
}

/// The backend an instance runs on, assembled once at start-up.
#[derive(Clone)]
pub struct Backend {
    pub kind: BackendKind,
    pub accounts: Arc<dyn AccountStore>,
    /// Alert rules and their notifications (the account database).
    pub alerts: Arc<dyn alerts::AlertStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub counters: Arc<dyn Counters>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub shared_keys: Option<Arc<dyn SharedKeyCache>>,
    /// Subscribes to other instances' key revocations (shared only).
    pub redis: Option<redis::RedisCache>,
    /// Where logs are kept and read.
    pub logs: LogDb,
    /// Named checks for `/health/deep`: `database` and `cache`.
    pub checks: Vec<(&'static str, Arc<dyn HealthCheck>)>,
}

/// The log store of each backend.
#[derive(Clone)]
pub enum LogDb {
    Sqlite(crate::store::logs::sqlite::SqliteLogStore),
    Postgres(crate::store::logs::postgres::PgLogStore),
}

impl LogDb {
    /// Connections of the log store's pool: (open, idle).
    pub(crate) fn pool_usage(&self) -> (u32, usize) {
        match self {
            LogDb::Sqlite(s) => (s.pool().size(), s.pool().num_idle()),
            LogDb::Postgres(s) => (s.pool().size(), s.pool().num_idle()),
        }
    }

    /// The search index over the logs.
    pub fn search(&self) -> crate::store::logs::search::SearchIndex {
        match self {
            LogDb::Sqlite(s) => s.search().clone(),
            LogDb::Postgres(s) => s.search().clone(),
        }
    }

    pub fn store(&self) -> Arc<dyn crate::store::logs::LogStore> {
        match self {
            LogDb::Sqlite(s) => Arc::new(s.clone()),
            LogDb::Postgres(s) => Arc::new(s.clone()),
        }
    }
}

impl Backend {
    /// Connects, creates the databases when missing, and applies the migrations.
    pub async fn open(config: &Config) -> Result<Backend, setup::SetupError> {
        setup::open(config).await
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`: URLs go into error messages.
pub(crate) fn redact(url: &str) -> String {
    if url.contains(',') {
        // Several URLs: a Redis Cluster's nodes.
        return url.split(',').map(redact).collect::<Vec<_>>().join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
