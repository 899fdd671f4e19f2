//! The Elasticsearch front, for shippers that write to Elasticsearch (Fluent Bit, Vector, Filebeat,
//! Logstash, syslog-ng, rsyslog) and the Elasticsearch clients' bulk helpers: `POST|PUT /_bulk` and
//! `/{index}/_bulk` (NDJSON, gzip optional, `index` and `create` actions), and the handshake routes shippers
//! probe first (`GET /`, `/_cat/health`, `/_cluster/health`, `/_license`, `/_xpack`). Every answer carries
//! `X-Elastic-Product: Elasticsearch`, without which the official clients refuse the server.
//!
//! A document maps by API.md's shared rules after its objects are flattened to dotted names (so ECS's
//! `{"log": {"level": "error"}}` is `log.level`): `@timestamp` / `timestamp` / `time` is the time,
//! `message` / `msg` / `log` the message (else the whole document as JSON), `_index` goes to
//! `attributes["es.index"]`. A bulk larger than a batch runs through the stack in batches; each document
//! gets its own result, as Elasticsearch gives them: a line that is not a JSON object, or a document the
//! validate stage refuses, is a 400 item and the rest are stored; a batch the stack refuses (rate limit,
//! quota, queue full) gives its items that status, which shippers retry.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use ledger_stages::{Ingest, Protocol, RawLog};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::fronts::base::body::{admit, header_text, media_type, read_body};
use crate::fronts::base::credential::shipper_credential;
use crate::fronts::base::{AppState, request_id};
use crate::ingest::map::LogBuilder;
use crate::ingest::outcome::Outcome;

/// The version the handshake reports: 8.x, which every current shipper and client speaks.
const VERSION: &str = "8.17.0";

/// Bytes of an index name (or a document id) at most, as in Elasticsearch: every item of a bulk and its
/// answer carries the name, so a longer one would be copied thousands of times.
const MAX_INDEX_BYTES: usize = 255;

/// A bulk holds at most this many batches' worth of documents.
const MAX_BATCHES_PER_BULK: usize = 50;

/// The routes of this front, each answer marked as Elasticsearch's.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_cat/health", get(cat_health))
        .route("/_cluster/health", get(cluster_health))
        .route("/_license", get(license))
        .route("/_xpack", get(xpack))
        .route("/_bulk", post(bulk).put(bulk))
        .route("/{index}/_bulk", post(bulk_index).put(bulk_index))
        .layer(axum::middleware::map_response(mark))
}

async fn mark(mut response: Response) -> Response {
    response.headers_mut().insert("x-elastic-product", HeaderValue::from_static("Elasticsearch"));
    response
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /` for shippers (the REST router sends browsers to the console instead).
pub(crate) async fn info() -> Response {
    mark(json_response(
        StatusCode::OK,
        &json!({
            "name": "ledger",
            "cluster_name": "ledger",
            "cluster_uuid": "ledger",
            "version": {
                "number": VERSION,
                "build_flavor": "default",
                "build_type": "ledger",
                "lucene_version": "9.12.0",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0",
            },
            "tagline": "You Know, for Search",
        }),
    ))
    .await
}

async fn cat_health(method: Method) -> Response {
    let epoch = Utc::now().timestamp();
    let time = Utc::now().format("%H:%M:%S");
    let line = format!("{epoch} {time} ledger green 1 1 0 0 0 0 0 0 - 100.0%\n");
    if method == Method::HEAD { StatusCode::OK.into_response() } else { (StatusCode::OK, line).into_response() }
}

async fn cluster_health() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"cluster_name": "ledger", "status": "green", "timed_out": false, "number_of_nodes": 1,
                "number_of_data_nodes": 1, "active_primary_shards": 0, "active_shards": 0}),
    )
}

async fn license() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"license": {"status": "active", "uid": "ledger", "type": "basic", "mode": "basic"}}),
    )
}

async fn xpack() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"build": {}, "license": {"status": "active", "type": "basic", "mode": "basic"}, "features": {}}),
    )
}

/// Elasticsearch's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "security_exception",
        403 => "security_exception",
        406 | 415 => "media_type_header_exception",
        413 => "content_too_long_exception",
        429 => "es_rejected_execution_exception",
        503 => "unavailable_shards_exception",
        500..=599 => "exception",
        _ => "illegal_argument_exception",
    }
}

/// An answer to the whole request, in Elasticsearch's error form.
fn failure(error: &ApiError) -> Response {
    if let ApiError::Internal(cause) = error {
        tracing::error!(error = %cause, "Elasticsearch bulk failed");
    }
    let status = error.status();
    let reason = match error {
        ApiError::Internal(_) => "internal error".to_owned(),
        other => other.to_string(),
    };
    let kind = error_type(status);
    let cause = json!({"type": kind, "reason": reason});
    let mut response = json_response(
        status,
        &json!({"error": {"root_cause": [cause], "type": kind, "reason": reason}, "status": status.as_u16()}),
    );
    if let Some(secs) = error.retry_after_secs() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        let challenge = HeaderValue::from_static("Basic realm=\"ledger\", ApiKey");
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// One document's place in the answer.
struct Item {
    action: &'static str,
    index: Option<String>,
    id: Option<String>,
    result: Option<Result<String, (StatusCode, &'static str, String)>>,
}

#[derive(Serialize)]
struct ItemError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    reason: &'a str,
}

/// An item in the key order Elasticsearch answers with.
#[derive(Serialize)]
struct ItemBody<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
    #[serde(rename = "_version", skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a str>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError<'a>>,
}

/// `{"<action>": {item}}`.
struct Entry<'a> {
    action: &'static str,
    body: ItemBody<'a>,
}

impl Serialize for Entry<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.action, &self.body)?;
        map.end()
    }
}

#[derive(Serialize)]
struct BulkAnswer<'a> {
    took: u64,
    errors: bool,
    items: Vec<Entry<'a>>,
}

/// Flattens a document's objects into dotted names, in the order they come.
fn flatten(prefix: &str, map: Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (key, value) in map {
        let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten(&name, inner, out),
            other => out.push((name, other)),
        }
    }
}

/// A document's time: an RFC 3339 text, or Unix milliseconds (Elasticsearch's default date formats).
fn time(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc()),
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

/// A document as a log object.
pub(crate) fn log(document: Map<String, Value>, index: Option<&str>) -> Value {
    // Only a document without a message of its own is kept whole as its message.
    let has_message =
        ["message", "msg", "log", "MESSAGE"].iter().any(|k| document.get(*k).is_some_and(Value::is_string));
    let whole = (!has_message).then(|| Value::Object(document.clone()).to_string());
    let mut fields = Vec::with_capacity(document.len());
    flatten("", document, &mut fields);
    let mut b = LogBuilder::new();
    let mut message = None;
    let mut timestamp = None;
    for (name, value) in fields {
        match name.as_str() {
            "message" | "msg" | "log" | "MESSAGE" if message.is_none() && value.is_string() => {
                message = value.as_str().map(str::to_owned);
            }
            "@timestamp" | "timestamp" | "time" if timestamp.is_none() && time(&value).is_some() => {
                timestamp = time(&value);
            }
            _ => {
                b.attribute(name, value);
            }
        }
    }
    b.message(message.or(whole).unwrap_or_default());
    if let Some(t) = timestamp {
        b.timestamp(t);
    }
    if let Some(index) = index {
        b.attribute("es.index", Value::String(index.to_owned()));
    }
    b.build()
}

/// What a bulk body holds: every item in order, and the documents to store with their item's position.
type Bulk = (Vec<Item>, Vec<(usize, Value)>);

/// The bulk body's actions and documents: the items (a document line that is not an object is its
/// item's error already), and the documents to store with their item's position. A malformed action
/// line refuses the whole request, as Elasticsearch does.
fn parse(body: &[u8], path_index: Option<&str>, max_items: usize) -> Result<Bulk, ApiError> {
    let mut items = Vec::new();
    let mut documents = Vec::new();
    let mut lines = body.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.trim_ascii().is_empty());
    while let Some((number, line)) = lines.next() {
        let malformed =
            |why: &str| ApiError::BadRequest(format!("Malformed action/metadata line [{}], {why}", number + 1));
        let action: Map<String, Value> = serde_json::from_slice(line).map_err(|e| malformed(&e.to_string()))?;
        let Some((name, meta)) = action.into_iter().next() else {
            return Err(malformed("expected an action (index, create, update or delete)"));
        };
        let meta = meta.as_object().cloned().unwrap_or_default();
        let text = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_owned);
        let index = text("_index").or_else(|| path_index.map(str::to_owned));
        let id = text("_id").filter(|id| id.len() <= MAX_INDEX_BYTES);
        if index.as_ref().is_some_and(|index| index.len() > MAX_INDEX_BYTES) {
            let action = match name.as_str() {
                "index" => "index",
                "create" => "create",
                "update" => "update",
                "delete" => "delete",
                other => return Err(malformed(&format!("unknown action [{other}]"))),
            };
            if action != "delete" {
                // Its document (or update body) goes with it.
                lines.next();
            }
            let reason = format!("index name is too long ({} > {MAX_INDEX_BYTES} bytes)", index.map_or(0, |i| i.len()));
            let error = (StatusCode::BAD_REQUEST, "invalid_index_name_exception", reason);
            items.push(Item { action, index: None, id, result: Some(Err(error)) });
            continue;
        }
        if items.len() == max_items {
            return Err(ApiError::BadRequest(format!("a bulk request holds at most {max_items} documents")));
        }
        let action = match name.as_str() {
            "index" => "index",
            "create" => "create",
            "update" | "delete" => {
                let action = if name == "update" { "update" } else { "delete" };
                if action == "update" {
                    lines.next();
                }
                let reason = format!("Ledger stores logs: the `{action}` action is not supported");
                let error = (StatusCode::BAD_REQUEST, "illegal_argument_exception", reason);
                items.push(Item { action, index, id, result: Some(Err(error)) });
                continue;
            }
            other => return Err(malformed(&format!("unknown action [{other}]"))),
        };
        let Some((_, source)) = lines.next() else {
            return Err(ApiError::BadRequest(
                "the bulk request must end with a newline after its last document".into(),
            ));
        };
        let result = match serde_json::from_slice::<Value>(source) {
            Ok(Value::Object(document)) => {
                documents.push((items.len(), log(document, index.as_deref())));
                None
            }
            Ok(_) => Some(Err((
                StatusCode::BAD_REQUEST,
                "document_parsing_exception",
                "the document must be a JSON object".into(),
            ))),
            Err(e) => Some(Err((
                StatusCode::BAD_REQUEST,
                "document_parsing_exception",
                format!("failed to parse the document: {e}"),
            ))),
        };
        items.push(Item { action, index, id, result });
    }
    if items.is_empty() {
        return Err(ApiError::BadRequest("request body is required".into()));
    }
    Ok((items, documents))
}

fn ndjson(headers: &HeaderMap) -> bool {
    let Some(mime) = media_type(headers) else { return true };
    matches!(
        mime.as_str(),
        "application/x-ndjson"
            | "application/json"
            | "application/vnd.elasticsearch+x-ndjson"
            | "application/vnd.elasticsearch+json"
    )
}

async fn bulk_index(state: State<AppState>, Path(index): Path<String>, headers: HeaderMap, body: Body) -> Response {
    run(state, Some(index), headers, body).await
}

async fn bulk(state: State<AppState>, headers: HeaderMap, body: Body) -> Response {
    run(state, None, headers, body).await
}

async fn run(State(state): State<AppState>, path_index: Option<String>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    if !ndjson(&headers) {
        let mime = header_text(&headers, header::CONTENT_TYPE).unwrap_or_default();
        let error = ApiError::UnsupportedMediaType(format!("Content-Type header [{mime}] is not supported"));
        return failure(&error);
    }
    let ingestion = &state.ingestion;
    let credential = shipper_credential(&headers, true);
    let (admitted, mut room) = match admit(ingestion, Protocol::Elasticsearch, credential.as_deref()).await {
        Ok(admitted) => admitted,
        Err(e) => return failure(&e),
    };
    if let Some(index) = path_index.as_deref().filter(|index| index.len() > MAX_INDEX_BYTES) {
        admitted.refuse(Outcome::Invalid);
        let reason = format!("index name is too long ({} > {MAX_INDEX_BYTES} bytes)", index.len());
        return failure(&ApiError::BadRequest(reason));
    }
    let max_items = ingestion.max_request_logs * MAX_BATCHES_PER_BULK;
    let decoded = read_body(&headers, body, ingestion.max_body_bytes, &mut room, move |bytes| {
        parse(bytes, path_index.as_deref(), max_items)
    })
    .await;
    let ((mut items, documents), size) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            admitted.refuse(Outcome::of_refusal(&e));
            return failure(&e);
        }
    };
    let project = admitted.into_project();
    let batches = documents.len().div_ceil(ingestion.max_request_logs.max(1)).max(1);
    let mut documents = documents.into_iter().peekable();
    let mut stopped: Option<(StatusCode, &'static str, String)> = None;
    while documents.peek().is_some() {
        let batch: Vec<(usize, Value)> = documents.by_ref().take(ingestion.max_request_logs).collect();
        let (positions, logs): (Vec<usize>, Vec<Value>) = batch.into_iter().unzip();
        if let Some(error) = &stopped {
            // A batch before this one was refused for a reason that holds for this one too (rate, quota,
            // room): refused alike, without asking again.
            for position in positions {
                items[position].result = Some(Err(error.clone()));
            }
            continue;
        }
        let admitted = ingestion.resume(Protocol::Elasticsearch, project.clone());
        let logs = logs.into_iter().map(RawLog::from).collect();
        let mut request = Ingest::new(request_id::current().unwrap_or_default(), Protocol::Elasticsearch, None, logs);
        request.partial = true;
        request.body_bytes = (size / batches) as u64;
        let (result, report) = ingestion.run(admitted, request).await;
        match result {
            Ok(accepted) => {
                let rejected = report.rejected.get().map(Vec::as_slice).unwrap_or_default();
                let mut ids = accepted.ids.iter();
                let mut refused = rejected.iter().peekable();
                for (n, position) in positions.into_iter().enumerate() {
                    if refused.peek().is_some_and(|p| p.index == Some(n)) {
                        let problem = refused.next().map(|p| format!("{} {}", p.field, p.reason)).unwrap_or_default();
                        items[position].result =
                            Some(Err((StatusCode::BAD_REQUEST, "document_parsing_exception", problem)));
                    } else if let Some(id) = ids.next() {
                        items[position].result = Some(Ok(id.to_string()));
                    }
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                let status = e.status();
                let error = (status, error_type(status), e.to_string());
                for position in positions {
                    items[position].result = Some(Err(error.clone()));
                }
                if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                    stopped = Some(error);
                }
            }
        }
    }
    let mut errors = false;
    let items = items
        .iter()
        .map(|item| {
            let index = item.index.as_deref().unwrap_or_default();
            let body = match &item.result {
                Some(Ok(id)) => ItemBody {
                    index,
                    id: item.id.as_deref().unwrap_or(id),
                    version: Some(1),
                    result: Some("created"),
                    status: 201,
                    error: None,
                },
                Some(Err((status, kind, reason))) => {
                    errors = true;
                    ItemBody {
                        index,
                        id: item.id.as_deref().unwrap_or_default(),
                        version: None,
                        result: None,
                        status: status.as_u16(),
                        error: Some(ItemError { kind, reason }),
                    }
                }
                None => {
                    errors = true;
                    let error = ItemError { kind: "exception", reason: "the document was not processed" };
                    ItemBody { index, id: "", version: None, result: None, status: 500, error: Some(error) }
                }
            };
            Entry { action: item.action, body }
        })
        .collect();
    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    json_response(StatusCode::OK, &BulkAnswer { took, errors, items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_flatten_and_map() {
        let document = json!({"@timestamp": "2025-11-24T16:00:00.5Z", "log": {"level": "error"},
            "service": {"name": "api"}, "host": {"name": "h1"}, "message": "boom", "user": {"id": 7}});
        let log = log(document.as_object().cloned().expect("object"), Some("logs-app"));
        assert_eq!(log["message"], "boom");
        assert_eq!(log["level"], "ERROR");
        assert_eq!(log["service"], "api");
        assert_eq!(log["host"], "h1");
        assert_eq!(log["timestamp"], "2025-11-24T16:00:00.500000000Z");
        assert_eq!(log["attributes"], json!({"user.id": 7, "es.index": "logs-app"}));
        let bare = super::log(json!({"a": 1}).as_object().cloned().expect("object"), None);
        assert_eq!(bare["message"], r#"{"a":1}"#, "no message field: the whole document");
    }

    #[test]
    fn bulk_lines() {
        let body = b"{\"index\":{\"_index\":\"a\"}}\n{\"message\":\"one\"}\n{\"create\":{\"_id\":\"x\"}}\nnot json\n\
                     {\"delete\":{\"_id\":\"y\"}}\n{\"index\":{}}\n{\"msg\":\"two\",\"time\":1764000000000}\n";
        let (items, documents) = parse(body, Some("path"), 100).expect("valid");
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].index.as_deref(), Some("a"));
        assert!(matches!(&items[1].result, Some(Err((s, _, _))) if *s == StatusCode::BAD_REQUEST));
        assert!(matches!(&items[2].result, Some(Err(_))), "delete is refused per item");
        assert_eq!(documents.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [0, 3]);
        assert_eq!(documents[1].1["attributes"]["es.index"], "path");
        assert!(matches!(parse(b"[1]\n{}\n", None, 100), Err(ApiError::BadRequest(_))), "a bad action line");
        assert!(matches!(parse(b"{\"index\":{}}\n", None, 100), Err(ApiError::BadRequest(_))), "no source");
        let long = format!("{{\"index\":{{\"_index\":\"{}\"}}}}\n{{\"message\":\"m\"}}\n", "i".repeat(300));
        let (items, documents) = parse(long.as_bytes(), None, 100).expect("parsed");
        assert!(documents.is_empty(), "a document under a too long index name is not stored");
        assert!(items[0].index.is_none(), "the name is not echoed");
        assert!(matches!(&items[0].result, Some(Err((_, "invalid_index_name_exception", _)))));
        assert!(matches!(parse(b"{\"index\":{}}\n{}\n{\"index\":{}}\n{}\n", None, 1), Err(ApiError::BadRequest(_))));
    }
}
