// One tenant in full: token information and expiry times, granted scopes, installation history
// and app versions, usage, recent activity and errors. Tokens themselves are never shown.

import { get, query, listOf } from '../api.js';
import { h, clear, section, loading, errorState, emptyState, statusBadge, levelBadge, time, table, helpPanel } from '../ui.js';
import { HELP } from '../help.js';
import { refreshButton, revokeButton, disconnectButton, reconnectLink, pendingRemovalNote } from '../actions.js';
import { actorLabel } from '../format.js';
import { installationCharts } from '../charts.js';

const FAILURE_CLASSES = {
  invalid_grant: 'HubSpot rejected the refresh token',
  unauthorized: 'HubSpot refused the app\'s credentials',
  rate_limited: 'HubSpot rate limit',
  server_error: 'HubSpot server error',
  network: 'Network failure or timeout',
  other: 'Other failure',
};

function describeChange(change) {
  switch (change.kind) {
    case 'installed':
      return `Connected for the first time${change.app_version ? ` (app version ${change.app_version})` : ''} with ${change.scopes ? change.scopes.length : 0} scopes.`;
    case 'reconnected':
      return `Connected again (was ${String(change.previous_status || '').replace(/_/g, ' ')}).`;
    case 'scopes_changed': {
      const parts = [];
      if (change.added && change.added.length) parts.push(`granted ${change.added.join(', ')}`);
      if (change.removed && change.removed.length) parts.push(`no longer granted ${change.removed.join(', ')}`);
      return `Scopes changed: ${parts.join('; ') || 'no difference'}.`;
    }
    case 'app_version_changed':
      return `App version changed from ${change.from || 'unknown'} to ${change.to}.`;
    case 'customer_changed':
      return `Reconnected for customer ${change.to}` + (change.from ? ` (was ${change.from})` : '');
    case 'reauthorization_required':
      return `Needs re-authorisation: ${FAILURE_CLASSES[change.class] || change.class}.`;
    case 'disconnected':
      return `Disconnected ${change.cause === 'uninstalled' ? 'by an uninstall in HubSpot' : 'by an operator'}${change.reason ? `: "${change.reason}"` : ''}.`;
    case 'revoked':
      return `Tokens revoked${change.reason ? `: "${change.reason}"` : ''}.`;
    case 'tenant_forgotten':
      return 'Tenant forgotten: its encryption key was destroyed, its tokens are unreadable.';
    default:
      return String(change.kind || 'change').replace(/_/g, ' ');
  }
}

function dl(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export async function render(ctx) {
  const { root, params } = ctx;
  const id = params.id;
  let closed = false;
  const body = h('div', {}, loading('Loading the tenant…'));
  root.append(
    h('p', { class: 'breadcrumb' }, h('a', { href: '/dashboard/users', 'data-link': true }, '← User Management')),
    body);

  async function load() {
    let inst;
    try {
      inst = await get(`/v1/installations/${encodeURIComponent(id)}`);
    } catch (e) {
      if (closed) return;
      clear(body).append(h('h1', {}, 'Tenant details'), errorState(e, load));
      return;
    }
    const [row, activity, errors] = await Promise.all([
      get('/v1/installations' + query({ q: id, limit: 1 })).then((d) => listOf(d, 'installations').items.find((r) => r.installation_id === id)).catch(() => null),
      get('/v1/activity' + query({ installation_id: id, limit: 15 })).then((d) => ({ items: listOf(d, 'activity').items })).catch((e) => ({ error: e })),
      get('/v1/activity' + query({ installation_id: id, level: 'warn,error', limit: 15 })).then((d) => ({ items: listOf(d, 'activity').items })).catch((e) => ({ error: e })),
    ]);
    if (closed) return;
    const view = { ...inst, ...(row ? { app_label: row.app_label, plan_code: row.plan_code, last_used_at: row.last_used_at, webhook_events: row.webhook_events, last_webhook_at: row.last_webhook_at } : {}) };
    clear(body);
    const title = `Hub ${view.hub_id}`;
    document.title = `${title} · Hubkeeper`;
    const installer = view.installer || {};
    body.append(
      h('div', { class: 'page-header' },
        h('div', { class: 'page-title' },
          h('h1', { id: 'page-title' }, title, ' ', statusBadge(view.status)),
          h('p', { class: 'intro' }, view.hub_domain || '', view.app_label ? ` · connected through ${view.app_label}` : '')),
        h('div', { class: 'page-actions row-actions' },
          refreshButton(ctx, view, load),
          revokeButton(ctx, view, load),
          disconnectButton(ctx, view, load),
          reconnectLink(view))),
      h('div', { class: 'grid-2' },
        section('Token information',
          dl([
            ['Status', statusBadge(view.status)],
            view.scheduled_removal ? ['Scheduled removal', pendingRemovalNote(ctx, view, load)] : null,
            ['Access token expires', time(view.access_expires_at, { empty: 'no token held' })],
            ['Last refreshed', time(view.last_refreshed_at, { empty: 'not yet' })],
            ['Last connected', time(view.last_connected_at)],
            ['First connected', time(view.first_connected_at)],
            ['Token pair', view.generation ? `#${view.generation}` : '—'],
            ['Failed refreshes in a row', String(view.consecutive_failures || 0)],
            view.last_failure ? ['Last failure', h('span', {}, `${FAILURE_CLASSES[view.last_failure.class] || view.last_failure.class}: ${view.last_failure.message || ''} `, time(view.last_failure.at))] : null,
          ]),
          h('p', { class: 'hint' }, 'Tokens are never displayed here. Your app\'s backend receives them from the token API with a service key.')),
        section('Account',
          dl([
            ['Hub ID', String(view.hub_id)],
            ['Domain', view.hub_domain || '—'],
            ['Installed by', installer.email || (installer.user_id ? `user ${installer.user_id}` : '—')],
            view.user_id ? ['User-level installation for', `user ${view.user_id}`] : null,
            ['App', view.app_label || view.app_id],
            ['App version', view.app_version || 'not reported'],
            ['Customer reference', view.external_ref ? h('code', { id: 'external-ref' }, view.external_ref) : 'none (not connected through a connect session)'],
            view.metadata && Object.keys(view.metadata).length
              ? ['Customer metadata', h('code', { id: 'customer-metadata', class: 'wrap' }, JSON.stringify(view.metadata))]
              : null,
            ['Plan', view.plan_code || 'No plan'],
            ['Installation id', h('code', {}, view.installation_id)],
          ]))),
      section('Granted scopes',
        view.scopes && view.scopes.length
          ? h('ul', { class: 'chips' }, view.scopes.map((s) => h('li', { class: 'chip' }, s)))
          : emptyState('No scopes recorded', 'Scopes appear once the account is connected.')),
      section('Usage',
        h('div', { class: 'stats stats-small' },
          statBox('Token hand-outs today', view.usage ? view.usage.handouts_today : 0),
          statBox('Token hand-outs in all', view.usage ? view.usage.handouts_total : 0),
          statBox('Webhook events', view.webhook_events ?? 0),
          h('div', { class: 'stat' }, h('p', { class: 'stat-label' }, 'Last API use'), h('p', { class: 'stat-value stat-time' }, time((view.usage && view.usage.last_handed_out_at) || view.last_used_at, { empty: 'never' }))))),
      section('Refreshes and hand-outs', installationCharts(id)),
      section('Installation history and app versions',
        view.history && view.history.length
          ? table([
            { label: 'When', cell: (e) => time(e.at) },
            { label: 'What happened', cell: (e) => describeChange(e.change || {}) },
          ], [...view.history].reverse(), { caption: 'Installation history' })
          : emptyState('No history yet', '')),
      h('div', { class: 'grid-2' },
        section('Recent activity', activityList(activity, 'Nothing has happened to this account yet.')),
        section('Error log', activityList(errors, 'No warnings or errors for this account.'))),
      h('div', { class: 'help-grid' }, helpPanel(HELP.refresh), helpPanel(HELP.revoke), helpPanel(HELP.disconnect)));
  }

  function statBox(label, value) {
    return h('div', { class: 'stat' }, h('p', { class: 'stat-label' }, label), h('p', { class: 'stat-value' }, String(value)));
  }

  function activityList(result, emptyText) {
    if (result.error) return errorState(result.error);
    if (!result.items.length) return emptyState(emptyText, '');
    return h('ol', { class: 'feed' }, result.items.map((item) => h('li', { class: `feed-item level-${item.level}` },
      levelBadge(item.level),
      h('span', { class: 'feed-message' }, item.message),
      h('span', { class: 'feed-meta' }, time(item.occurred_at, { seconds: true }), ' · ', actorLabel(item.actor)))));
  }

  await load();
  return () => { closed = true; };
}
