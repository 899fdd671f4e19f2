// winston: `new winston.transports.Stream`-like object-mode transport, without depending on winston.
// `winston.createLogger({transports: [new LedgerTransport({apiKey})]})`.
import { Writable } from 'node:stream';

import { Client, type ClientOptions, type Log } from './client.js';

const LEVEL = Symbol.for('level');
const MESSAGE = Symbol.for('message');
const SPLAT = Symbol.for('splat');

/** winston's npm levels, most severe first. */
const ORDER = ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'];
const MAP: Record<string, string> = {
  error: 'ERROR',
  warn: 'WARNING',
  info: 'INFO',
  http: 'INFO',
  verbose: 'DEBUG',
  debug: 'DEBUG',
  silly: 'DEBUG',
};

/** One winston info object as a log: `message`, level, `stack` (from `format.errors()`) → exception. */
export function winstonLog(info: Record<string | symbol, unknown>): Log {
  const { level, message, stack, timestamp, ...rest } = info as Record<string, unknown>;
  const name = String(info[LEVEL] ?? level ?? 'info');
  const log: Log = {
    message: typeof message === 'string' && message ? message : String(message ?? '(empty message)'),
    level: MAP[name] ?? 'INFO',
  };
  if (typeof timestamp === 'string') log.timestamp = timestamp;
  if (typeof stack === 'string') {
    const type = /^(\w+)(?::|$)/.exec(stack)?.[1] ?? 'Error';
    log.exception = { type, value: log.message, stacktrace: stack };
  }
  const attributes = Object.fromEntries(Object.entries(rest).filter(([k]) => typeof k === 'string'));
  if (Object.keys(attributes).length) log.attributes = attributes;
  return log;
}

export interface TransportOptions extends ClientOptions {
  client?: Client;
  /** The least severe winston level sent (default: all). */
  level?: string;
}

export class LedgerTransport extends Writable {
  readonly client: Client;
  level?: string;

  constructor(options: TransportOptions = {}) {
    super({ objectMode: true });
    this.client = options.client ?? new Client(options);
    this.level = options.level;
  }

  /** winston's transport method: queue and return at once. */
  log(info: Record<string | symbol, unknown>, callback: () => void): void {
    const name = String(info[LEVEL] ?? info.level ?? 'info');
    if (!this.level || ORDER.indexOf(name) <= ORDER.indexOf(this.level)) {
      try {
        this.client.sendLog(winstonLog(info));
      } catch {
        // Never into the application's logging call.
      }
    }
    callback();
  }

  override _write(info: Record<string | symbol, unknown>, _encoding: BufferEncoding, done: () => void): void {
    this.log(info, done);
  }

  override _final(done: (error?: Error | null) => void): void {
    this.client.close().then(() => done(), done);
  }
}

export { MESSAGE, SPLAT };
export default LedgerTransport;
