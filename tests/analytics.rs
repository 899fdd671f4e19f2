#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Error rate, volume, top errors and usage against the real daemon, on both backends.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind, eventually, urlencode};

on_both_backends!(
    metrics_show_new_logs_within_seconds,
    usage_counts_every_outcome,
    metrics_are_per_project,
    grpc_queries
);

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

async fn grpc_queries(d: Daemon) {
    use ledger_proto::v1 as pb;
    use ledger_proto::v1::query_service_client::QueryServiceClient;
    let (token, project, key) = d.tenant("ada@example.com").await;
    let (_, ingest_only) = d.key(&token, &project, &["ingest"]).await;
    assert_eq!(d.ingest(&key, logs()).await.status, 202);
    let channel = tonic::transport::Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    let mut client = QueryServiceClient::new(channel);
    let from = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 1200, nanos: 0 };
    let errors =
        pb::QueryLogsRequest { level: vec!["ERROR".into(), "CRITICAL".into()], limit: Some(2), ..Default::default() };
    let page = eventually(Duration::from_secs(10), "the logs are queryable over gRPC", || {
        let (mut client, request) = (client.clone(), with_key(errors.clone(), &key));
        async move {
            let page = client.query_logs(request).await.unwrap().into_inner();
            (page.logs.len() == 2).then_some(page)
        }
    })
    .await;
    assert!(page.next_cursor.is_some(), "three error logs, pages of two");
    assert!(page.logs.iter().all(|l| l.level == "ERROR" || l.level == "CRITICAL"));
    let next = pb::QueryLogsRequest { cursor: page.next_cursor.clone(), ..errors.clone() };
    let rest = client.query_logs(with_key(next, &key)).await.unwrap().into_inner();
    assert_eq!((rest.logs.len(), rest.next_cursor), (1, None));

    let rate = eventually(Duration::from_secs(10), "the error rate over gRPC", || {
        let (mut client, request) =
            (client.clone(), with_key(pb::ErrorRateRequest { from: Some(from), to: None }, &key));
        async move {
            let rate = client.error_rate(request).await.unwrap().into_inner();
            (rate.buckets.iter().map(|b| b.total).sum::<u64>() == 6).then_some(rate)
        }
    })
    .await;
    assert_eq!(rate.bucket_seconds, 300);
    assert_eq!(rate.buckets.iter().map(|b| b.errors).sum::<u64>(), 3);
    let top = client
        .top_errors(with_key(pb::TopErrorsRequest { from: Some(from), to: None, limit: Some(1) }, &key))
        .await
        .unwrap();
    let top = top.into_inner().errors;
    assert_eq!((top.len(), top[0].count, top[0].exception_type.as_deref()), (1, 2, Some("CardError")));

    let refused = client.query_logs(with_key(pb::QueryLogsRequest::default(), &ingest_only)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let refused = client.error_rate(with_key(pb::ErrorRateRequest::default(), "ledger_nope")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let bad = pb::QueryLogsRequest { limit: Some(5000), ..Default::default() };
    assert_eq!(client.query_logs(with_key(bad, &key)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

fn window() -> String {
    let from = (chrono::Utc::now() - chrono::Duration::minutes(20)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    format!("from={}&to={}", urlencode(&from), urlencode(&to))
}

const STACK: &str =
    "Traceback (most recent call last):\n  File \"/app/pay.py\", line 9, in charge\n    raise CardError()\n";

fn logs() -> Value {
    json!({"logs": [
        {"message": "request 1 ok", "level": "info"},
        {"message": "request 2 ok", "level": "info"},
        {"message": "slow request 3", "level": "warning"},
        {"message": "card 4242 declined", "level": "error", "service": "pay", "exception": {"type": "CardError", "stacktrace": STACK}},
        {"message": "card 1111 declined", "level": "error", "service": "pay", "exception": {"type": "CardError", "stacktrace": STACK}},
        {"message": "disk /dev/sda1 full", "level": "critical", "service": "db"},
    ]})
}

/// Sums the buckets of an error-rate answer.
fn totals(body: &Value) -> (u64, u64) {
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .fold((0, 0), |(t, e), b| (t + b["total"].as_u64().unwrap(), e + b["errors"].as_u64().unwrap()))
}

async fn metrics_show_new_logs_within_seconds(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    assert_eq!(d.ingest(&key, logs()).await.status, 202);
    let rate = eventually(Duration::from_secs(10), "the error rate counts the new logs", || async {
        let r = d.get(&format!("/v1/metrics/error-rate?{}", window()), Some(&key)).await;
        (totals(&r.body) == (6, 3)).then_some(r.body)
    })
    .await;
    assert_eq!(rate["bucket_seconds"], 300);
    assert_eq!(rate["buckets"].as_array().unwrap().len(), 6, "every 5-minute bucket of the 25 minutes, empty ones too");
    let busy = rate["buckets"].as_array().unwrap().iter().find(|b| b["total"] == 6).unwrap();
    assert_eq!(busy["error_rate"], 0.5);

    let volume = d.get(&format!("/v1/metrics/volume?{}&interval=5m", window()), Some(&key)).await;
    assert_eq!(volume.status, 200, "{volume:?}");
    assert_eq!(volume.body["interval"], "5m");
    let counts =
        volume.body["buckets"].as_array().unwrap().iter().find(|b| b["counts"]["INFO"] == 2).unwrap()["counts"].clone();
    assert_eq!(counts, json!({"DEBUG": 0, "INFO": 2, "WARNING": 1, "ERROR": 2, "CRITICAL": 1}));
    let hourly = d.get(&format!("/v1/metrics/volume?{}", window()), Some(&key)).await;
    assert_eq!(hourly.body["interval"], "1h");

    let top = d.get(&format!("/v1/metrics/top-errors?{}&limit=5", window()), Some(&key)).await;
    let errors = top.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{top:?}");
    assert_eq!(errors[0]["count"], 2);
    assert_eq!(errors[0]["exception_type"], "CardError");
    assert_eq!(errors[0]["service"], "pay");
    assert_eq!(errors[0]["level"], "ERROR");
    assert!(errors[0]["sample_message"].as_str().unwrap().contains("declined"));
    assert!(errors[0]["first_seen"].as_str().unwrap() <= errors[0]["last_seen"].as_str().unwrap());
    assert_eq!(errors[1]["level"], "CRITICAL");
    assert_eq!(errors[1]["exception_type"], Value::Null);
    // Both are new (first seen in the window), and counted bucket by bucket for the console's sparklines.
    assert_eq!(top.body["bucket_seconds"], 3600);
    assert_eq!(errors[0]["status"], "new");
    let series: u64 = errors[0]["series"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(series, 2);
    // The fingerprint leads to the logs.
    let fingerprint = errors[0]["fingerprint"].as_str().unwrap();
    let grouped = d.get(&format!("/v1/logs?fingerprint={fingerprint}"), Some(&key)).await;
    assert_eq!(grouped.body["logs"].as_array().unwrap().len(), 2);

    for bad in ["interval=2h", "limit=0", "from=yesterday", "colour=red"] {
        let path = if bad.starts_with("limit") { "top-errors" } else { "volume" };
        d.get(&format!("/v1/metrics/{path}?{bad}"), Some(&key)).await.assert_error(400, "bad_request");
    }
    d.get("/v1/metrics/error-rate?from=2020-01-01T00:00:00Z", Some(&key)).await.assert_error(400, "bad_request");
}

async fn usage_counts_every_outcome(d: Daemon) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"rate_limit_per_minute": 3}})).await;
    assert_eq!(d.ingest(&key, json!({"logs": [{"message": "a"}, {"message": "b"}]})).await.status, 202);
    d.ingest(&key, json!({"logs": [{"message": "a"}, {"level": "x"}]})).await.assert_error(422, "validation_failed");
    assert_eq!(d.ingest(&key, json!({"message": "c"})).await.status, 202);
    d.ingest(&key, json!({"logs": [{"message": "d"}, {"message": "e"}]})).await.assert_error(429, "rate_limited");
    let today = chrono::Utc::now().date_naive().to_string();
    let day = eventually(Duration::from_secs(10), "usage is written", || async {
        let r = d.get("/v1/usage", Some(&key)).await;
        let day = r.body["days"].as_array().unwrap().last().unwrap().clone();
        (day["accepted"] == 3 && day["rejected_rate_limited"] == 2).then_some(day)
    })
    .await;
    assert_eq!(day["day"], today);
    assert_eq!(day["rejected_invalid"], 2);
    assert_eq!(day["rejected_quota"], 0);
    assert_eq!(day["rejected_backpressure"], 0);
    assert!(day["bytes"].as_u64().unwrap() > 0);
    let session = d.get(&format!("/v1/usage?project_id={project}&from={today}&to={today}"), Some(&token)).await;
    assert_eq!(session.body["days"].as_array().unwrap().len(), 1, "{session:?}");
    assert_eq!(d.get("/v1/usage", Some(&key)).await.body["days"].as_array().unwrap().len(), 30);
    d.get("/v1/usage?from=2026-13-01", Some(&key)).await.assert_error(400, "bad_request");
}

async fn metrics_are_per_project(d: Daemon) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    let (_, _, other_key) = d.tenant("bob@example.com").await;
    let (_, ingest_only) = d.key(&token, &project, &["ingest"]).await;
    assert_eq!(d.ingest(&key, logs()).await.status, 202);
    eventually(Duration::from_secs(10), "the owner sees the logs", || async {
        let r = d.get(&format!("/v1/metrics/error-rate?{}", window()), Some(&key)).await;
        (totals(&r.body).0 == 6).then_some(())
    })
    .await;
    let theirs = d.get(&format!("/v1/metrics/error-rate?{}", window()), Some(&other_key)).await;
    assert_eq!(totals(&theirs.body), (0, 0));
    let top = d.get(&format!("/v1/metrics/top-errors?{}", window()), Some(&other_key)).await;
    assert_eq!(top.body["errors"], json!([]));
    for path in ["metrics/error-rate", "metrics/volume", "metrics/top-errors", "usage"] {
        d.get(&format!("/v1/{path}?project_id={project}"), Some(&other_key)).await.assert_error(404, "not_found");
        d.get(&format!("/v1/{path}"), Some(&ingest_only)).await.assert_error(403, "insufficient_scope");
        let bob = d.post("/v1/login", None, json!({"email": "bob@example.com", "password": "correct horse"})).await;
        let bob = bob.body["token"].as_str().unwrap();
        d.get(&format!("/v1/{path}?project_id={project}"), Some(bob)).await.assert_error(404, "not_found");
    }
}

/// The cache is lost (Redis keys flushed; the embedded process restarted): the rebuild job brings the
/// counts back from the log store.
async fn heals(kind: Kind) {
    let fast = [
        ("LEDGER__ANALYTICS__FIVE_MINUTE_SECS", "1"),
        ("LEDGER__ANALYTICS__HOURLY_SECS", "1"),
        ("LEDGER__ANALYTICS__DAILY_SECS", "1"),
    ];
    let mut d = Daemon::start_with(Fresh::new(kind), &fast).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    assert_eq!(d.ingest(&key, logs()).await.status, 202);
    let check = |d: &Daemon| {
        let key = key.clone();
        let base = d.url("");
        async move {
            let client = reqwest::Client::new();
            let get = |path: String| {
                let (client, key) = (client.clone(), key.clone());
                async move { client.get(path).header("x-api-key", key).send().await.unwrap().json::<Value>().await.unwrap() }
            };
            let rate = get(format!("{base}/v1/metrics/error-rate?{}", window())).await;
            let top = get(format!("{base}/v1/metrics/top-errors?{}", window())).await;
            (totals(&rate) == (6, 3) && top["errors"].as_array().is_some_and(|e| e.len() == 2)).then_some(())
        }
    };
    eventually(Duration::from_secs(10), "metrics show the logs", || check(&d)).await;
    match kind {
        Kind::Shared => {
            let client = redis::Client::open(support::redis_url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("{}*", d.fresh().prefix())).query_async(&mut conn).await.unwrap();
            let analytics: Vec<&String> = keys.iter().filter(|k| k.contains(":vol:") || k.contains(":err")).collect();
            assert!(!analytics.is_empty(), "{keys:?}");
            let _: () = redis::cmd("DEL").arg(&analytics).query_async(&mut conn).await.unwrap();
        }
        Kind::Embedded => {
            assert!(d.terminate().success());
            d = d.restart().await;
        }
    }
    eventually(Duration::from_secs(20), "the rebuilt metrics show the logs again", || check(&d)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cache_heals_embedded() {
    heals(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cache_heals_shared() {
    heals(Kind::Shared).await;
}
