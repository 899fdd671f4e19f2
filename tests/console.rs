#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The web console: its committed bundle (`console/dist/`, embedded in the binary) is what a fresh build from
//! `console/package-lock.json` gives; its end-to-end suite (`console/test/`, playwright-core driving Debian's
//! chromium) passes against the real daemon on both backends, saving screenshots under
//! `target/console-screenshots/<backend>/`; and its HTTP surface (the page for browsers, Elasticsearch's
//! info for shippers, security headers, cookie sessions and CSRF) answers as documented.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::header;
use serde_json::{Value, json};
use support::{Daemon, Fresh, Kind};

fn console_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console")
}

fn run(what: &str, command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// `npm ci` in console/ once (the lock file's esbuild, uPlot and playwright-core).
fn installed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !console_dir().join("node_modules/.package-lock.json").exists() {
            run(
                "npm ci (console)",
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(console_dir()),
            );
        }
    });
}

#[test]
fn the_committed_bundle_is_a_fresh_build_of_the_sources() {
    installed();
    let fresh = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-fresh-build");
    let _ = std::fs::remove_dir_all(&fresh);
    let sizes = run(
        "node build.mjs",
        Command::new("node").arg("build.mjs").arg("--outdir").arg(&fresh).current_dir(console_dir()),
    );
    println!("{sizes}");
    let names = |dir: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let committed = console_dir().join("dist");
    assert_eq!(names(&committed), names(&fresh), "console/dist/ holds other files than a build gives");
    for name in names(&fresh) {
        assert!(
            std::fs::read(committed.join(&name)).unwrap() == std::fs::read(fresh.join(&name)).unwrap(),
            "console/dist/{name} differs from a fresh build: run `npm run build` in console/ and commit dist/"
        );
    }
}

async fn browser_suite(kind: Kind) {
    installed();
    let chromium = std::env::var("LEDGER_CHROMIUM").unwrap_or_else(|_| String::from("/usr/bin/chromium"));
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (`apt-get install chromium`)"
    );
    // The suite's alert posts to a receiver on localhost, evaluated every second.
    let extra = [("LEDGER__ALERTS__ALLOW_PRIVATE_TARGETS", "true"), ("LEDGER__ALERTS__EVALUATE_INTERVAL_SECS", "1")];
    let d = Daemon::start_with(Fresh::new(kind), &extra).await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/console-screenshots")
        .join(if kind == Kind::Embedded { "embedded" } else { "shared" });
    let url = d.url("");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["--test", "--test-concurrency=1", "--test-reporter=spec", "test/"])
            .current_dir(console_dir())
            .env("LEDGER_URL", url)
            .env("LEDGER_SCREENSHOTS", &shots)
            .env("LEDGER_CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the console's browser suite failed on {kind:?}:\n{text}\ndaemon:\n{}",
        d.output()
    );
    println!("{text}");
}

#[tokio::test]
async fn in_a_browser_embedded() {
    browser_suite(Kind::Embedded).await;
}

#[tokio::test]
async fn in_a_browser_shared() {
    browser_suite(Kind::Shared).await;
}

/// A browser gets the page with a strict policy; a shipper's probe of `/` still gets Elasticsearch's info.
#[tokio::test]
async fn the_page_for_browsers_and_cluster_info_for_shippers() {
    let d = Daemon::start(Kind::Embedded).await;
    let page =
        d.client().get(d.url("/")).header(header::ACCEPT, "text/html,application/xhtml+xml").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
    let etag = page.headers()[header::ETAG].clone();
    assert!(page.text().await.unwrap().contains("/console/app.js"));
    let again = d.client().get(d.url("/")).header(header::ACCEPT, "text/html").header(header::IF_NONE_MATCH, etag);
    assert_eq!(again.send().await.unwrap().status(), 304);

    let probe = d.client().get(d.url("/")).header(header::ACCEPT, "application/json").send().await.unwrap();
    assert_eq!(probe.headers()["x-elastic-product"], "Elasticsearch");
    let info: Value = probe.json().await.unwrap();
    assert_eq!(info["tagline"], "You Know, for Search");

    let script = d.client().get(d.url("/console/app.js")).send().await.unwrap();
    assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    d.get("/console/nothing.js", None).await.assert_error(404, "not_found");
}

/// Disabled by config: no page, no console routes; `/` is Elasticsearch's whoever asks.
#[tokio::test]
async fn the_console_can_be_turned_off() {
    let d = Daemon::start_with(Fresh::new(Kind::Embedded), &[("LEDGER__CONSOLE__ENABLED", "false")]).await;
    let probe = d.client().get(d.url("/")).header(header::ACCEPT, "text/html").send().await.unwrap();
    assert_eq!(probe.headers()["x-elastic-product"], "Elasticsearch");
    d.get("/console/app.js", None).await.assert_error(404, "not_found");
    d.get("/console/session", None).await.assert_error(404, "not_found");
}

/// The cookie session from outside a browser: what it allows, and what it refuses without the CSRF token.
#[tokio::test]
async fn cookie_sessions_need_the_csrf_token_to_change_anything() {
    let d = Daemon::start(Kind::Embedded).await;
    let signup = d
        .client()
        .post(d.url("/console/signup"))
        .json(&json!({"email": "grace@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let cookie = signup.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let body: Value = signup.json().await.unwrap();
    assert!(body.get("token").is_none(), "the token stays in the cookie: {body}");
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();

    let with_cookie = |method: reqwest::Method, path: &str| {
        d.client().request(method, d.url(path)).header(header::COOKIE, session.clone())
    };
    let me = with_cookie(reqwest::Method::GET, "/v1/me").send().await.unwrap();
    assert_eq!(me.status(), 200);
    let forged = with_cookie(reqwest::Method::POST, "/v1/projects").json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(forged.json::<Value>().await.unwrap()["error"]["code"], "csrf_token_invalid");
    let wrong = with_cookie(reqwest::Method::POST, "/v1/projects").header("x-csrf-token", "0".repeat(32));
    assert_eq!(wrong.json(&json!({"name": "x"})).send().await.unwrap().status(), 403);
    let made = with_cookie(reqwest::Method::POST, "/v1/projects").header("x-csrf-token", &csrf);
    assert_eq!(made.json(&json!({"name": "x"})).send().await.unwrap().status(), 201);
    // The cookie is no API key: ingestion refuses it.
    let ingest = with_cookie(reqwest::Method::POST, "/v1/logs").header("x-csrf-token", &csrf);
    assert_eq!(ingest.json(&json!({"message": "m"})).send().await.unwrap().status(), 401);

    let current = with_cookie(reqwest::Method::GET, "/console/session").send().await.unwrap();
    assert_eq!(current.json::<Value>().await.unwrap()["user"]["email"], "grace@example.com");
    let out = with_cookie(reqwest::Method::DELETE, "/console/session").send().await.unwrap();
    assert_eq!(out.status(), 403, "signing out needs the CSRF token too");
    let out =
        with_cookie(reqwest::Method::DELETE, "/console/session").header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    // The old cookie names a session that no longer exists.
    assert_eq!(with_cookie(reqwest::Method::GET, "/v1/me").send().await.unwrap().status(), 401);
}
