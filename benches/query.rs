//! Query latency on a million realistic logs, and the choice of full-text index.
//!
//! `cargo bench --bench query` (env `LEDGER_BENCH_ROWS`, default 1,000,000; `LEDGER_BENCH_BACKENDS`,
//! default `postgres,sqlite`; PostgreSQL and Redis as for the tests). Loads the rows (10 projects, 7 days, the realistic shapes of `payload.rs`, a rare word in
//! 0.1% of messages) into PostgreSQL (COPY) and SQLite (the embedded writer's inserts), then prints p50/p99
//! of: the last hour of one project; its last 24 h at level ≥ ERROR; a full-text query over its last 24 h
//! (a common word) and over 7 days (a rare word); and the error-rate metrics read. For the index choice it
//! then measures, on the same data: a pg_trgm GIN and a tsvector GIN on PostgreSQL, and an FTS5 trigram
//! table on SQLite — each for write throughput with the index and for the full-text queries.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger::config::{BackendKind, Config};
use ledger::jobs::rebuild;
use ledger::store::analytics::memory::MemoryAnalytics;
use ledger::store::analytics::redis::RedisAnalytics;
use ledger::store::analytics::{AnalyticsCache, Granularity};
use ledger::store::logs::postgres::{copy_records, ensure_partitions};
use ledger::store::logs::sqlite::insert_records;
use ledger::store::logs::{LogQuery, LogStore};
use ledger::store::{Backend, LogDb};
use ledger_stages::{Level, LogRecord};
use serde_json::Value;
use uuid::Uuid;

#[path = "payload.rs"]
mod payload;

const PROJECTS: usize = 10;
const DAYS: i64 = 7;
const RUNS: usize = 200;
const RARE: &str = "zanzibar";

fn postgres() -> String {
    std::env::var("LEDGER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Rows `start..start + n` of the data set: spread over `DAYS` days back from `now` and over the projects.
fn rows(start: usize, n: usize, total: usize, projects: &[Uuid], now: DateTime<Utc>) -> Vec<LogRecord> {
    let logs: Vec<Value> = (start..start + n)
        .map(|i| {
            let mut log = payload::log(i);
            if i % 1000 == 7 {
                log["message"] =
                    Value::String(format!("{} {RARE} edge case {i}", log["message"].as_str().unwrap_or("")));
            }
            if let Some(map) = log.as_object_mut() {
                map.remove("timestamp");
            }
            log
        })
        .collect();
    let mut records = payload::records(logs, now);
    // The fingerprint depends on neither project nor time, so it stays right.
    for (record, i) in records.iter_mut().zip(start..) {
        let age = chrono::Duration::milliseconds((DAYS * 86_400_000) * (total - i) as i64 / total as i64);
        record.timestamp = now - age;
        record.project_id = projects[i % projects.len()];
    }
    records
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(samples[samples.len() / 2]), ms(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]))
}

struct Queries {
    projects: Vec<Uuid>,
    now: DateTime<Utc>,
}

impl Queries {
    fn query(&self, i: usize, hours: i64, min_level: Option<Level>, terms: &[&str]) -> LogQuery {
        LogQuery {
            project_id: self.projects[i % self.projects.len()],
            from: self.now - chrono::Duration::hours(hours),
            to: self.now,
            levels: vec![],
            min_level,
            services: vec![],
            environment: None,
            terms: terms.iter().map(|t| (*t).to_owned()).collect(),
            fingerprint: None,
            trace_id: None,
            limit: 100,
            cursor: None,
        }
    }

    async fn time(
        &self,
        store: &dyn LogStore,
        hours: i64,
        min_level: Option<Level>,
        terms: &[&str],
    ) -> (f64, f64, usize) {
        let mut samples = Vec::with_capacity(RUNS);
        let mut found = 0;
        for i in 0..RUNS {
            let q = self.query(i, hours, min_level, terms);
            let started = Instant::now();
            found += store.query(&q).await.map(|r| r.len()).unwrap_or_else(|e| panic!("{e}"));
            samples.push(started.elapsed());
        }
        let (p50, p99) = percentiles(samples);
        (p50, p99, found / RUNS)
    }

    async fn report(&self, name: &str, store: &dyn LogStore, metrics: &dyn AnalyticsCache) {
        let cases: [(&str, i64, Option<Level>, &[&str]); 4] = [
            ("last hour, newest 100", 1, None, &[]),
            ("last 24 h, level >= ERROR", 24, Some(Level::Error), &[]),
            ("full text, common word, 24 h", 24, None, &["declined"]),
            ("full text, rare word, 7 days", 24 * DAYS, None, &[RARE]),
        ];
        for (label, hours, min_level, terms) in cases {
            let (p50, p99, found) = self.time(store, hours, min_level, terms).await;
            println!("  {name:<10} {label:<32} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms   ({found} rows)");
        }
        // One log by id (GET /v1/logs/{id}), ids spread over the 7 days.
        let mut ids = Vec::new();
        for i in 0..PROJECTS {
            let page = store.query(&self.query(i, 24 * DAYS, None, &[RARE])).await.unwrap_or_else(|e| panic!("{e}"));
            ids.extend(page.into_iter().map(|r| (r.project_id, r.id)));
        }
        let mut samples = Vec::with_capacity(RUNS);
        for i in 0..RUNS {
            let (project, id) = ids[i * 7 % ids.len()];
            let started = Instant::now();
            let found = store.get(project, id).await.unwrap_or_else(|e| panic!("{e}"));
            samples.push(started.elapsed());
            assert!(found.is_some(), "log {id} not found by id");
        }
        let (p50, p99) = percentiles(samples);
        println!("  {name:<10} {:<32} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms", "one log by id");
        let mut samples = Vec::with_capacity(RUNS);
        for i in 0..RUNS {
            let g = Granularity::FiveMinutes;
            let (from, to) = (g.bucket(&(self.now - chrono::Duration::hours(24))), g.bucket(&self.now));
            let started = Instant::now();
            metrics.volume(self.projects[i % PROJECTS], g, from, to).await.unwrap_or_else(|e| panic!("{e}"));
            samples.push(started.elapsed());
        }
        let (p50, p99) = percentiles(samples);
        println!("  {name:<10} {:<32} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms", "metrics: error rate, 24 h");
    }
}

async fn timed_sql(pool: &sqlx::PgPool, sql: &str, queries: &Queries, hours: i64, word: &str) -> (f64, f64) {
    let mut samples = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let started = Instant::now();
        sqlx::query(sql)
            .bind(queries.projects[i % PROJECTS])
            .bind(queries.now - chrono::Duration::hours(hours))
            .bind(word)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

async fn postgres_part(total: usize, projects: &[Uuid], now: DateTime<Utc>, queries: &Queries) {
    let id = format!("bench{}", Uuid::new_v4().simple());
    let mut config = Config::default();
    config.backend.kind = BackendKind::Shared;
    config.postgres.auth_url = format!("{}/ledger_{id}_auth", postgres());
    config.postgres.logs_url = format!("{}/ledger_{id}_logs", postgres());
    config.redis.url = std::env::var("LEDGER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    config.redis.key_prefix = format!("ledger_{id}:");
    let backend = Backend::open(&config).await.unwrap_or_else(|e| panic!("{e}"));
    let LogDb::Postgres(store) = backend.logs.clone() else { panic!("no PostgreSQL") };
    let pool = store.pool().clone();
    ensure_partitions(&pool, 2).await.unwrap_or_else(|e| panic!("{e}"));

    let copy = |records: Vec<LogRecord>| {
        let pool = pool.clone();
        async move {
            let started = Instant::now();
            for chunk in records.chunks(10_000) {
                let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                copy_records(&mut tx, chunk).await.unwrap_or_else(|e| panic!("{e}"));
                tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            }
            started.elapsed()
        }
    };
    let mut copy_time = Duration::ZERO;
    for start in (0..total).step_by(100_000) {
        copy_time += copy(rows(start, 100_000.min(total - start), total, projects, now)).await;
    }
    let _ = sqlx::query("ANALYZE logs").execute(&pool).await;
    // As the queue workers do every 5 s.
    ledger::store::logs::postgres::summarize_brin(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    println!(
        "PostgreSQL: {total} rows COPYed at {:.0} rows/s (BRIN on ts and id, btree on project and ts, no text index)",
        total as f64 / copy_time.as_secs_f64()
    );

    let redis = backend.redis.clone().unwrap_or_else(|| panic!("no Redis"));
    let metrics = RedisAnalytics::new(redis);
    rebuild::rebuild(&store, &metrics, Granularity::FiveMinutes, now - chrono::Duration::days(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    queries.report("none", &store, &metrics).await;

    // The candidates, on the same data. Each: index build, write throughput with it, full-text latency.
    let extra = 100_000.min(total);
    let trigram_sql = "SELECT id FROM logs WHERE project_id = $1 AND ts >= $2 AND message ILIKE '%' || $3 || '%' ORDER BY ts DESC, id DESC LIMIT 100";
    let tsvector_sql = "SELECT id FROM logs WHERE project_id = $1 AND ts >= $2 AND to_tsvector('simple', message) @@ plainto_tsquery('simple', $3) ORDER BY ts DESC, id DESC LIMIT 100";
    let candidates = [
        (
            "pg_trgm",
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            "CREATE INDEX bench_text ON logs USING gin (message gin_trgm_ops)",
            trigram_sql,
        ),
        (
            "tsvector",
            "SELECT 1",
            "CREATE INDEX bench_text ON logs USING gin (to_tsvector('simple', message))",
            tsvector_sql,
        ),
    ];
    for (name, prepare, create, sql) in candidates {
        sqlx::query(prepare).execute(&pool).await.unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        sqlx::query(create).execute(&pool).await.unwrap_or_else(|e| panic!("{e}"));
        let build = started.elapsed();
        let rate = extra as f64 / copy(rows(0, extra, total, projects, now)).await.as_secs_f64();
        let _ = sqlx::query("ANALYZE logs").execute(&pool).await;
        let (c50, c99) = timed_sql(&pool, sql, queries, 24, "declined").await;
        let (r50, r99) = timed_sql(&pool, sql, queries, 24 * DAYS, RARE).await;
        println!(
            "  {name:<10} index built in {:.1} s; COPY with it {rate:.0} rows/s; common word 24 h p50 {c50:.2} / p99 {c99:.2} ms; rare word 7 d p50 {r50:.2} / p99 {r99:.2} ms",
            build.as_secs_f64()
        );
        sqlx::query("DROP INDEX bench_text").execute(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    }
    pool.close().await;
    if let Ok(client) = redis::Client::open(config.redis.url.clone())
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("ledger_{id}:*")).query_async(&mut conn).await.unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
    }
    drop(backend);
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{}/postgres", postgres())).await {
        for db in [format!("ledger_{id}_auth"), format!("ledger_{id}_logs")] {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await;
        }
    }
}

async fn sqlite_part(total: usize, projects: &[Uuid], now: DateTime<Utc>, queries: &Queries) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = Config::default();
    config.backend.data_dir = dir.path().to_owned();
    let backend = Backend::open(&config).await.unwrap_or_else(|e| panic!("{e}"));
    let LogDb::Sqlite(store) = backend.logs.clone() else { panic!("no SQLite") };
    let pool = store.pool().clone();
    let insert = |records: Vec<LogRecord>| {
        let pool = pool.clone();
        async move {
            let started = Instant::now();
            for chunk in records.chunks(10_000) {
                let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                insert_records(&mut tx, chunk).await.unwrap_or_else(|e| panic!("{e}"));
                tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
            }
            started.elapsed()
        }
    };
    let mut insert_time = Duration::ZERO;
    for start in (0..total).step_by(100_000) {
        insert_time += insert(rows(start, 100_000.min(total - start), total, projects, now)).await;
    }
    let _ = sqlx::query("ANALYZE").execute(&pool).await;
    println!(
        "SQLite: {total} rows inserted at {:.0} rows/s (index on project and ts, no text index)",
        total as f64 / insert_time.as_secs_f64()
    );
    let metrics = MemoryAnalytics::default();
    rebuild::rebuild(&store, &metrics, Granularity::FiveMinutes, now - chrono::Duration::days(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    queries.report("none", &store, &metrics).await;

    // The candidate: an FTS5 trigram table beside the logs (substring semantics, as the queries need).
    sqlx::query("CREATE VIRTUAL TABLE logs_fts USING fts5(message, id UNINDEXED, tokenize = 'trigram')")
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    sqlx::query("INSERT INTO logs_fts (message, id) SELECT message, id FROM logs")
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let build = started.elapsed();
    let extra = 100_000.min(total);
    let records = rows(0, extra, total, projects, now);
    let started = Instant::now();
    for chunk in records.chunks(10_000) {
        let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
        insert_records(&mut tx, chunk).await.unwrap_or_else(|e| panic!("{e}"));
        for r in chunk {
            sqlx::query("INSERT INTO logs_fts (message, id) VALUES ($1, $2)")
                .bind(&r.message)
                .bind(r.id)
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let rate = extra as f64 / started.elapsed().as_secs_f64();
    let sql = "SELECT id FROM logs WHERE id IN (SELECT id FROM logs_fts WHERE message LIKE '%' || $3 || '%') \
               AND project_id = $1 AND ts >= $2 ORDER BY ts DESC, id DESC LIMIT 100";
    let mut results = Vec::new();
    for (hours, word) in [(24, "declined"), (24 * DAYS, RARE)] {
        let mut samples = Vec::with_capacity(RUNS);
        for i in 0..RUNS {
            let started = Instant::now();
            sqlx::query(sql)
                .bind(projects[i % PROJECTS])
                .bind((now - chrono::Duration::hours(hours)).timestamp_micros())
                .bind(word)
                .fetch_all(&pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            samples.push(started.elapsed());
        }
        results.push(percentiles(samples));
    }
    println!(
        "  fts5       index built in {:.1} s; inserts with it {rate:.0} rows/s; common word 24 h p50 {:.2} / p99 {:.2} ms; rare word 7 d p50 {:.2} / p99 {:.2} ms",
        build.as_secs_f64(),
        results[0].0,
        results[0].1,
        results[1].0,
        results[1].1
    );
    let _ = queries;
}

fn main() {
    let total: usize = std::env::var("LEDGER_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let projects: Vec<Uuid> = (0..PROJECTS).map(|_| Uuid::now_v7()).collect();
    let now = Utc::now();
    let queries = Queries { projects: projects.clone(), now };
    println!(
        "query: {total} logs, {PROJECTS} projects, {DAYS} days; {RUNS} runs per query (rows found per run in brackets)"
    );
    // `LEDGER_BENCH_BACKENDS=postgres` or `sqlite` runs one of them.
    let backends = std::env::var("LEDGER_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,sqlite".into());
    runtime.block_on(async {
        if backends.contains("postgres") {
            postgres_part(total, &projects, now, &queries).await;
        }
        if backends.contains("sqlite") {
            sqlite_part(total, &projects, now, &queries).await;
        }
    });
}
