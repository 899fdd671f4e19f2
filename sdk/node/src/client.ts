// The client: a bounded buffer, batches sent in the background with fetch, retries, and the query helper.

import { randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';

/** A log as `POST /v1/logs` takes it. */
export interface Log {
  message: string;
  level?: 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR' | 'CRITICAL' | string;
  timestamp?: string | number;
  service?: string;
  environment?: string;
  host?: string;
  trace_id?: string;
  span_id?: string;
  attributes?: Record<string, unknown>;
  exception?: { type: string; value?: string | null; stacktrace?: string | null };
  fingerprint?: string;
}

export interface ClientOptions {
  /** Default `LEDGER_URL`, else http://localhost:8000. */
  url?: string;
  /** Default `LEDGER_API_KEY`. */
  apiKey?: string;
  service?: string;
  environment?: string;
  host?: string;
  /** Logs per request (1 to 1000). Default 100. */
  batchSize?: number;
  /** Milliseconds the first log of a batch waits for more. Default 500. */
  lingerMs?: number;
  /** Logs waiting at most; past it, the newest is dropped and counted. Default 10000. */
  maxBuffer?: number;
  /** Milliseconds per request. Default 10000. */
  timeoutMs?: number;
  /** Gzip request bodies. Default true. */
  gzip?: boolean;
  /** Longest wait between retries, ms. Default 30000. */
  maxRetryDelayMs?: number;
  /** How long the flush at process exit may take, ms. Default 5000. */
  exitTimeoutMs?: number;
}

export interface Stats {
  sent: number;
  dropped: number;
  failed: number;
  retries: number;
  batches: number;
  queued: number;
}

/** A request the daemon refused for good (bad key, invalid query, ...). */
export class LedgerError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    const error = (body as { error?: { code?: string; message?: string } } | null)?.error;
    super(`${status} ${error?.code ?? ''}: ${error?.message ?? JSON.stringify(body)}`);
  }
}

const RETRYABLE = new Set([408, 429, 500, 502, 503, 504]);

/** An Error (or anything thrown) as Ledger's exception. */
export function exceptionOf(error: unknown): Log['exception'] {
  if (error instanceof Error) {
    return { type: error.name || error.constructor?.name || 'Error', value: error.message, stacktrace: error.stack ?? null };
  }
  return { type: typeof error, value: String(error), stacktrace: null };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Sends logs to Ledger in the background; `send` never blocks and never throws.
 *
 * Logs wait in a bounded buffer; a batch goes out when it holds `batchSize` logs or its first log has
 * waited `lingerMs`. Each batch carries its own `Idempotency-Key`, so a retry after a lost answer never
 * stores it twice. Retries (429, 503, 5xx, network errors) back off exponentially with jitter, or wait what
 * `Retry-After` says, for as long as the client is open; `close` (and the flush at process exit) stops them
 * at its timeout. When the buffer is full the newest log is dropped and counted in `stats.dropped`.
 */
export class Client {
  readonly url: string;
  private readonly apiKey: string;
  private readonly defaults: Partial<Log>;
  private readonly batchSize: number;
  private readonly lingerMs: number;
  private readonly maxBuffer: number;
  private readonly timeoutMs: number;
  private readonly gzip: boolean;
  private readonly maxRetryDelayMs: number;
  private readonly exitTimeoutMs: number;
  private buffer: Log[] = [];
  private inflight = 0;
  private timer: NodeJS.Timeout | null = null;
  private sending: Promise<void> | null = null;
  private closing = false;
  private deadline: number | null = null;
  private readonly counts = { sent: 0, dropped: 0, failed: 0, retries: 0, batches: 0 };
  private waiters: Array<() => void> = [];
  lastError: string | null = null;

  constructor(options: ClientOptions = {}) {
    this.url = (options.url ?? process.env.LEDGER_URL ?? 'http://localhost:8000').replace(/\/+$/, '');
    this.apiKey = options.apiKey ?? process.env.LEDGER_API_KEY ?? '';
    if (!this.apiKey) throw new Error('an API key is needed: pass apiKey or set LEDGER_API_KEY');
    this.batchSize = options.batchSize ?? 100;
    if (this.batchSize < 1 || this.batchSize > 1000) throw new Error('batchSize must be 1 to 1000');
    this.lingerMs = options.lingerMs ?? 500;
    this.maxBuffer = options.maxBuffer ?? 10_000;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.gzip = options.gzip ?? true;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 30_000;
    this.exitTimeoutMs = options.exitTimeoutMs ?? 5_000;
    this.defaults = {};
    for (const name of ['service', 'environment', 'host'] as const) {
      if (options[name]) this.defaults[name] = options[name];
    }
    // The event loop is empty: send what is left before the process ends (beforeExit fires again after
    // the flush, with nothing left to do).
    const atExit = () => {
      if (this.buffer.length || this.inflight) void this.close(this.exitTimeoutMs);
    };
    process.on('beforeExit', atExit);
  }

  get stats(): Stats {
    return { ...this.counts, queued: this.buffer.length + this.inflight };
  }

  /** Queues a message (with fields) or a whole log; false when the buffer was full and it was dropped. */
  send(message: string | Log, fields: Partial<Log> & { error?: unknown } = {}): boolean {
    const { error, ...rest } = fields;
    const log: Log = typeof message === 'string' ? { message, ...rest } : { ...message, ...rest };
    if (error !== undefined) log.exception = exceptionOf(error);
    return this.sendLog(log);
  }

  sendLog(log: Log): boolean {
    if (this.closing || this.buffer.length >= this.maxBuffer) {
      this.counts.dropped += 1;
      return false;
    }
    for (const [name, value] of Object.entries(this.defaults)) {
      if ((log as unknown as Record<string, unknown>)[name] === undefined) {
        (log as unknown as Record<string, unknown>)[name] = value;
      }
    }
    this.buffer.push(log);
    if (this.buffer.length >= this.batchSize) this.kick();
    else if (!this.timer && !this.sending) {
      this.timer = setTimeout(() => this.kick(), this.lingerMs);
      this.timer.unref();
    }
    return true;
  }

  /** Resolves true once every queued log is acknowledged or refused, false if some are left at `timeoutMs`. */
  async flush(timeoutMs = 5_000): Promise<boolean> {
    this.kick();
    const end = Date.now() + timeoutMs;
    while (this.buffer.length || this.inflight) {
      const left = end - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  /** Sends what is queued (retrying until `timeoutMs`); later `send`s are dropped. True when every queued
   * log was acknowledged. */
  async close(timeoutMs = 5_000): Promise<boolean> {
    this.deadline = Date.now() + timeoutMs;
    const failedBefore = this.counts.failed;
    const done = await this.flush(timeoutMs);
    this.closing = true;
    if (!done) {
      this.counts.failed += this.buffer.length;
      this.buffer = [];
    }
    return done && this.counts.failed === failedBefore;
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (!this.sending && this.buffer.length) {
      this.sending = this.drain().finally(() => {
        this.sending = null;
        for (const wake of this.waiters.splice(0)) wake();
        if (this.buffer.length) this.kick();
      });
    }
  }

  private async drain(): Promise<void> {
    while (this.buffer.length) {
      const batch = this.buffer.splice(0, this.batchSize);
      this.inflight = batch.length;
      try {
        await this.deliver(batch);
      } catch (e) {
        this.counts.failed += batch.length;
        this.lastError = String(e);
      }
      this.inflight = 0;
      for (const wake of this.waiters.splice(0)) wake();
    }
  }

  private givingUp(): boolean {
    return this.deadline !== null && Date.now() >= this.deadline;
  }

  private async deliver(logs: Log[]): Promise<void> {
    this.counts.batches += 1;
    let body: Buffer = Buffer.from(JSON.stringify({ logs }));
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'x-api-key': this.apiKey,
      'idempotency-key': randomUUID(),
      'user-agent': 'ledger-sdk-node/0.1',
    };
    if (this.gzip) {
      body = gzipSync(body);
      headers['content-encoding'] = 'gzip';
    }
    for (let attempt = 0; ; attempt++) {
      let status: number | null = null;
      let retryAfter: number | null = null;
      let answer: unknown = null;
      try {
        const response = await fetch(`${this.url}/v1/logs`, {
          method: 'POST',
          headers,
          body: new Uint8Array(body),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        status = response.status;
        const header = response.headers.get('retry-after');
        retryAfter = header !== null && !Number.isNaN(Number(header)) ? Number(header) * 1000 : null;
        answer = await response.json().catch(() => null);
      } catch (e) {
        this.lastError = String(e);
      }
      if (status === 202) {
        this.counts.sent += logs.length;
        return;
      }
      if (status === 413 && logs.length > 1) {
        const half = Math.floor(logs.length / 2);
        await this.deliver(logs.slice(0, half));
        await this.deliver(logs.slice(half));
        return;
      }
      if (status === 422) {
        const details = (answer as { error?: { details?: Array<{ index?: number }> } } | null)?.error?.details ?? [];
        const bad = new Set(details.map((d) => d.index).filter((i): i is number => typeof i === 'number'));
        if (bad.size && bad.size < logs.length) {
          // The batch is judged whole: send the good logs again without the bad ones.
          this.counts.failed += bad.size;
          this.lastError = JSON.stringify(answer).slice(0, 500);
          await this.deliver(logs.filter((_, i) => !bad.has(i)));
          return;
        }
      }
      if (status !== null && !RETRYABLE.has(status)) {
        this.counts.failed += logs.length;
        this.lastError = `${status}: ${JSON.stringify(answer).slice(0, 500)}`;
        return;
      }
      if (this.givingUp()) {
        this.counts.failed += logs.length;
        return;
      }
      let delay = retryAfter ?? Math.random() * Math.min(this.maxRetryDelayMs, 200 * 2 ** attempt);
      delay = Math.min(delay, this.maxRetryDelayMs);
      if (this.deadline !== null) delay = Math.min(delay, Math.max(0, this.deadline - Date.now()));
      this.counts.retries += 1;
      await sleep(delay);
    }
  }

  /**
   * Every log matching the filters of `GET /v1/logs`, newest first, paging with the cursor (the key needs
   * the `query` scope). `since` is milliseconds before now.
   */
  async *query(filters: QueryFilters = {}): AsyncGenerator<Log & { id: string }> {
    const params = new URLSearchParams({ limit: String(filters.pageSize ?? 100) });
    const from = filters.since !== undefined ? new Date(Date.now() - filters.since) : filters.from;
    if (from) params.set('from', from.toISOString());
    if (filters.to) params.set('to', filters.to.toISOString());
    for (const name of ['q', 'min_level', 'environment', 'fingerprint', 'trace_id'] as const) {
      const value = filters[name];
      if (value !== undefined) params.set(name, value);
    }
    for (const name of ['level', 'service'] as const) {
      const value = filters[name];
      for (const v of value === undefined ? [] : Array.isArray(value) ? value : [value]) params.append(name, v);
    }
    let cursor: string | null = null;
    do {
      if (cursor) params.set('cursor', cursor);
      const response = await fetch(`${this.url}/v1/logs?${params}`, {
        headers: { 'x-api-key': this.apiKey },
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      const page = (await response.json().catch(() => null)) as { logs: Array<Log & { id: string }>; next_cursor?: string | null } | null;
      if (!response.ok || !page) throw new LedgerError(response.status, page);
      yield* page.logs;
      cursor = page.next_cursor ?? null;
    } while (cursor);
  }
}

export interface QueryFilters {
  q?: string;
  since?: number;
  from?: Date;
  to?: Date;
  level?: string | string[];
  min_level?: string;
  service?: string | string[];
  environment?: string;
  fingerprint?: string;
  trace_id?: string;
  pageSize?: number;
}
