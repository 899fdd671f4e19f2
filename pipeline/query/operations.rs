//! The daemon's own state as `GET /metrics` reads it at a scrape: the queue's backlog, the account store's
//! breaker, the database pools, Redis and the read replica, typed. The REST front encodes it (with the
//! ingestion outcomes and key validations, which the ingestion and accounts cores count).

use std::sync::Arc;
use std::time::Duration;

use ledger_stages::auth::{BreakerState, BreakerStore, KeyStore};
use ledger_stages::queue::{LogQueue, ShardBacklog};

use crate::store::{Backend, LogDb};

/// One scrape's reading.
pub struct Operations {
    /// Logs acknowledged and not yet written (absent when the queue did not answer).
    pub queue_depth: Option<u64>,
    /// Each shard's backlog (shared backend).
    pub shards: Vec<ShardBacklog>,
    pub breaker: BreakerState,
    /// Each pool's (open, idle) connections: `accounts`, `logs`.
    pub pools: [(&'static str, (u32, usize)); 2],
    /// Whether Redis commands fail fast because Redis did not answer (shared backend).
    pub redis_failing_fast: Option<bool>,
    /// How far the logs' read replica's replay is behind, in seconds (when there is one and it answered
    /// within a second).
    pub replica_lag: Option<f64>,
}

/// Reads the state now.
pub(crate) async fn read(
    backend: &Backend,
    queue: &dyn LogQueue,
    breaker: &Arc<BreakerStore<Arc<dyn KeyStore>>>,
) -> Operations {
    let replica_lag = match &backend.logs {
        LogDb::Postgres(logs) => match tokio::time::timeout(Duration::from_secs(1), logs.replica_lag()).await {
            Ok(Ok(lag)) => lag,
            _ => None,
        },
        LogDb::Sqlite(_) => None,
    };
    Operations {
        queue_depth: queue.depth().await.ok(),
        shards: queue.shards().await.unwrap_or_default(),
        breaker: breaker.state(),
        pools: [("accounts", backend.accounts.pool_usage()), ("logs", backend.logs.pool_usage())],
        redis_failing_fast: backend.redis.as_ref().map(|r| r.failing_fast()),
        replica_lag,
    }
}
