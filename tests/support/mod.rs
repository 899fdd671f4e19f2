//! Test support: the real `ledger` binary, started on free ports against a fresh backend.
//!
//! - Embedded: a temporary data directory.
//! - Shared: fresh PostgreSQL databases and a fresh Redis key prefix, so tests run in parallel. The server
//!   URLs come from `LEDGER_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`) and
//!   `LEDGER_TEST_REDIS` (default `redis://127.0.0.1:6379`). Both are dropped when the daemon is.
//!
//! The daemon binds port 0 and says where in its `ledger ready` log line, which is how tests find it.

#![allow(dead_code, clippy::unwrap_used)]

/// A TCP port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub mod cluster;
pub mod proxy;
pub mod replica;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Shared,
}

pub fn postgres_server() -> String {
    std::env::var("LEDGER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("LEDGER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh backend: its configuration as environment variables, and what to clean up.
pub struct Fresh {
    pub kind: Kind,
    pub id: String,
    pub dir: tempfile::TempDir,
    /// The Redis (or Redis Cluster) it uses: `redis.url`.
    pub redis: String,
    /// Whether dropping this cleans the databases and keys up (a sibling's does not).
    owner: bool,
}

/// `host:port` of a `scheme://[user@]host[:port][/...]` URL.
/// `[limits]` at the types' own bounds.
pub const OPERATOR_CEILINGS: [(&str, &str); 5] = [
    ("LEDGER__LIMITS__MAX_RATE_LIMIT_PER_MINUTE", "4294967295"),
    ("LEDGER__LIMITS__MAX_RATE_LIMIT_PER_HOUR", "4294967295"),
    ("LEDGER__LIMITS__MAX_DAILY_QUOTA", "9223372036854775807"),
    ("LEDGER__LIMITS__MAX_RETENTION_DAYS", "3650"),
    ("LEDGER__LIMITS__MAX_QUEUE_DEPTH", "9223372036854775807"),
];

pub fn address(url: &str, default_port: u16) -> String {
    let authority = url.split("://").nth(1).unwrap_or(url).rsplit('@').next().unwrap_or(url);
    let host_port = authority.split('/').next().unwrap_or(authority);
    if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:{default_port}") }
}

/// Panics with what to do when a service the shared-backend tests need is not listening.
fn require(service: &str, url: &str, default_port: u16) {
    let address = address(url, default_port);
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&address)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "{service} is not reachable at {address}: the shared-backend tests need it. Start it, point \
         LEDGER_TEST_POSTGRES / LEDGER_TEST_REDIS elsewhere, or run `bash .ci/run`, which starts (and if \
         need be installs) PostgreSQL and Redis before the tests"
    );
}

impl Fresh {
    pub fn new(kind: Kind) -> Fresh {
        if kind == Kind::Shared {
            require("PostgreSQL", &postgres_server(), 5432);
            require("Redis", &redis_url(), 6379);
        }
        let id = format!("t{}", uuid::Uuid::new_v4().simple());
        Fresh { kind, id, dir: tempfile::tempdir().unwrap(), redis: redis_url(), owner: true }
    }

    /// A fresh shared backend on another Redis (a test's own Redis Cluster: `redis.url`), whose keys go
    /// away with it.
    pub fn on_redis(url: &str) -> Fresh {
        let mut fresh = Fresh::new(Kind::Shared);
        fresh.redis = url.to_owned();
        fresh
    }

    /// The same shared backend, for a second instance; dropping it cleans nothing up.
    pub fn sibling(&self) -> Fresh {
        Fresh {
            kind: self.kind,
            id: self.id.clone(),
            dir: tempfile::tempdir().unwrap(),
            redis: self.redis.clone(),
            owner: false,
        }
    }

    pub fn auth_db(&self) -> String {
        format!("ledger_{}_auth", self.id)
    }

    pub fn logs_db(&self) -> String {
        format!("ledger_{}_logs", self.id)
    }

    pub fn prefix(&self) -> String {
        format!("ledger_{}:", self.id)
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("LEDGER__SERVER__HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("LEDGER__SERVER__GRPC_ADDR".into(), "127.0.0.1:0".into()),
            ("LEDGER__AUTH__BCRYPT_COST".into(), "4".into()),
            ("LEDGER__BACKEND__DATA_DIR".into(), self.dir.path().display().to_string()),
            ("LEDGER__TELEMETRY__LOG_LEVEL".into(), "info".into()),
        ];
        // The operator of a test daemon lets owners set any setting (tests of `[limits]` set their own).
        env.extend(OPERATOR_CEILINGS.map(|(k, v)| (k.to_owned(), v.to_owned())));
        if self.kind == Kind::Shared {
            let pg = postgres_server();
            env.extend([
                ("LEDGER__BACKEND__KIND".into(), "shared".into()),
                ("LEDGER__AUTH__JWT_SECRET".into(), JWT_SECRET.into()),
                ("LEDGER__POSTGRES__AUTH_URL".into(), format!("{pg}/{}", self.auth_db())),
                ("LEDGER__POSTGRES__LOGS_URL".into(), format!("{pg}/{}", self.logs_db())),
                ("LEDGER__POSTGRES__MAX_CONNECTIONS".into(), "4".into()),
                ("LEDGER__REDIS__URL".into(), self.redis.clone()),
                ("LEDGER__REDIS__KEY_PREFIX".into(), self.prefix()),
                // A killed daemon's shards are taken over when its lease lapses: keep that short in tests.
                ("LEDGER__QUEUE__LEASE_SECS".into(), "2".into()),
            ]);
        }
        env
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if self.kind != Kind::Shared || !self.owner {
            return;
        }
        let (dbs, prefix) = (vec![self.auth_db(), self.logs_db()], self.prefix());
        // Another Redis (a test's own cluster) goes away with its test.
        let own_redis = self.redis == redis_url();
        // Drop may run inside a test's runtime, which cannot block on another: use a thread of our own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{}/postgres", postgres_server())).await
                {
                    for db in dbs {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await;
                    }
                }
                if own_redis
                    && let Ok(client) = redis::Client::open(redis_url())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> =
                        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A running daemon. Killed when dropped.
pub struct Daemon {
    child: Child,
    pub base: String,
    pub grpc: String,
    /// `host:port` of the syslog listener, when `[syslog] tcp_addr` is set.
    pub syslog: String,
    /// The backend; `None` only while `restart` moves it to the next daemon.
    fresh: Option<Fresh>,
    extra: Vec<(String, String)>,
    /// The config file it was started with.
    config: String,
    output: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

/// The response of a test request: status, headers and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts API.md's error body with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
        assert_eq!(self.body["error"]["request_id"].as_str(), self.header("x-request-id"), "{self:?}");
    }
}

pub fn ledger_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ledger")
}

pub fn config_path() -> String {
    format!("{}/config.toml", env!("CARGO_MANIFEST_DIR"))
}

impl Daemon {
    /// A metric's value from `/metrics`, summed over its label sets that contain `labels` (`""`: all of
    /// them); `None` when the daemon shows no such series.
    pub async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let text = self.client().get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    pub async fn start(kind: Kind) -> Daemon {
        Self::start_with(Fresh::new(kind), &[]).await
    }

    /// Starts a daemon on `fresh` with extra environment overrides.
    pub async fn start_with(fresh: Fresh, extra: &[(&str, &str)]) -> Daemon {
        Self::start_with_config(fresh, &config_path(), extra).await
    }

    /// Starts a daemon on `fresh` with the config file `config` (and extra environment overrides).
    pub async fn start_with_config(fresh: Fresh, config: &str, extra: &[(&str, &str)]) -> Daemon {
        let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Self::launch(fresh, extra, config.to_owned()).await
    }

    /// Another instance on the same shared backend and settings.
    pub async fn sibling(&self) -> Daemon {
        Self::launch(self.fresh().sibling(), self.extra.clone(), self.config.clone()).await
    }

    /// Kills this daemon (SIGKILL) and starts another on the same backend and settings.
    pub async fn restart(mut self) -> Daemon {
        let extra = std::mem::take(&mut self.extra);
        self.relaunch(extra).await
    }

    /// Kills this daemon (SIGKILL) and starts another on the same backend, with other overrides.
    pub async fn restart_with(self, extra: &[(&str, &str)]) -> Daemon {
        let extra = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.relaunch(extra).await
    }

    async fn relaunch(mut self, extra: Vec<(String, String)>) -> Daemon {
        self.kill();
        let fresh = self.fresh.take().unwrap();
        let config = std::mem::take(&mut self.config);
        Self::launch(fresh, extra, config).await
    }

    async fn launch(fresh: Fresh, extra: Vec<(String, String)>, config: String) -> Daemon {
        let mut command = Command::new(ledger_binary());
        command.arg("--config").arg(&config).arg("serve");
        command.env_remove("RUST_LOG");
        for (k, v) in fresh.env() {
            command.env(k, v);
        }
        for (k, v) in &extra {
            command.env(k, v);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let ready_tx = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    // Kept before it is announced, so the output read after the start holds the ready line.
                    output.lock().unwrap().push(line.clone());
                    if line.contains("\"ledger ready") {
                        let _ = ready_tx.send(line);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            if let Ok(line) = ready_rx.recv_timeout(Duration::from_millis(50)) {
                break line;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("ledger exited with {status} before it was ready:\n{}", output.lock().unwrap().join("\n"));
            }
            assert!(Instant::now() < deadline, "ledger not ready within 60 s:\n{}", output.lock().unwrap().join("\n"));
        };
        let ready: Value = serde_json::from_str(&ready).unwrap();
        let base = format!("http://{}", ready["http_addr"].as_str().unwrap());
        let grpc = format!("http://{}", ready["grpc_addr"].as_str().unwrap_or_default());
        let syslog = ready["syslog_addr"].as_str().unwrap_or_default().to_owned();
        // Idle connections are dropped before the daemon's own 10 s keep-alive limit closes them: a test that
        // blocked its runtime (a CLI run) must not then send on a connection the daemon has closed.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Daemon { child, base, grpc, syslog, fresh: Some(fresh), extra, config, output, client }
    }

    /// Talks to a daemon serving TLS with a certificate for `localhost` signed by `ca_pem`: every helper
    /// then goes over HTTPS.
    pub fn use_tls(&mut self, ca_pem: &[u8]) {
        let http: std::net::SocketAddr = self.base.trim_start_matches("http://").parse().unwrap();
        let grpc = self.grpc.trim_start_matches("http://").rsplit(':').next().unwrap().to_owned();
        self.base = format!("https://localhost:{}", http.port());
        self.grpc = format!("https://localhost:{grpc}");
        self.client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(5))
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
            .resolve("localhost", http)
            .build()
            .unwrap();
    }

    pub fn kind(&self) -> Kind {
        self.fresh().kind
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// Runs `ledger <args>` against this daemon's backend and configuration: (exit success, stdout, stderr).
    pub fn ledger(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = Command::new(ledger_binary());
        command.arg("--config").arg(&self.config).args(args).env_remove("RUST_LOG");
        for (k, v) in self.fresh().env().into_iter().chain(self.extra.iter().cloned()) {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (out.status.success(), text(out.stdout), text(out.stderr))
    }

    /// `host:port` of the REST listener.
    pub fn http_addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// `host:port` of the gRPC listener.
    pub fn grpc_addr(&self) -> String {
        self.grpc.trim_start_matches("http://").to_owned()
    }

    pub fn fresh(&self) -> &Fresh {
        self.fresh.as_ref().unwrap()
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit (at most 60 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait_exit()
    }

    /// Sends SIGTERM and returns.
    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// Waits for the daemon to exit (at most 60 s).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ledger did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon without warning (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with an optional bearer credential and JSON body.
    pub async fn call(&self, method: Method, path: &str, bearer: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::reply(request.send().await.unwrap()).await
    }

    pub async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body }
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        self.call(Method::GET, path, bearer, None).await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, bearer, Some(body)).await
    }

    pub async fn patch(&self, path: &str, bearer: Option<&str>, body: Value) -> Reply {
        self.call(Method::PATCH, path, bearer, Some(body)).await
    }

    pub async fn delete(&self, path: &str, bearer: Option<&str>) -> Reply {
        self.call(Method::DELETE, path, bearer, None).await
    }

    /// Registers `email` and returns its session token.
    pub async fn signup(&self, email: &str) -> String {
        let r = self.post("/v1/register", None, json!({"email": email, "password": "correct horse"})).await;
        assert_eq!(r.status, 201, "{r:?}");
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// Creates a project and returns its id.
    pub async fn project(&self, token: &str, name: &str) -> String {
        let r = self.post("/v1/projects", Some(token), json!({"name": name})).await;
        assert_eq!(r.status, 201, "{r:?}");
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// A user, a project and a key with both scopes: (session token, project id, key).
    pub async fn tenant(&self, email: &str) -> (String, String, String) {
        let token = self.signup(email).await;
        let project = self.project(&token, "app").await;
        let (_, key) = self.key(&token, &project, &["ingest", "query"]).await;
        (token, project, key)
    }

    /// Posts logs with an API key.
    pub async fn ingest(&self, key: &str, body: Value) -> Reply {
        let response =
            self.client.post(self.url("/v1/logs")).header("x-api-key", key).json(&body).send().await.unwrap();
        Self::reply(response).await
    }

    /// Waits until the log `id` can be read back with `key`, and returns it.
    pub async fn stored(&self, key: &str, id: &str) -> Value {
        eventually(Duration::from_secs(20), &format!("log {id} is queryable"), || async {
            let r = self.get(&format!("/v1/logs/{id}"), Some(key)).await;
            (r.status == 200).then_some(r.body)
        })
        .await
    }

    /// Every log of the key's project, whenever stamped, paging with `page` logs at a time.
    pub async fn all_logs(&self, key: &str, page: usize) -> Vec<Value> {
        let from = "1970-01-01T00:00:00Z";
        let to =
            (chrono::Utc::now() + chrono::Duration::hours(48)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut logs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("/v1/logs?limit={page}&from={}&to={}", urlencode(from), urlencode(&to));
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let r = self.get(&url, Some(key)).await;
            assert_eq!(r.status, 200, "{r:?}");
            logs.extend(r.body["logs"].as_array().unwrap().iter().cloned());
            match r.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return logs,
            }
        }
    }

    /// Creates a key with `scopes` and returns (key id, key).
    pub async fn key(&self, token: &str, project: &str, scopes: &[&str]) -> (String, String) {
        let r = self.post(&format!("/v1/projects/{project}/keys"), Some(token), json!({"scopes": scopes})).await;
        assert_eq!(r.status, 201, "{r:?}");
        (r.body["id"].as_str().unwrap().to_owned(), r.body["key"].as_str().unwrap().to_owned())
    }
}

/// Percent-encodes a query parameter value (enough for times and words).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs each named `async fn(Daemon)` against a fresh daemon on each backend: `embedded::name` and
/// `shared::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Daemon::start($crate::support::Kind::Embedded).await).await
                }
            )*
        }
        mod shared {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Daemon::start($crate::support::Kind::Shared).await).await
                }
            )*
        }
    };
}

/// Runs each named `async fn(Kind)` on each backend: `embedded::name` and `shared::name`.
#[macro_export]
macro_rules! on_both_kinds {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::support::Kind::Embedded).await }
            )*
        }
        mod shared {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::support::Kind::Shared).await }
            )*
        }
    };
}

/// Clients sending batches of 10 logs to a daemon until stopped, keeping the ids of every 202 and counting
/// the other answers by status (0: no answer).
pub struct Clients {
    acknowledged: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<std::collections::BTreeMap<u16, usize>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    pub fn start(d: &Daemon, key: &str, clients: usize) -> Clients {
        use std::sync::atomic::Ordering;
        let mut started =
            Clients { acknowledged: Arc::default(), refused: Arc::default(), stop: Arc::default(), tasks: Vec::new() };
        for client in 0..clients {
            let (url, key) = (d.url("/v1/logs"), key.to_owned());
            let (acknowledged, refused, stop) =
                (started.acknowledged.clone(), started.refused.clone(), started.stop.clone());
            started.tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let mut batch = 0;
                while !stop.load(Ordering::SeqCst) {
                    batch += 1;
                    let logs: Vec<_> =
                        (0..10).map(|i| json!({"message": format!("client {client} batch {batch} log {i}")})).collect();
                    match http.post(&url).header("x-api-key", &key).json(&json!({ "logs": logs })).send().await {
                        Ok(response) if response.status() == 202 => {
                            let body: Value = response.json().await.unwrap();
                            let ids = body["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned());
                            acknowledged.lock().unwrap().extend(ids);
                        }
                        // Refused or cut off: not acknowledged, so no promise was made. Back off a little.
                        other => {
                            let status = other.map(|r| r.status().as_u16()).unwrap_or(0);
                            *refused.lock().unwrap().entry(status).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        started
    }

    /// Logs acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits until `n` logs are acknowledged in all (at most a minute).
    pub async fn until_acknowledged(&self, n: usize) {
        eventually(Duration::from_secs(60), &format!("{n} logs acknowledged"), || async {
            (self.acknowledged() >= n).then_some(())
        })
        .await;
    }

    /// Stops the clients: the ids acknowledged, and the other answers by status.
    pub async fn stop(self) -> (Vec<String>, std::collections::BTreeMap<u16, usize>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let refused = self.refused.lock().unwrap().clone();
        (acknowledged, refused)
    }
}

/// Asserts that every acknowledged id is stored, once, in `key`'s project, and that no id was acknowledged
/// twice; says what it counted.
pub async fn assert_stored_once(d: &Daemon, key: &str, acknowledged: &[String], within: Duration) -> String {
    use std::collections::{HashMap, HashSet};
    let expected: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let stored = eventually(within, "every acknowledged log is stored", || async {
        let logs = d.all_logs(key, 1000).await;
        let ids: Vec<String> = logs.iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        let present: HashSet<&str> = ids.iter().map(String::as_str).collect();
        expected.is_subset(&present).then_some(ids)
    })
    .await;
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *copies.entry(id.as_str()).or_default() += 1;
    }
    let duplicated = copies.values().filter(|n| **n > 1).count();
    let lost = expected.iter().filter(|id| !copies.contains_key(**id)).count();
    assert_eq!(lost, 0, "acknowledged logs lost");
    assert_eq!(duplicated, 0, "logs stored twice");
    assert_eq!(acknowledged.len(), expected.len(), "no id was acknowledged twice");
    format!(
        "acknowledged {} / lost {lost} / duplicated {duplicated} / stored {} (stored but unacknowledged: {})",
        acknowledged.len(),
        stored.len(),
        copies.len() - expected.len()
    )
}

/// A tenant whose project has no rate limit to speak of: (session token, project id, ingest key).
pub async fn unlimited_tenant(d: &Daemon) -> (String, String, String) {
    let (token, project, key) = d.tenant("ada@example.com").await;
    let unlimited =
        json!({"settings": {"rate_limit_per_minute": 4_000_000_000_u64, "rate_limit_per_hour": 4_000_000_000_u64}});
    assert_eq!(d.patch(&format!("/v1/projects/{project}"), Some(&token), unlimited).await.status, 200);
    (token, project, key)
}

/// Batches sent through `a` and `b` in turn are each stored once (read through `b`).
pub async fn sent_through_both_stored_once(a: &Daemon, b: &Daemon, key: &str) {
    let mut acknowledged = Vec::new();
    for (i, d) in [a, b].into_iter().cycle().take(20).enumerate() {
        let logs: Vec<_> = (0..10).map(|j| json!({"message": format!("batch {i} log {j}")})).collect();
        let r = d.ingest(key, json!({ "logs": logs })).await;
        assert_eq!(r.status, 202, "{r:?}");
        acknowledged.extend(r.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    assert_stored_once(b, key, &acknowledged, Duration::from_secs(30)).await;
}

/// Four clients ingest; the daemon is SIGKILLed among them and started again on the same storage: every log
/// that got a 202 is stored, once (tests/faults.rs, and on a Redis Cluster in tests/cluster.rs).
pub async fn sigkill_while_four_clients_ingest(d: Daemon) {
    let (_, _, key) = unlimited_tenant(&d).await;
    let clients = Clients::start(&d, &key, 4);
    clients.until_acknowledged(400).await;
    // SIGKILL in the middle of the clients' stream, then a new daemon on the same storage.
    let d = d.restart().await;
    let (acknowledged, _) = clients.stop().await;
    let summary = assert_stored_once(&d, &key, &acknowledged, Duration::from_secs(60)).await;
    println!("{:?}: {summary}", d.kind());
}

/// Two instances on one shared backend (`b` with a long in-process key cache): a session made on one works
/// on the other, rate limits count across them, and a key revoked through `a` is refused by `b`, which had
/// it cached. The tenant, with its rate limit back up: (session token, project id, ingest key).
pub async fn limits_and_revocations_are_shared(a: &Daemon, b: &Daemon) -> (String, String, String) {
    let (token, project, key) = a.tenant("ada@example.com").await;
    assert_eq!(b.get("/v1/me", Some(&token)).await.status, 200, "a session made on one instance works on the other");

    // Rate limits count across instances: 6 per minute, 3 through each, then both refuse.
    a.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"rate_limit_per_minute": 6}})).await;
    for d in [a, b, a, b, a, b] {
        assert_eq!(d.ingest(&key, json!({"message": "counted"})).await.status, 202);
    }
    a.ingest(&key, json!({"message": "over"})).await.assert_error(429, "rate_limited");
    b.ingest(&key, json!({"message": "over"})).await.assert_error(429, "rate_limited");
    let unlimited = json!({"settings": {"rate_limit_per_minute": 100000}});
    assert_eq!(a.patch(&format!("/v1/projects/{project}"), Some(&token), unlimited).await.status, 200);

    // A revocation through one instance is seen by the other, which had the key in its own cache.
    let (key_id, other) = a.key(&token, &project, &["query"]).await;
    assert_eq!(b.get("/v1/logs", Some(&other)).await.status, 200);
    assert_eq!(a.delete(&format!("/v1/projects/{project}/keys/{key_id}"), Some(&token)).await.status, 204);
    eventually(Duration::from_secs(5), "the other instance refuses the revoked key", || async {
        (b.get("/v1/logs", Some(&other)).await.status == 401).then_some(())
    })
    .await;
    (token, project, key)
}

/// Polls `check` until it returns `Some`, or panics after `within`: for conditions that become true
/// asynchronously. Never a sleep standing in for a wait.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
