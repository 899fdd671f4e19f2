// pino: `pino(createPinoStream({apiKey}))` in the same thread, or `pino.transport({target: 'ledger-sdk/pino',
// options: {apiKey}})` in pino's transport worker (the default export).
import { Writable } from 'node:stream';

import { Client, type ClientOptions, type Log } from './client.js';

const LEVELS: Array<[number, string]> = [
  [60, 'CRITICAL'],
  [50, 'ERROR'],
  [40, 'WARNING'],
  [30, 'INFO'],
  [0, 'DEBUG'],
];

/** One pino line (its JSON) as a log: `msg`, level number, `time`, `err` → exception; the rest attributes. */
export function pinoLog(line: Record<string, unknown>): Log {
  const { msg, level, time, err, hostname, trace_id, span_id, ...rest } = line;
  const number = typeof level === 'number' ? level : 30;
  const log: Log = {
    message: typeof msg === 'string' && msg ? msg : '(empty message)',
    level: LEVELS.find(([n]) => number >= n)?.[1] ?? 'INFO',
  };
  if (typeof time === 'number') log.timestamp = time / 1000;
  if (typeof hostname === 'string') log.host = hostname;
  if (typeof trace_id === 'string') log.trace_id = trace_id;
  if (typeof span_id === 'string') log.span_id = span_id;
  if (err && typeof err === 'object') {
    const e = err as { type?: string; message?: string; stack?: string };
    log.exception = { type: e.type ?? 'Error', value: e.message ?? null, stacktrace: e.stack ?? null };
  }
  if (Object.keys(rest).length) log.attributes = rest;
  return log;
}

/** A stream pino writes its lines to; every line becomes a log on the client. Ending it flushes. */
export function createPinoStream(options: ClientOptions & { client?: Client } = {}): Writable & { client: Client } {
  const client = options.client ?? new Client(options);
  let partial = '';
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      const text = partial + chunk.toString();
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.trim()) continue;
        try {
          client.sendLog(pinoLog(JSON.parse(line)));
        } catch {
          client.sendLog({ message: line, level: 'INFO' });
        }
      }
      done();
    },
    final(done) {
      client.close().then(() => done(), done);
    },
  }) as Writable & { client: Client };
  stream.client = client;
  return stream;
}

/** pino's transport entry point. */
export default function transport(options: ClientOptions): Writable {
  return createPinoStream(options);
}
