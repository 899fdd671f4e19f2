//! The syslog front: RFC 5424 and RFC 3164 messages over TCP (TLS when `[syslog] tls`), octet-counted
//! (RFC 6587: `<length> <message>`) or newline-framed, told apart message by message.
//!
//! A message's key comes from a structured-data element whose SD-ID starts with `ledger`
//! (`[ledger@41058 key="ledger_…"]`), else from `[syslog] api_key`. PRI gives the level (0–2 CRITICAL,
//! 3 ERROR, 4 WARNING, 5–6 INFO, 7 DEBUG) and the facility, HOSTNAME the host, APP-NAME the service, MSG
//! the message; facility, PROCID, MSGID and the other structured data go to attributes. A message that
//! cannot be parsed is stored all the same: the raw line as its message, with `syslog.parse_error`.
//!
//! Syslog has no answers, so nothing may be lost quietly: while a connection's batch is in the stack the
//! connection is not read (TCP flow control holds the sender back), a batch refused for a reason that
//! passes (rate limit, full queue, unavailable store) is retried after its Retry-After, and what is refused
//! for good (unknown key, quota, invalid) is counted in the outcomes and logged. Connections, message size
//! and idle time are bounded by `[syslog]`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ledger_stages::{Ingest, IngestError, Protocol, RawLog};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::config::SyslogConfig;
use crate::ingest::Ingestion;
use crate::ingest::map::{LogBuilder, syslog_level};

/// One message as framed off the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Vec<u8>,
    /// The message was longer than `max_message_bytes` and was cut there.
    pub truncated: bool,
}

/// Reads the next message: octet-counted when it starts with a digit, else up to a newline. At most `max`
/// bytes are kept of a message; the rest of it is read and dropped. `None` at the end of the stream.
pub(crate) async fn next_frame<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Option<Frame>> {
    loop {
        let first = match reader.fill_buf().await?.first() {
            None => return Ok(None),
            Some(b) => *b,
        };
        if first == b'\n' || first == b'\r' || first == b' ' {
            reader.consume(1);
            continue;
        }
        if first.is_ascii_digit() {
            let mut digits = Vec::with_capacity(8);
            loop {
                let byte = reader.read_u8().await?;
                if byte == b' ' {
                    break;
                }
                if !byte.is_ascii_digit() || digits.len() == 9 {
                    // Not a length after all: the digits and the rest of the line are one newline-framed message.
                    let mut frame = Frame { bytes: digits, truncated: false };
                    frame.bytes.push(byte);
                    if byte != b'\n' {
                        read_line(reader, &mut frame, max).await?;
                    }
                    return Ok(Some(frame));
                }
                digits.push(byte);
            }
            let length: u64 = std::str::from_utf8(&digits).ok().and_then(|d| d.parse().ok()).unwrap_or(0);
            let keep = length.min(max as u64);
            let mut bytes = Vec::with_capacity(keep as usize);
            (&mut *reader).take(keep).read_to_end(&mut bytes).await?;
            if (bytes.len() as u64) < keep {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let rest = length - keep;
            if rest > 0 {
                tokio::io::copy(&mut (&mut *reader).take(rest), &mut tokio::io::sink()).await?;
            }
            return Ok(Some(Frame { bytes, truncated: rest > 0 }));
        }
        let mut frame = Frame { bytes: Vec::new(), truncated: false };
        read_line(reader, &mut frame, max).await?;
        return Ok(Some(frame));
    }
}

/// Reads to the end of the line into `frame`, keeping at most `max` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, frame: &mut Frame, max: usize) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            break;
        }
        let (chunk, done) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (&buffer[..end], Some(end + 1)),
            None => (buffer, None),
        };
        let room = max.saturating_sub(frame.bytes.len());
        frame.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        frame.truncated |= chunk.len() > room;
        let used = done.unwrap_or(buffer.len());
        reader.consume(used);
        if done.is_some() {
            break;
        }
    }
    while frame.bytes.last() == Some(&b'\r') {
        frame.bytes.pop();
    }
    Ok(())
}

/// A message as a log object, and the key it carries.
pub(crate) fn log(frame: &Frame) -> (Option<String>, Value) {
    // Neither store keeps a NUL in text: it becomes U+FFFD like any byte that is not UTF-8.
    let text = String::from_utf8_lossy(&frame.bytes).replace('\0', "\u{fffd}");
    let mut b = LogBuilder::new();
    let mut key = None;
    let has_pri = text
        .strip_prefix('<')
        .and_then(|t| t.split_once('>'))
        .is_some_and(|(pri, _)| !pri.is_empty() && pri.len() <= 3 && pri.bytes().all(|c| c.is_ascii_digit()));
    let parsed = if has_pri {
        syslog_loose::parse_message_with_year_exact(
            &text,
            |_| chrono::Datelike::year(&chrono::Utc::now()),
            syslog_loose::Variant::Either,
        )
    } else {
        Err("no PRI (<N>) at the start of the message".into())
    };
    match parsed {
        Ok(message) => {
            if let Some(severity) = message.severity {
                b.severity(syslog_level(severity as u8));
            }
            if let Some(facility) = message.facility {
                b.attribute("syslog.facility", Value::String(facility.as_str().into()));
            }
            if let Some(t) = message.timestamp {
                b.timestamp(t.to_utc());
            }
            if let Some(host) = message.hostname {
                b.attribute("host.name", Value::String(host.into()));
            }
            if let Some(app) = message.appname {
                b.attribute("service.name", Value::String(app.into()));
            }
            if let Some(procid) = message.procid {
                b.attribute("syslog.procid", Value::String(procid.to_string()));
            }
            if let Some(msgid) = message.msgid {
                b.attribute("syslog.msgid", Value::String(msgid.into()));
            }
            for element in message.structured_data {
                let ours = element.id.starts_with("ledger");
                for (name, value) in element.params {
                    if ours && name == "key" {
                        key = Some(value.to_owned());
                    } else {
                        b.attribute(format!("{}.{name}", element.id), Value::String(value.into()));
                    }
                }
            }
            let msg = message.msg.trim_start_matches('\u{feff}');
            b.message(if msg.is_empty() { "-" } else { msg });
        }
        Err(reason) => {
            b.message(if text.is_empty() { "-".to_owned() } else { text.clone() });
            b.attribute("syslog.parse_error", Value::String(reason));
        }
    }
    if frame.truncated {
        b.attribute("syslog.truncated", Value::Bool(true));
    }
    (key, b.build())
}

/// Serves `[syslog] tcp_addr` on the shared accept loop ([`crate::fronts::base::listen`]: connection caps per
/// listener and per address, a TLS handshake timeout) until `shutdown`.
pub(crate) async fn serve(
    listener: crate::fronts::base::listen::Listener,
    ingestion: Ingestion,
    config: SyslogConfig,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    listener
        .run(shutdown, move |stream, closing| {
            let (ingestion, config, peer) = (ingestion.clone(), config.clone(), stream.peer);
            async move {
                if let Err(error) = connection(stream, &ingestion, &config, closing).await {
                    tracing::debug!(%error, %peer, "syslog connection ended");
                }
            }
        })
        .await;
}

/// One connection: its first message's key is checked before anything more is read (a connection whose
/// first message carries an unknown key, or none without `[syslog] api_key`, is closed: a stranger cannot
/// make the daemon frame and parse batches). Then frames are read into batches (up to `batch_logs`, or
/// what arrived within `linger_ms` of the first, or what the instance's body budget has room for), each
/// batch stored before the next is read.
async fn connection<S: AsyncRead + Unpin>(
    stream: S,
    ingestion: &Ingestion,
    config: &SyslogConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let idle = config.idle_timeout;
    let linger = config.linger;
    let mut checked = false;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            frame = tokio::time::timeout(idle, next_frame(&mut reader, config.max_message_bytes)) => match frame {
                Err(_) => return Ok(()),
                Ok(frame) => frame?,
            },
        };
        let Some(first) = first else { return Ok(()) };
        if !checked {
            let key = stored_key(log(&first).0, config);
            match ingestion.admit(Protocol::Syslog, key.as_deref()).await {
                Err(e @ (IngestError::Unauthorized | IngestError::InsufficientScope(_))) => {
                    let day = chrono::Utc::now().date_naive();
                    let outcome = crate::ingest::outcome::Outcome::of(&Err(e.clone()));
                    ingestion.outcomes.record_logs(Protocol::Syslog, None, day, outcome, 1, 0);
                    crate::metrics::metrics().connection_closed(crate::metrics::ConnectionClosed::BadKey);
                    tracing::warn!(error = %e, "syslog connection closed: its first message's key is not valid");
                    return Ok(());
                }
                // A good key: this admission only vouched for the connection.
                Ok(admitted) => drop(admitted.into_project()),
                // Anything else passes (an unavailable store): the batch's own admission decides.
                Err(_) => {}
            }
            checked = true;
        }
        let mut room = ingestion.room();
        let mut held = first.bytes.len();
        // The first message is read already (at most `max_message_bytes`): it is stored even when the
        // budget is full; the budget decides whether more are read into this batch.
        let _ = room.grow_to(held);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        let mut ended = false;
        while batch.len() < config.batch_logs {
            // What is already buffered is taken at once; otherwise wait for more until the linger is over.
            match tokio::time::timeout_at(deadline, next_frame(&mut reader, config.max_message_bytes)).await {
                Err(_) => break,
                Ok(Ok(Some(frame))) => {
                    held += frame.bytes.len();
                    batch.push(frame);
                    // The batch so far is stored before more is read when the instance has no more room.
                    if room.grow_to(held).is_err() {
                        break;
                    }
                }
                Ok(Ok(None)) => {
                    ended = true;
                    break;
                }
                Ok(Err(e)) => {
                    store(ingestion, config, batch).await;
                    return Err(e);
                }
            }
        }
        store(ingestion, config, batch).await;
        drop(room);
        if ended {
            return Ok(());
        }
    }
}

/// The key a message is stored with: its own (`own`), or `[syslog] api_key`.
fn stored_key(own: Option<String>, config: &SyslogConfig) -> Option<String> {
    own.or_else(|| (!config.api_key.is_empty()).then(|| config.api_key.expose().to_owned()))
}

/// Retries a batch gets after refusals that pass (rate limit, full queue, unavailable).
const MAX_RETRIES: u32 = 30;

/// Sends a connection's batch to the stack, one request per key it carries; waits out refusals that
/// pass, counts and logs the others.
async fn store(ingestion: &Ingestion, config: &SyslogConfig, frames: Vec<Frame>) {
    // Per key: the logs, and the bytes they came in as (the request's size for the in-flight budget).
    let mut by_key: HashMap<Option<String>, (Vec<RawLog>, usize)> = HashMap::new();
    for frame in frames {
        let size = frame.bytes.len();
        let (key, log) = log(&frame);
        let entry = by_key.entry(stored_key(key, config)).or_default();
        entry.0.push(RawLog::from(log));
        entry.1 += size;
    }
    for (key, (logs, size)) in by_key {
        let mut retries = 0;
        loop {
            let Err((e, counted)) = try_store(ingestion, key.as_deref(), &logs, size).await else { break };
            match retry_after(&e) {
                Some(wait) if retries < MAX_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    if !counted {
                        // Refused before the stack: the request is counted, its logs are counted here, so
                        // what syslog could not store shows in `ledger_ingest_logs_total` too.
                        let outcome = crate::ingest::outcome::Outcome::of(&Err(e.clone()));
                        let day = chrono::Utc::now().date_naive();
                        ingestion.outcomes.record_logs(Protocol::Syslog, None, day, outcome, logs.len() as u64, 0);
                    }
                    tracing::warn!(messages = logs.len(), error = %e, "syslog messages refused");
                    break;
                }
            }
        }
    }
}

/// One attempt at storing a key's logs (their bytes are held in the connection's room): the refusal, and
/// whether the stack counted its logs.
async fn try_store(
    ingestion: &Ingestion,
    key: Option<&str>,
    logs: &[RawLog],
    size: usize,
) -> Result<(), (IngestError, bool)> {
    let admitted = ingestion.admit(Protocol::Syslog, key).await.map_err(|e| (e, false))?;
    // A copy: a refusal that passes sends the same logs again.
    let mut request = Ingest::new(String::new(), Protocol::Syslog, None, logs.to_vec());
    request.partial = true;
    request.body_bytes = size as u64;
    let span = crate::telemetry::request_span("syslog", "syslog", "", &axum::http::HeaderMap::new());
    let (result, report) = tracing::Instrument::instrument(ingestion.run(admitted, request), span).await;
    if let Some(rejected) = report.rejected.get() {
        let first = rejected.first().map(|p| format!("{} {}", p.field, p.reason)).unwrap_or_default();
        tracing::warn!(messages = rejected.len(), first = %first, "syslog messages refused as invalid");
    }
    result.map(|_| ()).map_err(|e| (e, true))
}

/// How long to wait before trying again, for a refusal that passes.
fn retry_after(error: &IngestError) -> Option<Duration> {
    match error {
        IngestError::RateLimited { retry_after }
        | IngestError::QueueFull { retry_after }
        | IngestError::Unavailable { retry_after, .. } => Some((*retry_after).max(Duration::from_millis(100))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let mut reader = BufReader::new(input);
        let mut out = Vec::new();
        while let Some(frame) = next_frame(&mut reader, max).await.expect("readable") {
            out.push(frame);
        }
        out
    }

    #[tokio::test]
    async fn octet_counted_and_newline_framing_mix() {
        let input = b"11 <13>1 - - -\r\n<14>plain line\r\n\n5 <1>ab10 <13>abcdef";
        let got = frames(input, 8).await;
        let texts: Vec<&[u8]> = got.iter().map(|f| f.bytes.as_slice()).collect();
        assert_eq!(texts, [&b"<13>1 - "[..], b"<14>plai", b"<1>ab", b"<13>abcd"]);
        let truncated: Vec<bool> = got.iter().map(|f| f.truncated).collect();
        assert_eq!(truncated, [true, true, false, true]);
    }

    #[test]
    fn rfc5424_with_our_structured_data() {
        let frame = Frame {
            bytes: br#"<11>1 2026-11-30T10:00:00.5Z web-1 billing 4242 PAY [ledger@41058 key="ledger_k"][meta env="prod"] card declined"#.to_vec(),
            truncated: false,
        };
        let (key, parsed) = log(&frame);
        let log = parsed;
        assert_eq!(key.as_deref(), Some("ledger_k"));
        assert_eq!(log["message"], "card declined");
        assert_eq!(log["level"], "ERROR");
        assert_eq!(log["host"], "web-1");
        assert_eq!(log["service"], "billing");
        assert_eq!(log["attributes"]["syslog.procid"], "4242");
        assert_eq!(log["attributes"]["syslog.msgid"], "PAY");
        assert_eq!(log["attributes"]["meta.env"], "prod");
        assert_eq!(log["attributes"]["syslog.facility"], "user");
        assert!(log["attributes"].get("ledger@41058.key").is_none(), "the key is never stored");
    }

    #[test]
    fn rfc3164_and_garbage() {
        let frame = Frame { bytes: b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed".to_vec(), truncated: false };
        let (key, parsed) = log(&frame);
        assert_eq!(key, None);
        assert_eq!(parsed["level"], "CRITICAL");
        assert_eq!(parsed["host"], "mymachine");
        assert_eq!(parsed["service"], "su");
        assert_eq!(parsed["message"], "'su root' failed");
        let (_, garbage) = log(&Frame { bytes: b"\x00\xffjust garbage".to_vec(), truncated: true });
        assert!(garbage["attributes"]["syslog.parse_error"].is_string());
        assert_eq!(garbage["attributes"]["syslog.truncated"], true);
        assert!(!garbage["message"].as_str().expect("text").contains('\0'));
    }
}
