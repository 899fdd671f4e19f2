//! Live tail: a project's logs as they are committed, to every subscriber of this instance.
//!
//! One reader per tailed project reads the store's [`TailFeed`] (after commits, on every instance) and hands
//! each subscriber the logs that match its filters through a buffer bounded in entries and in bytes; the
//! subscribers share each entry (they hold which of its logs match, not copies): a subscriber too slow to
//! keep up loses logs, counted, and is told how many (never a silent gap). Subscribers are capped per
//! project, per account and per instance. A subscriber that reconnects with the
//! id of the last log it saw gets every log after it that the feed still keeps, then the live ones: nothing
//! missed, nothing twice, in commit order per writer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_stages::LogRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::logs::LogQuery;
use crate::store::tail::{FeedEntry, TailFeed, WATCH_SECS, record_weight};

/// What [`TailHub`] needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct TailSettings {
    /// Subscribers per project on this instance at most; past it, 429.
    pub max_subscribers_per_project: usize,
    /// Subscribers on this instance at most; past it, 429.
    pub max_subscribers: usize,
    /// Subscribers to one account's projects on this instance at most; past it, 429.
    pub max_subscribers_per_account: usize,
    /// Commits' worth of logs a subscriber may have waiting at most; past it, they are dropped and counted.
    pub buffer_entries: usize,
    /// Bytes of logs a subscriber may have waiting at most ([`record_weight`]); past it, likewise.
    pub max_buffer_bytes: usize,
    /// Logs a resuming subscriber is sent from the feed at most before the live ones.
    pub max_backlog_logs: usize,
}

/// What a subscriber receives. (A log is the common case, so it is not boxed.)
#[derive(Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum TailEvent {
    Log(LogRecord),
    /// This many logs were not delivered: the subscriber did not keep up.
    Dropped(u64),
    /// The resume point is no longer in the feed: logs between it and now may be missing.
    Gap,
}

/// Whether `record` passes the filters of `query` (its range, limit and cursor play no part in a tail).
/// `q`'s terms match case-insensitively, as the stores' `ILIKE` does.
pub(crate) fn matches(query: &LogQuery, record: &LogRecord) -> bool {
    (query.levels.is_empty() || query.levels.contains(&record.level))
        && query.min_level.is_none_or(|min| record.level >= min)
        && (query.services.is_empty() || record.service.as_ref().is_some_and(|s| query.services.contains(s)))
        && query.environment.as_ref().is_none_or(|e| record.environment.as_ref() == Some(e))
        && query.fingerprint.is_none_or(|f| record.fingerprint == f)
        && query.trace_id.as_ref().is_none_or(|t| record.trace_id.as_ref() == Some(t))
        && (query.terms.is_empty() || {
            let message = record.message.to_lowercase();
            query.terms.iter().all(|term| message.contains(&term.to_lowercase()))
        })
}

/// One commit's logs as a subscriber gets them: the entry, shared by every subscriber, and which of its logs
/// match this one's filters.
struct Delivery {
    records: Arc<Vec<LogRecord>>,
    matched: VecDeque<usize>,
    /// The entry's weight, counted against the subscriber's buffer until the delivery is read through.
    bytes: usize,
}

struct Subscriber {
    account: Uuid,
    query: LogQuery,
    tx: mpsc::Sender<Delivery>,
    /// Bytes of the deliveries waiting for this subscriber.
    buffered: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    /// Woken when logs are dropped, so a subscriber waiting for logs hears of the loss without one.
    wake: Arc<tokio::sync::Notify>,
}

struct ProjectTail {
    subscribers: HashMap<u64, Subscriber>,
    /// The position of the last entry handed to the subscribers: a new one gets what comes after it.
    last: Option<String>,
    stop: CancellationToken,
}

struct Inner {
    feed: Arc<dyn TailFeed>,
    /// Who owns a project, for the per-account cap.
    accounts: Arc<dyn crate::store::AccountStore>,
    settings: TailSettings,
    projects: Mutex<HashMap<Uuid, ProjectTail>>,
    next_id: AtomicU64,
}

#[derive(Clone)]
pub struct TailHub {
    inner: Arc<Inner>,
}

/// One subscriber's stream of events; unsubscribes when dropped.
pub struct Subscription {
    backlog: VecDeque<TailEvent>,
    rx: mpsc::Receiver<Delivery>,
    buffered: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    wake: Arc<tokio::sync::Notify>,
    pending: Option<Delivery>,
    _guard: Guard,
}

struct Guard {
    inner: Arc<Inner>,
    project: Uuid,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut projects = self.inner.projects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tail) = projects.get_mut(&self.project) {
            tail.subscribers.remove(&self.id);
            if tail.subscribers.is_empty() {
                tail.stop.cancel();
                projects.remove(&self.project);
            }
        }
        crate::metrics::metrics().tail_subscriber(false);
    }
}

/// Stream positions compare as numbers (`ms-seq` in Redis, a counter in memory).
fn position_key(position: &str) -> (u64, u64) {
    let (a, b) = position.split_once('-').unwrap_or((position, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

impl TailHub {
    pub(crate) fn new(
        feed: Arc<dyn TailFeed>,
        accounts: Arc<dyn crate::store::AccountStore>,
        settings: TailSettings,
    ) -> TailHub {
        let inner = Inner { feed, accounts, settings, projects: Mutex::default(), next_id: AtomicU64::new(1) };
        TailHub { inner: Arc::new(inner) }
    }

    /// Why a new subscriber of `account` to `project` must wait: its project, its account or this
    /// instance has as many as it may.
    fn full(&self, projects: &HashMap<Uuid, ProjectTail>, project: Uuid, account: Uuid) -> bool {
        let settings = &self.inner.settings;
        let all = || projects.values().flat_map(|t| t.subscribers.values());
        projects.get(&project).is_some_and(|t| t.subscribers.len() >= settings.max_subscribers_per_project)
            || all().count() >= settings.max_subscribers
            || all().filter(|s| s.account == account).count() >= settings.max_subscribers_per_account
    }

    fn projects(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, ProjectTail>> {
        self.inner.projects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to `query.project_id`'s logs that match `query`, from now on, or from after the log
    /// `after` when the feed still holds it.
    pub(crate) async fn subscribe(&self, query: LogQuery, after: Option<Uuid>) -> Result<Subscription, ApiError> {
        let project = query.project_id;
        let account = self.inner.accounts.project_owner(project).await?.ok_or(ApiError::NotFound)?;
        let too_many = || ApiError::TooManySubscribers { retry_after: Duration::from_secs(5) };
        if self.full(&self.projects(), project, account) {
            return Err(too_many());
        }
        if !self.projects().contains_key(&project) {
            // Interest first, then where the feed ends: every commit after this point is published.
            self.inner.feed.watch(project).await?;
            let end = self.inner.feed.end(project).await?;
            let mut projects = self.projects();
            if let std::collections::hash_map::Entry::Vacant(vacant) = projects.entry(project) {
                let stop = CancellationToken::new();
                vacant.insert(ProjectTail { subscribers: HashMap::new(), last: end, stop: stop.clone() });
                tokio::spawn(read_loop(self.inner.clone(), project, stop));
            }
        }
        let (tx, rx) = mpsc::channel(self.inner.settings.buffer_entries.max(1));
        let buffered = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let wake = Arc::new(tokio::sync::Notify::new());
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let joined = {
            let mut projects = self.projects();
            let tail = projects
                .get_mut(&project)
                .ok_or(ApiError::Unavailable { what: "the live tail", retry_after: Duration::from_secs(1) })?;
            let last = tail.last.clone();
            if self.full(&projects, project, account) {
                // Another subscriber took the last place meanwhile: a reader started for none stops.
                if projects.get(&project).is_some_and(|t| t.subscribers.is_empty())
                    && let Some(idle) = projects.remove(&project)
                {
                    idle.stop.cancel();
                }
                return Err(too_many());
            }
            let subscriber = Subscriber {
                account,
                query: query.clone(),
                tx,
                buffered: buffered.clone(),
                dropped: dropped.clone(),
                wake: wake.clone(),
            };
            if let Some(tail) = projects.get_mut(&project) {
                tail.subscribers.insert(id, subscriber);
            }
            last
        };
        crate::metrics::metrics().tail_subscriber(true);
        let guard = Guard { inner: self.inner.clone(), project, id };
        let backlog = match after {
            Some(log) => self.backlog(&query, log, joined.as_deref()).await?,
            None => VecDeque::new(),
        };
        Ok(Subscription { backlog, rx, buffered, dropped, wake, pending: None, _guard: guard })
    }

    /// The logs after `log` up to the entry at `until` (what the live stream does not bring), or a gap.
    async fn backlog(&self, query: &LogQuery, log: Uuid, until: Option<&str>) -> Result<VecDeque<TailEvent>, ApiError> {
        let feed = &self.inner.feed;
        let Some(first) = feed.locate(query.project_id, log).await? else {
            return Ok(VecDeque::from([TailEvent::Gap]));
        };
        let mut events = VecDeque::new();
        let (mut logs, mut dropped) = (0usize, 0u64);
        let mut push = |record: &LogRecord| {
            if !matches(query, record) {
                return;
            }
            if logs < self.inner.settings.max_backlog_logs {
                logs += 1;
                events.push_back(TailEvent::Log(record.clone()));
            } else {
                dropped += 1;
            }
        };
        // In the entry holding the resume point, only what follows it.
        first.records.iter().skip_while(|r| r.id != log).skip(1).for_each(&mut push);
        if let Some(until) = until.map(position_key) {
            let mut position = first.position;
            'read: loop {
                let entries = feed.read(query.project_id, Some(&position), 100, Duration::ZERO).await?;
                let Some(last) = entries.last().map(|e| e.position.clone()) else { break };
                for entry in &entries {
                    if position_key(&entry.position) > until {
                        break 'read;
                    }
                    entry.records.iter().for_each(&mut push);
                }
                position = last;
            }
        }
        if dropped > 0 {
            events.push_back(TailEvent::Dropped(dropped));
        }
        Ok(events)
    }
}

/// Reads a project's feed and hands each entry's matching logs to its subscribers until stopped.
async fn read_loop(inner: Arc<Inner>, project: Uuid, stop: CancellationToken) {
    let mut watched = tokio::time::Instant::now();
    loop {
        let after = {
            let projects = inner.projects.lock().unwrap_or_else(|p| p.into_inner());
            match projects.get(&project) {
                Some(tail) => tail.last.clone(),
                None => return,
            }
        };
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            read = inner.feed.read(project, after.as_deref(), 100, Duration::from_secs(1)) => read,
        };
        match read {
            Ok(entries) => deliver(&inner, project, entries),
            Err(error) => {
                tracing::warn!(%error, %project, "could not read the tail feed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        if watched.elapsed() >= Duration::from_secs(WATCH_SECS / 3) {
            if let Err(error) = inner.feed.watch(project).await {
                tracing::warn!(%error, %project, "could not renew interest in a tailed project");
            }
            watched = tokio::time::Instant::now();
        }
    }
}

fn deliver(inner: &Inner, project: Uuid, entries: Vec<FeedEntry>) {
    let mut projects = inner.projects.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tail) = projects.get_mut(&project) else { return };
    let metrics = crate::metrics::metrics();
    let max_bytes = inner.settings.max_buffer_bytes as u64;
    for entry in entries {
        let bytes = entry.records.iter().map(record_weight).sum::<usize>();
        for subscriber in tail.subscribers.values() {
            let matched: VecDeque<usize> =
                (0..entry.records.len()).filter(|i| matches(&subscriber.query, &entry.records[*i])).collect();
            if matched.is_empty() {
                continue;
            }
            let n = matched.len() as u64;
            let delivery = Delivery { records: entry.records.clone(), matched, bytes };
            let room = subscriber.buffered.load(Ordering::Relaxed) + bytes as u64 <= max_bytes;
            if room && subscriber.tx.try_send(delivery).is_ok() {
                subscriber.buffered.fetch_add(bytes as u64, Ordering::Relaxed);
            } else {
                subscriber.dropped.fetch_add(n, Ordering::Relaxed);
                subscriber.wake.notify_one();
                metrics.tail_dropped(n);
            }
        }
        tail.last = Some(entry.position);
    }
}

impl Subscription {
    /// The next event; `None` once the hub is gone.
    pub(crate) async fn next(&mut self) -> Option<TailEvent> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(event);
        }
        loop {
            // What was lost is said before anything that came after it.
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                return Some(TailEvent::Dropped(dropped));
            }
            if let Some(delivery) = &mut self.pending {
                if let Some(i) = delivery.matched.pop_front() {
                    crate::metrics::metrics().tail_delivered();
                    return Some(TailEvent::Log(delivery.records[i].clone()));
                }
                // Read through: its entry no longer counts against this subscriber's buffer.
                self.buffered.fetch_sub(delivery.bytes as u64, Ordering::Relaxed);
                self.pending = None;
            }
            tokio::select! {
                delivery = self.rx.recv() => self.pending = Some(delivery?),
                () = self.wake.notified() => {}
            }
        }
    }
}

/// The log to resume after: `Last-Event-ID`, else `after`.
pub(crate) fn resume_point(last_event_id: Option<&str>, after: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    match last_event_id.or(after).map(str::trim).filter(|v| !v.is_empty()) {
        Some(id) => {
            Uuid::parse_str(id).map(Some).map_err(|_| super::bad("after", "must be the id of a log (Last-Event-ID)"))
        }
        None => Ok(None),
    }
}
