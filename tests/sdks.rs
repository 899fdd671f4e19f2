#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The SDKs' own suites, run by the README's test command: `sdk/python` with pytest (pinned in its `test`
//! extra, installed into `target/sdk-venv`) and `sdk/node` with node:test (its lock file, `npm ci`, built with
//! `tsc`). Each suite starts the daemon built here, on both backends, itself.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(what: &str, command: &mut Command) {
    let output = command.env("LEDGER_BINARY", env!("CARGO_BIN_EXE_ledger")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{what} failed:\n{text}");
    let summary = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_owned();
    println!("{what}: {summary}");
}

#[test]
fn python_sdk_suite() {
    let venv = root().join("target/sdk-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run("python3 -m venv", Command::new("python3").arg("-m").arg("venv").arg(&venv));
    }
    // Editable, so the suite tests the sources as they are; pytest comes pinned with the `test` extra.
    run(
        "pip install sdk/python[test]",
        Command::new(&python).args(["-m", "pip", "install", "-q", "-e"]).arg(root().join("sdk/python[test]")),
    );
    run(
        "pytest sdk/python",
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(root().join("sdk/python/tests")),
    );
}

#[test]
fn node_sdk_suite() {
    let dir = root().join("sdk/node");
    if !dir.join("node_modules/.package-lock.json").exists() {
        run("npm ci (sdk/node)", Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir));
    }
    run("npm run build (sdk/node)", Command::new("npm").args(["run", "build"]).current_dir(&dir));
    run("npm test (sdk/node)", Command::new("npm").arg("test").current_dir(&dir));
}
