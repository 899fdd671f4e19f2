//! The gRPC front (tonic): `grpc.health.v1.Health`, server reflection for `ledger.v1` and the health
//! service, and (as the stages land) `ledger.v1.IngestService` and `QueryService` over the same stack as
//! REST. Errors map from [`ApiError`] in one place, [`status`].

use ledger_proto::v1 as pb;
use ledger_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use ledger_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use ledger_stages::raw::Field;
use ledger_stages::{Ingest, IngestError, Problem, Protocol, RateLimitStatus, RawLog};
use serde_json::{Map, Value, json};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::error::ApiError;
use crate::fronts::base::rpc::{admission, read_project, status};
use crate::fronts::base::{AppState, request_id};
use crate::ingest::outcome::Outcome;
use crate::ingest::{Ingestion, idempotency_key_ok};
use crate::query::logs::{self, LogFilter, LogParams};
use crate::query::{Range, analytics};

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

/// A protobuf `Timestamp` as a time, when it is one: nanos 0 to 999,999,999 (as the protobuf spec says) and
/// seconds within what chrono represents.
fn proto_time(t: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    chrono::DateTime::from_timestamp(t.seconds, nanos)
}

/// A protobuf record as the log REST would have decoded, so one validate stage judges both. A timestamp no
/// RFC 3339 time can express is a problem of that field, never the time of receipt.
fn record_to_raw(index: usize, r: pb::LogRecord) -> Result<RawLog, Problem> {
    let mut log = RawLog::default().with(Field::Message, r.message);
    if !r.level.is_empty() {
        log.set(Field::Level, Value::String(r.level));
    }
    if let Some(t) = r.timestamp {
        let Some(time) = proto_time(&t) else {
            let reason = "is out of range (seconds and nanos must make a time between years 0 and 9999)".into();
            return Err(Problem { index: Some(index), field: "timestamp".into(), reason });
        };
        log.set(Field::Timestamp, Value::String(time.to_rfc3339()));
    }
    let optional = [
        (Field::Service, r.service),
        (Field::Environment, r.environment),
        (Field::Host, r.host),
        (Field::TraceId, r.trace_id),
        (Field::SpanId, r.span_id),
        (Field::Fingerprint, r.fingerprint),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            log.set(field, Value::String(value));
        }
    }
    if let Some(attributes) = r.attributes {
        log.set(Field::Attributes, struct_to_json(attributes));
    }
    if let Some(e) = r.exception {
        log.set(Field::Exception, json!({"type": e.r#type, "value": e.value, "stacktrace": e.stacktrace}));
    }
    Ok(log)
}

fn add_rate_limit(metadata: &mut MetadataMap, status: Option<&RateLimitStatus>) {
    if let Some(s) = status {
        metadata.insert("x-ratelimit-limit", MetadataValue::from(s.limit));
        metadata.insert("x-ratelimit-remaining", MetadataValue::from(s.remaining));
        metadata.insert("x-ratelimit-reset", MetadataValue::from(s.reset_secs));
    }
}

/// `ledger.v1.IngestService`: the REST ingestion stack behind protobuf. Calls reach it authenticated by
/// [`Guard`], which put the project in the request's extensions before tonic decoded anything.
#[derive(Clone)]
pub struct Ingester {
    ingestion: Ingestion,
}

impl Ingester {
    async fn batch(
        &self,
        headers: &axum::http::HeaderMap,
        project: &ledger_stages::ProjectContext,
        logs: Vec<pb::LogRecord>,
        idempotency_key: Option<&str>,
    ) -> Result<(Vec<String>, Option<RateLimitStatus>, bool), Status> {
        let admitted = self.ingestion.resume(Protocol::Grpc, project.clone());
        // The message is decoded already (bounded by its size and the codec's count); what the stack holds
        // at once across calls is bounded by the same budget as REST bodies.
        let size: usize = logs.iter().map(prost::Message::encoded_len).sum();
        let _room = match self.ingestion.reserve(size) {
            Ok(room) => room,
            Err(e) => {
                admitted.refuse(Outcome::Unavailable);
                return Err(status(&ApiError::from(e)));
            }
        };
        let decoded: Result<Vec<RawLog>, Problem> =
            logs.into_iter().enumerate().map(|(index, log)| record_to_raw(index, log)).collect();
        let logs = match decoded {
            Ok(logs) => logs,
            Err(problem) => {
                admitted.refuse(Outcome::Invalid);
                return Err(status(&ApiError::from(IngestError::Invalid(vec![problem]))));
            }
        };
        // Set by `with_request_id` for every call.
        let request_id = headers.get(request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let request = Ingest::new(request_id.clone(), Protocol::Grpc, None, logs);
        let run = self.ingestion.run_once(admitted, request, idempotency_key);
        let (result, report, replayed) = request_id::scope(request_id, run).await;
        let rate_limit = report.rate_limit.get().copied();
        match result {
            Ok(accepted) => Ok((accepted.ids.iter().map(ToString::to_string).collect(), rate_limit, replayed)),
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
        let (metadata, extensions, body) = request.into_parts();
        let project = admission(&extensions)?;
        let headers = metadata.into_headers();
        let key = match headers.get("idempotency-key").map(|v| v.to_str().ok().filter(|k| idempotency_key_ok(k))) {
            None => None,
            Some(Some(key)) => Some(key.to_owned()),
            Some(None) => {
                return Err(Status::invalid_argument("idempotency-key must be 1 to 128 printable ASCII characters"));
            }
        };
        let (ids, rate_limit, replayed) = self.batch(&headers, project, body.logs, key.as_deref()).await?;
        let mut response = Response::new(pb::IngestResponse { accepted: ids.len() as u64, ids });
        add_rate_limit(response.metadata_mut(), rate_limit.as_ref());
        if replayed {
            response.metadata_mut().insert("idempotent-replayed", MetadataValue::from_static("true"));
        }
        Ok(response)
    }

    async fn ingest_stream(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let (metadata, extensions, mut stream) = request.into_parts();
        let project = admission(&extensions)?;
        let headers = metadata.into_headers();
        let mut totals = pb::IngestResponse::default();
        let mut rate_limit = None;
        while let Some(message) = stream.message().await? {
            match self.batch(&headers, project, message.logs, None).await {
                Ok((ids, status, _)) => {
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

/// `ledger.v1.QueryService`: the query core behind protobuf. Each message maps into the core's types, as
/// REST's query string does.
#[derive(Clone)]
pub struct Querier {
    state: AppState,
}

/// A protobuf time, or a 400-like error naming the field.
fn time(field: &str, t: Option<&prost_types::Timestamp>) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    let Some(t) = t else { return Ok(None) };
    proto_time(t).map(Some).ok_or_else(|| status(&crate::query::bad(field, "is out of range")))
}

fn range(from: Option<&prost_types::Timestamp>, to: Option<&prost_types::Timestamp>) -> Result<Range, Status> {
    Range::new(time("from", from)?, time("to", to)?).map_err(|e| status(&e))
}

/// The `level` list and `min_level` of a query or tail request, or INVALID_ARGUMENT naming the bad one.
/// The filters a query or tail call carries (the same fields in both messages), as the query core's.
fn log_filter(
    level: &[String],
    min_level: Option<&str>,
    services: Vec<String>,
    environment: Option<String>,
    q: Option<String>,
    fingerprint: Option<String>,
    trace_id: Option<String>,
) -> Result<LogFilter, Status> {
    let levels = level.iter().map(|l| crate::query::level("level", l)).collect::<Result<Vec<_>, _>>();
    let min_level = min_level.map(|l| crate::query::level("min_level", l)).transpose();
    let (levels, min_level) = (levels.map_err(|e| status(&e))?, min_level.map_err(|e| status(&e))?);
    Ok(LogFilter { levels, min_level, services, environment, q, fingerprint, trace_id })
}

#[tonic::async_trait]
impl QueryService for Querier {
    type TailStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::LogRecord, Status>> + Send>>;

    async fn tail(&self, request: Request<pb::TailRequest>) -> Result<Response<Self::TailStream>, Status> {
        use crate::query::tail::{Subscription, TailEvent};
        use futures::StreamExt;
        let (_, extensions, q) = request.into_parts();
        let project = read_project(&extensions)?;
        let after = q.after;
        let filter =
            log_filter(&q.level, q.min_level.as_deref(), q.service, q.environment, q.q, q.fingerprint, q.trace_id)?;
        let after = crate::query::tail::resume_point(None, after.as_deref()).map_err(|e| status(&e))?;
        let params = LogParams { filter, ..LogParams::default() };
        let query = params.validate(project).map_err(|e| status(&e))?;
        let subscription = self.state.tail.subscribe(query, after).await.map_err(|e| status(&e))?;
        // Ends after a loss: a stream of records has no room for a `dropped` event, so the client is told by
        // the status and resumes from its last record.
        let records =
            futures::stream::unfold((subscription, false), |(mut s, ended): (Subscription, bool)| async move {
                if ended {
                    return None;
                }
                match s.next().await? {
                    TailEvent::Log(record) => Some((Ok(record_to_proto(record)), (s, false))),
                    TailEvent::Dropped(n) => Some((
                        Err(Status::aborted(format!(
                            "dropped {n} logs: this subscriber did not keep up; resume with `after`"
                        ))),
                        (s, true),
                    )),
                    TailEvent::Gap => Some((
                        Err(Status::aborted(
                            "the resume point is older than what the live tail keeps; resume without `after`",
                        )),
                        (s, true),
                    )),
                }
            })
            .take_until(self.state.ingestion.draining.clone().cancelled_owned());
        Ok(Response::new(Box::pin(records)))
    }

    async fn query_logs(
        &self,
        request: Request<pb::QueryLogsRequest>,
    ) -> Result<Response<pb::QueryLogsResponse>, Status> {
        let (_, extensions, q) = request.into_parts();
        let project = read_project(&extensions)?;
        let filter =
            log_filter(&q.level, q.min_level.as_deref(), q.service, q.environment, q.q, q.fingerprint, q.trace_id)?;
        let params = LogParams {
            from: time("from", q.from.as_ref())?,
            to: time("to", q.to.as_ref())?,
            filter,
            limit: q.limit,
            cursor: q.cursor,
        };
        let query = params.validate(project).map_err(|e| status(&e))?;
        let page = logs::page(self.state.logs.as_ref(), query).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::QueryLogsResponse {
            logs: page.logs.into_iter().map(record_to_proto).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn error_rate(
        &self,
        request: Request<pb::ErrorRateRequest>,
    ) -> Result<Response<pb::ErrorRateResponse>, Status> {
        let (_, extensions, q) = request.into_parts();
        let project = read_project(&extensions)?;
        let range = range(q.from.as_ref(), q.to.as_ref())?;
        let buckets =
            analytics::error_rate(self.state.analytics.as_ref(), project, range).await.map_err(|e| status(&e))?;
        let buckets = buckets
            .into_iter()
            .map(|b| pb::ErrorRateBucket {
                start: Some(prost_types::Timestamp { seconds: b.start, nanos: 0 }),
                total: b.total,
                errors: b.errors,
                error_rate: b.error_rate,
            })
            .collect();
        let bucket_seconds = u32::try_from(analytics::ERROR_RATE_BUCKET.seconds()).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ErrorRateResponse { bucket_seconds, buckets }))
    }

    async fn top_errors(
        &self,
        request: Request<pb::TopErrorsRequest>,
    ) -> Result<Response<pb::TopErrorsResponse>, Status> {
        let (_, extensions, q) = request.into_parts();
        let project = read_project(&extensions)?;
        let range = range(q.from.as_ref(), q.to.as_ref())?;
        let errors = analytics::top_errors(self.state.analytics.as_ref(), project, range, q.limit)
            .await
            .map_err(|e| status(&e))?;
        let errors = errors
            .errors
            .into_iter()
            .map(|(e, _)| pb::TopError {
                fingerprint: ledger_stages::log::fingerprint_hex(e.fingerprint),
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

/// `ledger.v1.IngestService`, its messages bounded by the ingestion limits.
pub(crate) fn ingest_service(ingestion: Ingestion) -> IngestServiceServer<Ingester> {
    let max = ingestion.max_body_bytes;
    IngestServiceServer::new(Ingester { ingestion }).max_decoding_message_size(max)
}

/// `ledger.v1.QueryService`.
pub(crate) fn query_service(state: AppState) -> QueryServiceServer<Querier> {
    QueryServiceServer::new(Querier { state })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retryable_errors_carry_retry_after() {
        let s = status(&ApiError::Unavailable { what: "database", retry_after: Duration::from_secs(3) });
        use tonic::Code;
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("3"));
        assert_eq!(status(&ApiError::Unauthorized).code(), Code::Unauthenticated);
        assert_eq!(status(&ApiError::Validation(vec![])).code(), Code::InvalidArgument);
    }
}
