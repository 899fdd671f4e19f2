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
    tail_feed,
    alert_store,
    search_index_agrees_with_the_scan,
);

fn log(
    project: Uuid,
    message: &str,
    level: ledger_stages::Level,
    ts: chrono::DateTime<Utc>,
) -> ledger_stages::LogRecord {
    ledger_stages::LogRecord {
        service: Some("svc".into()),
        attributes: serde_json::json!({"k": 1}),
        fingerprint: 7,
        ..ledger_stages::LogRecord::new(project, ts, level, message)
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
        stages: None,
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
    assert!(matches!(b.accounts.create_user(&user("ada@example.com"), "hash-b").await, Err(StoreError::Duplicate)));
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
    let rules: ledger_stages::rules::StageRules = serde_json::from_value(serde_json::json!({
        "redact": [{"detector": "email"}, {"pattern": "ORD-[0-9]+", "action": "remove"}],
        "sample": [{"levels": ["DEBUG"], "action": "drop"}]
    }))
    .unwrap();
    changed.stages = Some(std::sync::Arc::new(rules));
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

/// The backend's tail feed, as the daemon builds it: Redis streams when shared, memory when embedded.
fn feed_of(b: &Backend) -> Arc<dyn ledger::store::tail::TailFeed> {
    match &b.redis {
        Some(redis) => Arc::new(ledger::store::tail::redis::RedisTail::new(redis.clone(), 1000)),
        None => Arc::new(ledger::store::tail::memory::MemoryTail::new(1000, 64 << 20)),
    }
}

async fn tail_feed(b: Backend) {
    let feed = feed_of(&b);
    let (p, other) = (Uuid::now_v7(), Uuid::now_v7());
    let at = Utc::now();
    let batch = |n: usize| -> Vec<ledger_stages::LogRecord> {
        (0..n)
            .flat_map(|i| {
                [
                    log(p, &format!("p {i}"), ledger_stages::Level::Info, at),
                    log(other, "o", ledger_stages::Level::Info, at),
                ]
            })
            .collect()
    };
    assert!(feed.tailed().await.is_empty());
    // Nobody tails p yet: nothing is kept.
    let tailed = feed.tailed().await;
    feed.publish(batch(2), &tailed).await.unwrap();
    assert_eq!(feed.end(p).await.unwrap(), None);

    feed.watch(p).await.unwrap();
    let tailed = feed.tailed().await;
    assert!(tailed.contains(&p) && !tailed.contains(&other));
    assert_eq!(feed.end(p).await.unwrap(), None);
    let first = batch(3);
    feed.publish(first.clone(), &tailed).await.unwrap();
    let entries = feed.read(p, None, 10, Duration::ZERO).await.unwrap();
    assert_eq!(entries.len(), 1);
    let ids = |records: &[ledger_stages::LogRecord]| records.iter().map(|r| r.id).collect::<Vec<_>>();
    let mine: Vec<ledger_stages::LogRecord> = first.iter().filter(|r| r.project_id == p).cloned().collect();
    assert_eq!(ids(&entries[0].records), ids(&mine), "only p's logs, in order");
    assert_eq!(feed.end(p).await.unwrap().as_deref(), Some(entries[0].position.as_str()));
    assert_eq!(entries[0].records[0], mine[0], "logs come back whole");

    let second = batch(1);
    feed.publish(second.clone(), &tailed).await.unwrap();
    let next = feed.read(p, Some(&entries[0].position), 10, Duration::ZERO).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].records[0].id, second[0].id);
    let found = feed.locate(p, second[0].id).await.unwrap().unwrap();
    assert_eq!(found.position, next[0].position);
    assert!(feed.locate(p, Uuid::now_v7()).await.unwrap().is_none());
    assert!(feed.locate(p, second[1].id).await.unwrap().is_none(), "another project's log is not in p's feed");

    // A read waits for what is published while it waits.
    let (waiter, publisher) = (feed.clone(), feed.clone());
    let third = batch(1);
    let publish = {
        let (third, tailed) = (third.clone(), tailed.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            publisher.publish(third, &tailed).await.unwrap();
        })
    };
    let waited = waiter.read(p, Some(&next[0].position), 10, Duration::from_secs(5)).await.unwrap();
    publish.await.unwrap();
    assert_eq!(waited.len(), 1);
    assert_eq!(waited[0].records[0].id, third[0].id);
    assert!(feed.read(p, Some(&waited[0].position), 10, Duration::from_millis(200)).await.unwrap().is_empty());
}

async fn alert_store(b: Backend) {
    use ledger::store::alerts::AlertRule;
    let owner = user("alerts@example.com");
    b.accounts.create_user(&owner, "hash").await.unwrap();
    let p = project(owner.id, "p");
    b.accounts.create_project(&p).await.unwrap();
    let at = now();
    let mut rule = AlertRule {
        id: Uuid::now_v7(),
        project_id: p.id,
        name: "r".into(),
        condition: ledger::store::alerts::Watch {
            kind: "error_rate".into(),
            params: serde_json::json!({"threshold_percent": 5, "window_secs": 300}),
        },
        channel: serde_json::json!({"type": "webhook", "url": "https://example.com/h"}),
        secret: "s3cret".into(),
        cooldown_secs: 300,
        enabled: true,
        created_at: at,
        firing: false,
        episode: 0,
        last_fired_at: None,
        checked_until: at,
    };
    let store = &b.alerts;
    store.create_rule(&rule).await.unwrap();
    assert_eq!(store.rule(p.id, rule.id).await.unwrap().as_ref(), Some(&rule));
    assert_eq!(store.rules(p.id).await.unwrap(), vec![rule.clone()]);
    assert!(store.rule(Uuid::now_v7(), rule.id).await.unwrap().is_none(), "only in its project");
    rule.name = "renamed".into();
    rule.enabled = false;
    assert!(store.update_rule(&rule).await.unwrap());
    assert!(store.enabled_rules().await.unwrap().is_empty());
    rule.enabled = true;
    store.update_rule(&rule).await.unwrap();
    assert_eq!(store.enabled_rules().await.unwrap().len(), 1);

    // Firing and resolving: each change made once.
    assert_eq!(store.set_firing(rule.id, true, at).await.unwrap(), Some(1));
    assert_eq!(store.set_firing(rule.id, true, at).await.unwrap(), None);
    assert_eq!(store.set_firing(rule.id, false, at).await.unwrap(), Some(1));
    assert_eq!(store.set_firing(rule.id, true, at).await.unwrap(), Some(2));
    let stored = store.rule(p.id, rule.id).await.unwrap().unwrap();
    assert!(stored.firing && stored.episode == 2 && stored.last_fired_at == Some(at));

    // A notification: made once, its attempts recorded, taken over only once its holder is gone.
    let later = at + chrono::Duration::seconds(60);
    assert!(store.claim(rule.id, "firing:2", "firing", at, "{}", later).await.unwrap());
    assert!(!store.claim(rule.id, "firing:2", "firing", at, "{}", later).await.unwrap());
    assert!(store.reclaim(at, later, 5).await.unwrap().is_empty(), "still held");
    store.attempted(rule.id, "firing:2", 1, Some(500), false, at).await.unwrap();
    let taken = store.reclaim(at + chrono::Duration::seconds(1), later, 5).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].event_key.as_str(), taken[0].payload.as_str(), taken[0].attempts), ("firing:2", "{}", 1));
    assert!(store.reclaim(at + chrono::Duration::seconds(1), later, 5).await.unwrap().is_empty(), "taken once");
    store.attempted(rule.id, "firing:2", 2, Some(200), true, later).await.unwrap();
    let log = store.deliveries(rule.id, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].attempts, log[0].response_status, log[0].delivered), (2, Some(200), true));

    assert_eq!(store.swap_seen(rule.id, 7, at).await.unwrap(), None);
    assert_eq!(store.swap_seen(rule.id, 7, later).await.unwrap(), Some(at));
    store.checked(rule.id, later).await.unwrap();
    store.checked(rule.id, at).await.unwrap();
    assert_eq!(store.rule(p.id, rule.id).await.unwrap().unwrap().checked_until, later, "only moves forward");

    assert!(store.delete_rule(p.id, rule.id).await.unwrap());
    assert!(!store.delete_rule(p.id, rule.id).await.unwrap());
    assert!(store.deliveries(rule.id, 10).await.unwrap().is_empty(), "its deliveries go with it");
}

/// Writes records through the store's write port, as the writers do: logs behind the search index's
/// watermark are marked late in the same transaction.
async fn write_marked(b: &Backend, records: &[ledger_stages::LogRecord]) {
    use ledger::store::logs::{Late, LogWriter, PrepareRows, WriteBatch};
    let blocks = ledger::store::logs::search::late_blocks(records, Utc::now());
    let late = Late { blocks: &blocks, decided: std::time::Instant::now() };
    match &b.logs {
        // Each store takes its own form of rows: the records for SQLite, COPY rows prepared by PostgreSQL's.
        ledger::store::LogDb::Sqlite(store) => {
            let rows = [records];
            let batch = WriteBatch { rows: &rows[..], dead_letters: &[], offset: None, late, answers: &[] };
            store.write(batch).await.unwrap()
        }
        ledger::store::LogDb::Postgres(store) => {
            type Pg = ledger::store::logs::postgres::PgLogStore;
            let mut buffer = Vec::new();
            <Pg as PrepareRows>::push(&mut buffer, records);
            let rows = <Pg as PrepareRows>::part(&buffer, 0..buffer.len());
            let batch = WriteBatch { rows, dead_letters: &[], offset: None, late, answers: &[] };
            store.write(batch).await.unwrap()
        }
    }
}

/// Every page of `terms` over `[from, to]` along `path`, `limit` logs a page: the ids in order.
async fn all_pages(
    logs: &dyn ledger::store::logs::LogStore,
    project: Uuid,
    range: (chrono::DateTime<Utc>, chrono::DateTime<Utc>),
    terms: &[&str],
    path: ledger::store::logs::SearchPath,
) -> Vec<Uuid> {
    let mut query = ledger::store::logs::LogQuery {
        project_id: project,
        from: range.0,
        to: range.1,
        levels: vec![],
        min_level: None,
        services: vec![],
        environment: None,
        terms: terms.iter().map(|t| (*t).to_owned()).collect(),
        fingerprint: None,
        trace_id: None,
        limit: 7,
        cursor: None,
    };
    let mut ids = Vec::new();
    loop {
        let page = logs.query_by(&query, path).await.unwrap();
        ids.extend(page.iter().map(|r| r.id));
        match page.last() {
            Some(last) if page.len() == query.limit => query.cursor = Some(ledger::store::logs::Cursor::after(last)),
            _ => return ids,
        }
    }
}

/// The search index and the scan find the same logs, in the same order, page by page, on a corpus of edge
/// cases: Unicode and case folding, punctuation and LIKE wildcards, very long messages, words only in the
/// attributes, another project's logs, logs newer than the index and logs written late behind it.
async fn search_index_agrees_with_the_scan(b: Backend) {
    use ledger::store::logs::SearchPath;
    use ledger_stages::Level;
    let logs = b.logs.store();
    let index = b.logs.search();
    let (p, other) = (Uuid::now_v7(), Uuid::now_v7());
    let now = Utc::now().trunc_subsecs(6);
    let long = format!("{} needle-at-the-end", "lorem ipsum dolor sit amet ".repeat(800));
    let messages: Vec<String> = [
        "payment for order 20417 declined: card ****1111",
        "Payment DECLINED again",
        "Zürich office is open",
        "ZÜRICH OFFICE IS CLOSED",
        "flight from İstanbul landed",
        "istanbul weather report",
        "東京駅 delays on the Yamanote line",
        "🚀 launch went fine",
        "temperature 300 \u{212A}elvin",
        "kelvin is a unit",
        "50%_off sale",
        "500 off sale",
        "path a\\b not found",
        "key=value; other=thing",
        "[brackets] and (parens)",
        "o'neil signed in",
        "he said \"quoted\" words",
        "zanzibar is rare",
        "ab",
        long.as_str(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // 600 logs over the last 3 days, every message many times over, some at the very same microsecond.
    let mut records = Vec::new();
    for i in 0..600i64 {
        let ts = now - chrono::Duration::seconds(60) - chrono::Duration::seconds((i * 7919) % (3 * 86_400));
        let message = &messages[(i as usize * 7) % messages.len()];
        let mut record = log(p, message, Level::Info, if i % 50 == 0 { now - chrono::Duration::hours(1) } else { ts });
        if i % 10 == 0 {
            record.attributes = serde_json::json!({"note": "attronly zanzibar"});
        }
        records.push(record);
        records.push(log(other, message, Level::Error, ts));
    }
    write_marked(&b, &records).await;
    let progress = index.index_once(Utc::now(), Duration::from_secs(60)).await.unwrap();
    assert!(progress.caught_up && progress.logs >= 1150, "{progress:?}");
    // Newer than the watermark: found by scanning the tail.
    write_marked(&b, &[log(p, "fresh zanzibar news", Level::Info, now)]).await;
    // Behind the watermark, written after the index run: marked late.
    write_marked(&b, &[log(p, "latecomer zanzibar", Level::Info, now - chrono::Duration::days(2))]).await;

    let terms: &[&[&str]] = &[
        &["zanzibar"],
        &["ZANZIBAR", "rare"],
        &["latecomer"],
        &["declined"],
        &["payment declined"],
        &["payment for order 2041"],
        &["****1111"],
        &["zürich"],
        &["ZÜRICH"],
        &["istanbul"],
        &["İSTANBUL"],
        &["東京"],
        &["東京駅 delays"],
        &["🚀"],
        &["kelvin"],
        &["50%_off"],
        &["0%_"],
        &["a\\b"],
        &["key=value;"],
        &["[brackets]"],
        &["o'neil"],
        &["\"quoted\""],
        &["needle-at-the-end"],
        &["ipsum", "needle"],
        &["attronly"],
        &["ab"],
        &["e"],
        &["nothing like this"],
    ];
    let ranges = [
        (now - chrono::Duration::days(4), now + chrono::Duration::minutes(1)),
        (now - chrono::Duration::hours(30), now - chrono::Duration::hours(2)),
        (now - chrono::Duration::minutes(90), now),
    ];
    let mut found_any = 0;
    for range in ranges {
        for t in terms {
            let indexed = all_pages(logs.as_ref(), p, range, t, SearchPath::Index).await;
            let scanned = all_pages(logs.as_ref(), p, range, t, SearchPath::Scan).await;
            assert_eq!(indexed, scanned, "{t:?} over {range:?}");
            found_any += usize::from(!indexed.is_empty());
        }
    }
    assert!(found_any > 40, "the corpus's terms are found ({found_any})");
    let everything = ranges[0];
    assert_eq!(all_pages(logs.as_ref(), p, everything, &["zanzibar"], SearchPath::Index).await.len(), 32);
    assert!(all_pages(logs.as_ref(), p, everything, &["attronly"], SearchPath::Index).await.is_empty());

    // The index narrows: the rare word's candidates are a few blocks of the 4 days, not all of them.
    let (from, to) = (everything.0.timestamp_micros(), everything.1.timestamp_micros());
    let candidates = index.candidates(p, from, to, &["zanzibar".into()]).await.unwrap().unwrap();
    let minutes: i64 = candidates.iter().map(|(s, e)| e - s).sum::<i64>() / 60_000_000;
    assert!(minutes < 60, "zanzibar's candidates span {minutes} minutes");
    assert!(index.candidates(p, from, to, &["ab".into()]).await.unwrap().is_none(), "too short for a gram");

    // Indexing the late block keeps the answer and clears the mark.
    index.index_once(Utc::now(), Duration::from_secs(60)).await.unwrap();
    let late = all_pages(logs.as_ref(), p, everything, &["latecomer"], SearchPath::Index).await;
    assert_eq!(late.len(), 1);
    let marks: i64 = match &b.logs {
        ledger::store::LogDb::Sqlite(s) => {
            sqlx::query_scalar("SELECT count(*) FROM search_late").fetch_one(s.pool()).await.unwrap()
        }
        ledger::store::LogDb::Postgres(s) => {
            sqlx::query_scalar("SELECT count(*) FROM search_late").fetch_one(s.pool()).await.unwrap()
        }
    };
    assert_eq!(marks, 0, "the late marks are indexed and gone");
}
