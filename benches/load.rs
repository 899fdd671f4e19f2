//! `ledger-bench`, the load generator: drives the real `ledger` binary over HTTP or gRPC and measures each
//! figure beside its ceiling, in the same run on the same machine.
//!
//! ```sh
//! cargo bench --bench load                                   # every scenario once (about 3 minutes)
//! cargo bench --bench load -- --runs 3 --json target/bench.json   # medians of 3 runs, and a JSON report
//! cargo bench --bench load -- --scenario batched --protocol grpc --concurrency 64 --duration 30
//! cargo bench --bench load -- --scenario latency --rate 400  # a fixed rate, in requests per second
//! cargo bench --bench load -- --help
//! ```
//!
//! Scenarios and their ceilings:
//! - `batched`: batches of `--batch` logs into the shared backend, until every acknowledged log is stored.
//!   Ceilings: a bare COPY of identically generated rows into an identical table (as many streams as the
//!   daemon has shards), and XADD of the same payloads to Redis.
//! - `grpc`: the same over gRPC.
//! - `single`: one log per request. Ceiling: a minimal hyper server answering 202 to the same requests (run
//!   by this binary as a separate process, like the daemon).
//! - `latency`: a fixed rate, by default half the batched maximum: 202 latency and freshness.
//! - `rss`: the daemon's resident memory with 100,000 logs queued (workers off, so they stay queued).
//! - `fronts`: `batched` again through OTLP/HTTP protobuf, Loki snappy protobuf and Elasticsearch bulk, beside
//!   the native JSON path in the same run (not part of `all`).
//! - `embedded`: batches into the embedded backend (202 = committed). Ceiling: a bare SQLite batch insert of
//!   identical rows into an identical database.
//! - `search`: `batched` on a daemon with the search index off, then on another with it on, each for at least
//!   150 s so the index job (which takes a minute once it is a minute old) works through most of the second:
//!   stored logs/s with the index against without it, and how far behind the index was at the end (not
//!   part of `all`).
//! - `stages`: `batched` for at least 60 s on a daemon without rules, then on another with the rule stages
//!   working: 10 redaction rules (the detectors find the payload's IPv4 addresses), parse rules (JSON and
//!   logfmt, which the payload's messages are not) and drop rules that match no log, so both store the
//!   same logs: stored logs/s with the rules against without (not part of `all`).
//! - `cluster`: `batched` for at least 60 s on the single Redis, then on a local Redis Cluster (three
//!   primaries with a replica each, started by the bench), then on the cluster with `redis.min_replicas_acked
//!   = 1`: stored logs/s on the cluster against the single Redis, and with replica acknowledgement against
//!   without (not part of `all`).
//! - `scaling`: how the costs grow: `batched` end to end with batches of 1, 10, 100 and 1,000 logs; then
//!   batches of `--batch` spread over 1, 100 and 10,000 projects, one key each (not part of `all`).
//!
//! Latency is from when a request was due (with `--rate`) or sent (without) to its 202. Freshness is from a
//! 202 to the log being returned by a query (`GET /v1/logs` on the one millisecond of a time given to that log
//! alone), sampled every 50 ms in the latency and embedded scenarios (not at full speed, where its reads
//! would load the database being measured).
//!
//! Needs PostgreSQL and Redis as the tests do (`LEDGER_TEST_POSTGRES`, `LEDGER_TEST_REDIS`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // A bench: a failure is reported by the panic.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ledger::config::{BackendKind, Config};
use ledger::store::{Backend, LogDb};
use ledger_proto::v1 as pb;
use ledger_proto::v1::ingest_service_client::IngestServiceClient;
use ledger_stages::LogRecord;
use serde::Serialize;
use serde_json::{Value, json};
use tonic::transport::Channel;
use uuid::Uuid;

#[path = "payload.rs"]
mod payload;

#[path = "../tests/support/cluster.rs"]
#[allow(dead_code)]
mod cluster;

#[derive(Parser, Debug, Clone)]
#[command(name = "ledger-bench", about = "Load generator for Ledger: every figure beside its ceiling.")]
struct Args {
    /// Which scenario to run; `all` runs each in turn.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Logs per request in the batched scenarios.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Stop after this many logs instead (the duration still bounds it).
    #[arg(long)]
    count: Option<u64>,
    /// A fixed rate in requests per second (the latency scenario's default: half the batched maximum).
    #[arg(long)]
    rate: Option<f64>,
    /// Protocol of the batched scenario.
    #[arg(long, value_enum, default_value = "http")]
    protocol: Protocol,
    /// Repeat everything this many times and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Extra configuration for the daemons started, as `LEDGER__SECTION__KEY=value` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    daemon_env: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: serve the bare hyper ceiling on this port (0: any) and print it.
    #[arg(long, hide = true)]
    serve_hyper: Option<u16>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    All,
    Batched,
    Grpc,
    Single,
    Latency,
    Rss,
    Embedded,
    /// The compatibility fronts (OTLP protobuf, Loki protobuf, Elasticsearch bulk) beside the native JSON
    /// path, each batched end to end like `batched`.
    Fronts,
    /// `batched` with the search index off, then on.
    Search,
    /// `batched` without stage rules, then with parse, redact and drop rules.
    Stages,
    /// `batched` on the single Redis, then on a local Redis Cluster, then on it with `min_replicas_acked = 1`.
    Cluster,
    /// How the costs grow: batches of 1, 10, 100 and 1,000 logs; then 1, 100 and 10,000 projects sending.
    Scaling,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Grpc,
    /// OTLP/HTTP protobuf, `POST /otlp/v1/logs`.
    Otlp,
    /// Loki push, snappy protobuf.
    Loki,
    /// Elasticsearch `_bulk` NDJSON.
    Elastic,
}

// ---------------------------------------------------------------------------------------------------------
// Figures

#[derive(Debug, Clone, Copy, Serialize)]
enum Goal {
    /// The ratio to the ceiling must be at least this.
    RatioAtLeast(f64),
    /// The value must be below this.
    Below(f64),
}

#[derive(Debug, Clone, Serialize)]
struct Figure {
    scenario: &'static str,
    name: String,
    value: f64,
    unit: &'static str,
    ceiling_name: Option<String>,
    ceiling: Option<f64>,
    ratio: Option<f64>,
    target: Option<Goal>,
    met: Option<bool>,
}

impl Figure {
    fn new(scenario: &'static str, name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            scenario,
            name: name.into(),
            value,
            unit,
            ceiling_name: None,
            ceiling: None,
            ratio: None,
            target: None,
            met: None,
        }
    }

    fn against(mut self, ceiling_name: impl Into<String>, ceiling: f64) -> Figure {
        self.ceiling_name = Some(ceiling_name.into());
        self.ceiling = Some(ceiling);
        self.ratio = (ceiling > 0.0).then(|| self.value / ceiling);
        self
    }

    fn target(mut self, target: Goal) -> Figure {
        self.target = Some(target);
        self.judge();
        self
    }

    fn judge(&mut self) {
        self.met = self.target.map(|t| match t {
            Goal::RatioAtLeast(min) => self.ratio.is_some_and(|r| r >= min),
            Goal::Below(max) => self.value < max,
        });
    }

    fn print(&self) {
        let value = format!("{:.1} {}", self.value, self.unit);
        let mut line = format!("  {:<38} {value:>16}", self.name);
        if let (Some(name), Some(ceiling), Some(ratio)) = (&self.ceiling_name, self.ceiling, self.ratio) {
            line.push_str(&format!("   {ratio:>5.2} × {name} ({ceiling:.0} {})", self.unit));
        }
        match (self.target, self.met) {
            (Some(Goal::RatioAtLeast(min)), Some(met)) => {
                line.push_str(&format!("   target ≥ {min:.2}: {}", if met { "met" } else { "NOT MET" }))
            }
            (Some(Goal::Below(max)), Some(met)) => {
                line.push_str(&format!("   target < {max} {}: {}", self.unit, if met { "met" } else { "NOT MET" }))
            }
            _ => {}
        }
        println!("{line}");
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() { 0.0 } else { values[values.len() / 2] }
}

/// One figure per name: the median of its runs (value, ceiling and ratio each).
fn medians(runs: &[Vec<Figure>]) -> Vec<Figure> {
    let mut by_name: BTreeMap<(usize, String), Vec<&Figure>> = BTreeMap::new();
    for run in runs {
        for (i, f) in run.iter().enumerate() {
            by_name.entry((i, f.name.clone())).or_default().push(f);
        }
    }
    by_name
        .into_values()
        .map(|figures| {
            let mut out = figures[0].clone();
            out.value = median(&mut figures.iter().map(|f| f.value).collect::<Vec<_>>());
            out.ceiling =
                figures[0].ceiling.map(|_| median(&mut figures.iter().filter_map(|f| f.ceiling).collect::<Vec<_>>()));
            out.ratio =
                figures[0].ratio.map(|_| median(&mut figures.iter().filter_map(|f| f.ratio).collect::<Vec<_>>()));
            out.judge();
            out
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// ---------------------------------------------------------------------------------------------------------
// The daemon, as a separate process

fn postgres() -> String {
    std::env::var("LEDGER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn redis_url() -> String {
    std::env::var("LEDGER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct Daemon {
    child: Child,
    base: String,
    grpc: String,
    /// `host:port` of the syslog listener, when started with one.
    syslog: String,
    /// Shared: the run's id (databases `ledger_{id}_*`, Redis prefix `ledger_{id}:`).
    id: Option<String>,
    dir: tempfile::TempDir,
}

/// The repository's config.toml, which every daemon of the bench starts with unless said otherwise.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");

impl Daemon {
    fn start(kind: BackendKind, extra: &[(&str, &str)], env: &[String]) -> Daemon {
        Self::start_with_config(kind, CONFIG, extra, env)
    }

    fn start_with_config(kind: BackendKind, config: &str, extra: &[(&str, &str)], env: &[String]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ledger.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ledger"));
        command
            .args(["--config", config, "serve"])
            .env_remove("RUST_LOG")
            .env("LEDGER__SERVER__HTTP_ADDR", "127.0.0.1:0")
            .env("LEDGER__SERVER__GRPC_ADDR", "127.0.0.1:0")
            .env("LEDGER__AUTH__BCRYPT_COST", "4")
            .env("LEDGER__BACKEND__DATA_DIR", dir.path())
            // The bench's tenants have no limits to speak of: the operator allows it.
            .env("LEDGER__LIMITS__MAX_RATE_LIMIT_PER_MINUTE", "4294967295")
            .env("LEDGER__LIMITS__MAX_RATE_LIMIT_PER_HOUR", "4294967295")
            .env("LEDGER__LIMITS__MAX_DAILY_QUOTA", "9223372036854775807")
            .env("LEDGER__LIMITS__MAX_QUEUE_DEPTH", "9223372036854775807");
        let mut id = None;
        if kind == BackendKind::Shared {
            let run = format!("bench{}", Uuid::new_v4().simple());
            command
                .env("LEDGER__BACKEND__KIND", "shared")
                .env("LEDGER__AUTH__JWT_SECRET", "bench-secret-0123456789abcdef0123456789")
                .env("LEDGER__POSTGRES__AUTH_URL", format!("{}/ledger_{run}_auth", postgres()))
                .env("LEDGER__POSTGRES__LOGS_URL", format!("{}/ledger_{run}_logs", postgres()))
                .env("LEDGER__REDIS__URL", redis_url())
                .env("LEDGER__REDIS__KEY_PREFIX", format!("ledger_{run}:"));
            id = Some(run);
        }
        for (k, v) in env.iter().filter_map(|kv| kv.split_once('=')).chain(extra.iter().copied()) {
            command.env(k, v);
        }
        // Logs to a file: the daemon keeps its default (info) logging, and nobody has to drain a pipe.
        let file = std::fs::File::create(&log).unwrap();
        let child = command.stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("\"ledger ready")) {
                break serde_json::from_str::<Value>(line).unwrap();
            }
            assert!(Instant::now() < deadline, "ledger did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let base = format!("http://{}", ready["http_addr"].as_str().unwrap());
        let grpc = format!("http://{}", ready["grpc_addr"].as_str().unwrap());
        let syslog = ready["syslog_addr"].as_str().unwrap_or_default().to_owned();
        Daemon { child, base, grpc, syslog, id, dir }
    }

    fn logs_url(&self) -> Option<String> {
        self.id.as_ref().map(|id| format!("{}/ledger_{id}_logs", postgres()))
    }

    fn rss_bytes(&self) -> u64 {
        rss_of(self.child.id())
    }

    async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = self.child.wait();
            drop(self.dir);
        })
        .await;
        if let Some(id) = self.id {
            cleanup(&id).await;
        }
    }
}

/// Drops a run's databases and Redis keys.
/// A process's resident memory in bytes (0 when it cannot be read).
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1));
    kb.and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// A process's CPU time so far, user and system, in seconds (0 when it cannot be read).
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name's closing parenthesis start at the 3rd; utime and stime are the
    // 14th and 15th, in clock ticks (USER_HZ, 100 on Linux).
    let fields = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = fields.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

async fn cleanup(id: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{}/postgres", postgres())).await {
        for db in [format!("ledger_{id}_auth"), format!("ledger_{id}_logs")] {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await;
        }
    }
    if let Ok(client) = redis::Client::open(redis_url())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("ledger_{id}:*")).query_async(&mut conn).await.unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    }
}

/// The JSON answer to `body` POSTed to `path`, with a session token when given.
async fn post_json(client: &reqwest::Client, base: &str, path: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = client.post(format!("{base}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// A project without limits, and a key that may ingest and read.
async fn tenant(client: &reqwest::Client, base: &str) -> String {
    tenants(client, base, 1).await.remove(0)
}

/// `n` projects without limits under one new account, 32 created at a time: a key of each that may ingest and
/// read.
async fn tenants(client: &reqwest::Client, base: &str, n: usize) -> Vec<String> {
    use futures::StreamExt;
    let email = format!("bench-{}@example.com", Uuid::now_v7().simple());
    let session = post_json(client, base, "/v1/register", None, json!({"email": email, "password": "correct horse"}));
    let session = session.await;
    let token = session["token"].as_str().unwrap().to_owned();
    let settings = json!({"rate_limit_per_minute": 4_000_000_000_u64, "rate_limit_per_hour": 4_000_000_000_u64,
                          "daily_quota": 1_000_000_000_000_u64, "max_queue_depth": 1_000_000_000_u64});
    futures::stream::iter(0..n)
        .map(|i| {
            let (token, settings) = (token.clone(), settings.clone());
            async move {
                let body = json!({"name": format!("bench {i}"), "settings": settings});
                let project = post_json(client, base, "/v1/projects", Some(&token), body).await;
                let id = project["id"].as_str().unwrap_or_else(|| panic!("no project: {project}"));
                let path = format!("/v1/projects/{id}/keys");
                let key = post_json(client, base, &path, Some(&token), json!({"scopes": ["ingest", "query"]})).await;
                key["key"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

// ---------------------------------------------------------------------------------------------------------
// The load

/// What the load sends: pre-encoded requests, so the generator spends its CPU on sending.
#[derive(Clone)]
enum Target {
    Http {
        client: reqwest::Client,
        url: String,
        /// Request i is sent with key i mod their number (one project per key).
        keys: Arc<Vec<String>>,
        bodies: Arc<Vec<bytes::Bytes>>,
        content_type: &'static str,
        /// The status that acknowledges: 202 natively, 200 for OTLP and Elasticsearch, 204 for Loki.
        ok: u16,
    },
    Grpc {
        clients: Vec<IngestServiceClient<Channel>>,
        key: String,
        requests: Arc<Vec<pb::IngestRequest>>,
    },
}

/// A request's end: the first id when acknowledged and asked for.
enum Sent {
    Accepted(Option<String>),
    Refused,
    Failed,
}

impl Target {
    /// Sends the `i`-th request. A `probe` time becomes the first log's timestamp (native JSON bodies only),
    /// and the answer's first id is returned, so the log can be looked for at that time.
    async fn send(&self, i: usize, probe: Option<&str>) -> Sent {
        let want_id = probe.is_some();
        match self {
            Target::Http { client, url, keys, bodies, content_type, ok } => {
                let key = &keys[i % keys.len()];
                let mut body = bodies[i % bodies.len()].clone();
                if let Some(at) = probe {
                    let mut value: Value = serde_json::from_slice(&body).unwrap();
                    let first = match value.get_mut("logs") {
                        Some(logs) => &mut logs[0],
                        None => &mut value,
                    };
                    first["timestamp"] = Value::from(at);
                    body = bytes::Bytes::from(serde_json::to_vec(&value).unwrap());
                }
                let response = client
                    .post(url)
                    .header("x-api-key", key)
                    .header("content-type", *content_type)
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == *ok => {
                        let bytes = r.bytes().await.unwrap_or_default();
                        let id = want_id
                            .then(|| serde_json::from_slice::<Value>(&bytes).ok())
                            .flatten()
                            .and_then(|v| v["ids"][0].as_str().map(str::to_owned));
                        Sent::Accepted(id)
                    }
                    Ok(_) => Sent::Refused,
                    Err(_) => Sent::Failed,
                }
            }
            Target::Grpc { clients, key, requests } => {
                let mut client = clients[i % clients.len()].clone();
                let mut request = tonic::Request::new(requests[i % requests.len()].clone());
                request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
                match client.ingest(request).await {
                    Ok(answer) => Sent::Accepted(answer.into_inner().ids.into_iter().next()),
                    Err(status) if status.code() == tonic::Code::Unavailable => Sent::Refused,
                    Err(_) => Sent::Failed,
                }
            }
        }
    }
}

struct Load {
    concurrency: usize,
    duration: Duration,
    /// Requests to send at most.
    requests: Option<u64>,
    /// Requests per second, or as fast as they are answered.
    rate: Option<f64>,
    logs_per_request: usize,
    /// Where to read logs back for freshness (base URL and key); `None`: not measured.
    freshness: Option<(String, String)>,
}

#[derive(Default)]
struct Outcome {
    secs: f64,
    acked_logs: u64,
    acked_requests: u64,
    refused: u64,
    failed: u64,
    /// Milliseconds, sorted.
    latency_ms: Vec<f64>,
    freshness_ms: Vec<f64>,
}

impl Outcome {
    fn logs_per_sec(&self) -> f64 {
        self.acked_logs as f64 / self.secs.max(1e-9)
    }

    fn requests_per_sec(&self) -> f64 {
        self.acked_requests as f64 / self.secs.max(1e-9)
    }
}

async fn run_load(what: &str, target: Target, load: Load) -> Outcome {
    let started = Instant::now();
    let until = started + load.duration;
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let (refused, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let freshness = Arc::new(Mutex::new(Vec::new()));
    let last_sample = Arc::new(Mutex::new(Instant::now()));
    let probes = Arc::new(tokio::sync::Semaphore::new(4));
    let probes_sent = Arc::new(AtomicU64::new(0));
    let probe_base = chrono::Utc::now() - chrono::Duration::hours(2);
    let reader = reqwest::Client::new();

    let progress = ProgressBar::new(load.duration.as_secs());
    progress.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} s  {msg}").unwrap().progress_chars("=> "),
    );
    progress.set_prefix(what.to_owned());
    let ticker = {
        let (progress, acked) = (progress.clone(), acked.clone());
        let per = load.logs_per_request as u64;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let secs = started.elapsed().as_secs_f64();
                let n = acked.load(Ordering::Relaxed);
                progress.set_position(secs as u64);
                progress.set_message(format!("{} logs acknowledged, {:.0} logs/s", n * per, (n * per) as f64 / secs));
            }
        })
    };

    // With a fixed rate, a dispatcher hands out due times; latency counts from them (no coordinated omission).
    let due = load.rate.map(|rate| {
        let (tx, rx) = tokio::sync::mpsc::channel::<Instant>(100_000);
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                let at = ticks.tick().await;
                if Instant::now() >= until || tx.send(at.into_std()).await.is_err() {
                    return;
                }
            }
        });
        Arc::new(tokio::sync::Mutex::new(rx))
    });

    let mut workers = Vec::new();
    for _ in 0..load.concurrency {
        let (target, next, acked, refused, failed) =
            (target.clone(), next.clone(), acked.clone(), refused.clone(), failed.clone());
        let (due, freshness, last_sample, probes, reader, probes_sent) =
            (due.clone(), freshness.clone(), last_sample.clone(), probes.clone(), reader.clone(), probes_sent.clone());
        let read_back = load.freshness.clone();
        let max = load.requests;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let from = match &due {
                    Some(due) => {
                        match tokio::time::timeout_at(until.into(), async { due.lock().await.recv().await }).await {
                            Ok(Some(at)) => at,
                            _ => break,
                        }
                    }
                    None => Instant::now(),
                };
                if Instant::now() >= until {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if max.is_some_and(|max| i >= max) {
                    break;
                }
                // One freshness sample every 50 ms at most, and only while a prober is free.
                let sample = read_back.is_some() && {
                    let mut last = last_sample.lock().unwrap();
                    let due = last.elapsed() >= Duration::from_millis(50);
                    if due {
                        *last = Instant::now();
                    }
                    due
                };
                // A probe's first log carries a time of its own, two hours back (no other log of the bench
                // has it), so one query on that millisecond finds it through the (project, time) index
                // whatever the load: a look-up by id would read every page written since the id index's
                // last summary, and so load the database being measured.
                let probe_at = sample.then(|| {
                    let n = probes_sent.fetch_add(1, Ordering::Relaxed);
                    probe_base + chrono::Duration::milliseconds(n as i64)
                });
                let probe_text = probe_at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                match target.send(i as usize, probe_text.as_deref()).await {
                    Sent::Accepted(id) => {
                        let acked_at = Instant::now();
                        latencies.push(acked_at.duration_since(from).as_secs_f64() * 1000.0);
                        acked.fetch_add(1, Ordering::Relaxed);
                        if let (Some(id), Some(at), Some((base, key))) = (id, probe_at, &read_back)
                            && let Ok(permit) = probes.clone().try_acquire_owned()
                        {
                            let millis = |t: chrono::DateTime<chrono::Utc>| {
                                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).replace('+', "%2B")
                            };
                            let url = format!(
                                "{base}/v1/logs?from={}&to={}&limit=10",
                                millis(at),
                                millis(at + chrono::Duration::milliseconds(1))
                            );
                            let (reader, key, freshness) = (reader.clone(), key.clone(), freshness.clone());
                            tokio::spawn(async move {
                                let _permit = permit;
                                let deadline = acked_at + Duration::from_secs(30);
                                // Polls back off from 2 to 20 ms: close enough to a second-scale figure, and
                                // light enough not to load the database it measures.
                                let mut pause = Duration::from_millis(2);
                                while Instant::now() < deadline {
                                    let r = reader.get(&url).header("x-api-key", &key).send().await;
                                    let found = match r {
                                        Ok(r) if r.status() == 200 => r.json::<Value>().await.is_ok_and(|page| {
                                            page["logs"].as_array().is_some_and(|logs| {
                                                logs.iter().any(|log| log["id"].as_str() == Some(id.as_str()))
                                            })
                                        }),
                                        _ => false,
                                    };
                                    if found {
                                        freshness.lock().unwrap().push(acked_at.elapsed().as_secs_f64() * 1000.0);
                                        return;
                                    }
                                    tokio::time::sleep(pause).await;
                                    pause = (pause * 2).min(Duration::from_millis(20));
                                }
                            });
                        }
                    }
                    Sent::Refused => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Sent::Failed => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latency_ms = Vec::new();
    for worker in workers {
        latency_ms.extend(worker.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    ticker.abort();
    progress.finish_and_clear();
    // Let the last probes finish.
    let _ = tokio::time::timeout(Duration::from_secs(30), probes.acquire_many(4)).await;
    latency_ms.sort_by(f64::total_cmp);
    let mut freshness_ms = freshness.lock().unwrap().clone();
    freshness_ms.sort_by(f64::total_cmp);
    let acked_requests = acked.load(Ordering::Relaxed);
    Outcome {
        secs,
        acked_logs: acked_requests * load.logs_per_request as u64,
        acked_requests,
        refused: refused.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        latency_ms,
        freshness_ms,
    }
}

fn http_target(base: &str, key: &str, batch: usize, concurrency: usize) -> Target {
    let bodies = (0..64)
        .map(|i| {
            let value = if batch == 1 { payload::log(i) } else { payload::batch(i * batch, batch) };
            bytes::Bytes::from(serde_json::to_vec(&value).unwrap())
        })
        .collect();
    Target::Http {
        client: reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap(),
        url: format!("{base}/v1/logs"),
        keys: Arc::new(vec![key.to_owned()]),
        bodies: Arc::new(bodies),
        content_type: "application/json",
        ok: 202,
    }
}

/// The same logs, sent by a compatibility front: 64 pre-encoded bodies of `batch` logs each.
fn front_target(protocol: Protocol, base: &str, key: &str, batch: usize, concurrency: usize) -> Target {
    type Encode = fn(&[Value]) -> Vec<u8>;
    let (path, content_type, ok, encode): (&str, &'static str, u16, Encode) = match protocol {
        Protocol::Otlp => ("/otlp/v1/logs", "application/x-protobuf", 200, fronts::otlp),
        Protocol::Loki => ("/loki/api/v1/push", "application/x-protobuf", 204, fronts::loki),
        Protocol::Elastic => ("/_bulk", "application/x-ndjson", 200, fronts::elastic),
        Protocol::Http | Protocol::Grpc => return http_target(base, key, batch, concurrency),
    };
    let bodies = (0..64)
        .map(|i| {
            let logs: Vec<Value> = (i * batch..(i + 1) * batch).map(payload::log).collect();
            bytes::Bytes::from(encode(&logs))
        })
        .collect();
    Target::Http {
        client: reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap(),
        url: format!("{base}{path}"),
        keys: Arc::new(vec![key.to_owned()]),
        bodies: Arc::new(bodies),
        content_type,
        ok,
    }
}

/// The bench's logs in each compatibility front's encoding, as their usual clients send them.
mod fronts {
    use std::collections::BTreeMap;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;
    use serde_json::Value;

    fn any(v: &Value) -> AnyValue {
        let value = match v {
            Value::String(s) => any_value::Value::StringValue(s.clone()),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => any_value::Value::IntValue(i),
                None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
            },
            other => any_value::Value::StringValue(other.to_string()),
        };
        AnyValue { value: Some(value) }
    }

    fn kv(key: &str, v: &Value) -> KeyValue {
        KeyValue { key: key.to_owned(), value: Some(any(v)) }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
    }

    fn text<'a>(log: &'a Value, name: &str) -> &'a str {
        log[name].as_str().unwrap_or_default()
    }

    /// Records grouped by resource (service, environment, host), as an SDK or collector batches them.
    pub fn otlp(logs: &[Value]) -> Vec<u8> {
        let mut by_resource: BTreeMap<(String, String, String), Vec<LogRecord>> = BTreeMap::new();
        for log in logs {
            let mut attributes: Vec<KeyValue> =
                log["attributes"].as_object().map(|o| o.iter().map(|(k, v)| kv(k, v)).collect()).unwrap_or_default();
            if let Some(e) = log["exception"].as_object() {
                for (name, key) in
                    [("type", "exception.type"), ("value", "exception.message"), ("stacktrace", "exception.stacktrace")]
                {
                    if let Some(v) = e.get(name) {
                        attributes.push(kv(key, v));
                    }
                }
            }
            let severity = match text(log, "level") {
                "debug" => 5,
                "info" => 9,
                "warning" => 13,
                "error" => 17,
                _ => 9,
            };
            let record = LogRecord {
                time_unix_nano: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64,
                severity_number: severity,
                body: Some(any(&log["message"])),
                attributes,
                trace_id: hex(text(log, "trace_id")),
                span_id: hex(text(log, "span_id")),
                ..LogRecord::default()
            };
            let resource =
                (text(log, "service").to_owned(), text(log, "environment").to_owned(), text(log, "host").to_owned());
            by_resource.entry(resource).or_default().push(record);
        }
        let resource_logs = by_resource
            .into_iter()
            .map(|((service, environment, host), records)| {
                let attributes =
                    [("service.name", service), ("deployment.environment.name", environment), ("host.name", host)]
                        .into_iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| kv(k, &Value::String(v)))
                        .collect();
                ResourceLogs {
                    resource: Some(Resource { attributes, ..Resource::default() }),
                    scope_logs: vec![ScopeLogs { log_records: records, ..ScopeLogs::default() }],
                    ..ResourceLogs::default()
                }
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }.encode_to_vec()
    }

    /// Streams by label set (service, environment, level); attributes as structured metadata; snappy.
    pub fn loki(logs: &[Value]) -> Vec<u8> {
        use ledger_proto::loki::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter};
        let mut streams: BTreeMap<String, Vec<EntryAdapter>> = BTreeMap::new();
        let now = chrono::Utc::now();
        for log in logs {
            let labels = format!(
                "{{service_name=\"{}\", env=\"{}\", level=\"{}\"}}",
                text(log, "service"),
                text(log, "environment"),
                text(log, "level")
            );
            let mut metadata: Vec<LabelPairAdapter> = log["attributes"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| LabelPairAdapter {
                            name: k.clone(),
                            value: v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !text(log, "trace_id").is_empty() {
                metadata.push(LabelPairAdapter { name: "trace_id".into(), value: text(log, "trace_id").into() });
            }
            streams.entry(labels).or_default().push(EntryAdapter {
                timestamp: Some(prost_types::Timestamp { seconds: now.timestamp(), nanos: 0 }),
                line: text(log, "message").to_owned(),
                structured_metadata: metadata,
                parsed: Vec::new(),
            });
        }
        let push = PushRequest {
            streams: streams.into_iter().map(|(labels, entries)| StreamAdapter { labels, entries, hash: 0 }).collect(),
        };
        snap::raw::Encoder::new().compress_vec(&push.encode_to_vec()).unwrap()
    }

    /// `{"create": {"_index": "bench"}}` and the document, per log.
    pub fn elastic(logs: &[Value]) -> Vec<u8> {
        let mut body = Vec::new();
        for log in logs {
            body.extend_from_slice(b"{\"create\":{\"_index\":\"bench\"}}\n");
            serde_json::to_writer(&mut body, log).unwrap();
            body.push(b'\n');
        }
        body
    }
}

fn to_pb_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.iter().map(to_pb_value).collect() }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_pb_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The same log as protobuf.
fn to_pb(log: &Value) -> pb::LogRecord {
    let text = |name: &str| log[name].as_str().map(str::to_owned);
    pb::LogRecord {
        message: text("message").unwrap_or_default(),
        level: text("level").unwrap_or_default(),
        service: text("service"),
        environment: text("environment"),
        host: text("host"),
        trace_id: text("trace_id"),
        span_id: text("span_id"),
        attributes: log["attributes"]
            .as_object()
            .map(|o| prost_types::Struct { fields: o.iter().map(|(k, v)| (k.clone(), to_pb_value(v))).collect() }),
        exception: log["exception"].as_object().map(|e| pb::Exception {
            r#type: e["type"].as_str().unwrap_or_default().to_owned(),
            value: e["value"].as_str().map(str::to_owned),
            stacktrace: e["stacktrace"].as_str().map(str::to_owned),
        }),
        ..Default::default()
    }
}

async fn grpc_target(grpc: &str, key: &str, batch: usize) -> Target {
    // A few HTTP/2 connections, each multiplexing its share of the requests in flight.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let channel = Channel::from_shared(grpc.to_owned()).unwrap().connect().await.unwrap();
        clients.push(IngestServiceClient::new(channel).max_decoding_message_size(64 << 20));
    }
    let requests = (0..64)
        .map(|i| pb::IngestRequest { logs: (i * batch..(i + 1) * batch).map(|j| to_pb(&payload::log(j))).collect() })
        .collect();
    Target::Grpc { clients, key: key.to_owned(), requests: Arc::new(requests) }
}

// ---------------------------------------------------------------------------------------------------------
// Ceilings

/// The rows the daemon would store for `n` logs.
fn rows(n: usize) -> Vec<LogRecord> {
    payload::records((0..n).map(payload::log).collect(), chrono::Utc::now())
}

fn shared_config(id: &str) -> Config {
    let mut config = Config::default();
    config.backend.kind = BackendKind::Shared;
    config.auth.jwt_secret = "bench-secret-0123456789abcdef0123456789".into();
    config.postgres.auth_url = format!("{}/ledger_{id}_auth", postgres());
    config.postgres.logs_url = format!("{}/ledger_{id}_logs", postgres());
    config.redis.url = redis_url();
    config.redis.key_prefix = format!("ledger_{id}:");
    config
}

/// COPY's two formats: binary (what the workers send) and text (for context: the format Ledger used before).
#[derive(Clone, Copy, PartialEq, Eq)]
enum CopyFormat {
    Binary,
    Text,
}

/// One text-format COPY field: `\N` for NULL, else the value with backslash, tab, newline and CR escaped.
fn text_field(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("\\N"),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

/// `records` as text-format COPY rows of the logs table's columns.
fn text_rows(records: &[LogRecord]) -> String {
    let mut out = String::with_capacity(records.len() * 600);
    for r in records {
        let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let fields: [Option<String>; 14] = [
            Some(r.id.to_string()),
            Some(r.project_id.to_string()),
            Some(time(&r.timestamp)),
            Some(time(&r.received_at)),
            Some(r.level.number().to_string()),
            r.service.clone(),
            r.environment.clone(),
            r.host.clone(),
            Some(r.message.clone()),
            Some((r.fingerprint as i64).to_string()),
            r.trace_id.clone(),
            r.span_id.clone(),
            Some(serde_json::to_string(&r.attributes).unwrap()),
            r.exception.as_ref().map(|e| serde_json::to_string(e).unwrap()),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            text_field(&mut out, field.as_deref());
        }
        out.push('\n');
    }
    out
}

/// Bare COPY of `total` identically generated rows into an identical table, in `streams` parallel streams of
/// 10,000-row COPYs, in `format`: rows per second.
async fn copy_ceiling(total: u64, streams: u64, format: CopyFormat) -> f64 {
    let id = format!("bench{}c", Uuid::new_v4().simple());
    let backend = Backend::open(&shared_config(&id)).await.unwrap();
    let LogDb::Postgres(store) = &backend.logs else { panic!("no PostgreSQL") };
    let template = Arc::new(rows(10_000));
    let per_stream = total.max(10_000).div_ceil(streams);
    let started = Instant::now();
    let mut copiers = Vec::new();
    for _ in 0..streams {
        let (pool, template) = (store.pool().clone(), template.clone());
        copiers.push(tokio::spawn(async move {
            let mut copied = 0u64;
            while copied < per_stream {
                let mut chunk = (*template).clone();
                for r in &mut chunk {
                    r.id = Uuid::now_v7();
                }
                let mut tx = pool.begin().await.unwrap();
                match format {
                    CopyFormat::Binary => {
                        ledger::store::logs::postgres::copy_records(&mut tx, &chunk).await.unwrap();
                    }
                    CopyFormat::Text => {
                        let sql = format!("COPY logs ({}) FROM STDIN (FORMAT text)", ledger::store::logs::COLUMNS);
                        let mut copy = tx.copy_in_raw(&sql).await.unwrap();
                        copy.send(text_rows(&chunk).into_bytes()).await.unwrap();
                        copy.finish().await.unwrap();
                    }
                }
                tx.commit().await.unwrap();
                copied += chunk.len() as u64;
            }
            copied
        }));
    }
    let mut copied = 0;
    for copier in copiers {
        copied += copier.await.unwrap();
    }
    let rate = copied as f64 / started.elapsed().as_secs_f64();
    store.pool().close().await;
    drop(backend);
    cleanup(&id).await;
    rate
}

/// XADD of the payloads the daemon enqueues (a MessagePack entry of `batch` records), `concurrency` at a
/// time for `duration`: logs per second.
async fn xadd_ceiling(batch: usize, concurrency: usize, duration: Duration) -> f64 {
    #[derive(Serialize)]
    struct Entry<'a> {
        traceparent: Option<String>,
        records: &'a [LogRecord],
    }
    let records = rows(batch);
    let payload = Arc::new(rmp_serde::to_vec_named(&Entry { traceparent: None, records: &records }).unwrap());
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("ledger_bench{}x:stream", Uuid::new_v4().simple());
    let added = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (mut conn, key, payload, added) = (conn.clone(), key.clone(), payload.clone(), added.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let id: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("n")
                    .arg(batch)
                    .arg("d")
                    .arg(payload.as_slice())
                    .query_async(&mut conn)
                    .await;
                if id.is_ok() {
                    added.fetch_add(1, Ordering::Relaxed);
                }
                // Keep the stream short, as the workers do, so memory is not what is measured.
                if added.load(Ordering::Relaxed) % 1000 == 0 {
                    let _: redis::RedisResult<i64> =
                        redis::cmd("XTRIM").arg(&key).arg("MAXLEN").arg("~").arg(1000).query_async(&mut conn).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rate = (added.load(Ordering::Relaxed) * batch as u64) as f64 / started.elapsed().as_secs_f64();
    let mut conn = conn;
    let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
    rate
}

/// Bare SQLite: `total` identical rows into an identical (identically migrated and tuned) database, in
/// transactions of `per_commit` rows: rows per second.
async fn sqlite_ceiling(total: u64, per_commit: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.backend.data_dir = dir.path().to_path_buf();
    let backend = Backend::open(&config).await.unwrap();
    let LogDb::Sqlite(store) = &backend.logs else { panic!("no SQLite") };
    let template = rows(per_commit);
    let started = Instant::now();
    let mut written = 0u64;
    while written < total.max(per_commit as u64) {
        let mut chunk = template.clone();
        for r in &mut chunk {
            r.id = Uuid::now_v7();
        }
        let mut tx = store.pool().begin().await.unwrap();
        ledger::store::logs::sqlite::insert_records(&mut tx, &chunk).await.unwrap();
        tx.commit().await.unwrap();
        written += chunk.len() as u64;
    }
    let rate = written as f64 / started.elapsed().as_secs_f64();
    store.pool().close().await;
    rate
}

/// The bare hyper server: reads each request's body and answers 202 with a small JSON body.
fn serve_hyper(port: u16) {
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    let body = Full::new(bytes::Bytes::from_static(
                        br#"{"accepted":1,"ids":["0192f0c1-0000-7000-8000-000000000000"]}"#,
                    ));
                    let response = hyper::Response::builder()
                        .status(202)
                        .header("content-type", "application/json")
                        .body(body)
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

/// Starts this binary as the bare hyper server; returns the process and its base URL.
fn start_hyper() -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--serve-hyper", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut port = String::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        port.push(byte[0] as char);
    }
    (child, format!("http://127.0.0.1:{}", port.trim()))
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios

struct Bench {
    args: Args,
    /// The batched HTTP maximum of this run, for the latency scenario's half rate.
    max_requests_per_sec: Option<f64>,
    /// The batched HTTP figure stored end to end, which gRPC's is compared with.
    http_stored: Option<f64>,
}

impl Bench {
    fn load(&self, logs_per_request: usize, rate: Option<f64>, freshness: Option<(String, String)>) -> Load {
        Load {
            concurrency: self.args.concurrency,
            duration: Duration::from_secs(self.args.duration),
            requests: self.args.count.map(|logs| logs.div_ceil(logs_per_request as u64)),
            rate,
            logs_per_request,
            freshness,
        }
    }

    /// Rows in the logs table now.
    async fn count(logs_url: &str) -> u64 {
        let pool = sqlx::PgPool::connect(logs_url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM logs").fetch_one(&pool).await.unwrap_or(0);
        pool.close().await;
        u64::try_from(n).unwrap_or(0)
    }

    /// Waits until the logs table holds `n` rows; returns when.
    async fn stored(logs_url: &str, n: u64) -> Instant {
        let pool = sqlx::PgPool::connect(logs_url).await.unwrap();
        loop {
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM logs").fetch_one(&pool).await.unwrap_or(0);
            if stored as u64 >= n {
                pool.close().await;
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn latency_figures(&self, scenario: &'static str, outcome: &Outcome, out: &mut Vec<Figure>, judged: bool) {
        let l = &outcome.latency_ms;
        for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
            let mut figure = Figure::new(scenario, format!("202 latency {name}"), percentile(l, p), "ms");
            if judged && name == "p99" {
                figure = figure.target(Goal::Below(20.0));
            }
            out.push(figure);
        }
        let f = &outcome.freshness_ms;
        if !f.is_empty() {
            out.push(Figure::new(scenario, "freshness p50", percentile(f, 0.5), "ms"));
            let mut p99 = Figure::new(scenario, "freshness p99", percentile(f, 0.99), "ms");
            if judged {
                p99 = p99.target(Goal::Below(1000.0));
            }
            out.push(p99);
        }
        if outcome.refused + outcome.failed > 0 {
            out.push(Figure::new(
                scenario,
                "requests refused or failed",
                (outcome.refused + outcome.failed) as f64,
                "",
            ));
        }
    }

    /// Batched ingestion into the shared backend, end to end, with its ceilings.
    async fn batched(&mut self, daemon: &Daemon, key: &str, protocol: Protocol, out: &mut Vec<Figure>) {
        let batch = self.args.batch;
        let concurrency = self.args.concurrency;
        let (scenario, target) = match protocol {
            Protocol::Http => ("batched", http_target(&daemon.base, key, batch, concurrency)),
            Protocol::Grpc => ("grpc", grpc_target(&daemon.grpc, key, batch).await),
            Protocol::Otlp => ("otlp", front_target(protocol, &daemon.base, key, batch, concurrency)),
            Protocol::Loki => ("loki", front_target(protocol, &daemon.base, key, batch, concurrency)),
            Protocol::Elastic => ("elastic", front_target(protocol, &daemon.base, key, batch, concurrency)),
        };
        let logs_url = daemon.logs_url().unwrap();
        let already = Self::count(&logs_url).await;
        let started = Instant::now();
        // At full speed without freshness probes, which read from the database being measured; freshness is
        // the latency scenario's.
        // The daemon's resident memory, sampled every 100 ms until every log is stored.
        let peak_rss = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (peak_rss, pid) = (peak_rss.clone(), daemon.child.id());
            tokio::spawn(async move {
                loop {
                    peak_rss.fetch_max(rss_of(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let cpu_before = cpu_of(daemon.child.id());
        let outcome = run_load(scenario, target, self.load(batch, None, None)).await;
        let done = Self::stored(&logs_url, already + outcome.acked_logs).await;
        let cpu = cpu_of(daemon.child.id()) - cpu_before;
        sampler.abort();
        let e2e = outcome.acked_logs as f64 / done.duration_since(started).as_secs_f64();
        if protocol == Protocol::Http {
            self.max_requests_per_sec = Some(outcome.requests_per_sec());
            self.http_stored = Some(e2e);
        }
        eprintln!("{scenario}: measuring the bare COPY (binary and text) and XADD ceilings");
        let copy = copy_ceiling(outcome.acked_logs.min(1_000_000), 4, CopyFormat::Binary).await;
        let text = copy_ceiling(outcome.acked_logs.min(1_000_000), 4, CopyFormat::Text).await;
        let xadd = xadd_ceiling(batch, self.args.concurrency, Duration::from_secs(self.args.duration.min(5))).await;
        out.push(Figure::new(scenario, "acknowledged logs/s", outcome.logs_per_sec(), "logs/s").against("XADD", xadd));
        out.push(Figure::new(scenario, "requests/s", outcome.requests_per_sec(), "req/s"));
        out.push(
            Figure::new(scenario, "end to end (stored) logs/s", e2e, "logs/s")
                .against("bare COPY", copy)
                .target(Goal::RatioAtLeast(0.8)),
        );
        if let (Protocol::Grpc, Some(http)) = (protocol, self.http_stored) {
            out.push(
                Figure::new(scenario, "stored, against HTTP", e2e, "logs/s")
                    .against("HTTP stored", http)
                    .target(Goal::RatioAtLeast(1.0)),
            );
        }
        // The daemon's own cost, steadier than the rates on a machine it shares with PostgreSQL and the load.
        let per_log = cpu * 1e6 / outcome.acked_logs.max(1) as f64;
        out.push(Figure::new(scenario, "daemon CPU per stored log", per_log, "µs"));
        let rss = peak_rss.load(Ordering::Relaxed) as f64 / 1e6;
        let mut rss = Figure::new(scenario, "peak RSS", rss, "MB");
        if protocol == Protocol::Http {
            rss = rss.target(Goal::Below(150.0));
        }
        out.push(rss);
        // Context: the same rows as text COPY (what a bare loader without a binary encoder gets).
        out.push(
            Figure::new(scenario, "bare text COPY, for context", text, "logs/s").against("bare binary COPY", copy),
        );
        self.latency_figures(scenario, &outcome, out, false);
    }

    /// Syslog over TCP: octet-counted RFC 5424 with the key in structured data, on a few connections, as fast
    /// as the daemon reads them (it reads a connection only while its batch is not in the stack, so the
    /// sending rate is the daemon's own). Syslog has no answers: the figures are logs written to the sockets
    /// and logs stored.
    async fn syslog(&self, daemon: &Daemon, key: &str, out: &mut Vec<Figure>) {
        use tokio::io::AsyncWriteExt;
        let logs_url = daemon.logs_url().unwrap();
        let already = Self::count(&logs_url).await;
        // 64 pre-encoded chunks of 100 messages each.
        let chunks: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..64)
                .map(|c| {
                    let mut chunk = Vec::new();
                    for i in c * 100..(c + 1) * 100 {
                        let log = payload::log(i);
                        let severity = match log["level"].as_str().unwrap_or_default() {
                            "debug" => 7,
                            "error" => 3,
                            "warning" => 4,
                            _ => 6,
                        };
                        let message = format!(
                            "<{}>1 2026-11-30T10:00:00.000Z {} {} - - [ledger@41058 key=\"{key}\"] {}",
                            8 + severity,
                            log["host"].as_str().unwrap_or("-"),
                            log["service"].as_str().unwrap_or("-"),
                            log["message"].as_str().unwrap_or_default()
                        );
                        chunk.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
                    }
                    chunk
                })
                .collect(),
        );
        let connections = self.args.concurrency.clamp(1, 8);
        let until = Instant::now() + Duration::from_secs(self.args.duration);
        let started = Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..connections)
            .map(|c| {
                let (chunks, sent, addr) = (chunks.clone(), sent.clone(), daemon.syslog.clone());
                tokio::spawn(async move {
                    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let mut i = c;
                    while Instant::now() < until {
                        stream.write_all(&chunks[i % chunks.len()]).await.unwrap();
                        sent.fetch_add(100, Ordering::Relaxed);
                        i += connections;
                    }
                    stream.shutdown().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let sending = started.elapsed().as_secs_f64();
        let sent = sent.load(Ordering::Relaxed);
        let done = Self::stored(&logs_url, already + sent).await;
        let stored = sent as f64 / done.duration_since(started).as_secs_f64();
        let copy = copy_ceiling(sent.min(1_000_000), 4, CopyFormat::Binary).await;
        out.push(Figure::new("syslog", "logs written to the sockets/s", sent as f64 / sending, "logs/s"));
        out.push(Figure::new("syslog", "end to end (stored) logs/s", stored, "logs/s").against("bare COPY", copy));
    }

    /// Single-log requests against the bare hyper server.
    async fn single(&self, daemon: &Daemon, key: &str, out: &mut Vec<Figure>) {
        let logs_url = daemon.logs_url().unwrap();
        let already = Self::count(&logs_url).await;
        let outcome =
            run_load("single", http_target(&daemon.base, key, 1, self.args.concurrency), self.load(1, None, None))
                .await;
        // Drained before the next scenario, which must not measure this one's backlog.
        Self::stored(&logs_url, already + outcome.acked_logs).await;
        eprintln!("single: measuring the bare hyper ceiling");
        let (mut hyper, base) = start_hyper();
        let ceiling =
            run_load("hyper", http_target(&base, key, 1, self.args.concurrency), self.load(1, None, None)).await;
        let _ = hyper.kill();
        let _ = hyper.wait();
        out.push(
            Figure::new("single", "single-log requests/s", outcome.requests_per_sec(), "req/s")
                .against("bare hyper", ceiling.requests_per_sec())
                .target(Goal::RatioAtLeast(0.4)),
        );
        self.latency_figures("single", &outcome, out, false);
    }

    /// A fixed rate, half the batched maximum unless given.
    async fn latency(&mut self, daemon: &Daemon, key: &str, out: &mut Vec<Figure>) {
        let rate = match (self.args.rate, self.max_requests_per_sec) {
            (Some(rate), _) => rate,
            (None, Some(max)) => max / 2.0,
            (None, None) => {
                let probe = Load { duration: Duration::from_secs(5), ..self.load(self.args.batch, None, None) };
                let target = http_target(&daemon.base, key, self.args.batch, self.args.concurrency);
                let max = run_load("max", target, probe).await.requests_per_sec();
                self.max_requests_per_sec = Some(max);
                max / 2.0
            }
        };
        let target = http_target(&daemon.base, key, self.args.batch, self.args.concurrency);
        let load = self.load(self.args.batch, Some(rate), Some((daemon.base.clone(), key.to_owned())));
        let outcome = run_load("latency", target, load).await;
        out.push(Figure::new("latency", "fixed rate", rate, "req/s"));
        out.push(Figure::new("latency", "acknowledged logs/s", outcome.logs_per_sec(), "logs/s"));
        self.latency_figures("latency", &outcome, out, true);
    }

    /// `batched` end to end on one daemon with each batch size, then with the load spread over more projects
    /// (one key each, request i sent with key i mod n): logs/s acknowledged and stored, and requests/s.
    async fn scaling(&mut self, out: &mut Vec<Figure>) {
        let daemon = Daemon::start(BackendKind::Shared, &[], &self.args.daemon_env);
        let client = reqwest::Client::new();
        let key = tenant(&client, &daemon.base).await;
        let logs_url = daemon.logs_url().unwrap();
        let stored_at = |what: String, target: Target, batch: usize| {
            let load = self.load(batch, None, None);
            let logs_url = logs_url.clone();
            async move {
                let already = Self::count(&logs_url).await;
                let started = Instant::now();
                let outcome = run_load(&what, target, load).await;
                let done = Self::stored(&logs_url, already + outcome.acked_logs).await;
                (outcome.acked_logs as f64 / done.duration_since(started).as_secs_f64(), outcome)
            }
        };
        let mut base = None;
        for batch in [1, 10, 100, 1000] {
            let target = http_target(&daemon.base, &key, batch, self.args.concurrency);
            let (stored, outcome) = stored_at(format!("batch {batch}"), target, batch).await;
            let scenario = "scaling";
            out.push(Figure::new(
                scenario,
                format!("batches of {batch}: requests/s"),
                outcome.requests_per_sec(),
                "req/s",
            ));
            let figure = Figure::new(scenario, format!("batches of {batch}: stored logs/s"), stored, "logs/s");
            out.push(match base {
                Some(b) => figure.against("batches of 1", b),
                None => figure,
            });
            base = base.or(Some(stored));
        }
        let mut one = None;
        for projects in [1, 100, 10_000] {
            eprintln!("scaling: creating {projects} projects");
            let keys = if projects == 1 { vec![key.clone()] } else { tenants(&client, &daemon.base, projects).await };
            eprintln!("scaling: sending to {projects} projects");
            let mut target = http_target(&daemon.base, &key, self.args.batch, self.args.concurrency);
            if let Target::Http { keys: k, .. } = &mut target {
                *k = Arc::new(keys);
            }
            let (stored, _) = stored_at(format!("{projects} proj"), target, self.args.batch).await;
            let figure = Figure::new("scaling", format!("{projects} projects: stored logs/s"), stored, "logs/s");
            out.push(match one {
                Some(b) => figure.against("1 project", b),
                None => figure,
            });
            one = one.or(Some(stored));
        }
        daemon.stop().await;
    }

    /// Resident memory with 100,000 logs queued: a daemon without workers, so they stay queued.
    async fn rss(&self, out: &mut Vec<Figure>) {
        let daemon = Daemon::start(BackendKind::Shared, &[("LEDGER__ROLES__WORKERS", "false")], &self.args.daemon_env);
        let client = reqwest::Client::new();
        let key = tenant(&client, &daemon.base).await;
        let idle = daemon.rss_bytes();
        let target = http_target(&daemon.base, &key, 100, self.args.concurrency);
        let load = Load { requests: Some(1000), duration: Duration::from_secs(300), ..self.load(100, None, None) };
        let outcome = run_load("rss", target, load).await;
        let text = client.get(format!("{}/metrics", daemon.base)).send().await.unwrap().text().await.unwrap();
        let queued = text
            .lines()
            .find_map(|l| l.strip_prefix("ledger_queue_depth "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let rss = daemon.rss_bytes();
        out.push(Figure::new("rss", "logs queued", queued.max(outcome.acked_logs as f64), "logs"));
        out.push(Figure::new("rss", "RSS idle", idle as f64 / 1e6, "MB"));
        out.push(Figure::new("rss", "RSS with the logs queued", rss as f64 / 1e6, "MB").target(Goal::Below(300.0)));
        daemon.stop().await;
    }

    /// Batched ingestion into the embedded backend against a bare SQLite insert.
    async fn embedded(&self, out: &mut Vec<Figure>) {
        let daemon = Daemon::start(BackendKind::Embedded, &[], &self.args.daemon_env);
        let client = reqwest::Client::new();
        let key = tenant(&client, &daemon.base).await;
        let target = http_target(&daemon.base, &key, self.args.batch, self.args.concurrency);
        let freshness = Some((daemon.base.clone(), key.clone()));
        let outcome = run_load("embedded", target, self.load(self.args.batch, None, freshness)).await;
        daemon.stop().await;
        eprintln!("embedded: measuring the bare SQLite ceiling");
        let ceiling = sqlite_ceiling(outcome.acked_logs.min(1_000_000), 1000).await;
        out.push(
            Figure::new("embedded", "acknowledged (committed) logs/s", outcome.logs_per_sec(), "logs/s")
                .against("bare SQLite insert", ceiling)
                .target(Goal::RatioAtLeast(0.9)),
        );
        // Issue 14's second embedded target: 1.5 × the 69.1k logs/s of 2026-11-27.
        out.push(
            Figure::new("embedded", "committed, against 2026-11-27", outcome.logs_per_sec(), "logs/s")
                .against("69.1k logs/s", 69_100.0)
                .target(Goal::RatioAtLeast(1.5)),
        );
        out.push(Figure::new("embedded", "requests/s", outcome.requests_per_sec(), "req/s"));
        self.latency_figures("embedded", &outcome, out, false);
    }

    /// Batched HTTP on a new shared daemon started with `config` and `env`, for at least `at_least`: the logs
    /// it stored per second, from the first request until the last acknowledged log is stored; and the
    /// daemon, still running, for more figures.
    async fn stored_rate(&self, what: &str, config: &str, env: &[(&str, &str)], at_least: Duration) -> (f64, Daemon) {
        let (stored, _, daemon) = self.stored_outcome(what, config, env, at_least).await;
        (stored, daemon)
    }

    /// [`Bench::stored_rate`], with the load's outcome (acknowledged rate, latencies).
    async fn stored_outcome(
        &self,
        what: &str,
        config: &str,
        env: &[(&str, &str)],
        at_least: Duration,
    ) -> (f64, Outcome, Daemon) {
        let daemon = Daemon::start_with_config(BackendKind::Shared, config, env, &self.args.daemon_env);
        let key = tenant(&reqwest::Client::new(), &daemon.base).await;
        let target = http_target(&daemon.base, &key, self.args.batch, self.args.concurrency);
        let logs_url = daemon.logs_url().unwrap();
        let already = Self::count(&logs_url).await;
        let started = Instant::now();
        let mut load = self.load(self.args.batch, None, None);
        load.duration = load.duration.max(at_least);
        let outcome = run_load(what, target, load).await;
        let done = Self::stored(&logs_url, already + outcome.acked_logs).await;
        (outcome.acked_logs as f64 / done.duration_since(started).as_secs_f64(), outcome, daemon)
    }

    /// Batched HTTP, stored end to end, on a daemon with the search index off and on another with it on.
    async fn search(&mut self, out: &mut Vec<Figure>) {
        let mut stored = [0.0; 2];
        for (i, index) in ["false", "true"].into_iter().enumerate() {
            let env = [("LEDGER__SEARCH__INDEX", index)];
            let (rate, daemon) = self.stored_rate("search", CONFIG, &env, Duration::from_secs(150)).await;
            stored[i] = rate;
            if index == "true" {
                let text = reqwest::get(format!("{}/metrics", daemon.base)).await.unwrap().text().await.unwrap();
                let metric = |name: &str| {
                    text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok()))
                };
                let lag: f64 = metric("ledger_search_index_lag_seconds").unwrap_or(f64::NAN);
                let indexed: f64 = metric("ledger_search_indexed_logs_total").unwrap_or(0.0);
                out.push(Figure::new("search", "index lag at the end", lag, "s"));
                out.push(Figure::new("search", "logs indexed during the run", indexed, "logs"));
            }
            daemon.stop().await;
        }
        out.push(
            Figure::new("search", "stored logs/s with the search index", stored[1], "logs/s")
                .against("the same without it", stored[0])
                .target(Goal::RatioAtLeast(0.95)),
        );
    }

    /// Batched HTTP, stored end to end, without stage rules and then with them (see the module's doc).
    async fn stages(&mut self, out: &mut Vec<Figure>) {
        const RULES: &str = r#"
[stages.parse]
rules = [{ services = ["worker"], format = "logfmt" }, { format = "json" }]

[stages.redact]
rules = [
  { detector = "email" }, { detector = "card" }, { detector = "ipv4" }, { detector = "ipv6" },
  { detector = "jwt" }, { detector = "bearer" }, { detector = "cloud_keys" },
  { attribute = "password" }, { pattern = 'CUST-[0-9]{6}' }, { pattern = 'ORD-[0-9]{8}' },
]

[stages.sample]
rules = [
  { services = ["healthcheck"], action = "drop" },
  { levels = ["DEBUG"], environments = ["staging"], action = "drop" },
]
"#;
        let dir = tempfile::tempdir().unwrap();
        let with_rules = dir.path().join("config.toml");
        let base = std::fs::read_to_string(CONFIG).unwrap();
        std::fs::write(&with_rules, format!("{base}\n{RULES}")).unwrap();
        let mut stored = [0.0; 2];
        for (i, config) in [CONFIG.to_owned(), with_rules.display().to_string()].iter().enumerate() {
            let (rate, daemon) = self.stored_rate("stages", config, &[], Duration::from_secs(60)).await;
            stored[i] = rate;
            daemon.stop().await;
        }
        out.push(
            Figure::new("stages", "stored logs/s with parse, redact and drop rules", stored[1], "logs/s")
                .against("the same without rules", stored[0])
                .target(Goal::RatioAtLeast(0.9)),
        );
    }

    /// Batched HTTP, stored end to end, on the single Redis, on a Redis Cluster, and on the cluster with
    /// replica acknowledgement (see the module's doc).
    async fn cluster(&mut self, out: &mut Vec<Figure>) {
        let cluster = cluster::RedisCluster::start();
        let url = cluster.url();
        let runs: [&[(&str, &str)]; 3] = [
            &[],
            &[("LEDGER__REDIS__URL", &url)],
            &[("LEDGER__REDIS__URL", &url), ("LEDGER__REDIS__MIN_REPLICAS_ACKED", "1")],
        ];
        let names = ["one Redis", "a Redis Cluster (3 primaries)", "the cluster, min_replicas_acked = 1"];
        let (mut stored, mut acked, mut p99) = ([0.0; 3], [0.0; 3], [0.0; 3]);
        for (i, env) in runs.into_iter().enumerate() {
            let (rate, outcome, daemon) = self.stored_outcome("cluster", CONFIG, env, Duration::from_secs(60)).await;
            (stored[i], acked[i], p99[i]) = (rate, outcome.logs_per_sec(), percentile(&outcome.latency_ms, 0.99));
            daemon.stop().await;
        }
        for i in 0..3 {
            out.push(Figure::new("cluster", format!("{}: acknowledged logs/s", names[i]), acked[i], "logs/s"));
            out.push(Figure::new("cluster", format!("{}: 202 latency p99", names[i]), p99[i], "ms"));
        }
        out.push(
            Figure::new("cluster", "stored logs/s on a Redis Cluster (3 primaries)", stored[1], "logs/s")
                .against("the same on one Redis", stored[0]),
        );
        out.push(
            Figure::new("cluster", "stored logs/s with min_replicas_acked = 1", stored[2], "logs/s")
                .against("the cluster without it", stored[1]),
        );
        out.push(
            Figure::new("cluster", "acknowledged logs/s with min_replicas_acked = 1", acked[2], "logs/s")
                .against("the cluster without it", acked[1]),
        );
    }

    async fn run(&mut self) -> Vec<Figure> {
        let s = self.args.scenario;
        let every = s == Scenario::All;
        let mut out = Vec::new();
        let shared_needed = every
            || matches!(
                s,
                Scenario::Batched | Scenario::Grpc | Scenario::Single | Scenario::Latency | Scenario::Fronts
            );
        if shared_needed {
            let syslog: &[(&str, &str)] =
                if s == Scenario::Fronts { &[("LEDGER__SYSLOG__TCP_ADDR", "127.0.0.1:0")] } else { &[] };
            let daemon = Daemon::start(BackendKind::Shared, syslog, &self.args.daemon_env);
            let key = tenant(&reqwest::Client::new(), &daemon.base).await;
            if every || s == Scenario::Batched {
                let protocol = if every { Protocol::Http } else { self.args.protocol };
                self.batched(&daemon, &key, protocol, &mut out).await;
            }
            if every || s == Scenario::Grpc {
                self.batched(&daemon, &key, Protocol::Grpc, &mut out).await;
            }
            if every || s == Scenario::Single {
                self.single(&daemon, &key, &mut out).await;
            }
            if every || s == Scenario::Latency {
                self.latency(&daemon, &key, &mut out).await;
            }
            if s == Scenario::Fronts {
                // The native path first, so each front's figure stands beside it in the same run.
                for protocol in [Protocol::Http, Protocol::Otlp, Protocol::Loki, Protocol::Elastic] {
                    self.batched(&daemon, &key, protocol, &mut out).await;
                }
                self.syslog(&daemon, &key, &mut out).await;
            }
            daemon.stop().await;
        }
        if every || s == Scenario::Rss {
            self.rss(&mut out).await;
        }
        if every || s == Scenario::Embedded {
            self.embedded(&mut out).await;
        }
        if s == Scenario::Search {
            self.search(&mut out).await;
        }
        if s == Scenario::Stages {
            self.stages(&mut out).await;
        }
        if s == Scenario::Cluster {
            self.cluster(&mut out).await;
        }
        if s == Scenario::Scaling {
            self.scaling(&mut out).await;
        }
        out
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
    format!("{cores} cores, {memory:.0} GiB")
}

fn main() {
    let args = Args::parse();
    if let Some(port) = args.serve_hyper {
        serve_hyper(port);
        return;
    }
    // The generator's own runtime; the daemon, PostgreSQL and Redis are other processes on the same cores.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut runs = Vec::new();
    let mut bench = Bench { args: args.clone(), max_requests_per_sec: None, http_stored: None };
    for run in 0..args.runs {
        eprintln!("ledger-bench: run {} of {}", run + 1, args.runs);
        bench.max_requests_per_sec = None;
        runs.push(runtime.block_on(bench.run()));
    }
    let figures = if runs.len() == 1 { runs.remove(0) } else { medians(&runs) };
    let when = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    println!(
        "ledger-bench: {} run(s){}, concurrency {}, batches of {}, {} s per scenario; {} ({when})",
        args.runs,
        if args.runs > 1 { " (medians)" } else { "" },
        args.concurrency,
        args.batch,
        args.duration,
        machine()
    );
    let mut scenario = "";
    for figure in &figures {
        if figure.scenario != scenario {
            scenario = figure.scenario;
            println!("{scenario}");
        }
        figure.print();
    }
    let missed: Vec<&Figure> = figures.iter().filter(|f| f.met == Some(false)).collect();
    println!("targets: {} met, {} not met", figures.iter().filter(|f| f.met == Some(true)).count(), missed.len());
    if let Some(path) = &args.json {
        let report = json!({"machine": machine(), "when": when.to_string(), "runs": args.runs,
                            "concurrency": args.concurrency, "batch": args.batch, "duration_secs": args.duration,
                            "figures": figures});
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
        eprintln!("ledger-bench: figures written to {}", path.display());
    }
}
