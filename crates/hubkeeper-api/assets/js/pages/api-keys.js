// API Keys: who may use Hubkeeper. Admins create keys (the key is shown once, right after it
// is made, with a copy button) and revoke them; every role that opens the dashboard sees the
// list (never a secret: Hubkeeper keeps only a hash). Creations and revocations are recorded in
// the activity log with the admin's key.

import { get, post, del, query, listOf } from '../api.js';
import { h, clear, pageHeader, section, loading, errorState, emptyState, time, table, field, setFieldError, toast, confirmAction, actionButton, attempt, settle } from '../ui.js';
import { actorLabel } from '../format.js';

const ROLES = [
  ['service', 'Service: an app\'s backend; receives the tokens of its apps only'],
  ['auditor', 'Auditor: read-only, including the event history'],
  ['operator', 'Operator: may refresh, revoke and disconnect installations'],
  ['admin', 'Admin: everything, including keys, apps and settings'],
];

/** The new key, shown this once, with a copy button. */
function secretBox(key) {
  const code = h('code', { class: 'secret', id: 'new-key-secret' }, key.api_key);
  const copy = h('button', { type: 'button', class: 'btn btn-small', id: 'copy-key' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(key.api_key);
      toast('Key copied to the clipboard.');
    } catch (e) {
      // No clipboard permission (e.g. plain http): select it for a manual copy.
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      toast('Copy the selected key with Ctrl+C / ⌘C.');
    }
  });
  const dismiss = h('button', { type: 'button', class: 'btn btn-small', id: 'dismiss-key' }, 'I have stored it');
  const box = h('div', { class: 'card secret-once', role: 'status', id: 'key-secret' },
    h('p', {}, h('strong', {}, `Key "${key.name}" (${key.role}) created. `),
      'Copy it now: you will not see it again. Hubkeeper keeps only a hash of it.'),
    h('p', { class: 'secret-row' }, code, ' ', copy),
    h('p', { class: 'hint' }, 'Send it as ', h('code', {}, 'Authorization: Bearer <key>'), '. Anyone holding it acts with its role; revoke it here when it is no longer needed.'),
    h('div', { class: 'form-actions' }, dismiss));
  dismiss.addEventListener('click', () => box.remove());
  return box;
}

function statusBadge(key) {
  if (key.revoked_at) return h('span', { class: 'badge badge-muted', title: `Revoked ${new Date(key.revoked_at).toLocaleString()}` }, 'Revoked');
  return h('span', { class: 'badge badge-ok' }, 'Active');
}

export async function render(ctx) {
  const { root } = ctx;
  const admin = ctx.can('administer');
  let closed = false;
  const secretSlot = h('div', { id: 'key-secret-slot' });
  const formSlot = h('div', { id: 'key-form-slot' });
  const listBox = h('div', { id: 'keys-list' }, loading('Loading keys…'));
  const createButton = actionButton('Create a key', {
    allowed: admin,
    deniedReason: ctx.deniedReason('administer'),
    small: false,
    onClick: () => openForm(),
  });
  createButton.id = 'create-key';
  createButton.classList.add('btn-primary');

  root.append(
    pageHeader('API Keys', 'Keys for scripts, app backends and people: each has a role; service keys are bound to the apps whose tokens they receive. A key is shown once, when it is created.', createButton),
    secretSlot,
    formSlot,
    section('Keys', listBox));

  let apps = [];

  async function loadApps() {
    try {
      const data = await get('/v1/apps' + query({ limit: 200 }));
      apps = listOf(data, 'apps').items.filter((a) => !a.deleted_at);
    } catch (e) {
      apps = [];
    }
  }

  function appLabel(id) {
    const app = apps.find((a) => a.app_id === id);
    return app ? app.label : id;
  }

  async function openForm() {
    clear(secretSlot);
    await loadApps();
    if (closed) return;
    const role = h('select', { name: 'role', id: 'key-role' },
      ...ROLES.map(([value, label]) => h('option', { value }, label)));
    const name = h('input', { type: 'text', name: 'name', id: 'key-name', maxlength: 100, required: true, autocomplete: 'off', placeholder: 'ci-bot' });
    const boxes = apps.map((a) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', name: 'apps', value: a.app_id }), ' ', a.label, ' ', h('code', { class: 'muted' }, a.app_id)));
    const appsError = h('p', { class: 'field-error', id: 'key-apps-error', hidden: true });
    const appsSet = h('fieldset', { id: 'key-apps' },
      h('legend', {}, 'Apps (service keys only)'),
      boxes.length ? null : h('p', { class: 'hint' }, 'No apps yet: add one on App Management first.'),
      ...boxes, appsError);
    const syncApps = () => { appsSet.hidden = role.value !== 'service'; };
    role.addEventListener('change', syncApps);
    syncApps();
    const save = h('button', { type: 'submit', class: 'btn btn-primary', id: 'save-key' }, 'Create key');
    const cancel = h('button', { type: 'button', class: 'btn', onclick: () => clear(formSlot) }, 'Cancel');
    const form = h('form', { class: 'form', id: 'key-form', novalidate: true },
      field('Role', role, 'What the key may do.'),
      field('Name', name, 'To recognise the key by in this list and in the activity log.'),
      appsSet,
      h('div', { class: 'form-actions' }, cancel, save));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const trimmed = name.value.trim();
      setFieldError(name, trimmed ? (trimmed.length > 100 ? 'At most 100 characters.' : null) : 'Give the key a name.');
      const chosen = role.value === 'service'
        ? boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value)
        : [];
      const appsProblem = role.value === 'service' && !chosen.length ? 'Choose the apps whose tokens this key receives.' : null;
      appsError.textContent = appsProblem || '';
      appsError.hidden = !appsProblem;
      if (!trimmed || trimmed.length > 100 || appsProblem) return;
      const body = { role: role.value, name: trimmed };
      if (chosen.length) body.apps = chosen;
      const created = await attempt(save, () => post('/v1/keys', body), {
        succeeded: () => null,
        failed: 'The key was not created',
      });
      if (!created) return;
      clear(formSlot);
      clear(secretSlot).append(secretBox(created));
      load();
    });
    clear(formSlot).append(h('section', { class: 'card', 'aria-labelledby': 'key-form-title' },
      h('h2', { id: 'key-form-title' }, 'Create a key'), form));
    role.focus();
  }

  let loadSeq = 0;
  async function load() {
    // Reloads scheduled after an action may fire after the page was left (or the user logged out).
    if (closed) return;
    const seq = ++loadSeq;
    if (!listBox.querySelector('table')) clear(listBox).append(loading('Loading keys…'));
    try {
      const data = await get('/v1/keys');
      if (!apps.length) await loadApps();
      if (closed || seq !== loadSeq) return;
      const keys = (data.keys || []).slice().reverse();
      clear(listBox).append(table([
        { label: 'Name', cell: (k) => h('span', {}, h('strong', {}, k.name), h('span', { class: 'sub' }, h('code', {}, k.id))) },
        { label: 'Role', cell: (k) => h('span', { class: `role role-${k.role}` }, k.role) },
        { label: 'Apps', cell: (k) => (k.apps.length ? k.apps.map(appLabel).join(', ') : '—') },
        { label: 'Created', cell: (k) => h('span', {}, time(k.created_at), h('span', { class: 'sub' }, `by ${actorLabel(k.created_by)}`)) },
        { label: 'Last used', cell: (k) => (k.last_used_at ? time(k.last_used_at) : 'never') },
        { label: 'Status', cell: (k) => statusBadge(k) },
        { label: 'Actions', class: 'actions', cell: (k) => (k.revoked_at ? '—' : revokeButton(k)) },
      ], keys, {
        caption: 'API keys, newest first',
        rowId: (k) => k.id,
        empty: emptyState('No keys', 'Create the first key with "Create a key".'),
      }));
    } catch (e) {
      if (!closed && seq === loadSeq) clear(listBox).append(errorState(e, load));
    }
  }

  function revokeButton(key) {
    const own = ctx.me && ctx.me.key_id === key.id;
    const btn = actionButton('Revoke', {
      allowed: admin,
      danger: true,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        const answer = await confirmAction({
          title: `Revoke the key "${key.name}"?`,
          intro: own ? 'This is the key you are logged in with: your session ends too.' : `Key ${key.id} (${key.role}).`,
          consequences: [
            'Every request with this key is refused from now on, in every API process.',
            'Dashboard sessions opened with it end at once.',
            'A revoked key cannot be restored: create a new one if it is needed again.',
          ],
          confirmLabel: 'Revoke key',
          danger: true,
        });
        if (!answer) return;
        await attempt(btn, () => del(`/v1/keys/${encodeURIComponent(key.id)}`), {
          succeeded: () => `Key "${key.name}" revoked.`,
          failed: 'The key was not revoked',
        });
        settle(load);
      },
    });
    btn.dataset.action = 'revoke';
    return btn;
  }

  await load();
  return () => { closed = true; };
}
