// Token Management: every connected account's token status, with Refresh and Revoke.

import { get, query, listOf } from '../api.js';
import { h, pageHeader, section, loading, emptyState, statusBadge, time, table, helpPanel, field, toast, connectControl } from '../ui.js';
import { HELP } from '../help.js';
import { refreshButton, revokeButton, detailsLink, reconnectLink, pendingRemovalNote } from '../actions.js';
import { countOf } from '../format.js';
import { pagedList } from '../list.js';
import { installationCharts } from '../charts.js';

const STATUSES = [
  ['', 'All statuses'],
  ['connected', 'Connected'],
  ['expired', 'Expired'],
  ['needs_reauthorization', 'Needs re-authorisation'],
  ['disconnected', 'Disconnected'],
  ['revoked', 'Revoked'],
];

const PAGE_SIZE = 25;

export async function render(ctx) {
  const { root } = ctx;
  const params = ctx.query;
  let highlight = params.get('connected');
  const filters = { status: params.get('status') || '', q: params.get('q') || '' };

  const statusSelect = h('select', { name: 'status' }, STATUSES.map(([v, l]) => h('option', { value: v, selected: v === filters.status }, l)));
  if (filters.status && !STATUSES.some(([v]) => v === filters.status)) {
    statusSelect.append(h('option', { value: filters.status, selected: true }, filters.status.replace(/,/g, ', ').replace(/_/g, ' ')));
  }
  const search = h('input', { type: 'search', name: 'q', value: filters.q, placeholder: 'Hub ID, domain or e-mail' });
  const filterForm = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter tokens' },
    field('Status', statusSelect),
    field('Search', search),
    h('div', { class: 'filter-actions' }, h('button', { type: 'submit', class: 'btn' }, 'Apply')));
  const listBox = h('div', { id: 'tokens-list' }, loading('Loading tokens…'));
  const connect = h('div', { class: 'connect-slot' });

  root.append(
    pageHeader('Token Management',
      'OAuth tokens of every connected HubSpot account: when they expire, when they were last used, and what to do when one stops working.',
      connect),
    section('Tokens', filterForm, listBox),
    section('Refreshes and hand-outs of all accounts', installationCharts(null)),
    h('div', { class: 'help-grid' },
      helpPanel(HELP.tokenStatuses),
      helpPanel(HELP.refresh),
      helpPanel(HELP.revoke)));

  get('/v1/apps' + query({ limit: 100 }))
    .then((d) => { if (!list.closed) connect.append(connectControl(listOf(d, 'apps').items)); })
    .catch(() => { if (!list.closed) connect.append(connectControl([])); });

  const list = pagedList({
    box: listBox,
    filters,
    loadingText: 'Loading tokens…',
    fetchPage: (cursor) => get('/v1/installations' + query({ status: filters.status, q: filters.q, sort: '-connected', limit: PAGE_SIZE, cursor }))
      .then((data) => listOf(data, 'installations')),
    empty: () => (filters.status || filters.q
      ? emptyState('No tokens match these filters', 'Clear the filters to see every account.')
      : emptyState('No HubSpot accounts are connected yet', 'Use "Connect a HubSpot account" above (or send customers your app\'s install link) and their tokens will appear here.')),
    draw: (items) => table([
      { label: 'Hub ID', cell: (r) => h('a', { href: `/dashboard/users/${r.installation_id}`, 'data-link': true }, String(r.hub_id)) },
      { label: 'User', cell: (r) => h('span', {}, r.installer_email || (r.user_id ? `user ${r.user_id}` : '—'), r.hub_domain ? h('span', { class: 'sub' }, r.hub_domain) : null) },
      { label: 'App', cell: (r) => r.app_label || '—' },
      { label: 'Status', cell: (r) => h('span', {}, statusBadge(r.status), r.consecutive_failures ? h('span', { class: 'sub warn-text' }, `${r.consecutive_failures} failed refresh${r.consecutive_failures > 1 ? 'es' : ''}`) : null, r.removal_action ? h('span', { class: 'sub warn-text' }, pendingRemovalNote(ctx, r, list.load)) : null) },
      { label: 'Expires', cell: (r) => time(r.access_expires_at, { empty: 'no token' }) },
      { label: 'Last used', cell: (r) => time(r.last_used_at, { empty: 'never' }) },
      { label: 'Actions', class: 'actions', cell: (r) => h('div', { class: 'row-actions' }, refreshButton(ctx, r, list.load), revokeButton(ctx, r, list.load), reconnectLink(r), detailsLink(r)) },
    ], items, { caption: 'OAuth tokens', rowId: (r) => r.installation_id }),
    pagerLabel: ({ total }) => countOf(total, 'account'),
    drawn: (items) => {
      if (!highlight) return;
      const row = listBox.querySelector(`tr[data-id="${CSS.escape(highlight)}"]`);
      const inst = items.find((i) => i.installation_id === highlight);
      if (row) row.classList.add('highlight');
      if (inst) toast(`HubSpot account ${inst.hub_id}${inst.hub_domain ? ' (' + inst.hub_domain + ')' : ''} is connected.`);
      highlight = null;
      const url = new URL(location.href);
      url.searchParams.delete('connected');
      history.replaceState({}, '', url.pathname + url.search);
    },
  });

  filterForm.addEventListener('submit', (e) => {
    e.preventDefault();
    filters.status = statusSelect.value;
    filters.q = search.value.trim();
    list.applyFilters();
  });

  await list.load();
  return list.close;
}
