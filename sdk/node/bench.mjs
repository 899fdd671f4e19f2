// How much the SDK costs the application: pino calls per second through the Ledger stream against pino
// writing nowhere, the time each call adds, and what reaches the daemon. Starts the embedded daemon (the
// binary at LEDGER_BINARY, default target/release/ledger, else target/debug/ledger).
//
//   npm run build && node bench.mjs [calls]
import { existsSync } from 'node:fs';
import { Writable } from 'node:stream';

import pino from 'pino';

const release = new URL('../../target/release/ledger', import.meta.url).pathname;
if (!process.env.LEDGER_BINARY && existsSync(release)) process.env.LEDGER_BINARY = release;
const { Daemon } = await import('./test/daemon.mjs');
const { createPinoStream } = await import('./dist/pino.js');
const { Client } = await import('./dist/index.js');

const calls = Number(process.argv[2] ?? 200_000);

function run(logger) {
  const samples = [];
  const started = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) {
    if (i % 100 === 0) {
      const t = process.hrtime.bigint();
      logger.info({ order_id: i, amount: 49.95 }, `order ${i} placed by user ${i * 7}`);
      samples.push(Number(process.hrtime.bigint() - t));
    } else {
      logger.info({ order_id: i, amount: 49.95 }, `order ${i} placed by user ${i * 7}`);
    }
  }
  return [Number(process.hrtime.bigint() - started) / 1e9, samples.sort((a, b) => a - b)];
}

const d = await Daemon.start('embedded');
try {
  const key = await d.tenant({ rate_limit_per_minute: 1_000_000, rate_limit_per_hour: 10_000_000 });
  const nowhere = new Writable({ write(_chunk, _encoding, done) { done(); } });
  const [base, baseSamples] = run(pino(nowhere));
  const client = new Client({ url: d.url, apiKey: key, batchSize: 1000, maxBuffer: calls });
  const [spent, samples] = run(pino(createPinoStream({ client })));
  const started = Date.now();
  await new Promise((r) => setImmediate(r));
  if (!(await client.flush(300_000))) throw new Error(JSON.stringify(client.stats));
  const drained = (Date.now() - started) / 1000;
  const p = (s, q) => (s[Math.floor(s.length * q)] / 1000).toFixed(1);
  console.log(`pino calls through the Ledger stream: ${Math.round(calls / spent).toLocaleString()}/s (pino to nowhere: ${Math.round(calls / base).toLocaleString()}/s)`);
  console.log(`added per call: ${(((spent - base) / calls) * 1e6).toFixed(1)} µs mean; p50 ${p(samples, 0.5)} µs, p99 ${p(samples, 0.99)} µs (pino to nowhere p50 ${p(baseSamples, 0.5)} µs)`);
  console.log(`overhead against pino writing nowhere: ${(spent / base).toFixed(2)}×`);
  const s = client.stats;
  console.log(`delivered ${s.sent.toLocaleString()} logs in ${s.batches} batches, dropped ${s.dropped}, failed ${s.failed}; the flush after the last call took ${drained.toFixed(2)} s`);
  await client.close();
} finally {
  await d.close();
}
