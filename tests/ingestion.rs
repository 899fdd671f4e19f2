#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Ingestion over REST and gRPC against the real daemon, on both backends (API.md's Ingestion section).

mod support;

use std::io::Write;
use std::time::Duration;

use ledger_proto::v1 as pb;
use ledger_proto::v1::ingest_service_client::IngestServiceClient;
use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind, eventually};

on_both_backends!(
    single_logs_and_batches_are_acknowledged_and_read_back,
    one_bad_log_refuses_the_batch_and_stores_nothing,
    a_thousand_logs_pass_and_a_thousand_and_one_do_not,
    msgpack_gzip_and_zstd_bodies,
    bad_bodies_get_clear_errors,
    exactly_the_rate_limit_passes,
    the_daily_quota_counts_accepted_logs,
    the_daily_quota_survives_a_restart,
    a_revoked_key_or_deleted_project_is_refused_on_the_next_request,
    scopes_are_enforced,
    messages_differing_in_variable_parts_share_a_fingerprint,
    reads_page_without_skipping_or_repeating,
    grpc_ingest_and_stream,
);

async fn single_logs_and_batches_are_acknowledged_and_read_back(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let one = d
        .ingest(
            &key,
            json!({
                "message": "payment declined", "level": "error", "timestamp": "2026-11-27T08:00:00.123456Z",
                "service": "checkout", "environment": "prod", "host": "web-1",
                "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
                "attributes": {"order": {"id": 17, "total": 9.5}}, "exception": {"type": "CardError", "value": "declined"}
            }),
        )
        .await;
    assert_eq!(one.status, 202, "{one:?}");
    assert_eq!(one.body["accepted"], 1);
    for header in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
        assert!(one.header(header).is_some(), "{header} missing: {one:?}");
    }
    let id = one.body["ids"][0].as_str().unwrap();
    let stored = d.stored(&key, id).await;
    assert_eq!(stored["message"], "payment declined");
    assert_eq!(stored["level"], "ERROR");
    assert_eq!(stored["timestamp"], "2026-11-27T08:00:00.123456Z");
    assert_eq!(stored["service"], "checkout");
    assert_eq!(stored["environment"], "prod");
    assert_eq!(stored["host"], "web-1");
    assert_eq!(stored["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(stored["span_id"], "b7ad6b7169203331");
    assert_eq!(stored["attributes"], json!({"order": {"id": 17, "total": 9.5}}));
    assert_eq!(stored["exception"], json!({"type": "CardError", "value": "declined", "stacktrace": null}));
    assert_eq!(stored["fingerprint"].as_str().unwrap().len(), 16);
    assert!(stored["received_at"].as_str().unwrap().ends_with('Z'));

    let batch =
        d.ingest(&key, json!({"logs": [{"message": "a"}, {"message": "b", "level": "WARN"}, {"message": "c"}]})).await;
    assert_eq!(batch.status, 202, "{batch:?}");
    assert_eq!(batch.body["accepted"], 3);
    let ids: Vec<&str> = batch.body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    for (id, message) in ids.iter().zip(["a", "b", "c"]) {
        let stored = d.stored(&key, id).await;
        assert_eq!(stored["message"], message, "ids are in request order");
    }
    let b = d.stored(&key, ids[1]).await;
    assert_eq!((b["level"].as_str(), &b["attributes"], &b["service"]), (Some("WARNING"), &json!({}), &Value::Null));
}

async fn one_bad_log_refuses_the_batch_and_stores_nothing(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let r = d
        .ingest(&key, json!({"logs": [{"message": "good one"}, {"message": "x", "level": "LOUD"}, {"message": "good two", "span_id": "nope"}]}))
        .await;
    r.assert_error(422, "validation_failed");
    let details = r.body["error"]["details"].as_array().unwrap();
    let found: Vec<(u64, &str)> =
        details.iter().map(|p| (p["index"].as_u64().unwrap(), p["field"].as_str().unwrap())).collect();
    assert_eq!(found, [(1, "level"), (2, "span_id")]);
    // A marker accepted afterwards is stored; the good logs of the refused batch never are.
    let marker = d.ingest(&key, json!({"message": "marker"})).await;
    d.stored(&key, marker.body["ids"][0].as_str().unwrap()).await;
    let messages: Vec<Value> = d.all_logs(&key, 100).await.iter().map(|l| l["message"].clone()).collect();
    assert_eq!(messages, [json!("marker")]);
}

async fn a_thousand_logs_pass_and_a_thousand_and_one_do_not(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let logs: Vec<Value> = (0..1000).map(|i| json!({"message": format!("log {i}")})).collect();
    let r = d.ingest(&key, json!({ "logs": logs })).await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body["ids"].as_array().unwrap().len(), 1000);
    let logs: Vec<Value> = (0..1001).map(|i| json!({"message": format!("log {i}")})).collect();
    d.ingest(&key, json!({ "logs": logs })).await.assert_error(413, "batch_too_large");
    d.ingest(&key, json!({"logs": []})).await.assert_error(422, "validation_failed");
    let last = r.body["ids"][999].as_str().unwrap();
    d.stored(&key, last).await;
    assert_eq!(d.all_logs(&key, 1000).await.len(), 1000);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn msgpack_gzip_and_zstd_bodies(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let body = json!({"logs": [{"message": "packed", "level": "error", "attributes": {"n": 1}}]});
    let packed = rmp_serde::to_vec_named(&body).unwrap();
    let send = |content_type: &'static str, encoding: Option<&'static str>, bytes: Vec<u8>| {
        let mut request =
            d.client().post(d.url("/v1/logs")).header("x-api-key", &key).header("content-type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        request.body(bytes).send()
    };
    for (content_type, encoding, bytes) in [
        ("application/msgpack", Some("zstd"), zstd::encode_all(&packed[..], 3).unwrap()),
        ("application/x-msgpack", None, packed.clone()),
        ("application/json", Some("gzip"), gzip(body.to_string().as_bytes())),
        ("application/json", Some("zstd"), zstd::encode_all(body.to_string().as_bytes(), 3).unwrap()),
    ] {
        let r = Daemon::reply(send(content_type, encoding, bytes).await.unwrap()).await;
        assert_eq!(r.status, 202, "{content_type} {encoding:?}: {r:?}");
        let stored = d.stored(&key, r.body["ids"][0].as_str().unwrap()).await;
        assert_eq!((stored["message"].as_str(), stored["level"].as_str()), (Some("packed"), Some("ERROR")));
        assert_eq!(stored["attributes"], json!({"n": 1}));
    }
}

async fn bad_bodies_get_clear_errors(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let post = |content_type: &'static str, encoding: Option<&'static str>, bytes: Vec<u8>| {
        let mut request =
            d.client().post(d.url("/v1/logs")).header("x-api-key", &key).header("content-type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        async move { Daemon::reply(request.body(bytes).send().await.unwrap()).await }
    };
    post("application/json", None, b"{\"message\": ".to_vec()).await.assert_error(400, "bad_request");
    post("application/msgpack", None, b"\xc1\xc1".to_vec()).await.assert_error(400, "bad_request");
    post("text/plain", None, b"hello".to_vec()).await.assert_error(415, "unsupported_media_type");
    post("application/json", Some("br"), b"{}".to_vec()).await.assert_error(415, "unsupported_media_type");
    post("application/json", Some("gzip"), b"not gzip".to_vec()).await.assert_error(400, "bad_request");
    // 11 MiB of JSON that compresses to a few KiB: refused at the 10 MiB limit, not inflated whole.
    let mut bomb = b"{\"message\": \"".to_vec();
    bomb.extend(std::iter::repeat_n(b'a', 11 * 1024 * 1024));
    bomb.extend(b"\"}");
    post("application/json", Some("gzip"), gzip(&bomb)).await.assert_error(413, "payload_too_large");
    post("application/json", None, b"[{\"message\": \"a\"}]".to_vec()).await.assert_error(422, "validation_failed");
    // PostgreSQL cannot store NUL: refused on both backends alike, before it could block a write.
    post("application/json", None, br#"{"message": "a\u0000b"}"#.to_vec()).await.assert_error(422, "validation_failed");
    // No credential, a malformed one, an unknown one.
    let none = d.client().post(d.url("/v1/logs")).json(&json!({"message": "a"})).send().await.unwrap();
    Daemon::reply(none).await.assert_error(401, "unauthorized");
    d.ingest("ledger_short", json!({"message": "a"})).await.assert_error(401, "unauthorized");
    d.ingest(ledger_stages::auth::ApiKey::generate().expose_secret(), json!({"message": "a"}))
        .await
        .assert_error(401, "unauthorized");
}

async fn exactly_the_rate_limit_passes(d: Daemon) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    let r = d
        .patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"rate_limit_per_minute": 5}}))
        .await;
    assert_eq!(r.status, 200);
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = d.ingest(&key, json!({"message": "m"})).await;
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        remaining.push(r.header("x-ratelimit-remaining").unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let refused = d.ingest(&key, json!({"message": "m"})).await;
    refused.assert_error(429, "rate_limited");
    assert!(refused.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
}

async fn the_daily_quota_counts_accepted_logs(d: Daemon) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"daily_quota": 5}})).await;
    let three = json!({"logs": [{"message": "a"}, {"message": "b"}, {"message": "c"}]});
    assert_eq!(d.ingest(&key, three.clone()).await.status, 202);
    // An invalid batch is refused and does not use the quota up.
    d.ingest(&key, json!({"logs": [{"message": "a"}, {"level": "x"}]})).await.assert_error(422, "validation_failed");
    let over = d.ingest(&key, three).await;
    over.assert_error(429, "quota_exceeded");
    let retry_after: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let two = d.ingest(&key, json!({"logs": [{"message": "d"}, {"message": "e"}]})).await;
    assert_eq!(two.status, 202, "exactly the quota fits: {two:?}");
    d.ingest(&key, json!({"message": "f"})).await.assert_error(429, "quota_exceeded");
}

async fn the_daily_quota_survives_a_restart(mut d: Daemon) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"daily_quota": 5}})).await;
    assert_eq!(
        d.ingest(&key, json!({"logs": [{"message": "a"}, {"message": "b"}, {"message": "c"}]})).await.status,
        202
    );
    assert!(d.terminate().success());
    let d = d.restart().await;
    let three = json!({"logs": [{"message": "d"}, {"message": "e"}, {"message": "f"}]});
    d.ingest(&key, three).await.assert_error(429, "quota_exceeded");
    assert_eq!(d.ingest(&key, json!({"logs": [{"message": "d"}, {"message": "e"}]})).await.status, 202);
}

async fn a_revoked_key_or_deleted_project_is_refused_on_the_next_request(d: Daemon) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    let (key_id, other) = d.key(&token, &project, &["ingest"]).await;
    // Both keys are validated, so every cache knows them.
    assert_eq!(d.ingest(&key, json!({"message": "a"})).await.status, 202);
    assert_eq!(d.ingest(&other, json!({"message": "a"})).await.status, 202);
    assert_eq!(d.delete(&format!("/v1/projects/{project}/keys/{key_id}"), Some(&token)).await.status, 204);
    d.ingest(&other, json!({"message": "b"})).await.assert_error(401, "unauthorized");
    assert_eq!(d.ingest(&key, json!({"message": "b"})).await.status, 202, "the other key still works");
    let listed = d.get(&format!("/v1/projects/{project}/keys"), Some(&token)).await;
    let used = listed.body["keys"].as_array().unwrap().iter().find(|k| k["id"] != key_id.as_str()).unwrap().clone();
    assert!(used["last_used_at"].is_string(), "{used}");

    assert_eq!(d.delete(&format!("/v1/projects/{project}"), Some(&token)).await.status, 204);
    d.ingest(&key, json!({"message": "c"})).await.assert_error(401, "unauthorized");
    d.get("/v1/logs", Some(&key)).await.assert_error(401, "unauthorized");
}

async fn scopes_are_enforced(d: Daemon) {
    let (token, project, _) = d.tenant("ada@example.com").await;
    let (_, ingest_only) = d.key(&token, &project, &["ingest"]).await;
    let (_, query_only) = d.key(&token, &project, &["query"]).await;
    d.get("/v1/logs", Some(&ingest_only)).await.assert_error(403, "insufficient_scope");
    d.ingest(&query_only, json!({"message": "a"})).await.assert_error(403, "insufficient_scope");
    let r = d.ingest(&ingest_only, json!({"message": "a"})).await;
    assert_eq!(r.status, 202);
    d.stored(&query_only, r.body["ids"][0].as_str().unwrap()).await;

    // A session reads its own projects with project_id, and nobody else's.
    let own = d.get(&format!("/v1/logs?project_id={project}"), Some(&token)).await;
    assert_eq!(own.status, 200, "{own:?}");
    d.get("/v1/logs", Some(&token)).await.assert_error(400, "bad_request");
    let mallory = d.signup("mallory@example.com").await;
    d.get(&format!("/v1/logs?project_id={project}"), Some(&mallory)).await.assert_error(404, "not_found");
    let id = r.body["ids"][0].as_str().unwrap();
    d.get(&format!("/v1/logs/{id}?project_id={project}"), Some(&mallory)).await.assert_error(404, "not_found");
    // Another project's key does not see this project's log either.
    let (_, _, mallorys_key) = d.tenant("mallory2@example.com").await;
    d.get(&format!("/v1/logs/{id}"), Some(&mallorys_key)).await.assert_error(404, "not_found");
    d.get(&format!("/v1/logs?project_id={project}"), Some(&mallorys_key)).await.assert_error(404, "not_found");
    for bad in ["limit=0", "limit=1001", "from=yesterday", "level=LOUD", "cursor=zzz", "fingerprint=xyz", "colour=red"]
    {
        d.get(&format!("/v1/logs?{bad}"), Some(&query_only)).await.assert_error(400, "bad_request");
    }
}

async fn messages_differing_in_variable_parts_share_a_fingerprint(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let r = d
        .ingest(
            &key,
            json!({"logs": [
                {"message": "user 42 failed login from 10.0.0.1"},
                {"message": "user 1337 failed login from 192.168.7.20"},
                {"message": "order 3fa85f64-5717-4562-b3fc-2c963f66afa6 shipped"},
                {"message": "order 9b2d1c1e-0f6a-4a5b-8c3d-7e8f9a0b1c2d shipped"},
                {"message": "user 42 logged out"},
            ]}),
        )
        .await;
    assert_eq!(r.status, 202);
    let mut prints = Vec::new();
    for id in r.body["ids"].as_array().unwrap() {
        prints.push(d.stored(&key, id.as_str().unwrap()).await["fingerprint"].as_str().unwrap().to_owned());
    }
    assert_eq!(prints[0], prints[1], "numbers and IP addresses");
    assert_eq!(prints[2], prints[3], "UUIDs");
    assert_ne!(prints[0], prints[4]);
    assert_ne!(prints[0], prints[2]);
    let same = d.get(&format!("/v1/logs?fingerprint={}", prints[0]), Some(&key)).await;
    assert_eq!(same.body["logs"].as_array().unwrap().len(), 2);
}

async fn reads_page_without_skipping_or_repeating(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let logs: Vec<Value> =
        (0..25).map(|i| json!({"message": format!("entry {i}"), "timestamp": 1_764_230_400 + i / 3})).collect();
    let r = d.ingest(&key, json!({ "logs": logs })).await;
    let ids: Vec<String> = r.body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
    d.stored(&key, &ids[24]).await;
    let read = d.all_logs(&key, 10).await;
    let mut read_ids: Vec<String> = read.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(read_ids.len(), 25);
    let times: Vec<&str> = read.iter().map(|l| l["timestamp"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    read_ids.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(read_ids, expected);
    let q = d.get("/v1/logs?q=ENTRY%2024&from=2025-01-01T00:00:00Z", Some(&key)).await;
    assert_eq!(q.body["logs"].as_array().unwrap().len(), 1, "{q:?}");
}

async fn grpc_ingest_and_stream(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    let channel = tonic::transport::Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    let mut client = IngestServiceClient::new(channel);
    let log = |message: &str| pb::LogRecord {
        message: message.into(),
        level: "error".into(),
        service: Some("grpc-svc".into()),
        attributes: Some(prost_types::Struct {
            fields: [("n".to_owned(), prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(3.0)) })]
                .into(),
        }),
        ..Default::default()
    };
    let mut request = tonic::Request::new(pb::IngestRequest { logs: vec![log("one"), log("two")] });
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let answer = client.ingest(request).await.unwrap().into_inner();
    assert_eq!(answer.accepted, 2);
    let stored = d.stored(&key, &answer.ids[0]).await;
    assert_eq!((stored["message"].as_str(), stored["level"].as_str()), (Some("one"), Some("ERROR")));
    assert_eq!(stored["attributes"], json!({"n": 3}));

    let mut bad = tonic::Request::new(pb::IngestRequest { logs: vec![log("")] });
    bad.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    assert_eq!(client.ingest(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let mut anonymous = tonic::Request::new(pb::IngestRequest { logs: vec![log("x")] });
    anonymous.metadata_mut().insert("authorization", "Bearer ledger_nope".parse().unwrap());
    assert_eq!(client.ingest(anonymous).await.unwrap_err().code(), tonic::Code::Unauthenticated);

    let batches =
        vec![pb::IngestRequest { logs: vec![log("s1")] }, pb::IngestRequest { logs: vec![log("s2"), log("s3")] }];
    let mut stream = tonic::Request::new(tokio_stream::iter(batches));
    stream.metadata_mut().insert("x-api-key", key.parse().unwrap());
    let totals = client.ingest_stream(stream).await.unwrap().into_inner();
    assert_eq!((totals.accepted, totals.ids.len()), (3, 3));
    d.stored(&key, &totals.ids[2]).await;
}

/// With no worker draining the queue, a project whose queue holds `max_queue_depth` logs is refused: each of
/// the 2 shards takes the project's share (2 logs, a batch may cross it), then refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_when_the_queue_is_full() {
    let d = Daemon::start_with(
        Fresh::new(Kind::Shared),
        &[("LEDGER__ROLES__WORKERS", "false"), ("LEDGER__QUEUE__SHARDS", "2")],
    )
    .await;
    let (token, project, key) = d.tenant("ada@example.com").await;
    d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"max_queue_depth": 3}})).await;
    let two = json!({"logs": [{"message": "a"}, {"message": "b"}]});
    assert_eq!(d.ingest(&key, two.clone()).await.status, 202);
    assert_eq!(d.ingest(&key, two.clone()).await.status, 202, "the other shard: 0 < 2 pending, accepted whole");
    let full = d.ingest(&key, two.clone()).await;
    full.assert_error(503, "queue_full");
    assert!(full.header("retry-after").is_some());
    let health = d.get("/health/deep", None).await;
    assert_eq!(health.body["checks"]["queue"]["depth"], 4, "{health:?}");

    // A worker drains the queue: the logs arrive and the project may send again.
    let d = d.restart_with(&[("LEDGER__QUEUE__SHARDS", "2")]).await;
    let drained = eventually(Duration::from_secs(20), "the queue drains", || async {
        (d.all_logs(&key, 100).await.len() == 4).then_some(())
    });
    drained.await;
    eventually(Duration::from_secs(10), "the project may send again", || async {
        (d.ingest(&key, two.clone()).await.status == 202).then_some(())
    })
    .await;
}
