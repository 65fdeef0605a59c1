// Activity Logs: every recorded change, newest first; filter by level, time range, installation
// and app; paginated. Filters live in the address so a filtered view can be shared or reloaded.

import { get, query, listOf } from '../api.js';
import { h, pageHeader, section, loading, emptyState, levelBadge, time, table, helpPanel, field, setFieldError } from '../ui.js';
import { HELP } from '../help.js';
import { toLocalInput, fromLocalInput, zoneName } from '../time.js';
import { actorLabel } from '../format.js';
import { pagedList } from '../list.js';
import { liveChart, totalsSentence, bucketLabel } from '../charts.js';

const LEVEL_BARS = [
  { key: 'info', label: 'Info', tone: 'info' },
  { key: 'warn', label: 'Warnings', tone: 'warn' },
  { key: 'error', label: 'Errors', tone: 'error' },
];

const PAGE_SIZE = 50;
const LEVELS = [['', 'All levels'], ['info', 'Info'], ['warn', 'Warnings'], ['error', 'Errors'], ['warn,error', 'Warnings and errors']];

export async function render(ctx) {
  const { root } = ctx;
  const q = ctx.query;
  const filters = {
    level: q.get('level') || '',
    from: q.get('from') || '',
    to: q.get('to') || '',
    installation_id: q.get('installation_id') || '',
    app_id: q.get('app_id') || '',
  };

  const level = h('select', { name: 'level', id: 'filter-level' }, LEVELS.map(([v, l]) => h('option', { value: v, selected: v === filters.level }, l)));
  const from = h('input', { type: 'datetime-local', name: 'from', id: 'filter-from', value: toLocalInput(filters.from) });
  const to = h('input', { type: 'datetime-local', name: 'to', id: 'filter-to', value: toLocalInput(filters.to) });
  const installation = h('select', { name: 'installation_id', id: 'filter-installation' }, h('option', { value: '' }, 'All installations'));
  const app = h('select', { name: 'app_id', id: 'filter-app' }, h('option', { value: '' }, 'All apps'));
  const reset = h('button', { type: 'button', class: 'btn', id: 'filter-reset' }, 'Clear filters');
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the activity log', id: 'activity-filters' },
    field('Level', level),
    field('From', from, `In ${zoneName()}`),
    field('To', to),
    field('Installation', installation),
    field('App', app),
    h('div', { class: 'filter-actions' }, h('button', { type: 'submit', class: 'btn btn-primary' }, 'Apply'), reset));
  const listBox = h('div', { id: 'activity-list' }, loading('Loading the activity log…'));
  // Entries per hour by level over the last 24 h (of the chosen installation or app); a bar
  // filters the list to its hour.
  const chartParams = () => ({ installation_id: filters.installation_id, app_id: filters.app_id });
  const chart = liveChart('/v1/stats/activity', chartParams(), {
    id: 'chart-activity', title: 'Entries per hour by level, last 24 h', bars: LEVEL_BARS,
    summary: (s) => totalsSentence(s, LEVEL_BARS, 'Last 24 hours') + ' Choose an hour to list its entries.',
    onBucket: (point) => {
      const start = new Date(point.start);
      const end = new Date(start.getTime() + 3600 * 1000);
      from.value = toLocalInput(start.toISOString());
      to.value = toLocalInput(end.toISOString());
      setFieldError(to, null);
      Object.assign(filters, { from: start.toISOString(), to: end.toISOString() });
      list.applyFilters();
      listBox.setAttribute('aria-label', `Entries of ${bucketLabel(point.start, 3600)} UTC`);
    },
  });

  root.append(
    pageHeader('Activity Logs', 'Everything Hubkeeper recorded: connections, refreshes, revocations, administrative actions and what HubSpot told us, with who caused it.'),
    section('Activity over time', chart.element),
    section('Filters', form),
    section('Entries', listBox),
    helpPanel(HELP.activityFilters));

  Promise.all([
    get('/v1/installations' + query({ limit: 200, sort: 'hub_id' })).then((d) => listOf(d, 'installations').items).catch(() => []),
    get('/v1/apps' + query({ limit: 200, include_deleted: true })).then((d) => listOf(d, 'apps').items).catch(() => []),
  ]).then(([installations, apps]) => {
    if (list.closed) return;
    for (const i of installations) {
      installation.append(h('option', { value: i.installation_id, selected: i.installation_id === filters.installation_id }, `${i.hub_id}${i.hub_domain ? ' · ' + i.hub_domain : ''}${i.app_label ? ' (' + i.app_label + ')' : ''}`));
    }
    if (filters.installation_id && !installations.some((i) => i.installation_id === filters.installation_id)) {
      installation.append(h('option', { value: filters.installation_id, selected: true }, filters.installation_id));
    }
    for (const a of apps) {
      app.append(h('option', { value: a.app_id, selected: a.app_id === filters.app_id }, a.label + (a.deleted_at ? ' (deleted)' : '')));
    }
  });

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const fromIso = fromLocalInput(from.value);
    const toIso = fromLocalInput(to.value);
    setFieldError(to, fromIso && toIso && fromIso >= toIso ? '"To" must be after "From".' : null);
    if (fromIso && toIso && fromIso >= toIso) {
      to.focus();
      return;
    }
    Object.assign(filters, { level: level.value, from: fromIso, to: toIso, installation_id: installation.value, app_id: app.value });
    list.applyFilters();
    chart.refresh(chartParams());
  });
  reset.addEventListener('click', () => {
    level.value = '';
    from.value = '';
    to.value = '';
    installation.value = '';
    app.value = '';
    setFieldError(to, null);
    Object.assign(filters, { level: '', from: '', to: '', installation_id: '', app_id: '' });
    list.applyFilters();
    chart.refresh(chartParams());
  });

  const filtered = () => Object.values(filters).some(Boolean);

  const list = pagedList({
    box: listBox,
    filters,
    loadingText: 'Loading the activity log…',
    fetchPage: (cursor) => get('/v1/activity' + query({ ...filters, limit: PAGE_SIZE, cursor }))
      .then((data) => listOf(data, 'activity')),
    empty: () => (filtered()
      ? emptyState('No entries match these filters', 'Widen the time range or clear the filters.')
      : emptyState('The activity log is empty', 'Entries appear as soon as something happens: add an app or connect a HubSpot account.')),
    draw: (items) => table([
      { label: 'Time', cell: (r) => time(r.occurred_at, { seconds: true }) },
      { label: 'Level', cell: (r) => levelBadge(r.level) },
      { label: 'Message', class: 'wide', cell: (r) => r.message },
      { label: 'Hub', cell: (r) => (r.installation_id
        ? h('a', { href: `/dashboard/users/${r.installation_id}`, 'data-link': true }, String(r.hub_id ?? 'details'))
        : (r.hub_id ? String(r.hub_id) : '—')) },
      { label: 'By', cell: (r) => actorLabel(r.actor) },
    ], items, { caption: 'Activity log entries', rowId: (r) => String(r.position) }),
    pagerLabel: ({ total, items, pageIndex }) => {
      const first = pageIndex * PAGE_SIZE + 1;
      return `${first}–${first + items.length - 1} of ${total}`;
    },
  });

  await Promise.all([list.load(), chart.refresh()]);
  return list.close;
}
