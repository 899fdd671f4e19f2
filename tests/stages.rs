#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The parse, redact and sample stages, on both backends, as operators and clients use them: rules in a
//! project's settings and in config.toml; redaction that leaves no raw value in the log store, the Redis
//! queue or the daemon's output; logfmt and JSON fields the query filters find; sampling whole traces,
//! counted in usage and outside the quota; a reload that keeps the running rules when the file is broken;
//! a project's rule change reaching a second instance.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind, eventually, urlencode};

const RAW_EMAIL: &str = "alice.smith@example.com";
const RAW_CARD: &str = "4111 1111 1111 1111";
const RAW_PASSWORD: &str = "hunter2-horse-battery";
const RAW_NOTE_EMAIL: &str = "bob.jones@example.org";

async fn set_stages(d: &Daemon, token: &str, project: &str, stages: Value) {
    let r = d.patch(&format!("/v1/projects/{project}"), Some(token), json!({ "stages": stages })).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Every byte the log store keeps, as text: PostgreSQL's tables dumped row by row, SQLite's files read.
async fn log_store_text(d: &Daemon) -> String {
    match d.kind() {
        Kind::Shared => {
            let url = format!("{}/{}", support::postgres_server(), d.fresh().logs_db());
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let mut all = String::new();
            for table in ["logs", "dead_letters", "search_grams", "search_late"] {
                let rows: Vec<(String,)> =
                    sqlx::query_as(&format!("SELECT t::text FROM {table} t")).fetch_all(&pool).await.unwrap();
                all.extend(rows.into_iter().map(|(r,)| r + "\n"));
            }
            all
        }
        Kind::Embedded => {
            let mut all = String::new();
            for entry in std::fs::read_dir(d.fresh().dir.path()).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap().to_string_lossy().starts_with("logs.db") {
                    all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
                }
            }
            all
        }
    }
}

/// Everything under the daemon's Redis prefix, values included, as text.
async fn redis_text(d: &Daemon) -> String {
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", d.fresh().prefix())).query_async(&mut redis).await.unwrap();
    let mut all = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await.unwrap();
        let value: redis::Value = match kind.as_str() {
            "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query_async(&mut redis).await.unwrap(),
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut redis).await.unwrap(),
            "string" => redis::cmd("GET").arg(&key).query_async(&mut redis).await.unwrap(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query_async(&mut redis).await.unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&key).query_async(&mut redis).await.unwrap(),
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query_async(&mut redis).await.unwrap(),
            _ => redis::Value::Nil,
        };
        all.push_str(&format!("{key} {}\n", flatten(&value)));
    }
    all
}

fn flatten(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(flatten).collect::<Vec<_>>().join(" ")
        }
        redis::Value::Map(pairs) => {
            pairs.iter().map(|(k, v)| format!("{} {}", flatten(k), flatten(v))).collect::<Vec<_>>().join(" ")
        }
        other => format!("{other:?}"),
    }
}

fn assert_nowhere(text: &str, place: &str) {
    for raw in [RAW_EMAIL, RAW_CARD, "4111111111111111", RAW_PASSWORD, RAW_NOTE_EMAIL] {
        assert!(!text.contains(raw), "`{raw}` is in {place}");
    }
}

const REDACT: fn() -> Value = || {
    json!({"redact": [
        {"detector": "email"}, {"detector": "card"}, {"attribute": "password"}
    ]})
};

fn payment_log() -> Value {
    json!({"message": format!("user {RAW_EMAIL} paid with {RAW_CARD}"), "level": "error",
           "attributes": {"password": RAW_PASSWORD, "note": format!("mail {RAW_NOTE_EMAIL}")},
           "exception": {"type": "CardError", "value": format!("declined for {RAW_EMAIL}")}})
}

async fn redaction_leaves_no_raw_value_anywhere(d: Daemon) {
    let (token, project, key) = d.tenant("redact@example.com").await;
    set_stages(&d, &token, &project, REDACT()).await;
    let r = d.ingest(&key, payment_log()).await;
    assert_eq!(r.status, 202, "{r:?}");
    let id = r.body["ids"][0].as_str().unwrap().to_owned();
    let log = d.stored(&key, &id).await;
    assert_eq!(log["message"], "user ***@*** paid with ****1111");
    assert_eq!(log["attributes"], json!({"password": "***", "note": "mail ***@***"}));
    assert_eq!(log["exception"]["value"], "declined for ***@***");
    // The query finds it by what was kept, and the raw value finds nothing.
    let found = d.get(&format!("/v1/logs?q={}", urlencode("paid with ****1111")), Some(&key)).await;
    assert_eq!(found.body["logs"].as_array().unwrap().len(), 1, "{found:?}");
    let raw = d.get(&format!("/v1/logs?q={}", urlencode(RAW_EMAIL)), Some(&key)).await;
    assert_eq!(raw.body["logs"].as_array().unwrap().len(), 0, "{raw:?}");

    assert_nowhere(&log_store_text(&d).await, "the log store");
    if d.kind() == Kind::Shared {
        assert_nowhere(&redis_text(&d).await, "Redis");
    }
    assert_nowhere(&d.output(), "the daemon's output");
    let metrics = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ledger_redactions_total{rule=\"email\"}"), "{metrics}");
}

/// The queue itself, before any writer has taken the entry: the daemon accepts but writes nothing.
async fn the_queue_holds_only_redacted_logs() {
    let fresh = Fresh::new(Kind::Shared);
    let gateway = Daemon::start_with(fresh, &[("LEDGER__ROLES__WORKERS", "false")]).await;
    let (token, project, key) = gateway.tenant("queue-redact@example.com").await;
    set_stages(&gateway, &token, &project, REDACT()).await;
    let r = gateway.ingest(&key, payment_log()).await;
    assert_eq!(r.status, 202, "{r:?}");
    let queued = redis_text(&gateway).await;
    assert!(queued.contains("****1111"), "the entry is in Redis, redacted: {queued}");
    assert_nowhere(&queued, "the Redis queue");
    // A writer then stores it as queued.
    let writer = Daemon::start_with(gateway.fresh().sibling(), &[]).await;
    let id = r.body["ids"][0].as_str().unwrap();
    assert_eq!(writer.stored(&key, id).await["message"], "user ***@*** paid with ****1111");
}

async fn parse_lifts_fields_the_filters_find(d: Daemon) {
    let (token, project, key) = d.tenant("parse@example.com").await;
    set_stages(
        &d,
        &token,
        &project,
        json!({"parse": [
            {"services": ["worker"], "format": "logfmt"},
            {"format": "json"}
        ]}),
    )
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = d
        .ingest(
            &key,
            json!({"logs": [
                {"service": "worker", "message": format!(r#"level=error msg="job failed" job_id=881 queue=mail trace_id={trace}"#)},
                {"service": "api", "message": r#"{"msg": "order charged", "level": "warn", "order_id": 77, "cart": {"items": 3}}"#},
                {"service": "api", "message": "level=error this is not parsed for api"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let ids: Vec<String> = r.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let worker = d.stored(&key, &ids[0]).await;
    assert_eq!(worker["message"], "job failed");
    assert_eq!(worker["level"], "ERROR");
    assert_eq!(worker["trace_id"], trace);
    assert_eq!(worker["attributes"], json!({"job_id": "881", "queue": "mail"}));
    let api = d.stored(&key, &ids[1]).await;
    assert_eq!((api["message"].as_str(), api["level"].as_str()), (Some("order charged"), Some("WARNING")));
    assert_eq!(api["attributes"], json!({"order_id": 77, "cart": {"items": 3}}));
    let plain = d.stored(&key, &ids[2]).await;
    assert_eq!(plain["level"], "INFO", "logfmt is only for the worker service, and the line is not JSON");

    let errors = d.get("/v1/logs?min_level=ERROR", Some(&key)).await;
    let messages: Vec<&str> =
        errors.body["logs"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["job failed"]);
    let by_trace = d.get(&format!("/v1/logs?trace_id={trace}"), Some(&key)).await;
    assert_eq!(by_trace.body["logs"][0]["id"], ids[0].as_str());
    let warnings = d.get("/v1/logs?level=WARNING&service=api", Some(&key)).await;
    assert_eq!(warnings.body["logs"][0]["id"], ids[1].as_str());
    let words = d.get("/v1/logs?q=charged", Some(&key)).await;
    assert_eq!(words.body["logs"].as_array().unwrap().len(), 1);
}

/// The trace id of request `n` of the sampling test.
fn trace_of(n: usize) -> String {
    format!("{:032x}", n as u128 * 0x9e37_79b9_7f4a_7c15_u128 + 12345)
}

async fn sampling_keeps_whole_traces_and_counts_the_rest(d: Daemon) {
    let (token, project, key) = d.tenant("sample@example.com").await;
    // 6 requests of 100 logs: without the give-back of removed logs, the third would be over quota.
    let r = d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"settings": {"daily_quota": 250}})).await;
    assert_eq!(r.status, 200, "{r:?}");
    set_stages(
        &d,
        &token,
        &project,
        json!({"sample": [
            {"levels": ["debug"], "action": "drop"},
            {"services": ["api"], "action": "sample", "one_in": 10}
        ]}),
    )
    .await;
    let (mut acknowledged, mut debug) = (Vec::new(), 0);
    for batch in 0..6 {
        let logs: Vec<Value> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                // 200 traces of 3 logs; every 50th log is a DEBUG one (dropped whatever its trace).
                let level = if n % 50 == 0 { "debug" } else { "info" };
                json!({"message": format!("step {} of request {}", n % 3, n / 3), "service": "api", "level": level,
                       "trace_id": trace_of(n / 3)})
            })
            .collect();
        debug += logs.iter().filter(|l| l["level"] == "debug").count();
        let r = d.ingest(&key, json!({"logs": logs})).await;
        assert_eq!(r.status, 202, "batch {batch}: {r:?}");
        assert_eq!(r.body["ids"].as_array().unwrap().len(), 100, "every log is acknowledged");
        acknowledged.extend(r.body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    // The last acknowledged log, whatever became of it, has been handled once a later marker is stored.
    let marker = d.ingest(&key, json!({"message": "marker", "service": "web"})).await;
    d.stored(&key, marker.body["ids"][0].as_str().unwrap()).await;
    let stored: Vec<Value> = d.all_logs(&key, 500).await.into_iter().filter(|l| l["service"] == "api").collect();
    let mut by_trace = std::collections::HashMap::<String, usize>::new();
    for log in &stored {
        assert_ne!(log["level"], "DEBUG", "debug logs are dropped");
        *by_trace.entry(log["trace_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    // A kept trace has every log but its DEBUG ones (dropped by the first rule).
    for (trace, n) in &by_trace {
        let request = (0..200).find(|r| trace_of(*r) == *trace).unwrap();
        let debug_logs = (request * 3..request * 3 + 3).filter(|n| n % 50 == 0).count();
        assert_eq!(*n, 3 - debug_logs, "trace {trace} is kept whole");
    }
    assert!((5..=45).contains(&by_trace.len()), "about 20 of 200 traces kept: {}", by_trace.len());
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let usage = eventually(Duration::from_secs(20), "usage counts the removed logs", || async {
        let r = d.get(&format!("/v1/usage?from={today}&to={today}"), Some(&key)).await;
        let day = r.body["days"][0].clone();
        (day["accepted"].as_u64() == Some(stored.len() as u64 + 1)).then_some(day)
    })
    .await;
    assert_eq!(usage["dropped_by_rule"], debug as u64);
    assert_eq!(usage["sampled_out"], (600 - debug - stored.len()) as u64);
    let metrics = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("outcome=\"sampled_out\""), "{metrics}");
}

/// config.toml with `extra` appended, in a file of its own.
fn config_with(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("config.toml");
    let base = std::fs::read_to_string(support::config_path()).unwrap();
    std::fs::write(&path, format!("{base}\n{extra}\n")).unwrap();
    path.display().to_string()
}

async fn a_reload_applies_new_rules_and_a_broken_file_keeps_the_old(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), "[stages.redact]\nrules = [{ pattern = \"SECRET-[0-9]+\" }]");
    let d = Daemon::start_with_config(Fresh::new(kind), &config, &[]).await;
    let (_, _, key) = d.tenant("reload@example.com").await;
    let send = |message: String| {
        let (d, key) = (&d, key.clone());
        async move {
            let r = d.ingest(&key, json!({ "message": message })).await;
            assert_eq!(r.status, 202, "{r:?}");
            d.stored(&key, r.body["ids"][0].as_str().unwrap()).await["message"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(send("a SECRET-1 and a TOKEN-1".into()).await, "a *** and a TOKEN-1");

    config_with(
        dir.path(),
        "[stages.redact]\nrules = [{ pattern = \"SECRET-[0-9]+\" }, { pattern = \"TOKEN-[0-9]+\" }]",
    );
    let (ok, stdout, stderr) = d.ledger(&["reload", "--pid", &d.pid().to_string()]);
    assert!(ok, "{stdout}{stderr}");
    let mut n = 1;
    eventually(Duration::from_secs(20), "the reloaded rules apply", || {
        n += 1;
        let message = format!("a SECRET-{n} and a TOKEN-{n}");
        async move { (send(message).await == "a *** and a ***").then_some(()) }
    })
    .await;

    config_with(dir.path(), "[stages.redact]\nrules = [{ pattern = \"(unclosed\" }]");
    // `ledger reload` checks the file first and does not signal a daemon with a broken one.
    let (ok, _, stderr) = d.ledger(&["reload", "--pid", &d.pid().to_string()]);
    assert!(!ok && stderr.contains("stages.redact.rules[0].pattern"), "{stderr}");
    // A SIGHUP regardless (`kill -HUP`): the daemon keeps its rules and says why.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(d.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    eventually(Duration::from_secs(20), "the daemon says why it kept its rules", || async {
        d.output().contains("was not reloaded").then_some(())
    })
    .await;
    assert!(d.output().contains("stages.redact.rules[0].pattern"), "the log names the rule:\n{}", d.output());
    assert_eq!(send("a SECRET-99 and a TOKEN-99".into()).await, "a *** and a ***", "the running rules stay");
}

/// A rule a project sets on one instance applies on another, whose cache knew the key before.
async fn a_projects_rule_applies_on_a_second_instance() {
    let a = Daemon::start(Kind::Shared).await;
    let b = a.sibling().await;
    let (token, project, key) = a.tenant("two@example.com").await;
    let r = b.ingest(&key, json!({"message": "before: SECRET-1"})).await;
    assert_eq!(b.stored(&key, r.body["ids"][0].as_str().unwrap()).await["message"], "before: SECRET-1");
    set_stages(&a, &token, &project, json!({"redact": [{"pattern": "SECRET-[0-9]+", "action": "remove"}]})).await;
    eventually(Duration::from_secs(10), "instance b applies the new rule", || async {
        let r = b.ingest(&key, json!({"message": "after: SECRET-2"})).await;
        let message = b.stored(&key, r.body["ids"][0].as_str().unwrap()).await["message"].clone();
        (message == "after: ").then_some(())
    })
    .await;
}

async fn bad_rules_are_a_422_naming_them(d: Daemon) {
    let token = d.signup("bad-rules@example.com").await;
    let project = d.project(&token, "app").await;
    let r = d
        .patch(
            &format!("/v1/projects/{project}"),
            Some(&token),
            json!({"stages": {"redact": [{"pattern": "(open"}], "sample": [{"action": "sample"}],
                              "parse": [{"format": "regex", "pattern": "no capture"}]}}),
        )
        .await;
    r.assert_error(422, "validation_failed");
    let fields: Vec<&str> =
        r.body["error"]["details"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["stages.parse[0].pattern", "stages.redact[0].pattern", "stages.sample[0].one_in"]);
    let hash = d
        .patch(
            &format!("/v1/projects/{project}"),
            Some(&token),
            json!({"stages": {"redact": [{"detector": "email", "action": "hash"}]}}),
        )
        .await;
    hash.assert_error(422, "validation_failed");
    assert!(hash.body["error"]["details"][0]["reason"].as_str().unwrap().contains("hash_key"), "{hash:?}");
    // Nothing was saved; the rules read back as sent once valid.
    let rules = json!({"parse": [{"format": "logfmt"}], "redact": [{"detector": "card", "action": "remove"}],
                       "sample": [{"levels": ["DEBUG"], "action": "drop"}]});
    let r = d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"stages": rules})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["stages"], rules);
    let cleared = d.patch(&format!("/v1/projects/{project}"), Some(&token), json!({"stages": {}})).await;
    assert_eq!(cleared.body["stages"], json!({"parse": [], "redact": [], "sample": []}));
}

on_both_backends!(
    redaction_leaves_no_raw_value_anywhere,
    parse_lifts_fields_the_filters_find,
    sampling_keeps_whole_traces_and_counts_the_rest,
    bad_rules_are_a_422_naming_them,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_queue_holds_only_redacted_logs() {
    the_queue_holds_only_redacted_logs().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_rule_change_reaches_a_second_instance() {
    a_projects_rule_applies_on_a_second_instance().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_reload_keeps_old_rules_on_a_broken_file() {
    a_reload_applies_new_rules_and_a_broken_file_keeps_the_old(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_reload_keeps_old_rules_on_a_broken_file() {
    a_reload_applies_new_rules_and_a_broken_file_keeps_the_old(Kind::Shared).await;
}
