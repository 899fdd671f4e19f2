//! Retention: every project's `retention_days` honoured.
//!
//! Each run: for every project, its logs older than its retention are deleted in batches of `batch_rows`
//! (short transactions, so ingestion never waits long on them); logs of deleted projects are deleted the
//! same way; and on PostgreSQL the monthly partitions that end before the longest retention of any project
//! are dropped whole, which costs nothing per row.

use std::sync::Arc;

use super::scheduler::Job;
use crate::config::RetentionConfig;
use chrono::Utc;

use crate::store::AccountStore;
use crate::store::logs::LogStore;

/// What one run removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub expired: u64,
    pub orphaned: u64,
    pub partitions: Vec<String>,
}

/// One retention run.
pub(crate) async fn run_once(
    accounts: &dyn AccountStore,
    logs: &dyn LogStore,
    default_days: u32,
    batch_rows: i64,
) -> Result<Removed, String> {
    // Taken before the list is read: logs received after it may belong to a project created since.
    let now = Utc::now();
    let projects = accounts.retention().await.map_err(|e| e.to_string())?;
    let mut removed = Removed::default();
    for (project, days) in &projects {
        let before = now - chrono::Duration::days(i64::from(*days));
        loop {
            let n = logs.delete_before(*project, before, batch_rows).await.map_err(|e| e.to_string())?;
            removed.expired += n;
            if n < u64::try_from(batch_rows).unwrap_or(0) {
                break;
            }
            // Let ingestion in between batches.
            tokio::task::yield_now().await;
        }
    }
    let ids: Vec<uuid::Uuid> = projects.iter().map(|(id, _)| *id).collect();
    loop {
        let n = logs.delete_others(&ids, now, batch_rows).await.map_err(|e| e.to_string())?;
        removed.orphaned += n;
        if n < u64::try_from(batch_rows).unwrap_or(0) {
            break;
        }
    }
    let longest = projects.iter().map(|(_, days)| *days).max().unwrap_or(default_days).max(default_days);
    removed.partitions =
        logs.drop_before(now - chrono::Duration::days(i64::from(longest))).await.map_err(|e| e.to_string())?;
    Ok(removed)
}

/// Retention as a scheduled job, run by one instance per period.
pub(crate) fn job(
    accounts: Arc<dyn AccountStore>,
    logs: Arc<dyn LogStore>,
    default_days: u32,
    config: &RetentionConfig,
) -> Job {
    let batch_rows = config.batch_rows.max(1);
    Job::new("retention", config.interval, move || {
        let (accounts, logs) = (accounts.clone(), logs.clone());
        async move {
            let removed = run_once(accounts.as_ref(), logs.as_ref(), default_days, batch_rows).await?;
            if removed != Removed::default() {
                tracing::info!(
                    expired = removed.expired,
                    orphaned = removed.orphaned,
                    partitions = ?removed.partitions,
                    "retention removed logs"
                );
            }
            Ok(())
        }
    })
    .once_across_instances()
}
