//! `ledger tail`: `GET /v1/logs/tail` printed as it comes; on a dropped connection it reconnects with the
//! last log's id (`Last-Event-ID`), so nothing is missed or shown twice.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use reqwest::StatusCode;
use serde_json::Value;

use super::output::{colours, log_line};
use super::{Client, api_error, filter_params, unreachable_error};
use crate::app::cli::TailArgs;

/// One parsed event: (event name, id, data).
fn parse(block: &str) -> Option<(String, Option<String>, String)> {
    let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
    let mut any = false;
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let Some((field, value)) = line.split_once(':') else { continue };
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "event" => event = value.to_owned(),
            "id" => id = Some(value.to_owned()),
            "data" => data.push_str(value),
            _ => {}
        }
    }
    any.then_some((event, id, data))
}

pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let mut params = client.read_project(args.filters.project.as_deref())?;
    params.extend(filter_params(&args.filters));
    let colour = colours();
    let mut last: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let mut request = client.request(reqwest::Method::GET, "/v1/logs/tail").query(&params);
        if let Some(id) = &last {
            request = request.header("last-event-id", id);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            // Never connected: the daemon is down or the URL is wrong; say so rather than wait.
            Err(e) if last.is_none() && failures == 0 => return Err(unreachable_error(&client.base, &e)),
            Err(e) => {
                failures += 1;
                let pause = Duration::from_secs(1 << failures.min(4));
                eprintln!("ledger: {:#}; reconnecting in {}s", unreachable_error(&client.base, &e), pause.as_secs());
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                eprintln!("ledger: {:#}; retrying in 5s", api_error(status, &body));
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            return Err(api_error(status, &body));
        }
        if failures > 0 {
            eprintln!("ledger: reconnected");
        }
        failures = 0;
        let mut buffer = String::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("ledger: the stream broke ({e}); resuming");
                    break;
                }
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some((event, id, data)) = parse(&block) else { continue };
                let mut out = std::io::stdout().lock();
                match event.as_str() {
                    "dropped" => {
                        let n = serde_json::from_str::<Value>(&data).ok().and_then(|v| v["dropped"].as_u64());
                        match n {
                            Some(n) => eprintln!("ledger: {n} logs skipped: they came faster than they could be shown"),
                            None => {
                                eprintln!("ledger: some logs may be missing: the tail could not resume that far back")
                            }
                        }
                    }
                    _ => {
                        let log: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        if args.jsonl {
                            writeln!(out, "{data}")?;
                        } else {
                            writeln!(out, "{}", log_line(&log, colour))?;
                        }
                        out.flush()?;
                        if id.is_some() {
                            last = id;
                        }
                    }
                }
            }
        }
        failures += 1;
        if failures > 30 {
            bail!("the daemon keeps closing the stream");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
