//! The gRPC front (tonic): `grpc.health.v1.Health`, server reflection for `ledger.v1` and the health
//! service, and (as the stages land) `ledger.v1.IngestService` and `QueryService` over the same stack as
//! REST. Errors map from [`ApiError`] in one place, [`status`].

use std::future::Future;

use ledger_proto::v1 as pb;
use ledger_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use ledger_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use ledger_stages::{Ingest, Protocol, RateLimitStatus};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::ServingStatus;

use crate::error::ApiError;
use crate::http::extract::credential;
use crate::http::logs::{ReadAccess, page};
use crate::http::{AppState, analytics, request_id};
use crate::ingest::Ingestion;

/// API.md's mapping of errors to gRPC status codes; retryable ones carry `retry-after` (whole seconds).
pub fn status(error: &ApiError) -> tonic::Status {
    let code = match error {
        ApiError::BadRequest(_)
        | ApiError::Validation(_)
        | ApiError::PayloadTooLarge { .. }
        | ApiError::BatchTooLarge { .. } => Code::InvalidArgument,
        ApiError::UnsupportedMediaType(_) => Code::InvalidArgument,
        ApiError::Unauthorized => Code::Unauthenticated,
        ApiError::InsufficientScope(_) => Code::PermissionDenied,
        ApiError::NotFound => Code::NotFound,
        ApiError::MethodNotAllowed => Code::Unimplemented,
        ApiError::EmailTaken => Code::AlreadyExists,
        ApiError::TooManyLoginAttempts { .. } | ApiError::RateLimited { .. } | ApiError::QuotaExceeded { .. } => {
            Code::ResourceExhausted
        }
        ApiError::Unavailable { .. } | ApiError::QueueFull { .. } => Code::Unavailable,
        ApiError::Internal(_) => Code::Internal,
    };
    let mut status = tonic::Status::new(code, error.to_string());
    if let Some(secs) = error.retry_after_secs() {
        status.metadata_mut().insert("retry-after", MetadataValue::from(secs));
    }
    status
}

/// A protobuf `Value` as JSON; whole numbers become integers, as a JSON client would have sent them.
fn value_to_json(value: prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => json!(n as i64),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

fn struct_to_json(s: prost_types::Struct) -> Value {
    Value::Object(s.fields.into_iter().map(|(k, v)| (k, value_to_json(v))).collect())
}

/// A protobuf record as the log object REST would have decoded, so one validate stage judges both.
fn record_to_json(r: pb::LogRecord) -> Value {
    let mut log = Map::new();
    log.insert("message".into(), Value::String(r.message));
    if !r.level.is_empty() {
        log.insert("level".into(), Value::String(r.level));
    }
    if let Some(t) = r.timestamp {
        let nanos = u32::try_from(t.nanos).unwrap_or(0);
        let time = chrono::DateTime::from_timestamp(t.seconds, nanos).map(|t| t.to_rfc3339());
        log.insert("timestamp".into(), time.map_or(Value::Null, Value::String));
    }
    let optional = [
        ("service", r.service),
        ("environment", r.environment),
        ("host", r.host),
        ("trace_id", r.trace_id),
        ("span_id", r.span_id),
        ("fingerprint", r.fingerprint),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            log.insert(name.into(), Value::String(value));
        }
    }
    if let Some(attributes) = r.attributes {
        log.insert("attributes".into(), struct_to_json(attributes));
    }
    if let Some(e) = r.exception {
        log.insert("exception".into(), json!({"type": e.r#type, "value": e.value, "stacktrace": e.stacktrace}));
    }
    Value::Object(log)
}

fn add_rate_limit(metadata: &mut MetadataMap, status: Option<&RateLimitStatus>) {
    if let Some(s) = status {
        metadata.insert("x-ratelimit-limit", MetadataValue::from(s.limit));
        metadata.insert("x-ratelimit-remaining", MetadataValue::from(s.remaining));
        metadata.insert("x-ratelimit-reset", MetadataValue::from(s.reset_secs));
    }
}

/// `ledger.v1.IngestService`: the REST ingestion stack behind protobuf.
#[derive(Clone)]
pub struct Ingester {
    ingestion: Ingestion,
}

impl Ingester {
    async fn batch(
        &self,
        headers: &axum::http::HeaderMap,
        logs: Vec<pb::LogRecord>,
    ) -> Result<(Vec<String>, Option<RateLimitStatus>), Status> {
        let credential = credential(headers).map(str::to_owned).ok_or_else(|| status(&ApiError::Unauthorized))?;
        let logs: Vec<Value> = logs.into_iter().map(record_to_json).collect();
        // Set by `with_request_id` for every call.
        let request_id = headers.get(request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let request = Ingest::new(request_id.clone(), Protocol::Grpc, Some(credential), logs);
        let (result, report) = request_id::scope(request_id, self.ingestion.run(request)).await;
        let rate_limit = report.rate_limit.get().copied();
        match result {
            Ok(accepted) => Ok((accepted.ids.iter().map(ToString::to_string).collect(), rate_limit)),
            Err(e) => {
                let mut s = status(&ApiError::from(e));
                add_rate_limit(s.metadata_mut(), rate_limit.as_ref());
                Err(s)
            }
        }
    }
}

#[tonic::async_trait]
impl IngestService for Ingester {
    async fn ingest(&self, request: Request<pb::IngestRequest>) -> Result<Response<pb::IngestResponse>, Status> {
        let (metadata, _, body) = request.into_parts();
        let (ids, rate_limit) = self.batch(&metadata.into_headers(), body.logs).await?;
        let mut response = Response::new(pb::IngestResponse { accepted: ids.len() as u64, ids });
        add_rate_limit(response.metadata_mut(), rate_limit.as_ref());
        Ok(response)
    }

    async fn ingest_stream(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let (metadata, _, mut stream) = request.into_parts();
        let headers = metadata.into_headers();
        let mut totals = pb::IngestResponse::default();
        let mut rate_limit = None;
        while let Some(message) = stream.message().await? {
            match self.batch(&headers, message.logs).await {
                Ok((ids, status)) => {
                    totals.accepted += ids.len() as u64;
                    totals.ids.extend(ids);
                    rate_limit = status;
                }
                Err(mut refused) => {
                    // Earlier batches of the stream stay accepted; say how many.
                    refused.metadata_mut().insert("x-ledger-accepted", MetadataValue::from(totals.accepted));
                    return Err(refused);
                }
            }
        }
        let mut response = Response::new(totals);
        add_rate_limit(response.metadata_mut(), rate_limit.as_ref());
        Ok(response)
    }
}

fn timestamp(t: &chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

fn micros(m: i64) -> Option<prost_types::Timestamp> {
    chrono::DateTime::from_timestamp_micros(m).as_ref().map(timestamp)
}

fn rfc3339(t: &prost_types::Timestamp) -> String {
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    chrono::DateTime::from_timestamp(t.seconds, nanos).map(|t| t.to_rfc3339()).unwrap_or_default()
}

fn json_to_value(v: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(json_to_value).collect() })
        }
        Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn json_to_struct(map: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct { fields: map.into_iter().map(|(k, v)| (k, json_to_value(v))).collect() }
}

fn record_to_proto(r: ledger_stages::LogRecord) -> pb::LogRecord {
    pb::LogRecord {
        id: r.id.to_string(),
        timestamp: Some(timestamp(&r.timestamp)),
        received_at: Some(timestamp(&r.received_at)),
        level: r.level.as_str().to_owned(),
        message: r.message,
        service: r.service,
        environment: r.environment,
        host: r.host,
        trace_id: r.trace_id,
        span_id: r.span_id,
        attributes: match r.attributes {
            Value::Object(map) => Some(json_to_struct(map)),
            _ => None,
        },
        exception: r.exception.map(|e| pb::Exception { r#type: e.kind, value: e.value, stacktrace: e.stacktrace }),
        fingerprint: Some(ledger_stages::log::fingerprint_hex(r.fingerprint)),
    }
}

/// `ledger.v1.QueryService`: the REST query and metrics routes behind protobuf, with their parameters
/// and checks (the typed request becomes the same parameters).
#[derive(Clone)]
pub struct Querier {
    state: AppState,
}

type Params = std::collections::HashMap<String, String>;

impl Querier {
    async fn project(&self, metadata: MetadataMap) -> Result<uuid::Uuid, Status> {
        let headers = metadata.into_headers();
        let access = ReadAccess::check(&headers, &self.state, None).await.map_err(|e| status(&e))?;
        Ok(access.project_id)
    }

    fn range(params: &mut Params, from: Option<&prost_types::Timestamp>, to: Option<&prost_types::Timestamp>) {
        if let Some(from) = from {
            params.insert("from".into(), rfc3339(from));
        }
        if let Some(to) = to {
            params.insert("to".into(), rfc3339(to));
        }
    }
}

#[tonic::async_trait]
impl QueryService for Querier {
    async fn query_logs(
        &self,
        request: Request<pb::QueryLogsRequest>,
    ) -> Result<Response<pb::QueryLogsResponse>, Status> {
        let (metadata, _, q) = request.into_parts();
        let project = self.project(metadata).await?;
        let mut params = Params::new();
        Self::range(&mut params, q.from.as_ref(), q.to.as_ref());
        let lists = [("level", q.level.join(",")), ("service", q.service.join(","))];
        for (name, value) in lists.into_iter().filter(|(_, v)| !v.is_empty()) {
            params.insert(name.into(), value);
        }
        let singles = [
            ("min_level", q.min_level),
            ("environment", q.environment),
            ("q", q.q),
            ("fingerprint", q.fingerprint),
            ("trace_id", q.trace_id),
            ("limit", q.limit.map(|l| l.to_string())),
            ("cursor", q.cursor),
        ];
        for (name, value) in singles {
            if let Some(value) = value {
                params.insert(name.into(), value);
            }
        }
        let (records, next_cursor) = page(&self.state, project, &params).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::QueryLogsResponse {
            logs: records.into_iter().map(record_to_proto).collect(),
            next_cursor,
        }))
    }

    async fn error_rate(
        &self,
        request: Request<pb::ErrorRateRequest>,
    ) -> Result<Response<pb::ErrorRateResponse>, Status> {
        let (metadata, _, q) = request.into_parts();
        let project = self.project(metadata).await?;
        let mut params = Params::new();
        Self::range(&mut params, q.from.as_ref(), q.to.as_ref());
        let buckets = analytics::error_rate_buckets(&self.state, project, &params).await.map_err(|e| status(&e))?;
        let buckets = buckets
            .into_iter()
            .map(|(start, total, errors, error_rate)| pb::ErrorRateBucket {
                start: Some(prost_types::Timestamp { seconds: start, nanos: 0 }),
                total,
                errors,
                error_rate,
            })
            .collect();
        Ok(Response::new(pb::ErrorRateResponse { bucket_seconds: 300, buckets }))
    }

    async fn top_errors(
        &self,
        request: Request<pb::TopErrorsRequest>,
    ) -> Result<Response<pb::TopErrorsResponse>, Status> {
        let (metadata, _, q) = request.into_parts();
        let project = self.project(metadata).await?;
        let mut params = Params::new();
        Self::range(&mut params, q.from.as_ref(), q.to.as_ref());
        if let Some(limit) = q.limit {
            params.insert("limit".into(), limit.to_string());
        }
        let errors = analytics::top_error_list(&self.state, project, &params).await.map_err(|e| status(&e))?;
        let errors = errors
            .into_iter()
            .map(|e| pb::TopError {
                fingerprint: format!("{:016x}", e.fingerprint),
                count: e.count,
                first_seen: micros(e.info.first_seen),
                last_seen: micros(e.info.last_seen),
                level: ledger_stages::Level::from_number(e.info.level)
                    .unwrap_or(ledger_stages::Level::Error)
                    .as_str()
                    .to_owned(),
                service: e.info.service,
                sample_message: e.info.sample_message,
                exception_type: e.info.exception_type,
            })
            .collect();
        Ok(Response::new(pb::TopErrorsResponse { errors }))
    }
}

/// Sets the call's `x-request-id` as REST does (the caller's when acceptable, else a new one): the call's id
/// in its span, its log lines and its error details.
fn with_request_id<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    if let Ok(id) = axum::http::HeaderValue::from_str(&request_id::of(request.headers())) {
        request.headers_mut().insert(request_id::HEADER, id);
    }
    request
}

/// A call's span, named by its gRPC method and continuing the caller's `traceparent`.
fn call_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let id = request.headers().get(request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    crate::telemetry::request_span(path.trim_start_matches('/'), path, id, request.headers())
}

/// Serves gRPC on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let ingestion = state.ingestion.clone();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ledger_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;
    let max = ingestion.max_body_bytes;
    let ingester = IngestServiceServer::new(Ingester { ingestion }).max_decoding_message_size(max);
    let traced = tower::ServiceBuilder::new()
        .map_request(with_request_id)
        .layer(tower_http::trace::TraceLayer::new_for_grpc().make_span_with(call_span));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| format!("gRPC TLS: {e}"))?;
    }
    builder
        .layer(traced)
        .add_service(health)
        .add_service(ingester)
        .add_service(QueryServiceServer::new(Querier { state }))
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| format!("gRPC server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retryable_errors_carry_retry_after() {
        let s = status(&ApiError::Unavailable { what: "database", retry_after: Duration::from_secs(3) });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("3"));
        assert_eq!(status(&ApiError::Unauthorized).code(), Code::Unauthenticated);
        assert_eq!(status(&ApiError::Validation(vec![])).code(), Code::InvalidArgument);
    }
}
