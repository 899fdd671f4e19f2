#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Hardening, tried as an attacker and as an unlucky operator would: what an unauthenticated or hostile
//! client can make the daemon spend, login guessing, slow clients, operations endpoints, data files, bounded
//! errors, poisoned queue entries, and requests whose clients go away.

mod support;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ledger_proto::v1 as pb;
use ledger_proto::v1::ingest_service_client::IngestServiceClient;
use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_kinds!(
    unauthenticated_and_oversized_bodies_cost_almost_nothing,
    concurrent_wrong_logins_let_at_most_the_limit_through,
    register_and_login_are_limited_per_ip_and_bcrypt_is_bounded,
    slow_clients_are_cut_off,
    a_connection_cap_holds_new_connections_back,
    the_body_budget_refuses_with_503,
    a_client_that_disconnects_mid_request_leaves_usage_and_quota_consistent,
    error_bodies_are_bounded,
    grpc_bad_timestamps_and_deep_attributes_are_invalid_argument,
    messagepack_with_trailing_bytes_is_400,
    a_client_fingerprint_survives_with_the_fingerprint_stage_off,
    operations_endpoints_need_the_operator_token_when_set,
    the_last_usage_is_flushed_after_the_fronts_finish,
    nul_characters_are_refused_before_the_store,
    concurrent_project_deletions_are_204_or_404,
);

/// A key of the right format (its checksum holds) that no project has.
fn unknown_key() -> String {
    ledger_stages::auth::ApiKey::generate().expose_secret().to_owned()
}

/// 10 MiB of MessagePack `nil`s under `logs`, behind an array header claiming every one of them.
fn msgpack_nils() -> Vec<u8> {
    let n = 10 * 1024 * 1024 - 16;
    let mut body = vec![0x81, 0xa4, b'l', b'o', b'g', b's', 0xdd];
    body.extend_from_slice(&u32::try_from(n).unwrap().to_be_bytes());
    body.resize(body.len() + n, 0xc0);
    body
}

/// A gRPC `IngestRequest` of 10 MiB of empty `LogRecord`s, framed for the wire: each record two bytes
/// (field 1, length 0), five million of them. Built as bytes: as structs they would take gigabytes here.
fn grpc_empties() -> Vec<u8> {
    let message = [0x0a_u8, 0x00].repeat(5 * 1024 * 1024 - 64);
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// Sends a framed unary `Ingest` call over HTTP/2; the `grpc-status` it ends with (refusals come as
/// trailers-only answers, in the headers), or `None` when the connection was cut while sending.
async fn grpc_raw_ingest(d: &Daemon, key: Option<&str>, frame: Vec<u8>) -> Option<String> {
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut request = client
        .post(format!("{}/ledger.v1.IngestService/Ingest", d.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.ok()?;
    let status = response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    let message = response.headers().get("grpc-message").map(|v| v.to_str().unwrap().to_owned());
    println!("gRPC answer: status {status:?}, message {message:?}");
    status
}

async fn post_msgpack(d: &Daemon, key: &str, body: Vec<u8>) -> Result<support::Reply, reqwest::Error> {
    let response = d
        .client()
        .post(d.url("/v1/logs"))
        .header("x-api-key", key)
        .header("content-type", "application/msgpack")
        .body(body)
        .send()
        .await?;
    Ok(Daemon::reply(response).await)
}

async fn grpc_ingest(d: &Daemon, key: Option<&str>, request: pb::IngestRequest) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    let mut client = IngestServiceClient::new(channel);
    let mut request = tonic::Request::new(request);
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    client.ingest(request).await.expect_err("refused")
}

async fn unauthenticated_and_oversized_bodies_cost_almost_nothing(kind: Kind) {
    let d = Daemon::start(kind).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    let (nils, empties) = (msgpack_nils(), grpc_empties());
    let before = d.rss_bytes();
    // Four at once of each: an unknown key over REST, no key at all over gRPC.
    let calls = (0..4).map(|_| {
        let (nils, empties, bogus) = (nils.clone(), empties.clone(), unknown_key());
        let d = &d;
        async move {
            match post_msgpack(d, &bogus, nils).await {
                Ok(reply) => reply.assert_error(401, "unauthorized"),
                // The daemon may answer and close before the client has sent everything: also refused.
                Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
            }
            // 16 = UNAUTHENTICATED; the stream may also be reset while the client still sends.
            let status = grpc_raw_ingest(d, None, empties).await;
            assert!(status.is_none() || status.as_deref() == Some("16"), "{status:?}");
        }
    });
    futures::future::join_all(calls).await;
    let small = pb::IngestRequest { logs: vec![pb::LogRecord { message: "m".into(), ..Default::default() }] };
    assert_eq!(grpc_ingest(&d, None, small).await.code(), tonic::Code::Unauthenticated);
    let grown = d.rss_bytes().saturating_sub(before);
    println!("RSS growth after 8 unauthenticated 10 MiB requests: {} MB", grown / 1_000_000);
    assert!(grown < 50 * 1024 * 1024, "RSS grew by {grown} bytes");
    // With a good key, a batch far over the limit is refused one log past it, not decoded whole.
    let before = d.rss_bytes();
    for _ in 0..2 {
        post_msgpack(&d, &key, nils.clone()).await.unwrap().assert_error(413, "batch_too_large");
        // 3 = INVALID_ARGUMENT.
        assert_eq!(grpc_raw_ingest(&d, Some(&key), empties.clone()).await.as_deref(), Some("3"));
    }
    let grown = d.rss_bytes().saturating_sub(before);
    println!("RSS growth after 4 authenticated 10 MiB batches of millions of logs: {} MB", grown / 1_000_000);
    assert!(grown < 100 * 1024 * 1024, "RSS grew by {grown} bytes");
    // The daemon still serves.
    assert_eq!(d.ingest(&key, json!({"message": "still here"})).await.status, 202);
}

async fn concurrent_wrong_logins_let_at_most_the_limit_through(kind: Kind) {
    let d = Daemon::start(kind).await;
    d.signup("owner@example.com").await;
    let wrong = |i: usize| json!({"email": "owner@example.com", "password": format!("wrong password {i}")});
    let answers = futures::future::join_all((0..100).map(|i| d.post("/v1/login", None, wrong(i)))).await;
    let checked = answers.iter().filter(|r| r.status == 401).count();
    let limited = answers.iter().filter(|r| r.status == 429).count();
    println!("100 concurrent wrong logins: {checked} checked (401), {limited} refused (429), rest 503");
    assert!(checked <= 10, "{checked} guesses were checked against a limit of 10");
    assert!(answers.iter().all(|r| [401, 429, 503].contains(&r.status)), "{answers:?}");
    // The owner, from this address, is limited too; from another address the right password works.
    let right = json!({"email": "owner@example.com", "password": "correct horse"});
    d.post("/v1/login", None, right.clone()).await.assert_error(429, "too_many_login_attempts");
    let elsewhere = reqwest::Client::builder().local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).build().unwrap();
    let response = elsewhere.post(d.url("/v1/login")).json(&right).send().await.unwrap();
    assert_eq!(response.status(), 200, "the owner from another IP is not locked out");
}

async fn register_and_login_are_limited_per_ip_and_bcrypt_is_bounded(kind: Kind) {
    let extra = [
        ("LEDGER__AUTH__ATTEMPTS_PER_IP_PER_MINUTE", "5"),
        ("LEDGER__AUTH__BCRYPT_CONCURRENCY", "1"),
        ("LEDGER__AUTH__BCRYPT_QUEUE_MS", "1"),
        ("LEDGER__AUTH__BCRYPT_COST", "10"),
    ];
    let d = Daemon::start_with(Fresh::new(kind), &extra).await;
    let register = |i: usize| json!({"email": format!("user{i}@example.com"), "password": "correct horse battery"});
    let answers = futures::future::join_all((0..8).map(|i| d.post("/v1/register", None, register(i)))).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert!(statuses.iter().filter(|s| **s == 201).count() <= 5, "{statuses:?}");
    let busy: Vec<_> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(!busy.is_empty(), "one bcrypt at a time: others are refused, not queued forever: {statuses:?}");
    for r in busy {
        r.assert_error(503, "unavailable");
        assert!(r.header("retry-after").is_some());
    }
    let limited: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "past 5 a minute from one IP: {statuses:?}");
    limited[0].assert_error(429, "rate_limited");
    d.post("/v1/login", None, register(0)).await.assert_error(429, "too_many_login_attempts");
}

/// Reads until the peer closes (or 15 s pass): what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the daemon kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

async fn slow_clients_are_cut_off(kind: Kind) {
    let extra = [("LEDGER__SERVER__HEADER_READ_TIMEOUT_SECS", "1"), ("LEDGER__SERVER__BODY_READ_TIMEOUT_SECS", "1")];
    let d = Daemon::start_with(Fresh::new(kind), &extra).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    // A head that never ends.
    let mut slowloris = tokio::net::TcpStream::connect(d.http_addr()).await.unwrap();
    slowloris.write_all(b"POST /v1/logs HTTP/1.1\r\nHost: ledger\r\nX-Slow: ").await.unwrap();
    read_to_close(&mut slowloris).await;
    // An idle keep-alive connection.
    let mut idle = tokio::net::TcpStream::connect(d.http_addr()).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: ledger\r\n\r\n").await.unwrap();
    assert!(read_to_close(&mut idle).await.starts_with("HTTP/1.1 200"));
    // A body that trickles: 408.
    let mut trickle = tokio::net::TcpStream::connect(d.http_addr()).await.unwrap();
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: ledger\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"message\": "
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut trickle).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // A gRPC connection that never sends its preface.
    let mut silent = tokio::net::TcpStream::connect(d.grpc_addr()).await.unwrap();
    read_to_close(&mut silent).await;
    // Nothing of the trickled request was stored, and the daemon serves on.
    assert_eq!(d.ingest(&key, json!({"message": "after"})).await.status, 202);
}

async fn a_connection_cap_holds_new_connections_back(kind: Kind) {
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__SERVER__MAX_CONNECTIONS", "1")]).await;
    // The one slot, held by a connection that says nothing.
    let held = tokio::net::TcpStream::connect(d.http_addr()).await.unwrap();
    let waiting = tokio::spawn({
        let url = d.url("/health");
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a second connection was served while the only slot was taken");
    drop(held);
    assert_eq!(waiting.await.unwrap().unwrap(), 200, "served once the slot is free");
}

async fn the_body_budget_refuses_with_503(kind: Kind) {
    let extra = [
        ("LEDGER__SERVER__MAX_BODY_BYTES", "1048576"),
        ("LEDGER__SERVER__MAX_INFLIGHT_BODY_BYTES", "1048576"),
        ("LEDGER__SERVER__BODY_READ_TIMEOUT_SECS", "30"),
    ];
    let d = Daemon::start_with(Fresh::new(kind), &extra).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    // A request sending all but the last byte of a whole budget's worth of body, then holding it (a body
    // holds what has arrived of it). If a probe took a slice of the budget first, the holder itself was
    // refused: open another.
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: ledger\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: 1048576\r\n\r\n{{{}",
        " ".repeat(1_048_574)
    );
    let holder = std::sync::Mutex::new(None::<tokio::net::TcpStream>);
    let refused = eventually(Duration::from_secs(10), "the budget is taken", || async {
        let current = holder.lock().unwrap().take();
        let mut stream = match current {
            Some(stream) if stream.try_read(&mut [0u8; 1]).is_err() => stream,
            _ => {
                let mut stream = tokio::net::TcpStream::connect(d.http_addr()).await.unwrap();
                stream.write_all(head.as_bytes()).await.unwrap();
                stream
            }
        };
        let r = d.ingest(&key, json!({"message": "m"})).await;
        stream.flush().await.unwrap();
        *holder.lock().unwrap() = Some(stream);
        (r.status == 503).then_some(r)
    })
    .await;
    refused.assert_error(503, "unavailable");
    assert!(refused.header("retry-after").is_some());
    drop(holder.lock().unwrap().take());
    eventually(Duration::from_secs(10), "the budget is free again", || async {
        (d.ingest(&key, json!({"message": "m"})).await.status == 202).then_some(())
    })
    .await;
}

/// Today's usage of the project, as `GET /v1/usage` gives it.
async fn usage_today(d: &Daemon, token: &str, project: &str) -> Value {
    let today = chrono::Utc::now().date_naive();
    let r = d.get(&format!("/v1/usage?project_id={project}&from={today}&to={today}"), Some(token)).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["days"].get(0).cloned().unwrap_or(Value::Null)
}

async fn a_client_that_disconnects_mid_request_leaves_usage_and_quota_consistent(kind: Kind) {
    let d = Daemon::start(kind).await;
    let (token, project, key) = d.tenant("ada@example.com").await;
    d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"daily_quota": 2}})).await;
    // Two logs' worth of body, cut off half-way.
    let body = json!({"logs": [{"message": "a"}, {"message": "b"}]}).to_string();
    let mut gone = tokio::net::TcpStream::connect(d.http_addr()).await.unwrap();
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: ledger\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..body.len() / 2]
    );
    gone.write_all(head.as_bytes()).await.unwrap();
    let cancelled = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("ledger_ingest_requests_total{front=\"http\",outcome=\"cancelled\"}"))
            .map(str::to_owned)
    };
    eventually(Duration::from_secs(10), "the request is being read", || async {
        // The daemon admitted the request (its key was checked) before it reads the body.
        let m = d.client().get(d.url("/metrics")).send().await.ok()?.text().await.ok()?;
        m.contains("ledger_ingest_requests_total").then_some(())
    })
    .await;
    drop(gone);
    eventually(Duration::from_secs(10), "the cut-off request is counted as cancelled", || async {
        let m = d.client().get(d.url("/metrics")).send().await.ok()?.text().await.ok()?;
        cancelled(&m).filter(|l| l.ends_with(" 1")).map(|_| ())
    })
    .await;
    // The quota was not touched: the whole day's two logs still fit, and nothing was stored.
    assert_eq!(d.ingest(&key, json!({"logs": [{"message": "c"}, {"message": "d"}]})).await.status, 202);
    d.ingest(&key, json!({"message": "e"})).await.assert_error(429, "quota_exceeded");
    let usage = eventually(Duration::from_secs(10), "usage is flushed", || async {
        let u = usage_today(&d, &token, &project).await;
        (u["accepted"] == 2).then_some(u)
    })
    .await;
    assert_eq!(usage["rejected_quota"], 1, "{usage}");
    let stored = eventually(Duration::from_secs(10), "two logs stored", || async {
        let logs = d.all_logs(&key, 100).await;
        (logs.len() == 2).then_some(logs)
    })
    .await;
    assert!(stored.iter().all(|l| l["message"] == "c" || l["message"] == "d"), "{stored:?}");
}

async fn error_bodies_are_bounded(kind: Kind) {
    let d = Daemon::start(kind).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    // One log with 20,000 unknown fields, each with a long name.
    let mut log = serde_json::Map::new();
    log.insert("message".into(), json!("m"));
    for i in 0..20_000 {
        log.insert(format!("{}{i}", "x".repeat(200)), json!(1));
    }
    let r = d.ingest(&key, json!({"logs": [log]})).await;
    r.assert_error(422, "validation_failed");
    let size = r.body.to_string().len();
    assert!(size < 64 * 1024, "error body of {size} bytes");
    let details = r.body["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 101, "the first 100 problems and a count of the rest");
    assert!(details[100]["reason"].as_str().unwrap().starts_with("19900 more problems"), "{}", details[100]);
    assert!(details[0]["field"].as_str().unwrap().chars().count() <= 65, "{}", details[0]);
}

/// A `Value` nested `depth` structs deep.
fn nested(depth: usize) -> prost_types::Struct {
    use prost_types::value::Kind as V;
    let mut inner = prost_types::Struct::default();
    for _ in 0..depth {
        let value = prost_types::Value { kind: Some(V::StructValue(inner)) };
        inner = prost_types::Struct { fields: [("a".to_owned(), value)].into() };
    }
    inner
}

async fn grpc_bad_timestamps_and_deep_attributes_are_invalid_argument(kind: Kind) {
    let d = Daemon::start(kind).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    let far = pb::LogRecord {
        message: "far".into(),
        timestamp: Some(prost_types::Timestamp { seconds: i64::MAX / 2, nanos: 0 }),
        ..Default::default()
    };
    let status = grpc_ingest(&d, Some(&key), pb::IngestRequest { logs: vec![far] }).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let bad_nanos = pb::LogRecord {
        message: "nanos".into(),
        timestamp: Some(prost_types::Timestamp { seconds: 1, nanos: -5 }),
        ..Default::default()
    };
    let status = grpc_ingest(&d, Some(&key), pb::IngestRequest { logs: vec![bad_nanos] }).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    for depth in [12, 40] {
        let deep = pb::LogRecord { message: "deep".into(), attributes: Some(nested(depth)), ..Default::default() };
        let status = grpc_ingest(&d, Some(&key), pb::IngestRequest { logs: vec![deep] }).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "depth {depth}: {status:?}");
    }
    assert!(d.all_logs(&key, 100).await.is_empty(), "nothing stored");
}

async fn messagepack_with_trailing_bytes_is_400(kind: Kind) {
    let d = Daemon::start(kind).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    let mut body = rmp_serde::to_vec_named(&json!({"message": "m"})).unwrap();
    body.extend_from_slice(&rmp_serde::to_vec_named(&json!({"message": "smuggled"})).unwrap());
    post_msgpack(&d, &key, body).await.unwrap().assert_error(400, "bad_request");
    let json_trailing = d
        .client()
        .post(d.url("/v1/logs"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body(r#"{"message": "m"} {"message": "smuggled"}"#)
        .send()
        .await
        .unwrap();
    Daemon::reply(json_trailing).await.assert_error(400, "bad_request");
    assert!(d.all_logs(&key, 100).await.is_empty(), "nothing stored");
}

async fn a_client_fingerprint_survives_with_the_fingerprint_stage_off(kind: Kind) {
    let stages = "[auth,rate_limit,quota,validate,enrich,queue]";
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__INGEST__STAGES", stages)]).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    let r = d.ingest(&key, json!({"logs": [{"message": "a", "fingerprint": "00000000deadbeef"}, {"message": "b", "fingerprint": "disk full"}]})).await;
    assert_eq!(r.status, 202, "{r:?}");
    let ids: Vec<String> = r.body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
    assert_eq!(d.stored(&key, &ids[0]).await["fingerprint"], "00000000deadbeef");
    let hashed = d.stored(&key, &ids[1]).await["fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(hashed, "0000000000000000", "a client's text is hashed into a key, not dropped");
}

async fn operations_endpoints_need_the_operator_token_when_set(kind: Kind) {
    let token = "operator-token-0123456789";
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__SERVER__OPERATOR_TOKEN", token)]).await;
    assert_eq!(d.get("/health", None).await.status, 200, "/health stays open");
    d.get("/metrics", None).await.assert_error(401, "unauthorized");
    d.get("/health/deep", None).await.assert_error(401, "unauthorized");
    d.get("/metrics", Some("operator-token-wrong")).await.assert_error(401, "unauthorized");
    let metrics = d.client().get(d.url("/metrics")).bearer_auth(token).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("ledger_ingest_logs_total"));
    assert_eq!(d.get("/health/deep", Some(token)).await.status, 200);
    // gRPC reflection, likewise.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_request::MessageRequest};
    let channel = tonic::transport::Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let refused = match client.server_reflection_info(tokio_stream::iter(vec![list()])).await {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.expect_err("refused"),
    };
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut request = tonic::Request::new(tokio_stream::iter(vec![list()]));
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut answers = client.server_reflection_info(request).await.unwrap().into_inner();
    assert!(answers.message().await.unwrap().is_some(), "reflection answers with the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_data_files_are_private_whatever_existed() {
    use std::os::unix::fs::PermissionsExt;
    let fresh = Fresh::new(Kind::Embedded);
    let dir = fresh.dir.path().to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let loose = std::fs::File::create(dir.join("accounts.db")).unwrap();
    loose.set_permissions(std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(loose);
    let mut secret = std::fs::File::create(dir.join("jwt_secret")).unwrap();
    secret.write_all(b"0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
    secret.set_permissions(std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = Daemon::start_with(fresh, &[]).await;
    d.signup("ada@example.com").await;
    let mode = |name: &str| std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(""), 0o700, "data_dir");
    for file in ["accounts.db", "logs.db", "jwt_secret"] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
}

/// Puts an entry on a shard's stream as the enqueue script does.
async fn xadd(d: &Daemon, shard: u32, project: &str, logs: usize, payload: &[u8]) {
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stream = ledger::queue::redis::Keys { prefix: d.fresh().prefix() }.stream(shard);
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("p")
        .arg(project)
        .arg("n")
        .arg(logs)
        .arg("d")
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_queue_entries_are_dead_lettered_and_the_shard_keeps_draining() {
    let d = Daemon::start(Kind::Shared).await;
    let (_, project, key) = d.tenant("ada@example.com").await;
    // An entry no worker can decode, and one whose log PostgreSQL refuses (a NUL in text: only a corrupt
    // entry can hold one, since validation refuses it).
    xadd(&d, 0, &project, 3, b"\x00not messagepack").await;
    let record = ledger_stages::LogRecord {
        fingerprint: 1,
        ..ledger_stages::LogRecord::new(
            project.parse().unwrap(),
            chrono::Utc::now(),
            ledger_stages::Level::Error,
            "nul \0 inside",
        )
    };
    let entry = ledger::queue::redis::Entry { traceparent: None, records: vec![record] };
    let refused = entry.encode().unwrap();
    xadd(&d, 1, &project, 1, &refused).await;
    // Good logs on every shard after them.
    let mut ids = Vec::new();
    for i in 0..8 {
        let r = d.ingest(&key, json!({"message": format!("good {i}")})).await;
        assert_eq!(r.status, 202);
        ids.push(r.body["ids"][0].as_str().unwrap().to_owned());
    }
    for id in &ids {
        eventually(Duration::from_secs(20), "good logs behind a poisoned entry are written", || async {
            let r = d.get(&format!("/v1/logs/{id}"), Some(&key)).await;
            (r.status == 200).then_some(())
        })
        .await;
    }
    eventually(Duration::from_secs(20), "both entries dead-lettered and counted", || async {
        let undecodable = d.metric("ledger_dead_letter_logs_total", "undecodable").await.unwrap_or(0.0);
        let refused = d.metric("ledger_dead_letter_logs_total", "refused").await.unwrap_or(0.0);
        (undecodable == 3.0 && refused == 1.0).then_some(())
    })
    .await;
    let (ok, out, err) = d.ledger(&["dead-letter", "list", "--json"]);
    assert!(ok, "{err}");
    let letters: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 2, "{out}");
    let reasons: Vec<&str> = letters.iter().map(|l| l["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"undecodable") && reasons.contains(&"refused"), "{reasons:?}");
    assert!(letters.iter().all(|l| l["project_id"] == project.as_str()), "{out}");
    let (ok, table, _) = d.ledger(&["dead-letter", "list"]);
    assert!(ok && table.contains("undecodable") && table.contains("refused"), "{table}");
    // Discard the undecodable one; replay the refused one, which PostgreSQL refuses again and so comes back.
    let id_of = |reason: &str| letters.iter().find(|l| l["reason"] == reason).unwrap()["id"].clone();
    let (ok, out, err) = d.ledger(&["dead-letter", "discard", &id_of("undecodable").to_string()]);
    assert!(ok && out.contains("1 dead letter(s) discarded"), "{out}{err}");
    let (ok, out, err) = d.ledger(&["dead-letter", "replay", &id_of("refused").to_string()]);
    assert!(ok && out.contains("1 dead letter(s) put back"), "{out}{err}");
    let back = eventually(Duration::from_secs(20), "the replayed entry is refused again", || async {
        let (_, out, _) = d.ledger(&["dead-letter", "list", "--json"]);
        let letters: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (letters.len() == 1 && letters[0]["id"] != id_of("refused")).then_some(letters)
    })
    .await;
    assert_eq!(back[0]["reason"], "refused");
    let (ok, _, err) = d.ledger(&["dead-letter", "discard", "999999"]);
    assert!(!ok && err.contains("no dead letter 999999"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_a_shared_backend_matter() {
    let d = Daemon::start(Kind::Embedded).await;
    let (ok, _, err) = d.ledger(&["dead-letter", "list"]);
    assert!(!ok && err.contains("embedded backend has no dead letters"), "{err}");
}

/// Usage counted in the last moments before a SIGTERM is written by the final flush, after the fronts.
async fn the_last_usage_is_flushed_after_the_fronts_finish(kind: Kind) {
    let mut d = Daemon::start(kind).await;
    let (token, project, key) = d.tenant("ada@example.com").await;
    for i in 0..5 {
        assert_eq!(d.ingest(&key, json!({"logs": [{"message": format!("a{i}")}, {"message": "b"}]})).await.status, 202);
    }
    // No second passes for the periodic flush: the exit's flush must carry these.
    assert!(d.terminate().success());
    let d = d.restart().await;
    let usage = usage_today(&d, &token, &project).await;
    assert_eq!(usage["accepted"], 10, "{usage}");
}

/// Neither database stores or compares text holding a NUL: every way one can come in is refused up front
/// (found by schemathesis: a login whose e-mail held one was a 500 on PostgreSQL).
async fn nul_characters_are_refused_before_the_store(kind: Kind) {
    let d = Daemon::start(kind).await;
    let (token, _, key) = d.tenant("ada@example.com").await;
    let login = d.post("/v1/login", None, json!({"email": "a\u{0}b@example.com", "password": "correct horse"})).await;
    login.assert_error(422, "validation_failed");
    assert_eq!(login.body["error"]["details"][0]["field"], "email");
    let project = d.post("/v1/projects", Some(&token), json!({"name": "nul\u{0}name"})).await;
    project.assert_error(422, "validation_failed");
    d.get("/v1/logs?q=a%00b", Some(&key)).await.assert_error(400, "bad_request");
    d.get("/v1/logs?service=a%00b", Some(&key)).await.assert_error(400, "bad_request");
}

/// Deleting a project while other writes go on: one 204, the rest 404, never a 500 (found by schemathesis: on
/// SQLite a transaction that read before it wrote failed when another connection wrote in between).
async fn concurrent_project_deletions_are_204_or_404(kind: Kind) {
    let d = Daemon::start(kind).await;
    let token = d.signup("ada@example.com").await;
    for round in 0..5 {
        let project = d.project(&token, &format!("p{round}")).await;
        d.key(&token, &project, &["ingest"]).await;
        let path = format!("/v1/projects/{project}");
        let deletes = (0..8).map(|_| d.delete(&path, Some(&token)));
        let creates = (0..4).map(|i| d.post("/v1/projects", Some(&token), json!({"name": format!("q{round}-{i}")})));
        let (deleted, created) = tokio::join!(futures::future::join_all(deletes), futures::future::join_all(creates));
        let statuses: Vec<u16> = deleted.iter().map(|r| r.status).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 204).count(), 1, "{statuses:?}");
        assert!(statuses.iter().all(|s| [204, 404].contains(s)), "{statuses:?}");
        assert!(created.iter().all(|r| r.status == 201), "{created:?}");
    }
}
