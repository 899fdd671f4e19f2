//! Queue workers: drain the Redis stream shards into PostgreSQL, exactly once.
//!
//! Each shard is owned by one worker at a time, by a lease in Redis (`SET NX PX`, renewed while owned,
//! taken over by another instance when it lapses). The owner:
//! 1. reads the shard's last committed entry id from `queue_offsets` (PostgreSQL);
//! 2. releases whatever is at or below it: entries a crash left behind after their commit are dropped
//!    from the stream and from the pending counts, never written again;
//! 3. reads the entries after it (XREAD, blocking), COPYs their logs and moves the offset from the id it
//!    read to the last id it wrote, in one transaction. The offset moves only if it still holds the
//!    value this worker read (compare-and-set), so a worker that lost its lease cannot commit twice;
//! 4. releases those entries (step 2), and goes on from 3.
//!
//! A crash anywhere replays from the committed offset: nothing is lost, nothing is stored twice.

use std::time::{Duration, Instant};

use ledger_stages::LogRecord;
use redis::streams::{StreamReadOptions, StreamReadReply};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::redis::{Entry, Keys};
use crate::store::analytics::{AnalyticsCache, Stats};
use crate::store::dead_letter::{Poison, Reason};
use crate::store::logs::search::LateBlocks;
use crate::store::logs::{Late, OffsetMove, PrepareRows, WriteBatch, WriteError};
use crate::store::redis::{Conn, RedisCache};

/// KEYS: stream, the shard's pending counter. ARGV: last committed id, what the shard's per-project pending
/// counters' names start with (the same hash slot). Drops every entry up to that id and takes its logs off
/// the pending counts; returns how many entries it dropped.
const RELEASE: &str = r"
local entries = redis.call('XRANGE', KEYS[1], '-', ARGV[1])
local total = 0
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local project, n
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then project = fields[i + 1] elseif fields[i] == 'n' then n = tonumber(fields[i + 1]) end
  end
  if project and n then
    redis.call('DECRBY', ARGV[2] .. project, n)
    total = total + n
  end
  redis.call('XDEL', KEYS[1], entry[1])
end
if total > 0 then redis.call('DECRBY', KEYS[2], total) end
return #entries
";

/// KEYS: lease. ARGV: owner, milliseconds. Takes the lease if nobody, or this owner, holds it.
const TAKE: &str = r"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// KEYS: lease. ARGV: owner, milliseconds. Extends the lease if this owner holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// KEYS: lease. ARGV: owner. Gives the lease up if this owner holds it.
const GIVE_UP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The offset before any entry: XREAD from here reads the whole stream.
const START: &str = "0-0";

/// The shared queue's workers, writing through `W`'s write port in `W`'s own form of rows (PostgreSQL's).
#[derive(Clone)]
pub struct Workers<W> {
    pub redis: RedisCache,
    pub keys: Keys,
    pub shards: u32,
    /// The log store's write port: each batch, its dead letters and the shard's offset in one transaction.
    pub writer: std::sync::Arc<W>,
    pub lease: Duration,
    pub max_write_logs: usize,
    /// This instance, as lease owner.
    pub owner: String,
    /// The pause after a write that did not fill a whole read.
    pub linger: Duration,
    /// Live analytics, updated after each commit.
    pub analytics: std::sync::Arc<dyn AnalyticsCache>,
    /// The live tail's feed, given each commit's logs of tailed projects.
    pub tail: std::sync::Arc<dyn crate::store::tail::TailFeed>,
}

#[derive(Debug, thiserror::Error)]
enum WorkError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("log store: {0}")]
    Write(#[from] WriteError),
    #[error("lost the lease on shard {0}")]
    LeaseLost(u32),
    #[error("preparing a batch failed: {0}")]
    Prepare(String),
}

/// A field of a stream entry, taken out of it.
fn field<T: redis::FromRedisValue>(map: &mut std::collections::HashMap<String, redis::Value>, name: &str) -> Option<T> {
    map.remove(name).and_then(|v| T::from_redis_value(v).ok())
}

/// How many of the entries, holding `sizes` logs each, one write takes: as many as keep it within `max_logs`
/// logs, and at least one.
fn within(sizes: &[usize], max_logs: usize) -> usize {
    let mut logs = 0;
    let fit = sizes.iter().take_while(|n| {
        logs += **n;
        logs <= max_logs
    });
    fit.count().max(1).min(sizes.len())
}

/// Entries to read next: `max_logs` logs' worth at the logs per entry just read, 1 to `max_logs`.
fn next_count(max_logs: usize, entries: usize, logs: usize) -> usize {
    (max_logs.saturating_mul(entries) / logs.max(1)).clamp(1, max_logs.max(1))
}

/// One entry as read from its stream.
struct Read {
    id: String,
    project: Option<String>,
    logs: Option<i64>,
    payload: Option<Vec<u8>>,
}

impl Read {
    /// The logs the entry says it holds (1 when it does not say: it is dead-lettered as one).
    fn size(&self) -> usize {
        self.logs.and_then(|n| usize::try_from(n).ok()).unwrap_or(1).max(1)
    }
}

/// A good entry's place in the batch's COPY rows, kept so a refused batch can be written entry by entry.
struct Span {
    id: String,
    /// End of its rows in `Prepared::rows`.
    end: usize,
    logs: usize,
    project: Option<Uuid>,
    payload: Vec<u8>,
}

/// A read batch, decoded and its rows prepared in the store's form, and the entries that could not be
/// decoded.
struct Prepared<B> {
    rows: B,
    logs: usize,
    spans: Vec<Span>,
    poison: Vec<Poison>,
    traceparents: Vec<Option<String>>,
    stats: Stats,
    /// The batch's logs of tailed projects.
    tailing: Vec<LogRecord>,
    /// The batch's logs behind the search index, and when that was decided.
    late: Vec<crate::store::logs::search::LateMark>,
    decided: std::time::Instant,
}

/// Decodes the entries' payloads and prepares their logs' rows in the store's form: CPU work, run on a blocking thread so
/// that requests on the runtime's threads are not held up behind a batch. An entry that cannot be decoded
/// becomes a dead letter, never a silent gap. An entry's logs are counted, marked and encoded as it is
/// decoded, and then dropped (but for tailed projects'): a batch's logs are never all held decoded at once.
fn prepare<W: PrepareRows>(
    shard: i32,
    entries: Vec<Read>,
    tailed: &std::collections::HashSet<Uuid>,
) -> Prepared<W::Buffer> {
    // Lateness is decided before any log is looked at: a write's budget counts from here.
    let (decided, mut late) = (std::time::Instant::now(), LateBlocks::new(chrono::Utc::now()));
    let (mut stats, mut tailing, mut logs) = (Stats::default(), Vec::new(), 0);
    let mut rows = W::Buffer::default();
    let mut spans = Vec::with_capacity(entries.len());
    let mut poison = Vec::new();
    let mut traceparents = Vec::with_capacity(entries.len());
    for read in entries {
        let project = read.project.as_deref().and_then(|p| Uuid::parse_str(p).ok());
        let decoded = match &read.payload {
            Some(payload) => Entry::decode(payload).map_err(|e| e.to_string()),
            None => Err("the entry has no payload".to_owned()),
        };
        match decoded {
            Ok(entry) => {
                W::push(&mut rows, &entry.records);
                for record in &entry.records {
                    stats.add(record);
                    late.add(record);
                }
                let count = entry.records.len();
                logs += count;
                tailing.extend(entry.records.into_iter().filter(|r| tailed.contains(&r.project_id)));
                traceparents.push(entry.traceparent);
                let payload = read.payload.unwrap_or_default();
                spans.push(Span { id: read.id, end: W::end(&rows), logs: count, project, payload });
            }
            Err(detail) => poison.push(Poison {
                shard,
                entry_id: read.id,
                project,
                logs: read.logs.and_then(|n| i32::try_from(n).ok()).unwrap_or(0),
                reason: Reason::Undecodable,
                detail,
                payload: read.payload,
            }),
        }
    }
    Prepared { rows, logs, spans, poison, traceparents, stats, tailing, late: late.into_marks(), decided }
}

impl<W: PrepareRows + Clone> Workers<W> {
    /// Runs a worker loop per shard until `shutdown`; each finishes the batch in hand first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut loops = tokio::task::JoinSet::new();
        for shard in 0..self.shards {
            loops.spawn(self.clone().shard_loop(shard, shutdown.clone()));
        }
        while loops.join_next().await.is_some() {}
    }

    async fn shard_loop(self, shard: u32, shutdown: CancellationToken) {
        // Transient failures (Redis or PostgreSQL away) back off: 1 s, 2 s, 4 s … up to 30 s.
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            match self.own(shard, &shutdown).await {
                Ok(true) => failures = 0,
                Ok(false) => {
                    // Another instance holds it: look again in a while (a third of a lease).
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(self.lease / 3) => {}
                    }
                }
                Err(error) => {
                    let pause = Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30));
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, shard, retry_in_secs = pause.as_secs(), "queue worker failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Takes the shard's lease and drains it while held; `false` when another instance holds it.
    async fn own(&self, shard: u32, shutdown: &CancellationToken) -> Result<bool, WorkError> {
        // A connection of its own: XREAD blocks it, and must not block anyone else's commands.
        let mut conn = self.redis.dedicated().await?;
        let lease_key = self.keys.lease(shard);
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(15_000);
        // Its own lease too: after a Redis failover, or a failure of this loop, it goes on at once.
        let taken: i64 =
            redis::Script::new(TAKE).key(&lease_key).arg(&self.owner).arg(lease_ms).invoke_async(&mut conn).await?;
        if taken != 1 {
            return Ok(false);
        }
        tracing::info!(shard, "queue shard taken");
        let result = self.drain(shard, &mut conn, shutdown).await;
        let _: Result<i64, _> =
            redis::Script::new(GIVE_UP).key(&lease_key).arg(&self.owner).invoke_async(&mut conn).await;
        tracing::info!(shard, "queue shard given up");
        result.map(|()| true)
    }

    async fn drain(&self, shard: u32, conn: &mut Conn, shutdown: &CancellationToken) -> Result<(), WorkError> {
        let stream = self.keys.stream(shard);
        let pending = self.keys.pending_shard(shard);
        let pending_prefix = self.keys.pending_prefix(shard);
        let lease_key = self.keys.lease(shard);
        let lease_ms = u64::try_from(self.lease.as_millis()).unwrap_or(15_000);
        let release = redis::Script::new(RELEASE);
        let renew = redis::Script::new(RENEW);
        let shard_id = i32::try_from(shard).unwrap_or(i32::MAX);

        let mut last: String = self.writer.offset(shard_id).await?.unwrap_or_else(|| START.to_owned());
        if last != START {
            let dropped: i64 =
                release.key(&stream).key(&pending).arg(&last).arg(&pending_prefix).invoke_async(conn).await?;
            if dropped > 0 {
                tracing::info!(shard, dropped, "released entries committed before a restart");
            }
        }
        let mut renewed = Instant::now();
        // Entries per read, from the logs per entry of the last read: a write holds max_write_logs logs at
        // most, whether entries hold one log or a thousand (and so does memory: a backlog of batched entries
        // read a thousand at a time held ~100,000 decoded logs per shard).
        let mut count = (self.max_write_logs / 100).max(1);
        while !shutdown.is_cancelled() {
            if renewed.elapsed() >= self.lease / 3 {
                let held: i64 = renew.key(&lease_key).arg(&self.owner).arg(lease_ms).invoke_async(conn).await?;
                if held != 1 {
                    return Err(WorkError::LeaseLost(shard));
                }
                renewed = Instant::now();
            }
            let options = StreamReadOptions::default().count(count).block(1000);
            let mut xread = redis::cmd("XREAD");
            xread.arg(&options).arg("STREAMS").arg(&stream).arg(&last);
            let read = xread.query_async(conn);
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                reply = read => reply?,
            };
            let Some(entries) = reply.and_then(|r| r.keys.into_iter().next()).map(|k| k.ids) else { continue };
            let caught_up = entries.len() < count;
            // The payloads move to the blocking thread as they are, uncopied.
            let mut reads: Vec<Read> = entries
                .into_iter()
                .map(|mut e| Read {
                    project: field(&mut e.map, "p"),
                    logs: field(&mut e.map, "n"),
                    payload: field(&mut e.map, "d"),
                    id: e.id,
                })
                .collect();
            let sizes: Vec<usize> = reads.iter().map(Read::size).collect();
            // The entries past the write's limit are read again next time.
            let taken = within(&sizes, self.max_write_logs);
            reads.truncate(taken);
            if taken > 0 {
                count = next_count(self.max_write_logs, taken, sizes[..taken].iter().sum());
            }
            let Some(newest) = reads.last().map(|r| r.id.clone()) else { continue };
            let read = reads.len();
            // Asked after the read: a log accepted after a subscriber said it tails its project is in an entry
            // read after that, so it is published.
            let tailed = self.tail.tailed().await;
            let published = tailed.clone();
            let prepared = tokio::task::spawn_blocking(move || prepare::<W>(shard_id, reads, &tailed))
                .await
                .map_err(|e| WorkError::Prepare(e.to_string()))?;
            let batch = crate::telemetry::batch_span("shared", prepared.traceparents.iter().map(Option::as_deref));
            let logs = prepared.logs;
            batch.record("logs", logs);
            let copy = tracing::info_span!(parent: &batch, "copy", otel.name = "COPY logs", shard, logs);
            // Not cancellable from here: a batch read is a batch written.
            let (stats, tailing) = self.commit(shard_id, &last, &newest, prepared).instrument(copy).await?;
            drop(batch);
            let _: i64 =
                release.key(&stream).key(&pending).arg(&newest).arg(&pending_prefix).invoke_async(conn).await?;
            if !tailing.is_empty()
                && let Err(error) = self.tail.publish(tailing, &published).await
            {
                tracing::warn!(%error, shard, "could not publish committed logs to the live tail");
            }
            if let Some(stats) = stats
                && let Err(error) = self.analytics.add(&stats).await
            {
                tracing::warn!(%error, shard, "could not update live analytics; the rebuild job will");
            }
            tracing::debug!(shard, entries = read, logs, "queue batch written");
            crate::metrics::metrics().written("shared", logs);
            last = newest;
            if caught_up {
                // Caught up: let the next batch gather instead of writing a trickle one entry at a time.
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.linger) => {}
                }
            }
        }
        Ok(())
    }

    /// Writes a prepared batch and moves the shard's offset from `from` to `to`, in one transaction with
    /// the batch's undecodable entries stored as dead letters. If PostgreSQL refuses the rows for a data
    /// reason, the entries are written one at a time and the refused ones dead-lettered. The batch's
    /// analytics and its logs for the live tail, when it went in whole (else the rebuild job counts what was
    /// written, and the tail does not see that batch).
    async fn commit(
        &self,
        shard: i32,
        from: &str,
        to: &str,
        batch: Prepared<W::Buffer>,
    ) -> Result<(Option<Stats>, Vec<LogRecord>), WorkError> {
        let Prepared { rows, spans, poison, stats, tailing, late, decided, .. } = batch;
        let late = Late { blocks: &late, decided };
        match self.commit_rows(shard, (from, to), W::part(&rows, 0..W::end(&rows)), &poison, late).await {
            Ok(()) => {
                counted(&poison);
                Ok((Some(stats), tailing))
            }
            Err(WorkError::Write(WriteError::Refused(e))) => {
                tracing::warn!(shard, error = %e, "PostgreSQL refused a batch; writing its entries one by one");
                self.commit_one_by_one(shard, (from, to), &rows, spans, poison, late).await?;
                Ok((None, Vec::new()))
            }
            Err(e) => Err(e),
        }
    }

    /// One transaction through the write port: the rows, the dead letters, the offset.
    async fn commit_rows<'a>(
        &self,
        shard: i32,
        (from, to): (&'a str, &'a str),
        rows: &'a W::Rows<'a>,
        poison: &'a [Poison],
        late: Late<'a>,
    ) -> Result<(), WorkError> {
        let batch =
            WriteBatch { rows, dead_letters: poison, offset: Some(OffsetMove { shard, from, to }), late, answers: &[] };
        match self.writer.write(batch).await {
            Ok(()) => Ok(()),
            // Someone else moved the offset: this worker is no longer the owner.
            Err(WriteError::OffsetMoved) => Err(WorkError::LeaseLost(u32::try_from(shard).unwrap_or(0))),
            Err(e) => Err(e.into()),
        }
    }

    /// A refused batch, entry by entry in stream order, each in its own transaction with the offset moved
    /// to it: the good ones written, the refused ones (and the undecodable ones) dead-lettered. Each
    /// transaction marks the whole batch's late blocks (a mark without a log only costs a query a look).
    async fn commit_one_by_one(
        &self,
        shard: i32,
        (from, to): (&str, &str),
        rows: &W::Buffer,
        spans: Vec<Span>,
        poison: Vec<Poison>,
        late: Late<'_>,
    ) -> Result<(), WorkError> {
        let (mut start, mut offset, mut written) = (0, from.to_owned(), 0);
        for span in spans {
            let entry_rows = W::part(rows, start..span.end);
            start = span.end;
            match self.commit_rows(shard, (&offset, &span.id), entry_rows, &[], late).await {
                Ok(()) => written += span.logs,
                Err(WorkError::Write(WriteError::Refused(e))) => {
                    let refused = [Poison {
                        shard,
                        entry_id: span.id.clone(),
                        project: span.project,
                        logs: i32::try_from(span.logs).unwrap_or(i32::MAX),
                        reason: Reason::Refused,
                        detail: e,
                        payload: Some(span.payload),
                    }];
                    self.commit_rows(shard, (&offset, &span.id), W::part(rows, start..start), &refused, late).await?;
                    counted(&refused);
                }
                Err(e) => return Err(e),
            }
            offset = span.id;
        }
        // The undecodable entries, and the offset to the end of the read.
        self.commit_rows(shard, (&offset, to), W::part(rows, start..start), &poison, late).await?;
        counted(&poison);
        crate::metrics::metrics().written("shared", written);
        Ok(())
    }
}

/// Counts dead letters as the outcome of their logs, and says so in the log.
fn counted(poison: &[Poison]) {
    for p in poison {
        tracing::error!(entry = %p.entry_id, reason = p.reason.as_str(), detail = %p.detail, logs = p.logs, "queue entry dead-lettered");
        crate::metrics::metrics().dead_lettered(p.reason.as_str(), u64::try_from(p.logs).unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::logs::postgres::{PgLogStore, encode_copy_rows};

    #[test]
    fn a_write_takes_entries_up_to_its_logs_and_at_least_one() {
        assert_eq!(within(&[100; 1000], 10_000), 100, "batched entries: 100 of them make 10,000 logs");
        assert_eq!(within(&[1; 50], 10_000), 50, "all of them when they fit");
        assert_eq!(within(&[1000, 1000], 500), 1, "one entry even when it alone is over");
        assert_eq!(within(&[3, 3, 3, 3], 10), 3);
        assert_eq!(within(&[], 10), 0);
    }

    #[test]
    fn reads_ask_for_a_writes_worth_of_entries() {
        assert_eq!(next_count(10_000, 100, 10_000), 100, "100 logs per entry");
        assert_eq!(next_count(10_000, 50, 50), 10_000, "single logs: at most max_write_logs entries");
        assert_eq!(next_count(10_000, 1, 1000), 10);
        assert_eq!(next_count(10_000, 0, 0), 1, "nothing read: at least one");
    }

    fn log(project: Uuid, level: ledger_stages::Level, seconds_ago: i64) -> LogRecord {
        let at = chrono::Utc::now() - chrono::Duration::seconds(seconds_ago);
        LogRecord {
            attributes: serde_json::json!({"n": seconds_ago}),
            fingerprint: 7,
            ..LogRecord::new(project, at, level, format!("{seconds_ago} seconds ago"))
        }
    }

    #[test]
    fn a_batch_prepared_entry_by_entry_is_what_its_logs_make_together() {
        use ledger_stages::Level::{Error, Info};
        let (tailed, other) = (Uuid::now_v7(), Uuid::now_v7());
        let batches = [
            vec![log(tailed, Info, 0), log(other, Error, 3600)],
            vec![log(other, Info, 0)],
            vec![log(tailed, Error, 120), log(other, Error, 7200)],
        ];
        let mut reads: Vec<Read> = batches
            .iter()
            .enumerate()
            .map(|(i, records)| Read {
                id: format!("{i}-0"),
                project: None,
                logs: Some(records.len() as i64),
                payload: Some(Entry { traceparent: None, records: records.clone() }.encode().expect("encodes")),
            })
            .collect();
        reads.insert(
            1,
            Read { id: "0-1".into(), project: None, logs: Some(3), payload: Some(b"not an entry".to_vec()) },
        );
        // What the logs make when held all at once, as the queue gives them back (times in microseconds).
        let all: Vec<LogRecord> =
            reads.iter().filter_map(|r| Entry::decode(r.payload.as_deref()?).ok()).flat_map(|e| e.records).collect();
        assert_eq!(all.len(), 5);

        let prepared = prepare::<PgLogStore>(0, reads, &std::collections::HashSet::from([tailed]));
        let mut rows = Vec::new();
        encode_copy_rows(&all, &mut rows);
        assert_eq!(prepared.rows, rows);
        assert_eq!(prepared.logs, 5);
        assert_eq!(prepared.stats, Stats::of(&all));
        assert_eq!(prepared.late, crate::store::logs::search::late_blocks(&all, chrono::Utc::now()));
        assert_eq!(prepared.late.len(), 3, "the logs an hour, two hours and two minutes old are late");
        let tailing: Vec<Uuid> = prepared.tailing.iter().map(|r| r.id).collect();
        assert_eq!(tailing, [all[0].id, all[3].id], "the tailed project's logs, in order");
        let spans: Vec<(&str, usize, usize)> = prepared.spans.iter().map(|s| (s.id.as_str(), s.logs, s.end)).collect();
        let first_end = {
            let mut first = Vec::new();
            encode_copy_rows(&all[..2], &mut first);
            first.len()
        };
        assert_eq!(spans[0], ("0-0", 2, first_end));
        assert_eq!(spans.iter().map(|s| s.0).collect::<Vec<_>>(), ["0-0", "1-0", "2-0"]);
        assert_eq!(spans[2].2, rows.len());
        assert_eq!(prepared.poison.len(), 1);
        assert_eq!(prepared.poison[0].entry_id, "0-1");
    }

    #[test]
    fn an_entry_without_a_count_is_one_log() {
        let read = |logs| Read { id: "1-0".into(), project: None, logs, payload: None };
        assert_eq!(read(None).size(), 1);
        assert_eq!(read(Some(250)).size(), 250);
        assert_eq!(read(Some(-4)).size(), 1);
    }
}
