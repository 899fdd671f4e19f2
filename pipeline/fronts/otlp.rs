//! The OTLP logs front: `POST /otlp/v1/logs` (OTLP/HTTP, protobuf or the OTLP JSON encoding, gzip optional)
//! and `opentelemetry.proto.collector.logs.v1.LogsService/Export` on the gRPC port, with the official
//! messages of the `opentelemetry-proto` crate.
//!
//! Each record maps by API.md's shared rules ([`crate::ingest::map`]): severity number (else text) →
//! `level`, the body (a string, or any value as JSON) → `message`, time (else observed time) →
//! `timestamp`, trace and span ids, and resource, scope and record attributes by key. Records the
//! validate stage refuses are left out and counted in `partial_success`, as the OTLP specification asks;
//! the others are stored. Answers follow the specification: 200 with `ExportLogsServiceResponse`; errors as
//! `google.rpc.Status` in the request's encoding, 429/503 (retryable) with Retry-After, 400 (permanent).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ledger_stages::{Ingest, Problem, Protocol, RawLog};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::Value;

use crate::error::ApiError;
use crate::fronts::base::body::{admit, media_type, read_body};
use crate::fronts::base::credential::shipper_credential;
use crate::fronts::base::{AppState, request_id};
use crate::ingest::map::{LogBuilder, bytes_id, level_from_text, otlp_level};
use crate::ingest::outcome::Outcome;
use crate::ingest::{Admitted, Ingestion, decode};

/// Where the records sit in an export request: `resource_logs.scope_logs.log_records`.
const PROTO_PATH: &[u32] = &[1, 2, 2];
const JSON_PATH: &[&str] = &["resourceLogs", "scopeLogs", "logRecords"];

/// The gRPC service's name and its one method's path.
pub const SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";
const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// An OTLP value as JSON: kvlists become objects, bytes base64, a double that is no JSON number its text.
fn json(value: Option<any_value::Value>) -> Value {
    use any_value::Value as V;
    match value {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::from(i),
        Some(V::DoubleValue(d)) => serde_json::Number::from_f64(d).map_or(Value::String(d.to_string()), Value::Number),
        Some(V::ArrayValue(a)) => Value::Array(a.values.into_iter().map(|v| json(v.value)).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(kv.values.into_iter().map(|kv| (kv.key, any(kv.value))).collect()),
        Some(V::BytesValue(b)) => {
            use base64::Engine;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

fn any(value: Option<AnyValue>) -> Value {
    json(value.and_then(|v| v.value))
}

fn attributes(builder: &mut LogBuilder, attributes: Vec<KeyValue>) {
    for kv in attributes {
        builder.attribute(kv.key, any(kv.value));
    }
}

/// The most bytes any of the request's records shares with others (its resource and scope, which each of
/// them gets a copy of); `None` without records.
fn largest_shared(request: &ExportLogsServiceRequest) -> Option<usize> {
    request
        .resource_logs
        .iter()
        .flat_map(|r| {
            let resource = r.resource.as_ref().map_or(0, prost::Message::encoded_len);
            r.scope_logs.iter().map(move |s| resource + s.scope.as_ref().map_or(0, prost::Message::encoded_len))
        })
        .max()
}

/// An export request's records as log objects, in order.
pub(crate) fn logs(request: ExportLogsServiceRequest) -> Vec<Value> {
    let mut logs = Vec::new();
    for resource_logs in request.resource_logs {
        // What every record of a resource (and of a scope) shares is mapped once, then cloned per record.
        let mut with_resource = LogBuilder::new();
        attributes(&mut with_resource, resource_logs.resource.map(|r| r.attributes).unwrap_or_default());
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_logs.scope.unwrap_or_default();
            let mut with_scope = with_resource.clone();
            if !scope.name.is_empty() {
                with_scope.attribute("otel.scope.name", Value::String(scope.name));
            }
            if !scope.version.is_empty() {
                with_scope.attribute("otel.scope.version", Value::String(scope.version));
            }
            attributes(&mut with_scope, scope.attributes);
            for record in scope_logs.log_records {
                let mut b = with_scope.clone();
                attributes(&mut b, record.attributes);
                match record.body.and_then(|b| b.value) {
                    Some(any_value::Value::StringValue(s)) => b.message(s),
                    None => b.message(String::new()),
                    Some(other) => b.message(json(Some(other)).to_string()),
                };
                if !record.event_name.is_empty() {
                    if !b.has_message() {
                        b.message(record.event_name.clone());
                    }
                    b.attribute("event.name", Value::String(record.event_name));
                }
                match otlp_level(record.severity_number).or_else(|| level_from_text(&record.severity_text)) {
                    Some(level) => {
                        b.severity(level);
                    }
                    None if !record.severity_text.is_empty() => {
                        b.attribute("severity_text", Value::String(record.severity_text));
                    }
                    None => {}
                }
                let nanos =
                    if record.time_unix_nano != 0 { record.time_unix_nano } else { record.observed_time_unix_nano };
                if let Ok(nanos) = i64::try_from(nanos)
                    && nanos > 0
                {
                    b.timestamp(chrono::DateTime::from_timestamp_nanos(nanos));
                }
                if let Some(id) = bytes_id(&record.trace_id) {
                    b.trace_id(&id);
                }
                if let Some(id) = bytes_id(&record.span_id) {
                    b.span_id(&id);
                }
                logs.push(b.build());
            }
        }
    }
    logs
}

/// Decodes a body: its records counted first (more than the batch limit is refused before anything is
/// built), then the message.
fn decode(body: &[u8], encoding: Encoding, max_logs: usize) -> Result<ExportLogsServiceRequest, ApiError> {
    match encoding {
        Encoding::Protobuf => {
            if ledger_proto::codec::count_nested(body, PROTO_PATH, max_logs) > max_logs {
                return Err(ApiError::BatchTooLarge { max: max_logs });
            }
            ExportLogsServiceRequest::decode(body)
                .map_err(|e| ApiError::BadRequest(format!("the body is not a valid ExportLogsServiceRequest: {e}")))
        }
        Encoding::Json => {
            let invalid = |e: serde_json::Error| {
                ApiError::BadRequest(format!("the body is not a valid OTLP/JSON ExportLogsServiceRequest: {e}"))
            };
            if decode::count_json(body, JSON_PATH, max_logs).map_err(invalid)? > max_logs {
                return Err(ApiError::BatchTooLarge { max: max_logs });
            }
            serde_json::from_slice(body).map_err(invalid)
        }
    }
}

/// `partial_success` for the records validate left out: how many, and why the first few were.
fn partial_success(rejected: Option<&Vec<Problem>>) -> Option<ExportLogsPartialSuccess> {
    let rejected = rejected.filter(|r| !r.is_empty())?;
    let listed = crate::fronts::base::refusals(
        rejected.iter().map(|p| (p.index, p.field.as_str(), p.reason.as_str())),
        "record",
    );
    Some(ExportLogsPartialSuccess {
        rejected_log_records: rejected.len() as i64,
        error_message: format!("{} log records refused: {listed}", rejected.len()),
    })
}

/// Runs an export through the stack: the answer, or the error to encode.
async fn export(
    ingestion: &Ingestion,
    admitted: Admitted,
    request: ExportLogsServiceRequest,
    request_id: String,
    size: usize,
) -> Result<ExportLogsServiceResponse, ApiError> {
    if let Some(size) = largest_shared(&request).filter(|size| *size > ingestion.max_shared_bytes) {
        let max = ingestion.max_shared_bytes;
        admitted.refuse(Outcome::Invalid);
        let reason = format!("a resource's and scope's attributes take {size} bytes; at most {max} are accepted");
        return Err(ApiError::BadRequest(reason));
    }
    let logs = logs(request);
    if logs.is_empty() {
        // Nothing to store is a success with nothing refused.
        admitted.accepted_without_logs();
        return Ok(ExportLogsServiceResponse { partial_success: None });
    }
    let mut ingest = Ingest::new(request_id, Protocol::Otlp, None, logs.into_iter().map(RawLog::from).collect());
    ingest.partial = true;
    ingest.body_bytes = size as u64;
    let (result, report) = ingestion.run(admitted, ingest).await;
    result.map_err(ApiError::from)?;
    Ok(ExportLogsServiceResponse { partial_success: partial_success(report.rejected.get()) })
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn content_type(encoding: Encoding) -> HeaderValue {
    HeaderValue::from_static(match encoding {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    })
}

/// An error as OTLP/HTTP answers one: API.md's status (429 and 503 with Retry-After are retryable, the
/// other 4xx are not), with a `google.rpc.Status` in the request's encoding.
fn failure(encoding: Encoding, error: &ApiError) -> Response {
    if let ApiError::Internal(cause) = error {
        tracing::error!(error = %cause, "OTLP export failed");
    }
    let status = crate::fronts::base::rpc::status(error);
    let message = match error {
        ApiError::Validation(problems) => {
            let listed = problems.iter().map(|p| (p.index, p.field.as_str(), p.reason.as_str()));
            format!("every log record was refused: {}", crate::fronts::base::refusals(listed, "record"))
        }
        ApiError::Internal(_) => "internal error".to_owned(),
        other => other.to_string(),
    };
    let body = RpcStatus { code: status.code() as i32, message };
    let bytes = match encoding {
        Encoding::Protobuf => body.encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&serde_json::json!({"code": body.code, "message": body.message})).unwrap_or_default()
        }
    };
    let mut response = (error.status(), bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, content_type(encoding));
    if let Some(secs) = error.retry_after_secs() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// `POST /otlp/v1/logs`.
pub(crate) async fn http(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let encoding = match media_type(&headers).as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        _ => {
            let error = ApiError::UnsupportedMediaType(
                "send OTLP logs as Content-Type: application/x-protobuf or application/json".into(),
            );
            return failure(Encoding::Json, &error);
        }
    };
    let ingestion = &state.ingestion;
    let credential = shipper_credential(&headers, false);
    let (admitted, mut room) = match admit(ingestion, Protocol::Otlp, credential.as_deref()).await {
        Ok(admitted) => admitted,
        Err(e) => return failure(encoding, &e),
    };
    let max_logs = ingestion.max_request_logs;
    let decoded =
        read_body(&headers, body, ingestion.max_body_bytes, &mut room, move |b| decode(b, encoding, max_logs)).await;
    let (request, size) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            admitted.refuse(Outcome::of_refusal(&e));
            return failure(encoding, &e);
        }
    };
    let id = request_id::current().unwrap_or_default();
    match export(ingestion, admitted, request, id, size).await {
        Ok(answer) => {
            let bytes = match encoding {
                Encoding::Protobuf => answer.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&answer).unwrap_or_default(),
            };
            let mut response = (StatusCode::OK, bytes).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, content_type(encoding));
            response
        }
        Err(e) => failure(encoding, &e),
    }
}

/// `LogsService` on the gRPC port, by hand rather than tonic's generated server: the generated one decodes
/// with prost's plain codec, and this one counts the records before decoding, as every `ledger.v1` call
/// does. Calls reach it authenticated by the gRPC front's guard.
#[derive(Clone)]
pub struct Grpc {
    ingestion: Ingestion,
}

impl Grpc {
    pub(crate) fn new(ingestion: Ingestion) -> Grpc {
        Grpc { ingestion }
    }
}

impl tonic::server::NamedService for Grpc {
    const NAME: &'static str = SERVICE;
}

struct ExportCall(Ingestion);

impl tonic::server::UnaryService<ExportLogsServiceRequest> for ExportCall {
    type Response = ExportLogsServiceResponse;
    type Future = futures::future::BoxFuture<'static, Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ExportLogsServiceRequest>) -> Self::Future {
        let ingestion = self.0.clone();
        Box::pin(async move {
            let (metadata, extensions, message) = request.into_parts();
            let project = crate::fronts::base::rpc::admission(&extensions)?.clone();
            let admitted = ingestion.resume(Protocol::Otlp, project);
            let size = message.encoded_len();
            let _room = match ingestion.reserve(size) {
                Ok(room) => room,
                Err(e) => {
                    admitted.refuse(Outcome::Unavailable);
                    return Err(crate::fronts::base::rpc::status(&ApiError::from(e)));
                }
            };
            let headers = metadata.into_headers();
            let id = headers.get(request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let answer = request_id::scope(id.clone(), export(&ingestion, admitted, message, id, size)).await;
            answer.map(tonic::Response::new).map_err(|e| crate::fronts::base::rpc::status(&e))
        })
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Grpc
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        use tonic::codec::CompressionEncoding;
        if request.uri().path() != EXPORT {
            return Box::pin(async { Ok(tonic::Status::unimplemented("no such method").into_http()) });
        }
        let ingestion = self.ingestion.clone();
        Box::pin(async move {
            let max = ingestion.max_body_bytes;
            let codec =
                ledger_proto::codec::BoundedCodec::<ExportLogsServiceResponse, ExportLogsServiceRequest>::nested(
                    PROTO_PATH,
                );
            let mut grpc = tonic::server::Grpc::new(codec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max);
            Ok(grpc.unary(ExportCall(ingestion), request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use serde_json::json;

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
    }

    fn string(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.into())
    }

    #[test]
    fn records_map_by_the_shared_rules() {
        let record = LogRecord {
            time_unix_nano: 1_764_000_000_123_456_789,
            severity_number: 17,
            body: Some(AnyValue { value: Some(string("boom")) }),
            attributes: vec![
                kv("exception.type", string("ValueError")),
                kv("exception.stacktrace", string("trace")),
                kv("http.status_code", any_value::Value::IntValue(500)),
            ],
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            ..LogRecord::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", string("checkout")),
                        kv("deployment.environment.name", string("prod")),
                        kv("host.name", string("web-1")),
                    ],
                    ..Resource::default()
                }),
                scope_logs: vec![ScopeLogs { log_records: vec![record], ..ScopeLogs::default() }],
                ..ResourceLogs::default()
            }],
        };
        let logs = logs(request);
        assert_eq!(logs.len(), 1);
        let log = &logs[0];
        assert_eq!(log["message"], "boom");
        assert_eq!(log["level"], "ERROR");
        assert_eq!(log["service"], "checkout");
        assert_eq!(log["environment"], "prod");
        assert_eq!(log["host"], "web-1");
        assert_eq!(log["trace_id"], "ab".repeat(16));
        assert_eq!(log["span_id"], "cd".repeat(8));
        assert_eq!(log["timestamp"], "2025-11-24T16:00:00.123456789Z");
        assert_eq!(log["exception"], json!({"type": "ValueError", "value": null, "stacktrace": "trace"}));
        assert_eq!(log["attributes"], json!({"http.status_code": 500}));
    }

    #[test]
    fn a_structured_body_is_its_json() {
        let body = any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
            values: vec![kv("user", string("ada"))],
        });
        let record = LogRecord { body: Some(AnyValue { value: Some(body) }), ..LogRecord::default() };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs { log_records: vec![record], ..ScopeLogs::default() }],
                ..ResourceLogs::default()
            }],
        };
        assert_eq!(logs(request)[0]["message"], r#"{"user":"ada"}"#);
    }

    #[test]
    fn json_bodies_decode_and_oversized_ones_are_refused_before_decoding() {
        let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1764000000000000000",
            "severityNumber":9,"body":{"stringValue":"hi"},"traceId":"5b8efff798038103d269b633813fc60c"}]}]}]}"#;
        let request = decode(body, Encoding::Json, 10).expect("valid OTLP/JSON");
        let log = &logs(request)[0];
        assert_eq!(log["message"], "hi");
        assert_eq!(log["level"], "INFO");
        assert_eq!(log["trace_id"], "5b8efff798038103d269b633813fc60c");
        let many = format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#, ["{}"; 11].join(","));
        assert!(matches!(decode(many.as_bytes(), Encoding::Json, 10), Err(ApiError::BatchTooLarge { max: 10 })));
        assert!(matches!(decode(b"\x0a\xff", Encoding::Protobuf, 10), Err(ApiError::BadRequest(_))));
    }
}
