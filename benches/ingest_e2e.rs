//! End to end: batches of 100 logs over HTTP through every stage, the Redis queue and the workers, into
//! PostgreSQL; measured against the ceiling of a bare COPY of the same rows into an identical table, in
//! the same run on the same machine.
//!
//! `cargo bench --bench ingest_e2e`
//! Environment: `LEDGER_BENCH_SECS` (default 10), `LEDGER_BENCH_CLIENTS` (32), `LEDGER_BENCH_BATCH` (100),
//! `LEDGER_TEST_POSTGRES` and `LEDGER_TEST_REDIS` as for the tests.
//!
//! The daemon runs in this process on a runtime of its own (2 worker threads), the load on another: the
//! daemon, PostgreSQL, Redis and the load share the machine's cores, as BASELINES.md's figures did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ledger::backend::{Backend, LogDb};
use ledger::config::{BackendKind, Config};
use ledger::logs::postgres::copy_records;
use ledger_stages::LogRecord;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "payload.rs"]
mod payload;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn postgres() -> String {
    std::env::var("LEDGER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn shared_config(id: &str, http: u16, grpc: u16) -> Config {
    let mut config = Config::default();
    config.backend.kind = BackendKind::Shared;
    config.server.http_addr = ([127, 0, 0, 1], http).into();
    config.server.grpc_addr = ([127, 0, 0, 1], grpc).into();
    config.auth.jwt_secret = "bench-secret-0123456789abcdef0123456789".into();
    config.auth.bcrypt_cost = 4;
    config.postgres.auth_url = format!("{}/ledger_{id}_auth", postgres());
    config.postgres.logs_url = format!("{}/ledger_{id}_logs", postgres());
    config.redis.url = std::env::var("LEDGER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    config.redis.key_prefix = format!("ledger_{id}:");
    config
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn call(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(e) => panic!("setup request failed: {e}"),
    }
}

/// The rows the daemon would write for `n` logs.
fn rows(n: usize) -> Vec<LogRecord> {
    payload::records((0..n).map(payload::log).collect(), chrono::Utc::now())
}

async fn drop_databases(id: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{}/postgres", postgres())).await {
        for db in [format!("ledger_{id}_auth"), format!("ledger_{id}_logs")] {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await;
        }
    }
}

fn main() {
    let secs = env_or("LEDGER_BENCH_SECS", 10);
    let clients = env_or("LEDGER_BENCH_CLIENTS", 32) as usize;
    let batch = env_or("LEDGER_BENCH_BATCH", 100) as usize;
    let id = format!("bench{}", Uuid::new_v4().simple());
    let (http, grpc) = (free_port(), free_port());
    let config = shared_config(&id, http, grpc);

    // The daemon, on a runtime of its own.
    let shutdown = CancellationToken::new();
    let server_config = config.clone();
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        match runtime {
            Ok(rt) => rt.block_on(ledger::server::run(server_config, stop)).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    });

    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    };
    runtime.block_on(async {
        let base = format!("http://127.0.0.1:{http}");
        let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{base}/health")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the daemon did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let session = call(
            &client,
            format!("{base}/v1/register"),
            None,
            json!({"email": "bench@example.com", "password": "correct horse"}),
        )
        .await;
        let token = session["token"].as_str().unwrap_or_default().to_owned();
        let settings = json!({"rate_limit_per_minute": 4_000_000_000_u64, "rate_limit_per_hour": 4_000_000_000_u64,
                              "daily_quota": 1_000_000_000_000_u64, "max_queue_depth": 1_000_000_000_u64});
        let project =
            call(&client, format!("{base}/v1/projects"), Some(&token), json!({"name": "bench", "settings": settings}))
                .await;
        let project_id = project["id"].as_str().unwrap_or_default().to_owned();
        let key = call(&client, format!("{base}/v1/projects/{project_id}/keys"), Some(&token), json!({})).await;
        let key = key["key"].as_str().unwrap_or_default().to_owned();
        eprintln!("ingest_e2e: daemon up on {base}; {clients} clients for {secs} s");

        // Distinct bodies, so the numbers in messages vary as in life.
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..64).map(|i| serde_json::to_vec(&payload::batch(i * batch, batch)).unwrap_or_default()).collect(),
        );
        let accepted = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (client, url, key, bodies, accepted) =
                (client.clone(), format!("{base}/v1/logs"), key.clone(), bodies.clone(), accepted.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = c;
                while Instant::now() < until {
                    let body = bodies[n % bodies.len()].clone();
                    n += clients;
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("x-api-key", &key)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    if let Ok(r) = response
                        && r.status() == 202
                    {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        accepted.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap_or_default());
        }
        let load_secs = started.elapsed().as_secs_f64();
        let acked = accepted.load(Ordering::Relaxed);

        eprintln!("ingest_e2e: load done, {acked} logs acknowledged; waiting until all are stored");
        // End to end: until every acknowledged log is in PostgreSQL.
        let logs = sqlx::PgPool::connect(&config.postgres.logs_url).await.unwrap_or_else(|e| panic!("{e}"));
        loop {
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM logs").fetch_one(&logs).await.unwrap_or(0);
            if stored as u64 >= acked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let e2e_secs = started.elapsed().as_secs_f64();
        shutdown.cancel();
        logs.close().await;

        eprintln!("ingest_e2e: all stored; measuring the bare COPY ceiling");
        // The ceiling: the same number of identical rows, COPYed in the daemon's batch size into an identical
        // (identically migrated) table, in this run.
        let ceiling_id = format!("{id}c");
        let ceiling_config = shared_config(&ceiling_id, 0, 0);
        let backend = Backend::open(&ceiling_config).await.unwrap_or_else(|e| panic!("{e}"));
        let LogDb::Postgres(store) = &backend.logs else { panic!("no PostgreSQL") };
        let template = Arc::new(rows(10_000));
        // As many parallel COPY streams as the daemon has shards: the same parallelism on both sides.
        let streams = u64::from(config.queue.shards);
        let per_stream = acked.max(10_000).div_ceil(streams);
        let copy_started = Instant::now();
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
                    let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                    copy_records(&mut tx, &chunk).await.unwrap_or_else(|e| panic!("{e}"));
                    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
                    copied += chunk.len() as u64;
                }
                copied
            }));
        }
        let mut copied = 0u64;
        for copier in copiers {
            copied += copier.await.unwrap_or(0);
        }
        let copy_rate = copied as f64 / copy_started.elapsed().as_secs_f64();
        store.pool().close().await;
        drop(backend);

        latencies.sort_by(f64::total_cmp);
        let e2e_rate = acked as f64 / e2e_secs;
        println!(
            "ingest_e2e: {clients} clients, batches of {batch}, {secs} s of load, shared backend (HTTP → Redis → COPY)"
        );
        println!(
            "  acknowledged      {acked} logs, {:.0} logs/s, {:.0} requests/s",
            acked as f64 / load_secs,
            latencies.len() as f64 / load_secs
        );
        println!(
            "  202 latency       p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0)
        );
        println!("  end to end        {e2e_rate:.0} logs/s (all {acked} stored after {e2e_secs:.1} s)");
        println!(
            "  ceiling: bare COPY of the same rows, 10k per COPY, {streams} parallel streams: {copy_rate:.0} rows/s"
        );
        println!("  ratio             {:.2} of the bare COPY", e2e_rate / copy_rate);

        if let Ok(redis) = redis::Client::open(config.redis.url.clone())
            && let Ok(mut conn) = redis.get_multiplexed_async_connection().await
        {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("ledger_{id}:*")).query_async(&mut conn).await.unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
        }
        drop_databases(&id).await;
        drop_databases(&ceiling_id).await;
    });
    match server.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("the daemon stopped with: {e}"),
        Err(_) => eprintln!("the daemon panicked"),
    }
}
