// The OpenTelemetry JS SDK's OTLP/HTTP JSON log exporter sending to Ledger.
// Usage: node otlp.mjs URL KEY MARKER. Exits non-zero when an export fails.
import { LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { SeverityNumber } from '@opentelemetry/api-logs';

const [url, key, marker] = process.argv.slice(2);
const failures = [];
const exporter = new OTLPLogExporter({ url: `${url}/otlp/v1/logs`, headers: { authorization: `Bearer ${key}` } });
const checked = {
  export(logs, done) {
    exporter.export(logs, (result) => {
      if (result.code !== 0) failures.push(result.error ? String(result.error) : 'failed');
      done(result);
    });
  },
  shutdown: () => exporter.shutdown(),
  forceFlush: () => exporter.forceFlush(),
};
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': 'otel-node', 'deployment.environment': 'test' }),
  processors: [new SimpleLogRecordProcessor({ exporter: checked })],
});
const logger = provider.getLogger('compat');
logger.emit({ severityNumber: SeverityNumber.ERROR, severityText: 'ERROR', body: `${marker} from node`,
  attributes: { 'exception.type': 'TypeError', 'exception.message': 'x is undefined', 'http.route': '/pay' } });
logger.emit({ severityNumber: SeverityNumber.DEBUG, body: { text: `${marker} structured`, n: 3 } });
await provider.forceFlush();
await provider.shutdown();
if (failures.length) {
  console.error('export failed:', failures);
  process.exit(1);
}
