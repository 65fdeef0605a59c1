// Small building blocks shared by the pages. Everything is built with DOM calls, never by
// assigning HTML strings, so data from the API (hub domains, app labels, messages) can never
// become markup.

import { timeEl } from './time.js';
import { post } from './api.js';

/** Creates an element: h('a', {href: '/x', class: 'btn'}, 'text', childNode, [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (value === true) el.setAttribute(key, '');
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(String(child));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A page heading with its introduction, and an optional row of actions. */
export function pageHeader(title, intro, actions) {
  return h('div', { class: 'page-header' },
    h('div', { class: 'page-title' }, h('h1', { id: 'page-title' }, title), intro ? h('p', { class: 'intro' }, intro) : null),
    actions ? h('div', { class: 'page-actions' }, actions) : null);
}

export function section(title, ...children) {
  const id = 'sec-' + title.toLowerCase().replace(/[^a-z0-9]+/g, '-');
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

// --- toasts: every action's outcome ---

export function toast(message, kind = 'ok', { timeout } = {}) {
  const box = document.getElementById('toasts');
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : null },
    h('span', { class: 'toast-text' }, message),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: () => item.remove() }, '×'));
  box.append(item);
  const ms = timeout ?? (kind === 'error' ? 12000 : 6000);
  setTimeout(() => item.remove(), ms);
  return item;
}

// --- the confirmation dialog ---

/**
 * Asks before a consequential action. Resolves with {reason} when confirmed, null when cancelled.
 * `consequences` is a list of sentences; `typeToConfirm` makes the user type a value (a hub id)
 * so an irreversible action cannot be confirmed by a stray Enter.
 */
export function confirmAction({ title, intro, consequences = [], confirmLabel, danger = false, askReason = false, reasonRequired = false, typeToConfirm, extra }) {
  return new Promise((resolve) => {
    const reasonId = 'confirm-reason';
    const typeId = 'confirm-type';
    const reason = askReason
      ? h('div', { class: 'field' },
        h('label', { for: reasonId }, 'Reason ', h('span', { class: 'muted' }, reasonRequired ? '(required; recorded in the activity log)' : '(recorded in the activity log)')),
        h('textarea', { id: reasonId, rows: 2, maxlength: 500, required: reasonRequired }))
      : null;
    const typed = typeToConfirm
      ? h('div', { class: 'field' },
        h('label', { for: typeId }, 'Type ', h('strong', {}, String(typeToConfirm)), ' to confirm'),
        h('input', { id: typeId, type: 'text', autocomplete: 'off', inputmode: 'numeric', spellcheck: 'false' }))
      : null;
    const confirmBtn = h('button', { type: 'submit', class: danger ? 'btn btn-danger' : 'btn btn-primary', value: 'confirm' }, confirmLabel);
    const cancelBtn = h('button', { type: 'button', class: 'btn', value: 'cancel' }, 'Cancel');
    const form = h('form', { method: 'dialog', class: 'dialog-body' },
      h('h2', { id: 'dialog-title' }, title),
      intro ? h('p', {}, intro) : null,
      consequences.length
        ? h('div', { class: danger ? 'consequences danger' : 'consequences' },
          h('p', { class: 'consequences-title' }, 'What happens:'),
          h('ul', {}, consequences.map((c) => h('li', {}, c))))
        : null,
      extra || null,
      reason, typed,
      h('div', { class: 'dialog-actions' }, cancelBtn, confirmBtn));
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title', 'aria-modal': 'true' }, form);
    document.body.append(dialog);
    const typedInput = typed ? typed.querySelector('input') : null;
    const reasonInput = reason ? reason.querySelector('textarea') : null;
    const sync = () => {
      const typedOk = typedInput ? typedInput.value.trim() === String(typeToConfirm) : true;
      const reasonOk = reasonRequired && reasonInput ? reasonInput.value.trim() !== '' : true;
      confirmBtn.disabled = !(typedOk && reasonOk);
    };
    if (typedInput) typedInput.addEventListener('input', sync);
    if (reasonInput) reasonInput.addEventListener('input', sync);
    sync();
    let result = null;
    cancelBtn.addEventListener('click', () => dialog.close());
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (confirmBtn.disabled) return;
      const text = reason ? reason.querySelector('textarea').value.trim() : '';
      result = { reason: text || undefined };
      dialog.close();
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(result);
    });
    dialog.showModal();
    (reasonInput || typedInput || cancelBtn).focus();
  });
}

// --- contextual help ---

/** A collapsible "about this action" panel: what it does, when to use it, what follows. */
export function helpPanel(entry, { open = false } = {}) {
  const body = h('div', { class: 'help-body' });
  if (entry.what) body.append(h('p', {}, h('strong', {}, 'What it does: '), entry.what));
  if (entry.when) {
    body.append(h('p', {}, h('strong', {}, 'When to use it: ')));
    body.append(Array.isArray(entry.when) ? h('ul', {}, entry.when.map((w) => h('li', {}, w))) : h('p', {}, entry.when));
  }
  if (entry.consequences) {
    body.append(h('p', {}, h('strong', {}, 'Consequences:')));
    body.append(h('ul', {}, entry.consequences.map((c) => h('li', {}, c))));
  }
  if (entry.items) body.append(h('ul', {}, entry.items.map((c) => h('li', {}, ...(Array.isArray(c) ? [h('strong', {}, c[0] + ': '), c[1]] : [c])))));
  if (entry.note) body.append(h('p', { class: entry.warning ? 'note warning' : 'note' }, entry.note));
  return h('details', { class: 'help', open }, h('summary', {}, entry.title), body);
}

/** A small (?) button next to an action that opens its help in place. */
export function helpToggle(entry) {
  const panel = helpPanel(entry);
  panel.classList.add('help-inline');
  return panel;
}

// --- states: loading, empty, error ---

export function loading(text = 'Loading…') {
  return h('p', { class: 'state state-loading', role: 'status' }, text);
}

export function emptyState(title, text, action) {
  return h('div', { class: 'state state-empty' }, h('p', { class: 'state-title' }, title), text ? h('p', {}, text) : null, action || null);
}

export function errorState(error, retry) {
  const refused = error && error.status === 403;
  return h('div', { class: 'state state-error', role: 'alert' },
    h('p', { class: 'state-title' }, refused ? 'Not allowed' : 'Could not load this'),
    h('p', {}, error && error.message ? error.message : String(error)),
    retry ? h('button', { type: 'button', class: 'btn', onclick: retry }, 'Try again') : null);
}

// --- tables ---

/**
 * A table that becomes a list of cards on narrow screens (each cell carries its column name).
 * columns: [{label, cell: (row) => Node|string, class?}]
 */
export function table(columns, rows, { caption, empty, rowId } = {}) {
  if (!rows.length) return empty || emptyState('Nothing here yet', '');
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'table' },
      caption ? h('caption', { class: 'visually-hidden' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', {}, rows.map((row) => h('tr', { dataset: rowId ? { id: rowId(row) } : undefined },
        columns.map((c) => h('td', { 'data-label': c.label, class: c.class }, c.cell(row))))))));
}

const STATUS_LABELS = {
  connected: 'Connected',
  expired: 'Expired',
  needs_reauthorization: 'Needs re-authorisation',
  disconnected: 'Disconnected',
  revoked: 'Revoked',
  forgotten: 'Forgotten',
  active: 'Active',
  inactive: 'Inactive',
};

const STATUS_KIND = {
  connected: 'ok',
  active: 'ok',
  expired: 'warn',
  needs_reauthorization: 'error',
  disconnected: 'muted',
  revoked: 'muted',
  forgotten: 'muted',
  inactive: 'muted',
};

export function statusLabel(status) {
  return STATUS_LABELS[status] || String(status || 'unknown').replace(/_/g, ' ');
}

export function statusBadge(status) {
  return h('span', { class: `badge badge-${STATUS_KIND[status] || 'muted'}` }, statusLabel(status));
}

export function levelBadge(level) {
  const kind = level === 'error' ? 'error' : level === 'warn' ? 'warn' : 'info';
  return h('span', { class: `badge badge-${kind}` }, level === 'warn' ? 'Warning' : level === 'error' ? 'Error' : 'Info');
}

export function time(value, opts) {
  return timeEl(value, opts);
}

/** A button for an action the caller's role may not perform: visible, disabled, explained. */
export function actionButton(label, { allowed, deniedReason, onClick, danger = false, small = true, describedBy }) {
  const btn = h('button', {
    type: 'button',
    class: ['btn', danger ? 'btn-danger-outline' : '', small ? 'btn-small' : ''].join(' ').trim(),
    'aria-describedby': describedBy,
  }, label);
  if (allowed) {
    btn.addEventListener('click', onClick);
  } else {
    btn.disabled = true;
    btn.title = deniedReason;
    btn.setAttribute('aria-disabled', 'true');
  }
  return btn;
}

/** Runs an action with its button showing progress, then reports the outcome. */
export async function run(button, work) {
  const label = button ? button.textContent : '';
  if (button) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    button.textContent = label + '…';
  }
  try {
    return await work();
  } finally {
    if (button && button.isConnected) {
      button.disabled = false;
      button.removeAttribute('aria-busy');
      button.textContent = label;
    }
  }
}

/** Previous / next paging; `onPage(cursor)` loads a page. */
export function pager({ hasPrevious, hasNext, onPrevious, onNext, label }) {
  return h('nav', { class: 'pager', 'aria-label': 'Pages' },
    h('button', { type: 'button', class: 'btn btn-small', disabled: !hasPrevious, onclick: onPrevious }, '← Newer'),
    h('span', { class: 'pager-label' }, label || ''),
    h('button', { type: 'button', class: 'btn btn-small', disabled: !hasNext, onclick: onNext }, 'Older →'));
}

export function stat(label, value, sub, { tone } = {}) {
  return h('div', { class: `stat ${tone ? 'stat-' + tone : ''}` },
    h('p', { class: 'stat-label' }, label),
    h('p', { class: 'stat-value' }, value),
    sub ? h('p', { class: 'stat-sub' }, sub) : null);
}

export function field(label, input, hint) {
  const id = input.id || 'f-' + Math.random().toString(36).slice(2, 9);
  input.id = id;
  const hintEl = hint ? h('p', { class: 'hint', id: id + '-hint' }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  const error = h('p', { class: 'field-error', id: id + '-error', hidden: true });
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl, error);
}

export function setFieldError(input, message) {
  const error = document.getElementById(input.id + '-error');
  if (!error) return;
  if (message) {
    error.textContent = message;
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    const described = [input.getAttribute('aria-describedby'), error.id].filter(Boolean);
    input.setAttribute('aria-describedby', [...new Set(described.join(' ').split(' '))].join(' '));
  } else {
    error.hidden = true;
    error.textContent = '';
    input.removeAttribute('aria-invalid');
  }
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : '';
}

// Checked by the browser's `pattern`, which compiles with the `v` flag: `/` and `-` need escaping.
const EXTERNAL_REF = '^[A-Za-z0-9._:@+\\/\\-]{1,128}$';

/**
 * Starts connecting a HubSpot account through `app` in this browser with a connect session:
 * asks for the customer's reference (prefilled for a reconnect), creates the session (returning
 * to Token Management) and follows its link to HubSpot's consent page.
 */
export async function startConnect(app, { externalRef } = {}) {
  const input = h('input', {
    id: 'connect-external-ref', name: 'external_ref', required: true, maxlength: 128,
    pattern: EXTERNAL_REF, spellcheck: 'false', autocomplete: 'off', value: externalRef || '',
    placeholder: 'e.g. customer-42',
  });
  const extra = h('div', { class: 'field' },
    h('label', { for: 'connect-external-ref' }, 'Customer reference ', h('span', { class: 'muted' }, '(your id of this customer: letters, digits and . _ - : @ + /)')),
    input);
  const answer = await confirmAction({
    title: `Connect a HubSpot account through ${app.label || 'this app'}`,
    intro: 'Opens HubSpot\'s consent page in this browser; whoever approves it must be able to authorise the app for the account. The account is recorded for the customer reference below; a reference that already has an account reconnects it.',
    confirmLabel: 'Continue to HubSpot',
    extra,
  });
  if (!answer) return;
  try {
    const session = await post(`/v1/apps/${app.app_id}/connect-sessions`, {
      external_ref: input.value.trim(),
      return_url: '/dashboard/tokens',
    });
    location.assign(session.connect_url);
  } catch (e) {
    toast(`Could not start the connection: ${e.message}`, 'error');
  }
}

/** A button that starts a connect session for `app` (see `startConnect`). */
export function connectButton(app, { label = 'Connect a HubSpot account', small = false, primary = false, id, externalRef } = {}) {
  const classes = ['btn', small ? 'btn-small' : '', primary ? 'btn-primary' : ''].filter(Boolean).join(' ');
  return h('button', {
    type: 'button', class: classes, id,
    onclick: () => startConnect(app, { externalRef }),
  }, label);
}

/**
 * "Connect a HubSpot account": starts a connect session for an app in this browser (it ends back
 * on Token Management with the outcome). With several apps, the user picks one.
 */
export function connectControl(apps) {
  const live = (apps || []).filter((a) => !a.deleted_at);
  if (!live.length) {
    return h('a', { class: 'btn', href: '/dashboard/apps', 'data-link': true, title: 'Customers connect through an OAuth app: add one first' }, 'Add an app to connect accounts');
  }
  if (live.length === 1) {
    return connectButton(live[0], { primary: true, id: 'connect-account' });
  }
  const select = h('select', { id: 'connect-app', 'aria-label': 'App to connect through' },
    live.map((a) => h('option', { value: a.app_id }, `${a.label} (${a.environment})`)));
  const go = h('button', { type: 'submit', class: 'btn btn-primary', id: 'connect-account' }, 'Connect a HubSpot account');
  const form = h('form', { class: 'connect-form' }, select, go);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const app = live.find((a) => a.app_id === select.value);
    if (app) startConnect(app);
  });
  return form;
}

/**
 * Reloads a view now and twice more shortly after a change: lists come from read models that
 * follow the event history a moment later, and the later looks show the settled state.
 */
/**
 * Runs `request` with `button` busy, then reports: the toast `succeeded(result)` returns (text, or
 * `[text, kind, options]`; nothing for no toast), or `"<failed>: <error>"` as an error. Resolves
 * to the result, or `undefined` after a failure.
 */
export async function attempt(button, request, { succeeded, failed }) {
  return run(button, async () => {
    try {
      const result = await request();
      const message = succeeded(result);
      if (message) toast(...(Array.isArray(message) ? message : [message]));
      return result;
    } catch (e) {
      toast(`${failed}: ${e.message}`, 'error');
      return undefined;
    }
  });
}

export function settle(reload) {
  if (!reload) return;
  reload();
  setTimeout(reload, 700);
  setTimeout(reload, 2500);
}
