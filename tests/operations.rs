#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

//! The daemon as an operator sees it: health, OpenAPI, gRPC health and reflection, exit codes.

mod support;

use std::process::Command;

use support::{Daemon, Fresh, Kind};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

on_both_backends!(
    health_and_deep_health,
    openapi_describes_every_route,
    grpc_health_and_reflection,
    sigterm_exits_zero,
    prometheus_metrics_count_outcomes,
);

async fn prometheus_metrics_count_outcomes(d: Daemon) {
    let (_, _, key) = d.tenant("ada@example.com").await;
    assert_eq!(d.ingest(&key, serde_json::json!({"logs": [{"message": "a"}, {"message": "b"}]})).await.status, 202);
    d.ingest(&key, serde_json::json!({"level": "x"})).await.assert_error(422, "validation_failed");
    let text = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("ledger_ingest_logs_total{front=\"http\",outcome=\"accepted\"} 2"), "{text}");
    assert!(text.contains("ledger_ingest_logs_total{front=\"http\",outcome=\"invalid\"} 1"), "{text}");
    assert!(text.contains("ledger_queue_depth "), "{text}");
    for expected in [
        "ledger_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/logs\",status=\"202\"} 1",
        "ledger_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/logs\",status=\"422\"} 1",
        "ledger_key_validations_total{answered_by=\"local_cache\"}",
        "ledger_account_store_breaker_state 0",
        "ledger_pool_connections{pool=\"logs\",state=\"open\"}",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    if d.kind() == support::Kind::Shared {
        assert!(text.contains("ledger_queue_shard_lag_seconds{shard=\"0\"}"), "{text}");
        assert!(text.contains("ledger_queue_shard_entries{shard=\"3\"}"), "{text}");
        assert!(text.contains("ledger_redis_failing_fast 0"), "{text}");
    }
    // Written logs are counted once the writer has them.
    support::eventually(std::time::Duration::from_secs(10), "the written logs are counted", || async {
        let text = d.client().get(d.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines().any(|l| l.starts_with("ledger_logs_written_total{") && l.ends_with(" 2")).then_some(())
    })
    .await;
}

async fn health_and_deep_health(d: Daemon) {
    let r = d.get("/health", None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")));
    let r = d.get("/health/deep", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], "ok");
    for check in ["database", "cache"] {
        assert_eq!(r.body["checks"][check]["status"], "ok", "{r:?}");
        assert!(r.body["checks"][check]["latency_ms"].as_f64().is_some(), "{r:?}");
    }
}

async fn openapi_describes_every_route(d: Daemon) {
    let r = d.get("/openapi.json", None).await;
    assert_eq!(r.status, 200);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = r.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/register", "post"),
        ("/v1/login", "post"),
        ("/v1/logout", "post"),
        ("/v1/me", "get"),
        ("/v1/projects", "post"),
        ("/v1/projects", "get"),
        ("/v1/projects/{id}", "get"),
        ("/v1/projects/{id}", "patch"),
        ("/v1/projects/{id}", "delete"),
        ("/v1/projects/{id}/keys", "post"),
        ("/v1/projects/{id}/keys", "get"),
        ("/v1/projects/{id}/keys/{key_id}", "delete"),
        ("/health", "get"),
        ("/health/deep", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from /openapi.json");
    }
    assert!(r.body["components"]["schemas"]["ErrorBody"].is_object());
}

async fn grpc_health_and_reflection(d: Daemon) {
    let channel = tonic::transport::Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("ledger.v1.IngestService".into())),
    };
    let mut answers = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    match answer.message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => assert!(!files.file_descriptor_proto.is_empty()),
        other => panic!("reflection did not describe ledger.v1.IngestService: {other:?}"),
    }
}

async fn sigterm_exits_zero(mut d: Daemon) {
    assert_eq!(d.get("/health", None).await.status, 200);
    let status = d.terminate();
    assert!(status.success(), "exit status {status}: {}", d.output());
    assert!(d.output().contains("stopped"));
    // Everything drained by itself: the shutdown bound was not what ended it.
    assert!(!d.output().contains("shutdown timed out"), "{}", d.output());
}

/// Runs `ledger serve` expecting it to fail; returns its stderr.
fn serve_fails(env: &[(String, String)]) -> String {
    let output = Command::new(support::ledger_binary())
        .args(["--config", &support::config_path(), "serve"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(!output.status.success(), "ledger serve succeeded with {env:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "not a one-line reason: {stderr}");
    stderr
}

#[test]
fn bad_config_and_unreachable_dependencies_exit_non_zero_with_one_line() {
    let fresh = Fresh::new(Kind::Embedded);
    let mut env = fresh.env();
    env.push(("LEDGER__SERVER__HTTP_ADR".into(), "127.0.0.1:1".into()));
    assert!(serve_fails(&env).contains("http_adr"));

    let mut env = fresh.env();
    env.push(("LEDGER__BACKEND__KIND".into(), "shared".into()));
    assert!(serve_fails(&env).contains("jwt_secret"));

    let mut env = Fresh::new(Kind::Shared).env();
    env.push(("LEDGER__POSTGRES__AUTH_URL".into(), "postgres://postgres:hunter22@127.0.0.1:1/x".into()));
    let reason = serve_fails(&env);
    assert!(reason.contains("PostgreSQL") && !reason.contains("hunter22"), "{reason}");

    let shared = Fresh::new(Kind::Shared);
    let mut env = shared.env();
    env.push(("LEDGER__REDIS__URL".into(), "redis://127.0.0.1:1".into()));
    assert!(serve_fails(&env).contains("Redis"));

    let missing =
        Command::new(support::ledger_binary()).args(["--config", "/nonexistent.toml", "serve"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.toml"));
}

#[test]
fn every_command_has_help() {
    for args in [vec!["--help"], vec!["serve", "--help"], vec!["migrate", "--help"], vec!["check-config", "--help"]] {
        let output = Command::new(support::ledger_binary()).args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage"), "{args:?}");
    }
}

#[tokio::test]
async fn migrate_creates_and_migrates_the_shared_databases() {
    let fresh = Fresh::new(Kind::Shared);
    let output = Command::new(support::ledger_binary())
        .args(["--config", &support::config_path(), "migrate"])
        .envs(fresh.env())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let url = format!("{}/{}", support::postgres_server(), fresh.auth_db());
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    let tables: Vec<&str> = tables.iter().map(|(t,)| t.as_str()).collect();
    for table in ["api_keys", "projects", "users"] {
        assert!(tables.contains(&table), "{tables:?}");
    }
    pool.close().await;
    // Applying again is a no-op.
    let again = Command::new(support::ledger_binary())
        .args(["--config", &support::config_path(), "migrate"])
        .envs(fresh.env())
        .output()
        .unwrap();
    assert!(again.status.success());
}
