// Log in with an API key. The key goes to the server once and is traded for an HttpOnly session
// cookie; the page does not keep it anywhere.

import { api, ApiError } from '../api.js';
import { h } from '../ui.js';

export function render({ root, message, onLoggedIn }) {
  const input = h('input', {
    id: 'api-key',
    name: 'api_key',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    'aria-describedby': 'api-key-hint',
    placeholder: 'hk_…',
  });
  const error = h('p', { class: 'field-error', id: 'login-error', role: 'alert', hidden: true });
  const show = h('input', { type: 'checkbox', id: 'show-key' });
  show.addEventListener('change', () => {
    input.type = show.checked ? 'text' : 'password';
  });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'login-submit' }, 'Log in');
  const form = h('form', { class: 'login-form', novalidate: true },
    h('div', { class: 'field' },
      h('label', { for: 'api-key' }, 'API key'),
      input,
      h('p', { class: 'hint', id: 'api-key-hint' },
        'An admin, operator or auditor key (it starts with hk_). Running ', h('code', {}, 'hubkeeper up'),
        ' locally? The first admin key is in ', h('code', {}, '.hubkeeper/admin-key'),
        '. Otherwise ask an admin, who creates keys with ', h('code', {}, 'hubkeeper admin create-key'), '.'),
      error),
    h('div', { class: 'check' }, show, h('label', { for: 'show-key' }, 'Show the key while typing')),
    submit);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    input.removeAttribute('aria-invalid');
    const key = input.value.trim();
    if (!key) {
      fail('Enter your API key.');
      return;
    }
    if (!key.startsWith('hk_')) {
      fail('That does not look like a Hubkeeper API key: keys start with hk_.');
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Logging in…';
    try {
      const me = await api('POST', '/auth/login', { api_key: key });
      input.value = '';
      onLoggedIn(me);
    } catch (err) {
      fail(err instanceof ApiError ? err.message : String(err));
      submit.disabled = false;
      submit.textContent = 'Log in';
    }
  });

  function fail(text) {
    error.textContent = text;
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', 'api-key-hint login-error');
    input.focus();
  }

  root.append(h('div', { class: 'login' },
    h('div', { class: 'login-card card' },
      h('h1', {}, 'Log in to Hubkeeper'),
      h('p', { class: 'intro' }, 'Manage connected HubSpot accounts, their tokens and your OAuth apps.'),
      message ? h('p', { class: 'notice', role: 'status' }, message) : null,
      form)));
  input.focus();
}
