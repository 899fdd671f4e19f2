#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The shared queue's exactly-once replay, driven deterministically: a worker that committed a batch and
//! died before releasing its stream entries must not write them again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ledger::config::{BackendKind, Config};
use ledger::queue::redis::{Entry, Keys, RedisQueue};
use ledger::queue::worker::Workers;
use ledger::store::analytics::redis::RedisAnalytics;
use ledger::store::logs::postgres::copy_records;
use ledger::store::{Backend, LogDb};
use ledger_stages::queue::{LogQueue, QueueError};
use ledger_stages::{Level, LogRecord, ProjectContext, ProjectSettings, Scope};
use redis::streams::StreamRangeReply;
use support::{Fresh, Kind, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn record(project: Uuid, message: &str) -> LogRecord {
    LogRecord { fingerprint: 1, ..LogRecord::new(project, chrono::Utc::now(), Level::Info, message) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_before_a_crash_is_released_not_rewritten() {
    let fresh = Fresh::new(Kind::Shared);
    let mut config = Config::default();
    config.backend.kind = BackendKind::Shared;
    config.postgres.auth_url = format!("{}/{}", support::postgres_server(), fresh.auth_db());
    config.postgres.logs_url = format!("{}/{}", support::postgres_server(), fresh.logs_db());
    config.redis.url = support::redis_url();
    config.redis.key_prefix = fresh.prefix();
    let backend = Backend::open(&config).await.unwrap();
    let LogDb::Postgres(logs) = &backend.logs else { panic!("shared backend without PostgreSQL") };
    let redis = backend.redis.clone().unwrap();
    let queue = RedisQueue::new(redis.clone(), 1);
    let project = ProjectContext {
        project_id: Uuid::now_v7(),
        key_id: Uuid::now_v7(),
        scopes: vec![Scope::Ingest],
        settings: ProjectSettings { max_queue_depth: 100, ..ProjectSettings::default() },
        stages: None,
    };
    for batch in 0..3 {
        let records = (0..5).map(|i| record(project.project_id, &format!("batch {batch} log {i}"))).collect();
        queue.enqueue(&project, records, Default::default()).await.unwrap();
    }
    assert_eq!(queue.depth().await.unwrap(), 15);

    // A worker wrote the first two entries and their offset in one transaction, then died.
    let keys = Keys { prefix: fresh.prefix() };
    let mut conn = redis.connection();
    let entries: StreamRangeReply =
        redis::cmd("XRANGE").arg(keys.stream(0)).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    assert_eq!(entries.ids.len(), 3);
    let mut tx = logs.pool().begin().await.unwrap();
    for entry in &entries.ids[..2] {
        let decoded = Entry::decode(&entry.get::<Vec<u8>>("d").unwrap()).unwrap();
        copy_records(&mut tx, &decoded.records).await.unwrap();
    }
    sqlx::query("INSERT INTO queue_offsets (shard, last_id) VALUES (0, $1)")
        .bind(&entries.ids[1].id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The next owner starts from the committed offset.
    let stop = CancellationToken::new();
    let workers = Workers {
        redis: redis.clone(),
        keys: keys.clone(),
        shards: 1,
        writer: Arc::new(logs.clone()),
        lease: Duration::from_secs(2),
        max_write_logs: 1000,
        linger: Duration::from_millis(100),
        owner: "next-owner".into(),
        analytics: Arc::new(RedisAnalytics::new(redis.clone())),
        tail: Arc::new(ledger::store::tail::redis::RedisTail::new(redis.clone(), 1000)),
    };
    let running = tokio::spawn(workers.run(stop.clone()));
    let queue = Arc::new(queue);
    eventually(Duration::from_secs(20), "the queue drains", || {
        let queue = queue.clone();
        async move { (queue.depth().await.ok() == Some(0)).then_some(()) }
    })
    .await;
    stop.cancel();
    running.await.unwrap();
    // The workers keep the BRIN summaries current with this query; it must run on the real schema.
    ledger::store::logs::postgres::summarize_brin(logs.pool()).await.expect("BRIN summary");

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM logs").fetch_one(logs.pool()).await.unwrap();
    assert_eq!((rows, distinct), (15, 15), "the committed entries were not written again, the third was written once");
    let left: i64 = redis::cmd("XLEN").arg(keys.stream(0)).query_async(&mut conn).await.unwrap();
    assert_eq!(left, 0, "released entries leave the stream");
    let pending: Option<i64> =
        redis::cmd("GET").arg(keys.pending(0, project.project_id)).query_async(&mut conn).await.unwrap();
    assert_eq!(pending.unwrap_or(0), 0);

    // And with its logs written, the project may fill its queue again.
    let full = ProjectContext {
        settings: ProjectSettings { max_queue_depth: 5, ..project.settings.clone() },
        stages: None,
        ..project.clone()
    };
    queue.enqueue(&full, vec![record(project.project_id, "a"); 5], Default::default()).await.unwrap();
    assert!(matches!(
        queue.enqueue(&full, vec![record(project.project_id, "b")], Default::default()).await,
        Err(QueueError::Full { .. })
    ));
}
