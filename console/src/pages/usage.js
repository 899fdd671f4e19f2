// Usage: each day's outcomes (accepted, refused by rate limit, quota, backpressure, invalid) and bytes, and
// today's use of the daily quota.
import { api } from '../api.js';
import { bytes, fill, h, notice, number } from '../dom.js';

export function render(ctx) {
  const { project } = ctx;
  const body = h('section', { class: 'card', 'aria-busy': 'true' }, h('p', { class: 'aside' }, 'Loading…'));
  api('GET', '/v1/usage', { query: { project_id: project.id } }).then(({ days }) => {
    if (!ctx.ticket()) return;
    body.removeAttribute('aria-busy');
    const today = days[days.length - 1];
    const quota = project.settings.daily_quota;
    const used = today?.accepted ?? 0;
    const share = quota ? Math.min(100, (100 * used) / quota) : 0;
    const rows = [...days].reverse().map((d) => h('tr', {},
      h('td', {}, d.day),
      h('td', { class: 'num' }, number(d.accepted)),
      h('td', { class: 'num' }, number(d.rejected_rate_limited)),
      h('td', { class: 'num' }, number(d.rejected_quota)),
      h('td', { class: 'num' }, number(d.rejected_backpressure)),
      h('td', { class: 'num' }, number(d.rejected_invalid ?? 0)),
      h('td', { class: 'num' }, bytes(d.bytes))));
    fill(body,
      h('div', { class: 'quota' },
        h('h2', {}, 'Today\'s quota'),
        h('meter', { min: 0, max: quota, value: used, high: quota * 0.8, optimum: 0, 'aria-label': 'Daily quota used' }),
        h('p', {}, `${number(used)} of ${number(quota)} logs (${share.toFixed(1)} %), resets at midnight UTC. `,
          h('a', { href: `#/projects/${project.id}` }, 'Change the quota'))),
      h('h2', {}, 'The last 30 days (UTC)'),
      h('div', { class: 'scroll' }, h('table', { class: 'usage' },
        h('thead', {}, h('tr', {}, ['Day', 'Accepted', 'Rate limited', 'Over quota', 'Backpressure', 'Invalid', 'Bytes'].map((t) => h('th', {}, t)))),
        h('tbody', {}, rows))));
  }).catch((error) => {
    if (!ctx.ticket()) return;
    fill(body, notice(error.describe ? error.describe() : String(error)));
  });
  return h('div', { class: 'stack' }, h('h1', {}, 'Usage'), body);
}
