// Charts: hand-written SVG over the `/v1/stats/<series>` answers (no library: a stacked bar chart
// with an optional line, limit rule and time marker is all the dashboard needs, and SVG keeps the
// CSP strict: every colour comes from a class in app.css, nothing is inline).
//
// Each chart is a <figure class="chart" data-series=… data-points=…> holding a text summary, the
// SVG (one <g class="chart-bucket"> per point, each bar a <rect data-key data-value>), a legend and
// the data as a table on demand (<details>). Times are UTC like the rest of the dashboard.

import { h, clear } from './ui.js';
import { get, query } from './api.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 640;
const HEIGHT = 180;
const PAD = { top: 12, right: 44, bottom: 26, left: 44 };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

const pad2 = (n) => String(n).padStart(2, '0');

// A bucket's start as UTC text fitting its width.
export function bucketLabel(iso, bucketSeconds) {
  const d = new Date(iso);
  const day = `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
  if (bucketSeconds >= 86400) return day;
  return `${day} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
}

function shortLabel(iso, bucketSeconds) {
  const d = new Date(iso);
  if (bucketSeconds >= 86400) return `${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
  return `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
}

function fmt(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString();
}

// Draws `series` (an answer of /v1/stats/…) as a chart.
//   bars:   [{ key, label, tone }]  stacked counts (tone: ok | warn | error | info | muted)
//   line:   { key, label, unit }    a level drawn over the bars on its own scale (right axis)
//   rule:   { value, label }        a horizontal line on the bars' scale (e.g. a plan's limit)
//   marker: { at, label }           a vertical line at a time (e.g. now + the refresh lead time)
//   summary(series) -> text         the chart in one sentence (also the SVG's accessible name)
//   onBucket(point)                 makes buckets clickable
export function drawChart(series, { id, title, bars = [], line, rule, marker, summary, onBucket }) {
  const points = series.points || [];
  const n = points.length;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const stackMax = points.reduce((m, p) => Math.max(m, bars.reduce((s, b) => s + (p[b.key] || 0), 0)), 0);
  const barMax = Math.max(1, stackMax, rule && rule.value ? rule.value : 0);
  const lineValues = line ? points.map((p) => p[line.key]).filter((v) => v !== null && v !== undefined) : [];
  const lineMax = Math.max(1, ...lineValues);
  const step = n ? plotW / n : plotW;
  const barW = Math.max(1, step * 0.78);
  const y = (v) => PAD.top + plotH - (v / barMax) * plotH;
  const yLine = (v) => PAD.top + plotH - (v / lineMax) * plotH;
  const text = summary ? summary(series) : '';

  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: 'chart-svg', role: 'img', 'aria-label': `${title}. ${text}`,
  });
  // The left axis is the bars' scale, or the line's when there are no bars.
  const leftMax = bars.length ? fmt(barMax) : `${fmt(Math.round(lineMax * 10) / 10)}${(line && line.unit) || ''}`;
  root.append(
    svg('line', { class: 'chart-axis', x1: PAD.left, y1: PAD.top + plotH, x2: PAD.left + plotW, y2: PAD.top + plotH }),
    svg('text', { class: 'chart-tick', x: PAD.left - 6, y: PAD.top + 8, 'text-anchor': 'end' }, document.createTextNode(leftMax)),
    svg('text', { class: 'chart-tick', x: PAD.left - 6, y: PAD.top + plotH, 'text-anchor': 'end' }, document.createTextNode('0')));
  if (line && bars.length) {
    root.append(svg('text', { class: 'chart-tick chart-tick-line', x: PAD.left + plotW + 6, y: PAD.top + 8 },
      document.createTextNode(`${fmt(Math.round(lineMax * 10) / 10)}${line.unit || ''}`)));
  }
  const labelEvery = Math.max(1, Math.ceil(n / 6));
  points.forEach((p, i) => {
    const x = PAD.left + i * step + (step - barW) / 2;
    const g = svg('g', { class: onBucket ? 'chart-bucket chart-bucket-link' : 'chart-bucket', 'data-start': p.start });
    let base = 0;
    const parts = [];
    for (const b of bars) {
      const v = p[b.key] || 0;
      parts.push(`${b.label}: ${fmt(v)}`);
      const top = y(base + v);
      g.append(svg('rect', {
        class: `chart-bar tone-${b.tone || 'info'}`, x, y: top, width: barW, height: Math.max(0, y(base) - top),
        'data-key': b.key, 'data-value': v,
      }));
      base += v;
    }
    if (line) parts.push(`${line.label}: ${fmt(p[line.key])}${p[line.key] === null || p[line.key] === undefined ? '' : line.unit || ''}`);
    // A transparent full-height target: hovering shows the bucket, clicking filters by it.
    const hit = svg('rect', { class: 'chart-hit', x: PAD.left + i * step, y: PAD.top, width: step, height: plotH });
    hit.append(svg('title', {}, document.createTextNode(`${bucketLabel(p.start, series.bucket_seconds)} UTC — ${parts.join(', ')}`)));
    g.append(hit);
    if (onBucket) {
      g.setAttribute('tabindex', '0');
      g.setAttribute('role', 'button');
      g.setAttribute('aria-label', `${bucketLabel(p.start, series.bucket_seconds)} UTC: ${parts.join(', ')}`);
      g.addEventListener('click', () => onBucket(p));
      g.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          onBucket(p);
        }
      });
    }
    root.append(g);
    if (i % labelEvery === 0) {
      root.append(svg('text', { class: 'chart-tick', x: PAD.left + i * step + step / 2, y: HEIGHT - 8, 'text-anchor': 'middle' },
        document.createTextNode(shortLabel(p.start, series.bucket_seconds))));
    }
  });
  if (line && lineValues.length) {
    const coords = [];
    points.forEach((p, i) => {
      const v = p[line.key];
      if (v === null || v === undefined) return;
      const cx = PAD.left + i * step + step / 2;
      coords.push(`${cx},${yLine(v)}`);
      root.append(svg('circle', { class: 'chart-dot', cx, cy: yLine(v), r: 2.5, 'data-key': line.key, 'data-value': v }));
    });
    root.append(svg('polyline', { class: 'chart-line', points: coords.join(' '), 'data-key': line.key }));
  }
  if (rule && rule.value) {
    root.append(
      svg('line', { class: 'chart-rule', x1: PAD.left, x2: PAD.left + plotW, y1: y(rule.value), y2: y(rule.value), 'data-value': rule.value }),
      svg('text', { class: 'chart-tick chart-rule-label', x: PAD.left + plotW - 4, y: y(rule.value) - 4, 'text-anchor': 'end' },
        document.createTextNode(`${rule.label} ${fmt(rule.value)}`)));
  }
  if (marker && n) {
    const from = new Date(series.from).getTime();
    const to = new Date(series.to).getTime();
    const at = marker.at.getTime();
    if (at >= from && at <= to) {
      const mx = PAD.left + ((at - from) / (to - from)) * plotW;
      root.append(
        svg('line', { class: 'chart-marker', x1: mx, x2: mx, y1: PAD.top, y2: PAD.top + plotH, 'data-at': marker.at.toISOString() }),
        svg('text', { class: 'chart-tick chart-marker-label', x: mx + 4, y: PAD.top + 10 }, document.createTextNode(marker.label)));
    }
  }

  const legendItems = bars.map((b) => h('li', {}, h('span', { class: `swatch tone-${b.tone || 'info'}`, 'aria-hidden': 'true' }), `${b.label} (${fmt(series.totals?.[b.key])})`));
  if (line) legendItems.push(h('li', {}, h('span', { class: 'swatch swatch-line', 'aria-hidden': 'true' }), line.label));
  if (rule && rule.value) legendItems.push(h('li', {}, h('span', { class: 'swatch swatch-rule', 'aria-hidden': 'true' }), rule.label));
  if (marker) legendItems.push(h('li', {}, h('span', { class: 'swatch swatch-marker', 'aria-hidden': 'true' }), marker.label));

  const columns = [...bars.map((b) => ({ key: b.key, label: b.label })), ...(line ? [{ key: line.key, label: line.label }] : [])];
  const dataTable = h('table', { class: 'table chart-table' },
    h('caption', { class: 'visually-hidden' }, `${title}: one row per bucket (UTC)`),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Bucket (UTC)'), ...columns.map((c) => h('th', { scope: 'col' }, c.label)))),
    h('tbody', {}, ...points.map((p) => h('tr', {}, h('td', {}, bucketLabel(p.start, series.bucket_seconds)), ...columns.map((c) => h('td', {}, fmt(p[c.key])))))));

  return h('figure', { class: 'chart', id, dataset: { series: series.series, points: String(n), bucket: series.bucket } },
    h('figcaption', {}, h('span', { class: 'chart-title' }, title), h('p', { class: 'chart-summary' }, text)),
    root,
    h('ul', { class: 'chart-legend' }, ...legendItems),
    h('details', { class: 'chart-data' }, h('summary', {}, 'Show the data'), dataTable));
}

// A chart that loads its series, redraws on `refresh()` (live pages call it when activity
// arrives) and shows loading and error states like the rest of the dashboard.
export function liveChart(path, params, options) {
  const box = h('div', { class: 'chart-box', id: options.id ? `${options.id}-box` : undefined }, h('p', { class: 'state-loading' }, `Loading ${options.title.toLowerCase()}…`));
  let seq = 0;
  async function refresh(nextParams) {
    if (nextParams) params = nextParams;
    const mine = ++seq;
    try {
      const series = await get(path + query(params || {}));
      if (mine !== seq) return;
      const opts = typeof options.prepare === 'function' ? options.prepare(series, options) : options;
      clear(box).append(drawChart(series, opts));
    } catch (e) {
      if (mine !== seq) return;
      clear(box).append(h('p', { class: 'state state-error', role: 'alert' }, `Could not load ${options.title.toLowerCase()}: ${e.message || e}`));
    }
  }
  return { element: box, refresh };
}

// Calls `work` at most once per `ms` while events keep arriving.
export function throttle(work, ms = 3000) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      work();
    }, ms);
  };
}

// Sentences for summaries.
export function totalsSentence(series, bars, span) {
  const parts = bars.map((b) => `${fmt(series.totals?.[b.key] ?? 0)} ${b.label.toLowerCase()}`);
  return `${span}: ${parts.join(', ')}.`;
}

export const REFRESH_BARS = [
  { key: 'succeeded', label: 'Succeeded', tone: 'ok' },
  { key: 'failed', label: 'Failed', tone: 'warn' },
  { key: 'needs_reauthorization', label: 'Needing re-authorisation', tone: 'error' },
];

// Refresh history (14 days by day) and hand-outs per day (30 days) of one installation, or of
// all when `installationId` is null: Token Management and User detail.
export function installationCharts(installationId) {
  const params = installationId ? { installation_id: installationId } : {};
  const span = installationId ? 'Last 14 days' : 'Last 14 days, all accounts';
  const refreshes = liveChart('/v1/stats/refreshes', { ...params, from: daysAgo(13), bucket: '1d' }, {
    id: 'chart-installation-refreshes', title: 'Refreshes per day', bars: REFRESH_BARS,
    summary: (s) => totalsSentence(s, REFRESH_BARS, span),
  });
  const handoutBars = [{ key: 'handouts', label: 'Token hand-outs', tone: 'info' }];
  const handouts = liveChart('/v1/stats/handouts', { ...params, from: daysAgo(29), bucket: '1d' }, {
    id: 'chart-installation-handouts', title: 'Token hand-outs per day', bars: handoutBars,
    summary: (s) => totalsSentence(s, handoutBars, installationId ? 'Last 30 days' : 'Last 30 days, all accounts'),
  });
  refreshes.refresh();
  handouts.refresh();
  return h('div', { class: 'charts' }, refreshes.element, handouts.element);
}

// Midnight UTC `n` days before today, as RFC 3339.
export function daysAgo(n) {
  const d = new Date();
  d.setUTCHours(0, 0, 0, 0);
  d.setUTCDate(d.getUTCDate() - n);
  return d.toISOString();
}
