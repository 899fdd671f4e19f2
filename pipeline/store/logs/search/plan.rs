//! Planning a query: the time ranges that can hold a match, read from the index in one snapshot.

use uuid::Uuid;

use std::collections::{BTreeSet, HashMap};

use super::grams::{Blocks, block_of, query_grams};
use super::{BLOCKS_PER_WEEK, GramRow, MICROS_PER_BLOCK, SCAN_COVERAGE, SearchIndex};
use crate::store::StoreError;
use crate::store::sql::{Db, on_db};

/// The time ranges of a query that can hold a match: `[start, end)` in Unix microseconds, newest first.
/// `None`: the index cannot help (no gram, or nothing indexed in range); scan the whole range.
pub type Ranges = Option<Vec<(i64, i64)>>;

/// Merges candidate blocks (sorted, unique) and the unindexed tail into ranges within
/// `[from, to_exclusive)`, newest first.
pub(super) fn ranges(blocks: &[i64], tail_from: Option<i64>, from: i64, to_exclusive: i64) -> Vec<(i64, i64)> {
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

impl SearchIndex {
    /// The candidate ranges of `q` along `path` (see [`SearchIndex::candidates`]); `None`: scan.
    /// Read from the replica, if any, when `on_replica`.
    pub(crate) async fn plan(
        &self,
        q: &crate::store::logs::LogQuery,
        path: crate::store::logs::SearchPath,
        on_replica: bool,
    ) -> Result<Ranges, StoreError> {
        if path == crate::store::logs::SearchPath::Scan || q.terms.is_empty() {
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
}
