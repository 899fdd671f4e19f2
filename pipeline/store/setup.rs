//! Opening a backend: connect, create the databases when missing, migrate. Every failure is one line that
//! says what could not be reached and why, without the password of a URL.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use super::memory::{InProcess, MemoryCounters};
use super::redis::RedisCache;
use super::sql::{Db, SqlStore};
use super::{Backend, HealthCheck, LogDb, redact};
use crate::config::{BackendKind, Config};
use crate::store::logs::postgres::PgLogStore;
use crate::store::logs::sqlite::SqliteLogStore;

/// The migrations, embedded in the binary at build time.
fn pg_auth() -> Migrator {
    sqlx::migrate!("schema/postgres/auth")
}

fn pg_logs() -> Migrator {
    sqlx::migrate!("schema/postgres/logs")
}

fn sqlite_accounts() -> Migrator {
    sqlx::migrate!("schema/sqlite/accounts")
}

fn sqlite_logs() -> Migrator {
    sqlx::migrate!("schema/sqlite/logs")
}

/// Why a backend could not be opened: one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

pub(crate) async fn open(config: &Config) -> Result<Backend, SetupError> {
    match config.backend.kind {
        BackendKind::Embedded => open_embedded(config).await,
        BackendKind::Shared => open_shared(config).await,
    }
}

async fn open_embedded(config: &Config) -> Result<Backend, SetupError> {
    let dir = &config.backend.data_dir;
    create_private_dir(dir)?;
    let accounts = sqlite_pool(&dir.join("accounts.db"), SqliteSynchronous::Normal).await?;
    migrate(sqlite_accounts(), &accounts, "the accounts file").await?;
    // FULL: a commit is on disk before the 202 that follows it, even through a power cut.
    let logs = sqlite_pool(&dir.join("logs.db"), SqliteSynchronous::Full).await?;
    migrate(sqlite_logs(), &logs, "the logs file").await?;
    // Whatever existed before, and whatever the umask: accounts and logs are the owner's alone.
    for file in ["accounts.db", "accounts.db-wal", "accounts.db-shm", "logs.db", "logs.db-wal", "logs.db-shm"] {
        private_file(&dir.join(file))?;
    }
    let store = Arc::new(SqlStore::new(Db::Sqlite(accounts)));
    let idempotency = Arc::new(crate::store::idempotency::SqliteIdempotency::new(logs.clone()));
    Ok(Backend {
        kind: BackendKind::Embedded,
        accounts: store.clone(),
        alerts: store.clone(),
        sessions: store.clone(),
        counters: Arc::new(MemoryCounters::default()),
        idempotency,
        shared_keys: None,
        redis: None,
        logs: LogDb::Sqlite(SqliteLogStore::new(logs)),
        checks: vec![("database", store as Arc<dyn HealthCheck>), ("cache", Arc::new(InProcess))],
    })
}

async fn open_shared(config: &Config) -> Result<Backend, SetupError> {
    let pg = &config.postgres;
    let timeout = pg.connect_timeout;
    let auth = postgres_pool(&pg.auth_url, pg.max_connections, timeout).await?;
    migrate(pg_auth(), &auth, "the auth database").await?;
    let logs = if pg.logs_url == pg.auth_url {
        auth.clone()
    } else {
        postgres_pool(&pg.logs_url, pg.max_connections, timeout).await?
    };
    migrate(pg_logs(), &logs, "the logs database").await?;
    let redis_timeout = config.redis.timeout;
    let redis = RedisCache::connect(&config.redis.url, &config.redis.key_prefix, redis_timeout)
        .await
        .map_err(|e| SetupError(format!("cannot use Redis at {}: {e}", redact(&config.redis.url))))?;
    tracing::info!(mode = if redis.is_cluster() { "cluster" } else { "single" }, "connected to Redis");
    let wanted = config.redis.min_replicas_acked;
    if wanted > 0 {
        match redis.fewest_replicas().await {
            Ok(attached) if attached < wanted => tracing::warn!(
                attached,
                min_replicas_acked = wanted,
                "a Redis primary has fewer replicas attached than redis.min_replicas_acked: ingestion to it answers \
                 503 until they are"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not count the Redis replicas"),
        }
    }
    let mut logs = PgLogStore::new(logs);
    if !pg.logs_read_url.is_empty() {
        logs = logs.with_replica(replica_pool(&pg.logs_read_url, pg.max_connections, timeout).await?);
    }
    let store = Arc::new(SqlStore::new(Db::Postgres(auth)));
    let cache = Arc::new(redis.clone());
    let mut checks =
        vec![("database", store.clone() as Arc<dyn HealthCheck>), ("cache", cache.clone() as Arc<dyn HealthCheck>)];
    if let Some(replica) = logs.replica_check() {
        checks.push(("replica", Arc::new(replica)));
    }
    Ok(Backend {
        kind: BackendKind::Shared,
        accounts: store.clone(),
        alerts: store.clone(),
        sessions: cache.clone(),
        counters: cache.clone(),
        idempotency: cache.clone(),
        shared_keys: Some(cache.clone()),
        redis: Some(redis),
        logs: LogDb::Postgres(logs),
        checks,
    })
}

/// Creates `data_dir` if needed and makes it 0700, also when it existed with looser permissions.
fn create_private_dir(dir: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SetupError(format!("cannot create backend.data_dir {}: {e}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| SetupError(format!("cannot make backend.data_dir {} private (0700): {e}", dir.display())))
}

/// Makes a data file 0600 when it exists.
fn private_file(path: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(SetupError(format!("cannot make {} private (0600): {e}", path.display())))
        }
        _ => Ok(()),
    }
}

pub(crate) async fn sqlite_pool(path: &Path, synchronous: SqliteSynchronous) -> Result<SqlitePool, SetupError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL: readers never block the writer, and a commit is one append.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|e| SetupError(format!("cannot open {}: {e}", path.display())))
}

/// Connects to a PostgreSQL database, creating it first when it is missing and we have the right to.
pub(crate) async fn postgres_pool(url: &str, max_connections: u32, timeout: Duration) -> Result<PgPool, SetupError> {
    let shown = redact(url);
    let reach = |e: sqlx::Error| SetupError(format!("cannot reach PostgreSQL at {shown}: {e}"));
    let exists = tokio::time::timeout(timeout, sqlx::Postgres::database_exists(url))
        .await
        .map_err(|_| SetupError(format!("cannot reach PostgreSQL at {shown}: no answer within {timeout:?}")))?
        .map_err(reach)?;
    if !exists {
        match sqlx::Postgres::create_database(url).await {
            Ok(()) => tracing::info!(database = %shown, "created database"),
            // Another instance created it between our check and our CREATE: fine.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(SetupError(format!("cannot create the database {shown}: {e}"))),
        }
    }
    connect(url, max_connections, timeout).await.map_err(reach)
}

/// A pool of `url`'s database, once it exists.
async fn connect(url: &str, max_connections: u32, timeout: Duration) -> Result<PgPool, sqlx::Error> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(timeout).connect_with(options).await
}

/// Connects to a read replica of the logs database: never creates or migrates it, and waits (up to
/// `timeout`) for the database to appear, as a replica replays the primary's creation a moment later.
async fn replica_pool(url: &str, max_connections: u32, timeout: Duration) -> Result<PgPool, SetupError> {
    let shown = redact(url);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout(timeout, sqlx::Postgres::database_exists(url)).await {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) if tokio::time::Instant::now() < deadline => {}
            Ok(Ok(false)) => {
                return Err(SetupError(format!(
                    "postgres.logs_read_url {shown}: the database does not exist there (is it a replica of logs_url?)"
                )));
            }
            Ok(Err(e)) => return Err(SetupError(format!("cannot reach the read replica at {shown}: {e}"))),
            Err(_) => {
                return Err(SetupError(format!(
                    "cannot reach the read replica at {shown}: no answer within {timeout:?}"
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connect(url, max_connections, timeout)
        .await
        .map_err(|e| SetupError(format!("cannot reach the read replica at {shown}: {e}")))
}

async fn migrate<'a, A>(mut migrator: Migrator, pool: A, what: &str) -> Result<(), SetupError>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    // The auth and logs migrations may share one database (versions 1xxx and 2xxx): neither set may
    // refuse to run because the other's rows are there.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await.map_err(|e| SetupError(format!("cannot migrate {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("redis://:pw@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(redact("redis://:a@h:1,redis://:b@i:2"), "redis://:***@h:1,redis://:***@i:2");
    }
}
