// Errors: the most frequent errors of a range, each with its count, first and last time seen, a sparkline,
// and whether it is new or came back after a quiet day (regressed).
import { api } from '../api.js';
import { sparkline } from '../charts.js';
import { ago, fill, h, levelBadge, notice, number, when } from '../dom.js';
import { resolve, toolbar } from './range.js';

const PRESETS = ['1h', '24h', '7d', '30d'];

export function render(ctx) {
  const { params, project } = ctx;
  const form = toolbar(ctx, { page: 'errors', title: 'Errors', presets: PRESETS });
  const results = h('section', { class: 'card', 'aria-busy': 'true' }, h('p', { class: 'aside' }, 'Loading…'));
  const { range: chosen, from, to } = resolve(params, '24h');
  api('GET', '/v1/metrics/top-errors', {
    query: { project_id: project.id, from: from.toISOString(), to: to.toISOString(), limit: 50 },
  }).then(({ errors, bucket_seconds: bucket }) => {
    if (!ctx.ticket()) return;
    results.removeAttribute('aria-busy');
    if (!errors.length) {
      fill(results, h('p', {}, 'No ERROR or CRITICAL log in this range.'));
      return;
    }
    const rows = errors.map((e) => {
      const explore = new URLSearchParams({ range: chosen, fingerprint: e.fingerprint });
      const title = e.exception_type ? `${e.exception_type}: ${e.sample_message}` : e.sample_message;
      const status = e.status === 'new' ? h('span', { class: 'tag tag-new' }, 'New')
        : e.status === 'regressed' ? h('span', { class: 'tag tag-regressed' }, 'Regressed') : null;
      return h('tr', {},
        h('td', { class: 'error-title' }, status, ' ',
          h('a', { href: `#/p/${project.id}/explore?${explore}`, title: 'All logs of this error' }, title),
          h('div', { class: 'aside' }, levelBadge(e.level), ' ', e.service ?? '', ' ', h('code', {}, e.fingerprint))),
        h('td', { class: 'num' }, number(e.count)),
        h('td', {}, h('span', { title: when(e.first_seen) }, ago(e.first_seen))),
        h('td', {}, h('span', { title: when(e.last_seen) }, ago(e.last_seen))),
        h('td', {}, sparkline(e.series, { label: `${number(e.count)} in ${e.series.length} buckets of ${bucket / 3600} h` })));
    });
    fill(results, h('div', { class: 'scroll' }, h('table', { class: 'errors' },
      h('thead', {}, h('tr', {}, ['Error', 'Count', 'First seen', 'Last seen', 'Trend'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows))));
  }).catch((error) => {
    if (!ctx.ticket()) return;
    fill(results, notice(error.describe ? error.describe() : String(error)));
  });
  return h('div', { class: 'stack' }, form, results);
}
