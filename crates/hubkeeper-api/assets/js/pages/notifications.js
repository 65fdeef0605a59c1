// Notifications: where each app hears about its tenants (its endpoints, signed per Standard
// Webhooks), and every delivery made to them with its attempts, last error and latency. A
// delivery can be sent again (same webhook-id, fresh signature).

import { get, post, patch, del, query, listOf } from '../api.js';
import { h, clear, pageHeader, section, loading, errorState, emptyState, time, table, field, setFieldError, toast, confirmAction, actionButton, attempt, settle } from '../ui.js';

const TYPES = [
  ['installation.connected', 'A hub installed the app'],
  ['installation.reconnected', 'An installation was authorised again'],
  ['installation.needs_reauthorization', 'The tenant must authorise the app again'],
  ['installation.refreshed', 'Tokens refreshed (frequent; off by default)'],
  ['installation.revoked', 'An operator revoked the tokens'],
  ['installation.disconnected', 'An operator disconnected the installation'],
  ['installation.uninstalled', 'The app was uninstalled in HubSpot'],
  ['installation.forgotten', 'The tenant\'s data was forgotten'],
  ['installation.removal_scheduled', 'An operator scheduled a revoke or disconnect (told before it happens)'],
  ['installation.removal_cancelled', 'An operator cancelled a scheduled revoke or disconnect'],
  ['subscription.changed', 'The tenant\'s plan started or changed'],
  ['usage.limit_reached', 'The tenant reached a usage limit'],
  ['plan.deprecated', 'The tenant\'s plan was deprecated'],
  ['plan.reduced', 'The tenant\'s plan will lose features or limits'],
  ['hubspot.webhook', 'HubSpot webhook events, forwarded'],
];

const DELIVERY_STATUS = {
  pending: ['Pending', 'muted'],
  retrying: ['Retrying', 'warn'],
  delivered: ['Delivered', 'ok'],
  failed: ['Failed', 'error'],
  gone: ['Gone (410)', 'error'],
};

function deliveryBadge(status) {
  const [label, kind] = DELIVERY_STATUS[status] || [status, 'muted'];
  return h('span', { class: `badge badge-${kind}` }, label);
}

function urlProblem(text) {
  let url;
  try {
    url = new URL(text);
  } catch (e) {
    return 'Enter a full URL, e.g. https://app.example.com/hooks/hubkeeper.';
  }
  const loopback = url.hostname === 'localhost' || url.hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(url.hostname);
  if (url.protocol === 'http:' && !loopback) return 'Use https:// (plain http:// only to localhost or a loopback address).';
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'The URL must start with https://.';
  if (url.hash) return 'The URL cannot contain a #fragment.';
  if (url.username || url.password) return 'The URL cannot contain a user name or password.';
  return null;
}

/** The secret, shown once, with what to do with it. */
function secretBox(secret, what) {
  return h('div', { class: 'card secret-once', role: 'status', id: 'endpoint-secret' },
    h('p', {}, h('strong', {}, `${what}: `), 'copy the signing secret now, it is not shown again.'),
    h('p', {}, h('code', { class: 'secret' }, secret)),
    h('p', { class: 'hint' }, 'The app verifies each delivery with it (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature).'));
}

export async function render(ctx) {
  const { root } = ctx;
  const admin = ctx.can('administer');
  let closed = false;
  const appSelect = h('select', { id: 'notify-app', name: 'app' });
  const secretSlot = h('div', { id: 'secret-slot' });
  const formSlot = h('div', { id: 'endpoint-form-slot' });
  const endpointsBox = h('div', { id: 'endpoints-list' }, loading('Loading apps…'));
  const deliveriesBox = h('div', { id: 'deliveries-list' });
  const addButton = actionButton('Add an endpoint', {
    allowed: admin,
    deniedReason: ctx.deniedReason('administer'),
    small: false,
    onClick: () => openForm(),
  });
  addButton.id = 'add-endpoint';
  addButton.classList.add('btn-primary');

  root.append(
    pageHeader('Notifications', 'Where each app hears what happens to its tenants: HTTPS endpoints of the app, each notification signed (Standard Webhooks) and retried for about a day until the app accepts it.', addButton),
    h('div', { class: 'filters' }, field('App', appSelect)),
    secretSlot,
    formSlot,
    section('Endpoints', endpointsBox),
    section('Deliveries', deliveriesBox));

  let appId = ctx.query.get('app') || '';
  let selected = null;

  function openForm() {
    if (!appId) return;
    clear(secretSlot);
    const url = h('input', { type: 'url', name: 'url', required: true, placeholder: 'https://app.example.com/hooks/hubkeeper', autocomplete: 'off' });
    const description = h('input', { type: 'text', name: 'description', maxlength: 500 });
    const boxes = TYPES.map(([type, label]) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', name: 'event_types', value: type, checked: type !== 'installation.refreshed' }),
      ' ', h('code', {}, type), ' ', h('span', { class: 'muted' }, label)));
    const save = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Add endpoint');
    const cancel = h('button', { type: 'button', class: 'btn', onclick: () => clear(formSlot) }, 'Cancel');
    const form = h('form', { class: 'form', id: 'endpoint-form', novalidate: true },
      field('URL', url, 'Where Hubkeeper POSTs notifications.'),
      field('Description', description),
      h('fieldset', {}, h('legend', {}, 'Notification types'), ...boxes),
      h('div', { class: 'form-actions' }, cancel, save));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const problem = urlProblem(url.value.trim());
      setFieldError(url, problem);
      if (problem) return;
      const types = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
      if (!types.length) {
        toast('Choose at least one notification type.', 'error');
        return;
      }
      const created = await attempt(save, () => post(`/v1/apps/${appId}/endpoints`, {
        url: url.value.trim(), event_types: types, description: description.value.trim() || undefined,
      }), { succeeded: () => 'Endpoint added.', failed: 'Could not add the endpoint' });
      if (!created) return;
      clear(formSlot);
      secretSlot.append(secretBox(created.secret, `Endpoint ${created.url} added`));
      loadEndpoints();
    });
    clear(formSlot).append(h('section', { class: 'card', 'aria-labelledby': 'endpoint-form-title' },
      h('h2', { id: 'endpoint-form-title' }, 'Add an endpoint'), form));
    url.focus();
  }

  async function loadApps() {
    try {
      const data = await get('/v1/apps' + query({ limit: 200 }));
      if (closed) return;
      const apps = listOf(data, 'apps').items.filter((a) => !a.deleted_at);
      clear(appSelect).append(...apps.map((a) => h('option', { value: a.app_id, selected: a.app_id === appId }, a.label)));
      if (!apps.length) {
        clear(endpointsBox).append(emptyState('No apps yet', 'Add a HubSpot app on App Management first.'));
        addButton.disabled = true;
        return;
      }
      if (!apps.some((a) => a.app_id === appId)) appId = apps[0].app_id;
      appSelect.value = appId;
      loadEndpoints();
    } catch (e) {
      clear(endpointsBox).append(errorState(e, loadApps));
    }
  }

  appSelect.addEventListener('change', () => {
    appId = appSelect.value;
    selected = null;
    clear(secretSlot);
    clear(formSlot);
    clear(deliveriesBox);
    history.replaceState({}, '', `/dashboard/notifications?app=${encodeURIComponent(appId)}`);
    loadEndpoints();
  });

  async function loadEndpoints() {
    if (!endpointsBox.querySelector('table')) clear(endpointsBox).append(loading('Loading endpoints…'));
    let data;
    try {
      data = await get(`/v1/apps/${appId}/endpoints`);
    } catch (e) {
      if (!closed) clear(endpointsBox).append(errorState(e, loadEndpoints));
      return;
    }
    if (closed) return;
    const endpoints = data.items || [];
    clear(endpointsBox).append(table([
      { label: 'URL', cell: (e) => h('code', {}, e.url) },
      { label: 'Types', cell: (e) => e.event_types.join(', ') },
      { label: 'Status', cell: (e) => (e.enabled ? h('span', { class: 'badge badge-ok' }, 'Enabled')
        : h('span', { class: 'badge badge-error', title: e.disabled_reason || '' }, e.disabled_reason ? `Disabled: ${e.disabled_reason}` : 'Paused')) },
      { label: 'Added', cell: (e) => time(e.created_at) },
      { label: 'Actions', class: 'actions', cell: (e) => endpointActions(e) },
    ], endpoints, {
      caption: 'Notification endpoints',
      rowId: (e) => e.endpoint_id,
      empty: emptyState('No endpoints', admin ? 'Add the URL of the app\'s receiver with "Add an endpoint".' : 'An admin adds the app\'s receivers here.'),
    }));
    if (selected && endpoints.some((e) => e.endpoint_id === selected)) loadDeliveries();
    else if (endpoints.length) {
      selected = endpoints[0].endpoint_id;
      loadDeliveries();
    }
  }

  function endpointActions(endpoint) {
    const base = `/v1/apps/${appId}/endpoints/${endpoint.endpoint_id}`;
    const show = h('button', { type: 'button', class: 'btn btn-small', dataset: { action: 'deliveries' } }, 'Deliveries');
    show.addEventListener('click', () => {
      selected = endpoint.endpoint_id;
      loadDeliveries();
    });
    const toggle = actionButton(endpoint.enabled ? 'Pause' : 'Enable', {
      allowed: admin,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        await attempt(toggle, () => patch(base, { enabled: !endpoint.enabled }), {
          succeeded: () => (endpoint.enabled ? 'Endpoint paused.' : 'Endpoint enabled; re-drive its dead letters (kind notify) to send what it missed.'),
          failed: 'Could not change the endpoint',
        });
        settle(loadEndpoints);
      },
    });
    const rotate = actionButton('Rotate secret', {
      allowed: admin,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        const answer = await confirmAction({
          title: 'Rotate the signing secret?',
          intro: `A new secret for ${endpoint.url}. For 24 hours deliveries carry signatures with both the new and the previous secret, so the app can switch without losing one.`,
          confirmLabel: 'Rotate secret',
        });
        if (!answer) return;
        const rotated = await attempt(rotate, () => post(`${base}/rotate-secret`), { succeeded: () => 'Secret rotated.', failed: 'Could not rotate the secret' });
        if (rotated) clear(secretSlot).append(secretBox(rotated.secret, `New secret for ${rotated.url}`));
      },
    });
    rotate.dataset.action = 'rotate';
    const remove = actionButton('Remove', {
      allowed: admin,
      danger: true,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        const answer = await confirmAction({
          title: 'Remove this endpoint?',
          intro: `Nothing more is sent to ${endpoint.url}; deliveries still queued for it are dropped.`,
          confirmLabel: 'Remove endpoint',
          danger: true,
        });
        if (!answer) return;
        await attempt(remove, () => del(base), { succeeded: () => 'Endpoint removed.', failed: 'Could not remove the endpoint' });
        if (selected === endpoint.endpoint_id) {
          selected = null;
          clear(deliveriesBox);
        }
        settle(loadEndpoints);
      },
    });
    return h('div', { class: 'row-actions' }, show, toggle, rotate, remove);
  }

  async function loadDeliveries() {
    const endpointId = selected;
    if (!endpointId) return;
    if (!deliveriesBox.querySelector('table')) clear(deliveriesBox).append(loading('Loading deliveries…'));
    let data;
    try {
      data = await get(`/v1/apps/${appId}/endpoints/${endpointId}/deliveries` + query({ limit: 100 }));
    } catch (e) {
      if (!closed) clear(deliveriesBox).append(errorState(e, loadDeliveries));
      return;
    }
    if (closed || endpointId !== selected) return;
    clear(deliveriesBox).append(table([
      { label: 'Type', cell: (d) => h('code', {}, d.type) },
      { label: 'Status', cell: (d) => deliveryBadge(d.status) },
      { label: 'Attempts', cell: (d) => String(d.attempts) },
      { label: 'Last answer', cell: (d) => (d.last_status_code ? `HTTP ${d.last_status_code}` : (d.last_error || '—')) },
      { label: 'Last error', cell: (d) => d.last_error || '—' },
      { label: 'Latency', cell: (d) => (d.last_latency_ms == null ? '—' : `${d.last_latency_ms} ms`) },
      { label: 'Event', cell: (d) => time(d.event_recorded_at) },
      { label: 'Next attempt', cell: (d) => (d.next_attempt_at && d.status === 'retrying' ? time(d.next_attempt_at) : '—') },
      { label: 'Id', cell: (d) => h('code', { title: 'webhook-id' }, d.webhook_id) },
      { label: 'Actions', class: 'actions', cell: (d) => resendButton(endpointId, d) },
    ], data.items || [], {
      caption: 'Deliveries, newest first',
      rowId: (d) => d.webhook_id,
      empty: emptyState('No deliveries yet', 'Deliveries appear here when something the endpoint receives happens.'),
    }));
  }

  function resendButton(endpointId, delivery) {
    const btn = actionButton('Re-send', {
      allowed: admin,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        await attempt(btn, () => post(`/v1/apps/${appId}/endpoints/${endpointId}/deliveries/${delivery.webhook_id}/resend`), {
          succeeded: () => `Delivery ${delivery.webhook_id} queued again (same webhook-id).`,
          failed: 'Could not re-send the delivery',
        });
        settle(loadDeliveries);
      },
    });
    btn.dataset.action = 'resend';
    return btn;
  }

  await loadApps();
  return () => { closed = true; };
}
