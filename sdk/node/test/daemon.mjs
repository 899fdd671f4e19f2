// The real daemon for the SDK's tests: the `ledger` binary (LEDGER_BINARY, default target/debug/ledger),
// started on free ports against a fresh backend, embedded (a temporary directory) or shared (fresh
// PostgreSQL databases and Redis key prefix on LEDGER_TEST_POSTGRES / LEDGER_TEST_REDIS).
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const BINARY = process.env.LEDGER_BINARY ?? join(ROOT, 'target/debug/ledger');
const POSTGRES = process.env.LEDGER_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432';
const REDIS = process.env.LEDGER_TEST_REDIS ?? 'redis://127.0.0.1:6379';

export class Daemon {
  static async start(kind, extra = {}) {
    const d = new Daemon(kind, extra);
    await d.start();
    return d;
  }

  constructor(kind, extra) {
    this.kind = kind;
    this.id = `sdk${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    this.dir = mkdtempSync(join(tmpdir(), 'ledger-sdk-'));
    this.extra = extra;
    this.httpAddr = '127.0.0.1:0';
    this.output = [];
  }

  env() {
    const env = { ...process.env };
    delete env.RUST_LOG;
    Object.assign(env, {
      LEDGER__SERVER__HTTP_ADDR: this.httpAddr,
      LEDGER__SERVER__GRPC_ADDR: '127.0.0.1:0',
      LEDGER__AUTH__BCRYPT_COST: '4',
      LEDGER__BACKEND__DATA_DIR: this.dir,
      LEDGER__TELEMETRY__LOG_LEVEL: 'info',
    });
    if (this.kind === 'shared') {
      Object.assign(env, {
        LEDGER__BACKEND__KIND: 'shared',
        LEDGER__AUTH__JWT_SECRET: 'sdk-test-secret-0123456789abcdef0123456789',
        LEDGER__POSTGRES__AUTH_URL: `${POSTGRES}/ledger_${this.id}_auth`,
        LEDGER__POSTGRES__LOGS_URL: `${POSTGRES}/ledger_${this.id}_logs`,
        LEDGER__POSTGRES__MAX_CONNECTIONS: '4',
        LEDGER__REDIS__URL: REDIS,
        LEDGER__REDIS__KEY_PREFIX: `ledger_${this.id}:`,
        LEDGER__QUEUE__LEASE_SECS: '2',
      });
    }
    return { ...env, ...this.extra };
  }

  start() {
    if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: build it with \`cargo build\` (or set LEDGER_BINARY)`);
    this.process = spawn(BINARY, ['--config', join(ROOT, 'config.toml'), 'serve'], { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((_, reject) => this.process.once('exit', (code) => reject(new Error(`ledger exited (${code}) before it was ready:\n${this.output.join('\n')}`))));
    const ready = new Promise((resolveReady) => {
      for (const stream of [this.process.stdout, this.process.stderr]) {
        createInterface({ input: stream }).on('line', (line) => {
          this.output.push(line);
          if (line.includes('"ledger ready')) {
            this.httpAddr = JSON.parse(line).http_addr;
            this.url = `http://${this.httpAddr}`;
            resolveReady();
          }
        });
      }
    });
    return Promise.race([ready, exited]);
  }

  async stop(signal = 'SIGTERM') {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) {
      const gone = new Promise((r) => this.process.once('exit', r));
      this.process.kill(signal);
      await gone;
    }
  }

  /** A graceful restart on the same port: SIGTERM (ingestion answers 503 while it drains), then a new daemon. */
  async restart() {
    await this.stop();
    await this.start();
  }

  async close() {
    await this.stop('SIGKILL');
    if (this.kind === 'shared') {
      for (const db of [`ledger_${this.id}_auth`, `ledger_${this.id}_logs`]) {
        spawnSync('psql', [`${POSTGRES}/postgres`, '-qc', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`]);
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  async call(method, path, body, bearer) {
    const response = await fetch(this.url + path, {
      method,
      headers: { 'content-type': 'application/json', ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return [response.status, text ? JSON.parse(text) : null];
  }

  /** A user, a project (with `settings`) and a key with both scopes. */
  async tenant(settings) {
    const [s1, user] = await this.call('POST', '/v1/register', { email: `${randomUUID()}@example.com`, password: 'correct horse' });
    if (s1 !== 201) throw new Error(JSON.stringify(user));
    const [s2, project] = await this.call('POST', '/v1/projects', { name: 'sdk' }, user.token);
    if (s2 !== 201) throw new Error(JSON.stringify(project));
    if (settings) {
      const [s3, patched] = await this.call('PATCH', `/v1/projects/${project.id}`, { settings }, user.token);
      if (s3 !== 200) throw new Error(JSON.stringify(patched));
    }
    const [s4, key] = await this.call('POST', `/v1/projects/${project.id}/keys`, { scopes: ['ingest', 'query'] }, user.token);
    if (s4 !== 201) throw new Error(JSON.stringify(key));
    return key.key;
  }

  /** Every stored log of the key's project. */
  async logs(key) {
    const { Client } = await import('../dist/index.js');
    const client = new Client({ url: this.url, apiKey: key });
    const logs = [];
    for await (const log of client.query({ from: new Date(0), to: new Date(Date.now() + 2 * 86400_000), pageSize: 1000 })) logs.push(log);
    return logs;
  }
}

/** Polls `check` until it returns something truthy. */
export async function eventually(check, what = 'a condition', withinMs = 30_000) {
  const end = Date.now() + withinMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`not within ${withinMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function storedCount(d, key, n) {
  return eventually(async () => {
    const logs = await d.logs(key);
    return logs.length >= n && logs;
  }, `${n} logs stored`);
}
