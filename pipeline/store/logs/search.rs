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

use std::collections::{BTreeSet, HashMap, HashSet};

use rustc_hash::FxHashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::StoreError;
use crate::store::sql::{Db, on_db};

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

/// The fold of one character for grams: its simple lowercase.
fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    // `to_lowercase` is the full mapping; its first character is the simple one (U+0130 → 'i').
    c.to_lowercase().next().unwrap_or(c)
}

/// A gram's key: three ASCII characters packed exactly (21 bits); otherwise a hash with the top bit set,
/// where a collision only adds candidates.
fn gram_key(a: char, b: char, c: char) -> i32 {
    if a.is_ascii() && b.is_ascii() && c.is_ascii() {
        return (a as i32) | (b as i32) << 7 | (c as i32) << 14;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for ch in [a, b, c] {
        for byte in (ch as u32).to_le_bytes() {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
    }
    (hash | 0x8000_0000) as i32
}

/// Every gram of `text`, into `out`.
pub fn grams(text: &str, out: &mut HashSet<i32>) {
    each_gram(text, |gram| {
        out.insert(gram);
    });
}

/// Calls `f` with each gram of `text` in order, repeats included. ASCII text (most logs) takes a path of
/// its own: one byte per character, the key rolled along instead of rebuilt.
fn each_gram(text: &str, mut f: impl FnMut(i32)) {
    if text.is_ascii() {
        let mut key = 0i32;
        for (n, byte) in text.bytes().enumerate() {
            // Bits 0..7 hold the oldest character, as in `gram_key`.
            key = (key >> 7) | i32::from(byte.to_ascii_lowercase()) << 14;
            if n >= 2 {
                f(key);
            }
        }
        return;
    }
    let mut window = ['\0'; 3];
    for (n, c) in text.chars().map(fold).enumerate() {
        window = [window[1], window[2], c];
        if n >= 2 {
            f(gram_key(window[0], window[1], window[2]));
        }
    }
}

/// The grams a message must contain to contain every term; empty when no term has three characters.
pub fn query_grams(terms: &[String]) -> Vec<i32> {
    let mut all = HashSet::new();
    for term in terms {
        grams(term, &mut all);
    }
    let mut all: Vec<i32> = all.into_iter().collect();
    all.sort_unstable();
    all.truncate(MAX_QUERY_GRAMS);
    all
}

/// The block (since the Unix epoch) holding `micros`.
fn block_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_BLOCK)
}

/// A set of blocks of one week, stored as a sorted list of u16 when short, else as a bitmap. In memory a
/// vector, sorted and unique after [`Blocks::tidy`] (logs arrive about in time order, so pushing skips
/// most repeats by itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocks(Vec<u16>);

impl Blocks {
    pub fn insert(&mut self, block: u16) {
        if self.0.last() != Some(&block) {
            self.0.push(block);
        }
    }

    fn tidy(&mut self) {
        self.0.sort_unstable();
        self.0.dedup();
    }

    /// Whether `block` is in the set (a tidy one).
    pub fn contains(&self, block: u16) -> bool {
        self.0.binary_search(&block).is_ok()
    }

    pub fn merge(&mut self, other: &Blocks) {
        self.0.extend_from_slice(&other.0);
        self.tidy();
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        if self.0.len() * 2 < BITMAP_BYTES {
            self.0.iter().flat_map(|m| m.to_le_bytes()).collect()
        } else {
            let mut bits = vec![0u8; BITMAP_BYTES];
            for &m in self.0.iter().filter(|m| usize::from(**m) < BITMAP_BYTES * 8) {
                bits[usize::from(m) / 8] |= 1 << (m % 8);
            }
            bits
        }
    }

    pub fn decode(bytes: &[u8]) -> Blocks {
        let mut set = Vec::new();
        if bytes.len() == BITMAP_BYTES {
            for (i, byte) in bytes.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        set.push((i * 8 + bit) as u16);
                    }
                }
            }
        } else {
            set.extend(bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])));
        }
        let mut blocks = Blocks(set);
        blocks.tidy();
        blocks
    }
}

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
    pub fn new(now: DateTime<Utc>) -> LateBlocks {
        LateBlocks { cutoff: (now - LATE).timestamp_micros(), marks: HashMap::new() }
    }

    pub fn add(&mut self, record: &ledger_stages::LogRecord) {
        let ts = record.timestamp.timestamp_micros();
        if ts < self.cutoff {
            let ids = self.marks.entry((record.project_id, block_of(ts))).or_insert((record.id, record.id));
            ids.0 = ids.0.min(record.id);
            ids.1 = ids.1.max(record.id);
        }
    }

    /// The marks, sorted.
    pub fn into_marks(self) -> Vec<LateMark> {
        let mut marks: Vec<LateMark> = self
            .marks
            .into_iter()
            .map(|((project, block), (first_id, last_id))| LateMark { project, block, first_id, last_id })
            .collect();
        marks.sort_unstable();
        marks
    }
}

/// The time ranges of a query that can hold a match: `[start, end)` in Unix microseconds, newest first.
/// `None`: the index cannot help (no gram, or nothing indexed in range); scan the whole range.
pub type Ranges = Option<Vec<(i64, i64)>>;

/// Merges candidate blocks (sorted, unique) and the unindexed tail into ranges within
/// `[from, to_exclusive)`, newest first.
fn ranges(blocks: &[i64], tail_from: Option<i64>, from: i64, to_exclusive: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    let mut push = |start: i64, end: i64| {
        let (start, end) = (start.max(from), end.min(to_exclusive));
        if start >= end {
            return;
        }
        match out.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    };
    for &m in blocks {
        push(m * MICROS_PER_BLOCK, (m + 1) * MICROS_PER_BLOCK);
    }
    if let Some(tail) = tail_from {
        push(tail, to_exclusive);
    }
    out.reverse();
    out
}

/// What one indexing run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Logs read and indexed (late ones included).
    pub logs: u64,
    /// Everything before this is indexed (Unix microseconds); `None` before the first run.
    pub indexed_through: Option<i64>,
    /// Whether the run reached `now - LAG`.
    pub caught_up: bool,
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

/// The logs of late marks, read again: by id range within their block.
const LATE_BY_IDS: &str =
    "SELECT ts, message FROM logs WHERE id >= $1 AND id <= $2 AND project_id = $3 AND ts >= $4 AND ts < $5";
/// The same for marks without ids (written before marks had them): the whole block.
const LATE_BLOCK: &str = "SELECT ts, message FROM logs WHERE project_id = $3 AND ts >= $4 AND ts < $5 AND $1 <= $2";

/// Logs to read again: project, block, and the ids (`None`: the whole block).
type LateRead = (Uuid, i64, Option<(Uuid, Uuid)>);
/// A late mark as stored: its id, project, block, and the first and last ids it marks.
type LateRow = (i64, Uuid, i64, Option<Uuid>, Option<Uuid>);

/// What to read again for sorted late marks: per (project, block) the whole block when a mark has no ids,
/// else each run of overlapping id ranges once.
fn reads_of(marks: Vec<LateRead>) -> Vec<LateRead> {
    let mut reads: Vec<LateRead> = Vec::new();
    for (project, block, ids) in marks {
        match reads.last_mut() {
            Some((p, b, last)) if *p == project && *b == block => match (last.as_mut(), ids) {
                // A whole block is read already (None sorts first).
                (None, _) => {}
                (Some(_), None) => *last = None,
                (Some(range), Some((first, end))) if first <= range.1 => range.1 = range.1.max(end),
                (Some(_), Some(_)) => reads.push((project, block, ids)),
            },
            _ => reads.push((project, block, ids)),
        }
    }
    reads
}

/// Grams of a pass, by (project, week), then gram. Fx hashing: the keys are small integers, and the
/// job looks up one per character it reads.
type Pending = FxHashMap<(Uuid, i32), FxHashMap<i32, Blocks>>;

fn add_log(pending: &mut Pending, project: Uuid, micros: i64, message: &str) {
    let block = block_of(micros);
    let (week, of_week) = (block.div_euclid(BLOCKS_PER_WEEK), block.rem_euclid(BLOCKS_PER_WEEK) as u16);
    let grams = pending.entry((project, week as i32)).or_default();
    // A gram already seen in this block ends at `Blocks::insert`'s check of the last block.
    each_gram(message, |gram| grams.entry(gram).or_default().insert(of_week));
}

impl SearchIndex {
    pub fn new(db: Db) -> SearchIndex {
        SearchIndex { reader: db.clone(), db, span: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1)) }
    }

    /// Plans queries on `reader` (a read replica); the index is still built on the primary.
    pub fn with_reader(mut self, reader: Db) -> SearchIndex {
        self.reader = reader;
        self
    }

    /// Everything before this (Unix microseconds) is indexed; `None` before the index's first run.
    pub async fn indexed_through(&self) -> Result<Option<i64>, StoreError> {
        Ok(on_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT indexed_through FROM search_state WHERE id = 1").fetch_optional(pool).await?
        }))
    }

    /// The candidate ranges of `q` along `path` (see [`SearchIndex::candidates`]); `None`: scan.
    /// Read from the replica, if any, when `on_replica`.
    pub async fn plan(
        &self,
        q: &super::LogQuery,
        path: super::SearchPath,
        on_replica: bool,
    ) -> Result<Ranges, StoreError> {
        if path == super::SearchPath::Scan || q.terms.is_empty() {
            return Ok(None);
        }
        let (from, to) = (q.from.timestamp_micros(), q.to.timestamp_micros());
        let db = if on_replica { &self.reader } else { &self.db };
        self.candidates_on(db, q.project_id, from, to, &q.terms).await
    }

    /// [`SearchIndex::candidates_on`] the primary.
    pub async fn candidates(&self, project: Uuid, from: i64, to: i64, terms: &[String]) -> Result<Ranges, StoreError> {
        self.candidates_on(&self.db, project, from, to, terms).await
    }

    /// The candidate ranges of a query over `project`'s `[from, to]` (microseconds, `to` inclusive) for
    /// `terms`: the blocks before the watermark holding every gram, the late blocks, and everything
    /// from the watermark on. Read in one snapshot, so a concurrent indexing run is seen whole or not at all.
    async fn candidates_on(
        &self,
        db: &Db,
        project: Uuid,
        from: i64,
        to: i64,
        terms: &[String],
    ) -> Result<Ranges, StoreError> {
        let wanted = query_grams(terms);
        if wanted.is_empty() || to < from {
            return Ok(None);
        }
        let to_exclusive = to.saturating_add(1);
        let (first_block, last_block) = (block_of(from), block_of(to));
        let (first_week, last_week) =
            ((first_block.div_euclid(BLOCKS_PER_WEEK)) as i32, (last_block.div_euclid(BLOCKS_PER_WEEK)) as i32);
        let (through, rows, late): (Option<i64>, Vec<GramRow>, Vec<i64>) = on_db!(db, pool => {
            let mut tx = pool.begin().await?;
            if matches!(db, Db::Postgres(_)) {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
            }
            let through: Option<i64> = sqlx::query_scalar("SELECT indexed_through FROM search_state WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
            let Some(through) = through.filter(|t| *t > from) else {
                tx.rollback().await?;
                return Ok(None);
            };
            let mut sql = sqlx::QueryBuilder::new("SELECT gram, week, blocks FROM search_grams WHERE project_id = ");
            sql.push_bind(project).push(" AND week >= ").push_bind(first_week).push(" AND week <= ");
            sql.push_bind(last_week).push(" AND gram IN (");
            let mut list = sql.separated(", ");
            for gram in &wanted {
                list.push_bind(*gram);
            }
            sql.push(")");
            let rows: Vec<GramRow> = sql.build_query_as().fetch_all(&mut *tx).await?;
            let late: Vec<i64> = sqlx::query_scalar(
                "SELECT DISTINCT block FROM search_late WHERE project_id = $1 AND block >= $2 AND block <= $3",
            )
            .bind(project)
            .bind(first_block)
            .bind(last_block)
            .fetch_all(&mut *tx)
            .await?;
            tx.rollback().await?;
            (Some(through), rows, late)
        });
        let Some(through) = through else { return Ok(None) };
        // Per week, the blocks holding every gram: a week missing any gram has none.
        let mut by_week: HashMap<i32, Vec<Blocks>> = HashMap::new();
        for (_, week, blocks) in rows {
            by_week.entry(week).or_default().push(Blocks::decode(&blocks));
        }
        let indexed_end = block_of(through); // exclusive: the watermark is a block boundary
        let mut blocks: BTreeSet<i64> = late.into_iter().collect();
        for (week, sets) in by_week {
            if sets.len() < wanted.len() {
                continue;
            }
            let (smallest, others) = {
                let mut sets = sets;
                sets.sort_by_key(|s| s.0.len());
                let first = sets.remove(0);
                (first, sets)
            };
            for m in smallest.iter() {
                if others.iter().all(|s| s.contains(m)) {
                    let block = i64::from(week) * BLOCKS_PER_WEEK + i64::from(m);
                    if block >= first_block && block < indexed_end {
                        blocks.insert(block);
                    }
                }
            }
        }
        let blocks: Vec<i64> = blocks.into_iter().collect();
        let tail = (through < to_exclusive).then_some(through);
        let ranges = ranges(&blocks, tail, from, to_exclusive);
        let covered: i64 = ranges.iter().map(|(start, end)| end - start).sum();
        if covered as f64 >= SCAN_COVERAGE * (to_exclusive - from) as f64 {
            return Ok(None);
        }
        Ok(Some(ranges))
    }

    /// One indexing run: indexes whole blocks from the watermark towards `now - LAG` and the late blocks,
    /// (`now`: the clock, or less when the queue still holds older logs: see jobs/search.rs),
    /// one transaction per step, until caught up or `budget` is spent (it stops between steps; every step
    /// is durable, so a run cut short or crashed resumes where the last one committed).
    pub async fn index_once(&self, now: DateTime<Utc>, budget: Duration) -> Result<Progress, StoreError> {
        let started = std::time::Instant::now();
        let target = block_of((now - LAG).timestamp_micros()) * MICROS_PER_BLOCK;
        let mut progress = Progress::default();
        let mut through = match self.indexed_through().await? {
            Some(t) => t,
            None => {
                // The first run starts at the oldest log (or at the target when there is none).
                let oldest: Option<i64> = match &self.db {
                    Db::Postgres(pool) => sqlx::query_scalar::<_, Option<DateTime<Utc>>>("SELECT min(ts) FROM logs")
                        .fetch_one(pool)
                        .await?
                        .map(|t| t.timestamp_micros()),
                    Db::Sqlite(pool) => sqlx::query_scalar("SELECT min(ts) FROM logs").fetch_one(pool).await?,
                };
                let start = oldest.map(|t| block_of(t) * MICROS_PER_BLOCK).unwrap_or(target).min(target);
                on_db!(&self.db, pool => {
                    sqlx::query(
                        "INSERT INTO search_state (id, indexed_through) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(start)
                    .execute(pool)
                    .await?;
                });
                self.indexed_through().await?.unwrap_or(start)
            }
        };
        // A step covers `span` blocks, grown while steps read few logs and shrunk when they read many, and
        // never crosses a week (so a bulk build writes each row about once).
        let mut span: i64 = self.span.load(std::sync::atomic::Ordering::Relaxed).clamp(1, BLOCKS_PER_WEEK);
        loop {
            let week_end = (block_of(through).div_euclid(BLOCKS_PER_WEEK) + 1) * BLOCKS_PER_WEEK * MICROS_PER_BLOCK;
            let end = (through + span * MICROS_PER_BLOCK).min(target).min(week_end).max(through);
            let (logs, late_done) = self.step(through, end).await?;
            progress.logs += logs;
            through = end;
            if logs < STEP_LOGS / 2 {
                span = (span * 2).min(BLOCKS_PER_WEEK);
            } else if logs > STEP_LOGS * 2 {
                span = (span / 2).max(1);
            }
            self.span.store(span, std::sync::atomic::Ordering::Relaxed);
            if through >= target && late_done {
                progress.caught_up = true;
                break;
            }
            if started.elapsed() >= budget {
                break;
            }
        }
        progress.indexed_through = Some(through);
        Ok(progress)
    }

    /// Indexes `[from, to)` (to may equal from: late blocks only) and up to 1,000 late marks, and moves the
    /// watermark from `from` to `to`; how many logs it read, and whether no late mark is left.
    async fn step(&self, from: i64, to: i64) -> Result<(u64, bool), StoreError> {
        use futures::TryStreamExt;
        use sqlx::Row;
        const LATE_PER_STEP: i64 = 1000;
        let mut pending = Pending::default();
        let mut logs = 0u64;
        // Read first, outside the write transaction: the marks, then the logs (a mark is committed with its
        // logs, so every marked log is visible to the later reads).
        let late: Vec<LateRow> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT id, project_id, block, first_id, last_id FROM search_late ORDER BY id LIMIT $1")
                .bind(LATE_PER_STEP)
                .fetch_all(pool)
                .await?
        });
        let time = |micros: i64| DateTime::from_timestamp_micros(micros).unwrap_or_default();
        if to > from {
            // Rows are read as they stream, their messages borrowed (no copy per log).
            const RANGE: &str = "SELECT project_id, ts, message FROM logs WHERE ts >= $1 AND ts < $2";
            match &self.db {
                Db::Postgres(pool) => {
                    let mut rows = sqlx::query(RANGE).bind(time(from)).bind(time(to)).fetch(pool);
                    while let Some(row) = rows.try_next().await? {
                        let ts: DateTime<Utc> = row.try_get(1)?;
                        add_log(&mut pending, row.try_get(0)?, ts.timestamp_micros(), row.try_get(2)?);
                        logs += 1;
                    }
                }
                Db::Sqlite(pool) => {
                    let mut rows = sqlx::query(RANGE).bind(from).bind(to).fetch(pool);
                    while let Some(row) = rows.try_next().await? {
                        add_log(&mut pending, row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                        logs += 1;
                    }
                }
            }
        }
        // A mark for a block at or past the watermark needs no reading of its own: its logs were committed
        // with it, before it was read, so this step's range read or a later one sees them. Only the blocks
        // already behind the watermark are read again.
        let mut marked: Vec<LateRead> = late
            .iter()
            .filter(|(_, _, block, _, _)| block * MICROS_PER_BLOCK < from)
            .map(|(_, project, block, first, last)| (*project, *block, first.zip(*last)))
            .collect();
        marked.sort_unstable();
        for (project, block, ids) in reads_of(marked) {
            let (start, end) = (block * MICROS_PER_BLOCK, (block + 1) * MICROS_PER_BLOCK);
            // The ids first: on PostgreSQL the id BRIN finds a write's pages, where the (project, time)
            // index would walk every log of a busy block.
            let (sql, (first, last)) = match ids {
                Some(ids) => (LATE_BY_IDS, ids),
                None => (LATE_BLOCK, (Uuid::nil(), Uuid::max())),
            };
            let rows: Vec<(i64, String)> = match &self.db {
                Db::Postgres(pool) => sqlx::query_as::<_, (DateTime<Utc>, String)>(sql)
                    .bind(first)
                    .bind(last)
                    .bind(project)
                    .bind(time(start))
                    .bind(time(end))
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|(ts, message)| (ts.timestamp_micros(), message))
                    .collect(),
                Db::Sqlite(pool) => {
                    sqlx::query_as(sql)
                        .bind(first)
                        .bind(last)
                        .bind(project)
                        .bind(start)
                        .bind(end)
                        .fetch_all(pool)
                        .await?
                }
            };
            for (micros, message) in rows {
                add_log(&mut pending, project, micros, &message);
                logs += 1;
            }
        }
        let late_ids: Vec<i64> = late.iter().map(|(id, ..)| *id).collect();
        self.commit(from, to, pending, &late_ids).await?;
        Ok((logs, (late.len() as i64) < LATE_PER_STEP))
    }

    /// Merges `pending` into `search_grams` in transactions of [`ROWS_PER_TRANSACTION`] rows, then deletes
    /// the marks done and moves the watermark in a last one. Merging is a union, so rows written by a step
    /// that then failed are merged again, to the same result, by the step that redoes it; and grams past the
    /// watermark only add candidates to blocks queries scan anyway. The watermark moves only if it still
    /// holds `from`: a second indexer (which the job's once-across-instances lease should prevent) stops.
    async fn commit(&self, from: i64, to: i64, pending: Pending, late_ids: &[i64]) -> Result<(), StoreError> {
        let mut rows: Vec<(Uuid, i32, i32, Blocks)> = Vec::new();
        for ((project, week), grams) in pending {
            for (gram, mut blocks) in grams {
                blocks.tidy();
                rows.push((project, week, gram, blocks));
            }
        }
        rows.sort_unstable_by_key(|(project, week, gram, _)| (*project, *week, *gram));
        for batch in rows.chunks_mut(ROWS_PER_TRANSACTION) {
            on_db!(&self.db, pool => {
                let mut tx = pool.begin().await?;
                // A write first: on SQLite the transaction takes the write lock now, not on a later write.
                sqlx::query("UPDATE search_state SET indexed_through = indexed_through WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                for chunk in batch.chunks_mut(ROWS_PER_STATEMENT) {
                    let at: HashMap<Key, usize> =
                        chunk.iter().enumerate().map(|(i, (p, w, g, _))| ((*p, *w, *g), i)).collect();
                    let keys: Vec<Key> = chunk.iter().map(|(p, w, g, _)| (*p, *w, *g)).collect();
                    let existing = ReadKeys::read_keys(&mut *tx, &keys).await?;
                    for (project, week, gram, blocks) in existing {
                        if let Some(&i) = at.get(&(project, week, gram)) {
                            chunk[i].3.merge(&Blocks::decode(&blocks));
                        }
                    }
                    let mut sql =
                        sqlx::QueryBuilder::new("INSERT INTO search_grams (project_id, week, gram, blocks) ");
                    sql.push_values(chunk.iter(), |mut row, (project, week, gram, blocks)| {
                        row.push_bind(*project).push_bind(*week).push_bind(*gram).push_bind(blocks.encode());
                    });
                    sql.push(" ON CONFLICT (project_id, gram, week) DO UPDATE SET blocks = excluded.blocks");
                    sql.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            });
        }
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let moved = sqlx::query("UPDATE search_state SET indexed_through = $2 WHERE id = 1 AND indexed_through = $1")
                .bind(from)
                .bind(to)
                .execute(&mut *tx)
                .await?;
            if moved.rows_affected() != 1 {
                tx.rollback().await?;
                return Err(StoreError::Moved);
            }
            for chunk in late_ids.chunks(ROWS_PER_STATEMENT) {
                let mut sql = sqlx::QueryBuilder::new("DELETE FROM search_late WHERE id IN (");
                let mut list = sql.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                sql.push(")");
                sql.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Forgets the index of weeks wholly before `before` (retention), all projects; how many rows it removed.
    pub async fn forget_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
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
