#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! `postgres.logs_read_url`: a streaming replica (started by the test with `pg_basebackup`) serves queries
//! and search; a log by id is found right after it is stored even while the replica lags; once caught up,
//! the replica answers what the primary holds; the lag shows in `/health/deep` and `/metrics`.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::replica::PgReplicaPair;
use support::{Daemon, Fresh, Kind, eventually};

async fn ids_on_primary(url: &str) -> HashSet<String> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
    let ids: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT id FROM logs").fetch_all(&mut conn).await.unwrap();
    ids.into_iter().map(|(id,)| id.to_string()).collect()
}

async fn on_replica(url: &str, sql: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_go_to_the_replica_and_reads_by_id_never_miss_a_stored_log() {
    let pg = PgReplicaPair::start();
    let fresh = Fresh::new(Kind::Shared);
    let auth = format!("{}/{}", pg.primary_url(), fresh.auth_db());
    let logs = format!("{}/{}", pg.primary_url(), fresh.logs_db());
    let read = format!("{}/{}", pg.replica_url(), fresh.logs_db());
    let d = Daemon::start_with(
        fresh,
        &[
            ("LEDGER__POSTGRES__AUTH_URL", &auth),
            ("LEDGER__POSTGRES__LOGS_URL", &logs),
            ("LEDGER__POSTGRES__LOGS_READ_URL", &read),
        ],
    )
    .await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    let batch: Vec<_> = (0..20).map(|i| json!({"message": format!("order zx81q{} shipped", i % 2)})).collect();
    assert_eq!(d.ingest(&key, json!({ "logs": batch })).await.status, 202);
    eventually(Duration::from_secs(20), "the replica serves the 20 logs", || async {
        (d.all_logs(&key, 7).await.len() == 20).then_some(())
    })
    .await;
    let found = d.get("/v1/logs?q=zx81q1", Some(&key)).await;
    assert_eq!(found.body["logs"].as_array().unwrap().len(), 10, "{found:?}");
    let health = d.get("/health/deep", None).await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.body["checks"]["replica"]["status"], "ok", "{health:?}");
    assert!(health.body["checks"]["replica"]["lag_seconds"].as_f64().is_some(), "{health:?}");

    // The replica stops replaying: new logs reach the primary only.
    on_replica(&read, "SELECT pg_wal_replay_pause()").await;
    let late = d.ingest(&key, json!({"message": "written while the replica lags"})).await;
    let late_id = late.body["ids"][0].as_str().unwrap().to_owned();
    let by_id = d.stored(&key, &late_id).await;
    assert_eq!(by_id["message"], "written while the replica lags", "read by id from the primary");
    let listed = d.get("/v1/logs?q=lags", Some(&key)).await;
    assert_eq!(listed.body["logs"].as_array().unwrap().len(), 0, "lists come from the lagging replica: {listed:?}");
    let lag = eventually(Duration::from_secs(20), "the lag shows", || async {
        let health = d.get("/health/deep", None).await;
        health.body["checks"]["replica"]["lag_seconds"].as_f64().filter(|lag| *lag > 0.0)
    })
    .await;
    let metrics = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let gauge = metrics.lines().find(|l| l.starts_with("ledger_postgres_replica_lag_seconds ")).unwrap();
    assert!(gauge.split(' ').nth(1).unwrap().parse::<f64>().unwrap() > 0.0, "{gauge} (health said {lag})");

    // Caught up, the replica answers what the primary holds, page after page.
    on_replica(&read, "SELECT pg_wal_replay_resume()").await;
    let primary = ids_on_primary(&logs).await;
    assert_eq!(primary.len(), 21);
    eventually(Duration::from_secs(20), "the replica catches up", || async {
        let listed: HashSet<String> =
            d.all_logs(&key, 7).await.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        (listed == primary).then_some(())
    })
    .await;
    drop(d);
    drop(pg);
}
