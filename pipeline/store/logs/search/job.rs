//! The indexing job's work: reading blocks behind the watermark and the late ones, merging their grams
//! into the index, one transaction per step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::grams::{Blocks, block_of, each_gram};
use std::collections::HashMap;

use super::{
    BLOCKS_PER_WEEK, Key, LAG, MICROS_PER_BLOCK, ROWS_PER_STATEMENT, ROWS_PER_TRANSACTION, ReadKeys, STEP_LOGS,
    SearchIndex,
};
use crate::store::StoreError;
use crate::store::sql::{Db, on_db};

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
pub(super) fn reads_of(marks: Vec<LateRead>) -> Vec<LateRead> {
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
}
