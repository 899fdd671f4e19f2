//! API key validation latency, per request: from the in-process cache (the hot path), from the shared
//! cache (Redis, what another instance's look-up leaves behind), and uncached (the account store: an
//! indexed SELECT by digest plus the `last_used_at` write), on both backends.
//!
//! `cargo bench --bench auth` (needs PostgreSQL and Redis as for the tests)

use std::sync::Arc;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use ledger::config::{BackendKind, Config};
use ledger::store::{Backend, KeyRecord, Project, User};
use ledger_stages::auth::{ApiKey, KeyStore, KeyValidator, ValidatorSettings};
use ledger_stages::{ProjectSettings, Scope};
use uuid::Uuid;

struct Setup {
    backend: Backend,
    key: ApiKey,
    _dir: tempfile::TempDir,
    id: String,
}

async fn setup(kind: BackendKind) -> Setup {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let id = format!("bench{}", Uuid::new_v4().simple());
    let postgres =
        std::env::var("LEDGER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let mut config = Config::default();
    config.backend.kind = kind;
    config.backend.data_dir = dir.path().to_owned();
    config.postgres.auth_url = format!("{postgres}/ledger_{id}_auth");
    config.postgres.logs_url = format!("{postgres}/ledger_{id}_logs");
    config.redis.url = std::env::var("LEDGER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    config.redis.key_prefix = format!("ledger_{id}:");
    let backend = Backend::open(&config).await.unwrap_or_else(|e| panic!("{e}"));
    let user = User { id: Uuid::now_v7(), email: "bench@example.com".into(), created_at: Utc::now() };
    backend.accounts.create_user(&user, "x").await.unwrap_or_else(|e| panic!("{e}"));
    let project = Project {
        id: Uuid::now_v7(),
        owner_id: user.id,
        name: "bench".into(),
        created_at: Utc::now(),
        settings: ProjectSettings::default(),
        stages: None,
    };
    backend.accounts.create_project(&project).await.unwrap_or_else(|e| panic!("{e}"));
    let key = ApiKey::generate();
    let record = KeyRecord {
        id: Uuid::now_v7(),
        project_id: project.id,
        name: "bench".into(),
        prefix: key.prefix().into(),
        scopes: vec![Scope::Ingest],
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    backend.accounts.create_key(&record, &key.digest()).await.unwrap_or_else(|e| panic!("{e}"));
    Setup { backend, key, _dir: dir, id }
}

fn auth(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for kind in [BackendKind::Embedded, BackendKind::Shared] {
        let s = runtime.block_on(setup(kind));
        let store: Arc<dyn KeyStore> = s.backend.accounts.clone();
        let validator = KeyValidator::new(store.clone(), s.backend.shared_keys.clone(), ValidatorSettings::default());
        let secret = s.key.expose_secret().to_owned();
        let digest = s.key.digest();
        runtime.block_on(validator.validate(&secret)).unwrap_or_else(|e| panic!("{e}"));

        let mut group = c.benchmark_group(format!("auth/{kind}"));
        group.bench_function("validate_in_process_cache", |b| b.iter(|| runtime.block_on(validator.validate(&secret))));
        if let Some(shared) = s.backend.shared_keys.clone() {
            group.bench_function("shared_cache_read", |b| b.iter(|| runtime.block_on(shared.get(&digest))));
        }
        group.bench_function("uncached_store_lookup", |b| b.iter(|| runtime.block_on(store.project_for_key(&digest))));
        group.finish();

        if kind == BackendKind::Shared {
            let id = s.id.clone();
            runtime.block_on(async move {
                use sqlx::Connection;
                let postgres = std::env::var("LEDGER_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
                if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{postgres}/postgres")).await {
                    for db in [format!("ledger_{id}_auth"), format!("ledger_{id}_logs")] {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await;
                    }
                }
            });
        }
    }
}

criterion_group!(benches, auth);
criterion_main!(benches);
