#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Faults: the daemon killed mid-ingest, Redis cut, PostgreSQL cut. Every log that got a 202 must be
//! stored exactly once, and nothing else may get a 202.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::proxy::Proxy;
use support::{Daemon, Fresh, Kind, eventually};

on_both_backends!(sigkill_while_four_clients_ingest_loses_and_duplicates_nothing);

async fn sigkill_while_four_clients_ingest_loses_and_duplicates_nothing(d: Daemon) {
    support::sigkill_while_four_clients_ingest(d).await;
}

/// Redis cut: no 202 without a durable enqueue, 503 with Retry-After instead; back to 202 by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_answers_503_then_recovers() {
    let proxy = Proxy::start(&support::address(&support::redis_url(), 6379)).await;
    let url = format!("redis://{}", proxy.addr);
    let d = Daemon::start_with(Fresh::new(Kind::Shared), &[("LEDGER__REDIS__URL", &url)]).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    assert_eq!(d.ingest(&key, json!({"message": "before"})).await.status, 202);

    proxy.cut();
    for _ in 0..5 {
        let r = d.ingest(&key, json!({"message": "during"})).await;
        r.assert_error(503, "unavailable");
        assert!(r.header("retry-after").is_some(), "{r:?}");
    }
    let text = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("ledger_redis_failing_fast 1"), "{text}");
    let health = d.get("/health/deep", None).await;
    assert_eq!(health.status, 503, "{health:?}");
    assert_eq!(health.body["checks"]["cache"]["status"], "down");

    proxy.restore();
    let restored = std::time::Instant::now();
    let id = eventually(Duration::from_secs(30), "ingestion recovers by itself", || async {
        let r = d.ingest(&key, json!({"message": "after"})).await;
        (r.status == 202).then(|| r.body["ids"][0].as_str().unwrap().to_owned())
    })
    .await;
    println!("Redis cut: first 202 {:?} after the connection was restored", restored.elapsed());
    d.stored(&key, &id).await;
    let messages: Vec<String> =
        d.all_logs(&key, 100).await.iter().map(|l| l["message"].as_str().unwrap().to_owned()).collect();
    assert!(!messages.iter().any(|m| m == "during"), "a refused log was stored: {messages:?}");
}

/// PostgreSQL cut: the queue keeps accepting until the project's backpressure limit, known keys keep
/// working from the caches, unknown keys get 503 (not 401); after the cut everything acknowledged is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_queues_until_backpressure_and_loses_nothing() {
    let proxy = Proxy::start(&support::address(&support::postgres_server(), 5432)).await;
    let fresh = Fresh::new(Kind::Shared);
    let through = |db: String| format!("postgres://postgres@{}/{db}", proxy.addr);
    let (auth, logs) = (through(fresh.auth_db()), through(fresh.logs_db()));
    let d = Daemon::start_with(
        fresh,
        &[
            ("LEDGER__POSTGRES__AUTH_URL", &auth),
            ("LEDGER__POSTGRES__LOGS_URL", &logs),
            ("LEDGER__POSTGRES__CONNECT_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let (token, project, key) = d.tenant("ada@example.com").await;
    d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"max_queue_depth": 30}})).await;
    let first = d.ingest(&key, json!({"message": "before"})).await;
    d.stored(&key, first.body["ids"][0].as_str().unwrap()).await;

    proxy.cut();
    let mut acknowledged = vec![first.body["ids"][0].as_str().unwrap().to_owned()];
    let mut refused = None;
    for i in 0..10 {
        let logs: Vec<_> = (0..10).map(|j| json!({"message": format!("during {i} {j}")})).collect();
        let r = d.ingest(&key, json!({ "logs": logs })).await;
        match r.status {
            202 => {
                acknowledged.extend(r.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()))
            }
            _ => {
                refused = Some(r);
                break;
            }
        }
    }
    let refused = refused.expect("backpressure refused a batch");
    refused.assert_error(503, "queue_full");
    assert!(acknowledged.len() > 1, "the queue took logs while PostgreSQL was cut");
    // An unknown key cannot be checked against the store: 503, never 401.
    let unknown = ledger_stages::auth::ApiKey::generate();
    d.ingest(unknown.expose_secret(), json!({"message": "x"})).await.assert_error(503, "unavailable");
    // The backlog shows, per shard and in the deep health check.
    let text = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.lines().any(|l| l.starts_with("ledger_queue_shard_entries{") && !l.ends_with(" 0")), "{text}");
    let lag = eventually(Duration::from_secs(10), "the queue lag shows", || async {
        let health = d.get("/health/deep", None).await;
        health.body["checks"]["queue"]["lag_seconds"].as_f64().filter(|lag| *lag > 0.0)
    })
    .await;
    assert!(lag < 60.0, "{lag}");

    proxy.restore();
    let restored = std::time::Instant::now();
    let stored = eventually(Duration::from_secs(40), "the queue drains into PostgreSQL", || async {
        let r = d.get("/v1/logs?limit=1000", Some(&key)).await;
        (r.status == 200 && r.body["logs"].as_array().unwrap().len() >= acknowledged.len()).then_some(r.body)
    })
    .await;
    println!(
        "PostgreSQL cut: {} acknowledged during the cut, all stored {:?} after the connection was restored",
        acknowledged.len() - 1,
        restored.elapsed()
    );
    let ids: HashSet<&str> = stored["logs"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), stored["logs"].as_array().unwrap().len(), "no duplicates");
    assert!(acknowledged.iter().all(|id| ids.contains(id.as_str())), "an acknowledged log was lost");
    assert_eq!(d.ingest(&key, json!({"message": "after"})).await.status, 202);
    eventually(Duration::from_secs(20), "every shard is drained", || async {
        let text = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let entries: Vec<&str> = text.lines().filter(|l| l.starts_with("ledger_queue_shard_entries{")).collect();
        (!entries.is_empty() && entries.iter().all(|l| l.ends_with(" 0"))).then_some(())
    })
    .await;
}
