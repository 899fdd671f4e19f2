#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Hardening, round two: no client, key or tenant can take the daemon from everyone else. Each test plays
//! the attack at the size that took the daemon before, and asserts what another client sees meanwhile (an
//! answer within a second) or what the daemon spent (RSS growth).

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

on_both_kinds!(
    silent_connections_from_one_address_leave_the_listeners_to_others,
    an_idle_http2_connection_is_closed,
    a_syslog_connection_with_a_bad_first_key_is_closed_before_its_batch,
    compatibility_fronts_refuse_shared_data_before_copying_it,
    slow_bodies_of_one_tenant_leave_the_budget_to_others,
    grpc_queries_are_refused_before_their_message_is_read,
    owners_cannot_raise_their_limits_past_the_operators_ceilings,
    strangers_guessing_from_many_addresses_do_not_lock_the_owner_out,
    alert_targets_that_reach_private_addresses_are_refused,
    heavy_stage_rules_of_some_tenants_leave_the_others_served,
);

/// The attacks here load the machine and some assert another client's answer within a second: one at a
/// time, so that no test's attack is another's noise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Another client on this machine: requests from 127.0.0.2.
fn elsewhere() -> reqwest::Client {
    from_address(2)
}

/// A client sending from 127.0.0.`n`.
fn from_address(n: u8) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))).build().unwrap()
}

/// `n` connections to `addr`, each sending `first` (maybe nothing) and then going quiet.
async fn quiet_connections(addr: &str, n: usize, first: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await else {
            continue;
        };
        let _ = stream.write_all(first).await;
        held.push(stream);
    }
    held
}

/// Whether the daemon closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An HTTP/2 GOAWAY or SETTINGS frame: read on until the close.
            Ok(Ok(_)) => {}
        }
    }
}

async fn silent_connections_from_one_address_leave_the_listeners_to_others(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let extra = [("LEDGER__SERVER__HEADER_READ_TIMEOUT_SECS", "3"), ("LEDGER__SERVER__IDLE_TIMEOUT_SECS", "3")];
    let d = Daemon::start_with(Fresh::new(kind), &extra).await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // More than the listener's 1,024 slots from one address, on both listeners: silent ones, and ones that
    // send the HTTP/2 preface and nothing more.
    let mut held = quiet_connections(&d.http_addr(), 900, b"").await;
    held.extend(quiet_connections(&d.http_addr(), 130, preface).await);
    held.extend(quiet_connections(&d.grpc_addr(), 900, b"").await);
    held.extend(quiet_connections(&d.grpc_addr(), 130, preface).await);
    println!("{} connections held open from 127.0.0.1", held.len());
    // Another client is served at once, on both listeners.
    let health = tokio::time::timeout(Duration::from_secs(1), elsewhere().get(d.url("/health")).send()).await;
    assert_eq!(health.expect("REST answered within 1 s").unwrap().status(), 200);
    let channel = tonic::transport::Endpoint::from_shared(d.grpc.clone())
        .unwrap()
        .local_address(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))))
        .connect_timeout(Duration::from_secs(1));
    let grpc = tokio::time::timeout(Duration::from_secs(1), async {
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel.connect().await.unwrap());
        client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner()
    })
    .await
    .expect("gRPC answered within 1 s");
    assert_eq!(grpc.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    // And what was held is closed by the daemon: past its address's share at once, the rest once the
    // handshake timeout passes.
    let mut open = 0;
    for stream in &mut held {
        if !closed_within(stream, Duration::from_secs(10)).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} of {} quiet connections were still open after 10 s", held.len());
}

async fn an_idle_http2_connection_is_closed(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__SERVER__IDLE_TIMEOUT_SECS", "2")]).await;
    for addr in [d.http_addr(), d.grpc_addr()] {
        // A real HTTP/2 client: it answers the daemon's pings, but sends no request after its first.
        let stream = TcpStream::connect(&addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        let connection = tokio::spawn(connection);
        let request = axum::http::Request::get(format!("http://{addr}/health"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let _ = sender.send_request(request).await;
        let ended = tokio::time::timeout(Duration::from_secs(15), connection).await;
        assert!(ended.is_ok(), "the idle HTTP/2 connection to {addr} was still open after 15 s");
    }
}

/// An RFC 5424 message of `size` bytes carrying `key`.
fn syslog_frame(key: &str, size: usize) -> Vec<u8> {
    let head = format!("<14>1 2026-12-07T10:00:00Z host app - - [ledger@41058 key=\"{key}\"] ");
    let message = format!("{head}{}", "x".repeat(size.saturating_sub(head.len())));
    format!("{} {message}", message.len()).into_bytes()
}

async fn a_syslog_connection_with_a_bad_first_key_is_closed_before_its_batch(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__SYSLOG__TCP_ADDR", "127.0.0.1:0")]).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    let bogus = ledger_stages::auth::ApiKey::generate().expose_secret().to_owned();
    let before = d.rss_bytes();
    // Strangers' connections (as many as one address may open), each with a whole batch's worth of large
    // messages behind its first.
    let frame = syslog_frame(&bogus, 60 * 1024);
    let attacks = (0..16).map(|_| {
        let (addr, frame) = (d.syslog.clone(), frame.clone());
        async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            for _ in 0..500 {
                if stream.write_all(&frame).await.is_err() {
                    break;
                }
            }
            closed_within(&mut stream, Duration::from_secs(5)).await
        }
    });
    let closed = futures::future::join_all(attacks).await;
    let grown = d.rss_bytes().saturating_sub(before);
    println!("RSS growth after 16 keyless syslog connections of 30 MB each: {} MB", grown / 1_000_000);
    assert!(closed.iter().all(|c| *c), "every connection with a bad key is closed");
    assert!(grown < 100 * 1024 * 1024, "RSS grew by {grown} bytes");
    // One client's idle connections fill its own share only: another address still gets in and stores.
    let _idle = quiet_connections(&d.syslog, 300, b"").await;
    let addr: SocketAddr = d.syslog.parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
    let mut other = tokio::time::timeout(Duration::from_secs(1), socket.connect(addr)).await.unwrap().unwrap();
    let marker = "stored from another address";
    let message = format!("<14>1 2026-12-07T10:00:00Z host app - - [ledger@41058 key=\"{key}\"] {marker}\n");
    other.write_all(message.as_bytes()).await.unwrap();
    eventually(Duration::from_secs(15), "the other client's message", || async {
        let logs = d.all_logs(&key, 100).await;
        logs.iter().any(|l| l["message"] == marker).then_some(())
    })
    .await;
}

/// An Elasticsearch bulk request to `path`, as a shipper sends it.
async fn bulk_request(d: &Daemon, key: &str, path: &str, body: String) -> reqwest::Response {
    let request = d.client().post(d.url(path)).header("authorization", format!("ApiKey {key}"));
    request.header("content-type", "application/x-ndjson").body(body).send().await.unwrap()
}

async fn compatibility_fronts_refuse_shared_data_before_copying_it(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let d = Daemon::start(kind).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    let big = "x".repeat(2 * 1024 * 1024);
    let before = d.rss_bytes();
    // Loki: one stream with a 2 MiB label and 1,000 entries.
    let values: Vec<Value> =
        (0..1000).map(|i| json!([format!("{}", 1_764_000_000_000_000_000_i64 + i), "l"])).collect();
    let loki = json!({"streams": [{"stream": {"job": big}, "values": values}]});
    let r = d.client().post(d.url("/loki/api/v1/push")).bearer_auth(&key).json(&loki).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("labels take"), "Loki's answer names the labels");
    // OTLP/HTTP: one resource with a 2 MiB attribute and 1,000 records.
    let records: Vec<Value> = (0..1000).map(|_| json!({"body": {"stringValue": "m"}})).collect();
    let otlp = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "k", "value": {"stringValue": big}}]},
        "scopeLogs": [{"logRecords": records}],
    }]});
    let r = d.client().post(d.url("/otlp/v1/logs")).bearer_auth(&key).json(&otlp).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Elasticsearch: a 16 KiB index name over 1,000 documents, in the path and in the action lines.
    let index = "i".repeat(16 * 1024);
    let bulk = "{\"index\":{}}\n{\"message\":\"m\"}\n".repeat(1000);
    let r = bulk_request(&d, &key, &format!("/{index}/_bulk"), bulk).await;
    assert_eq!(r.status(), 400);
    assert!(r.bytes().await.unwrap().len() < 4096, "the answer does not echo the name");
    let bulk = format!("{{\"index\":{{\"_index\":\"{}\"}}}}\n{{\"message\":\"m\"}}\n", "j".repeat(1024)).repeat(1000);
    let r = bulk_request(&d, &key, "/_bulk", bulk).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["errors"], true);
    assert_eq!(answer["items"][0]["index"]["error"]["type"], "invalid_index_name_exception");
    assert!(answer.to_string().len() < 1000 * 300, "no item echoes the long name");
    let grown = d.rss_bytes().saturating_sub(before);
    println!("RSS growth after the Loki, OTLP and Elasticsearch requests: {} MB", grown / 1_000_000);
    assert!(grown < 200 * 1024 * 1024, "RSS grew by {grown} bytes");
    assert_eq!(d.ingest(&key, json!({"message": "still here"})).await.status, 202);
}

async fn slow_bodies_of_one_tenant_leave_the_budget_to_others(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__SERVER__BODY_READ_TIMEOUT_SECS", "30")]).await;
    let (_, _, attacker) = d.tenant("mallory@example.com").await;
    let (_, _, victim) = d.tenant("ada@example.com").await;
    // 26 requests announcing 10 MiB gzip bodies (more than the 256 MiB budget together), sending one byte.
    let mut slow = Vec::new();
    for _ in 0..26 {
        let mut stream = TcpStream::connect(d.http_addr()).await.unwrap();
        let head = format!(
            "POST /v1/logs HTTP/1.1\r\nHost: ledger\r\nX-API-Key: {attacker}\r\nContent-Type: application/json\r\n\
             Content-Encoding: gzip\r\nContent-Length: 10485760\r\n\r\n\x1f"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(1), d.ingest(&victim, json!({"message": "m"})))
            .await
            .expect("answered within 1 s");
        assert_eq!(r.status, 202, "another tenant's ingestion while slow bodies arrive: {r:?}");
    }
}

async fn grpc_queries_are_refused_before_their_message_is_read(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    use prost::Message;
    let d = Daemon::start(kind).await;
    let (_, _, key) = d.tenant("ada@example.com").await;
    // A 4 MiB QueryLogs request, framed for the wire, sent with an unknown key.
    let message =
        ledger_proto::v1::QueryLogsRequest { q: Some("x".repeat(4 * 1024 * 1024 - 64)), ..Default::default() };
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.encoded_len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message.encode_to_vec());
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let bogus = ledger_stages::auth::ApiKey::generate().expose_secret().to_owned();
    let before = d.rss_bytes();
    let calls = (0..100).map(|_| {
        let request = client
            .post(format!("{}/ledger.v1.QueryService/QueryLogs", d.grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .bearer_auth(&bogus)
            .body(frame.clone());
        async move {
            // 16 = UNAUTHENTICATED; the stream may also be reset while the client still sends.
            if let Ok(response) = request.send().await {
                let status = response.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
                assert_eq!(status.as_deref(), Some("16"));
            }
        }
    });
    futures::future::join_all(calls).await;
    let grown = d.rss_bytes().saturating_sub(before);
    println!("RSS growth after 100 unauthenticated 4 MiB queries: {} MB", grown / 1_000_000);
    assert!(grown < 50 * 1024 * 1024, "RSS grew by {grown} bytes");
    // The right key still reads; every REST answer says its type is not to be sniffed.
    let channel = tonic::transport::Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    let mut query = ledger_proto::v1::query_service_client::QueryServiceClient::new(channel);
    let mut request = tonic::Request::new(ledger_proto::v1::QueryLogsRequest::default());
    request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    assert!(query.query_logs(request).await.is_ok());
    for path in ["/health", "/v1/logs", "/v1/nothing-here"] {
        let r = d.client().get(d.url(path)).header("x-api-key", &key).send().await.unwrap();
        assert_eq!(r.headers().get("x-content-type-options").unwrap(), "nosniff", "{path}");
    }
}

async fn owners_cannot_raise_their_limits_past_the_operators_ceilings(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    // config.toml's ceilings, with fewer projects and rules to keep the test short.
    let extra = [
        ("LEDGER__LIMITS__MAX_RATE_LIMIT_PER_MINUTE", "60000"),
        ("LEDGER__LIMITS__MAX_DAILY_QUOTA", "1000000000"),
        ("LEDGER__LIMITS__MAX_QUEUE_DEPTH", "10000000"),
        ("LEDGER__LIMITS__MAX_PROJECTS_PER_ACCOUNT", "3"),
        ("LEDGER__LIMITS__MAX_ALERT_RULES_PER_PROJECT", "3"),
        ("LEDGER__LIMITS__MAX_QUERY_RULES_PER_PROJECT", "1"),
        ("LEDGER__ALERTS__ALLOW_PRIVATE_TARGETS", "true"),
    ];
    let d = Daemon::start_with(Fresh::new(kind), &extra).await;
    let (token, project, _) = d.tenant("ada@example.com").await;
    let path = format!("/v1/projects/{project}");
    for (setting, value) in [
        ("rate_limit_per_minute", json!(4_294_967_295_u64)),
        ("daily_quota", json!(i64::MAX)),
        ("max_queue_depth", json!(i64::MAX)),
    ] {
        let r = d.patch(&path, Some(&token), json!({"settings": {setting: value}})).await;
        r.assert_error(422, "validation_failed");
        assert_eq!(r.body["error"]["details"][0]["field"], format!("settings.{setting}"), "{r:?}");
        let created = d.post("/v1/projects", Some(&token), json!({"name": "n", "settings": {setting: value}})).await;
        created.assert_error(422, "validation_failed");
    }
    let r = d.patch(&path, Some(&token), json!({"settings": {"rate_limit_per_minute": 60000}})).await;
    assert_eq!(r.status, 200, "at the ceiling: {r:?}");
    // Projects per account: the tenant's own, then two more, then no more.
    for name in ["second", "third"] {
        assert_eq!(d.post("/v1/projects", Some(&token), json!({"name": name})).await.status, 201);
    }
    d.post("/v1/projects", Some(&token), json!({"name": "fourth"})).await.assert_error(422, "validation_failed");
    // Alert rules per project, and query_count rules (each a query at every evaluation) among them.
    let rule = |name: &str| {
        json!({"name": name, "kind": "new_error", "params": {},
               "channel": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}})
    };
    let query = |name: &str| {
        json!({"name": name, "kind": "query_count", "params": {"query": {"q": "timeout"}, "threshold": 2, "window_secs": 60},
               "channel": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}})
    };
    let rules = format!("/v1/projects/{project}/alerts");
    for body in [rule("one"), query("two")] {
        let r = d.post(&rules, Some(&token), body).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let r = d.post(&rules, Some(&token), query("second query")).await;
    r.assert_error(422, "validation_failed");
    assert_eq!(r.body["error"]["details"][0]["field"], "kind", "{r:?}");
    assert_eq!(d.post(&rules, Some(&token), rule("three")).await.status, 201);
    d.post(&rules, Some(&token), rule("four")).await.assert_error(422, "validation_failed");
}

async fn strangers_guessing_from_many_addresses_do_not_lock_the_owner_out(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let d = Daemon::start(kind).await;
    d.signup("owner@example.com").await;
    let right = json!({"email": "owner@example.com", "password": "correct horse"});
    let login = |client: &reqwest::Client, body: &Value| client.post(d.url("/v1/login")).json(body).send();
    // The owner has signed in from 127.0.0.1 before.
    assert_eq!(login(&from_address(1), &right).await.unwrap().status(), 200);
    // 110 wrong passwords from 11 other addresses: past the per-e-mail ceiling of 100, after which the
    // strangers' guesses are not even checked.
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for n in 2..13 {
        let stranger = from_address(n);
        for i in 0..10 {
            let wrong = json!({"email": "owner@example.com", "password": format!("guess {n} {i}")});
            *statuses.entry(login(&stranger, &wrong).await.unwrap().status().as_u16()).or_default() += 1;
        }
    }
    assert_eq!(statuses.get(&401), Some(&100), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&10), "{statuses:?}");
    // A twelfth stranger, even with the right password, is refused: the account is under attack.
    let refused = login(&from_address(20), &right).await.unwrap();
    assert_eq!(refused.status(), 429);
    // The owner, from the address it signed in from, is not locked out (REST and the console's sign-in).
    let owner = from_address(1);
    assert_eq!(login(&owner, &right).await.unwrap().status(), 200, "the owner's known address");
    let console = owner.post(d.url("/console/session")).json(&right).send().await.unwrap();
    assert!(console.status().is_success(), "the console's sign-in: {}", console.status());
}

async fn alert_targets_that_reach_private_addresses_are_refused(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let d = Daemon::start(kind).await;
    let (token, project, _) = d.tenant("ada@example.com").await;
    let path = format!("/v1/projects/{project}/alerts");
    for url in [
        "http://localhost./hook",
        "http://ip6-localhost/hook",
        "http://hook.invalid/",
        "http://[::127.0.0.1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://[2002:7f00:1::]/hook",
        "http://[::ffff:7f00:1]/hook",
        "http://0.0.0.0:8000/hook",
    ] {
        let rule = json!({"name": "r", "kind": "new_error", "params": {}, "channel": {"type": "webhook", "url": url}});
        let r = d.post(&path, Some(&token), rule).await;
        r.assert_error(422, "validation_failed");
        assert_eq!(r.body["error"]["details"][0]["field"], "channel.url", "{url}: {r:?}");
    }
}

/// `n` parse rules and `n` sample rules whose regular expressions are costly to compile and to run.
fn heavy_rules(n: usize) -> Value {
    let parse: Vec<Value> = (0..n)
        .map(|i| json!({"format": "regex", "pattern": format!("(?P<f{i}>\\w{{1,5}}\\s\\w{{1,5}}) x{i}")}))
        .collect();
    let sample: Vec<Value> =
        (0..n).map(|i| json!({"message": format!("\\w{{1,5}}\\s\\w{{1,5}} y{i}"), "action": "drop"})).collect();
    json!({"parse": parse, "sample": sample})
}

async fn heavy_stage_rules_of_some_tenants_leave_the_others_served(kind: Kind) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let d = Daemon::start(kind).await;
    // Past the project budget: refused before anything is compiled.
    let (token, project, _) = d.tenant("mallory@example.com").await;
    let r = d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"stages": heavy_rules(100)})).await;
    r.assert_error(422, "validation_failed");
    assert_eq!(r.body["error"]["details"][0]["field"], "stages", "{r:?}");
    // Six tenants saving (and then using) heavy rules, at once.
    let mut attackers = Vec::new();
    for i in 0..6 {
        attackers.push(d.tenant(&format!("heavy{i}@example.com")).await);
    }
    let (_, _, victim) = d.tenant("ada@example.com").await;
    let attacks: Vec<_> = attackers
        .into_iter()
        .map(|(token, project, key)| {
            let (client, base) = (d.client().clone(), d.url(""));
            tokio::spawn(async move {
                let saved: reqwest::Response = client
                    .patch(format!("{base}/v1/projects/{project}"))
                    .bearer_auth(&token)
                    .json(&json!({"stages": heavy_rules(8)}))
                    .send()
                    .await
                    .unwrap();
                let status = saved.status();
                if status != 200 {
                    let text = saved.text().await.unwrap();
                    println!("heavy rules refused: {}", &text[..text.len().min(300)]);
                }
                let logs: Vec<Value> = (0..1000).map(|i| json!({"message": format!("word{i} other{i} z")})).collect();
                for _ in 0..3 {
                    let _ = client
                        .post(format!("{base}/v1/logs"))
                        .header("x-api-key", &key)
                        .json(&json!({"logs": logs}))
                        .send()
                        .await;
                }
                status
            })
        })
        .collect();
    let mut measured = 0;
    while attacks.iter().any(|a| !a.is_finished()) {
        let started = std::time::Instant::now();
        let health = tokio::time::timeout(Duration::from_secs(1), elsewhere().get(d.url("/health")).send()).await;
        assert!(health.is_ok(), "another client's /health waited past 1 s while heavy rules compiled and ran");
        let ingest = tokio::time::timeout(Duration::from_secs(1), d.ingest(&victim, json!({"message": "m"}))).await;
        assert_eq!(ingest.expect("another tenant's ingestion answered within 1 s").status, 202);
        measured += 1;
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(started.elapsed())).await;
    }
    let saved: Vec<u16> = futures::future::join_all(attacks).await.into_iter().map(|s| s.unwrap().as_u16()).collect();
    println!("{measured} probes while six tenants saved heavy rules ({saved:?}) and ingested through them");
    assert!(measured > 0, "the attack was over before it could be measured");
}
