#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Live tail (`GET /v1/logs/tail`, gRPC `QueryService.Tail`) on both backends: every committed log exactly
//! once, in order, across instances; resuming with `Last-Event-ID`; a stalled subscriber told what it lost
//! while the daemon's memory stays bounded; the subscriber cap; heartbeats; curl as the README shows.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind};

/// One Server-Sent Event: `event:` (default `message`), `id:`, `data:`, or a comment.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: String,
    comment: bool,
}

/// A tail subscription read as a client would: the response body parsed into events.
struct Tail {
    response: reqwest::Response,
    buffer: String,
}

impl Tail {
    async fn open(d: &Daemon, key: &str, query: &str, last_event_id: Option<&str>) -> Tail {
        let mut request = d.client().get(d.url(&format!("/v1/logs/tail{query}"))).header("x-api-key", key);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Tail { response, buffer: String::new() }
    }

    /// The next event (comments included), or `None` if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse { event: "message".into(), id: None, data: String::new(), comment: false };
                for line in block.lines() {
                    if let Some(text) = line.strip_prefix(':') {
                        event.comment = true;
                        event.data = text.trim().to_owned();
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                        match field {
                            "event" => event.event = value,
                            "id" => event.id = Some(value),
                            "data" => event.data.push_str(&value),
                            _ => {}
                        }
                    }
                }
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?.unwrap()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `n` logs (skipping heartbeats; a `dropped` event fails the test).
    async fn logs(&mut self, n: usize) -> Vec<Value> {
        let mut logs = Vec::with_capacity(n);
        while logs.len() < n {
            let event = self.next(Duration::from_secs(20)).await.unwrap_or_else(|| {
                panic!("only {} of {n} logs arrived", logs.len());
            });
            match event.event.as_str() {
                _ if event.comment => {}
                "message" => {
                    let log: Value = serde_json::from_str(&event.data).unwrap();
                    assert_eq!(event.id.as_deref(), log["id"].as_str(), "the event id is the log id");
                    logs.push(log);
                }
                other => panic!("unexpected event {other}: {}", event.data),
            }
        }
        logs
    }

    /// Asserts nothing but heartbeats comes within `wait`.
    async fn quiet(&mut self, wait: Duration) {
        while let Some(event) = self.next(wait).await {
            assert!(event.comment, "expected nothing more, got {event:?}");
        }
    }
}

fn batch(tag: &str, from: usize, n: usize, level: &str) -> Value {
    let logs: Vec<Value> =
        (from..from + n).map(|i| json!({"message": format!("{tag} {i}"), "level": level, "service": "api"})).collect();
    json!({ "logs": logs })
}

fn ids(reply: &support::Reply) -> Vec<String> {
    reply.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// Every log sent through `sender` reaches a subscriber of `receiver` exactly once, each request's logs in
/// their order, and only those matching the filter.
async fn every_log_once_in_order(receiver: &Daemon, sender: &Daemon, key: &str) {
    let mut tail = Tail::open(receiver, key, "?service=api&min_level=INFO", None).await;
    let mut sent: Vec<Vec<String>> = Vec::new();
    for round in 0..6 {
        let r = sender.ingest(key, batch("tailed", round * 50, 50, "INFO")).await;
        assert_eq!(r.status, 202, "{r:?}");
        sent.push(ids(&r));
        // Filtered out: another service, a lower level.
        let noise = json!({"logs": [{"message": "other", "service": "web"}, {"message": "dbg", "service": "api", "level": "DEBUG"}]});
        assert_eq!(sender.ingest(key, noise).await.status, 202);
    }
    let received = tail.logs(300).await;
    let got: Vec<String> = received.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 300, "no log twice");
    for request in &sent {
        let positions: Vec<usize> = request.iter().map(|id| got.iter().position(|g| g == id).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "a request's logs arrive in its order");
    }
    assert!(received.iter().all(|l| l["service"] == "api" && l["level"] == "INFO"));
    tail.quiet(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn every_log_once_in_order_embedded() {
    let d = Daemon::start(Kind::Embedded).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    every_log_once_in_order(&d, &d, &key).await;
}

#[tokio::test]
async fn every_log_once_in_order_across_instances() {
    let a = Daemon::start(Kind::Shared).await;
    let b = a.sibling().await;
    let (_, _, key) = a.tenant("ada@example.com").await;
    every_log_once_in_order(&a, &b, &key).await;
}

/// A reconnect with `Last-Event-ID` gets every log after it, none twice, then the live ones.
async fn resume_misses_nothing(d: &Daemon, other: &Daemon) {
    let (_, _, key) = d.tenant("grace@example.com").await;
    let mut tail = Tail::open(d, &key, "", None).await;
    let first = ids(&d.ingest(&key, batch("before", 0, 20, "INFO")).await);
    let seen = tail.logs(5).await;
    let last = seen.last().unwrap()["id"].as_str().unwrap().to_owned();
    drop(tail);
    // Sent while nobody is connected, through the other instance.
    let second = ids(&other.ingest(&key, batch("while away", 0, 30, "WARNING")).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut resumed = Tail::open(other, &key, "", Some(&last)).await;
    let rest = resumed.logs(45).await;
    let got: Vec<&str> = rest.iter().map(|l| l["id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = first[5..].iter().chain(&second).map(String::as_str).collect();
    assert_eq!(got, expected, "the 15 not seen, then the 30 sent while away, in order");
    let live = ids(&d.ingest(&key, batch("after", 0, 3, "ERROR")).await);
    let more = resumed.logs(3).await;
    assert_eq!(more.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>(), live);

    // `after` as a parameter does the same, and a resume point the tail no longer keeps is said so.
    let mut by_param = Tail::open(d, &key, &format!("?after={}&level=ERROR", live[0]), None).await;
    assert_eq!(by_param.logs(2).await[1]["id"], live[2]);
    let mut gone = Tail::open(d, &key, &format!("?after={}", uuid::Uuid::now_v7()), None).await;
    let event = gone.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event.event, "dropped");
    assert_eq!(serde_json::from_str::<Value>(&event.data).unwrap()["dropped"], Value::Null);
}

#[tokio::test]
async fn resume_misses_nothing_embedded() {
    let d = Daemon::start(Kind::Embedded).await;
    resume_misses_nothing(&d, &d).await;
}

#[tokio::test]
async fn resume_misses_nothing_across_instances() {
    let a = Daemon::start(Kind::Shared).await;
    let b = a.sibling().await;
    resume_misses_nothing(&a, &b).await;
}

/// A subscriber that reads nothing while thousands of logs arrive is told what it lost, and the daemon's
/// memory does not grow with what it did not read.
async fn stalled_subscriber_gets_dropped(kind: Kind) {
    let extra = [("LEDGER__TAIL__BUFFER_ENTRIES", "4"), ("LEDGER__TAIL__KEEP_LOGS", "2000")];
    let d = Daemon::start_with(Fresh::new(kind), &extra).await;
    let (_, _, key) = d.tenant("stall@example.com").await;
    let mut stalled = Tail::open(&d, &key, "", None).await;
    let big = "x".repeat(2000);
    let rounds = 90;
    let send = |from: usize, n: usize| {
        let (d, key, big) = (&d, &key, &big);
        async move {
            for round in from..from + n {
                let logs: Vec<Value> = (0..500).map(|i| json!({"message": format!("{round} {i} {big}")})).collect();
                assert_eq!(d.ingest(key, json!({ "logs": logs })).await.status, 202);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    // 15,000 logs of 2 KB (30 MB of events) that nobody reads, then 30,000 more (60 MB): if what the
    // subscriber does not read were kept, the second part would add its 60 MB again. (RSS moves by ±15 MB
    // with the allocator's caches, hence the margin.)
    let start = d.rss_bytes();
    send(0, 30).await;
    let part = d.rss_bytes();
    send(30, 60).await;
    let end = d.rss_bytes();
    println!(
        "RSS at start {} MB, after 30 MB unread {} MB, after 90 MB unread {} MB",
        start >> 20,
        part >> 20,
        end >> 20
    );
    assert!(end < part + (30 << 20), "memory grew by {} MB for 60 MB more unread", (end.saturating_sub(part)) >> 20);
    let sent = rounds * 500;
    let (mut delivered, mut dropped) = (0u64, 0u64);
    while let Some(event) = stalled.next(Duration::from_secs(3)).await {
        match event.event.as_str() {
            _ if event.comment => {}
            "message" => delivered += 1,
            "dropped" => dropped += serde_json::from_str::<Value>(&event.data).unwrap()["dropped"].as_u64().unwrap(),
            other => panic!("unexpected {other}"),
        }
        if delivered + dropped == sent as u64 {
            break;
        }
    }
    println!("delivered {delivered}, dropped {dropped}");
    assert!(dropped > 0, "a stalled subscriber is told it lost logs");
    assert_eq!(delivered + dropped, sent as u64, "every log is delivered or counted as dropped");
    let text = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("ledger_tail_logs_total{outcome=\"dropped\"}"), "{text}");
}

#[tokio::test]
async fn stalled_subscriber_gets_dropped_embedded() {
    stalled_subscriber_gets_dropped(Kind::Embedded).await;
}

#[tokio::test]
async fn stalled_subscriber_gets_dropped_shared() {
    stalled_subscriber_gets_dropped(Kind::Shared).await;
}

#[tokio::test]
async fn subscribers_are_capped_heartbeats_come_and_bad_filters_are_refused() {
    let extra = [("LEDGER__TAIL__MAX_SUBSCRIBERS_PER_PROJECT", "1"), ("LEDGER__TAIL__HEARTBEAT_SECS", "1")];
    let d = Daemon::start_with(Fresh::new(Kind::Embedded), &extra).await;
    let (token, project, key) = d.tenant("cap@example.com").await;
    let mut first = Tail::open(&d, &key, "", None).await;
    let second = d.get("/v1/logs/tail", Some(&key)).await;
    second.assert_error(429, "rate_limited");
    assert!(second.header("retry-after").is_some());
    let beat = first.next(Duration::from_secs(5)).await.unwrap();
    assert!(beat.comment, "{beat:?}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A session plus project_id works too, once the first subscriber has gone.
    let mut session =
        d.client().get(d.url(&format!("/v1/logs/tail?project_id={project}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(session.status(), 200);
    assert!(session.chunk().await.unwrap().is_some());
    drop(session);

    for (query, param) in
        [("?limit=5", "limit"), ("?from=2026-01-01T00:00:00Z", "from"), ("?after=x", "after"), ("?level=LOUD", "level")]
    {
        let r = d.get(&format!("/v1/logs/tail{query}"), Some(&key)).await;
        r.assert_error(400, "bad_request");
        assert!(r.body["error"]["message"].as_str().unwrap().contains(param), "{r:?}");
    }
    let (_, ingest_only) = d.key(&token, &project, &["ingest"]).await;
    d.get("/v1/logs/tail", Some(&ingest_only)).await.assert_error(403, "insufficient_scope");
    d.get("/v1/logs/tail", Some("ledger_nope")).await.assert_error(401, "unauthorized");
}

/// Four subscribers that read nothing while 2,000 logs of 48 KB (96 MB) are committed: they share what
/// they wait for, each holds at most `tail.max_buffer_bytes` of it, and the feed keeps at most
/// `tail.keep_bytes`, so the daemon's memory grows by far less than one copy of the logs (it grew by a copy
/// per subscriber and one more for the feed).
async fn stalled_subscribers_of_large_logs_hold_bounded_memory(kind: Kind) {
    let d = Daemon::start(kind).await;
    let (_, _, key) = support::unlimited_tenant(&d).await;
    let (message, attribute) = ("m".repeat(30_000), "a".repeat(15_000));
    let send = |part: usize| {
        let (d, key, message, attribute) = (&d, &key, &message, &attribute);
        async move {
            for round in 0..20 {
                let logs: Vec<Value> = (0..100)
                    .map(|i| json!({"message": format!("{part} {round} {i} {message}"), "attributes": {"big": attribute}}))
                    .collect();
                assert_eq!(d.ingest(key, json!({ "logs": logs })).await.status, 202);
            }
            // Every log committed (and so handed to the subscribers) before memory is read.
            support::eventually(Duration::from_secs(60), "the part's logs stored", || async {
                let page = d.get(&format!("/v1/logs?limit=1&q={part}%2019%2099"), Some(key)).await;
                (page.body["logs"].as_array().map_or(0, Vec::len) == 1).then_some(())
            })
            .await;
        }
    };
    // The same load first without subscribers: what ingestion itself leaves in the allocator.
    send(1).await;
    let before = d.rss_bytes();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(Tail::open(&d, &key, "", None).await);
    }
    send(2).await;
    let grown = d.rss_bytes().saturating_sub(before);
    println!("RSS growth with four stalled subscribers over 96 MB of logs: {} MB", grown >> 20);
    assert!(grown < 150 << 20, "memory grew by {} MB", grown >> 20);
    // Each is told what it lost.
    let mut first = stalled.remove(0);
    let mut dropped = 0;
    while let Some(event) = first.next(Duration::from_secs(3)).await {
        if event.event == "dropped" {
            dropped += serde_json::from_str::<Value>(&event.data).unwrap()["dropped"].as_u64().unwrap();
        }
    }
    assert!(dropped > 0, "a stalled subscriber is told it lost logs");
}

on_both_kinds!(stalled_subscribers_of_large_logs_hold_bounded_memory);

/// Subscribers are capped per account (all its projects together) and per instance, not only per project.
#[tokio::test]
async fn subscribers_are_capped_per_account_and_per_instance() {
    let extra = [("LEDGER__TAIL__MAX_SUBSCRIBERS_PER_ACCOUNT", "2"), ("LEDGER__TAIL__MAX_SUBSCRIBERS", "3")];
    let d = Daemon::start_with(Fresh::new(Kind::Embedded), &extra).await;
    let (token, _, key) = d.tenant("many@example.com").await;
    let other_project = d.project(&token, "second").await;
    let (_, other_key) = d.key(&token, &other_project, &["query"]).await;
    let _one = Tail::open(&d, &key, "", None).await;
    let _two = Tail::open(&d, &other_key, "", None).await;
    d.get("/v1/logs/tail", Some(&other_key)).await.assert_error(429, "rate_limited");
    // Another account still gets one, up to the instance's cap.
    let (_, _, theirs) = d.tenant("other@example.com").await;
    let _three = Tail::open(&d, &theirs, "", None).await;
    let (_, _, third) = d.tenant("third@example.com").await;
    d.get("/v1/logs/tail", Some(&third)).await.assert_error(429, "rate_limited");
}

/// The README's curl line, run as written.
#[tokio::test]
async fn curl_tails_as_documented() {
    let d = Daemon::start(Kind::Embedded).await;
    let (_, _, key) = d.tenant("curl@example.com").await;
    let url = d.url("/v1/logs/tail?min_level=WARNING");
    let curl = tokio::process::Command::new("curl")
        .args(["-sN", "--max-time", "4", "-H", &format!("Authorization: Bearer {key}"), &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent =
        ids(&d.ingest(&key, json!({"logs": [{"message": "disk full", "level": "error"}, {"message": "fine"}]})).await);
    let output = curl.wait_with_output().await.unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains(&format!("id: {}\n", sent[0])), "{text}");
    assert!(text.contains("data: {") && text.contains("\"message\":\"disk full\""), "{text}");
    assert!(!text.contains("\"fine\""), "{text}");
}

#[tokio::test]
async fn grpc_tail() {
    use ledger_proto::v1 as pb;
    use ledger_proto::v1::query_service_client::QueryServiceClient;
    let d = Daemon::start(Kind::Shared).await;
    let (_, _, key) = d.tenant("grpc@example.com").await;
    let channel = tonic::transport::Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    let mut client = QueryServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::TailRequest { level: vec!["ERROR".into()], ..Default::default() });
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut stream = client.tail(request).await.unwrap().into_inner();
    let sent = ids(&d
        .ingest(
            &key,
            json!({"logs": [{"message": "a", "level": "error"}, {"message": "b"}, {"message": "c", "level": "error"}]}),
        )
        .await);
    let mut got = Vec::new();
    while got.len() < 2 {
        let record = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
        got.push(record.id);
    }
    assert_eq!(got, [sent[0].clone(), sent[2].clone()]);
    let mut resume = tonic::Request::new(pb::TailRequest { after: Some(sent[0].clone()), ..Default::default() });
    resume.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut resumed = client.tail(resume).await.unwrap().into_inner();
    let next = tokio::time::timeout(Duration::from_secs(10), resumed.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.id, sent[1]);
}
