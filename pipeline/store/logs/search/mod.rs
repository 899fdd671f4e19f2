//! The search index: for each project, week and three-character sequence ("gram") of its messages, the
//! blocks (15 seconds of time) of that week whose logs contain it. A `q` query then reads only the blocks that hold every gram
//! of its terms instead of every log in its range, and checks them with the same `ILIKE`/`LIKE` as a scan,
//! so the answers are the scan's by construction: the index can only ever say "maybe here", never decide a
//! match.
//!
//! The index is never written on the ingestion path. A scheduled job ([`SearchIndex::index_once`]) reads
//! the logs of each block once it is [`LAG`] old and merges their grams into `search_grams`, moving
//! `search_state.indexed_through` forward in the same transaction; whatever is newer than that watermark
//! is scanned, so a log is searchable the moment it is committed.
//!
//! A log whose time is already behind the watermark when it is written (a client's old timestamp, a queue
//! drained after an outage) would be missed: the writers mark such logs' blocks in `search_late` in the
//! same transaction as the logs ([`late_blocks`]), queries treat those blocks as candidates, and the job
//! indexes them and removes the marks. A writer marks every log older than [`LATE`], the job only indexes
//! blocks older than [`LAG`], and a writer gives up a transaction that took longer than [`WRITE_BUDGET`]
//! from marking to commit; so a log the job did not see is always marked, if the clocks of the machines
//! involved agree within `LAG - LATE - WRITE_BUDGET` (10 s).
//!
//! Case: grams are taken over characters folded with Unicode's simple lowercase mapping, which is at most
//! as fine as PostgreSQL's `ILIKE` and SQLite's ASCII-only `LIKE`; a gram can only make the index coarser
//! (more candidates), never lose a match. Terms shorter than three characters have no gram and are scanned.

use std::collections::HashMap;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::StoreError;
use crate::store::sql::{Db, on_db};

mod grams;
mod job;
mod plan;

use grams::block_of;
pub use grams::{Blocks, grams, query_grams};
pub use job::Progress;
pub use plan::Ranges;

/// The job indexes a block once it is this old.
pub const LAG: Duration = Duration::from_secs(60);
/// Writers mark logs older than this as late.
pub const LATE: Duration = Duration::from_secs(30);
/// A writer's transaction must commit within this of marking its late logs, or it is given up (and retried).
pub const WRITE_BUDGET: Duration = Duration::from_secs(20);

/// A block: 15 seconds. Measured on 20M logs, a phrase of common fragments ("logged in from 10.0.42.") over
/// 7 days in one-minute blocks still read 40% of them; shorter blocks hold fewer logs, so fewer hold every
/// gram by chance.
const MICROS_PER_BLOCK: i64 = 15_000_000;
/// A row of the index covers a week (weeks since the Unix epoch): few rows for quiet projects, and a busy
/// one's rows stay a 5,040-byte bitmap at most.
const BLOCKS_PER_WEEK: i64 = 40_320;
/// A week's blocks as a bitmap.
const BITMAP_BYTES: usize = 5040;
/// When a query's candidates cover this share of its range or more, scanning it is as cheap.
const SCAN_COVERAGE: f64 = 0.5;
/// A run reads about this many logs per step at most (its span grown and shrunk towards it): a step rewrites
/// each row it touches, so a bulk build with steps of days writes each row a few times, not hundreds.
const STEP_LOGS: u64 = 2_000_000;
/// Index rows per write transaction: short, so the embedded writer never waits long for SQLite's lock.
const ROWS_PER_TRANSACTION: usize = 5000;
/// At most this many grams are looked up per query; any subset of a term's grams is as correct.
const MAX_QUERY_GRAMS: usize = 24;
/// Rows per multi-row statement.
const ROWS_PER_STATEMENT: usize = 500;

/// A mark of logs written behind the watermark: their project and block, and the least and greatest of
/// their ids, so the job reads only them again (by id) and not their whole block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LateMark {
    pub project: Uuid,
    pub block: i64,
    pub first_id: Uuid,
    pub last_id: Uuid,
}

/// The marks for the logs in `records` older than [`LATE`] at `now`, one per (project, block): what a
/// writer inserts in `search_late` beside them.
pub fn late_blocks<'a>(
    records: impl IntoIterator<Item = &'a ledger_stages::LogRecord>,
    now: DateTime<Utc>,
) -> Vec<LateMark> {
    let mut blocks = LateBlocks::new(now);
    for record in records {
        blocks.add(record);
    }
    blocks.into_marks()
}

/// [`late_blocks`] gathered a log at a time, for a writer that does not hold its batch's logs at once.
pub struct LateBlocks {
    cutoff: i64,
    marks: HashMap<(Uuid, i64), (Uuid, Uuid)>,
}

impl LateBlocks {
    pub(crate) fn new(now: DateTime<Utc>) -> LateBlocks {
        LateBlocks { cutoff: (now - LATE).timestamp_micros(), marks: HashMap::new() }
    }

    pub(crate) fn add(&mut self, record: &ledger_stages::LogRecord) {
        let ts = record.timestamp.timestamp_micros();
        if ts < self.cutoff {
            let ids = self.marks.entry((record.project_id, block_of(ts))).or_insert((record.id, record.id));
            ids.0 = ids.0.min(record.id);
            ids.1 = ids.1.max(record.id);
        }
    }

    /// The marks, sorted.
    pub(crate) fn into_marks(self) -> Vec<LateMark> {
        let mut marks: Vec<LateMark> = self
            .marks
            .into_iter()
            .map(|((project, block), (first_id, last_id))| LateMark { project, block, first_id, last_id })
            .collect();
        marks.sort_unstable();
        marks
    }
}

/// The search index on the log database.
#[derive(Clone, Debug)]
pub struct SearchIndex {
    db: Db,
    /// Where query plans read the index: a read replica, or `db`.
    reader: Db,
    /// The span of the last step, in blocks: where the next run starts (a catch-up does not ramp up again
    /// from one block each run).
    span: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// An index row's key: project, week, gram.
type Key = (Uuid, i32, i32);
/// An index row: its key and its blocks, encoded.
type IndexRow = (Uuid, i32, i32, Vec<u8>);
/// A gram's row for a query: gram, week, blocks.
type GramRow = (i32, i32, Vec<u8>);

/// Reads the index rows of some keys, with their blocks: how differs by database.
trait ReadKeys {
    fn read_keys(
        &mut self,
        keys: &[Key],
    ) -> impl std::future::Future<Output = Result<Vec<IndexRow>, sqlx::Error>> + Send;
}

impl ReadKeys for sqlx::PgConnection {
    /// A join on the key, so each is an index look-up (an IN list of row values is planned as a scan of the
    /// whole table).
    async fn read_keys(&mut self, keys: &[Key]) -> Result<Vec<IndexRow>, sqlx::Error> {
        let (mut projects, mut weeks, mut grams) = (Vec::new(), Vec::new(), Vec::new());
        for (project, week, gram) in keys {
            projects.push(*project);
            weeks.push(*week);
            grams.push(*gram);
        }
        sqlx::query_as(
            "SELECT s.project_id, s.week, s.gram, s.blocks \
             FROM unnest($1::uuid[], $2::integer[], $3::integer[]) AS k (project_id, week, gram) \
             JOIN search_grams s ON s.project_id = k.project_id AND s.gram = k.gram AND s.week = k.week",
        )
        .bind(projects)
        .bind(weeks)
        .bind(grams)
        .fetch_all(self)
        .await
    }
}

impl ReadKeys for sqlx::SqliteConnection {
    async fn read_keys(&mut self, keys: &[Key]) -> Result<Vec<IndexRow>, sqlx::Error> {
        let mut sql = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT project_id, week, gram, blocks FROM search_grams WHERE (project_id, week, gram) IN (VALUES ",
        );
        let mut list = sql.separated(", ");
        for (project, week, gram) in keys {
            list.push("(").push_bind_unseparated(*project).push_unseparated(", ");
            list.push_bind_unseparated(*week).push_unseparated(", ").push_bind_unseparated(*gram);
            list.push_unseparated(")");
        }
        sql.push(")");
        sql.build_query_as().fetch_all(self).await
    }
}

impl SearchIndex {
    pub(crate) fn new(db: Db) -> SearchIndex {
        SearchIndex { reader: db.clone(), db, span: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1)) }
    }

    /// Plans queries on `reader` (a read replica); the index is still built on the primary.
    pub(crate) fn with_reader(mut self, reader: Db) -> SearchIndex {
        self.reader = reader;
        self
    }

    /// Everything before this (Unix microseconds) is indexed; `None` before the index's first run.
    pub(crate) async fn indexed_through(&self) -> Result<Option<i64>, StoreError> {
        Ok(on_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT indexed_through FROM search_state WHERE id = 1").fetch_optional(pool).await?
        }))
    }

    /// Forgets the index of weeks wholly before `before` (retention), all projects; how many rows it removed.
    pub(crate) async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let week = block_of(before.timestamp_micros()).div_euclid(BLOCKS_PER_WEEK) as i32;
        Ok(on_db!(&self.db, pool => {
            sqlx::query("DELETE FROM search_grams WHERE week < $1").bind(week).execute(pool).await?.rows_affected()
        }))
    }

    /// PostgreSQL: the index's size on disk and the log table's (with their indexes and TOAST), in bytes.
    /// SQLite: `None` (one file; measure it before and after indexing).
    pub async fn sizes(&self) -> Result<Option<(i64, i64)>, StoreError> {
        let Db::Postgres(pool) = &self.db else { return Ok(None) };
        let sizes = sqlx::query_as(
            "SELECT pg_total_relation_size('search_grams') + pg_total_relation_size('search_late'), \
             (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint FROM pg_inherits \
              WHERE inhparent = 'logs'::regclass)",
        )
        .fetch_one(pool)
        .await?;
        Ok(Some(sizes))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::grams::{each_gram, fold, gram_key};
    use super::job::reads_of;
    use super::plan::ranges;
    use super::*;

    fn set(text: &str) -> HashSet<i32> {
        let mut out = HashSet::new();
        grams(text, &mut out);
        out
    }

    #[test]
    fn a_substring_has_no_gram_its_text_lacks() {
        let message = set("Payment for ORDER 20417 declined: card ****1111 (Zürich, İstanbul, 東京駅)");
        for term in
            ["order 2041", "DECLINED", "payment for", "zÜRICH", "istanbul", "İSTANBUL", "東京", "東京駅", "1111 (zü"]
        {
            let wanted = query_grams(&[term.to_owned()]);
            assert!(wanted.iter().all(|g| message.contains(g)), "{term}");
        }
        assert!(!query_grams(&["zanzibar".into()]).iter().all(|g| message.contains(g)));
    }

    #[test]
    fn the_ascii_path_keys_grams_as_the_general_one() {
        for text in ["Payment DECLINED for order 42", "ab", "abc", "\u{7f}~ x{}|", "a\tb\nc"] {
            let mut rolled = Vec::new();
            each_gram(text, |g| rolled.push(g));
            let chars: Vec<char> = text.chars().map(fold).collect();
            let general: Vec<i32> = chars.windows(3).map(|w| gram_key(w[0], w[1], w[2])).collect();
            assert_eq!(rolled, general, "{text:?}");
        }
    }

    #[test]
    fn late_marks_are_read_again_by_merged_id_ranges_or_whole_blocks() {
        let (p, q) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let id = Uuid::from_u128;
        let mut marks = vec![
            (p, 7, Some((id(10), id(20)))),
            (p, 7, Some((id(15), id(30)))),
            (p, 7, Some((id(40), id(50)))),
            (p, 8, Some((id(1), id(2)))),
            (p, 8, None),
            (q, 7, Some((id(10), id(20)))),
        ];
        marks.sort_unstable();
        assert_eq!(
            reads_of(marks),
            vec![
                (p, 7, Some((id(10), id(30)))),
                (p, 7, Some((id(40), id(50)))),
                (p, 8, None),
                (q, 7, Some((id(10), id(20)))),
            ]
        );
    }

    #[test]
    fn short_terms_have_no_gram() {
        assert!(query_grams(&["ab".into(), "é".into()]).is_empty());
        assert_eq!(query_grams(&["abc".into()]).len(), 1);
    }

    #[test]
    fn folding_is_at_most_as_fine_as_ilike() {
        // The Kelvin sign lowercases to an ASCII k; Turkish dotted capital I to an i.
        assert_eq!(set("\u{212A}ey"), set("key"));
        assert_eq!(set("\u{130}st"), set("ist"));
        assert_eq!(set("ÉCOLE"), set("école"));
    }

    #[test]
    fn minutes_round_trip_as_list_and_bitmap() {
        let mut few = Blocks::default();
        for m in [0, 7, 10_079] {
            few.insert(m);
        }
        assert_eq!(few.encode().len(), 6);
        assert_eq!(Blocks::decode(&few.encode()), few);
        let mut many = Blocks::default();
        for m in (0..10_080).step_by(3) {
            many.insert(m);
        }
        assert_eq!(many.encode().len(), BITMAP_BYTES);
        assert_eq!(Blocks::decode(&many.encode()), many);
        let mut merged = few.clone();
        merged.merge(&many);
        assert!(merged.contains(7) && merged.contains(3) && merged.contains(10_079));
    }

    #[test]
    fn candidate_minutes_merge_into_ranges_newest_first() {
        let m = MICROS_PER_BLOCK;
        // Blocks 10, 11 and 20, the tail from block 30; the range is [10.5 min, 40 min).
        let got = ranges(&[10, 11, 20], Some(30 * m), 10 * m + m / 2, 40 * m);
        assert_eq!(got, vec![(30 * m, 40 * m), (20 * m, 21 * m), (10 * m + m / 2, 12 * m)]);
        assert_eq!(ranges(&[], None, 0, m), Vec::<(i64, i64)>::new());
    }

    #[test]
    fn late_logs_are_those_older_than_late() {
        let now = Utc::now();
        let project = Uuid::now_v7();
        let record = |age_secs: i64| ledger_stages::LogRecord {
            received_at: now,
            ..ledger_stages::LogRecord::new(
                project,
                now - chrono::Duration::seconds(age_secs),
                ledger_stages::Level::Info,
                "",
            )
        };
        let logs = [record(1), record(3600), record(3601), record(7200)];
        let late = late_blocks(&logs, now);
        assert!(late.len() >= 2 && late.len() <= 3, "{late:?}");
        assert!(late.iter().all(|m| m.project == project && m.first_id <= m.last_id));
    }
}
