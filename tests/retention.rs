#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Retention: each project's `retention_days`, on both backends.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Daemon, Fresh, Kind, eventually};

async fn each_project_keeps_its_own_retention(kind: Kind) {
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__RETENTION__INTERVAL_SECS", "1")]).await;
    let (token, short, short_key) = d.tenant("ada@example.com").await;
    let (_, _, long_key) = d.tenant("bob@example.com").await;
    d.patch(&format!("/v1/projects/{short}"), Some(&token), json!({"settings": {"retention_days": 1}})).await;
    let three_days_ago = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    let old_and_new = json!({"logs": [{"message": "old", "timestamp": three_days_ago}, {"message": "new"}]});
    let short_ids = d.ingest(&short_key, old_and_new.clone()).await.body["ids"].clone();
    let long_ids = d.ingest(&long_key, old_and_new).await.body["ids"].clone();
    d.stored(&long_key, long_ids[0].as_str().unwrap()).await;
    d.stored(&short_key, short_ids[1].as_str().unwrap()).await;

    eventually(Duration::from_secs(20), "the 1-day project's 3-day-old log is deleted", || async {
        let messages: Vec<String> =
            d.all_logs(&short_key, 100).await.iter().map(|l| l["message"].as_str().unwrap().to_owned()).collect();
        (messages == ["new"]).then_some(())
    })
    .await;
    let mut kept: Vec<String> =
        d.all_logs(&long_key, 100).await.iter().map(|l| l["message"].as_str().unwrap().to_owned()).collect();
    kept.sort();
    assert_eq!(kept, ["new", "old"], "the 30-day project keeps its 3-day-old log");
    d.get(&format!("/v1/logs/{}", short_ids[0].as_str().unwrap()), Some(&short_key))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_embedded() {
    each_project_keeps_its_own_retention(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_shared() {
    each_project_keeps_its_own_retention(Kind::Shared).await;
}
