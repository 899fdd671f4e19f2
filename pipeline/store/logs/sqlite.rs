//! The log store on SQLite: the embedded backend. Written by the group-commit writer in batches of
//! multi-row INSERTs inside one transaction; read with the same query as PostgreSQL's.

use async_trait::async_trait;
use ledger_stages::log::Exception;
use ledger_stages::{Level, LogRecord};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::search::SearchIndex;
use super::{COLUMNS, ErrorRow, InfoRow, LogQuery, LogStore, SearchPath, StatsSql, VolumeRow, assemble};
use crate::store::StoreError;
use crate::store::analytics::{Granularity, Stats};
use chrono::{DateTime, Utc};

/// SQLite allows 32,766 bound values per statement; 14 columns × 1000 rows stays well inside.
const ROWS_PER_INSERT: usize = 1000;

#[derive(Clone)]
pub struct SqliteLogStore {
    pool: SqlitePool,
    search: SearchIndex,
}

impl SqliteLogStore {
    pub(crate) fn new(pool: SqlitePool) -> SqliteLogStore {
        let search = SearchIndex::new(crate::store::sql::Db::Sqlite(pool.clone()));
        SqliteLogStore { pool, search }
    }

    /// The search index over this store's logs.
    pub fn search(&self) -> &SearchIndex {
        &self.search
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    project_id: Uuid,
    ts: i64,
    received_at: i64,
    level: i16,
    service: Option<String>,
    environment: Option<String>,
    host: Option<String>,
    message: String,
    fingerprint: i64,
    trace_id: Option<String>,
    span_id: Option<String>,
    attributes: String,
    exception: Option<String>,
}

impl From<Row> for LogRecord {
    fn from(r: Row) -> LogRecord {
        LogRecord {
            id: r.id,
            project_id: r.project_id,
            timestamp: chrono::DateTime::from_timestamp_micros(r.ts).unwrap_or_default(),
            received_at: chrono::DateTime::from_timestamp_micros(r.received_at).unwrap_or_default(),
            level: Level::from_number(r.level).unwrap_or(Level::Info),
            message: r.message,
            service: r.service,
            environment: r.environment,
            host: r.host,
            trace_id: r.trace_id,
            span_id: r.span_id,
            attributes: serde_json::from_str(&r.attributes).unwrap_or_default(),
            exception: r.exception.and_then(|e| serde_json::from_str::<Exception>(&e).ok()),
            fingerprint: r.fingerprint as u64,
            fingerprint_override: None,
        }
    }
}

/// Inserts records on `conn` (inside the caller's transaction).
#[async_trait]
impl super::LogWriter for SqliteLogStore {
    /// The records, in groups (the embedded queue's requests), inserted as they are.
    type Rows<'r> = [&'r [LogRecord]];

    async fn write<'a>(&self, batch: super::WriteBatch<'a, [&'a [LogRecord]]>) -> Result<(), super::WriteError> {
        let unavailable = |e: sqlx::Error| super::WriteError::Unavailable(e.to_string());
        let groups = batch.rows;
        if !batch.dead_letters.is_empty() || batch.offset.is_some() {
            // The embedded queue commits before it answers: it has neither offsets nor dead letters.
            return Err(super::WriteError::Refused("the embedded store keeps no queue offsets".into()));
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for records in groups {
            insert_records(&mut tx, records).await.map_err(unavailable)?;
        }
        for chunk in batch.late.blocks.chunks(ROWS_PER_INSERT) {
            let mut sql =
                QueryBuilder::<Sqlite>::new("INSERT INTO search_late (project_id, block, first_id, last_id) ");
            sql.push_values(chunk, |mut row, mark| {
                row.push_bind(mark.project).push_bind(mark.block).push_bind(mark.first_id).push_bind(mark.last_id);
            });
            sql.build().execute(&mut *tx).await.map_err(unavailable)?;
        }
        for answer in batch.answers {
            keep_answer(&mut tx, answer).await.map_err(unavailable)?;
        }
        if !batch.late.in_time() {
            // The search index may have moved past logs this batch did not mark: write them again later.
            return Err(super::WriteError::Unavailable("the write took too long to commit".into()));
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn offset(&self, _shard: i32) -> Result<Option<String>, super::WriteError> {
        Ok(None)
    }
}

/// Keeps an idempotency key's answer (a later answer for the same key replaces it).
pub(crate) async fn keep_answer(
    conn: &mut SqliteConnection,
    answer: &super::KeptAnswer<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT OR REPLACE INTO idempotency_keys (project_id, key, answer, expires_at) VALUES (?, ?, ?, ?)")
        .bind(answer.project)
        .bind(answer.key)
        .bind(answer.answer)
        .bind(answer.expires_at.timestamp_micros())
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn insert_records(conn: &mut SqliteConnection, records: &[LogRecord]) -> Result<(), sqlx::Error> {
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let mut sql = QueryBuilder::<Sqlite>::new(format!("INSERT INTO logs ({COLUMNS}) "));
        sql.push_values(chunk, |mut row, r| {
            row.push_bind(r.id)
                .push_bind(r.project_id)
                .push_bind(r.timestamp.timestamp_micros())
                .push_bind(r.received_at.timestamp_micros())
                .push_bind(r.level.number())
                .push_bind(r.service.as_deref())
                .push_bind(r.environment.as_deref())
                .push_bind(r.host.as_deref())
                .push_bind(r.message.as_str())
                .push_bind(r.fingerprint as i64)
                .push_bind(r.trace_id.as_deref())
                .push_bind(r.span_id.as_deref())
                .push_bind(r.attributes.to_string())
                .push_bind(r.exception.as_ref().and_then(|e| serde_json::to_string(e).ok()));
        });
        sql.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl LogStore for SqliteLogStore {
    async fn query_by(&self, q: &LogQuery, path: SearchPath) -> Result<Vec<LogRecord>, StoreError> {
        let candidates = self.search.plan(q, path, false).await?;
        super::paged(q, candidates, |page, ranges| {
            let pool = self.pool.clone();
            async move {
                let mut sql = super::select::<sqlx::Sqlite>(&page, ranges.as_deref());
                let rows: Vec<Row> = sql.build_query_as().fetch_all(&pool).await?;
                Ok(rows.into_iter().map(LogRecord::from).collect())
            }
        })
        .await
    }

    async fn get(&self, project_id: Uuid, id: Uuid) -> Result<Option<LogRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM logs WHERE project_id = $1 AND id = $2");
        let row: Option<Row> = sqlx::query_as(&sql).bind(project_id).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(LogRecord::from))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_before(&self, project: Uuid, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE project_id = $1 AND ts < $2 LIMIT $3)";
        let done =
            sqlx::query(sql).bind(project).bind(before.timestamp_micros()).bind(limit).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn delete_others(
        &self,
        projects: &[Uuid],
        received_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let mut sql =
            QueryBuilder::<Sqlite>::new("DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE project_id NOT IN (");
        let mut list = sql.separated(", ");
        // An empty NOT IN list is a syntax error in SQLite: the nil id stands for "no project".
        list.push_bind(Uuid::nil());
        for project in projects {
            list.push_bind(*project);
        }
        sql.push(") AND received_at < ").push_bind(received_before.timestamp_micros());
        sql.push(" LIMIT ").push_bind(limit).push(")");
        Ok(sql.build().execute(&self.pool).await?.rows_affected())
    }

    async fn drop_before(&self, before: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        // One table: retention is row deletion, done by `delete_before`; the index of days no project keeps
        // any more goes here.
        self.search.forget_before(before).await?;
        Ok(Vec::new())
    }

    async fn stats(&self, g: Granularity, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Stats, StoreError> {
        let sql = StatsSql::new("(ts / 1000000 / $3) * $3", str::to_owned, "json_extract(exception, '$.type')");
        let (from, to, secs) = (from.timestamp_micros(), to.timestamp_micros(), g.seconds());
        let volume: Vec<VolumeRow> =
            sqlx::query_as(&sql.volume).bind(from).bind(to).bind(secs).fetch_all(&self.pool).await?;
        if g == Granularity::FiveMinutes {
            return Ok(assemble(g, volume, Vec::new(), Vec::new()));
        }
        let errors: Vec<ErrorRow> =
            sqlx::query_as(&sql.errors).bind(from).bind(to).bind(secs).fetch_all(&self.pool).await?;
        let info: Vec<InfoRow> = sqlx::query_as(&sql.info).bind(from).bind(to).fetch_all(&self.pool).await?;
        Ok(assemble(g, volume, errors, info))
    }
}
