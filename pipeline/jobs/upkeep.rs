//! The PostgreSQL log store's upkeep: monthly partitions created two months ahead (hourly), and the BRIN
//! indexes' new page ranges summarized (every 5 s) so a log is found by id in about a millisecond even while
//! it is among the newest.

use std::time::Duration;

use super::scheduler::Job;
use crate::store::logs::postgres::{PgLogStore, ensure_partitions, summarize_brin};

pub(crate) fn jobs(store: &PgLogStore) -> Vec<Job> {
    let (a, b) = (store.pool().clone(), store.pool().clone());
    vec![
        Job::new("log partitions", Duration::from_secs(3600), move || {
            let pool = a.clone();
            async move { ensure_partitions(&pool, 2).await.map_err(|e| e.to_string()) }
        }),
        Job::new("brin summaries", Duration::from_secs(5), move || {
            let pool = b.clone();
            async move { summarize_brin(&pool).await.map(|_| ()).map_err(|e| e.to_string()) }
        }),
    ]
}
