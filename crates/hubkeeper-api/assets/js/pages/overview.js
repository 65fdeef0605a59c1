// Overview: how many customers are connected, token health, what needs attention, and what is
// happening right now (live).

import { get, query, listOf } from '../api.js';
import { h, clear, pageHeader, section, stat, loading, errorState, emptyState, statusBadge, levelBadge, time, table, connectControl } from '../ui.js';
import { actorLabel } from '../format.js';
import { liveChart, throttle, totalsSentence, REFRESH_BARS } from '../charts.js';

// The overview's trend charts: refreshes, expiries ahead, connected accounts, webhooks.
function trendCharts() {
  const refreshes = liveChart('/v1/stats/refreshes', {}, {
    id: 'chart-refreshes', title: 'Refreshes per hour, last 24 h', bars: REFRESH_BARS,
    summary: (s) => totalsSentence(s, REFRESH_BARS, 'Last 24 hours'),
  });
  const expiryBars = [{ key: 'expiring', label: 'Access tokens expiring', tone: 'info' }];
  const expiries = liveChart('/v1/stats/expiries', {}, {
    id: 'chart-expiries', title: 'Token expiries ahead, next 2 h', bars: expiryBars,
    prepare: (s, o) => {
      const lead = s.context?.refresh_lead_seconds || 0;
      const leadMin = Math.round(lead / 60);
      return {
        ...o,
        marker: { at: new Date(Date.now() + lead * 1000), label: `Refresh lead time (${leadMin} min)` },
        summary: (x) => `${(x.totals?.expiring ?? 0).toLocaleString()} access tokens expire in the next 2 hours; the scheduler refreshes each one ${leadMin} minutes before it expires.`,
      };
    },
  });
  const connected = liveChart('/v1/stats/connected', {}, {
    id: 'chart-connected', title: 'Connected accounts, last 30 days', line: { key: 'connected', label: 'Connected accounts', unit: '' },
    summary: (s) => {
      const pts = s.points || [];
      const last = pts.length ? pts[pts.length - 1].connected : 0;
      const first = pts.length ? pts[0].connected : 0;
      return `${(last ?? 0).toLocaleString()} accounts connected today, ${(first ?? 0).toLocaleString()} 30 days ago.`;
    },
  });
  const webhookBars = [{ key: 'received', label: 'Webhook events', tone: 'info' }];
  const webhooks = liveChart('/v1/stats/webhooks', {}, {
    id: 'chart-webhooks', title: 'HubSpot webhook events per minute, last hour', bars: webhookBars,
    line: { key: 'latency_p95_ms', label: 'Ingest latency p95', unit: ' ms' },
    summary: (s) => {
      const lat = (s.points || []).map((p) => p.latency_p95_ms).filter((v) => v !== null && v !== undefined);
      const worst = lat.length ? Math.max(...lat) : null;
      return `${(s.totals?.received ?? 0).toLocaleString()} webhook events in the last hour` + (worst === null ? '.' : `; the slowest minute's p95 ingest latency was ${worst.toLocaleString()} ms.`);
    },
  });
  const all = [refreshes, expiries, connected, webhooks];
  return {
    element: h('div', { class: 'charts' }, ...all.map((c) => c.element)),
    refresh: () => Promise.all(all.map((c) => c.refresh())),
  };
}


const RECENT = 12;

export async function render(ctx) {
  const { root } = ctx;
  const stats = h('div', { class: 'stats', 'aria-live': 'polite' }, loading('Loading figures…'));
  const attention = h('div', {}, loading());
  const liveStatus = h('span', { class: 'live live-off', id: 'live-status' }, 'Connecting…');
  const feed = h('ol', { class: 'feed', id: 'activity-feed', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const feedBox = h('div', {}, loading('Loading recent activity…'));
  const connect = h('div', { class: 'connect-slot' });
  const trends = trendCharts();
  const refreshTrends = throttle(() => {
    if (!closed) trends.refresh();
  });

  root.append(
    pageHeader('Overview', 'Connected HubSpot accounts, the health of their tokens, and what is happening now.', connect),
    stats,
    h('div', { class: 'grid-2' },
      section('Needs attention', attention),
      h('section', { class: 'card', 'aria-labelledby': 'recent-title' },
        h('div', { class: 'card-head' }, h('h2', { id: 'recent-title' }, 'Recent activity'), liveStatus),
        feedBox,
        h('p', { class: 'card-foot' }, h('a', { href: '/dashboard/activity', 'data-link': true }, 'Open the full activity log →')))),
    section('Trends', trends.element));

  let source = null;
  let closed = false;
  let latestPosition = 0;

  const apps = get('/v1/apps' + query({ limit: 100 })).then((d) => listOf(d, 'apps').items).catch(() => []);
  apps.then((list) => {
    if (!closed) connect.append(connectControl(list));
  });

  async function loadStats() {
    try {
      const o = await get('/v1/stats/overview' + query({ recent: RECENT }));
      if (closed) return;
      clear(stats);
      const users = o.active_users || {};
      const change = users.change ?? 0;
      const pct = users.change_percent;
      const signed = (n) => `${n > 0 ? '+' : ''}${n}`;
      let changeText;
      if (change === 0) changeText = 'No change since last week';
      else if (pct === null || pct === undefined) changeText = `${signed(change)} since last week (none a week ago)`;
      else changeText = `${signed(pct)}% since last week (${signed(change)})`;
      const t = o.tokens || {};
      const attentionCount = (t.expiring_soon || 0) + (t.expired || 0) + (t.needs_reauthorization || 0) + (t.refresh_failing || 0);
      const windowMin = Math.round((t.expiring_window_seconds || 0) / 60);
      stats.append(
        stat('Active users', String(users.current ?? 0), changeText, { tone: change < 0 ? 'down' : change > 0 ? 'up' : undefined }),
        stat('OAuth tokens', String(t.active ?? 0), 'Active tokens'),
        stat('Expiring soon', String(t.expiring_soon ?? 0), windowMin ? `Within ${windowMin} min — needs attention if not refreshed` : 'Needs attention', { tone: t.expiring_soon ? 'warn' : undefined }),
        stat('Needs attention', String(attentionCount), `${t.expired || 0} expired · ${t.needs_reauthorization || 0} need re-authorisation · ${t.refresh_failing || 0} failing refreshes`, { tone: attentionCount ? 'warn' : 'ok' }));
      renderFeed(o.recent_activity || []);
    } catch (e) {
      if (closed) return;
      clear(stats).append(errorState(e, loadStats));
      clear(feedBox).append(errorState(e));
    }
  }

  async function loadAttention() {
    try {
      const data = await get('/v1/installations' + query({ status: 'expired,needs_reauthorization', sort: 'expires', limit: 6 }));
      if (closed) return;
      const { items, page } = listOf(data, 'installations');
      clear(attention);
      if (!items.length) {
        attention.append(emptyState('All accounts are healthy', 'No expired tokens and no accounts waiting for re-authorisation. Hubkeeper refreshes tokens before they expire.'));
        return;
      }
      attention.append(table([
        { label: 'Hub ID', cell: (r) => h('a', { href: `/dashboard/users/${r.installation_id}`, 'data-link': true }, String(r.hub_id)) },
        { label: 'Account', cell: (r) => r.hub_domain || '—' },
        { label: 'Status', cell: (r) => statusBadge(r.status) },
        { label: 'Expires', cell: (r) => time(r.access_expires_at) },
      ], items, { caption: 'Accounts that need attention' }));
      const total = page.total ?? items.length;
      attention.append(h('p', { class: 'card-foot' },
        total > items.length ? `${total} accounts in all. ` : '',
        h('a', { href: '/dashboard/tokens?status=expired,needs_reauthorization', 'data-link': true }, 'Manage them in Token Management →')));
    } catch (e) {
      if (!closed) clear(attention).append(errorState(e, loadAttention));
    }
  }

  function feedItem(item) {
    return h('li', { class: `feed-item level-${item.level}`, dataset: { position: String(item.position) } },
      levelBadge(item.level),
      h('span', { class: 'feed-message' }, item.message),
      h('span', { class: 'feed-meta' }, time(item.occurred_at, { seconds: true }), ' · ', actorLabel(item.actor)));
  }

  function renderFeed(items) {
    clear(feedBox);
    clear(feed);
    latestPosition = items.reduce((m, i) => Math.max(m, i.position || 0), latestPosition);
    if (!items.length) {
      feedBox.append(emptyState('No activity yet', 'Connect a HubSpot account or add an app: what happens will appear here as it happens.'));
    }
    for (const item of items) feed.append(feedItem(item));
    feedBox.append(feed);
    startLive();
  }

  function startLive() {
    if (source || closed) return;
    source = new EventSource('/v1/activity/stream' + query({ after: latestPosition }));
    source.addEventListener('open', () => {
      liveStatus.textContent = 'Live';
      liveStatus.className = 'live live-on';
    });
    source.addEventListener('error', () => {
      liveStatus.textContent = 'Reconnecting…';
      liveStatus.className = 'live live-off';
    });
    source.addEventListener('activity', (e) => {
      let item;
      try {
        item = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      if (feed.querySelector(`[data-position="${item.position}"]`)) return;
      const empty = feedBox.querySelector('.state-empty');
      if (empty) empty.remove();
      const li = feedItem(item);
      li.classList.add('fresh');
      feed.prepend(li);
      while (feed.children.length > RECENT) feed.lastElementChild.remove();
      scheduleRefresh();
      refreshTrends();
    });
  }

  // New activity usually means the figures changed too; refresh them at most every few seconds.
  let refreshTimer = null;
  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      if (closed) return;
      try {
        const o = await get('/v1/stats/overview' + query({ recent: 1 }));
        if (closed) return;
        const values = stats.querySelectorAll('.stat-value');
        const t = o.tokens || {};
        const users = o.active_users || {};
        const attentionCount = (t.expiring_soon || 0) + (t.expired || 0) + (t.needs_reauthorization || 0) + (t.refresh_failing || 0);
        const next = [users.current ?? 0, t.active ?? 0, t.expiring_soon ?? 0, attentionCount];
        values.forEach((v, i) => {
          v.textContent = String(next[i]);
        });
      } catch (e) {
        // The next event retries; a failed background refresh is not worth an error banner.
      }
      loadAttention();
    }, 2000);
  }

  await Promise.all([loadStats(), loadAttention(), trends.refresh()]);

  return () => {
    closed = true;
    if (source) source.close();
    if (refreshTimer) clearTimeout(refreshTimer);
  };
}
