// Explore: every filter of GET /v1/logs, full-text, a time range, the results newest first with paging by
// cursor, and each log's detail.
import { api } from '../api.js';
import { field, fill, h, LEVELS, levelBadge, notice, when } from '../dom.js';
import { controls, resolve } from './range.js';

const FILTERS = ['q', 'level', 'min_level', 'service', 'environment', 'fingerprint', 'trace_id', 'limit'];

function detail(log, filterBy) {
  const row = (name, value) => [h('dt', {}, name), h('dd', {}, value ?? '—')];
  const exception = log.exception
    ? h('section', { class: 'exception' },
      h('h3', {}, 'Exception'),
      h('p', {}, h('strong', {}, log.exception.type ?? ''), log.exception.value ? `: ${log.exception.value}` : ''),
      log.exception.stacktrace ? h('pre', { class: 'stack' }, log.exception.stacktrace) : null)
    : null;
  const attributes = Object.keys(log.attributes ?? {}).length
    ? h('section', {}, h('h3', {}, 'Attributes'), h('pre', {}, JSON.stringify(log.attributes, null, 2)))
    : null;
  return h('div', { class: 'detail', tabindex: '-1' },
    h('pre', { class: 'message' }, log.message),
    h('dl', {},
      row('Id', h('code', {}, log.id)),
      row('Time', when(log.timestamp)),
      row('Received', when(log.received_at)),
      row('Level', levelBadge(log.level)),
      row('Service', log.service),
      row('Environment', log.environment),
      row('Host', log.host),
      row('Trace id', log.trace_id
        ? [h('code', {}, log.trace_id), ' ', h('button', { type: 'button', class: 'link', onclick: () => filterBy('trace_id', log.trace_id) }, 'All logs of this trace')]
        : null),
      row('Span id', log.span_id ? h('code', {}, log.span_id) : null),
      row('Fingerprint', [h('code', {}, log.fingerprint), ' ',
        h('button', { type: 'button', class: 'link', onclick: () => filterBy('fingerprint', log.fingerprint) }, 'All logs of this error')])),
    exception, attributes);
}

/** A result row; its message is a button that opens the log's detail below it. */
function logRow(log, filterBy) {
  const tr = h('tr', { class: `log level-row-${log.level.toLowerCase()}` },
    h('td', { class: 'time' }, when(log.timestamp)),
    h('td', {}, levelBadge(log.level)),
    h('td', { class: 'service' }, log.service ?? ''),
    h('td', { class: 'msg' }, h('button', {
      type: 'button',
      class: 'row-button',
      'aria-expanded': 'false',
      onclick: (e) => {
        const open = tr.nextSibling?.classList?.contains('detail-row');
        if (open) { tr.nextSibling.remove(); e.currentTarget.setAttribute('aria-expanded', 'false'); return; }
        e.currentTarget.setAttribute('aria-expanded', 'true');
        const cell = h('td', { colspan: '4' }, detail(log, filterBy));
        tr.after(h('tr', { class: 'detail-row' }, cell));
        cell.firstChild.focus();
      },
    }, log.message)));
  return tr;
}

export function render(ctx) {
  const { params, project } = ctx;
  const range = controls(params);
  const input = (name, attrs = {}) => h('input', { name, value: params.get(name) ?? '', ...attrs });
  const q = input('q', { type: 'search', placeholder: 'words or "a phrase"', 'aria-label': 'Search' });
  const chosen = new Set((params.get('level') ?? '').split(',').filter(Boolean));
  const levels = LEVELS.map((l) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name: 'level', value: l, checked: chosen.has(l) }), ` ${l}`));
  const minLevel = h('select', { name: 'min_level' }, h('option', { value: '' }, 'any'),
    LEVELS.map((l) => h('option', { value: l, selected: params.get('min_level') === l }, l)));
  const limit = h('select', { name: 'limit' }, [50, 100, 200, 500, 1000].map((n) =>
    h('option', { value: String(n), selected: (params.get('limit') ?? '100') === String(n) }, String(n))));
  const more = ['service', 'environment', 'fingerprint', 'trace_id'].map((name) => [name, input(name, { autocomplete: 'off' })]);
  const liveButton = h('button', { type: 'button', class: 'live', 'aria-pressed': 'false', title: 'Show logs as they arrive' }, 'Live tail');
  const form = h('form', {
    class: 'filters card',
    role: 'search',
    onsubmit: (e) => {
      e.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of Object.entries(range.read())) if (v) next.set(k, v);
      if (q.value.trim()) next.set('q', q.value.trim());
      const picked = levels.map((l) => l.querySelector('input')).filter((c) => c.checked).map((c) => c.value);
      if (picked.length) next.set('level', picked.join(','));
      if (minLevel.value) next.set('min_level', minLevel.value);
      for (const [name, el] of more) if (el.value.trim()) next.set(name, el.value.trim());
      if (limit.value !== '100') next.set('limit', limit.value);
      ctx.go(`/p/${project.id}/explore`, next);
    },
  },
  h('div', { class: 'searchbar' }, q, range.element, h('button', { type: 'submit' }, 'Search'), liveButton),
  h('details', { open: FILTERS.slice(1).some((f) => params.get(f)) },
    h('summary', {}, 'Filters'),
    h('div', { class: 'grid' },
      h('fieldset', { class: 'levels' }, h('legend', {}, 'Levels'), levels),
      field('At least', minLevel),
      more.map(([name, el]) => field(name === 'trace_id' ? 'Trace id' : name[0].toUpperCase() + name.slice(1), el)),
      field('Per page', limit)),
    h('a', { href: `#/p/${project.id}/explore`, class: 'aside' }, 'Clear all filters')));

  const results = h('section', {
    class: 'card results', 'aria-busy': 'true', 'data-page': params.get('cursor') ?? 'first',
  }, h('p', { class: 'aside' }, 'Searching…'));
  const filterBy = (name, value) => {
    const next = new URLSearchParams(params);
    next.delete('cursor');
    next.set(name, value);
    ctx.go(`/p/${project.id}/explore`, next);
  };
  const { from, to } = resolve(params);
  const query = { project_id: project.id, from: from.toISOString(), to: to.toISOString(), cursor: params.get('cursor') };
  for (const f of FILTERS) query[f] = params.get(f);
  api('GET', '/v1/logs', { query }).then(({ logs, next_cursor: nextCursor }) => {
    if (!ctx.ticket() || source) return;
    results.removeAttribute('aria-busy');
    const body = h('tbody');
    for (const log of logs) body.append(logRow(log, filterBy));
    // Older pages keep this page's range fixed, so paging neither skips nor repeats a log.
    const older = new URLSearchParams(params);
    older.set('range', 'custom');
    older.set('from', from.toISOString());
    older.set('to', to.toISOString());
    older.set('cursor', nextCursor ?? '');
    fill(results,
      h('div', { class: 'results-head' },
        h('h2', {}, logs.length ? `${logs.length} log${logs.length === 1 ? '' : 's'}` : 'No logs'),
        h('span', { class: 'aside' }, `${when(from.toISOString())} — ${when(to.toISOString())}, newest first`)),
      logs.length
        ? h('div', { class: 'scroll' }, h('table', { class: 'logs' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Level'), h('th', {}, 'Service'), h('th', {}, 'Message'))),
          body))
        : h('p', {}, 'Nothing matches in this range. Widen the time range or remove a filter.'),
      h('div', { class: 'pager' },
        params.get('cursor') ? h('button', { type: 'button', onclick: () => window.history.back() }, '← Newer') : null,
        nextCursor ? h('button', { type: 'button', onclick: () => ctx.go(`/p/${project.id}/explore`, older) }, 'Older →') : null));
  }).catch((error) => {
    if (!ctx.ticket() || source) return;
    results.removeAttribute('aria-busy');
    fill(results, notice(error.describe ? error.describe() : String(error)));
  });
  // Live tail: the filters (not the range or page) as a Server-Sent Events stream; new logs go on top.
  let source = null;
  const stopLive = () => {
    source?.close();
    source = null;
    liveButton.setAttribute('aria-pressed', 'false');
    liveButton.textContent = 'Live tail';
  };
  ctx.onLeave(stopLive);
  liveButton.addEventListener('click', () => {
    if (source) { stopLive(); return; }
    const url = new URL('/v1/logs/tail', window.location.origin);
    url.searchParams.set('project_id', project.id);
    for (const f of FILTERS.filter((f) => f !== 'limit')) if (params.get(f)) url.searchParams.set(f, params.get(f));
    source = new EventSource(url);
    liveButton.setAttribute('aria-pressed', 'true');
    liveButton.textContent = 'Stop live tail';
    let arrived = 0;
    const status = h('p', { class: 'aside live-status', role: 'status' }, 'Live: waiting for new logs…');
    const body = h('tbody');
    fill(results,
      h('div', { class: 'results-head' }, h('h2', {}, 'Live tail'), status),
      h('div', { class: 'scroll' }, h('table', { class: 'logs live-logs' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Time'), h('th', {}, 'Level'), h('th', {}, 'Service'), h('th', {}, 'Message'))),
        body)));
    source.onmessage = (e) => {
      const log = JSON.parse(e.data);
      arrived += 1;
      status.textContent = `Live: ${arrived} new log${arrived === 1 ? '' : 's'}, newest on top`;
      body.prepend(logRow(log, filterBy));
      while (body.rows.length > 500) body.lastChild.remove();
    };
    source.addEventListener('dropped', (e) => {
      const { dropped } = JSON.parse(e.data);
      results.prepend(notice(dropped == null
        ? 'Some logs may be missing: the tail resumed from too far back.'
        : `${dropped} logs were skipped: they came faster than this page could show them.`, 'error'));
    });
    source.onerror = () => {
      status.textContent = 'Live: reconnecting…';
    };
  });
  return h('div', { class: 'stack' }, h('h1', { class: 'visually-hidden' }, 'Explore'), form, results);
}
