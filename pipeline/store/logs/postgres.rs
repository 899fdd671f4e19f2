//! The log store on PostgreSQL: reads with one keyed, time-bounded query; writes with COPY (binary format)
//! inside the queue worker's transaction.
//!
//! With a read replica (`postgres.logs_read_url`), queries, search plans and the metrics' statistics are
//! read from it, and from the primary when the replica fails; a log by id is read from the replica, then
//! from the primary when the replica does not have it (yet). Writes, partitions, retention and the search
//! index's building stay on the primary. The replica's view moves forward only, so paging through it
//! stays consistent; logs it has not replayed yet appear in lists once it has.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ledger_stages::log::Exception;
use ledger_stages::{Level, LogRecord};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::search::SearchIndex;
use super::{COLUMNS, ErrorRow, InfoRow, LogQuery, LogStore, SearchPath, StatsSql, VolumeRow, assemble};
use crate::store::StoreError;
use crate::store::analytics::{Granularity, Stats};

#[derive(Clone)]
pub struct PgLogStore {
    pool: PgPool,
    /// The read replica, if any.
    replica: Option<PgPool>,
    search: SearchIndex,
}

/// How far the replica's replay is behind, in seconds: 0 when it has replayed all it received (or is not
/// a replica), else the time since the last transaction it replayed committed.
const REPLICA_LAG: &str = "SELECT CASE WHEN NOT pg_is_in_recovery() \
    OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
    ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 END";

impl PgLogStore {
    pub(crate) fn new(pool: PgPool) -> PgLogStore {
        let search = SearchIndex::new(crate::store::sql::Db::Postgres(pool.clone()));
        PgLogStore { pool, replica: None, search }
    }

    /// Reads from `replica` what can be read from it (see the module's documentation).
    pub(crate) fn with_replica(mut self, replica: PgPool) -> PgLogStore {
        self.search = self.search.with_reader(crate::store::sql::Db::Postgres(replica.clone()));
        self.replica = Some(replica);
        self
    }

    /// The read replica's lag; `None` without one.
    pub(crate) async fn replica_lag(&self) -> Result<Option<f64>, StoreError> {
        let Some(replica) = &self.replica else { return Ok(None) };
        Ok(Some(sqlx::query_scalar(REPLICA_LAG).fetch_one(replica).await?))
    }

    /// The read replica's health check, if there is one.
    pub(crate) fn replica_check(&self) -> Option<ReplicaCheck> {
        self.replica.is_some().then(|| ReplicaCheck(self.clone()))
    }

    /// Where reads go: the replica, or the primary.
    fn reader(&self) -> &PgPool {
        self.replica.as_ref().unwrap_or(&self.pool)
    }

    async fn query_on(&self, q: &LogQuery, path: SearchPath, replica: bool) -> Result<Vec<LogRecord>, StoreError> {
        let candidates = self.search.plan(q, path, replica).await?;
        let pool = if replica { self.reader() } else { &self.pool };
        super::paged(q, candidates, |page, ranges| {
            let pool = pool.clone();
            async move {
                let mut sql = super::select::<sqlx::Postgres>(&page, ranges.as_deref());
                let rows: Vec<Row> = sql.build_query_as().fetch_all(&pool).await?;
                Ok(rows.into_iter().map(LogRecord::from).collect())
            }
        })
        .await
    }

    async fn get_on(&self, pool: &PgPool, project_id: Uuid, id: Uuid) -> Result<Option<LogRecord>, StoreError> {
        // By id alone, so the planner takes the BRIN index on id: with the project in the condition it
        // may walk the (project, time) btree through all of a busy project's logs instead (measured: 21 ms
        // at 500k logs in the project). Ids are unique; another project's log is not this one's.
        let sql = format!("SELECT {COLUMNS} FROM logs WHERE id = $1");
        let rows: Vec<Row> = sqlx::query_as(&sql).bind(id).fetch_all(pool).await?;
        Ok(rows.into_iter().find(|r| r.project_id == project_id).map(LogRecord::from))
    }

    /// The search index over this store's logs.
    pub fn search(&self) -> &SearchIndex {
        &self.search
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn write_error(e: sqlx::Error) -> super::WriteError {
    if crate::store::dead_letter::is_data_error(&e) {
        super::WriteError::Refused(e.to_string())
    } else {
        super::WriteError::Unavailable(e.to_string())
    }
}

impl super::PrepareRows for PgLogStore {
    type Buffer = Vec<u8>;

    fn push(buffer: &mut Vec<u8>, records: &[LogRecord]) {
        encode_copy_rows(records, buffer);
    }

    fn end(buffer: &Vec<u8>) -> usize {
        buffer.len()
    }

    fn part(buffer: &Vec<u8>, range: std::ops::Range<usize>) -> &[u8] {
        &buffer[range]
    }
}

#[async_trait]
impl super::LogWriter for PgLogStore {
    /// Binary COPY rows ([`encode_copy_rows`]).
    type Rows<'r> = [u8];

    async fn write<'a>(&self, batch: super::WriteBatch<'a, [u8]>) -> Result<(), super::WriteError> {
        if !batch.answers.is_empty() {
            // The shared backend's idempotency keys live in Redis, where every instance sees them.
            return Err(super::WriteError::Refused("PostgreSQL keeps no idempotency keys".into()));
        }
        let mut tx = self.pool.begin().await.map_err(write_error)?;
        if !batch.rows.is_empty() {
            copy_encoded(&mut tx, batch.rows).await.map_err(write_error)?;
        }
        for letter in batch.dead_letters {
            crate::store::dead_letter::store(&mut tx, letter).await.map_err(write_error)?;
        }
        if !batch.late.blocks.is_empty() {
            let marks = batch.late.blocks;
            sqlx::query(
                "INSERT INTO search_late (project_id, block, first_id, last_id) \
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::uuid[])",
            )
            .bind(marks.iter().map(|m| m.project).collect::<Vec<_>>())
            .bind(marks.iter().map(|m| m.block).collect::<Vec<_>>())
            .bind(marks.iter().map(|m| m.first_id).collect::<Vec<_>>())
            .bind(marks.iter().map(|m| m.last_id).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
        }
        if let Some(offset) = batch.offset {
            let moved = sqlx::query(
                "INSERT INTO queue_offsets (shard, last_id) VALUES ($1, $3) \
                 ON CONFLICT (shard) DO UPDATE SET last_id = EXCLUDED.last_id WHERE queue_offsets.last_id = $2",
            )
            .bind(offset.shard)
            .bind(offset.from)
            .bind(offset.to)
            .execute(&mut *tx)
            .await
            .map_err(write_error)?;
            if moved.rows_affected() != 1 {
                // Someone else moved the offset: this writer no longer owns the queue. Roll back.
                return Err(super::WriteError::OffsetMoved);
            }
        }
        if !batch.late.in_time() {
            // The search index may have moved past logs this batch did not mark: write them again later.
            return Err(super::WriteError::Unavailable("the write took too long to commit; it is retried".into()));
        }
        tx.commit().await.map_err(write_error)
    }

    async fn offset(&self, shard: i32) -> Result<Option<String>, super::WriteError> {
        sqlx::query_scalar("SELECT last_id FROM queue_offsets WHERE shard = $1")
            .bind(shard)
            .fetch_optional(&self.pool)
            .await
            .map_err(write_error)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    project_id: Uuid,
    ts: DateTime<Utc>,
    received_at: DateTime<Utc>,
    level: i16,
    service: Option<String>,
    environment: Option<String>,
    host: Option<String>,
    message: String,
    fingerprint: i64,
    trace_id: Option<String>,
    span_id: Option<String>,
    attributes: Json<Value>,
    exception: Option<Json<Exception>>,
}

impl From<Row> for LogRecord {
    fn from(r: Row) -> LogRecord {
        LogRecord {
            id: r.id,
            project_id: r.project_id,
            timestamp: r.ts,
            received_at: r.received_at,
            level: Level::from_number(r.level).unwrap_or(Level::Info),
            message: r.message,
            service: r.service,
            environment: r.environment,
            host: r.host,
            trace_id: r.trace_id,
            span_id: r.span_id,
            attributes: r.attributes.0,
            exception: r.exception.map(|e| e.0),
            // Stored as the same 64 bits, signed.
            fingerprint: r.fingerprint as u64,
            fingerprint_override: None,
        }
    }
}

#[async_trait]
impl LogStore for PgLogStore {
    async fn query_by(&self, q: &LogQuery, path: SearchPath) -> Result<Vec<LogRecord>, StoreError> {
        if self.replica.is_none() {
            return self.query_on(q, path, false).await;
        }
        match self.query_on(q, path, true).await {
            Err(error) => {
                tracing::warn!(%error, "the read replica failed a query; reading from the primary");
                self.query_on(q, path, false).await
            }
            answer => answer,
        }
    }

    async fn get(&self, project_id: Uuid, id: Uuid) -> Result<Option<LogRecord>, StoreError> {
        if let Some(replica) = &self.replica {
            match self.get_on(replica, project_id, id).await {
                Ok(Some(log)) => return Ok(Some(log)),
                // Not replayed yet, or never written: the primary knows.
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "the read replica failed a read by id; reading from the primary"),
            }
        }
        self.get_on(&self.pool, project_id, id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn delete_before(&self, project: Uuid, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        // (tableoid, ctid) names a row across partitions; small batches keep locks and WAL bursts short.
        let sql = "DELETE FROM logs WHERE (tableoid, ctid) IN \
                   (SELECT tableoid, ctid FROM logs WHERE project_id = $1 AND ts < $2 LIMIT $3)";
        Ok(sqlx::query(sql).bind(project).bind(before).bind(limit).execute(&self.pool).await?.rows_affected())
    }

    async fn delete_others(
        &self,
        projects: &[Uuid],
        received_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let sql = "DELETE FROM logs WHERE (tableoid, ctid) IN \
                   (SELECT tableoid, ctid FROM logs WHERE project_id <> ALL($1) AND received_at < $2 LIMIT $3)";
        let deleted = sqlx::query(sql).bind(projects).bind(received_before).bind(limit).execute(&self.pool).await?;
        Ok(deleted.rows_affected())
    }

    async fn drop_before(&self, before: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        use chrono::{Months, NaiveDate};
        let partitions: Vec<(String,)> = sqlx::query_as(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'logs'::regclass AND c.relname ~ '^logs_[0-9]{4}_[0-9]{2}$'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut dropped = Vec::new();
        for (name,) in partitions {
            let start = NaiveDate::parse_from_str(&format!("{}_01", &name[5..]), "%Y_%m_%d").ok();
            let end = start.and_then(|s| s.checked_add_months(Months::new(1)));
            if end.is_some_and(|end| end.and_hms_opt(0, 0, 0).is_some_and(|e| e.and_utc() <= before)) {
                sqlx::query(&format!("DROP TABLE IF EXISTS {name}")).execute(&self.pool).await?;
                dropped.push(name);
            }
        }
        // The index of days no project keeps any more.
        self.search.forget_before(before).await?;
        Ok(dropped)
    }

    async fn stats(&self, g: Granularity, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Stats, StoreError> {
        let sql = StatsSql::new(
            "(floor(extract(epoch FROM ts))::bigint / $3) * $3",
            |ts| format!("(extract(epoch FROM {ts}) * 1000000)::bigint"),
            "exception->>'type'",
        );
        let secs = g.seconds();
        let volume: Vec<VolumeRow> =
            sqlx::query_as(&sql.volume).bind(from).bind(to).bind(secs).fetch_all(self.reader()).await?;
        if g == Granularity::FiveMinutes {
            return Ok(assemble(g, volume, Vec::new(), Vec::new()));
        }
        let errors: Vec<ErrorRow> =
            sqlx::query_as(&sql.errors).bind(from).bind(to).bind(secs).fetch_all(self.reader()).await?;
        let info: Vec<InfoRow> = sqlx::query_as(&sql.info).bind(from).bind(to).fetch_all(self.reader()).await?;
        Ok(assemble(g, volume, errors, info))
    }
}

/// The read replica as a dependency of `/health/deep`, with its lag.
pub struct ReplicaCheck(PgLogStore);

#[async_trait]
impl crate::store::HealthCheck for ReplicaCheck {
    async fn check(&self) -> Result<(), StoreError> {
        self.0.replica_lag().await.map(drop)
    }

    async fn lag_seconds(&self) -> Result<Option<f64>, StoreError> {
        self.0.replica_lag().await
    }
}

/// COPY's binary format (PostgreSQL's `PGCOPY`): the signature, no flags, no header extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of a binary COPY: a field count of -1.
const COPY_TRAILER: &[u8] = &[0xff, 0xff];
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Fields per row: [`COLUMNS`].
const FIELDS: i16 = 14;

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // A field is at most a message or attributes object, far below 2 GiB (validate bounds both).
    out.extend_from_slice(&i32::try_from(bytes.len()).unwrap_or(i32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn push_optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_field(out, s.as_bytes()),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// A `timestamptz` in binary: microseconds since 2000-01-01 UTC.
fn push_time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    push_field(out, &(t.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
}

/// A `jsonb` in binary: version 1, then the JSON text.
fn push_jsonb(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    let at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, 1]);
    // Serializing a JSON value or an exception into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    let len = i32::try_from(out.len() - at - 4).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Encodes records as binary COPY rows, in [`COLUMNS`] order: no text escaping, no time formatting, and
/// PostgreSQL parses nothing but the two JSON columns. Rows concatenate; [`copy_encoded`] adds the header
/// and trailer.
pub fn encode_copy_rows(records: &[LogRecord], out: &mut Vec<u8>) {
    for r in records {
        out.extend_from_slice(&FIELDS.to_be_bytes());
        push_field(out, r.id.as_bytes());
        push_field(out, r.project_id.as_bytes());
        push_time(out, &r.timestamp);
        push_time(out, &r.received_at);
        push_field(out, &r.level.number().to_be_bytes());
        push_optional(out, r.service.as_deref());
        push_optional(out, r.environment.as_deref());
        push_optional(out, r.host.as_deref());
        push_field(out, r.message.as_bytes());
        push_field(out, &(r.fingerprint as i64).to_be_bytes());
        push_optional(out, r.trace_id.as_deref());
        push_optional(out, r.span_id.as_deref());
        push_jsonb(out, &r.attributes);
        match &r.exception {
            Some(exception) => push_jsonb(out, exception),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
}

/// COPYs records into `logs` on `conn` (inside the caller's transaction).
pub async fn copy_records(conn: &mut PgConnection, records: &[LogRecord]) -> Result<u64, sqlx::Error> {
    let mut buffer = Vec::with_capacity(records.len() * 512);
    encode_copy_rows(records, &mut buffer);
    copy_encoded(conn, &buffer).await
}

/// COPYs rows already encoded by [`encode_copy_rows`] (the queue workers encode off the async runtime).
pub(crate) async fn copy_encoded(conn: &mut PgConnection, rows: &[u8]) -> Result<u64, sqlx::Error> {
    let mut copy = conn.copy_in_raw(&format!("COPY logs ({COLUMNS}) FROM STDIN (FORMAT binary)")).await?;
    copy.send(COPY_HEADER).await?;
    copy.send(rows).await?;
    copy.send(COPY_TRAILER).await?;
    copy.finish().await
}

/// Summarizes the page ranges appended since the last call in every BRIN index (time and id), so a look-up by
/// id or time skips them; unsummarized ranges are read in full. Cheap: it reads only the new pages.
pub async fn summarize_brin(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(brin_summarize_new_values(i.indexrelid::regclass)), 0)::bigint \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
         WHERE a.amname = 'brin' AND c.relkind = 'i'",
    )
    .fetch_one(pool)
    .await
}

/// Creates the monthly partitions from last month to `months_ahead` ahead, where missing.
pub async fn ensure_partitions(pool: &PgPool, months_ahead: u32) -> Result<(), sqlx::Error> {
    use chrono::{Datelike, Months, NaiveDate};
    let today = Utc::now().date_naive();
    let Some(this_month) = NaiveDate::from_ymd_opt(today.year(), today.month(), 1) else { return Ok(()) };
    for offset in 0..=months_ahead + 1 {
        let Some(start) = (this_month - Months::new(1)).checked_add_months(Months::new(offset)) else { continue };
        let Some(end) = start.checked_add_months(Months::new(1)) else { continue };
        let name = format!("logs_{}", start.format("%Y_%m"));
        let sql =
            format!("CREATE TABLE IF NOT EXISTS {name} PARTITION OF logs FOR VALUES FROM ('{start}') TO ('{end}')");
        if let Err(error) = sqlx::query(&sql).execute(pool).await {
            // A DEFAULT partition holding rows of this month makes the CREATE fail; those rows stay
            // queryable there, and the month keeps using DEFAULT. Logged, not fatal.
            tracing::warn!(%error, partition = name, "could not create partition");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn copy_rows_are_binary_fields_with_nulls_marked() {
        let at = DateTime::from_timestamp_micros(1_764_230_400_123_456).expect("time");
        let record = LogRecord {
            id: Uuid::nil(),
            received_at: DateTime::from_timestamp_micros(1_764_230_400_000_001).expect("time"),
            service: Some("api".into()),
            attributes: json!({"k": "v\tw"}),
            fingerprint: u64::MAX,
            ..LogRecord::new(Uuid::nil(), at, Level::Error, "tab\there\nnew line \\ back")
        };
        let mut out = Vec::new();
        encode_copy_rows(&[record], &mut out);
        // Reads the row back field by field: (length, bytes), -1 for NULL.
        let mut fields = Vec::new();
        assert_eq!(i16::from_be_bytes([out[0], out[1]]), 14);
        let mut at = 2;
        while at < out.len() {
            let len = i32::from_be_bytes(out[at..at + 4].try_into().expect("4 bytes"));
            at += 4;
            if len < 0 {
                fields.push(None);
            } else {
                fields.push(Some(out[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        assert_eq!(fields.len(), 14);
        let micros = i64::from_be_bytes(fields[2].clone().expect("ts").try_into().expect("8 bytes"));
        assert_eq!(micros + PG_EPOCH_MICROS, 1_764_230_400_123_456);
        assert_eq!(fields[4].as_deref(), Some(&40i16.to_be_bytes()[..]));
        assert_eq!(fields[8].as_deref(), Some("tab\there\nnew line \\ back".as_bytes()), "no escaping");
        assert_eq!(fields[6], None);
        assert_eq!(fields[9].as_deref(), Some(&(-1i64).to_be_bytes()[..]));
        assert_eq!(fields[12].as_deref(), Some(&b"\x01{\"k\":\"v\\tw\"}"[..]), "jsonb version 1, then the text");
        assert_eq!(fields[13], None);
    }
}
