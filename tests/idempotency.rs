#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Idempotent ingestion (API.md): a repeat of an `Idempotency-Key` for the same project within 10 minutes
//! gets the first answer again and stores nothing more, on REST and gRPC, on both backends, and across
//! instances on the shared one.

mod support;

use std::time::Duration;

use ledger_proto::v1 as pb;
use ledger_proto::v1::ingest_service_client::IngestServiceClient;
use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind, eventually};
use tokio::io::AsyncWriteExt;

async fn post(d: &Daemon, key: &str, idempotency: &str, body: &Value) -> reqwest::Response {
    d.client()
        .post(d.url("/v1/logs"))
        .header("x-api-key", key)
        .header("idempotency-key", idempotency)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Sends the request and goes away without reading the answer: the answer is lost.
async fn post_and_drop_the_answer(d: &Daemon, key: &str, idempotency: &str, body: &Value) {
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(d.http_addr()).await.unwrap();
    let request = format!(
        "POST /v1/logs HTTP/1.1\r\nhost: ledger\r\nx-api-key: {key}\r\nidempotency-key: {idempotency}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    drop(stream);
}

async fn count(d: &Daemon, key: &str) -> usize {
    d.all_logs(key, 100).await.len()
}

async fn a_retry_after_a_dropped_answer_stores_nothing_more(kind: Kind) {
    let d = Daemon::start(kind).await;
    let (_, _, key) = d.tenant("idem@example.com").await;
    let body = json!({"logs": [{"message": "one"}, {"message": "two"}, {"message": "three"}]});
    post_and_drop_the_answer(&d, &key, "batch-0001", &body).await;
    // The client retries with the same key: it gets the answer it lost, and nothing is stored twice.
    let retry = post(&d, &key, "batch-0001", &body).await;
    assert_eq!(retry.status(), 202);
    let ids: Vec<String> = retry.json::<Value>().await.unwrap()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        d.stored(&key, id).await;
    }
    let again = post(&d, &key, "batch-0001", &body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["ids"], json!(ids));
    // Another key is another request.
    let other = post(&d, &key, "batch-0002", &json!({"message": "four"})).await;
    assert_eq!(other.status(), 202);
    assert!(other.headers().get("idempotent-replayed").is_none());
    eventually(Duration::from_secs(20), "four logs stored", || async { (count(&d, &key).await == 4).then_some(()) })
        .await;
    // Keys are per project: the same key in another project is that project's own.
    let (_, _, other_key) = d.tenant("idem-other@example.com").await;
    let theirs = post(&d, &other_key, "batch-0001", &json!({"message": "theirs"})).await;
    assert_eq!(theirs.status(), 202);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    // A key that is not 1 to 128 printable characters is refused before anything is read.
    let bad = post(&d, &key, &"k".repeat(129), &json!({"message": "x"})).await;
    assert_eq!(bad.status(), 400);
    // gRPC: the same, with `idempotency-key` metadata.
    let mut client = IngestServiceClient::connect(d.grpc.clone()).await.unwrap();
    let call = || {
        let mut request = tonic::Request::new(pb::IngestRequest {
            logs: vec![pb::LogRecord { message: "over grpc".into(), ..Default::default() }],
        });
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        request.metadata_mut().insert("idempotency-key", "grpc-0001".parse().unwrap());
        request
    };
    let first = client.ingest(call()).await.unwrap();
    let second = client.ingest(call()).await.unwrap();
    assert_eq!(second.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(first.into_inner().ids, second.into_inner().ids);
    eventually(Duration::from_secs(20), "five logs stored", || async { (count(&d, &key).await == 5).then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_retry_after_a_dropped_answer_stores_nothing_more() {
    a_retry_after_a_dropped_answer_stores_nothing_more(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_a_retry_after_a_dropped_answer_stores_nothing_more() {
    a_retry_after_a_dropped_answer_stores_nothing_more(Kind::Shared).await;
}

/// On the shared backend the keys are in Redis: a retry that reaches another instance gets the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_instance_gets_the_first_answer() {
    let a = Daemon::start_with(Fresh::new(Kind::Shared), &[]).await;
    let b = a.sibling().await;
    let (_, _, key) = a.tenant("idem-shared@example.com").await;
    let body = json!({"logs": [{"message": "x"}, {"message": "y"}]});
    let first = post(&a, &key, "shared-0001", &body).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let retry = post(&b, &key, "shared-0001", &body).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap()["ids"], first["ids"]);
    eventually(Duration::from_secs(20), "two logs stored", || async { (count(&a, &key).await == 2).then_some(()) })
        .await;
}

/// Keys outlive the daemon: a retry after a graceful restart (SIGTERM, as a deploy does) or a crash (SIGKILL
/// right after the 202) gets the first answer, and the batch is stored once.
async fn keys_survive_a_restart_and_a_crash(kind: Kind) {
    let mut d = Daemon::start(kind).await;
    let (_, _, key) = d.tenant("idem-restart@example.com").await;
    let body = json!({"logs": [{"message": "deployed"}, {"message": "across"}]});
    let first = post(&d, &key, "deploy-0001", &body).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    assert!(d.terminate().success(), "a graceful stop");
    let d = d.restart().await;
    let retry = post(&d, &key, "deploy-0001", &body).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true", "the key outlived the graceful restart");
    assert_eq!(retry.json::<Value>().await.unwrap()["ids"], first["ids"]);
    // SIGKILL at once after the 202: the answer was committed with the batch.
    let crashed = post(&d, &key, "crash-0001", &json!({"message": "crashed"})).await;
    assert_eq!(crashed.status(), 202);
    let crashed: Value = crashed.json().await.unwrap();
    let d = d.restart().await;
    let retry = post(&d, &key, "crash-0001", &json!({"message": "crashed"})).await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true", "the key outlived the crash");
    assert_eq!(retry.json::<Value>().await.unwrap()["ids"], crashed["ids"]);
    eventually(Duration::from_secs(20), "three logs stored", || async { (count(&d, &key).await == 3).then_some(()) })
        .await;
}

on_both_kinds!(keys_survive_a_restart_and_a_crash);
