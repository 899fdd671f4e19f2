#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! Alerts against a local HTTP receiver: every kind fires once and (where it can) resolves, on both backends;
//! webhook signatures verify; a receiver that fails three times gets the notification once, with the
//! attempts in the delivery log; two instances notify once; Slack and PagerDuty bodies have their formats'
//! fields; rules are validated and only their owner sees them.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{Daemon, Fresh, Kind, eventually};

#[derive(Clone, Debug)]
struct Received {
    path: String,
    signature: Option<String>,
    raw: Vec<u8>,
    body: Value,
}

/// A local receiver: records every POST; answers 500 to the first `fail` requests, then 200.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(fail: usize) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let failures = Arc::new(Mutex::new(fail));
        let record = got.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let (record, failures) = (record.clone(), failures.clone());
            async move {
                record.lock().unwrap().push(Received {
                    path: uri.path().to_owned(),
                    signature: headers.get("x-ledger-signature").map(|v| v.to_str().unwrap().to_owned()),
                    raw: body.to_vec(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let mut left = failures.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got }
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }
}

fn verify(secret: &str, received: &Received) {
    let header = received.signature.as_deref().expect("a signature");
    let (t, v1) = header.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&received.raw);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, expected, "the signature verifies");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..120).contains(&age), "a fresh timestamp");
}

const FAST: [(&str, &str); 2] =
    [("LEDGER__ALERTS__EVALUATE_INTERVAL_SECS", "1"), ("LEDGER__ALERTS__ALLOW_PRIVATE_TARGETS", "true")];

async fn rule(d: &Daemon, token: &str, project: &str, body: Value) -> Value {
    let r = d.post(&format!("/v1/projects/{project}/alerts"), Some(token), body).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body
}

async fn waits_for(receiver: &Receiver, path: &str, n: usize, what: &str) -> Vec<Received> {
    eventually(Duration::from_secs(30), what, || async {
        let got = receiver.at(path);
        (got.len() >= n).then_some(got)
    })
    .await
}

async fn every_kind_fires_once_and_resolves(kind: Kind) {
    let d = Daemon::start_with(Fresh::new(kind), &FAST).await;
    let receiver = Receiver::start(0).await;
    let (token, project, key) = d.tenant("alerts@example.com").await;
    let hook = |path: &str| json!({"type": "webhook", "url": format!("{}{path}", receiver.url)});
    let error_rate = rule(&d, &token, &project, json!({"name": "errors up", "kind": "error_rate",
        "params": {"threshold_percent": 50, "window_secs": 300, "min_logs": 3}, "channel": hook("/er"), "cooldown_secs": 0})).await;
    let query_count = rule(&d, &token, &project, json!({"name": "timeouts", "kind": "query_count",
        "params": {"query": {"q": "timeout"}, "threshold": 2, "window_secs": 4}, "channel": hook("/qc"), "cooldown_secs": 0})).await;
    let new_error =
        rule(&d, &token, &project, json!({"name": "new", "kind": "new_error", "params": {}, "channel": hook("/ne")}))
            .await;
    let regression = rule(
        &d,
        &token,
        &project,
        json!({"name": "back", "kind": "regression",
        "params": {"quiet_secs": 2}, "channel": hook("/rg")}),
    )
    .await;
    let secret = error_rate["secret"].as_str().unwrap().to_owned();

    let card = |n: u32| {
        json!({"message": format!("payment {n} failed"), "level": "ERROR", "service": "pay",
        "exception": {"type": "CardError", "value": "declined", "stacktrace": "at charge (pay.js:12)"}})
    };
    assert_eq!(d.ingest(&key, json!({"logs": [card(1), card(2), card(3), card(4)]})).await.status, 202);
    let logs: Vec<Value> = (0..3).map(|i| json!({"message": format!("upstream timeout {i}")})).collect();
    assert_eq!(d.ingest(&key, json!({ "logs": logs })).await.status, 202);
    assert_eq!(d.ingest(&key, json!({"message": "disk full", "level": "CRITICAL", "service": "db"})).await.status, 202);

    // error_rate: 5 errors of 8 logs > 50 %.
    let fired = waits_for(&receiver, "/er", 1, "error_rate fires").await;
    assert_eq!(
        (fired[0].body["status"].as_str(), fired[0].body["alert"]["kind"].as_str()),
        (Some("firing"), Some("error_rate"))
    );
    assert_eq!(fired[0].body["project_id"], project.as_str());
    verify(&secret, &fired[0]);
    // query_count: 3 timeouts > 2, then resolved once they leave the 4 s window.
    let qc = waits_for(&receiver, "/qc", 2, "query_count fires and resolves").await;
    assert_eq!((qc[0].body["status"].as_str(), qc[1].body["status"].as_str()), (Some("firing"), Some("resolved")));
    verify(query_count["secret"].as_str().unwrap(), &qc[0]);
    // new_error: each new fingerprint once.
    let new = waits_for(&receiver, "/ne", 2, "new_error fires for both errors").await;
    let mut fingerprints: Vec<&str> = new.iter().map(|r| r.body["fingerprint"].as_str().unwrap()).collect();
    fingerprints.sort_unstable();
    fingerprints.dedup();
    assert_eq!(fingerprints.len(), 2, "{new:#?}");
    assert!(new.iter().any(|r| r.body["summary"].as_str().unwrap().contains("CardError: payment")));
    verify(new_error["secret"].as_str().unwrap(), &new[0]);

    // error_rate resolves when the share falls back; regression fires when disk full returns after 2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let infos: Vec<Value> = (0..30).map(|i| json!({"message": format!("ok {i}")})).collect();
    assert_eq!(d.ingest(&key, json!({ "logs": infos })).await.status, 202);
    assert_eq!(d.ingest(&key, json!({"message": "disk full", "level": "CRITICAL", "service": "db"})).await.status, 202);
    let er = waits_for(&receiver, "/er", 2, "error_rate resolves").await;
    assert_eq!(er[1].body["status"], "resolved");
    let back = waits_for(&receiver, "/rg", 1, "regression fires").await;
    assert!(back[0].body["summary"].as_str().unwrap().contains("disk full"), "{:?}", back[0].body);
    verify(regression["secret"].as_str().unwrap(), &back[0]);

    // The card error again, quiet for more than 2 s: not new, but a regression of its own; then nothing more.
    assert_eq!(d.ingest(&key, json!({"logs": [card(5)]})).await.status, 202);
    let back = waits_for(&receiver, "/rg", 2, "the card error's regression").await;
    assert!(back[1].body["summary"].as_str().unwrap().contains("payment"), "{:?}", back[1].body);
    assert_ne!(back[0].body["fingerprint"], back[1].body["fingerprint"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.at("/er").len(), 2);
    assert_eq!(receiver.at("/ne").len(), 2);
    assert_eq!(receiver.at("/rg").len(), 2);
    assert_eq!(receiver.at("/qc").len(), 2);

    let id = error_rate["id"].as_str().unwrap();
    let log = d.get(&format!("/v1/projects/{project}/alerts/{id}/deliveries"), Some(&token)).await;
    let deliveries = log.body["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{log:?}");
    assert_eq!(
        (deliveries[0]["status"].as_str(), deliveries[1]["status"].as_str()),
        (Some("resolved"), Some("firing"))
    );
    assert!(deliveries.iter().all(|d| d["delivered"] == true && d["attempts"] == 1 && d["response_status"] == 200));
    let metrics = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ledger_alert_notifications_total{status=\"firing\"}"), "{metrics}");
    assert!(metrics.contains("ledger_alert_evaluations_total{kind=\"regression\"}"));
}

#[tokio::test]
async fn every_kind_fires_once_and_resolves_embedded() {
    every_kind_fires_once_and_resolves(Kind::Embedded).await;
}

#[tokio::test]
async fn every_kind_fires_once_and_resolves_shared() {
    every_kind_fires_once_and_resolves(Kind::Shared).await;
}

/// A receiver answering 500 three times then 200 gets the notification once, in four attempts.
#[tokio::test]
async fn failed_deliveries_are_retried_and_logged() {
    let d = Daemon::start_with(Fresh::new(Kind::Embedded), &FAST).await;
    let receiver = Receiver::start(3).await;
    let (token, project, _) = d.tenant("retry@example.com").await;
    let created = rule(
        &d,
        &token,
        &project,
        json!({"name": "flaky", "kind": "new_error", "params": {},
        "channel": {"type": "webhook", "url": format!("{}/hook", receiver.url)}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let test = d.post(&format!("/v1/projects/{project}/alerts/{id}/test"), Some(&token), json!({})).await;
    assert_eq!(test.status, 202, "{test:?}");
    let delivery = eventually(Duration::from_secs(40), "delivered on the fourth attempt", || async {
        let r = d.get(&format!("/v1/projects/{project}/alerts/{id}/deliveries"), Some(&token)).await;
        let first = r.body["deliveries"][0].clone();
        (first["delivered"] == true).then_some(first)
    })
    .await;
    assert_eq!(
        (delivery["status"].as_str(), delivery["attempts"].as_i64(), delivery["response_status"].as_i64()),
        (Some("test"), Some(4), Some(200))
    );
    let got = receiver.at("/hook");
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|g| g.body == got[0].body), "the same notification each time");
    verify(created["secret"].as_str().unwrap(), &got[3]);
}

/// Two instances evaluating the same rules send one notification per event.
#[tokio::test]
async fn two_instances_notify_once() {
    let a = Daemon::start_with(Fresh::new(Kind::Shared), &FAST).await;
    let b = a.sibling().await;
    let receiver = Receiver::start(0).await;
    let (token, project, key) = a.tenant("twice@example.com").await;
    rule(
        &a,
        &token,
        &project,
        json!({"name": "new", "kind": "new_error", "params": {},
        "channel": {"type": "webhook", "url": format!("{}/ne", receiver.url)}}),
    )
    .await;
    rule(
        &b,
        &token,
        &project,
        json!({"name": "rate", "kind": "error_rate", "params": {"threshold_percent": 10, "window_secs": 300},
        "channel": {"type": "webhook", "url": format!("{}/er", receiver.url)}}),
    )
    .await;
    for (d, n) in [(&a, 1), (&b, 2)] {
        let r = d
            .ingest(&key, json!({"message": format!("boom {n}"), "level": "ERROR", "exception": {"type": "Boom"}}))
            .await;
        assert_eq!(r.status, 202);
    }
    waits_for(&receiver, "/ne", 1, "new_error").await;
    waits_for(&receiver, "/er", 1, "error_rate").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(receiver.at("/ne").len(), 1, "one new error, notified once by two instances");
    assert_eq!(receiver.at("/er").len(), 1);
}

/// Slack's incoming-webhook body and PagerDuty's Events API v2, field by field.
#[tokio::test]
async fn slack_and_pagerduty_bodies() {
    let d = Daemon::start_with(Fresh::new(Kind::Embedded), &FAST).await;
    let receiver = Receiver::start(0).await;
    let (token, project, key) = d.tenant("formats@example.com").await;
    let slack = rule(
        &d,
        &token,
        &project,
        json!({"name": "to slack", "kind": "new_error", "params": {},
        "channel": {"type": "slack", "url": format!("{}/slack", receiver.url)}}),
    )
    .await;
    assert!(slack.get("secret").is_none(), "only webhooks have a secret");
    let pd = rule(
        &d,
        &token,
        &project,
        json!({"name": "to pagerduty", "kind": "error_rate",
        "params": {"threshold_percent": 50, "window_secs": 300}, "cooldown_secs": 0,
        "channel": {"type": "pagerduty", "routing_key": "R0UT1NGKEY", "url": format!("{}/pd", receiver.url)}}),
    )
    .await;
    assert_eq!(d.ingest(&key, json!({"message": "kaboom", "level": "CRITICAL", "service": "api"})).await.status, 202);

    let s = &waits_for(&receiver, "/slack", 1, "slack").await[0].body;
    assert!(s["text"].as_str().unwrap().contains("to slack"), "{s}");
    let blocks = s["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().contains("kaboom"));
    let button = &blocks.iter().find(|b| b["type"] == "actions").unwrap()["elements"][0];
    assert_eq!((button["type"].as_str(), button["text"]["type"].as_str()), (Some("button"), Some("plain_text")));
    assert!(button["url"].as_str().unwrap().contains(&format!("/#/p/{project}/explore?fingerprint=")), "{button}");

    let trigger = waits_for(&receiver, "/pd", 1, "pagerduty trigger").await[0].body.clone();
    let dedup = format!("ledger:{}", pd["id"].as_str().unwrap());
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], dedup.as_str());
    assert!(trigger["payload"]["summary"].as_str().unwrap().contains("to pagerduty"));
    assert!(["critical", "error", "warning", "info"].contains(&trigger["payload"]["severity"].as_str().unwrap()));
    assert_eq!(trigger["payload"]["source"], "ledger");
    let infos: Vec<Value> = (0..10).map(|i| json!({"message": format!("fine {i}")})).collect();
    assert_eq!(d.ingest(&key, json!({ "logs": infos })).await.status, 202);
    let resolve = waits_for(&receiver, "/pd", 2, "pagerduty resolve").await[1].body.clone();
    assert_eq!(resolve, json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": dedup}));
}

#[tokio::test]
async fn rules_are_validated_and_private() {
    let d = Daemon::start(Kind::Embedded).await;
    let (token, project, _) = d.tenant("owner@example.com").await;
    let path = format!("/v1/projects/{project}/alerts");
    let bad = d.post(&path, Some(&token), json!({"name": "x", "kind": "loud", "channel": {"type": "sms"}})).await;
    bad.assert_error(422, "validation_failed");
    let fields: Vec<&str> =
        bad.body["error"]["details"].as_array().unwrap().iter().map(|p| p["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"kind") && fields.contains(&"channel.type"), "{fields:?}");
    // Private targets are refused by default.
    let private = d
        .post(
            &path,
            Some(&token),
            json!({"name": "x", "kind": "new_error", "params": {},
        "channel": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}}),
        )
        .await;
    private.assert_error(422, "validation_failed");
    assert!(private.body["error"]["details"][0]["reason"].as_str().unwrap().contains("private"));
    for url in ["http://10.0.0.8/", "http://169.254.169.254/latest/meta-data", "http://[::1]:8080/"] {
        let r = d
            .post(
                &path,
                Some(&token),
                json!({"name": "x", "kind": "new_error", "channel": {"type": "slack", "url": url}}),
            )
            .await;
        r.assert_error(422, "validation_failed");
    }
    let public = json!({"name": "x", "kind": "regression", "params": {"quiet_secs": 3600},
        "channel": {"type": "pagerduty", "routing_key": "k"}});
    let created = d.post(&path, Some(&token), public).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["channel"]["url"], "https://events.pagerduty.com/v2/enqueue");
    let id = created.body["id"].as_str().unwrap();
    let patched = d.patch(&format!("{path}/{id}"), Some(&token), json!({"enabled": false, "cooldown_secs": 60})).await;
    assert_eq!((patched.body["enabled"].as_bool(), patched.body["cooldown_secs"].as_i64()), (Some(false), Some(60)));
    d.patch(&format!("{path}/{id}"), Some(&token), json!({"kind": "new_error"}))
        .await
        .assert_error(422, "validation_failed");
    let listed = d.get(&path, Some(&token)).await;
    assert_eq!(listed.body["alerts"].as_array().unwrap().len(), 1);
    assert!(listed.body["alerts"][0].get("secret").is_none());
    let stranger = d.signup("stranger@example.com").await;
    d.get(&path, Some(&stranger)).await.assert_error(404, "not_found");
    d.get(&format!("{path}/{id}/deliveries"), Some(&stranger)).await.assert_error(404, "not_found");
    assert_eq!(d.delete(&format!("{path}/{id}"), Some(&token)).await.status, 204);
    d.get(&format!("{path}/{id}"), Some(&token)).await.assert_error(404, "not_found");
}

/// A delivery its instance did not finish (killed between attempts) is finished by the next one.
#[tokio::test]
async fn an_unfinished_delivery_is_finished_after_a_restart() {
    let d = Daemon::start_with(Fresh::new(Kind::Embedded), &FAST).await;
    let receiver = Receiver::start(1).await;
    let (token, project, _) = d.tenant("restart@example.com").await;
    let created = rule(
        &d,
        &token,
        &project,
        json!({"name": "survives", "kind": "new_error", "params": {},
        "channel": {"type": "webhook", "url": format!("{}/hook", receiver.url)}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(d.post(&format!("/v1/projects/{project}/alerts/{id}/test"), Some(&token), json!({})).await.status, 202);
    waits_for(&receiver, "/hook", 1, "the first attempt (answered 500)").await;
    // Killed before its second attempt, 2 s later.
    let d = d.restart().await;
    let token = d.post("/v1/login", None, json!({"email": "restart@example.com", "password": "correct horse"})).await;
    let token = token.body["token"].as_str().unwrap().to_owned();
    let got = eventually(Duration::from_secs(90), "the delivery finished by the restarted daemon", || async {
        let got = receiver.at("/hook");
        (got.len() >= 2).then_some(got)
    })
    .await;
    assert_eq!(got[0].raw, got[1].raw, "the same notification");
    let log = eventually(Duration::from_secs(10), "the attempt logged", || async {
        let r = d.get(&format!("/v1/projects/{project}/alerts/{id}/deliveries"), Some(&token)).await;
        (r.body["deliveries"][0]["delivered"] == true).then(|| r.body["deliveries"][0].clone())
    })
    .await;
    assert_eq!((log["attempts"].as_i64(), log["response_status"].as_i64()), (Some(2), Some(200)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.at("/hook").len(), 2, "sent once more, not again and again");
}
