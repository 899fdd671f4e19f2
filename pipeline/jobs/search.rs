//! The search index job: every `search.index_interval_secs`, one instance indexes the blocks that have
//! come of age (pipeline/store/logs/search.rs) for at most `index_share` of the interval, and reports how
//! far behind the index is.
//!
//! "Of age" counts from what the queue has written, not from the clock: while the queue holds entries
//! added `backlog` ago, the logs still in it are about that old, and indexing past them would only make
//! every one of them a late log whose whole block is read again. So under a backlog the index waits behind
//! it (its lag grows by the backlog; search stays complete, scanning what is not indexed yet).

use std::sync::Arc;

use chrono::Utc;
use ledger_stages::queue::LogQueue;

use super::scheduler::Job;
use crate::config::SearchConfig;
use crate::store::logs::search::SearchIndex;

pub(crate) fn job(index: SearchIndex, queue: Arc<dyn LogQueue>, config: &SearchConfig) -> Job {
    let every = config.index_interval;
    let budget = every.mul_f64(config.index_share.clamp(0.01, 1.0));
    Job::new("search index", every, move || {
        let (index, queue) = (index.clone(), queue.clone());
        async move {
            let now = Utc::now();
            // Unknown (the queue unreachable): no hold-back; late marks keep the index complete anyway.
            let backlog = queue.shards().await.ok().and_then(|s| s.iter().map(|b| b.lag).max()).unwrap_or_default();
            let written_through = now - chrono::Duration::from_std(backlog).unwrap_or_default();
            let progress = index.index_once(written_through, budget).await.map_err(|e| e.to_string())?;
            let lag = progress.indexed_through.map(|through| (now.timestamp_micros() - through) as f64 / 1e6);
            crate::metrics::metrics().search_indexed(progress.logs, lag);
            if !progress.caught_up {
                tracing::debug!(logs = progress.logs, "search index run stopped at its budget; it goes on next run");
            }
            Ok(())
        }
    })
    .once_across_instances()
}
