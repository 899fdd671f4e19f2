//! The log store: where acknowledged logs end up, and how they are read back.
//!
//! PostgreSQL (partitioned by month, written with COPY by the queue workers) or SQLite (written by the
//! embedded group-commit writer). Both answer the same [`LogQuery`] with the same logs, newest first, and
//! page with the same opaque keyset cursor, so a page never skips or repeats a log.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ledger_stages::{Level, LogRecord};
use uuid::Uuid;

use crate::store::StoreError;

pub mod postgres;
pub mod search;
pub mod sqlite;

/// The columns of `logs`, in the order both stores read and write them.
pub const COLUMNS: &str = "id, project_id, ts, received_at, level, service, environment, host, message, fingerprint, trace_id, span_id, attributes, exception";

/// Where a page ends: the (timestamp, id) of its last log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub timestamp: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn after(record: &LogRecord) -> Cursor {
        Cursor { timestamp: record.timestamp, id: record.id }
    }

    /// Opaque to clients: base64url of `micros:uuid`.
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.timestamp.timestamp_micros(), self.id))
    }

    pub(crate) fn decode(s: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let (micros, id) = raw.split_once(':')?;
        Some(Cursor {
            timestamp: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// What `GET /v1/logs` asks for; always within one project.
#[derive(Clone, Debug)]
pub struct LogQuery {
    pub project_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Any of these levels (empty: any).
    pub levels: Vec<Level>,
    pub min_level: Option<Level>,
    /// Any of these services (empty: any).
    pub services: Vec<String>,
    pub environment: Option<String>,
    /// Each must occur in the message, case-insensitively: words and quoted phrases alike.
    pub terms: Vec<String>,
    pub fingerprint: Option<u64>,
    pub trace_id: Option<String>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

/// A queue's position moving past a batch: written in the batch's transaction, and only if it still holds
/// `from` (else another worker owns the queue now, and nothing is written).
#[derive(Clone, Copy, Debug)]
pub struct OffsetMove<'a> {
    pub shard: i32,
    pub from: &'a str,
    pub to: &'a str,
}

/// One write: logs, the queue's bookkeeping beside them, one transaction. `R` is the store's own form of
/// rows ([`LogWriter::Rows`]): a queue cannot hand a store another store's rows.
pub struct WriteBatch<'a, R: ?Sized> {
    pub rows: &'a R,
    /// Queue entries that cannot be written, kept with why (shared backend).
    pub dead_letters: &'a [crate::store::dead_letter::Poison],
    pub offset: Option<OffsetMove<'a>>,
    /// The batch's logs already behind the search index ([`search::late_blocks`]), and when that was
    /// decided: the write marks them, and is given up if it cannot commit within
    /// [`search::WRITE_BUDGET`] of that moment.
    pub late: Late<'a>,
    /// Idempotency keys whose answers commit with these logs (embedded: a retry after any restart or crash
    /// is answered from them). The shared backend keeps its keys in Redis and passes none.
    pub answers: &'a [KeptAnswer<'a>],
}

/// An idempotency key's answer, kept until `expires_at`.
#[derive(Clone, Copy, Debug)]
pub struct KeptAnswer<'a> {
    pub project: uuid::Uuid,
    pub key: &'a str,
    pub answer: &'a str,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// See [`WriteBatch::late`].
#[derive(Clone, Copy, Debug)]
pub struct Late<'a> {
    pub blocks: &'a [search::LateMark],
    pub decided: std::time::Instant,
}

impl Late<'_> {
    /// Whether the write is still in time to commit.
    pub(crate) fn in_time(&self) -> bool {
        self.decided.elapsed() < search::WRITE_BUDGET
    }
}

/// Why a write did not happen. Nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store refused the data itself (PostgreSQL SQLSTATE classes 22, 23, 54): retrying cannot help.
    #[error("the store refused the batch: {0}")]
    Refused(String),
    /// The offset no longer held `from`: this writer lost its queue.
    #[error("the queue offset moved under this writer")]
    OffsetMoved,
    /// Anything passing: a connection, a timeout. Retried.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// The write port: what the queues call to store a batch, exactly once, with their own bookkeeping in the
/// same transaction. PostgreSQL and SQLite both implement it.
#[async_trait]
pub trait LogWriter: Send + Sync + 'static {
    /// A batch's rows as this store takes them: PostgreSQL binary COPY rows, which the queue's workers
    /// prepare off the async runtime ([`PrepareRows`]); SQLite the records themselves, in groups.
    type Rows<'r>: ?Sized + Sync;

    async fn write<'a>(&self, batch: WriteBatch<'a, Self::Rows<'a>>) -> Result<(), WriteError>;
    /// The queue `shard`'s committed offset, if it has one.
    async fn offset(&self, shard: i32) -> Result<Option<String>, WriteError>;
}

/// A store that takes the records as they are, in groups (SQLite): what the embedded queue writes to.
pub trait RecordWriter: for<'a> LogWriter<Rows<'a> = [&'a [LogRecord]]> {}

impl<W: for<'a> LogWriter<Rows<'a> = [&'a [LogRecord]]>> RecordWriter for W {}

/// A store whose rows a queue worker prepares itself, entry by entry off the async runtime, and writes
/// whole or a part at a time (a refused batch is written entry by entry): the worker fills a buffer through
/// the store's own encoder and cuts it only where an entry ended, never knowing the format.
pub trait PrepareRows: LogWriter {
    type Buffer: Default + Send + Sync + 'static;
    /// Appends `records` in the store's form.
    fn push(buffer: &mut Self::Buffer, records: &[LogRecord]);
    /// Where the rows pushed so far end: a place to cut.
    fn end(buffer: &Self::Buffer) -> usize;
    /// The rows between two ends.
    fn part(buffer: &Self::Buffer, range: std::ops::Range<usize>) -> &Self::Rows<'_>;
}

#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Logs matching `query`, newest first (by timestamp, then id), at most `query.limit`.
    async fn query(&self, query: &LogQuery) -> Result<Vec<LogRecord>, StoreError> {
        self.query_by(query, SearchPath::Index).await
    }
    /// [`LogStore::query`] along a chosen path.
    async fn query_by(&self, query: &LogQuery, path: SearchPath) -> Result<Vec<LogRecord>, StoreError>;
    async fn get(&self, project_id: Uuid, id: Uuid) -> Result<Option<LogRecord>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    /// Deletes at most `limit` logs of `project` older than `before`; how many it deleted.
    async fn delete_before(&self, project: Uuid, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError>;
    /// Deletes at most `limit` logs of projects not in `projects` (deleted projects) received before
    /// `received_before`, the time the list was read: a project created since has no logs before it, so its
    /// logs are never taken for a deleted project's. How many it deleted.
    async fn delete_others(
        &self,
        projects: &[Uuid],
        received_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, StoreError>;
    /// Drops whole storage units holding only logs older than `before` (PostgreSQL's monthly partitions;
    /// nothing for SQLite); their names.
    async fn drop_before(&self, before: DateTime<Utc>) -> Result<Vec<String>, StoreError>;
    /// The analytics of every project's logs with `from <= ts < to`, in buckets of `g` (the caller aligns
    /// the range to whole buckets): level counts, and for `Hour`/`Day` error counts and error info.
    async fn stats(
        &self,
        g: crate::store::analytics::Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<crate::store::analytics::Stats, StoreError>;
}

/// Rows of the three analytics queries, as both stores return them.
pub type VolumeRow = (Uuid, i64, i16, i64);
pub type ErrorRow = (Uuid, i64, i64, i64);
pub type InfoRow = (Uuid, i64, i64, i64, i16, Option<String>, String, Option<String>);

/// The three analytics queries (level counts, error counts, error info), written once for both stores.
/// Parameters: `$1` from, `$2` to, `$3` bucket seconds (volume and errors only).
pub struct StatsSql {
    pub volume: String,
    pub errors: String,
    pub info: String,
}

impl StatsSql {
    /// `bucket`: the bucket start of `ts` in Unix seconds; `micros`: an expression over `ts` in Unix
    /// microseconds (applied to `min(ts)` and `max(ts)`); `exception_type`: the exception's type.
    pub(crate) fn new(bucket: &str, micros: impl Fn(&str) -> String, exception_type: &str) -> StatsSql {
        let window = "FROM logs WHERE ts >= $1 AND ts < $2";
        StatsSql {
            volume: format!("SELECT project_id, {bucket}, level, count(*) {window} GROUP BY 1, 2, 3"),
            errors: format!(
                "SELECT project_id, {bucket}, fingerprint, count(*) {window} AND level >= 40 GROUP BY 1, 2, 3"
            ),
            info: format!(
                "SELECT project_id, fingerprint, {}, {}, max(level), min(service), min(message), min({exception_type}) \
                 {window} AND level >= 40 GROUP BY 1, 2",
                micros("min(ts)"),
                micros("max(ts)")
            ),
        }
    }
}

/// Assembles the analytics query rows into cache stats.
pub(crate) fn assemble(
    g: crate::store::analytics::Granularity,
    volume: Vec<VolumeRow>,
    errors: Vec<ErrorRow>,
    info: Vec<InfoRow>,
) -> crate::store::analytics::Stats {
    use crate::store::analytics::{ErrorInfo, Stats, level_index};
    let mut stats = Stats::default();
    for (project, bucket, level, count) in volume {
        let level = Level::from_number(level).unwrap_or(Level::Info);
        stats.volume.entry((project, g, bucket)).or_default()[level_index(level)] += u64::try_from(count).unwrap_or(0);
    }
    for (project, bucket, fingerprint, count) in errors {
        stats.errors.insert((project, g, bucket, fingerprint as u64), u64::try_from(count).unwrap_or(0));
    }
    for (project, fingerprint, first_seen, last_seen, level, service, sample_message, exception_type) in info {
        let info = ErrorInfo { first_seen, last_seen, level, service, sample_message, exception_type };
        stats.info.insert((project, fingerprint as u64), info);
    }
    stats
}

/// What differs between the two stores' SQL for a [`LogQuery`]: how a time is stored, and the
/// case-insensitive `LIKE`.
pub trait Dialect: sqlx::Database {
    type Time: for<'q> sqlx::Encode<'q, Self> + sqlx::Type<Self> + Send + 'static;
    /// The case-insensitive match operator, and what follows its pattern.
    const CONTAINS: (&'static str, &'static str);
    fn time(t: DateTime<Utc>) -> Self::Time;
}

impl Dialect for sqlx::Postgres {
    type Time = DateTime<Utc>;
    const CONTAINS: (&'static str, &'static str) = (" AND message ILIKE ", "");
    fn time(t: DateTime<Utc>) -> DateTime<Utc> {
        t
    }
}

impl Dialect for sqlx::Sqlite {
    /// Microseconds since the epoch.
    type Time = i64;
    const CONTAINS: (&'static str, &'static str) = (" AND message LIKE ", " ESCAPE '\\'");
    fn time(t: DateTime<Utc>) -> i64 {
        t.timestamp_micros()
    }
}

/// `SELECT` of a [`LogQuery`], newest first: one builder for both stores. With `ranges` (the search
/// index's candidates, `[start, end)` in microseconds), one keyed sub-select per range, each stopping at
/// the page's size, in a `UNION ALL`: every range is an index range scan of its own, whatever the planner
/// would make of one statement over their span.
pub(crate) fn select<'a, DB>(q: &LogQuery, ranges: Option<&[(i64, i64)]>) -> sqlx::QueryBuilder<'a, DB>
where
    DB: Dialect,
    Uuid: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i16: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut sql = sqlx::QueryBuilder::<DB>::new("");
    let Some(ranges) = ranges else {
        push_select(&mut sql, q, q.from, q.to);
        return sql;
    };
    let time = |micros: i64| DateTime::from_timestamp_micros(micros).unwrap_or_default();
    for (i, (start, end)) in ranges.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push("SELECT * FROM (");
        // Times are whole microseconds in both stores: `< end` is `<= end - 1 µs`.
        push_select(&mut sql, q, time(*start).max(q.from), time(end - 1).min(q.to));
        sql.push(format!(") AS r{i}"));
    }
    sql.push(" ORDER BY ts DESC, id DESC LIMIT ").push_bind(i64::try_from(q.limit).unwrap_or(1000));
    sql
}

/// One keyed, time-bounded `SELECT` of `q` over `[from, to]`.
fn push_select<DB>(sql: &mut sqlx::QueryBuilder<'_, DB>, q: &LogQuery, from: DateTime<Utc>, to: DateTime<Utc>)
where
    DB: Dialect,
    Uuid: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i16: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sql.push(format!("SELECT {COLUMNS} FROM logs WHERE project_id = "));
    sql.push_bind(q.project_id).push(" AND ts >= ").push_bind(DB::time(from));
    sql.push(" AND ts <= ").push_bind(DB::time(to));
    if !q.levels.is_empty() {
        sql.push(" AND level IN (");
        let mut list = sql.separated(", ");
        for level in &q.levels {
            list.push_bind(level.number());
        }
        sql.push(")");
    }
    if let Some(min) = q.min_level {
        sql.push(" AND level >= ").push_bind(min.number());
    }
    if !q.services.is_empty() {
        sql.push(" AND service IN (");
        let mut list = sql.separated(", ");
        for service in &q.services {
            list.push_bind(service.clone());
        }
        sql.push(")");
    }
    if let Some(environment) = &q.environment {
        sql.push(" AND environment = ").push_bind(environment.clone());
    }
    let (contains, escape) = DB::CONTAINS;
    for term in &q.terms {
        sql.push(contains).push_bind(contains_pattern(term)).push(escape);
    }
    if let Some(fingerprint) = q.fingerprint {
        sql.push(" AND fingerprint = ").push_bind(fingerprint as i64);
    }
    if let Some(trace_id) = &q.trace_id {
        sql.push(" AND trace_id = ").push_bind(trace_id.clone());
    }
    if let Some(cursor) = q.cursor {
        sql.push(" AND (ts, id) < (").push_bind(DB::time(cursor.timestamp)).push(", ").push_bind(cursor.id).push(")");
    }
    sql.push(" ORDER BY ts DESC, id DESC LIMIT ").push_bind(i64::try_from(q.limit).unwrap_or(1000));
}

/// How a `q` query finds its logs: through the search index where it has one (the default), or by
/// scanning every log in range; both give the same answer (the conformance suite checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchPath {
    Index,
    Scan,
}

/// The index's candidate ranges (newest first) cut to what a page still needs (below its cursor), in
/// groups that double in size: the first statements are small and stop early when the newest ranges
/// fill the page, and a long tail of candidates costs few statements.
pub(crate) fn range_groups(q: &LogQuery, ranges: &[(i64, i64)]) -> Vec<Vec<(i64, i64)>> {
    let below = q.cursor.map(|c| c.timestamp.timestamp_micros());
    let ranges: Vec<(i64, i64)> = ranges
        .iter()
        .filter_map(|&(start, end)| match below {
            Some(c) if start > c => None,
            Some(c) => Some((start, end.min(c.saturating_add(1)))),
            None => Some((start, end)),
        })
        .collect();
    let (mut groups, mut at, mut size) = (Vec::new(), 0, 1);
    while at < ranges.len() {
        let end = (at + size).min(ranges.len());
        groups.push(ranges[at..end].to_vec());
        at = end;
        size = (size * 2).min(64);
    }
    groups
}

/// Runs a query along the index's candidate ranges (in [`range_groups`], until the page is full) or, without
/// them, as one scan: `fetch` runs one [`select`] of a page with its ranges.
pub(crate) async fn paged<F, Fut>(
    q: &LogQuery,
    candidates: Option<Vec<(i64, i64)>>,
    mut fetch: F,
) -> Result<Vec<LogRecord>, StoreError>
where
    F: FnMut(LogQuery, Option<Vec<(i64, i64)>>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<LogRecord>, StoreError>>,
{
    let Some(ranges) = candidates else { return fetch(q.clone(), None).await };
    let mut found = Vec::new();
    for group in range_groups(q, &ranges) {
        let page = LogQuery { limit: q.limit - found.len(), ..q.clone() };
        found.extend(fetch(page, Some(group)).await?);
        if found.len() >= q.limit {
            break;
        }
    }
    Ok(found)
}

/// A `LIKE` pattern that matches `term` anywhere, with `%`, `_` and `\` taken literally.
pub(crate) fn contains_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor {
            timestamp: DateTime::from_timestamp_micros(1_764_230_400_123_456).expect("time"),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not-a-cursor"), None);
        assert_eq!(Cursor::decode(""), None);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
