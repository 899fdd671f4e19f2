//! The rebuild jobs: recent buckets recomputed from the log store and written over the cache, so that
//! counts lost with a flushed cache, or missed while it was down, come back by themselves.
//!
//! Every `five_minute_secs`: the 5-minute buckets of the last hour. Every `hourly_secs`: the hourly
//! buckets (and error info) of the last day. Every `daily_secs`: the daily buckets of the last week.
//! Windows start on a bucket boundary and end now, the open bucket included: a batch committed between a
//! rebuild's query and its write is missed until the next rebuild, never counted twice.

use std::sync::Arc;

use super::scheduler::Job;
use crate::config::AnalyticsConfig;
use chrono::{DateTime, Utc};

use crate::store::analytics::{AnalyticsCache, Granularity};
use crate::store::logs::LogStore;

/// Recomputes the buckets of `g` from `since` to now and writes them over the cache.
pub async fn rebuild(
    store: &dyn LogStore,
    cache: &dyn AnalyticsCache,
    g: Granularity,
    since: DateTime<Utc>,
) -> Result<(), String> {
    let now = Utc::now();
    let from = DateTime::from_timestamp(g.bucket(&since), 0).unwrap_or(since);
    let stats = store.stats(g, from, now + chrono::Duration::seconds(1)).await.map_err(|e| e.to_string())?;
    cache.replace(&stats).await.map_err(|e| e.to_string())
}

/// The three rebuild jobs, for the scheduler. Every instance with the jobs role may run them: a rebuild
/// writes whole buckets over the cache, so two at once do no harm, but one per period is enough.
pub(crate) fn jobs(store: Arc<dyn LogStore>, cache: Arc<dyn AnalyticsCache>, config: &AnalyticsConfig) -> Vec<Job> {
    let schedules = [
        ("analytics rebuild 5m", Granularity::FiveMinutes, config.five_minute_every, chrono::Duration::hours(1)),
        ("analytics rebuild 1h", Granularity::Hour, config.hourly_every, chrono::Duration::days(1)),
        ("analytics rebuild 1d", Granularity::Day, config.daily_every, chrono::Duration::days(7)),
    ];
    schedules
        .into_iter()
        .map(|(name, g, every, window)| {
            let (store, cache) = (store.clone(), cache.clone());
            Job::new(name, every, move || {
                let (store, cache) = (store.clone(), cache.clone());
                async move { rebuild(store.as_ref(), cache.as_ref(), g, Utc::now() - window).await }
            })
            .once_across_instances()
        })
        .collect()
}
