//! The per-log work of ingestion, per log (`Throughput::Elements`): decode (JSON, MessagePack), validate,
//! enrich, fingerprint, encode for COPY, the queue entry's encoding and decoding (with its bytes per log,
//! against the same with field names), and all of the request path together; then the rule stages
//! (redact, parse, sample) with 0, 10 and 50 rules, ending with the per-log cost of 10 redaction rules
//! against its 2 µs target.
//!
//! `cargo bench --bench per_log` (`-- rules` for the rule stages alone)

use std::hint::black_box;
use std::sync::Arc;

use chrono::Utc;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ledger::ingest::decode::{self, Format};
use ledger::queue::redis::Entry;
use ledger::store::logs::postgres::encode_copy_rows;
use ledger_stages::enrich::Enrich;
use ledger_stages::fingerprint::fingerprint;
use ledger_stages::parse::{Format as ParseFormat, Parse, ParseRule, Parser};
use ledger_stages::redact::{Detector, Redact, RedactRule, Redactor};
use ledger_stages::rules::Compiled;
use ledger_stages::sample::{Sample, SampleAction, SampleRule, Sampler};
use ledger_stages::stage::Stage;
use ledger_stages::validate::{Validate, ValidateConfig};
use ledger_stages::{Ingest, LogRecord, Protocol, RawLog};
use uuid::Uuid;

#[path = "payload.rs"]
mod payload;

const BATCH: usize = 100;

fn records(validate: &Validate, logs: Vec<RawLog>) -> Vec<LogRecord> {
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
    // How the body was decoded before issue 14: a tree of values per log (a map of its keys), for the ratio.
    group.bench_function("decode_json_values", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&json)).map(|body| body["logs"].is_array()))
    });
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
    let entry = Entry { traceparent: None, records: valid.clone() };
    let encoded = entry.encode().unwrap_or_default();
    group.bench_function("queue_entry_encode", |b| b.iter(|| black_box(&entry).encode().map(|e| e.len())));
    group.bench_function("queue_entry_decode", |b| {
        b.iter(|| Entry::decode(black_box(&encoded)).map(|e| e.records.len()))
    });
    let named = rmp_serde::to_vec_named(&entry).unwrap_or_default().len();
    println!(
        "queue entry: {:.0} bytes per log ({:.2} × the {:.0} bytes with field names)",
        encoded.len() as f64 / BATCH as f64,
        encoded.len() as f64 / named as f64,
        named as f64 / BATCH as f64
    );
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

/// `n` redaction rules: the seven detectors and an attribute name, then custom patterns.
fn redact_rules(n: usize) -> Vec<RedactRule> {
    let detectors = [
        Detector::Email,
        Detector::Card,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::Jwt,
        Detector::Bearer,
        Detector::CloudKeys,
    ];
    let mut rules: Vec<RedactRule> =
        detectors.iter().map(|d| RedactRule { detector: Some(*d), ..RedactRule::default() }).collect();
    rules.push(RedactRule { attribute: Some("password".into()), ..RedactRule::default() });
    for i in 0.. {
        if rules.len() >= n {
            break;
        }
        rules.push(RedactRule { pattern: Some(format!("(?-u:\\b)CUST{i}-[0-9]{{6}}")), ..RedactRule::default() });
    }
    rules.truncate(n);
    rules
}

fn parse_rules(n: usize) -> Vec<ParseRule> {
    // Rules for other services first (each is looked at and passed over), then logfmt for all.
    let mut rules: Vec<ParseRule> = (0..n.saturating_sub(1))
        .map(|i| ParseRule {
            services: vec![format!("service-{i}")],
            format: ParseFormat::Regex,
            pattern: Some(format!("^(?P<f{i}>[a-z]+) {i}")),
        })
        .collect();
    if n > 0 {
        rules.push(ParseRule { services: vec![], format: ParseFormat::Logfmt, pattern: None });
    }
    rules
}

fn sample_rules(n: usize) -> Vec<SampleRule> {
    // Rules that do not match (other services and messages), then one that samples every log.
    let mut rules: Vec<SampleRule> = (0..n.saturating_sub(1))
        .map(|i| SampleRule {
            levels: vec![],
            services: vec![format!("service-{i}")],
            environments: vec![],
            message: Some(format!("^healthcheck {i}")),
            action: SampleAction::Drop,
            one_in: None,
        })
        .collect();
    if n > 0 {
        rules.push(SampleRule {
            levels: vec![],
            services: vec![],
            environments: vec![],
            message: None,
            action: SampleAction::Sample,
            one_in: Some(10),
        });
    }
    rules
}

fn request_with(records: &[LogRecord]) -> Ingest {
    let mut request = Ingest::new(String::new(), Protocol::Http, None, Vec::new());
    request.project = Some(ledger_stages::ProjectContext {
        project_id: Uuid::nil(),
        key_id: Uuid::nil(),
        scopes: vec![],
        settings: ledger_stages::ProjectSettings::default(),
        stages: None,
    });
    request.records = records.to_vec();
    request
}

fn rule_stages(c: &mut Criterion) {
    let validate = Validate::new(ValidateConfig::default());
    let logs = payload::batch(0, BATCH)["logs"].as_array().cloned().unwrap_or_default();
    let valid = records(&validate, logs.into_iter().map(RawLog::from).collect());
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(BATCH as u64));
    for n in [0, 10, 50] {
        let redactor = Redactor::compile(&redact_rules(n), None, "bench").unwrap_or_default();
        let redact = Redact::new(Arc::new(Compiled::new(redactor)));
        group.bench_function(format!("redact_{n}_rules"), |b| {
            b.iter_batched(
                || request_with(&valid),
                |mut request| futures::executor::block_on(redact.apply(&mut request)),
                BatchSize::SmallInput,
            )
        });
        let parser = Parser::compile(&parse_rules(n), "bench").unwrap_or_default();
        let parse = Parse::new(Arc::new(Compiled::new(parser)), ValidateConfig::default());
        group.bench_function(format!("parse_{n}_rules"), |b| {
            b.iter_batched(
                || request_with(&valid),
                |mut request| futures::executor::block_on(parse.apply(&mut request)),
                BatchSize::SmallInput,
            )
        });
        let sampler = Sampler::compile(&sample_rules(n), "bench").unwrap_or_default();
        let sample = Sample::new(Arc::new(Compiled::new(sampler)));
        group.bench_function(format!("sample_{n}_rules"), |b| {
            b.iter_batched(
                || request_with(&valid),
                |mut request| futures::executor::block_on(sample.apply(&mut request)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // The figure, measured plainly (the batches are copied before the clock starts).
    let redactor = Redactor::compile(&redact_rules(10), None, "bench").unwrap_or_default();
    let redact = Redact::new(Arc::new(Compiled::new(redactor)));
    const ROUNDS: usize = 2000;
    let mut requests: Vec<Ingest> = (0..ROUNDS).map(|_| request_with(&valid)).collect();
    let started = std::time::Instant::now();
    for request in &mut requests {
        let _ = futures::executor::block_on(redact.apply(black_box(request)));
    }
    let per_log = started.elapsed().as_secs_f64() / (ROUNDS * BATCH) as f64;
    println!(
        "redact, 10 rules: {:.2} µs per log = {:.2} × the 2 µs target ({})",
        per_log * 1e6,
        per_log / 2e-6,
        if per_log <= 2e-6 { "met" } else { "NOT MET" }
    );
}

criterion_group!(benches, per_log, rule_stages);
criterion_main!(benches);
