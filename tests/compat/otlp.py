"""The OpenTelemetry Python SDK sending logs to Ledger with its own OTLP exporters, configured only by the
standard environment variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, ...), as a user
would. Usage: python otlp.py http|grpc MARKER. Exits non-zero when the exporter reports a failure."""

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

transport, marker = sys.argv[1], sys.argv[2]
if transport == "http":
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
else:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

failures = []


class Checked(OTLPLogExporter):
    """The SDK's exporter; a failed export is remembered, so the test fails instead of losing logs quietly."""

    def export(self, batch):
        result = super().export(batch)
        if result.name != "SUCCESS":
            failures.append(result)
        return result


resource = Resource.create({"service.name": f"otel-py-{transport}", "deployment.environment.name": "test",
                            "host.name": "py-host"})
provider = LoggerProvider(resource=resource)
provider.add_log_record_processor(SimpleLogRecordProcessor(Checked()))
trace.set_tracer_provider(TracerProvider(resource=resource))
tracer = trace.get_tracer("compat")

log = logging.getLogger("compat")
log.setLevel(logging.DEBUG)
log.addHandler(LoggingHandler(logger_provider=provider))

log.info("%s plain info", marker, extra={"order_id": 42})
with tracer.start_as_current_span("checkout"):
    try:
        raise ValueError(f"{marker} bad card")
    except ValueError:
        log.exception("%s payment failed", marker)
log.warning("%s warned", marker)

provider.shutdown()
if failures:
    print(f"export failed: {failures}", file=sys.stderr)
    sys.exit(1)
