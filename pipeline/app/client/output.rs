//! Printing results on stdout: aligned columns for people (levels coloured at a terminal, unless `NO_COLOR`),
//! or JSON for programs.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::app::cli::Output;

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::from("-"),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Colours at a terminal, as `NO_COLOR` (no-color.org) allows.
pub(crate) fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// A level as `[LEVEL]`-wide text, coloured when `colour`.
pub(crate) fn level(level: &str, colour: bool) -> String {
    let code = match level {
        "DEBUG" => "2",
        "INFO" => "34",
        "WARNING" => "33",
        "ERROR" => "31",
        "CRITICAL" => "1;35",
        _ => "0",
    };
    if colour { format!("\x1b[{code}m{level:<8}\x1b[0m") } else { format!("{level:<8}") }
}

/// One log as a line: time, level, service, message (its newlines shown as `⏎`).
pub(crate) fn log_line(log: &Value, colour: bool) -> String {
    let message = log["message"].as_str().unwrap_or_default().replace('\n', " ⏎ ");
    format!(
        "{}  {}  {:<12}  {}",
        log["timestamp"].as_str().unwrap_or_default(),
        level(log["level"].as_str().unwrap_or_default(), colour),
        log["service"].as_str().unwrap_or("-"),
        message
    )
}

/// Objects as a table of `columns` (title, field), a JSON array, or JSON lines.
pub(crate) fn items(output: Output, items: &[Value], columns: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(items)?)?,
        Output::Jsonl => {
            for item in items {
                writeln!(out, "{item}")?;
            }
        }
        Output::Table => {
            let rows: Vec<Vec<String>> =
                items.iter().map(|item| columns.iter().map(|(_, field)| text(&item[*field])).collect()).collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, (title, _))| {
                    rows.iter().map(|r| r[i].chars().count()).chain([title.len()]).max().unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                let last = cells.len().saturating_sub(1);
                cells
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| if i == last { c } else { format!("{c:<w$}", w = widths[i]) })
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            writeln!(out, "{}", line(columns.iter().map(|(t, _)| (*t).to_owned()).collect()))?;
            for row in rows {
                writeln!(out, "{}", line(row))?;
            }
        }
    }
    Ok(())
}

/// Logs as they come: lines (table), a JSON array at the end, or JSON lines.
pub struct Sink {
    output: Output,
    colour: bool,
    held: Vec<Value>,
}

impl Sink {
    pub(crate) fn new(output: Output) -> Sink {
        Sink { output, colour: colours(), held: Vec::new() }
    }

    pub(crate) fn log(&mut self, log: &Value) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self.output {
            Output::Table => writeln!(out, "{}", log_line(log, self.colour))?,
            Output::Jsonl => writeln!(out, "{log}")?,
            Output::Json => self.held.push(log.clone()),
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> anyhow::Result<()> {
        if self.output == Output::Json {
            writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&self.held)?)?;
        }
        Ok(())
    }
}
