//! The per-log work of ingestion, per log (`Throughput::Elements`): decode (JSON, MessagePack), validate,
//! enrich, fingerprint, encode for COPY, and all of the request path together.
//!
//! `cargo bench --bench per_log`

use std::hint::black_box;

use chrono::Utc;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ledger::ingest::decode::{self, Format};
use ledger::store::logs::postgres::encode_copy_rows;
use ledger_stages::enrich::Enrich;
use ledger_stages::fingerprint::fingerprint;
use ledger_stages::stage::Stage;
use ledger_stages::validate::{Validate, ValidateConfig};
use ledger_stages::{Ingest, LogRecord, Protocol};
use uuid::Uuid;

#[path = "payload.rs"]
mod payload;

const BATCH: usize = 100;

fn records(validate: &Validate, logs: Vec<serde_json::Value>) -> Vec<LogRecord> {
    match validate.check(logs, Uuid::nil(), Utc::now()) {
        Ok(records) => records,
        Err(e) => panic!("the bench payload is invalid: {e:?}"),
    }
}

fn per_log(c: &mut Criterion) {
    let body = payload::batch(0, BATCH);
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let msgpack = rmp_serde::to_vec_named(&body).unwrap_or_default();
    let logs = decode::logs(&json, Format::Json, 1000).unwrap_or_default();
    let validate = Validate::new(ValidateConfig::default());
    let valid = records(&validate, logs.clone());

    let mut group = c.benchmark_group("per_log");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode_json", |b| b.iter(|| decode::logs(black_box(&json), Format::Json, 1000)));
    group.bench_function("decode_msgpack", |b| b.iter(|| decode::logs(black_box(&msgpack), Format::MessagePack, 1000)));
    group.bench_function("validate", |b| {
        b.iter_batched(|| logs.clone(), |logs| validate.check(logs, Uuid::nil(), Utc::now()), BatchSize::SmallInput)
    });
    group.bench_function("enrich", |b| {
        b.iter_batched(
            || {
                let mut request = Ingest::new(String::new(), Protocol::Http, None, Vec::new());
                request.records = valid.clone();
                request
            },
            |mut request| futures::executor::block_on(Enrich.apply(&mut request)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("fingerprint", |b| b.iter(|| valid.iter().map(fingerprint).fold(0, u64::wrapping_add)));
    group.bench_function("encode_copy", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            encode_copy_rows(black_box(&valid), &mut out);
            out.len()
        })
    });
    group.bench_function("decode_validate_enrich_fingerprint", |b| {
        b.iter(|| {
            let logs = decode::logs(black_box(&json), Format::Json, 1000).unwrap_or_default();
            let mut request = Ingest::new(String::new(), Protocol::Http, None, Vec::new());
            request.records = records(&validate, logs);
            let _ = futures::executor::block_on(Enrich.apply(&mut request));
            request.records.iter().map(fingerprint).fold(0, u64::wrapping_add)
        })
    });
    group.finish();
}

criterion_group!(benches, per_log);
criterion_main!(benches);
