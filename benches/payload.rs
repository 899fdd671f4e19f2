// Shared by several benches; each uses part of it.
#![allow(dead_code)]

//! Realistic log shapes for the benches: a mix of plain messages, messages with attributes and context,
//! and errors with stack traces, averaging ~400 bytes of JSON per log like BASELINES.md's rows.

use chrono::{DateTime, Utc};
use ledger_stages::enrich::Enrich;
use ledger_stages::fingerprint::fingerprint;
use ledger_stages::stage::Stage;
use ledger_stages::validate::{Validate, ValidateConfig};
use ledger_stages::{Ingest, LogRecord, Protocol, RawLog};
use serde_json::{Value, json};
use uuid::Uuid;

const STACK: &str = "Traceback (most recent call last):\n  File \"/app/service/handlers.py\", line 214, in charge\n    result = gateway.charge(order.total, card)\n  File \"/app/service/gateway.py\", line 88, in charge\n    raise PaymentDeclined(response.code)\n";

/// The `i`-th log of a stream: shapes rotate, numbers and ids vary.
pub fn log(i: usize) -> Value {
    match i % 4 {
        0 => json!({
            "message": format!("GET /api/v1/orders/{} 200 in {}ms", 10_000 + i, i % 97),
            "level": "info", "service": "api", "environment": "production", "host": format!("web-{}", i % 8),
            "attributes": {"method": "GET", "status": 200, "duration_ms": i % 97, "user_id": i * 7}
        }),
        1 => json!({
            "message": format!("user {} logged in from 10.0.{}.{}", i, i % 255, (i * 3) % 255),
            "level": "info", "service": "auth", "timestamp": "2026-11-27T08:00:00.123456Z",
            "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"
        }),
        2 => json!({
            "message": format!("payment for order {} declined", 20_000 + i), "level": "error", "service": "checkout",
            "environment": "production", "attributes": {"order_id": 20_000 + i, "amount": 49.95, "currency": "EUR"},
            "exception": {"type": "PaymentDeclined", "value": format!("code {}", i % 5), "stacktrace": STACK}
        }),
        _ => json!({
            "message": format!("cache miss for key 'session:{}:profile' after {}us", i, i % 1000),
            "level": "debug", "service": "api", "host": "web-3",
            "attributes": {"cache": "redis", "hit": false, "shard": i % 16, "tags": ["session", "profile"]}
        }),
    }
}

/// A `{"logs": [...]}` batch of `n` logs starting at `offset`.
pub fn batch(offset: usize, n: usize) -> Value {
    json!({ "logs": (offset..offset + n).map(log).collect::<Vec<_>>() })
}

/// The records the daemon would store for `logs`, built by the same stages (validate a batch at a time,
/// enrich, fingerprint).
pub fn records(logs: Vec<Value>, received_at: DateTime<Utc>) -> Vec<LogRecord> {
    let validate = Validate::new(ValidateConfig::default());
    let mut out = Vec::with_capacity(logs.len());
    for batch in logs.chunks(1000) {
        let mut request = Ingest::new(String::new(), Protocol::Http, None, Vec::new());
        let raw = batch.iter().cloned().map(RawLog::from).collect();
        request.records = match validate.check(raw, Uuid::now_v7(), received_at) {
            Ok(records) => records,
            Err(e) => panic!("the bench payload is invalid: {e:?}"),
        };
        let _ = futures::executor::block_on(Enrich.apply(&mut request));
        for record in &mut request.records {
            record.fingerprint = fingerprint(record);
        }
        out.extend(request.records);
    }
    out
}
