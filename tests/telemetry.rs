//! Traces: the daemon exports its spans over OTLP/gRPC to a receiver inside the test, which asserts the
//! tree (request → one child per stage), the caller's `traceparent` continued on REST and gRPC, the
//! queue's batch span linked to the requests it wrote, and the trace id in the request's log lines.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_proto::v1 as pb;
use ledger_proto::v1::ingest_service_client::IngestServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use support::{Daemon, Fresh, Kind, eventually};
use tokio_stream::wrappers::TcpListenerStream;

/// An OTLP trace receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    /// Serves on a free port; returns the endpoint to configure.
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, endpoint)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const GRPC_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// The request span the caller's trace continued into, once exported.
async fn request_span(receiver: &Receiver, trace: &str) -> Span {
    eventually(Duration::from_secs(20), "the request span is exported", || async {
        receiver.spans().into_iter().find(|s| hex(&s.trace_id) == trace && hex(&s.parent_span_id) == CALLER_SPAN)
    })
    .await
}

async fn spans_trees_and_links(kind: Kind) {
    let (receiver, endpoint) = Receiver::start().await;
    let d = Daemon::start_with(
        Fresh::new(kind),
        &[
            ("LEDGER__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            // Accepted requests are logged at debug.
            ("LEDGER__TELEMETRY__LOG_LEVEL", "info,ledger::fronts::base::request_id=debug"),
        ],
    )
    .await;
    let (_, _, key) = d.tenant("ada@example.com").await;

    // REST, continuing the caller's trace.
    let response = d
        .client()
        .post(d.url("/v1/logs"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"logs": [{"message": "traced", "level": "error"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let request = request_span(&receiver, TRACE).await;
    assert_eq!(request.name, "POST");

    // One child per stage, in the request's trace, under the request's span.
    let stages = ["auth", "rate_limit", "quota", "validate", "enrich", "fingerprint", "queue"];
    let children = eventually(Duration::from_secs(20), "every stage span is exported", || async {
        let children: Vec<Span> =
            receiver.spans().into_iter().filter(|s| s.parent_span_id == request.span_id).collect();
        let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
        stages.iter().all(|stage| names.contains(stage)).then_some(children)
    })
    .await;
    assert!(children.iter().all(|s| hex(&s.trace_id) == TRACE));

    // The write of the batch: its own trace, linked to the request span, with the write as its child.
    let batch = eventually(Duration::from_secs(20), "the batch span links the request", || async {
        receiver.spans().into_iter().find(|s| {
            s.name == "queue batch" && s.links.iter().any(|l| l.span_id == request.span_id && hex(&l.trace_id) == TRACE)
        })
    })
    .await;
    let write = if kind == Kind::Shared { "COPY logs" } else { "INSERT logs" };
    eventually(Duration::from_secs(20), "the write span is a child of the batch span", || async {
        receiver.spans().into_iter().find(|s| s.name == write && s.parent_span_id == batch.span_id)
    })
    .await;

    // gRPC, continuing another trace.
    let channel = tonic::transport::Channel::from_shared(d.grpc.clone()).unwrap().connect().await.unwrap();
    let mut client = IngestServiceClient::new(channel);
    let mut call = tonic::Request::new(pb::IngestRequest {
        logs: vec![pb::LogRecord { message: "over grpc".into(), level: "info".into(), ..Default::default() }],
    });
    call.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    call.metadata_mut().insert("traceparent", format!("00-{GRPC_TRACE}-{CALLER_SPAN}-01").parse().unwrap());
    assert_eq!(client.ingest(call).await.unwrap().into_inner().accepted, 1);
    let grpc = request_span(&receiver, GRPC_TRACE).await;
    assert_eq!(grpc.name, "ledger.v1.IngestService/Ingest");
    eventually(Duration::from_secs(20), "the gRPC call's stages are its children", || async {
        receiver.spans().into_iter().find(|s| s.name == "validate" && s.parent_span_id == grpc.span_id)
    })
    .await;

    // The request's log line carries its trace id.
    let line = d.output().lines().find(|l| l.contains("request finished") && l.contains(TRACE)).map(str::to_owned);
    assert!(line.is_some(), "no request log line with trace id {TRACE}:\n{}", d.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_spans_trees_and_links() {
    spans_trees_and_links(Kind::Shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_spans_trees_and_links() {
    spans_trees_and_links(Kind::Embedded).await;
}

/// The span's string attribute `key`, if it has one.
fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

/// Each compatibility front's request is a span named by the front, with its `front` attribute, and the
/// stages under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compatibility_fronts_have_spans_named_by_front() {
    let (receiver, endpoint) = Receiver::start().await;
    let d = Daemon::start_with(
        Fresh::new(Kind::Embedded),
        &[("LEDGER__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let (_, _, key) = d.tenant("fronts@example.com").await;
    let sends = [
        (
            "/otlp/v1/logs",
            "application/json",
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"o"}}]}]}]}"#.to_owned(),
            200,
        ),
        (
            "/loki/api/v1/push",
            "application/json",
            r#"{"streams":[{"stream":{"app":"a"},"values":[["1764000000000000000","l"]]}]}"#.to_owned(),
            204,
        ),
        ("/_bulk", "application/x-ndjson", "{\"index\":{}}\n{\"message\":\"e\"}\n".to_owned(), 200),
    ];
    for (path, content_type, body, status) in sends {
        let r = d
            .client()
            .post(d.url(path))
            .bearer_auth(&key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    for (name, front) in
        [("POST /otlp/v1/logs", "otlp"), ("POST /loki/api/v1/push", "loki"), ("POST /_bulk", "elasticsearch")]
    {
        let span = eventually(Duration::from_secs(20), &format!("the {front} request span"), || async {
            receiver.spans().into_iter().find(|s| s.name == name)
        })
        .await;
        assert_eq!(attribute(&span, "front").as_deref(), Some(front), "{span:?}");
        eventually(Duration::from_secs(20), &format!("the {front} request's stages are its children"), || async {
            receiver.spans().into_iter().find(|s| s.name == "validate" && s.parent_span_id == span.span_id)
        })
        .await;
    }
}
