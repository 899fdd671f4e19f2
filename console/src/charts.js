// Charts, drawn by uPlot (canvas): time series that follow their container's width, and sparklines.
import uPlot from 'uplot';
import { h } from './dom.js';

export const LEVEL_COLORS = {
  DEBUG: '#8a94a6',
  INFO: '#2f6fde',
  WARNING: '#c98a00',
  ERROR: '#d93a32',
  CRITICAL: '#8e1b6f',
};

/**
 * A time-series chart. `xs`: Unix seconds; `series`: [{label, values, color, fill?}]; `bars`: draw bars;
 * `stacked`: series are drawn on top of each other (values are summed for drawing, shown as given);
 * `summary`: the chart in words, for its text alternative.
 */
export function timeChart({ title, summary, xs, series, y = (v) => v, bars = false, stacked = false, height = 220 }) {
  // The text alternative says what the chart draws: its title and, where given, its totals in words.
  const box = h('figure', { class: 'chart', role: 'img', 'aria-label': summary ? `${title}: ${summary}` : title });
  const caption = h('figcaption', {}, title);
  box.append(caption);
  let drawn = series.map((s) => s.values);
  if (stacked) {
    const sums = xs.map(() => 0);
    drawn = series.map((s) => s.values.map((v, i) => { sums[i] += v ?? 0; return sums[i]; }));
    drawn.reverse();
  }
  const ordered = stacked ? [...series].reverse() : series;
  const paths = bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined;
  const options = {
    width: 600,
    height,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true } },
    axes: [{}, { values: (_, ticks) => ticks.map(y), size: 60 }],
    series: [{}, ...ordered.map((s, i) => ({
      label: s.label,
      stroke: s.color,
      fill: bars || stacked ? `${s.color}cc` : s.fill,
      width: bars ? 0 : 2,
      paths,
      points: { show: false },
      value: (u, v, si, idx) => (idx == null ? '—' : y(stacked ? ordered[i].values[idx] : v)),
    }))],
  };
  const plot = new uPlot(options, [xs, ...drawn], box);
  const fit = () => {
    const width = Math.max(240, Math.floor(box.clientWidth || 600));
    plot.setSize({ width, height });
  };
  new ResizeObserver(fit).observe(box);
  return box;
}

/** A small line of counts with no axes, for a table cell. */
export function sparkline(values, { width = 120, height = 28, color = LEVEL_COLORS.ERROR, label = '' } = {}) {
  const box = h('span', { class: 'sparkline', role: 'img', 'aria-label': label });
  const xs = values.map((_, i) => i);
  // uPlot runs once the cell is in the document; a sparkline is decoration beside the numbers.
  new uPlot({
    width,
    height,
    pxAlign: false,
    cursor: { show: false },
    select: { show: false },
    legend: { show: false },
    scales: { x: { time: false } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: color, fill: `${color}33`, width: 1.5, points: { show: false } }],
  }, [xs, values], box);
  return box;
}
