#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Graceful shutdown: on SIGTERM the daemon drains (new ingestion answered 503 with Retry-After, `/health`
//! 503) for `server.shutdown_drain_ms`, then stops accepting; every request it has begun ends 202 or 503,
//! what it acknowledged is written, and it exits 0. A connection that never finishes its request cannot
//! hold it past `server.shutdown_timeout_secs`.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Daemon, Fresh, Kind, eventually};
use tokio::io::AsyncWriteExt;

on_both_backends!(sigterm_under_load_answers_every_request_and_loses_nothing);

async fn sigterm_under_load_answers_every_request_and_loses_nothing(mut d: Daemon) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    let unlimited =
        json!({"settings": {"rate_limit_per_minute": 4_000_000_000_u64, "rate_limit_per_hour": 4_000_000_000_u64}});
    assert_eq!(d.patch(&format!("/v1/projects/{project}"), Some(&token), unlimited).await.status, 200);

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(Mutex::new(Vec::<u16>::new()));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (url, key, acknowledged, answered) =
            (d.url("/v1/logs"), key.clone(), acknowledged.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            // A fresh connection per request: a refused connection then means "no longer accepting", never
            // a request cut off half-way.
            let http =
                reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap();
            for batch in 0.. {
                let logs: Vec<_> =
                    (0..20).map(|i| json!({"message": format!("client {client} batch {batch} log {i}")})).collect();
                match http.post(&url).header("x-api-key", &key).json(&json!({ "logs": logs })).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        answered.lock().unwrap().push(status);
                        if status == 202 {
                            let body: serde_json::Value = response.json().await.unwrap();
                            let ids = body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned());
                            acknowledged.lock().unwrap().extend(ids);
                        } else {
                            // Told to come back later, as a well-behaved client would.
                            assert!(response.headers().contains_key("retry-after"));
                            return;
                        }
                    }
                    Err(e) => {
                        assert!(e.is_connect(), "a request was cut off instead of answered: {e:?}");
                        return;
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "300 logs acknowledged", || async {
        (acknowledged.lock().unwrap().len() >= 300).then_some(())
    })
    .await;

    d.sigterm();
    // While it drains, the instance says so to load balancers.
    let health = eventually(Duration::from_secs(10), "/health reports the shutdown", || async {
        let r = d.client().get(d.url("/health")).send().await.ok()?;
        (r.status() == 503).then_some(r)
    })
    .await;
    assert_eq!(health.json::<serde_json::Value>().await.unwrap()["status"], "shutting_down");
    for client in clients {
        client.await.unwrap();
    }
    let status = tokio::task::block_in_place(|| d.wait_exit());
    assert!(status.success(), "exit status {status}: {}", d.output());
    assert!(!d.output().contains("shutdown timed out"), "{}", d.output());
    let answered = answered.lock().unwrap().clone();
    assert!(answered.iter().all(|s| *s == 202 || *s == 503), "every answer is 202 or 503: {answered:?}");

    // Everything acknowledged is stored, once, when the daemon comes back on the same storage.
    let d = d.restart().await;
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    let stored = eventually(Duration::from_secs(60), "every acknowledged log is stored", || async {
        let ids: Vec<String> =
            d.all_logs(&key, 1000).await.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        let present: HashSet<&str> = ids.iter().map(String::as_str).collect();
        acknowledged.iter().all(|id| present.contains(id.as_str())).then_some(ids)
    })
    .await;
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no log is stored twice");
}

/// A client that never finishes its request cannot hold the daemon past the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_its_timeout() {
    let mut d = Daemon::start_with(Fresh::new(Kind::Embedded), &[("LEDGER__SERVER__SHUTDOWN_TIMEOUT_SECS", "1")]).await;
    let address = d.url("").trim_start_matches("http://").to_owned();
    let (_, _, key) = d.tenant("ada@example.com").await;
    // An authenticated request whose body never completes: its handler waits for the rest.
    let mut stuck = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nhost: ledger\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    stuck.write_all(head.as_bytes()).await.unwrap();
    stuck.write_all(b"{\"message\":").await.unwrap();
    assert_eq!(d.get("/health", None).await.status, 200);

    d.sigterm();
    let status = tokio::task::block_in_place(|| d.wait_exit());
    assert!(status.success(), "exit status {status}: {}", d.output());
    assert!(d.output().contains("shutdown timed out"), "{}", d.output());
    drop(stuck);
}
