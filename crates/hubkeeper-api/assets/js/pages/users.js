// User Management: the connected HubSpot accounts (tenants), with Disconnect and details.

import { get, query, listOf } from '../api.js';
import { h, pageHeader, section, loading, emptyState, statusBadge, time, table, helpPanel, field } from '../ui.js';
import { HELP } from '../help.js';
import { disconnectButton, detailsLink } from '../actions.js';
import { countOf } from '../format.js';
import { pagedList } from '../list.js';

const PAGE_SIZE = 25;

export async function render(ctx) {
  const { root } = ctx;
  const filters = { q: ctx.query.get('q') || '', app_id: ctx.query.get('app_id') || '' };

  const search = h('input', { type: 'search', name: 'q', value: filters.q, placeholder: 'Hub ID, domain or e-mail' });
  const appSelect = h('select', { name: 'app_id' }, h('option', { value: '' }, 'All apps'));
  const filterForm = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter tenants' },
    field('Search', search),
    field('App', appSelect),
    h('div', { class: 'filter-actions' }, h('button', { type: 'submit', class: 'btn' }, 'Apply')));
  const listBox = h('div', { id: 'users-list' }, loading('Loading tenants…'));

  root.append(
    pageHeader('User Management', 'Every connected HubSpot account (tenant): when it connected, its plan and status. Open one for its tokens, scopes, history, usage and errors.'),
    section('Tenants', filterForm, listBox),
    h('div', { class: 'help-grid' },
      helpPanel(HELP.tenantColumns),
      helpPanel(HELP.disconnect),
      helpPanel(HELP.details)));

  get('/v1/apps' + query({ limit: 100, include_deleted: true }))
    .then((d) => {
      for (const app of listOf(d, 'apps').items) {
        appSelect.append(h('option', { value: app.app_id, selected: app.app_id === filters.app_id }, app.label + (app.deleted_at ? ' (deleted)' : '')));
      }
    })
    .catch(() => {});

  const list = pagedList({
    box: listBox,
    filters,
    loadingText: 'Loading tenants…',
    fetchPage: (cursor) => get('/v1/installations' + query({ q: filters.q, app_id: filters.app_id, sort: '-connected', limit: PAGE_SIZE, cursor }))
      .then((data) => listOf(data, 'installations')),
    empty: () => (filters.q || filters.app_id
      ? emptyState('No tenants match these filters', 'Clear the filters to see every tenant.')
      : emptyState('No tenants yet', 'A tenant appears when a customer connects their HubSpot account through one of your apps. Start one from the Overview or Token Management page.')),
    draw: (items) => table([
      { label: 'Hub ID', cell: (r) => h('a', { href: `/dashboard/users/${r.installation_id}`, 'data-link': true }, String(r.hub_id)) },
      { label: 'Name', cell: (r) => h('span', {}, r.hub_domain || '—', r.installer_email ? h('span', { class: 'sub' }, r.installer_email) : null) },
      { label: 'Connected', cell: (r) => time(r.first_connected_at, { date: true }) },
      { label: 'Plan', cell: (r) => r.plan_code || h('span', { class: 'muted' }, 'No plan') },
      { label: 'Status', cell: (r) => statusBadge(r.status) },
      { label: 'Actions', class: 'actions', cell: (r) => h('div', { class: 'row-actions' }, detailsLink(r), disconnectButton(ctx, r, list.load)) },
    ], items, { caption: 'Tenants', rowId: (r) => r.installation_id }),
    pagerLabel: ({ total }) => countOf(total, 'tenant'),
  });

  filterForm.addEventListener('submit', (e) => {
    e.preventDefault();
    filters.q = search.value.trim();
    filters.app_id = appSelect.value;
    list.applyFilters();
  });

  await list.load();
  return list.close;
}
