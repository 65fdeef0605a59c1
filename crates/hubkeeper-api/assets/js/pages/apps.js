// App Management: the HubSpot OAuth apps customers connect through. Add, edit (within the
// rules: client ID and secret never change by an edit; a rotated secret goes through
// POST /v1/apps/{id}/rotate-secret), delete (refused while installations are active unless
// forced), and resume refreshes parked after HubSpot rejected the app's client credentials.

import { get, post, patch, del, query, listOf } from '../api.js';
import { h, clear, pageHeader, section, loading, errorState, emptyState, time, table, helpPanel, field, setFieldError, toast, confirmAction, actionButton, run, attempt, settle, connectButton } from '../ui.js';
import { HELP } from '../help.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SCOPE = /^[A-Za-z0-9._:-]+$/;
const ENVIRONMENTS = [['development', 'Development'], ['staging', 'Staging'], ['production', 'Production']];

function splitScopes(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

function splitLines(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

/** Why a list of return URLs will not be accepted, or null. */
function returnUrlsProblem(list) {
  for (const text of list) {
    let url;
    try {
      url = new URL(text);
    } catch (e) {
      return `${text} is not a full URL, e.g. https://app.example.com/hubspot/connected.`;
    }
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) return `${text} must start with https:// (http:// only for localhost).`;
    if (url.search || url.hash) return `${text} must not contain a ?query or #fragment: it is a prefix.`;
    if (url.username || url.password) return `${text} must not contain a user name or password.`;
  }
  return list.length > 20 ? 'At most 20 return URLs.' : null;
}

/** Why a redirect URI will not work, or null. */
function redirectProblem(text) {
  let url;
  try {
    url = new URL(text);
  } catch (e) {
    return 'Enter a full URL, e.g. https://hubkeeper.example.com/oauth/callback.';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'The redirect URI must start with https:// (or http:// for localhost).';
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
  if (url.protocol === 'http:' && !loopback) return 'HubSpot accepts plain http:// only for localhost; use https://.';
  if (url.hash) return 'A redirect URI cannot contain a #fragment.';
  if (url.username || url.password) return 'A redirect URI cannot contain a user name or password.';
  return null;
}

function scopesProblem(list, required) {
  if (required && !list.length) return 'List at least one scope, e.g. "oauth crm.objects.contacts.read".';
  const bad = list.find((s) => !SCOPE.test(s));
  return bad ? `"${bad}" is not a valid scope name.` : null;
}

export async function render(ctx) {
  const { root } = ctx;
  let closed = false;
  const admin = ctx.can('administer');
  const formSlot = h('div', { id: 'app-form-slot' });
  const listBox = h('div', { id: 'apps-list' }, loading('Loading apps…'));
  const addButton = actionButton('Add an app', {
    allowed: admin,
    deniedReason: ctx.deniedReason('administer'),
    small: false,
    onClick: () => openForm(null),
  });
  addButton.id = 'add-app';
  addButton.classList.add('btn-primary');

  root.append(
    pageHeader('App Management', 'The HubSpot OAuth apps customers connect through: one per environment, product or region. Client IDs and secrets come from HubSpot\'s developer portal.', addButton),
    formSlot,
    section('Apps', listBox),
    h('div', { class: 'help-grid' },
      helpPanel(HELP.whyApps),
      helpPanel(HELP.addApp),
      helpPanel(HELP.editApp),
      helpPanel(HELP.deleteApp)));

  let apps = [];

  let loadSeq = 0;
  async function load() {
    // Reloads after a change keep the current table until the new one is there (no flicker);
    // only the latest of overlapping reloads is drawn.
    const seq = ++loadSeq;
    if (!listBox.querySelector('table')) clear(listBox).append(loading('Loading apps…'));
    try {
      const data = await get('/v1/apps' + query({ limit: 200 }));
      if (closed || seq !== loadSeq) return;
      apps = listOf(data, 'apps').items;
      clear(listBox);
      if (!apps.length) {
        listBox.append(emptyState('No apps yet',
          admin ? 'Add your HubSpot app with "Add an app": you need its client ID, client secret, redirect URI and scopes from HubSpot\'s developer portal.'
            : 'An admin has to add the first HubSpot app before customers can connect.'));
        return;
      }
      listBox.append(table([
        { label: 'Label', cell: (a) => h('span', {}, h('strong', {}, a.label),
          a.refreshes_parked_at ? h('span', { class: 'badge badge-error', title: 'HubSpot rejected this app\'s client credentials: its token refreshes are parked until the secret is rotated or refreshes are resumed.' }, 'Refreshes parked') : null,
          a.description ? h('span', { class: 'sub' }, a.description) : null) },
        { label: 'Client ID', cell: (a) => h('code', { class: 'nowrap' }, a.client_id) },
        { label: 'Environment', cell: (a) => h('span', { class: `badge badge-env-${a.environment}` }, a.environment) },
        { label: 'Installations', cell: (a) => h('span', {}, String(a.installation_count ?? 0), h('span', { class: 'sub' }, `${a.active_installation_count ?? 0} active`)) },
        { label: 'Created', cell: (a) => time(a.created_at || a.registered_at, { date: true }) },
        { label: 'Actions', class: 'actions', cell: (a) => h('div', { class: 'row-actions' },
          connectButton(a, { label: 'Connect account', small: true }),
          a.refreshes_parked_at ? resumeButton(a) : null,
          editButton(a), a.deleted_at ? null : rotateButton(a), deleteButton(a)) },
      ], apps, { caption: 'Apps', rowId: (a) => a.app_id }));
    } catch (e) {
      if (!closed && seq === loadSeq) clear(listBox).append(errorState(e, load));
    }
  }

  function editButton(app) {
    const btn = actionButton('Edit', {
      allowed: admin,
      deniedReason: ctx.deniedReason('administer'),
      onClick: () => openForm(app),
    });
    btn.dataset.action = 'edit';
    return btn;
  }

  function resumeButton(app) {
    const btn = actionButton('Resume refreshes', {
      allowed: admin,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        const answer = await confirmAction({
          title: `Resume the token refreshes of "${app.label}"?`,
          intro: `HubSpot rejected this app's client credentials (since ${new Date(app.refreshes_parked_at).toLocaleString()}), so Hubkeeper stopped refreshing its installations' tokens.`,
          consequences: HELP.resumeRefreshes.consequences,
          confirmLabel: 'Resume refreshes',
        });
        if (!answer) return;
        await attempt(btn, () => post(`/v1/apps/${app.app_id}/resume-refreshes`), {
          succeeded: () => `Refreshes of "${app.label}" resumed.`,
          failed: 'Refreshes were not resumed',
        });
        settle(load);
      },
    });
    btn.dataset.action = 'resume-refreshes';
    return btn;
  }

  function rotateButton(app) {
    const btn = actionButton('Rotate secret', {
      allowed: admin,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        const secret = h('input', { type: 'password', id: 'rotate-secret', name: 'client_secret', autocomplete: 'new-password', spellcheck: 'false', required: true });
        const hours = h('input', { type: 'number', id: 'rotate-overlap', name: 'overlap_hours', min: 0, max: 720, step: 1, value: 24 });
        const extra = h('div', {},
          field('New client secret', secret, 'From the app\'s Auth page in HubSpot\'s developer portal, after rotating it there. Stored encrypted; never shown again.'),
          field('Overlap (hours)', hours, 'For this long webhooks signed with the previous secret are still accepted (0 to 720).'));
        const answer = await confirmAction({
          title: `Rotate the client secret of "${app.label}"?`,
          intro: 'Rotate it in HubSpot first, then paste the new secret here.',
          consequences: HELP.rotateSecret.consequences,
          confirmLabel: 'Rotate secret',
          extra,
        });
        if (!answer) return;
        const value = secret.value.trim();
        const overlap = Number(hours.value);
        if (!value) {
          toast('The secret was not rotated: paste the new client secret.', 'error');
          return;
        }
        if (!Number.isInteger(overlap) || overlap < 0 || overlap > 720) {
          toast('The secret was not rotated: the overlap is a whole number of hours from 0 to 720.', 'error');
          return;
        }
        await attempt(btn, () => post(`/v1/apps/${app.app_id}/rotate-secret`, { client_secret: value, overlap_secs: overlap * 3600 }), {
          succeeded: () => `Client secret of "${app.label}" rotated; the previous one is accepted for webhooks for ${overlap} hour${overlap === 1 ? '' : 's'}.`,
          failed: 'The secret was not rotated',
        });
        settle(load);
      },
    });
    btn.dataset.action = 'rotate-secret';
    return btn;
  }

  function deleteButton(app) {
    const btn = actionButton('Delete', {
      danger: true,
      allowed: admin,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        const active = app.active_installation_count ?? 0;
        const total = app.installation_count ?? 0;
        const force = h('input', { type: 'checkbox', id: 'force-delete' });
        const extra = h('div', {},
          h('p', { class: total ? 'count warning' : 'count' },
            h('strong', {}, `${total} installation${total === 1 ? '' : 's'}`), `, ${active} active.`),
          active
            ? h('div', { class: 'check' }, force, h('label', { for: 'force-delete' }, `Delete anyway: the ${active} active installation${active === 1 ? '' : 's'} will lose access`))
            : null);
        const answer = await confirmAction({
          title: `Delete the app "${app.label}"?`,
          consequences: HELP.deleteApp.consequences,
          confirmLabel: 'Delete app',
          danger: true,
          extra,
        });
        if (!answer) return;
        await attempt(btn, () => del(`/v1/apps/${app.app_id}` + query({ force: force.checked ? 'true' : undefined })), {
          succeeded: (r) => `App "${app.label}" deleted${r && r.forced ? ` (forced, ${r.active_installations} active installations lost access)` : ''}.`,
          failed: 'The app was not deleted',
        });
        settle(load);
      },
    });
    btn.dataset.action = 'delete';
    return btn;
  }

  function openForm(app) {
    clear(formSlot);
    const editing = !!app;
    const label = h('input', { name: 'label', required: true, maxlength: 100, value: app ? app.label : '' });
    const description = h('textarea', { name: 'description', rows: 2, maxlength: 1000 }, app ? app.description || '' : '');
    const environment = h('select', { name: 'environment' }, ENVIRONMENTS.map(([v, l]) => h('option', { value: v, selected: app ? app.environment === v : v === 'development' }, l)));
    const clientId = h('input', { name: 'client_id', required: !editing, readonly: editing, value: app ? app.client_id : '', spellcheck: 'false', autocomplete: 'off', placeholder: 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx' });
    const clientSecret = editing ? null : h('input', { name: 'client_secret', type: 'password', required: true, autocomplete: 'new-password', spellcheck: 'false' });
    const redirect = h('input', { name: 'redirect_uri', type: 'url', required: true, value: app ? app.redirect_uri : `${location.origin}/oauth/callback`, spellcheck: 'false' });
    const scopes = h('input', { name: 'scopes', required: true, value: app ? (app.scopes || []).join(' ') : 'oauth', spellcheck: 'false' });
    const optional = h('input', { name: 'optional_scopes', value: app ? (app.optional_scopes || []).join(' ') : '', spellcheck: 'false' });
    const returnUrls = h('textarea', { name: 'return_urls', rows: 2, spellcheck: 'false', placeholder: 'https://app.example.com/hubspot/connected' });
    // The list comes from the app itself (the list view does not carry it).
    let currentReturnUrls = [];
    if (editing) {
      returnUrls.disabled = true;
      get(`/v1/apps/${app.app_id}`)
        .then((full) => {
          currentReturnUrls = full.return_urls || [];
          returnUrls.value = currentReturnUrls.join('\n');
        })
        .catch(() => {})
        .finally(() => { returnUrls.disabled = false; });
    }
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, editing ? 'Save changes' : 'Add app');
    const cancel = h('button', { type: 'button', class: 'btn', onclick: () => clear(formSlot) }, 'Cancel');
    const formError = h('p', { class: 'field-error', role: 'alert', hidden: true });
    const form = h('form', { class: 'app-form', novalidate: true, id: 'app-form' },
      h('div', { class: 'form-grid' },
        field('Label', label, 'Your name for this app, e.g. "Production EU".'),
        field('Environment', environment),
        field('Client ID', clientId, editing
          ? 'Cannot change: it ties this entry to one HubSpot app. For another HubSpot app, add a new entry.'
          : 'From HubSpot\'s developer portal (Auth tab), in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.'),
        editing
          ? h('div', { class: 'field' }, h('p', { class: 'label-like' }, 'Client secret'), h('p', { class: 'hint' }, 'Stored encrypted and never shown. After rotating it in HubSpot, use "Rotate secret" in the list.'))
          : field('Client secret', clientSecret, 'From the same page. Stored encrypted; it is never shown again.'),
        field('Redirect URI', redirect, 'Exactly as configured in HubSpot, including https:// and the path.'),
        field('Scopes', scopes, 'Required scopes, separated by spaces.'),
        field('Optional scopes', optional, 'Scopes customers may decline, separated by spaces (may be empty).'),
        field('Return URLs', returnUrls, 'Where connect sessions may send your customers back to after HubSpot, one per line: scheme, host, port and path prefix must match (https://, or http:// for localhost).'),
        field('Description', description)),
      formError,
      h('div', { class: 'form-actions' }, cancel, submit));

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      formError.hidden = true;
      const values = {
        label: label.value.trim(),
        description: description.value.trim(),
        environment: environment.value,
        redirect_uri: redirect.value.trim(),
        scopes: splitScopes(scopes.value),
        optional_scopes: splitScopes(optional.value),
        return_urls: splitLines(returnUrls.value),
      };
      const problems = [
        [label, values.label ? null : 'Give the app a label.'],
        [redirect, redirectProblem(values.redirect_uri)],
        [scopes, scopesProblem(values.scopes, true)],
        [optional, scopesProblem(values.optional_scopes, false)],
        [returnUrls, returnUrlsProblem(values.return_urls)],
      ];
      if (!editing) {
        problems.push([clientId, UUID.test(clientId.value.trim()) ? null : 'A HubSpot client ID looks like xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hexadecimal digits).']);
        problems.push([clientSecret, clientSecret.value.trim() ? null : 'Paste the client secret from HubSpot.']);
      }
      let first = null;
      for (const [input, problem] of problems) {
        setFieldError(input, problem);
        if (problem && !first) first = input;
      }
      if (first) {
        first.focus();
        return;
      }
      if (editing) {
        const changes = {};
        for (const key of ['label', 'description', 'environment', 'redirect_uri']) {
          if ((app[key] || '') !== values[key]) changes[key] = values[key];
        }
        const sameSet = (a, b) => a.length === b.length && a.every((x) => b.includes(x));
        if (!sameSet(values.scopes, app.scopes || [])) changes.scopes = values.scopes;
        if (!sameSet(values.optional_scopes, app.optional_scopes || [])) changes.optional_scopes = values.optional_scopes;
        if (!returnUrls.disabled && values.return_urls.join('\n') !== currentReturnUrls.join('\n')) changes.return_urls = values.return_urls;
        if (!Object.keys(changes).length) {
          toast('Nothing changed.');
          clear(formSlot);
          return;
        }
        const cautions = [];
        const removed = (app.scopes || []).filter((s) => !values.scopes.includes(s));
        if (removed.length) cautions.push(`Removing ${removed.join(', ')} may break features that existing customers rely on; their current grants are not changed until they reconnect.`);
        if (changes.scopes && !removed.length) cautions.push('Adding scopes is safe, but customers must reconnect to grant them.');
        if (changes.redirect_uri) cautions.push('The new redirect URI must already be configured in HubSpot, or new connections will fail.');
        if (cautions.length) {
          const ok = await confirmAction({ title: 'Save these changes?', consequences: cautions, confirmLabel: 'Save changes' });
          if (!ok) return;
        }
        await run(submit, async () => {
          try {
            const r = await patch(`/v1/apps/${app.app_id}`, changes);
            const warnings = (r && r.warnings) || [];
            toast(`App "${values.label}" saved.` + (warnings.length ? ` Note: ${warnings.map((w) => (typeof w === 'string' ? w : w.message || JSON.stringify(w))).join(' ')}` : ''), warnings.length ? 'warn' : 'ok', { timeout: warnings.length ? 15000 : undefined });
            clear(formSlot);
            settle(load);
          } catch (err) {
            formError.textContent = err.message;
            formError.hidden = false;
          }
        });
      } else {
        await run(submit, async () => {
          try {
            await post('/v1/apps', { ...values, client_id: clientId.value.trim(), client_secret: clientSecret.value });
            clientSecret.value = '';
            toast(`App "${values.label}" added. Customers can now connect through it.`);
            clear(formSlot);
            settle(load);
          } catch (err) {
            formError.textContent = err.message;
            formError.hidden = false;
          }
        });
      }
    });

    formSlot.append(h('section', { class: 'card', 'aria-labelledby': 'app-form-title' },
      h('h2', { id: 'app-form-title' }, editing ? `Edit "${app.label}"` : 'Add an app'),
      editing ? helpPanel(HELP.editApp, { open: false }) : null,
      form));
    label.focus();
    formSlot.scrollIntoView({ block: 'start' });
  }

  await load();
  return () => { closed = true; };
}
