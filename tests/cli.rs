#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The command-line client, as a user runs it: the real `ledger` binary against the real daemon on both
//! backends. Login keeps its session in a 0600 file; keys are created; `send` stores every one of 100,000
//! lines, with a progress bar only at a terminal; `query` output parses back; `tail` shows a log sent after
//! it started; a bad URL, a bad key and a daemon that is down each give one line on stderr and a failing
//! exit code.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Daemon, Kind, eventually, ledger_binary};

/// The client in its own config directory (a fresh "home"), without the daemon's environment.
struct Cli {
    home: tempfile::TempDir,
    url: String,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn new(d: &Daemon) -> Cli {
        Cli { home: tempfile::tempdir().unwrap(), url: d.url("") }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ledger_binary());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LEDGER_CONFIG_DIR", self.home.path())
            .env("LEDGER_URL", &self.url);
        command
    }

    fn run_with(&self, args: &[&str], stdin: &str) -> Run {
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, "")
    }

    /// Runs and expects success, returning stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(run.ok, "ledger {args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// Runs and expects a failure told in one line on stderr, nothing on stdout.
    fn fails(&self, args: &[&str], stdin: &str, says: &str) {
        let run = self.run_with(args, stdin);
        assert!(!run.ok, "ledger {args:?} should fail");
        assert_eq!(run.stdout, "", "nothing but data on stdout");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
        assert!(run.stderr.starts_with("ledger: ") && run.stderr.contains(says), "{:?} lacks {says:?}", run.stderr);
    }
}

async fn the_client_end_to_end(kind: Kind) {
    let d = Daemon::start(kind).await;
    d.signup("cli@example.com").await;
    let cli = Cli::new(&d);

    // Login: the session in a file only its owner can read.
    let login = cli.run_with(&["login", "--email", "cli@example.com", "--password-stdin"], "correct horse\n");
    assert!(login.ok, "{}", login.stderr);
    let session = cli.home.path().join("session.json");
    assert_eq!(std::fs::metadata(&session).unwrap().permissions().mode() & 0o777, 0o600);

    let project = cli.ok(&["projects", "create", "shop"]).trim().to_owned();
    let listed: Value = serde_json::from_str(&cli.ok(&["projects", "list", "--output", "json"])).unwrap();
    assert_eq!(listed[0]["id"], project.as_str());
    let settings = cli.ok(&["projects", "settings", &project, "--set", "daily_quota=500000"]);
    assert_eq!(serde_json::from_str::<Value>(&settings).unwrap()["settings"]["daily_quota"], 500_000);
    let key = cli.ok(&["keys", "create", "--project", &project, "--scope", "ingest", "--scope", "query"]);
    let key = key.trim().to_owned();
    assert!(key.starts_with("ledger_") && key.len() == 39, "only the key on stdout: {key:?}");
    let keys: Value = serde_json::from_str(&cli.ok(&["keys", "list", "--project", &project, "-o", "json"])).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);

    // 100,000 lines from a file: every one stored, no progress bar when stderr is not a terminal.
    let file = cli.home.path().join("app.log");
    let lines: String = (0..100_000).map(|i| format!("request {i} served in {}ms\n", i % 97)).collect();
    std::fs::write(&file, lines).unwrap();
    let sent = cli.run(&["send", "--api-key", &key, "--service", "web", "--attr", "pod=web-1", file.to_str().unwrap()]);
    assert!(sent.ok, "{}", sent.stderr);
    assert_eq!(sent.stdout, "");
    assert!(sent.stderr.contains("100000 accepted"), "{}", sent.stderr);
    assert!(!sent.stderr.contains("logs sent"), "no progress bar off a terminal: {}", sent.stderr);
    let stored = eventually(Duration::from_secs(60), "100,000 logs stored", || async {
        let logs = d.all_logs(&key, 1000).await;
        (logs.len() == 100_000).then_some(logs)
    })
    .await;
    let messages: std::collections::HashSet<&str> = stored.iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(messages.len(), 100_000, "every line once");
    assert!(stored.iter().all(|l| l["service"] == "web" && l["attributes"]["pod"] == "web-1"));

    // Query: JSON that parses back, with filters.
    let found = cli.ok(&["query", "--api-key", &key, "-q", "request 99999", "--since", "1h", "--output", "json"]);
    let found: Value = serde_json::from_str(&found).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["message"], "request 99999 served in 89ms");
    let paged = cli.ok(&["query", "--api-key", &key, "--limit", "2500", "--output", "jsonl"]);
    assert_eq!(paged.lines().count(), 2500, "three pages of a cursor");
    // `--limit 0`: every match, over as many pages as it takes (96 ms is every 97th line: 1,030 of them).
    let all = cli.ok(&["query", "--api-key", &key, "--limit", "0", "-q", "served in 96ms", "--output", "jsonl"]);
    assert_eq!(all.lines().count(), 1030);
    let by_session = cli.ok(&["query", "--project", &project, "--limit", "3"]);
    assert_eq!(by_session.lines().count(), 3);

    // Tail: a log sent after it started.
    let mut tail = cli
        .command(&["tail", "--api-key", &key, "--jsonl", "--min-level", "ERROR"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let line = eventually(Duration::from_secs(15), "the tail shows the new log", || {
        let (d, key, rx) = (&d, &key, &lines_rx);
        async move {
            let r = d.ingest(key, json!({"message": "payment declined", "level": "ERROR", "service": "pay"})).await;
            assert_eq!(r.status, 202);
            rx.recv_timeout(Duration::from_millis(700)).ok()
        }
    })
    .await;
    let _ = tail.kill();
    let _ = tail.wait();
    let log: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((log["message"].as_str(), log["level"].as_str()), (Some("payment declined"), Some("ERROR")));

    let errors = eventually(Duration::from_secs(20), "the error in `ledger errors`", || async {
        let out = cli.ok(&["errors", "--api-key", &key, "--output", "json"]);
        let errors: Value = serde_json::from_str(&out).unwrap();
        (!errors.as_array().unwrap().is_empty()).then_some(errors)
    })
    .await;
    assert_eq!(errors[0]["sample_message"], "payment declined");
    let table = cli.ok(&["errors", "--api-key", &key]);
    assert!(table.starts_with("COUNT") && table.contains("payment declined"), "{table}");

    // Failures: one line each, exit code 1.
    cli.fails(&["send", "--api-key", "ledger_0000000000000000000000000000000000"], "a line\n", "401 unauthorized");
    cli.fails(&["query", "--url", "not a url", "--api-key", &key], "", "bad --url");
    cli.fails(&["send", "--url", "http://127.0.0.1:9", "--api-key", &key], "a line\n", "cannot reach the daemon");
    cli.fails(&["tail", "--url", "http://127.0.0.1:9", "--api-key", &key], "", "cannot reach the daemon");
    cli.fails(&["send", "--api-key", &key, "--json"], "not json\n", "stdin:1: not JSON");
    // A refused log is left out, the rest stored, and the exit code says so.
    let mixed = "{\"message\": \"fine\"}\n{\"message\": \"bad\", \"level\": \"LOUD\"}\n";
    let run = cli.run_with(&["send", "--api-key", &key, "--json"], mixed);
    assert!(!run.ok && run.stderr.contains("1 accepted, 1 refused"), "{}", run.stderr);

    // A revoked key is refused; a deleted project is gone.
    let spare = cli.ok(&["keys", "create", "--project", &project]).trim().to_owned();
    let keys: Value = serde_json::from_str(&cli.ok(&["keys", "list", "--project", &project, "-o", "json"])).unwrap();
    let spare_id = keys.as_array().unwrap().iter().find(|k| spare.starts_with(k["prefix"].as_str().unwrap())).unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cli.ok(&["keys", "revoke", "--project", &project, &spare_id]);
    cli.fails(&["send", "--api-key", &spare], "a line\n", "401 unauthorized");
    let scratch = cli.ok(&["projects", "create", "scratch"]).trim().to_owned();
    cli.fails(&["projects", "delete", &scratch], "", "--yes");
    cli.ok(&["projects", "delete", &scratch, "--yes"]);
    let listed: Value = serde_json::from_str(&cli.ok(&["projects", "list", "-o", "json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // Logout: the session ends on the daemon and is forgotten here.
    let token: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    cli.ok(&["logout"]);
    assert!(!session.exists());
    assert_eq!(d.get("/v1/me", Some(&token)).await.status, 401);
    cli.fails(&["projects", "list"], "", "ledger login");

    // The daemon down: one line, exit 1.
    let mut d = d;
    d.kill();
    cli.fails(&["query", "--api-key", &key], "", "cannot reach the daemon");
}

#[tokio::test]
async fn the_client_end_to_end_embedded() {
    the_client_end_to_end(Kind::Embedded).await;
}

#[tokio::test]
async fn the_client_end_to_end_shared() {
    the_client_end_to_end(Kind::Shared).await;
}

/// At a terminal (a pseudo-terminal from `script`), `send` shows its progress on stderr.
#[tokio::test]
async fn send_shows_progress_at_a_terminal() {
    let d = Daemon::start(Kind::Embedded).await;
    let (_, _, key) = d.tenant("tty@example.com").await;
    let cli = Cli::new(&d);
    let file = cli.home.path().join("lines.txt");
    std::fs::write(&file, (0..20_000).map(|i| format!("line {i}\n")).collect::<String>()).unwrap();
    let inner = format!("{} send --batch 20 --api-key {key} {}", ledger_binary(), file.display());
    let script = Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .env("LEDGER_CONFIG_DIR", cli.home.path())
        .env("LEDGER_URL", &cli.url)
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&script.stdout);
    assert!(script.status.success(), "{text}");
    assert!(text.contains("logs sent"), "a progress bar at a terminal: {text}");
    assert!(text.contains("20000 accepted"), "{text}");
}
