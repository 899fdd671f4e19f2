#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The OpenAPI document against the daemon, checked from outside by schemathesis: on both backends, with a
//! session and with an API key, no answer may be a 5xx, carry a status the document does not list, or
//! break its documented schema, content type or headers.
//!
//! schemathesis (pinned in tests/schemathesis/requirements.txt) is installed from PyPI into
//! `target/schemathesis-venv` on first use; `.ci/run` does it before the tests.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use serde_json::json;
use support::{Daemon, Fresh, Kind};

/// The checks that must hold for every generated request.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

/// `st`, installed once per test run if missing.
fn schemathesis() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("LEDGER_SCHEMATHESIS_VENV")
        .map_or_else(|| root.join("target/schemathesis-venv"), PathBuf::from);
    let st = venv.join("bin/st");
    if !st.exists() {
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap();
        assert!(made.success(), "python3 -m venv {} failed", venv.display());
        let requirements = root.join("tests/schemathesis/requirements.txt");
        let installed =
            Command::new(venv.join("bin/pip")).args(["install", "-q", "-r"]).arg(&requirements).status().unwrap();
        assert!(installed.success(), "pip install -r {} failed (PyPI must be reachable)", requirements.display());
    }
    st
}

fn run(st: &PathBuf, d: &Daemon, credential: &str, what: &str) {
    let output = Command::new(st)
        .arg("run")
        .arg(d.url("/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--header", &format!("Authorization: Bearer {credential}")])
        // Logging out would end the session the rest of the run uses.
        .args(["--exclude-path", "/v1/logout"])
        // One worker, a fixed seed and no example database: every run sends the same requests.
        .args(["--max-examples", "25", "--workers", "1", "--seed", "20261130", "--generation-database", "none"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let summary = text.lines().rfind(|l| l.contains("generated,")).unwrap_or_default().trim();
    println!("schemathesis, {:?} backend, {what}: {summary}", d.kind());
    assert!(output.status.success(), "schemathesis found problems ({what}):\n{text}");
}

async fn conforms(kind: Kind) {
    let st = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    // Generated logins and registrations would trip the per-IP limit (a documented 429) and hide the rest.
    let d = Daemon::start_with(Fresh::new(kind), &[("LEDGER__AUTH__ATTEMPTS_PER_IP_PER_MINUTE", "100000")]).await;
    let (token, project, _) = d.tenant("schemathesis@example.com").await;
    let (_, key) = d.key(&token, &project, &["ingest", "query"]).await;
    assert_eq!(d.ingest(&key, json!({"message": "one log to find"})).await.status, 202);
    let d = std::sync::Arc::new(d);
    let (st2, d2) = (st.clone(), d.clone());
    tokio::task::spawn_blocking(move || run(&st2, &d2, &token, "session")).await.unwrap();
    tokio::task::spawn_blocking(move || run(&st, &d, &key, "API key")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_conforms_to_its_openapi_document() {
    conforms(Kind::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_conforms_to_its_openapi_document() {
    conforms(Kind::Shared).await;
}
