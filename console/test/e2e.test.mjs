// The console end to end in a real browser (Debian's chromium, driven by playwright-core): sign up, a
// project, a key, logs sent with the API, found in Explore with a filter and a word, the error in Errors and
// on the Overview chart, a log holding HTML shown as text, the key revoked and refused, sign out and back in
// with the keyboard. Screenshots of every page, desktop and phone width, go to $LEDGER_SCREENSHOTS.
//
// tests/console.rs starts the daemon (each backend) and runs this with LEDGER_URL; by hand:
//   LEDGER_URL=http://127.0.0.1:8000 npm test
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

const URL = process.env.LEDGER_URL;
const SHOTS = process.env.LEDGER_SCREENSHOTS ?? 'screenshots';
const CHROMIUM = process.env.LEDGER_CHROMIUM ?? '/usr/bin/chromium';
const XSS = '<img src=x onerror=alert(1)>';

assert.ok(URL, 'set LEDGER_URL to a running daemon');
mkdirSync(SHOTS, { recursive: true });

let browser;
let page;
const dialogs = [];
const pageErrors = [];

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  // A confirm() is the console's own (revoking a key): accepted. Any alert() would be an injected script.
  page.on('dialog', (dialog) => {
    dialogs.push({ type: dialog.type(), message: dialog.message() });
    dialog.accept();
  });
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(message.text());
  });
});

after(async () => {
  await browser?.close();
});

/** A full-page screenshot at desktop and at phone width. */
async function shoot(name) {
  await page.screenshot({ path: `${SHOTS}/${name}-desktop.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(150); // charts follow their container's width on the next frame
  await page.screenshot({ path: `${SHOTS}/${name}-phone.png`, fullPage: true });
  // Readable at phone width: nothing makes the page scroll sideways (wide tables scroll inside their card).
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `${name} is ${width} px wide at a 390 px viewport`);
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.waitForTimeout(150);
}

async function api(method, path, key, body) {
  const response = await fetch(`${URL}${path}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Polls `check` (an async function returning a truthy value when done) for up to `seconds`. */
async function eventually(what, check, seconds = 20) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

const email = `ada-${Date.now()}@example.com`;
const password = 'correct horse battery';
let projectId;
let key;

test('sign up, create a project and a key', async () => {
  const started = Date.now();
  await page.goto(`${URL}/`);
  await page.waitForURL(/#\/signin$/);
  const navigation = await page.evaluate(() => {
    const [n] = performance.getEntriesByType('navigation');
    return { domContentLoaded: Math.round(n.domContentLoadedEventEnd), load: Math.round(n.loadEventEnd) };
  });
  console.log(`first load: DOMContentLoaded ${navigation.domContentLoaded} ms, load ${navigation.load} ms, sign-in form shown after ${Date.now() - started} ms`);
  await shoot('signin');

  await page.getByRole('link', { name: 'Create an account' }).click();
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Password').fill(password);
  await shoot('signup');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(/#\/projects$/);

  // The session is in an HttpOnly, SameSite=Strict cookie that the page's scripts cannot read.
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'ledger_session');
  assert.ok(session, 'a session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  assert.ok(!(await page.evaluate(() => document.cookie)).includes('ledger_session'));

  // Reads work with the cookie; a change without the CSRF token does not.
  const list = await page.request.get(`${URL}/v1/projects`);
  assert.equal(list.status(), 200);
  const forged = await page.request.post(`${URL}/v1/projects`, { data: { name: 'forged' } });
  assert.equal(forged.status(), 403);
  assert.equal((await forged.json()).error.code, 'csrf_token_invalid');

  await page.getByLabel('New project').fill('checkout');
  await page.getByRole('button', { name: 'Create project' }).click();
  await page.waitForURL(/#\/projects\/[0-9a-f-]{36}$/);
  projectId = page.url().split('/').pop();

  await page.getByLabel('Key name').fill('e2e');
  await page.getByLabel('query', { exact: true }).check();
  await page.getByRole('button', { name: 'Create key' }).click();
  const shown = page.getByLabel('The new API key');
  await shown.waitFor();
  key = await shown.inputValue();
  assert.match(key, /^ledger_[0-9A-Za-z]{32}$/);
  await page.getByRole('row', { name: /e2e/ }).getByRole('button', { name: /Revoke/ }).waitFor();
  await shoot('project');

  await page.locator('header').getByRole('link', { name: 'Projects', exact: true }).click();
  await page.getByRole('cell', { name: 'checkout' }).waitFor();
  await shoot('projects');
});

test('logs sent with the API are found in Explore with a filter and a word', async () => {
  const now = Date.now() / 1000;
  const logs = [
    { message: 'user 42 signed in', level: 'INFO', service: 'auth', timestamp: now - 50 },
    { message: 'cache miss for key user:42', level: 'DEBUG', service: 'auth', timestamp: now - 40 },
    { message: 'slow query took 1200 ms', level: 'WARNING', service: 'db', timestamp: now - 30 },
    {
      message: 'payment declined for order 1001',
      level: 'ERROR',
      service: 'checkout',
      environment: 'production',
      trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
      attributes: { order_id: 1001, 'http.route': '/pay' },
      exception: { type: 'CardError', value: 'card declined', stacktrace: 'Traceback (most recent call last):\n  File "pay.py", line 12, in charge\nCardError: card declined' },
      timestamp: now - 20,
    },
    {
      message: 'payment declined for order 1002',
      level: 'ERROR',
      service: 'checkout',
      exception: { type: 'CardError', value: 'card declined', stacktrace: 'Traceback (most recent call last):\n  File "pay.py", line 12, in charge\nCardError: card declined' },
      timestamp: now - 10,
    },
    { message: 'payment declined for order 1003 (retry)', level: 'INFO', service: 'checkout', timestamp: now - 5 },
    { message: XSS, level: 'WARNING', service: 'web', timestamp: now - 1 },
  ];
  const sent = await api('POST', '/v1/logs', key, { logs });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  await eventually('the logs to be stored', async () => {
    const r = await api('GET', '/v1/logs?limit=100', key);
    return r.body.logs.length === logs.length;
  });

  await page.getByRole('link', { name: 'Explore' }).click();
  await page.waitForURL(/\/explore/);
  await page.getByRole('searchbox', { name: 'Search' }).fill('declined');
  await page.locator('summary', { hasText: 'Filters' }).click();
  await page.getByRole('checkbox', { name: 'ERROR' }).check();
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByRole('heading', { name: '2 logs' }).waitFor();
  const rows = page.locator('table.logs tbody tr.log');
  assert.equal(await rows.count(), 2);
  assert.deepEqual(await rows.locator('td.msg').allTextContents(), ['payment declined for order 1002', 'payment declined for order 1001']);
  assert.ok(page.url().includes('q=declined') && page.url().includes('level=ERROR'), page.url());

  // A log's detail: exception with its stacktrace, attributes, trace id; its fingerprint leads to its error.
  await page.getByRole('button', { name: 'payment declined for order 1001' }).click();
  const detail = page.locator('.detail');
  await detail.getByText('CardError', { exact: true }).waitFor();
  assert.match(await detail.locator('pre.stack').textContent(), /File "pay.py", line 12/);
  assert.match(await detail.textContent(), /"order_id": 1001/);
  assert.match(await detail.textContent(), /4bf92f3577b34da6a3ce929d0e0e4736/);
  await shoot('explore');
  await detail.getByRole('button', { name: 'All logs of this error' }).click();
  await page.waitForURL(/fingerprint=[0-9a-f]{16}/);
  await page.getByRole('heading', { name: '2 logs' }).waitFor();

  // Paging by cursor: two logs a page, newest first, no log skipped or repeated; back to the newer page.
  await page.goto(`${URL}/#/p/${projectId}/explore?limit=2`);
  const seen = [];
  let cursor = 'first';
  for (;;) {
    await page.locator(`section.results[data-page="${cursor}"]:not([aria-busy])`).waitFor();
    seen.push(...await page.locator('table.logs td.msg').allTextContents());
    const older = page.getByRole('button', { name: 'Older →' });
    if (!(await older.count())) break;
    await older.click();
    await page.waitForURL((url) => new URLSearchParams(url.hash.split('?')[1]).get('cursor') !== (cursor === 'first' ? null : cursor));
    cursor = new URLSearchParams(new globalThis.URL(page.url()).hash.split('?')[1]).get('cursor');
  }
  assert.equal(seen.length, logs.length, seen.join(' | '));
  assert.equal(new Set(seen).size, logs.length);
  assert.deepEqual(seen, logs.map((l) => l.message).reverse());
  await page.getByRole('button', { name: '← Newer' }).click();
  await page.getByRole('button', { name: 'Older →' }).waitFor();
});

test('a log holding HTML is shown as text and runs nothing', async () => {
  await page.goto(`${URL}/#/p/${projectId}/explore?service=web`);
  await page.getByRole('heading', { name: '1 log' }).waitFor();
  const cell = page.locator('table.logs td.msg').first();
  assert.equal(await cell.textContent(), XSS);
  assert.equal(await page.locator('table.logs img').count(), 0, 'the message was parsed as HTML');
  await page.getByRole('button', { name: XSS }).click();
  assert.equal(await page.locator('.detail pre.message').textContent(), XSS);
  assert.equal(await page.locator('.detail img').count(), 0);
  await page.waitForTimeout(300);
  assert.deepEqual(dialogs.filter((d) => d.type === 'alert'), [], 'a script from a log ran');
});

test('the error shows in Errors and on the Overview chart', async () => {
  await page.goto(`${URL}/#/p/${projectId}/errors`);
  // Metrics come from the analytics cache, fresh within seconds of the 202.
  const row = page.getByRole('row', { name: /CardError: payment declined/ });
  await eventually('the error in Errors', async () => {
    if (await row.count()) return true;
    await page.reload();
    await page.locator('main section.card').last().waitFor();
    await page.waitForTimeout(300);
    return false;
  });
  assert.match(await row.textContent(), /New/);
  assert.equal((await row.locator('td.num').textContent()).trim(), '2');
  assert.equal(await row.locator('.sparkline canvas').count(), 1);
  await shoot('errors');

  await row.getByRole('link').click();
  await page.waitForURL(/explore\?.*fingerprint=/);
  await page.getByRole('heading', { name: '2 logs' }).waitFor();

  await page.getByRole('link', { name: 'Overview' }).click();
  const volume = page.getByRole('img', { name: /Logs by level/ });
  await volume.waitFor();
  assert.equal(await page.locator('figure.chart canvas').count(), 2);
  // The chart's text alternative carries its totals: what it draws, in words.
  assert.match(await volume.getAttribute('aria-label'), /ERROR 2\b/);
  assert.match(await volume.getAttribute('aria-label'), /WARNING 2\b/);
  assert.match(await page.locator('.tiles').textContent(), /Errors2/);
  await shoot('overview');

  await page.getByRole('link', { name: 'Usage' }).click();
  await page.getByRole('heading', { name: 'Today\'s quota' }).waitFor();
  const today = new Date().toISOString().slice(0, 10);
  const usage = page.getByRole('row', { name: new RegExp(today) });
  await eventually('today\'s usage', async () => {
    if ((await usage.count()) && (await usage.locator('td.num').first().textContent()) === '7') return true;
    await page.reload();
    await page.getByRole('heading', { name: 'Today\'s quota' }).waitFor();
    return false;
  });
  await shoot('usage');
});

test('the live tail shows a log sent after it started', async () => {
  await page.goto(`${URL}/#/p/${projectId}/explore?service=live`);
  await page.locator('section.results:not([aria-busy])').waitFor();
  await page.getByRole('button', { name: 'Live tail' }).click();
  await page.getByRole('status').filter({ hasText: 'waiting for new logs' }).waitFor();
  // The stream is open once the daemon has the subscriber; send until the page shows it.
  await eventually('the live log on the page', async () => {
    const sent = await api('POST', '/v1/logs', key, { message: 'live one <b>bold</b>', service: 'live', level: 'ERROR' });
    assert.equal(sent.status, 202);
    return page.locator('table.live-logs td.msg', { hasText: 'live one <b>bold</b>' }).first().isVisible();
  });
  assert.equal(await page.locator('table.live-logs b').count(), 0);
  await shoot('explore-live');
  await page.getByRole('button', { name: 'Stop live tail' }).click();
  await page.getByRole('button', { name: 'Live tail', pressed: false }).waitFor();
});

test('an alert is made in the console, tested, and fires for a new error', async () => {
  // A local receiver for the webhook (the suite's daemon allows private targets).
  const received = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      received.push({ signature: req.headers['x-ledger-signature'], raw: body, body: JSON.parse(body) });
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await page.goto(`${URL}/#/p/${projectId}/alerts`);
    await page.getByRole('heading', { name: 'New alert' }).waitFor();
    await page.getByLabel('Name', { exact: true }).fill('New errors');
    await page.getByLabel('When').selectOption('new_error');
    await page.getByLabel('URL').fill(`http://127.0.0.1:${server.address().port}/hook`);
    await page.getByRole('button', { name: 'Create alert' }).click();
    const secret = await page.getByLabel('The signing secret').inputValue();
    await page.getByRole('row', { name: /New errors/ }).waitFor();
    await page.getByRole('button', { name: 'Send a test notification for New errors' }).click();
    await eventually('the test notification', async () => received.length >= 1);
    const test = received[0];
    assert.equal(test.body.status, 'test');
    const [t, v1] = test.signature.replace('t=', '').split(',v1=');
    assert.equal(v1, createHmac('sha256', secret).update(`${t}.${test.raw}`).digest('hex'), 'the signature verifies');
    // A never-seen error fires the rule.
    const sent = await api('POST', '/v1/logs', key, { message: 'brand new failure', level: 'CRITICAL', exception: { type: 'NewError' } });
    assert.equal(sent.status, 202);
    const firing = await eventually('the new error notified', async () => received.find((r) => r.body.status === 'firing'));
    assert.match(firing.body.summary, /NewError: brand new failure/);
    assert.match(firing.body.link, new RegExp(`/#/p/${projectId}/explore\\?fingerprint=`));
    await page.getByRole('button', { name: 'Deliveries of New errors' }).click();
    await page.locator('table.deliveries tbody tr').first().waitFor();
    assert.ok((await page.locator('table.deliveries').textContent()).includes('test'));
    await shoot('alerts');
  } finally {
    server.close();
  }
});

test('a revoked key is refused', async () => {
  await page.goto(`${URL}/#/projects/${projectId}`);
  await page.getByRole('button', { name: 'Revoke key e2e' }).click();
  await page.getByRole('row', { name: /revoked/ }).waitFor();
  assert.deepEqual(dialogs.map((d) => d.type), ['confirm']);
  const refused = await api('POST', '/v1/logs', key, { message: 'after revocation' });
  assert.equal(refused.status, 401);
  assert.equal(refused.body.error.code, 'unauthorized');
});

test('a project is deleted only once its name is typed', async () => {
  await page.goto(`${URL}/#/projects`);
  await page.getByLabel('New project').fill('scratch');
  await page.getByRole('button', { name: 'Create project' }).click();
  await page.waitForURL(/#\/projects\/[0-9a-f-]{36}$/);
  const scratch = page.url().split('/').pop();
  const remove = page.getByRole('button', { name: 'Delete project' });
  assert.equal(await remove.isDisabled(), true);
  await page.getByLabel(/Project name/).fill('scrat');
  assert.equal(await remove.isDisabled(), true);
  await page.getByLabel(/Project name/).fill('scratch');
  await remove.click();
  await page.waitForURL(/#\/projects$/);
  await page.getByRole('cell', { name: 'checkout' }).waitFor();
  assert.equal(await page.getByRole('cell', { name: 'scratch' }).count(), 0);
  assert.equal((await page.request.get(`${URL}/v1/projects/${scratch}`)).status(), 404);
});

test('sign out, then sign in with the keyboard only', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/#\/signin$/);
  assert.equal((await page.request.get(`${URL}/console/session`)).status(), 401);
  assert.equal((await page.request.get(`${URL}/v1/projects`)).status(), 401);

  // A wrong password is the API's one answer for both, shown beside the form.
  await page.getByLabel('E-mail').fill(email);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: /credential|password/i }).waitFor();
  await shoot('signin-error');

  await page.getByLabel('E-mail').fill('');
  await page.getByLabel('Password').fill('');
  await page.getByLabel('E-mail').focus();
  await page.keyboard.type(email);
  await page.keyboard.press('Tab');
  await page.keyboard.type(password);
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/explore/);
  await page.getByRole('heading', { name: /logs?$/ }).waitFor();
  assert.deepEqual(pageErrors.filter((e) => !/status of 40[13]/.test(e)), [], 'no script error nor CSP violation');
});
