#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Two instances on one Redis and one PostgreSQL: limits count globally, a revocation reaches both, each
//! stream shard has one writer, and a killed instance's shards are taken over.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use support::{Daemon, Fresh, Kind, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_limits_revocations_and_shards() {
    // A long in-process key cache: only the revocation broadcast can make the other instance forget a key.
    let a = Daemon::start_with(Fresh::new(Kind::Shared), &[("LEDGER__STAGES__AUTH__LOCAL_CACHE_SECS", "600")]).await;
    let b = a.sibling().await;
    let (_, _, key) = support::limits_and_revocations_are_shared(&a, &b).await;

    // Each shard's lease has exactly one owner, and every log is written once.
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let owners = eventually(Duration::from_secs(10), "every shard has an owner", || {
        let mut conn = conn.clone();
        let prefix = a.fresh().prefix();
        async move {
            let mut owners = Vec::new();
            for shard in 0..4 {
                let owner: Option<String> = redis::cmd("GET")
                    .arg(ledger::queue::redis::Keys { prefix: prefix.clone() }.lease(shard))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                owners.push(owner?);
            }
            Some(owners)
        }
    })
    .await;
    assert!(owners.iter().collect::<HashSet<_>>().len() <= 2, "{owners:?}");

    // Logs sent through both instances are each stored once.
    support::sent_through_both_stored_once(&a, &b, &key).await;

    // One instance dies; the other takes its shards over once their leases lapse, and nothing is lost.
    let mut a = a;
    a.kill();
    let mut after = Vec::new();
    for i in 0..8 {
        let r = b.ingest(&key, json!({"message": format!("after the kill {i}")})).await;
        assert_eq!(r.status, 202, "{r:?}");
        after.push(r.body["ids"][0].as_str().unwrap().to_owned());
    }
    for id in &after {
        b.stored(&key, id).await;
    }
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
}
