//! The search index job: every `search.index_interval_secs`, one instance indexes the blocks that have
//! come of age (pipeline/store/logs/search.rs) for at most `index_share` of the interval, and reports how
//! far behind the index is.

use std::time::Duration;

use chrono::Utc;

use super::scheduler::Job;
use crate::config::SearchConfig;
use crate::store::logs::search::SearchIndex;

pub fn job(index: SearchIndex, config: &SearchConfig) -> Job {
    let every = Duration::from_secs(config.index_interval_secs.max(1));
    let budget = every.mul_f64(config.index_share.clamp(0.01, 1.0));
    Job::new("search index", every, move || {
        let index = index.clone();
        async move {
            let now = Utc::now();
            let progress = index.index_once(now, budget).await.map_err(|e| e.to_string())?;
            let metrics = crate::observe::metrics();
            metrics.search_indexed_logs.inc_by(progress.logs);
            if let Some(through) = progress.indexed_through {
                let lag = (now.timestamp_micros() - through) as f64 / 1e6;
                metrics.search_index_lag.set(lag.max(0.0));
            }
            if !progress.caught_up {
                tracing::debug!(logs = progress.logs, "search index run stopped at its budget; it goes on next run");
            }
            Ok(())
        }
    })
    .once_across_instances()
}
