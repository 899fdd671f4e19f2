#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The shared backend on a Redis Cluster (three primaries with a replica each, started by the test): two
//! instances share limits, quota, revocations, the tail and the queue's shards; backpressure; exactly-once
//! under SIGKILL; and with `redis.min_replicas_acked = 1`, a primary killed mid-ingest loses no
//! acknowledged log.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::cluster::RedisCluster;
use support::{Daemon, Fresh, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_share_limits_quota_revocations_tail_and_shards() {
    let cluster = RedisCluster::start();
    // A long in-process key cache: only the revocation broadcast can make the other instance forget a key.
    let a =
        Daemon::start_with(Fresh::on_redis(&cluster.url()), &[("LEDGER__STAGES__AUTH__LOCAL_CACHE_SECS", "600")]).await;
    let b = a.sibling().await;
    assert!(a.output().contains("cluster"), "the daemon says it runs on a cluster:\n{}", a.output());
    let (token, project, key) = support::limits_and_revocations_are_shared(&a, &b).await;

    // The daily quota counts across instances too: 6 logs so far, 10 allowed.
    let settings = json!({"settings": {"daily_quota": 10}});
    assert_eq!(a.patch(&format!("/v1/projects/{project}"), Some(&token), settings).await.status, 200);
    let three = json!({"logs": [{"message": "q"}, {"message": "q"}, {"message": "q"}]});
    assert_eq!(a.ingest(&key, three.clone()).await.status, 202, "9 of 10");
    b.ingest(&key, three).await.assert_error(429, "quota_exceeded");
    assert_eq!(b.ingest(&key, json!({"message": "the tenth"})).await.status, 202);
    a.ingest(&key, json!({"message": "the eleventh"})).await.assert_error(429, "quota_exceeded");
    let settings = json!({"settings": {"daily_quota": 10_000_000}});
    assert_eq!(a.patch(&format!("/v1/projects/{project}"), Some(&token), settings).await.status, 200);

    // A subscriber on one instance sees logs sent through the other.
    let mut tail =
        b.client().get(b.url("/v1/logs/tail?service=tailed")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(tail.status(), 200);
    let sent = a
        .ingest(&key, json!({"logs": [{"message": "t1", "service": "tailed"}, {"message": "t2", "service": "tailed"}]}))
        .await;
    assert_eq!(sent.status, 202, "{sent:?}");
    let wanted: Vec<String> =
        sent.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !wanted.iter().all(|id| seen.contains(id.as_str())) {
        let chunk = tokio::time::timeout_at(deadline, tail.chunk()).await;
        let chunk = chunk.expect("the tail shows both logs within 20 s").unwrap().expect("the tail stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(tail);

    // Logs sent through both instances are each stored once, by the shards' owners.
    support::sent_through_both_stored_once(&a, &b, &key).await;
    // The queue's keys spread over the cluster's primaries (one hash tag per shard).
    let prefix = a.fresh().prefix();
    let owners: HashSet<u16> = (0..4).map(|shard| cluster.primary_of(&format!("{prefix}logs:{{{shard}}}"))).collect();
    assert!(owners.len() >= 2, "the shards live on several primaries: {owners:?}");
    let health = b.get("/health/deep", None).await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.body["checks"]["queue"]["depth"], 0, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_on_a_cluster() {
    let cluster = RedisCluster::start();
    let workers_off = [("LEDGER__ROLES__WORKERS", "false"), ("LEDGER__QUEUE__SHARDS", "2")];
    let d = Daemon::start_with(Fresh::on_redis(&cluster.url()), &workers_off).await;
    let (token, project, key) = d.tenant("ada@example.com").await;
    d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"max_queue_depth": 4}})).await;
    let two = json!({"logs": [{"message": "a"}, {"message": "b"}]});
    assert_eq!(d.ingest(&key, two.clone()).await.status, 202);
    assert_eq!(d.ingest(&key, two.clone()).await.status, 202);
    let full = d.ingest(&key, two.clone()).await;
    full.assert_error(503, "queue_full");
    assert!(full.header("retry-after").is_some());
    assert_eq!(d.get("/health/deep", None).await.body["checks"]["queue"]["depth"], 4);

    let d = d.restart_with(&[("LEDGER__QUEUE__SHARDS", "2")]).await;
    eventually(Duration::from_secs(20), "the queue drains", || async {
        (d.all_logs(&key, 100).await.len() == 4).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the project may send again", || async {
        (d.ingest(&key, two.clone()).await.status == 202).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_on_a_cluster_loses_and_duplicates_nothing() {
    let cluster = RedisCluster::start();
    let d = Daemon::start_with(Fresh::on_redis(&cluster.url()), &[]).await;
    support::sigkill_while_four_clients_ingest(d).await;
    drop(cluster);
}

/// With `min_replicas_acked = 1` every 202 waits until a replica holds the batch, so when the primary of a
/// queue shard is SIGKILLed mid-ingest and its replica takes over, no acknowledged log is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_ingest_loses_no_acknowledged_log() {
    let mut cluster = RedisCluster::start();
    let d = Daemon::start_with(Fresh::on_redis(&cluster.url()), &[("LEDGER__REDIS__MIN_REPLICAS_ACKED", "1")]).await;
    let (_, _, key) = support::unlimited_tenant(&d).await;
    let clients = support::Clients::start(&d, &key, 4);
    clients.until_acknowledged(300).await;

    // Shard 0's primary dies; its replica is promoted by the cluster.
    let victim = cluster.primary_of(&format!("{}logs:{{0}}", d.fresh().prefix()));
    let before = clients.acknowledged();
    cluster.kill(victim);
    clients.until_acknowledged(before + 300).await;
    let (acknowledged, refused) = clients.stop().await;
    let summary = support::assert_stored_once(&d, &key, &acknowledged, Duration::from_secs(90)).await;
    println!("primary {victim} killed after {before} acknowledged: {summary}; refused by status: {refused:?}");
    // Every primary had its replica at start-up, so the daemon did not warn that it was short of them.
    assert!(!d.output().contains("fewer replicas attached"), "{}", d.output());
}

/// With `min_replicas_acked = 1`, once a queue shard's primary is killed its promoted replica has no
/// replica of its own: a batch written there is answered 503, but it is in the stream and will be stored.
/// Clients that retry each batch with its `Idempotency-Key` until a 202 must find every batch stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_their_key_through_a_failover_store_each_batch_once() {
    let mut cluster = RedisCluster::start();
    let d = Daemon::start_with(Fresh::on_redis(&cluster.url()), &[("LEDGER__REDIS__MIN_REPLICAS_ACKED", "1")]).await;
    let (_, _, key) = support::unlimited_tenant(&d).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (url, key) = (d.url("/v1/logs"), key.clone());
            let (stop, acknowledged, retried) = (stop.clone(), acknowledged.clone(), retried.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let mut batch = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    batch += 1;
                    let logs: Vec<_> =
                        (0..10).map(|i| json!({"message": format!("client {client} batch {batch} log {i}")})).collect();
                    // The same batch with the same key until it is acknowledged, as the SDKs retry.
                    for attempt in 0.. {
                        assert!(attempt < 600, "batch {batch} of client {client} never acknowledged");
                        let sent = http
                            .post(&url)
                            .header("x-api-key", &key)
                            .header("idempotency-key", format!("client-{client}-batch-{batch}"))
                            .json(&json!({ "logs": logs }))
                            .send()
                            .await;
                        if let Ok(response) = sent
                            && response.status() == 202
                        {
                            let body: serde_json::Value = response.json().await.unwrap();
                            let ids = body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned());
                            acknowledged.lock().unwrap().extend(ids);
                            break;
                        }
                        retried.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    let count = || acknowledged.lock().unwrap().len();
    eventually(Duration::from_secs(60), "300 logs acknowledged", || async { (count() >= 300).then_some(()) }).await;
    let victim = cluster.primary_of(&format!("{}logs:{{0}}", d.fresh().prefix()));
    cluster.kill(victim);
    let before = count();
    eventually(Duration::from_secs(120), "600 more logs acknowledged", || async {
        (count() >= before + 600).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let summary = support::assert_stored_once(&d, &key, &acknowledged, Duration::from_secs(90)).await;
    // Retried batches got new ids each time they ran: a batch stored twice shows as a message stored twice.
    let logs = d.all_logs(&key, 1000).await;
    let mut messages = std::collections::HashMap::<&str, usize>::new();
    for log in &logs {
        *messages.entry(log["message"].as_str().unwrap()).or_default() += 1;
    }
    let doubled: Vec<_> = messages.iter().filter(|(_, n)| **n > 1).take(5).collect();
    let retries = retried.load(std::sync::atomic::Ordering::SeqCst);
    println!("primary {victim} killed after {before} acknowledged: {summary}; {retries} retries");
    assert!(doubled.is_empty(), "batches stored more than once: {doubled:?}");
}

/// Asking for more replicas than the primaries have: the daemon says so at start-up, and no batch gets a 202
/// (503 instead), since none can be confirmed by two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_asked_than_attached_means_no_202() {
    let cluster = RedisCluster::start();
    let d = Daemon::start_with(Fresh::on_redis(&cluster.url()), &[("LEDGER__REDIS__MIN_REPLICAS_ACKED", "2")]).await;
    assert!(d.output().contains("fewer replicas attached than redis.min_replicas_acked"), "{}", d.output());
    let (_, _, key) = d.tenant("ada@example.com").await;
    let refused = d.ingest(&key, json!({"message": "not replicated twice"})).await;
    refused.assert_error(503, "unavailable");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
}
