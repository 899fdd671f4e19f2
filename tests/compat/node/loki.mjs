// winston-loki sending snappy-compressed protobuf (it falls back to JSON quietly when snappy cannot load;
// this script refuses that) to Ledger's Loki front. Usage: node loki.mjs URL KEY MARKER.
import winston from 'winston';
import LokiTransport from 'winston-loki';

const [url, key, marker] = process.argv.slice(2);
const failures = [];
const transport = new LokiTransport({
  host: url, basicAuth: `ledger:${key}`, json: false, labels: { app: 'winston-app', env: 'test' },
  batching: true, interval: 0.2, gracefulShutdown: false, onConnectionError: (e) => failures.push(String(e)),
});
if (transport.batcher.contentType !== 'application/x-protobuf') {
  console.error(`winston-loki is not sending protobuf: ${transport.batcher.contentType}`);
  process.exit(2);
}
const logger = winston.createLogger({ transports: [transport] });
logger.error(`${marker} from winston`);
logger.info(`${marker} winston info`);
await transport.flush();
if (failures.length) console.error('push failed:', failures);
// The transport's batching timer would keep the process alive.
process.exit(failures.length ? 1 : 0);
