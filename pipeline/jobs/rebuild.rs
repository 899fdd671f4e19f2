//! The rebuild jobs: recent buckets recomputed from the log store and written over the cache, so that
//! counts lost with a flushed cache, or missed while it was down, come back by themselves.
//!
//! Every `five_minute_secs`: the 5-minute buckets of the last hour. Every `hourly_secs`: the hourly
//! buckets (and error info) of the last day. Every `daily_secs`: the daily buckets of the last week.
//! Windows start on a bucket boundary and end now, the open bucket included: a batch committed between a
//! rebuild's query and its write is missed until the next rebuild, never counted twice.

use std::sync::Arc;
use std::time::Duration;

use crate::config::AnalyticsConfig;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::store::analytics::{Granularity, MetricsCache};
use crate::store::logs::LogStore;

/// Recomputes the buckets of `g` from `since` to now and writes them over the cache.
pub async fn rebuild(
    store: &dyn LogStore,
    cache: &dyn MetricsCache,
    g: Granularity,
    since: DateTime<Utc>,
) -> Result<(), String> {
    let now = Utc::now();
    let from = DateTime::from_timestamp(g.bucket(&since), 0).unwrap_or(since);
    let stats = store.stats(g, from, now + chrono::Duration::seconds(1)).await.map_err(|e| e.to_string())?;
    cache.replace(&stats).await.map_err(|e| e.to_string())
}

/// Runs the three schedules until `shutdown`.
pub async fn run(
    store: Arc<dyn LogStore>,
    cache: Arc<dyn MetricsCache>,
    config: AnalyticsConfig,
    shutdown: CancellationToken,
) {
    let schedules = [
        (Granularity::FiveMinutes, config.five_minute_secs, chrono::Duration::hours(1)),
        (Granularity::Hour, config.hourly_secs, chrono::Duration::days(1)),
        (Granularity::Day, config.daily_secs, chrono::Duration::days(7)),
    ];
    let mut jobs = tokio::task::JoinSet::new();
    for (g, every, window) in schedules {
        let (store, cache, stop) = (store.clone(), cache.clone(), shutdown.clone());
        jobs.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(error) = rebuild(store.as_ref(), cache.as_ref(), g, Utc::now() - window).await {
                            tracing::warn!(%error, granularity = g.name(), "analytics rebuild failed");
                        }
                    }
                }
            }
        });
    }
    while jobs.join_next().await.is_some() {}
}
