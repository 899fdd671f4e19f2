#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Faults: the daemon killed mid-ingest. Every log that got a 202 must be stored exactly once.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Daemon, eventually};

on_both_backends!(sigkill_while_four_clients_ingest_loses_and_duplicates_nothing);

async fn sigkill_while_four_clients_ingest_loses_and_duplicates_nothing(d: Daemon) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    let unlimited =
        json!({"settings": {"rate_limit_per_minute": 4_000_000_000_u64, "rate_limit_per_hour": 4_000_000_000_u64}});
    assert_eq!(d.patch(&format!("/v1/projects/{project}"), Some(&token), unlimited).await.status, 200);

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (url, key, acknowledged, stop) = (d.url("/v1/logs"), key.clone(), acknowledged.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            let mut batch = 0;
            while !stop.load(Ordering::SeqCst) {
                batch += 1;
                let logs: Vec<_> =
                    (0..10).map(|i| json!({"message": format!("client {client} batch {batch} log {i}")})).collect();
                let sent = http.post(&url).header("x-api-key", &key).json(&json!({ "logs": logs })).send().await;
                match sent {
                    Ok(response) if response.status() == 202 => {
                        let body: serde_json::Value = response.json().await.unwrap();
                        let ids = body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned());
                        acknowledged.lock().unwrap().extend(ids);
                    }
                    // Refused or cut off: not acknowledged, so no promise was made. Back off a little.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "400 logs acknowledged", || async {
        (acknowledged.lock().unwrap().len() >= 400).then_some(())
    })
    .await;

    // SIGKILL in the middle of the clients' stream, then a new daemon on the same storage.
    let d = d.restart().await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    let expected: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();

    let stored = eventually(Duration::from_secs(60), "every acknowledged log is stored", || async {
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
        "{:?}: acknowledged {} / lost {lost} / duplicated {duplicated} / stored {} (stored but unacknowledged: {})",
        d.kind(),
        acknowledged.len(),
        stored.len(),
        copies.len() - expected.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    assert_eq!(acknowledged.len(), expected.len(), "no id was acknowledged twice");
}
