//! The account store on PostgreSQL or SQLite: one implementation, whose SQL both dialects understand
//! (`$n` parameters, no server-side clock, portable types), so the two backends cannot drift apart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_stages::auth::{KeyDigest, KeyStore, StoreUnavailable};
use ledger_stages::rules::StageRules;
use ledger_stages::{ProjectContext, ProjectSettings, Scope};
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

use super::{AccountStore, HealthCheck, KeyRecord, Project, SessionStore, StoreError, Usage, User};

/// A pool of either database.
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the concrete pool: the body is compiled once per database.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Postgres($pool) => $body,
            Db::Sqlite($pool) => $body,
        }
    };
}
pub(super) use on_db;

#[derive(Clone, Debug)]
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    pub(crate) fn new(db: Db) -> SqlStore {
        SqlStore { db }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User { id: r.id, email: r.email, created_at: r.created_at }
    }
}

const PROJECT_COLUMNS: &str = "id, owner_id, name, created_at, rate_limit_per_minute, rate_limit_per_hour, \
                               daily_quota, retention_days, max_queue_depth, stages";

#[derive(sqlx::FromRow)]
struct ProjectRow {
    id: Uuid,
    owner_id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    rate_limit_per_minute: i64,
    rate_limit_per_hour: i64,
    daily_quota: i64,
    retention_days: i64,
    max_queue_depth: i64,
    /// The project's own stage rules as JSON, or NULL.
    stages: Option<String>,
}

/// Settings are validated on the way in, so a stored value always fits; saturate rather than panic if a
/// hand-edited row does not.
fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(if v < 0 { 0 } else { u32::MAX })
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl ProjectRow {
    fn settings(&self) -> ProjectSettings {
        ProjectSettings {
            rate_limit_per_minute: to_u32(self.rate_limit_per_minute),
            rate_limit_per_hour: to_u32(self.rate_limit_per_hour),
            daily_quota: to_u64(self.daily_quota),
            retention_days: to_u32(self.retention_days),
            max_queue_depth: to_u64(self.max_queue_depth),
        }
    }

    /// The project's stage rules; `None` when it has none. They were checked when saved; a row that does
    /// not read (edited by hand) counts as none, with a warning.
    fn stages(&self) -> Option<Arc<StageRules>> {
        let text = self.stages.as_deref()?;
        match serde_json::from_str::<StageRules>(text) {
            Ok(rules) if rules.is_empty() => None,
            Ok(rules) => Some(Arc::new(rules)),
            Err(error) => {
                tracing::warn!(project_id = %self.id, %error, "a project's stage rules do not read; ignored");
                None
            }
        }
    }
}

/// A project's stage rules as stored: NULL when it has none.
fn stages_json(rules: &Option<Arc<StageRules>>) -> Option<String> {
    rules.as_ref().filter(|r| !r.is_empty()).and_then(|r| serde_json::to_string(&**r).ok())
}

impl From<ProjectRow> for Project {
    fn from(r: ProjectRow) -> Project {
        let (settings, stages) = (r.settings(), r.stages());
        Project { id: r.id, owner_id: r.owner_id, name: r.name, created_at: r.created_at, settings, stages }
    }
}

const KEY_COLUMNS: &str = "id, project_id, name, prefix, scopes, created_at, last_used_at, revoked_at";

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    project_id: Uuid,
    name: String,
    prefix: String,
    scopes: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn parse_scopes(s: &str) -> Vec<Scope> {
    s.split(',').filter_map(Scope::parse).collect()
}

fn join_scopes(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

impl From<KeyRow> for KeyRecord {
    fn from(r: KeyRow) -> KeyRecord {
        KeyRecord {
            id: r.id,
            project_id: r.project_id,
            name: r.name,
            prefix: r.prefix,
            scopes: parse_scopes(&r.scopes),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// What the key look-up joins from the key and its project.
#[derive(sqlx::FromRow)]
struct KeyProjectRow {
    key_id: Uuid,
    key_hash: Vec<u8>,
    scopes: String,
    #[sqlx(flatten)]
    project: ProjectRow,
}

fn digests(rows: Vec<(Vec<u8>,)>) -> Vec<KeyDigest> {
    rows.into_iter().filter_map(|(bytes,)| KeyDigest::from_slice(&bytes)).collect()
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn project_for_key(&self, digest: &KeyDigest) -> Result<Option<ProjectContext>, StoreUnavailable> {
        let sql = "SELECT k.id AS key_id, k.key_hash, k.scopes, p.id, p.owner_id, p.name, p.created_at, \
                   p.rate_limit_per_minute, p.rate_limit_per_hour, p.daily_quota, p.retention_days, p.max_queue_depth, \
                   p.stages FROM api_keys k JOIN projects p ON p.id = k.project_id \
                   WHERE k.key_hash = $1 AND k.revoked_at IS NULL";
        let row: Option<KeyProjectRow> = on_db!(&self.db, pool => {
            sqlx::query_as(sql).bind(&digest.as_bytes()[..]).fetch_optional(pool).await
        })
        .map_err(|e| StoreUnavailable(e.to_string()))?;
        let Some(row) = row else { return Ok(None) };
        // The index found the row by digest; compare again in constant time so that no comparison of a
        // secret-derived value depends on where it differs.
        let found = KeyDigest::from_slice(&row.key_hash);
        if !found.is_some_and(|found| found.ct_eq(digest)) {
            return Ok(None);
        }
        let now = Utc::now();
        // Only reached when no cache knows the key, so this write happens at most once per cache lifetime:
        // `last_used_at` is exact to within the shared cache's lifetime.
        let touched = on_db!(&self.db, pool => {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2").bind(now).bind(row.key_id).execute(pool).await.map(|r| r.rows_affected())
        });
        if let Err(error) = touched {
            tracing::warn!(%error, key_id = %row.key_id, "could not record the key's last use");
        }
        Ok(Some(ProjectContext {
            project_id: row.project.id,
            key_id: row.key_id,
            scopes: parse_scopes(&row.scopes),
            settings: row.project.settings(),
            stages: row.project.stages(),
        }))
    }
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_user(&self, user: &User, password_hash: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)";
        on_db!(&self.db, pool => {
            sqlx::query(sql).bind(user.id).bind(&user.email).bind(password_hash).bind(user.created_at).execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>, StoreError> {
        let sql = "SELECT id, email, created_at, password_hash FROM users WHERE email = $1";
        let row: Option<(Uuid, String, DateTime<Utc>, String)> =
            on_db!(&self.db, pool => sqlx::query_as(sql).bind(email).fetch_optional(pool).await)?;
        Ok(row.map(|(id, email, created_at, hash)| (User { id, email, created_at }, hash)))
    }

    async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let sql = "SELECT id, email, created_at FROM users WHERE id = $1";
        let row: Option<UserRow> = on_db!(&self.db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(User::from))
    }

    async fn create_project(&self, p: &Project) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO projects ({PROJECT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
        let s = &p.settings;
        on_db!(&self.db, pool => {
            sqlx::query(&sql)
                .bind(p.id).bind(p.owner_id).bind(&p.name).bind(p.created_at)
                .bind(i64::from(s.rate_limit_per_minute)).bind(i64::from(s.rate_limit_per_hour))
                .bind(to_i64(s.daily_quota)).bind(i64::from(s.retention_days)).bind(to_i64(s.max_queue_depth))
                .bind(stages_json(&p.stages))
                .execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn projects(&self, owner: Uuid) -> Result<Vec<Project>, StoreError> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE owner_id = $1 ORDER BY created_at, id");
        let rows: Vec<ProjectRow> = on_db!(&self.db, pool => sqlx::query_as(&sql).bind(owner).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(Project::from).collect())
    }

    async fn project(&self, owner: Uuid, id: Uuid) -> Result<Option<Project>, StoreError> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1 AND owner_id = $2");
        let row: Option<ProjectRow> =
            on_db!(&self.db, pool => sqlx::query_as(&sql).bind(id).bind(owner).fetch_optional(pool).await)?;
        Ok(row.map(Project::from))
    }

    async fn project_owner(&self, id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let sql = "SELECT owner_id FROM projects WHERE id = $1";
        let row: Option<(Uuid,)> = on_db!(&self.db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await)?;
        Ok(row.map(|(owner,)| owner))
    }

    async fn update_project(&self, owner: Uuid, p: &Project) -> Result<Option<Project>, StoreError> {
        let sql = format!(
            "UPDATE projects SET name = $3, rate_limit_per_minute = $4, rate_limit_per_hour = $5, daily_quota = $6, \
             retention_days = $7, max_queue_depth = $8, stages = $9 WHERE id = $1 AND owner_id = $2 \
             RETURNING {PROJECT_COLUMNS}"
        );
        let s = &p.settings;
        let row: Option<ProjectRow> = on_db!(&self.db, pool => {
            sqlx::query_as(&sql)
                .bind(p.id).bind(owner).bind(&p.name)
                .bind(i64::from(s.rate_limit_per_minute)).bind(i64::from(s.rate_limit_per_hour))
                .bind(to_i64(s.daily_quota)).bind(i64::from(s.retention_days)).bind(to_i64(s.max_queue_depth))
                .bind(stages_json(&p.stages))
                .fetch_optional(pool).await
        })?;
        Ok(row.map(Project::from))
    }

    async fn delete_project(&self, owner: Uuid, id: Uuid) -> Result<Option<Vec<KeyDigest>>, StoreError> {
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // A write first, so SQLite takes its write lock (waiting its busy timeout) at the start: a
            // transaction that reads and then writes fails at once if another connection wrote in between.
            let keys: Vec<(Vec<u8>,)> = sqlx::query_as(
                "DELETE FROM api_keys WHERE project_id = (SELECT id FROM projects WHERE id = $1 AND owner_id = $2) \
                 RETURNING key_hash",
            )
            .bind(id).bind(owner).fetch_all(&mut *tx).await?;
            let deleted = sqlx::query("DELETE FROM projects WHERE id = $1 AND owner_id = $2")
                .bind(id).bind(owner).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok((deleted.rows_affected() > 0).then(|| digests(keys)))
        })
    }

    async fn create_key(&self, k: &KeyRecord, digest: &KeyDigest) -> Result<(), StoreError> {
        let sql = "INSERT INTO api_keys (id, project_id, name, prefix, key_hash, scopes, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7)";
        on_db!(&self.db, pool => {
            sqlx::query(sql)
                .bind(k.id).bind(k.project_id).bind(&k.name).bind(&k.prefix).bind(&digest.as_bytes()[..])
                .bind(join_scopes(&k.scopes)).bind(k.created_at)
                .execute(pool).await.map(|r| r.rows_affected())
        })
        .map_err(|e| match StoreError::from(e) {
            // The only unique column here is the digest: a 155-bit collision is a bug, not a user error.
            StoreError::Duplicate => StoreError::Internal("API key digest collision".into()),
            other => other,
        })?;
        Ok(())
    }

    async fn keys(&self, project_id: Uuid) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = $1 ORDER BY created_at, id");
        let rows: Vec<KeyRow> = on_db!(&self.db, pool => sqlx::query_as(&sql).bind(project_id).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(KeyRecord::from).collect())
    }

    async fn revoke_key(
        &self,
        project_id: Uuid,
        key_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Option<KeyDigest>, StoreError> {
        // COALESCE keeps the first revocation time when a key is revoked twice.
        let sql = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE id = $1 AND project_id = $2 RETURNING key_hash";
        let row: Option<(Vec<u8>,)> = on_db!(&self.db, pool => sqlx::query_as(sql).bind(key_id).bind(project_id).bind(at).fetch_optional(pool).await)?;
        Ok(row.and_then(|(bytes,)| KeyDigest::from_slice(&bytes)))
    }

    async fn key_digests(&self, project_id: Uuid) -> Result<Vec<KeyDigest>, StoreError> {
        let sql = "SELECT key_hash FROM api_keys WHERE project_id = $1 AND revoked_at IS NULL";
        let rows: Vec<(Vec<u8>,)> =
            on_db!(&self.db, pool => sqlx::query_as(sql).bind(project_id).fetch_all(pool).await)?;
        Ok(digests(rows))
    }

    async fn retention(&self) -> Result<Vec<(Uuid, u32)>, StoreError> {
        let rows: Vec<(Uuid, i64)> =
            on_db!(&self.db, pool => sqlx::query_as("SELECT id, retention_days FROM projects").fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(id, days)| (id, to_u32(days))).collect())
    }

    async fn add_usage(&self, rows: &[(Uuid, chrono::NaiveDate, Usage)]) -> Result<(), StoreError> {
        let sql = "INSERT INTO usage_daily (project_id, day, accepted, rejected_rate_limited, rejected_quota, \
                   rejected_backpressure, rejected_invalid, dropped_by_rule, sampled_out, bytes) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                   ON CONFLICT (project_id, day) DO UPDATE SET \
                   accepted = usage_daily.accepted + excluded.accepted, \
                   rejected_rate_limited = usage_daily.rejected_rate_limited + excluded.rejected_rate_limited, \
                   rejected_quota = usage_daily.rejected_quota + excluded.rejected_quota, \
                   rejected_backpressure = usage_daily.rejected_backpressure + excluded.rejected_backpressure, \
                   rejected_invalid = usage_daily.rejected_invalid + excluded.rejected_invalid, \
                   dropped_by_rule = usage_daily.dropped_by_rule + excluded.dropped_by_rule, \
                   sampled_out = usage_daily.sampled_out + excluded.sampled_out, \
                   bytes = usage_daily.bytes + excluded.bytes";
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            for (project, day, u) in rows {
                sqlx::query(sql)
                    .bind(project).bind(day)
                    .bind(to_i64(u.accepted)).bind(to_i64(u.rejected_rate_limited)).bind(to_i64(u.rejected_quota))
                    .bind(to_i64(u.rejected_backpressure)).bind(to_i64(u.rejected_invalid))
                    .bind(to_i64(u.dropped_by_rule)).bind(to_i64(u.sampled_out)).bind(to_i64(u.bytes))
                    .execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    async fn usage(
        &self,
        project_id: Uuid,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<(chrono::NaiveDate, Usage)>, StoreError> {
        let sql = "SELECT day, accepted, rejected_rate_limited, rejected_quota, rejected_backpressure, rejected_invalid, \
                   dropped_by_rule, sampled_out, bytes FROM usage_daily WHERE project_id = $1 AND day >= $2 AND day <= $3 ORDER BY day";
        type Row = (chrono::NaiveDate, i64, i64, i64, i64, i64, i64, i64, i64);
        let rows: Vec<Row> =
            on_db!(&self.db, pool => sqlx::query_as(sql).bind(project_id).bind(from).bind(to).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(day, a, rl, q, bp, inv, dropped, sampled, bytes)| {
                let usage = Usage {
                    accepted: to_u64(a),
                    rejected_rate_limited: to_u64(rl),
                    rejected_quota: to_u64(q),
                    rejected_backpressure: to_u64(bp),
                    rejected_invalid: to_u64(inv),
                    dropped_by_rule: to_u64(dropped),
                    sampled_out: to_u64(sampled),
                    bytes: to_u64(bytes),
                };
                (day, usage)
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        on_db!(&self.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    fn pool_usage(&self) -> (u32, usize) {
        on_db!(&self.db, pool => (pool.size(), pool.num_idle()))
    }
}

#[async_trait]
impl HealthCheck for SqlStore {
    async fn check(&self) -> Result<(), StoreError> {
        self.ping().await
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn create_session(&self, id: Uuid, user_id: Uuid, ttl: Duration) -> Result<(), StoreError> {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(ttl).map_err(|e| StoreError::Internal(e.to_string()))?;
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // Expired sessions are swept as new ones are made, so the table stays the size of the live set.
            sqlx::query("DELETE FROM sessions WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)")
                .bind(id).bind(user_id).bind(expires_at).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    async fn session_user(&self, id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let sql = "SELECT user_id FROM sessions WHERE id = $1 AND expires_at > $2";
        let row: Option<(Uuid,)> =
            on_db!(&self.db, pool => sqlx::query_as(sql).bind(id).bind(Utc::now()).fetch_optional(pool).await)?;
        Ok(row.map(|(user,)| user))
    }

    async fn delete_session(&self, id: Uuid) -> Result<(), StoreError> {
        on_db!(&self.db, pool => sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
