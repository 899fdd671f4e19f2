//! `ledger send`: lines from stdin or files as logs, in gzip-compressed batches, each retried under one
//! idempotency key while the daemon says to wait (429, 503 with Retry-After) or cannot be reached, so a retry
//! never stores a batch twice. A batch the daemon refuses for some of its logs (422) is sent again without
//! them; those are reported and make the exit code 1.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use super::{Client, api_error, unreachable_error};
use crate::app::cli::SendArgs;

/// What became of the logs sent.
#[derive(Default)]
struct Tally {
    accepted: u64,
    refused: u64,
    requests: u64,
    /// The daemon has answered at least once: a connection failure after that is a restart worth waiting
    /// for; before it, a wrong URL or a daemon that is down, said at once.
    answered: bool,
}

/// Builds a log from one line, with the defaults of the arguments where the line has none.
struct Shaper {
    json: bool,
    defaults: Map<String, Value>,
    attributes: Map<String, Value>,
}

impl Shaper {
    fn new(args: &SendArgs) -> anyhow::Result<Shaper> {
        let mut defaults = Map::new();
        for (field, value) in [("service", &args.service), ("level", &args.level), ("environment", &args.environment)] {
            if let Some(v) = value {
                defaults.insert(field.to_owned(), json!(v));
            }
        }
        let mut attributes = Map::new();
        for pair in &args.attrs {
            let (k, v) = pair.split_once('=').ok_or_else(|| anyhow!("--attr takes KEY=VALUE, not {pair:?}"))?;
            attributes.insert(k.to_owned(), json!(v));
        }
        Ok(Shaper { json: args.json, defaults, attributes })
    }

    fn shape(&self, line: &str, at: &str) -> anyhow::Result<Value> {
        let mut log = if self.json {
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(map)) => map,
                Ok(_) => bail!("{at}: a JSON line must be an object (a log)"),
                Err(e) => bail!("{at}: not JSON ({e}); without --json each line is sent as a message"),
            }
        } else {
            let mut map = Map::new();
            map.insert("message".into(), json!(line));
            map
        };
        for (k, v) in &self.defaults {
            log.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if !self.attributes.is_empty() {
            let attributes = log.entry("attributes").or_insert_with(|| json!({}));
            if let Value::Object(attributes) = attributes {
                for (k, v) in &self.attributes {
                    attributes.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        Ok(Value::Object(log))
    }
}

fn gzip(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body)?;
    Ok(encoder.finish()?)
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let secs = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    Duration::from_secs(secs.unwrap_or(1).clamp(1, 60))
}

/// Sends one batch to its end: accepted, or its refused logs left out and the rest sent again. Errors only
/// for what no retry can help (a bad credential, the daemon unreachable for every try).
async fn send_batch(
    client: &Client,
    mut logs: Vec<Value>,
    retries: u32,
    tally: &mut Tally,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    let mut key = uuid::Uuid::new_v4().to_string();
    let mut attempt = 0;
    while !logs.is_empty() {
        attempt += 1;
        let body = gzip(&serde_json::to_vec(&json!({ "logs": logs }))?)?;
        tally.requests += 1;
        let sent = client
            .request(reqwest::Method::POST, "/v1/logs")
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("idempotency-key", &key)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => {
                tally.answered = true;
                r
            }
            Err(e) if attempt < retries && tally.answered => {
                let pause = Duration::from_secs(1 << attempt.min(5));
                progress.suspend(|| {
                    eprintln!("ledger: {:#}; retrying in {}s", unreachable_error(&client.base, &e), pause.as_secs())
                });
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(e) => return Err(unreachable_error(&client.base, &e)),
        };
        let status = response.status();
        match status {
            StatusCode::ACCEPTED => {
                tally.accepted += logs.len() as u64;
                progress.inc(logs.len() as u64);
                return Ok(());
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE if attempt < retries => {
                let pause = retry_after(response.headers());
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let code = body["error"]["code"].as_str().unwrap_or("busy").to_owned();
                progress.suspend(|| eprintln!("ledger: {} {code}; retrying in {}s", status.as_u16(), pause.as_secs()));
                tokio::time::sleep(pause).await;
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let mut refused: Vec<usize> = body["error"]["details"]
                    .as_array()
                    .map(|d| d.iter().filter_map(|p| p["index"].as_u64()).map(|i| i as usize).collect())
                    .unwrap_or_default();
                refused.sort_unstable();
                refused.dedup();
                if refused.is_empty() || refused.len() >= logs.len() {
                    // Nothing to tell apart: the whole batch is refused.
                    progress.suspend(|| eprintln!("ledger: {:#}", api_error(status, &body)));
                    tally.refused += logs.len() as u64;
                    progress.inc(logs.len() as u64);
                    return Ok(());
                }
                progress
                    .suspend(|| eprintln!("ledger: {} logs refused: {:#}", refused.len(), api_error(status, &body)));
                tally.refused += refused.len() as u64;
                progress.inc(refused.len() as u64);
                for i in refused.into_iter().rev() {
                    if i < logs.len() {
                        logs.remove(i);
                    }
                }
                // Another body: another key.
                key = uuid::Uuid::new_v4().to_string();
                attempt = 0;
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                return Err(api_error(status, &body));
            }
            _ => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                progress.suspend(|| eprintln!("ledger: {:#}", api_error(status, &body)));
                tally.refused += logs.len() as u64;
                progress.inc(logs.len() as u64);
                return Ok(());
            }
        }
    }
    Ok(())
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    if !client.key {
        bail!("sending needs an API key with the ingest scope: --api-key or LEDGER_API_KEY");
    }
    let shaper = Shaper::new(&args)?;
    let sources: Vec<(String, Box<dyn Read>)> =
        if args.files.is_empty() || args.files.iter().all(|f| f.as_os_str() == "-") {
            vec![(String::from("stdin"), Box::new(std::io::stdin()))]
        } else {
            args.files
                .iter()
                .map(|path| {
                    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                    Ok((path.display().to_string(), Box::new(file) as Box<dyn Read>))
                })
                .collect::<anyhow::Result<_>>()?
        };
    // Drawn on stderr, and only at a terminal: piped output stays clean.
    let progress = if std::io::stderr().is_terminal() { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    progress.set_style(ProgressStyle::with_template("{spinner} {pos} logs sent ({per_sec}) {elapsed}")?);
    progress.enable_steady_tick(Duration::from_millis(120));
    let mut tally = Tally::default();
    let started = std::time::Instant::now();
    let batch = usize::from(args.batch);
    // A body stays well under the daemon's 10 MiB limit before compression.
    let max_bytes = 4 << 20;
    for (name, source) in sources {
        let mut logs: Vec<Value> = Vec::with_capacity(batch);
        let mut bytes = 0usize;
        for (n, line) in BufReader::new(source).lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {name}"))?;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let log = shaper.shape(line, &format!("{name}:{}", n + 1))?;
            bytes += line.len() + 64;
            logs.push(log);
            if logs.len() >= batch || bytes >= max_bytes {
                send_batch(&client, std::mem::take(&mut logs), args.retries, &mut tally, &progress).await?;
                bytes = 0;
            }
        }
        if !logs.is_empty() {
            send_batch(&client, logs, args.retries, &mut tally, &progress).await?;
        }
    }
    progress.finish_and_clear();
    let total = tally.accepted + tally.refused;
    eprintln!(
        "sent {total} logs in {} requests in {:.1}s: {} accepted{}",
        tally.requests,
        started.elapsed().as_secs_f64(),
        tally.accepted,
        if tally.refused > 0 { format!(", {} refused", tally.refused) } else { String::new() }
    );
    if tally.refused > 0 {
        bail!("{} of {total} logs were not accepted", tally.refused);
    }
    Ok(())
}
