#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! `GET /v1/logs` filters, their combinations, phrase search, and paging while ingestion goes on, on both
//! backends (API.md's Query section).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use support::{Daemon, urlencode};

on_both_backends!(
    every_filter_and_their_combinations,
    paging_never_skips_or_repeats_while_ingestion_runs,
    search_finds_the_same_before_and_after_indexing,
);

fn at(minutes_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)).to_rfc3339()
}

async fn messages(d: &Daemon, key: &str, query: &str) -> Vec<String> {
    let r = d.get(&format!("/v1/logs?limit=1000&{query}"), Some(key)).await;
    assert_eq!(r.status, 200, "{query}: {r:?}");
    let mut found: Vec<String> =
        r.body["logs"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap().to_owned()).collect();
    found.sort();
    found
}

async fn every_filter_and_their_combinations(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let body = json!({"logs": [
        {"message": "checkout started", "level": "info", "service": "web", "environment": "prod", "timestamp": at(50), "trace_id": trace},
        {"message": "card declined by bank", "level": "error", "service": "pay", "environment": "prod", "timestamp": at(40), "trace_id": trace},
        {"message": "retrying card charge", "level": "warning", "service": "pay", "environment": "staging", "timestamp": at(30)},
        {"message": "Declined: card expired", "level": "critical", "service": "pay", "environment": "prod", "timestamp": at(20)},
        {"message": "cache warm", "level": "debug", "service": "worker", "environment": "prod", "timestamp": at(10)},
        {"message": "nightly report", "level": "info", "service": "worker", "environment": "prod", "timestamp": at(60 * 30)},
    ]});
    let ids = d.ingest(&key, body).await.body["ids"].clone();
    d.stored(&key, ids[5].as_str().unwrap()).await;

    let all_day =
        ["cache warm", "card declined by bank", "checkout started", "Declined: card expired", "retrying card charge"];
    let mut sorted_all_day: Vec<String> = all_day.iter().map(|s| (*s).to_owned()).collect();
    sorted_all_day.sort();
    assert_eq!(messages(&d, &key, "").await, sorted_all_day, "default: the last 24 hours");
    let since_31h = format!("from={}", urlencode(&at(60 * 31)));
    assert_eq!(messages(&d, &key, &since_31h).await.len(), 6);
    let window = format!("from={}&to={}", urlencode(&at(45)), urlencode(&at(15)));
    assert_eq!(
        messages(&d, &key, &window).await,
        ["Declined: card expired", "card declined by bank", "retrying card charge"]
    );

    assert_eq!(messages(&d, &key, "level=ERROR,critical").await, ["Declined: card expired", "card declined by bank"]);
    assert_eq!(
        messages(&d, &key, "min_level=warning").await,
        ["Declined: card expired", "card declined by bank", "retrying card charge"]
    );
    assert_eq!(messages(&d, &key, "service=web,worker").await, ["cache warm", "checkout started"]);
    assert_eq!(messages(&d, &key, "environment=staging").await, ["retrying card charge"]);
    assert_eq!(messages(&d, &key, &format!("trace_id={trace}")).await, ["card declined by bank", "checkout started"]);
    // Every word, case-insensitively, anywhere; a quoted phrase as a phrase.
    assert_eq!(messages(&d, &key, "q=declined").await, ["Declined: card expired", "card declined by bank"]);
    assert_eq!(messages(&d, &key, "q=CARD%20declined").await, ["Declined: card expired", "card declined by bank"]);
    assert_eq!(messages(&d, &key, "q=%22card%20declined%22").await, ["card declined by bank"]);
    assert_eq!(messages(&d, &key, "q=%22declined%20card%22").await, Vec::<String>::new());
    // Combinations narrow each other.
    assert_eq!(
        messages(&d, &key, "service=pay&min_level=error&environment=prod&q=card").await,
        ["Declined: card expired", "card declined by bank"]
    );
    assert_eq!(messages(&d, &key, "service=pay&level=warning&q=declined").await, Vec::<String>::new());
    assert_eq!(messages(&d, &key, &format!("{window}&service=pay&level=critical")).await, ["Declined: card expired"]);
    let stored = d.stored(&key, ids[1].as_str().unwrap()).await;
    let fingerprint = stored["fingerprint"].as_str().unwrap();
    assert_eq!(messages(&d, &key, &format!("fingerprint={fingerprint}&service=pay")).await, ["card declined by bank"]);
}

async fn paging_never_skips_or_repeats_while_ingestion_runs(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    // 260 logs over the last hour, several per second, so pages split ties.
    let logs: Vec<Value> =
        (0..260).map(|i| json!({"message": format!("seed {i}"), "timestamp": at(60 - i / 5)})).collect();
    let mut expected = HashSet::new();
    for chunk in logs.chunks(100) {
        let r = d.ingest(&key, json!({"logs": chunk})).await;
        expected.extend(r.body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()));
    }
    let last = expected.iter().next().unwrap().clone();
    d.stored(&key, &last).await;
    support::eventually(std::time::Duration::from_secs(20), "every seed log is stored", || async {
        (d.all_logs(&key, 1000).await.len() >= 260).then_some(())
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (url, writer_key, writer_stop) = (d.url("/v1/logs"), key.clone(), stop.clone());
    let writer = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut n = 0;
        while !writer_stop.load(Ordering::SeqCst) {
            n += 1;
            let body = json!({"message": format!("live {n}")});
            let _ = client.post(&url).header("x-api-key", &writer_key).json(&body).send().await;
        }
    });

    let from = urlencode(&at(120));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/v1/logs?limit=7&from={from}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = d.get(&path, Some(&key)).await;
        assert_eq!(r.status, 200, "{r:?}");
        pages += 1;
        seen.extend(r.body["logs"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()));
        match r.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(pages >= 38, "{pages} pages");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a log was repeated across pages");
    let seen: HashSet<String> = seen.into_iter().collect();
    assert!(expected.is_subset(&seen), "{} seed logs skipped", expected.difference(&seen).count());
}

/// The search index job runs in the daemon, says how far behind it is, and `q` finds the same logs before
/// and after it has indexed them: old ones (behind the index when written), new ones, phrases.
async fn search_finds_the_same_before_and_after_indexing(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let body = json!({"logs": [
        {"message": "order A-77 refunded twice", "level": "error", "timestamp": at(120)},
        {"message": "order A-78 refunded once", "level": "info", "timestamp": at(90)},
        {"message": "Order a-77 SHIPPED", "level": "info", "timestamp": at(0)},
        {"message": "unrelated", "level": "info", "timestamp": at(60), "attributes": {"order": "A-77"}},
    ]});
    let ids = d.ingest(&key, body).await.body["ids"].clone();
    d.stored(&key, ids[3].as_str().unwrap()).await;
    let since = format!("from={}", urlencode(&at(180)));
    search_answers(&d, &key, &since).await;
    let indexed = support::eventually(std::time::Duration::from_secs(90), "the index job reads the logs", || async {
        d.metric("ledger_search_indexed_logs_total", "").await.filter(|n| *n >= 3.0)
    })
    .await;
    assert!(indexed >= 3.0);
    let lag = d.metric("ledger_search_index_lag_seconds", "").await.unwrap();
    assert!((0.0..600.0).contains(&lag), "lag {lag}");
    search_answers(&d, &key, &since).await;
}

async fn search_answers(d: &Daemon, key: &str, since: &str) {
    assert_eq!(
        messages(d, key, &format!("{since}&q=a-77")).await,
        ["Order a-77 SHIPPED", "order A-77 refunded twice"],
        "a word, in any case; not from the attributes"
    );
    assert_eq!(messages(d, key, &format!("{since}&q=%22refunded%20twice%22")).await, ["order A-77 refunded twice"]);
    assert_eq!(messages(d, key, &format!("{since}&q=refunded%20A-7")).await.len(), 2);
    assert!(messages(d, key, &format!("{since}&q=zanzibar")).await.is_empty());
}
