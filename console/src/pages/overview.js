// Overview: the error rate and the volume by level over a chosen range.
import { api } from '../api.js';
import { LEVEL_COLORS, timeChart } from '../charts.js';
import { fill, h, LEVELS, notice, number } from '../dom.js';
import { resolve, toolbar } from './range.js';

const PRESETS = ['1h', '6h', '24h', '7d', '30d'];

/** The volume interval for a range: about 12 to 300 bars. */
function interval(seconds) {
  if (seconds <= 86400) return '5m';
  if (seconds <= 7 * 86400) return '1h';
  return '1d';
}

export function render(ctx) {
  const { params, project } = ctx;
  const form = toolbar(ctx, { page: 'overview', title: 'Overview', presets: PRESETS });
  const summary = h('div', { class: 'tiles' });
  const charts = h('section', { class: 'card charts', 'aria-busy': 'true' }, h('p', { class: 'aside' }, 'Loading…'));
  const { from, to } = resolve(params, '24h');
  const span = (to - from) / 1000;
  const query = { project_id: project.id, from: from.toISOString(), to: to.toISOString() };
  // The error rate comes in 5-minute buckets: past a week it would be too many, so it follows the volume.
  const rate = span <= 7 * 86400 ? api('GET', '/v1/metrics/error-rate', { query }) : Promise.resolve(null);
  Promise.all([rate, api('GET', '/v1/metrics/volume', { query: { ...query, interval: interval(span) } })])
    .then(([errorRate, volume]) => {
      if (!ctx.ticket()) return;
      charts.removeAttribute('aria-busy');
      const xs = volume.buckets.map((b) => new Date(b.start).getTime() / 1000);
      const totals = LEVELS.map((l) => volume.buckets.reduce((n, b) => n + (b.counts[l] ?? 0), 0));
      const all = totals.reduce((a, b) => a + b, 0);
      const errors = totals[3] + totals[4];
      fill(summary,
        h('div', { class: 'tile' }, h('span', {}, 'Logs'), h('strong', {}, number(all))),
        h('div', { class: 'tile' }, h('span', {}, 'Errors'), h('strong', {}, number(errors))),
        h('div', { class: 'tile' }, h('span', {}, 'Error rate'), h('strong', {}, all ? `${((100 * errors) / all).toFixed(2)} %` : '—')));
      const rateChart = errorRate
        ? timeChart({
          title: 'Error rate (ERROR and CRITICAL), 5-minute buckets',
          xs: errorRate.buckets.map((b) => new Date(b.start).getTime() / 1000),
          series: [{ label: 'Error rate', values: errorRate.buckets.map((b) => b.error_rate * 100), color: LEVEL_COLORS.ERROR, fill: '#d93a3222' }],
          y: (v) => (v == null ? '—' : `${Number(v).toFixed(1)} %`),
        })
        : timeChart({
          title: `Error rate (ERROR and CRITICAL), ${volume.interval} buckets`,
          xs,
          series: [{
            label: 'Error rate',
            values: volume.buckets.map((b) => {
              const n = LEVELS.reduce((s, l) => s + (b.counts[l] ?? 0), 0);
              return n ? (100 * ((b.counts.ERROR ?? 0) + (b.counts.CRITICAL ?? 0))) / n : 0;
            }),
            color: LEVEL_COLORS.ERROR,
            fill: '#d93a3222',
          }],
          y: (v) => (v == null ? '—' : `${Number(v).toFixed(1)} %`),
        });
      fill(charts,
        rateChart,
        timeChart({
          title: `Logs by level, ${volume.interval} buckets`,
          summary: LEVELS.map((l, i) => `${l} ${totals[i]}`).join(', '),
          xs,
          series: LEVELS.map((l) => ({ label: l, values: volume.buckets.map((b) => b.counts[l] ?? 0), color: LEVEL_COLORS[l] })),
          y: (v) => (v == null ? '—' : number(Math.round(v))),
          bars: true,
          stacked: true,
        }));
    })
    .catch((error) => {
      if (!ctx.ticket()) return;
      fill(charts, notice(error.describe ? error.describe() : String(error)));
    });
  return h('div', { class: 'stack' }, form, summary, charts);
}
