// Time ranges shared by the pages: presets relative to now, or absolute (custom) from/to.
import { h } from '../dom.js';

export const PRESETS = [
  ['15m', 'Last 15 minutes', 15 * 60],
  ['1h', 'Last hour', 3600],
  ['6h', 'Last 6 hours', 6 * 3600],
  ['24h', 'Last 24 hours', 86400],
  ['7d', 'Last 7 days', 7 * 86400],
  ['30d', 'Last 30 days', 30 * 86400],
];

/** {from, to} as Date for the params' range (a preset, or `custom` with from/to). */
export function resolve(params, fallback = '24h') {
  const range = params.get('range') || fallback;
  if (range === 'custom') {
    const from = new Date(params.get('from'));
    const to = params.get('to') ? new Date(params.get('to')) : new Date();
    if (!Number.isNaN(from.getTime()) && !Number.isNaN(to.getTime())) return { range, from, to };
  }
  const preset = PRESETS.find(([id]) => id === range) ?? PRESETS.find(([id]) => id === fallback);
  const to = new Date();
  return { range: preset[0], from: new Date(to.getTime() - preset[2] * 1000), to };
}

/** A datetime-local input's value for a Date, in the browser's zone. */
export function localInput(date) {
  const p = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}T${p(date.getHours())}:${p(date.getMinutes())}`;
}

/** The range controls: a preset select, and from/to inputs shown for a custom range. */
export function controls(params, { presets = PRESETS.map(([id]) => id), fallback = '24h', custom = true } = {}) {
  const { range, from, to } = resolve(params, fallback);
  const select = h('select', { name: 'range', 'aria-label': 'Time range' },
    PRESETS.filter(([id]) => presets.includes(id)).map(([id, text]) => h('option', { value: id, selected: id === range }, text)),
    custom ? h('option', { value: 'custom', selected: range === 'custom' }, 'Custom range…') : null);
  const fromInput = h('input', { type: 'datetime-local', name: 'from', value: localInput(from), 'aria-label': 'From' });
  const toInput = h('input', { type: 'datetime-local', name: 'to', value: localInput(to), 'aria-label': 'To' });
  const absolute = h('span', { class: 'absolute', hidden: range !== 'custom' }, fromInput, ' to ', toInput);
  select.addEventListener('change', () => { absolute.hidden = select.value !== 'custom'; });
  const read = () => (select.value === 'custom'
    ? { range: 'custom', from: new Date(fromInput.value).toISOString(), to: new Date(toInput.value).toISOString() }
    : { range: select.value, from: '', to: '' });
  return { element: h('span', { class: 'range' }, select, custom ? absolute : null), read };
}

/** A page's title bar with a preset range: choosing one shows the page for it. */
export function toolbar(ctx, { page, title, presets }) {
  const range = controls(ctx.params, { presets, custom: false });
  const form = h('form', {
    class: 'card toolbar',
    onsubmit: (e) => {
      e.preventDefault();
      ctx.go(`/p/${ctx.project.id}/${page}`, new URLSearchParams({ range: range.read().range }));
    },
  }, h('h1', {}, title), range.element, h('button', { type: 'submit' }, 'Show'));
  form.querySelector('select').addEventListener('change', () => form.requestSubmit());
  return form;
}
