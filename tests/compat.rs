#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The compatibility fronts driven by the real clients of each protocol, on both backends, and then read
//! back through `GET /v1/logs` with the mapped fields: the OpenTelemetry Python SDK (OTLP/HTTP and
//! OTLP/gRPC exporters, configured by the standard environment variables), the OpenTelemetry JS SDK's
//! OTLP/HTTP JSON exporter, winston-loki (snappy protobuf), python-logging-loki (JSON), the Elasticsearch
//! Python client's bulk helper, util-linux `logger` and rsyslog. Beside them, each front's bad input,
//! answered in its own protocol's form with nothing half-stored.
//!
//! The clients are pinned: `tests/compat/requirements.txt` (installed into `target/compat-venv`) and
//! `tests/compat/node/package-lock.json` (`npm ci`), both installed on first use; `logger` (util-linux) and
//! `rsyslogd` (Debian's `rsyslog`) come from the system, which `.ci/run` provides.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind, eventually, urlencode};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, with the pinned clients installed once per run.
fn python() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let venv = std::env::var_os("LEDGER_COMPAT_VENV").map_or_else(|| root().join("target/compat-venv"), PathBuf::from);
    let requirements = root().join("tests/compat/requirements.txt");
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap();
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let pip = Command::new(venv.join("bin/pip")).args(["install", "-q", "-r"]).arg(&requirements).status().unwrap();
        assert!(pip.success(), "pip install -r {} failed (PyPI must be reachable)", requirements.display());
        std::fs::write(&stamp, wanted).unwrap();
    }
    venv.join("bin/python")
}

/// `tests/compat/node`, with its locked packages installed once per run.
fn node_dir() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = root().join("tests/compat/node");
    if !dir.join("node_modules/.package-lock.json").exists() {
        let npm = Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status().unwrap();
        assert!(npm.success(), "npm ci in {} failed (the npm registry must be reachable)", dir.display());
    }
    dir
}

fn check(what: &str, output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what} failed ({}):\n{stdout}\n{stderr}", output.status);
    stdout
}

/// Runs a blocking client off the test's runtime.
async fn run(what: &'static str, mut command: Command) -> String {
    tokio::task::spawn_blocking(move || check(what, command.output().unwrap())).await.unwrap()
}

async fn run_python(args: Vec<String>, env: Vec<(String, String)>) -> String {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let mut command = Command::new(python);
    command.arg(root().join("tests/compat").join(&args[0])).args(&args[1..]);
    command.envs(env);
    run("a Python client", command).await
}

async fn run_node(script: &str, args: &[&str]) -> String {
    let dir = tokio::task::spawn_blocking(node_dir).await.unwrap();
    let mut command = Command::new("node");
    command.arg(dir.join(script)).args(args).current_dir(dir);
    run("a Node client", command).await
}

/// A word no other test writes.
fn marker() -> String {
    format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The logs holding `marker`, once there are `n` of them, oldest first.
async fn logs_with(d: &Daemon, key: &str, marker: &str, n: usize) -> Vec<Value> {
    let to = (chrono::Utc::now() + chrono::Duration::hours(48)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let path = format!("/v1/logs?q={marker}&from=1970-01-01T00%3A00%3A00Z&to={}&limit=100", urlencode(&to));
    let mut logs: Vec<Value> = eventually(Duration::from_secs(30), &format!("{n} logs with {marker}"), || async {
        let r = d.get(&path, Some(key)).await;
        assert_eq!(r.status, 200, "{r:?}");
        let logs = r.body["logs"].as_array().unwrap().clone();
        (logs.len() >= n).then_some(logs)
    })
    .await;
    assert_eq!(logs.len(), n, "exactly {n} logs with {marker}: {logs:#?}");
    logs.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
    logs
}

fn find<'a>(logs: &'a [Value], text: &str) -> &'a Value {
    logs.iter().find(|l| l["message"].as_str().unwrap_or_default().contains(text)).unwrap_or_else(|| {
        panic!("no log with {text:?} in {logs:#?}");
    })
}

/// A daemon with the syslog front on, and a project key.
async fn start(kind: Kind) -> (Daemon, String) {
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__SYSLOG__TCP_ADDR", "127.0.0.1:0")]).await;
    let (_, _, key) = d.tenant(&format!("{}@example.com", marker())).await;
    (d, key)
}

async fn otlp_python(kind: Kind, transport: &str) {
    let (d, key) = start(kind).await;
    let m = marker();
    let endpoint = if transport == "http" { d.url("/otlp") } else { d.grpc.clone() };
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint),
        ("OTEL_EXPORTER_OTLP_HEADERS".to_owned(), format!("authorization=Bearer%20{key}")),
        ("OTEL_EXPORTER_OTLP_INSECURE".to_owned(), "true".to_owned()),
    ];
    run_python(vec!["otlp.py".into(), transport.into(), m.clone()], env).await;
    let logs = logs_with(&d, &key, &m, 3).await;
    let info = find(&logs, "plain info");
    assert_eq!(info["level"], "INFO");
    assert_eq!(info["service"], format!("otel-py-{transport}"));
    assert_eq!(info["environment"], "test");
    assert_eq!(info["host"], "py-host");
    assert_eq!(info["attributes"]["order_id"], 42);
    let failed = find(&logs, "payment failed");
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["exception"]["type"], "ValueError");
    assert!(failed["exception"]["value"].as_str().unwrap().contains("bad card"), "{failed}");
    assert!(failed["exception"]["stacktrace"].as_str().unwrap().contains("Traceback"), "{failed}");
    assert_eq!(failed["trace_id"].as_str().unwrap().len(), 32, "{failed}");
    assert_eq!(failed["span_id"].as_str().unwrap().len(), 16, "{failed}");
    assert_eq!(find(&logs, "warned")["level"], "WARNING");
    let text = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = "ledger_ingest_logs_total{front=\"otlp\",outcome=\"accepted\"} 3";
    assert!(text.contains(line), "the logs are counted by front: {text}");
}

async fn otlp_node_json(kind: Kind) {
    let (d, key) = start(kind).await;
    let m = marker();
    run_node("otlp.mjs", &[&d.base, &key, &m]).await;
    let logs = logs_with(&d, &key, &m, 2).await;
    let error = find(&logs, "from node");
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["service"], "otel-node");
    assert_eq!(error["environment"], "test");
    assert_eq!(error["exception"]["type"], "TypeError");
    assert_eq!(error["exception"]["value"], "x is undefined");
    assert_eq!(error["attributes"]["http.route"], "/pay");
    let structured = find(&logs, "structured");
    assert_eq!(structured["level"], "DEBUG");
    let body: Value = serde_json::from_str(structured["message"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"text": format!("{m} structured"), "n": 3}));
}

async fn loki_winston_protobuf(kind: Kind) {
    let (d, key) = start(kind).await;
    let m = marker();
    run_node("loki.mjs", &[&d.base, &key, &m]).await;
    let logs = logs_with(&d, &key, &m, 2).await;
    let error = find(&logs, "from winston");
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["service"], "winston-app");
    assert_eq!(error["environment"], "test");
    assert_eq!(find(&logs, "winston info")["level"], "INFO");
}

async fn loki_python_json(kind: Kind) {
    let (d, key) = start(kind).await;
    let m = marker();
    run_python(vec!["loki.py".into(), d.base.clone(), key.clone(), m.clone()], vec![]).await;
    let logs = logs_with(&d, &key, &m, 2).await;
    let error = find(&logs, "from python-logging-loki");
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["service"], "loki-py-svc");
    assert_eq!(error["environment"], "test");
    assert_eq!(error["attributes"]["application"], "loki-py");
    assert_eq!(find(&logs, "second line")["level"], "INFO");
}

async fn elastic_python_bulk(kind: Kind, auth: &str) {
    let (d, key) = start(kind).await;
    let m = marker();
    let out = run_python(vec!["elastic.py".into(), d.base.clone(), key.clone(), m.clone(), auth.into()], vec![]).await;
    assert!(out.contains("mixed: 1 ["), "the bad document is a per-item error, the good one stored: {out}");
    let logs = logs_with(&d, &key, &m, 3).await;
    let one = find(&logs, "es one");
    assert_eq!(one["level"], "ERROR");
    assert_eq!(one["service"], "es-py");
    assert_eq!(one["host"], "es-host");
    assert_eq!(one["timestamp"], "2026-11-30T10:00:00.250000Z");
    assert_eq!(one["attributes"]["es.index"], "app-logs");
    assert_eq!(one["attributes"]["user.id"], 7);
    assert_eq!(find(&logs, "es two")["level"], "WARNING");
    find(&logs, "es three");
    assert!(
        logs.iter().all(|l| !l["message"].as_str().unwrap().contains("es too long")),
        "the refused one is not stored"
    );
}

async fn syslog_logger(kind: Kind) {
    let (d, key) = start(kind).await;
    let m = marker();
    let (host, port) = d.syslog.rsplit_once(':').unwrap();
    let mut command = Command::new("logger");
    command
        .args(["--rfc5424", "--octet-count", "-T", "-n", host, "-P", port, "-t", "billing", "-p", "local0.err"])
        .args(["--msgid", "PAY", "--sd-id", "ledger@41058", "--sd-param", &format!("key=\"{key}\"")])
        .args(["--sd-id", "meta@1", "--sd-param", "tenant=\"acme\""])
        .arg(format!("{m} card declined"));
    run("logger", command).await;
    let logs = logs_with(&d, &key, &m, 1).await;
    let log = &logs[0];
    assert_eq!(log["message"], format!("{m} card declined"));
    assert_eq!(log["level"], "ERROR");
    assert_eq!(log["service"], "billing");
    assert_eq!(log["attributes"]["syslog.facility"], "local0");
    assert_eq!(log["attributes"]["syslog.msgid"], "PAY");
    assert_eq!(log["attributes"]["meta@1.tenant"], "acme");
    assert!(!log.to_string().contains(&key), "the key is never stored: {log}");
}

/// rsyslog from Debian, reading from a local socket and forwarding octet-counted RFC 5424 with our
/// structured data; and a message that cannot be parsed, stored whole with its parse error.
async fn syslog_rsyslog(kind: Kind) {
    let (d, key) = start(kind).await;
    let m = marker();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("log.sock");
    let (host, port) = d.syslog.rsplit_once(':').unwrap();
    let config = format!(
        r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" CreatePath="on")
template(name="ledger" type="string"
  string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% [ledger@41058 key=\"{key}\"] %msg:2:$%")
action(type="omfwd" target="{host}" port="{port}" protocol="tcp" TCP_Framing="octet-counted" template="ledger")
"#,
        dir = dir.path().display(),
        socket = socket.display(),
    );
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(&conf, config).unwrap();
    let mut rsyslogd = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("rsyslogd.pid"))
        .spawn()
        .expect("rsyslogd (Debian's rsyslog package; .ci/run installs it)");
    let sock = socket.clone();
    eventually(Duration::from_secs(10), "rsyslog's socket", || {
        let exists = sock.exists();
        async move { exists.then_some(()) }
    })
    .await;
    let mut command = Command::new("logger");
    command.arg("-u").arg(&socket).args(["-t", "worker", "-p", "user.warning"]).arg(format!("{m} via rsyslog"));
    run("logger into rsyslog", command).await;
    let logs = logs_with(&d, &key, &m, 1).await;
    let _ = rsyslogd.kill();
    let _ = rsyslogd.wait();
    assert_eq!(logs[0]["message"], format!("{m} via rsyslog"));
    assert_eq!(logs[0]["level"], "WARNING");
    assert_eq!(logs[0]["service"], "worker");
    assert_eq!(logs[0]["attributes"]["syslog.facility"], "user");
}

/// A device that can add no key: `[syslog] api_key` is its project's, RFC 3164 newline-framed lines,
/// and a connection sending garbage is stored with its parse error; the daemon is unaffected.
async fn syslog_configured_key_and_garbage(kind: Kind) {
    let (d, key) = start(kind).await;
    let d = d.restart_with(&[("LEDGER__SYSLOG__TCP_ADDR", "127.0.0.1:0"), ("LEDGER__SYSLOG__API_KEY", &key)]).await;
    let m = marker();
    let (host, port) = d.syslog.rsplit_once(':').unwrap();
    let mut command = Command::new("logger");
    command
        .args(["--rfc3164", "-T", "-n", host, "-P", port, "-t", "router", "-p", "daemon.info"])
        .arg(format!("{m} link up"));
    run("logger --rfc3164", command).await;
    let addr = d.syslog.clone();
    let garbage = m.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(format!("\x00\x01\x02 {garbage} garbage \u{7f}\n").as_bytes()).unwrap();
        s.write_all(&[0xff; 300]).unwrap();
    })
    .await
    .unwrap();
    // A message whose own key is unknown is refused, and counted (syslog has no answer to say so).
    let addr = d.syslog.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"<14>1 - h app - - [ledger@41058 key=\"ledger_unknown0000000000000000000000000\"] lost\n")
            .unwrap();
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(20), "the refused syslog message is counted", || async {
        let text = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.contains("ledger_ingest_logs_total{front=\"syslog\",outcome=\"unauthorized\"} 1").then_some(())
    })
    .await;
    let logs = logs_with(&d, &key, &m, 2).await;
    let up = find(&logs, "link up");
    assert_eq!(up["service"], "router");
    assert_eq!(up["level"], "INFO");
    let bad = find(&logs, "garbage");
    assert!(bad["attributes"]["syslog.parse_error"].is_string(), "{bad}");
    assert_eq!(d.get("/health", None).await.status, 200);
}

/// Each front's bad input gets its protocol's own error, and nothing of it is stored.
async fn bad_input_per_front(kind: Kind) {
    let (d, key) = start(kind).await;
    let m = marker();
    let client = reqwest::Client::new();
    let post = |path: &str, content_type: &str, body: Vec<u8>| {
        client.post(d.url(path)).header("content-type", content_type).header("x-api-key", &key).body(body).send()
    };
    // OTLP: malformed protobuf is 400 with a google.rpc.Status; wrong type 415; an unknown key 401.
    let r = post("/otlp/v1/logs", "application/x-protobuf", vec![0x0a, 0xff, 0x01]).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let r = post("/otlp/v1/logs", "application/json", b"{\"resourceLogs\": [".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["code"], 3, "INVALID_ARGUMENT: {status}");
    assert_eq!(post("/otlp/v1/logs", "text/plain", b"x".to_vec()).await.unwrap().status(), 415);
    let r = client
        .post(d.url("/otlp/v1/logs"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer ledger_nope")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // OTLP partial success: the record with an empty body is refused and counted, the other stored.
    let records = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": format!("{m} otlp good")}},
        {"body": {"stringValue": ""}},
    ]}]}]});
    let r = post("/otlp/v1/logs", "application/json", records.to_string().into_bytes()).await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let rejected = &answer["partialSuccess"]["rejectedLogRecords"];
    assert!(rejected == 1 || rejected == "1", "{answer}");
    // Loki: bad snappy, malformed JSON, a wrong type; an empty line beside a good one is 400, the good one stored.
    let r = post("/loki/api/v1/push", "application/x-protobuf", b"definitely not snappy".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("snappy"));
    assert_eq!(
        post("/loki/api/v1/push", "application/json", b"{\"streams\": 3}".to_vec()).await.unwrap().status(),
        400
    );
    assert_eq!(post("/loki/api/v1/push", "text/plain", b"x".to_vec()).await.unwrap().status(), 415);
    let push = json!({"streams": [{"stream": {"app": "a"}, "values": [["1764000000000000000", format!("{m} loki good")], ["1764000000000000000", ""]]}]});
    let r = post("/loki/api/v1/push", "application/json", push.to_string().into_bytes()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("1 entries refused"));
    // Elasticsearch: a malformed action line refuses the bulk; a bad document line is one item's error.
    let r = post("/_bulk", "application/x-ndjson", b"nonsense\n{}\n".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-elastic-product"], "Elasticsearch");
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["type"], "illegal_argument_exception", "{error}");
    let bulk = format!("{{\"index\":{{}}}}\n{{\"message\":\"{m} es good\"}}\n{{\"create\":{{}}}}\n{{not json\n");
    let r = post("/logs/_bulk", "application/vnd.elasticsearch+x-ndjson; compatible-with=8", bulk.into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("{\"took\":"), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["errors"], true);
    assert_eq!(answer["items"][0]["index"]["status"], 201);
    assert_eq!(answer["items"][1]["create"]["status"], 400);
    assert_eq!(post("/_bulk", "text/plain", b"{}\n".to_vec()).await.unwrap().status(), 415);
    let r = client
        .post(d.url("/_bulk"))
        .header("content-type", "application/x-ndjson")
        .header("authorization", "ApiKey nope")
        .body("{}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-elastic-product"], "Elasticsearch");
    // Oversize: more records than a batch holds, or a body over the limit, each in its protocol's form.
    let many = (0..1001).map(|_| json!({"body": {"stringValue": "x"}})).collect::<Vec<_>>();
    let records = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": many}]}]});
    let r = post("/otlp/v1/logs", "application/json", records.to_string().into_bytes()).await.unwrap();
    assert_eq!(r.status(), 413);
    let values = (0..1001).map(|_| json!(["1764000000000000000", "x"])).collect::<Vec<_>>();
    let push = json!({"streams": [{"stream": {"app": "a"}, "values": values}]});
    assert_eq!(
        post("/loki/api/v1/push", "application/json", push.to_string().into_bytes()).await.unwrap().status(),
        413
    );
    let huge = format!("{{\"index\":{{}}}}\n{{\"message\":\"{}\"}}\n", "x".repeat(11 * 1024 * 1024));
    let r = post("/_bulk", "application/x-ndjson", huge.into_bytes()).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["x-elastic-product"], "Elasticsearch");
    // OTLP/gRPC: an unknown key is UNAUTHENTICATED before anything is decoded; too many records INVALID_ARGUMENT.
    {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let mut client = LogsServiceClient::connect(d.grpc.clone()).await.unwrap();
        let request = |n: usize, credential: &str| {
            let records = vec![LogRecord::default(); n];
            let scope = ScopeLogs { log_records: records, ..ScopeLogs::default() };
            let message = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs { scope_logs: vec![scope], ..ResourceLogs::default() }],
            };
            let mut request = tonic::Request::new(message);
            request.metadata_mut().insert("authorization", format!("Bearer {credential}").parse().unwrap());
            request
        };
        let refused = client.export(request(1, "ledger_unknown")).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let refused = client.export(request(1001, &key)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    assert_eq!(d.get("/health", None).await.status, 200);
    // Exactly the good ones are stored.
    let logs = logs_with(&d, &key, &m, 3).await;
    for text in ["otlp good", "loki good", "es good"] {
        find(&logs, text);
    }
}

macro_rules! on_both_kinds {
    ($($name:ident => $body:expr),* $(,)?) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let kind = Kind::Embedded;
                    ($body)(kind).await
                }
            )*
        }
        mod shared {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let kind = Kind::Shared;
                    ($body)(kind).await
                }
            )*
        }
    };
}

on_both_kinds! {
    otlp_python_http_exporter => |k| otlp_python(k, "http"),
    otlp_python_grpc_exporter => |k| otlp_python(k, "grpc"),
    otlp_node_json_exporter => otlp_node_json,
    loki_winston_protobuf_snappy => loki_winston_protobuf,
    loki_python_logging_loki_json => loki_python_json,
    elastic_python_bulk_helper_api_key => |k| elastic_python_bulk(k, "apikey"),
    elastic_python_bulk_helper_basic => |k| elastic_python_bulk(k, "basic"),
    syslog_util_linux_logger_rfc5424 => syslog_logger,
    syslog_rsyslog_forwarding => syslog_rsyslog,
    syslog_configured_key_rfc3164_and_garbage => syslog_configured_key_and_garbage,
    bad_input_gets_each_protocols_own_error => bad_input_per_front,
}
