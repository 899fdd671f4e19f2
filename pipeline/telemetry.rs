//! Logs and traces.
//!
//! Logs: tracing as JSON lines (or text) on stdout, filtered by `telemetry.log_level`. A line written within
//! a request carries the request's span fields: its `request_id` and, with tracing on, its `trace_id`.
//!
//! Traces: with `telemetry.otlp_endpoint` set, spans go to an OpenTelemetry collector over OTLP/gRPC, in
//! batches (the standard `OTEL_BSP_*` variables tune them). A request's span continues the caller's W3C
//! `traceparent` when it sent one; each ingestion stage is a child span; the queue carries the request's
//! trace context to the worker, whose batch span links every request it writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span, Subscriber, span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, TelemetryConfig};

/// The span exporter, if any: [`Telemetry::shutdown`] flushes what it still holds.
#[must_use = "call shutdown() on exit, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter. Blocks: call it outside the runtime's workers.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("ledger: could not flush traces: {error}");
        }
    }
}

/// Where log lines go: the daemon's on stdout; a command's on stderr, so its stdout holds only its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTo {
    Stdout,
    Stderr,
}

/// Installs the global subscriber. `RUST_LOG` wins over `telemetry.log_level`. With an OTLP endpoint this
/// must run inside the tokio runtime (the exporter's channel lives on it).
pub fn init(config: &TelemetryConfig, to: LogTo) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = match to {
        LogTo::Stdout => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout),
        LogTo::Stderr => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt: Box<dyn Layer<Layered<Filter, Registry>> + Send + Sync> = match config.log_format {
        // Every span of the line (request, then stage): request_id and trace_id come with it.
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).with_span_list(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let (otel, provider) = if config.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&config.otlp_endpoint)
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint {:?}: {e}", config.otlp_endpoint))?;
        let resource = opentelemetry_sdk::Resource::builder().with_service_name("ledger").build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("ledger"));
        (Some(layer), Some(provider))
    };
    // One global filter: no per-layer filters, which make the OpenTelemetry layer drop other layers' events
    // (tokio-rs/tracing-opentelemetry#257).
    let filter = Filter { logs: filter, spans: provider.is_some() };
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    // A second init (unit tests that build several daemons in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    Ok(Telemetry { provider })
}

/// Whether spans are exported: without it, requests skip reading and writing trace contexts.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The log filter, letting through as well, when traces are exported, Ledger's own spans at debug and above
/// (the stages' spans are debug spans): traces do not depend on the log level, and the log lines do not
/// change, since spans print only as the context of a line.
struct Filter {
    logs: EnvFilter,
    spans: bool,
}

impl Filter {
    fn traced(&self, meta: &Metadata<'_>) -> bool {
        self.spans && meta.is_span() && *meta.level() <= Level::DEBUG && meta.target().starts_with("ledger")
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Filter {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.traced(meta) { Interest::always() } else { Layer::<S>::register_callsite(&self.logs, meta) }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let logs = Layer::<S>::max_level_hint(&self.logs);
        if self.spans { logs.map(|l| l.max(LevelFilter::DEBUG)) } else { logs }
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.traced(meta) || self.logs.enabled(meta, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.logs.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.logs.on_record(id, values, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.logs.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.logs.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.logs.on_close(id, ctx);
    }
}

/// Reads `traceparent` and `tracestate` from HTTP headers (REST, and gRPC metadata, which is HTTP/2 headers).
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// The span of one request (`name`: the HTTP method, or the gRPC method's path), continuing the caller's
/// trace when `headers` carry a valid `traceparent`, and carrying its trace id as a field so every log line
/// of the request has it.
pub(crate) fn request_span(name: &str, path: &str, request_id: &str, headers: &axum::http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        request_id = request_id,
        path = path,
        trace_id = tracing::field::Empty,
        // Set by an ingestion front: which one (http, grpc, otlp, loki, elasticsearch, syslog).
        front = tracing::field::Empty,
    );
    if EXPORTING.load(Ordering::Relaxed) && !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        if parent.span().span_context().is_valid() {
            // Only fails when the span is disabled, which was ruled out.
            let _ = span.set_parent(parent);
        }
        record_trace_id(&span);
    }
    span
}

/// Puts the span's trace id (when traces are exported) in its `trace_id` field, for its log lines.
fn record_trace_id(span: &Span) {
    let trace = span.context().span().span_context().trace_id();
    if trace != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace));
    }
}

/// The current span's context as a W3C `traceparent`, for the queue to carry to the worker.
pub(crate) fn current_traceparent() -> Option<String> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The span of one write of queued logs (`backend`: `shared` or `embedded`), linked to the span of every
/// request whose logs it carries.
pub(crate) fn batch_span<'a>(backend: &'static str, requests: impl IntoIterator<Item = Option<&'a str>>) -> Span {
    let span = tracing::info_span!(
        "batch",
        otel.name = "queue batch",
        backend,
        logs = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    if EXPORTING.load(Ordering::Relaxed) && !span.is_disabled() {
        for context in requests.into_iter().flatten().filter_map(linked_context) {
            span.add_link(context);
        }
        record_trace_id(&span);
    }
    span
}

/// A queued `traceparent` back as the span context to link to; `None` when it is absent or malformed.
pub(crate) fn linked_context(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_or_are_ignored() {
        let context = linked_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(linked_context("00-zz-00f067aa0ba902b7-01").is_none());
        assert!(linked_context("").is_none());
    }
}
