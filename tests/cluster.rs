#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The shared backend on a Redis Cluster (three primaries with a replica each, started by the test): two
//! instances share limits, quota, revocations, the tail and the queue's shards; backpressure; exactly-once
//! under SIGKILL; and with `redis.min_replicas_acked = 1`, a primary killed mid-ingest loses no
//! acknowledged log.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    let (token, project, key) = a.tenant("ada@example.com").await;
    assert_eq!(b.get("/v1/me", Some(&token)).await.status, 200, "a session made on one instance works on the other");

    // Rate limits count across instances: 6 per minute, 3 through each, then both refuse.
    a.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"rate_limit_per_minute": 6}})).await;
    for d in [&a, &b, &a, &b, &a, &b] {
        assert_eq!(d.ingest(&key, json!({"message": "counted"})).await.status, 202);
    }
    a.ingest(&key, json!({"message": "over"})).await.assert_error(429, "rate_limited");
    b.ingest(&key, json!({"message": "over"})).await.assert_error(429, "rate_limited");

    // The daily quota counts across instances too: 6 logs so far, 10 allowed.
    let settings = json!({"settings": {"rate_limit_per_minute": 100000, "daily_quota": 10}});
    assert_eq!(a.patch(&format!("/v1/projects/{project}"), Some(&token), settings).await.status, 200);
    let three = json!({"logs": [{"message": "q"}, {"message": "q"}, {"message": "q"}]});
    assert_eq!(a.ingest(&key, three.clone()).await.status, 202, "9 of 10");
    b.ingest(&key, three).await.assert_error(429, "quota_exceeded");
    assert_eq!(b.ingest(&key, json!({"message": "the tenth"})).await.status, 202);
    a.ingest(&key, json!({"message": "the eleventh"})).await.assert_error(429, "quota_exceeded");
    let settings = json!({"settings": {"daily_quota": 10_000_000}});
    assert_eq!(a.patch(&format!("/v1/projects/{project}"), Some(&token), settings).await.status, 200);

    // A revocation through one instance is seen by the other, which had the key in its own cache.
    let (key_id, other) = a.key(&token, &project, &["query"]).await;
    assert_eq!(b.get("/v1/logs", Some(&other)).await.status, 200);
    assert_eq!(a.delete(&format!("/v1/projects/{project}/keys/{key_id}"), Some(&token)).await.status, 204);
    eventually(Duration::from_secs(5), "the other instance refuses the revoked key", || async {
        (b.get("/v1/logs", Some(&other)).await.status == 401).then_some(())
    })
    .await;

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
    let mut acknowledged = HashSet::new();
    for (i, d) in [&a, &b].into_iter().cycle().take(20).enumerate() {
        let logs: Vec<_> = (0..10).map(|j| json!({"message": format!("batch {i} log {j}")})).collect();
        let r = d.ingest(&key, json!({ "logs": logs })).await;
        assert_eq!(r.status, 202, "{r:?}");
        acknowledged.extend(r.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    let stored = eventually(Duration::from_secs(30), "every log is stored", || async {
        let logs = b.all_logs(&key, 1000).await;
        let ids: HashSet<String> = logs.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        acknowledged.is_subset(&ids).then_some(logs)
    })
    .await;
    let ids: Vec<&str> = stored.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), ids.iter().collect::<HashSet<_>>().len(), "a log was stored twice");
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
    let (token, project, key) = d.tenant("ada@example.com").await;
    let unlimited =
        json!({"settings": {"rate_limit_per_minute": 4_000_000_000_u64, "rate_limit_per_hour": 4_000_000_000_u64}});
    assert_eq!(d.patch(&format!("/v1/projects/{project}"), Some(&token), unlimited).await.status, 200);

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(HashMap::<u16, usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (url, key) = (d.url("/v1/logs"), key.clone());
        let (acknowledged, refused, stop) = (acknowledged.clone(), refused.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let mut batch = 0;
            while !stop.load(Ordering::SeqCst) {
                batch += 1;
                let logs: Vec<_> =
                    (0..10).map(|i| json!({"message": format!("client {client} batch {batch} log {i}")})).collect();
                match http.post(&url).header("x-api-key", &key).json(&json!({ "logs": logs })).send().await {
                    Ok(response) if response.status() == 202 => {
                        let body: serde_json::Value = response.json().await.unwrap();
                        let ids = body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned());
                        acknowledged.lock().unwrap().extend(ids);
                    }
                    other => {
                        let status = other.map(|r| r.status().as_u16()).unwrap_or(0);
                        *refused.lock().unwrap().entry(status).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let count = || acknowledged.lock().unwrap().len();
    eventually(Duration::from_secs(60), "300 logs acknowledged", || async { (count() >= 300).then_some(()) }).await;

    // Shard 0's primary dies; its replica is promoted by the cluster.
    let victim = cluster.primary_of(&format!("{}logs:{{0}}", d.fresh().prefix()));
    let before = count();
    cluster.kill(victim);
    eventually(Duration::from_secs(60), "300 more logs acknowledged after the failover", || async {
        (count() >= before + 300).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    let expected: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let stored = eventually(Duration::from_secs(90), "every acknowledged log is stored", || async {
        let logs = d.all_logs(&key, 1000).await;
        let ids: Vec<String> = logs.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        let present: HashSet<&str> = ids.iter().map(String::as_str).collect();
        expected.is_subset(&present).then_some(ids)
    })
    .await;
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    let duplicated = copies.values().filter(|n| **n > 1).count();
    let lost = expected.iter().filter(|id| !copies.contains_key(**id)).count();
    println!(
        "primary {victim} killed: acknowledged {} ({before} before the kill) / lost {lost} / duplicated {duplicated} / \
         refused {:?}",
        acknowledged.len(),
        refused.lock().unwrap()
    );
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    assert_eq!(acknowledged.len(), expected.len(), "no id was acknowledged twice");
    // Every primary had its replica at start-up, so the daemon did not warn that it was short of them.
    assert!(!d.output().contains("fewer replicas attached"), "{}", d.output());
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
