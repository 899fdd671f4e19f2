#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The backend conformance suite: every trait method of `ledger::backend`, run against the shared
//! (PostgreSQL + Redis) and the embedded (SQLite + in-process) implementations, which must behave the same.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use ledger::accounts::now;
use ledger::config::{BackendKind, Config};
use ledger::store::{Backend, KeyRecord, Project, StoreError, User};
use ledger_stages::auth::{ApiKey, AuthError, KeyStore, KeyValidator, ValidatorSettings};
use ledger_stages::{ProjectSettings, Scope};
use support::{Fresh, Kind};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn open(fresh: &Fresh) -> Backend {
    let mut config = Config::default();
    config.backend.data_dir = fresh.dir.path().to_owned();
    if fresh.kind == Kind::Shared {
        config.backend.kind = BackendKind::Shared;
        config.postgres.auth_url = format!("{}/{}", support::postgres_server(), fresh.auth_db());
        config.postgres.logs_url = format!("{}/{}", support::postgres_server(), fresh.logs_db());
        config.postgres.max_connections = 4;
        config.redis.url = support::redis_url();
        config.redis.key_prefix = fresh.prefix();
    }
    Backend::open(&config).await.unwrap()
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded { $(
            #[tokio::test]
            async fn $name() {
                let fresh = crate::support::Fresh::new(crate::support::Kind::Embedded);
                super::$name(super::open(&fresh).await).await
            }
        )* }
        mod shared { $(
            #[tokio::test]
            async fn $name() {
                let fresh = crate::support::Fresh::new(crate::support::Kind::Shared);
                super::$name(super::open(&fresh).await).await
            }
        )* }
    };
}

conformance!(
    users,
    projects_belong_to_their_owner,
    keys_resolve_until_revoked_or_deleted,
    sessions,
    counters,
    health_checks,
    log_store_queries_stats_and_retention,
);

fn log(
    project: Uuid,
    message: &str,
    level: ledger_stages::Level,
    ts: chrono::DateTime<Utc>,
) -> ledger_stages::LogRecord {
    ledger_stages::LogRecord {
        id: Uuid::now_v7(),
        project_id: project,
        timestamp: ts,
        received_at: ts,
        level,
        message: message.into(),
        service: Some("svc".into()),
        environment: None,
        host: None,
        trace_id: None,
        span_id: None,
        attributes: serde_json::json!({"k": 1}),
        exception: None,
        fingerprint: 7,
        fingerprint_override: None,
    }
}

/// Writes records the way each backend's writer does.
async fn write(b: &Backend, records: &[ledger_stages::LogRecord]) {
    match &b.logs {
        ledger::store::LogDb::Sqlite(store) => {
            let mut tx = store.pool().begin().await.unwrap();
            ledger::store::logs::sqlite::insert_records(&mut tx, records).await.unwrap();
            tx.commit().await.unwrap();
        }
        ledger::store::LogDb::Postgres(store) => {
            let mut tx = store.pool().begin().await.unwrap();
            ledger::store::logs::postgres::copy_records(&mut tx, records).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
}

async fn log_store_queries_stats_and_retention(b: Backend) {
    use ledger_stages::Level;
    let logs = b.logs.store();
    let (p, q) = (Uuid::now_v7(), Uuid::now_v7());
    let now = chrono::Utc::now().trunc_subsecs(6);
    let old = now - chrono::Duration::days(3);
    let records = vec![
        log(p, "Disk FULL on db-1", Level::Error, now),
        log(p, "all good", Level::Info, now),
        log(p, "old news", Level::Info, old),
        log(q, "theirs", Level::Error, now),
    ];
    write(&b, &records).await;

    let query = |terms: Vec<&str>, levels: Vec<Level>| ledger::store::logs::LogQuery {
        project_id: p,
        from: now - chrono::Duration::days(7),
        to: now + chrono::Duration::minutes(1),
        levels,
        min_level: None,
        services: vec![],
        environment: None,
        terms: terms.into_iter().map(str::to_owned).collect(),
        fingerprint: None,
        trace_id: None,
        limit: 100,
        cursor: None,
    };
    let messages = |found: Vec<ledger_stages::LogRecord>| found.into_iter().map(|r| r.message).collect::<Vec<_>>();
    let none = Vec::<String>::new();
    assert_eq!(
        messages(logs.query(&query(vec!["full disk"], vec![])).await.unwrap()),
        none,
        "a phrase keeps its order"
    );
    assert_eq!(messages(logs.query(&query(vec!["disk full"], vec![])).await.unwrap()), ["Disk FULL on db-1"]);
    assert_eq!(messages(logs.query(&query(vec!["full", "DISK"], vec![])).await.unwrap()), ["Disk FULL on db-1"]);
    assert_eq!(messages(logs.query(&query(vec!["50%"], vec![])).await.unwrap()), none, "wildcards are literal");
    assert_eq!(logs.query(&query(vec![], vec![Level::Info])).await.unwrap().len(), 2);
    let stored = logs.get(p, records[0].id).await.unwrap().unwrap();
    assert_eq!(stored, records[0]);
    assert_eq!(logs.get(q, records[0].id).await.unwrap(), None, "another project's log is not found");

    let hour = ledger::store::analytics::Granularity::Hour;
    let stats = logs.stats(hour, now - chrono::Duration::days(4), now + chrono::Duration::hours(1)).await.unwrap();
    let volume: u64 =
        stats.volume.iter().filter(|((project, _, _), _)| *project == p).flat_map(|(_, c)| c.iter()).sum();
    assert_eq!(volume, 3);
    assert_eq!(stats.errors.iter().filter(|((project, ..), _)| *project == p).map(|(_, n)| n).sum::<u64>(), 1);
    assert_eq!(stats.info[&(p, 7)].sample_message, "Disk FULL on db-1");

    assert_eq!(logs.delete_before(p, now - chrono::Duration::days(1), 100).await.unwrap(), 1);
    let snapshot_before_q = records.iter().map(|r| r.received_at).min().unwrap() - chrono::Duration::seconds(1);
    assert_eq!(
        logs.delete_others(&[p], snapshot_before_q, 100).await.unwrap(),
        0,
        "a project missing from a list read before its logs arrived keeps them (it was created since)"
    );
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(logs.delete_others(&[p], after, 100).await.unwrap(), 1, "the unknown project's log goes");
    assert_eq!(messages(logs.query(&query(vec![], vec![])).await.unwrap()).len(), 2);

    if let ledger::store::LogDb::Postgres(store) = &b.logs {
        sqlx::query("CREATE TABLE logs_2020_01 PARTITION OF logs FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
            .execute(store.pool())
            .await
            .unwrap();
        let ancient = chrono::DateTime::parse_from_rfc3339("2020-01-15T00:00:00Z").unwrap().to_utc();
        write(&b, &[log(p, "ancient", Level::Info, ancient)]).await;
        let dropped = logs.drop_before(now - chrono::Duration::days(30)).await.unwrap();
        assert_eq!(dropped, ["logs_2020_01"]);
        assert_eq!(logs.drop_before(now - chrono::Duration::days(30)).await.unwrap(), none);
    } else {
        assert_eq!(logs.drop_before(now).await.unwrap(), none);
    }
}

fn user(email: &str) -> User {
    User { id: Uuid::now_v7(), email: email.into(), created_at: now() }
}

fn project(owner: Uuid, name: &str) -> Project {
    Project {
        id: Uuid::now_v7(),
        owner_id: owner,
        name: name.into(),
        created_at: now(),
        settings: ProjectSettings::default(),
    }
}

fn key_record(project_id: Uuid, key: &ApiKey, scopes: Vec<Scope>) -> KeyRecord {
    KeyRecord {
        id: Uuid::now_v7(),
        project_id,
        name: "k".into(),
        prefix: key.prefix().into(),
        scopes,
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    }
}

async fn users(b: Backend) {
    let ada = user("ada@example.com");
    b.accounts.create_user(&ada, "hash-a").await.unwrap();
    assert!(matches!(b.accounts.create_user(&user("ada@example.com"), "hash-b").await, Err(StoreError::Conflict)));
    let (found, hash) = b.accounts.user_by_email("ada@example.com").await.unwrap().unwrap();
    assert_eq!((found.clone(), hash.as_str()), (ada.clone(), "hash-a"));
    assert_eq!(b.accounts.user(ada.id).await.unwrap(), Some(ada));
    assert_eq!(b.accounts.user_by_email("bob@example.com").await.unwrap(), None);
    assert_eq!(b.accounts.user(Uuid::now_v7()).await.unwrap(), None);
}

async fn projects_belong_to_their_owner(b: Backend) {
    let (ada, bob) = (user("ada@example.com"), user("bob@example.com"));
    b.accounts.create_user(&ada, "h").await.unwrap();
    b.accounts.create_user(&bob, "h").await.unwrap();
    let first = project(ada.id, "first");
    let second = project(ada.id, "second");
    b.accounts.create_project(&first).await.unwrap();
    b.accounts.create_project(&second).await.unwrap();

    assert_eq!(b.accounts.projects(ada.id).await.unwrap(), vec![first.clone(), second.clone()]);
    assert_eq!(b.accounts.projects(bob.id).await.unwrap(), vec![]);
    assert_eq!(b.accounts.project(ada.id, first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(b.accounts.project(bob.id, first.id).await.unwrap(), None);

    let mut changed = first.clone();
    changed.name = "renamed".into();
    changed.settings.daily_quota = 42;
    assert_eq!(b.accounts.update_project(bob.id, &changed).await.unwrap(), None);
    assert_eq!(b.accounts.update_project(ada.id, &changed).await.unwrap(), Some(changed.clone()));
    assert_eq!(b.accounts.project(ada.id, first.id).await.unwrap(), Some(changed));

    assert_eq!(b.accounts.delete_project(bob.id, first.id).await.unwrap(), None);
    assert_eq!(b.accounts.delete_project(ada.id, first.id).await.unwrap(), Some(vec![]));
    assert_eq!(b.accounts.delete_project(ada.id, first.id).await.unwrap(), None);
    assert_eq!(b.accounts.projects(ada.id).await.unwrap(), vec![second]);
}

async fn keys_resolve_until_revoked_or_deleted(b: Backend) {
    let ada = user("ada@example.com");
    b.accounts.create_user(&ada, "h").await.unwrap();
    let mut p = project(ada.id, "p");
    p.settings.rate_limit_per_minute = 7;
    b.accounts.create_project(&p).await.unwrap();
    let (k1, k2) = (ApiKey::generate(), ApiKey::generate());
    let r1 = key_record(p.id, &k1, vec![Scope::Ingest]);
    let r2 = key_record(p.id, &k2, vec![Scope::Ingest, Scope::Query]);
    b.accounts.create_key(&r1, &k1.digest()).await.unwrap();
    b.accounts.create_key(&r2, &k2.digest()).await.unwrap();

    let ctx = b.accounts.project_for_key(&k2.digest()).await.unwrap().unwrap();
    assert_eq!((ctx.project_id, ctx.key_id, ctx.scopes.clone()), (p.id, r2.id, vec![Scope::Ingest, Scope::Query]));
    assert_eq!(ctx.settings.rate_limit_per_minute, 7);
    assert_eq!(b.accounts.project_for_key(&ApiKey::generate().digest()).await.unwrap(), None);

    let listed = b.accounts.keys(p.id).await.unwrap();
    assert_eq!(listed.iter().map(|k| k.id).collect::<Vec<_>>(), vec![r1.id, r2.id]);
    assert!(listed[1].last_used_at.is_some(), "a resolved key records its use");
    assert_eq!(b.accounts.key_digests(p.id).await.unwrap().len(), 2);

    let at = now();
    assert_eq!(b.accounts.revoke_key(p.id, r1.id, at).await.unwrap(), Some(k1.digest()));
    assert_eq!(b.accounts.revoke_key(p.id, r1.id, Utc::now()).await.unwrap(), Some(k1.digest()));
    assert_eq!(b.accounts.revoke_key(Uuid::now_v7(), r2.id, at).await.unwrap(), None);
    assert_eq!(b.accounts.project_for_key(&k1.digest()).await.unwrap(), None);
    let listed = b.accounts.keys(p.id).await.unwrap();
    assert_eq!(listed[0].revoked_at, Some(at), "the first revocation time is kept");
    assert_eq!(b.accounts.key_digests(p.id).await.unwrap(), vec![k2.digest()]);

    let mut digests = b.accounts.delete_project(ada.id, p.id).await.unwrap().unwrap();
    digests.sort_by_key(|d| *d.as_bytes());
    let mut expected = vec![k1.digest(), k2.digest()];
    expected.sort_by_key(|d| *d.as_bytes());
    assert_eq!(digests, expected);
    assert_eq!(b.accounts.project_for_key(&k2.digest()).await.unwrap(), None);
    assert_eq!(b.accounts.keys(p.id).await.unwrap(), vec![]);
}

async fn sessions(b: Backend) {
    let ada = user("ada@example.com");
    b.accounts.create_user(&ada, "h").await.unwrap();
    let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());
    b.sessions.create_session(s1, ada.id, Duration::from_secs(60)).await.unwrap();
    b.sessions.create_session(s2, ada.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(b.sessions.session_user(s1).await.unwrap(), Some(ada.id));
    b.sessions.delete_session(s1).await.unwrap();
    assert_eq!(b.sessions.session_user(s1).await.unwrap(), None);
    assert_eq!(b.sessions.session_user(s2).await.unwrap(), Some(ada.id));
    assert_eq!(b.sessions.session_user(Uuid::new_v4()).await.unwrap(), None);
    // Deleting what does not exist is not an error.
    b.sessions.delete_session(s1).await.unwrap();
}

async fn counters(b: Backend) {
    let window = Duration::from_secs(60);
    assert_eq!(b.counters.peek("a").await.unwrap().0, 0);
    for expected in 1..=3 {
        let (count, left) = b.counters.hit("a", window).await.unwrap();
        assert_eq!(count, expected);
        assert!(left <= window && left > Duration::from_secs(50), "{left:?}");
    }
    assert_eq!(b.counters.hit("b", window).await.unwrap().0, 1);
    assert_eq!(b.counters.peek("a").await.unwrap().0, 3);
    b.counters.clear("a").await.unwrap();
    assert_eq!(b.counters.peek("a").await.unwrap().0, 0);
    assert_eq!(b.counters.peek("b").await.unwrap().0, 1);
}

async fn health_checks(b: Backend) {
    let names: Vec<&str> = b.checks.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["database", "cache"]);
    for (_, check) in &b.checks {
        check.check().await.unwrap();
    }
}

/// Two instances on one Redis: a revocation through one makes the other forget the key at once, although
/// it had the key in its in-process cache.
#[tokio::test]
async fn a_revocation_reaches_every_instance() {
    let fresh = Fresh::new(Kind::Shared);
    let b = open(&fresh).await;
    let ada = user("ada@example.com");
    b.accounts.create_user(&ada, "h").await.unwrap();
    let p = project(ada.id, "p");
    b.accounts.create_project(&p).await.unwrap();
    let key = ApiKey::generate();
    let record = key_record(p.id, &key, vec![Scope::Ingest]);
    b.accounts.create_key(&record, &key.digest()).await.unwrap();

    // A long in-process lifetime, so that only the broadcast can explain the second instance forgetting.
    let settings = ValidatorSettings { local_ttl: Duration::from_secs(3600), ..ValidatorSettings::default() };
    let store: Arc<dyn KeyStore> = b.accounts.clone();
    let first = KeyValidator::new(store.clone(), b.shared_keys.clone(), settings.clone());
    let second = KeyValidator::new(store, b.shared_keys.clone(), settings);
    let stop = CancellationToken::new();
    let redis = b.redis.clone().unwrap();
    let subscription = redis.subscribe_key_revocations().await.unwrap();
    let follower = tokio::spawn(redis.follow_key_revocations(subscription, second.clone(), stop.clone()));

    assert!(first.validate(key.expose_secret()).await.is_ok());
    assert!(second.validate(key.expose_secret()).await.is_ok());
    b.accounts.revoke_key(p.id, record.id, now()).await.unwrap();
    // The subscription is asynchronous: revoke until it is in place, as a real second revocation would.
    support::eventually(Duration::from_secs(10), "the second instance forgets the revoked key", || {
        let (first, second, digest, raw) =
            (first.clone(), second.clone(), key.digest(), key.expose_secret().to_owned());
        async move {
            first.forget(&[digest]).await.unwrap();
            matches!(second.validate(&raw).await, Err(AuthError::Unknown)).then_some(())
        }
    })
    .await;
    assert!(matches!(first.validate(key.expose_secret()).await, Err(AuthError::Unknown)));
    stop.cancel();
    follower.await.unwrap();
}
