// The SDK against the real daemon, on both backends.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';

import pino from 'pino';
import winston from 'winston';

import { Client } from '../dist/index.js';
import { createPinoStream } from '../dist/pino.js';
import { LedgerTransport } from '../dist/winston.js';
import { Daemon, eventually, storedCount } from './daemon.mjs';

for (const kind of ['embedded', 'shared']) {
  describe(`${kind} backend`, () => {
    let d;
    before(async () => {
      d = await Daemon.start(kind);
    });
    after(async () => {
      await d.close();
    });

    test('batches by size and linger, gzips, and reads back with the query helper', async () => {
      const key = await d.tenant();
      const client = new Client({ url: d.url, apiKey: key, batchSize: 50, lingerMs: 100, service: 'api' });
      for (let i = 0; i < 120; i++) assert.equal(client.send(`batched ${i}`, { attributes: { i } }), true);
      assert.equal(await client.flush(30_000), true);
      assert.equal(client.stats.sent, 120);
      assert.equal(client.stats.batches, 3);
      const logs = await storedCount(d, key, 120);
      assert.equal(logs.length, 120);
      assert.deepEqual(new Set(logs.map((l) => l.service)), new Set(['api']));
      let found = 0;
      for await (const _ of client.query({ q: 'batched', pageSize: 7 })) found++;
      assert.equal(found, 120, 'the query helper pages through every match');
      await client.close();
    });

    test('errors are mapped to exceptions', async () => {
      const key = await d.tenant();
      const client = new Client({ url: d.url, apiKey: key, lingerMs: 10 });
      client.send('payment failed', { level: 'ERROR', error: new TypeError('card is undefined') });
      assert.equal(await client.close(30_000), true);
      const [log] = await storedCount(d, key, 1);
      assert.equal(log.exception.type, 'TypeError');
      assert.equal(log.exception.value, 'card is undefined');
      assert.match(log.exception.stacktrace, /sdk\.test\.mjs/);
    });

    test('pino and winston transports', async () => {
      const key = await d.tenant();
      const stream = createPinoStream({ url: d.url, apiKey: key, lingerMs: 10 });
      const logger = pino({ base: { hostname: 'pino-host' } }, stream);
      logger.info({ order: 7 }, 'pino info');
      logger.error(new RangeError('too far'), 'pino error');
      const transport = new LedgerTransport({ url: d.url, apiKey: key, lingerMs: 10 });
      const w = winston.createLogger({ format: winston.format.combine(winston.format.errors({ stack: true }), winston.format.json()), transports: [transport] });
      w.warn('winston warn', { user: 'ada' });
      w.error(new Error('winston boom'));
      assert.equal(await stream.client.flush(30_000), true);
      assert.equal(await transport.client.flush(30_000), true);
      const logs = Object.fromEntries((await storedCount(d, key, 4)).map((l) => [l.message, l]));
      assert.equal(logs['pino info'].level, 'INFO');
      assert.equal(logs['pino info'].host, 'pino-host');
      assert.equal(logs['pino info'].attributes.order, 7);
      assert.equal(logs['pino error'].level, 'ERROR');
      assert.equal(logs['pino error'].exception.type, 'RangeError');
      assert.equal(logs['winston warn'].level, 'WARNING');
      assert.equal(logs['winston warn'].attributes.user, 'ada');
      assert.equal(logs['winston boom'].exception.type, 'Error');
      assert.match(logs['winston boom'].exception.stacktrace, /winston boom/);
    });

    test('429 with Retry-After is honoured', async () => {
      const key = await d.tenant({ rate_limit_per_minute: 2 });
      const client = new Client({ url: d.url, apiKey: key, batchSize: 1, lingerMs: 0 });
      for (let i = 0; i < 3; i++) client.send(`limited ${i}`);
      const started = Date.now();
      assert.equal(await client.flush(120_000), true, JSON.stringify(client.stats));
      assert.ok(Date.now() - started >= 1000, 'the third waited for the window');
      assert.equal(client.stats.sent, 3);
      assert.ok(client.stats.retries >= 1);
      assert.equal((await storedCount(d, key, 3)).length, 3);
    });

    test('a daemon restart loses and doubles nothing', async () => {
      const key = await d.tenant();
      const client = new Client({ url: d.url, apiKey: key, batchSize: 20, lingerMs: 5, maxRetryDelayMs: 500 });
      const total = 2000;
      const sending = (async () => {
        for (let i = 0; i < total; i++) {
          client.send(`restart ${i}`);
          if (i % 20 === 0) await new Promise((r) => setTimeout(r, 5));
        }
      })();
      await new Promise((r) => setTimeout(r, 300));
      await d.restart();
      await sending;
      assert.equal(await client.flush(60_000), true, JSON.stringify(client.stats));
      assert.equal(client.stats.sent, total);
      assert.equal(client.stats.failed, 0);
      const logs = await storedCount(d, key, total);
      assert.equal(logs.length, total, 'none doubled');
      assert.equal(new Set(logs.map((l) => l.message)).size, total);
    });

    test('flush at process exit', async () => {
      const key = await d.tenant();
      const child = `
        import { Client } from '${new URL('../dist/index.js', import.meta.url).href}';
        const client = new Client({ url: '${d.url}', apiKey: '${key}', lingerMs: 60000 });
        for (let i = 0; i < 250; i++) client.send('at exit ' + i);
      `;
      const run = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(run.status, 0, run.stderr);
      assert.equal((await storedCount(d, key, 250)).length, 250);
    });
  });
}

test('a full buffer drops the newest and counts them; send never throws', async () => {
  const client = new Client({ url: 'http://127.0.0.1:9', apiKey: 'ledger_x', maxBuffer: 10, batchSize: 1, lingerMs: 0 });
  let accepted = 0;
  for (let i = 0; i < 100; i++) if (client.send(`log ${i}`)) accepted++;
  const circular = { message: 'circular' };
  circular.self = circular;
  assert.doesNotThrow(() => client.sendLog(circular));
  assert.ok(client.stats.dropped >= 89, JSON.stringify(client.stats));
  assert.equal(client.stats.dropped, 101 - accepted);
  assert.equal(await client.close(200), false);
  assert.ok(client.stats.failed >= 10);
});
