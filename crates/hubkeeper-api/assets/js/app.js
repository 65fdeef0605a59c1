// The dashboard shell: who is logged in, the navigation, and routing between pages without
// reloading. Each page is a module under pages/ exporting `render(ctx)`; adding a page means
// adding it to PAGES below.

import { api, setCsrfToken, ApiError } from './api.js';
import { h, clear, toast } from './ui.js';
import { startRelativeClock, zoneName } from './time.js';

const BASE = '/dashboard';

const PAGES = [
  { path: '', title: 'Overview', module: './pages/overview.js' },
  { path: 'tokens', title: 'Token Management', module: './pages/tokens.js' },
  { path: 'users', title: 'User Management', module: './pages/users.js' },
  { path: 'users/:id', title: 'Tenant details', module: './pages/user-detail.js', parent: 'users' },
  { path: 'apps', title: 'App Management', module: './pages/apps.js' },
  { path: 'notifications', title: 'Notifications', module: './pages/notifications.js' },
  { path: 'pricing', title: 'Pricing Models', module: './pages/pricing-plans.js' },
  { path: 'billing', title: 'Billing & Upgrades', module: './pages/billing-usage.js' },
  { path: 'activity', title: 'Activity Logs', module: './pages/activity.js' },
  { path: 'keys', title: 'API Keys', module: './pages/api-keys.js' },
  { path: 'settings', title: 'Settings', module: './pages/settings.js' },
];

const ROLE_NOTES = {
  admin: 'Admin: full access.',
  operator: 'Operator: may refresh, revoke and disconnect; apps and settings are read-only.',
  auditor: 'Auditor: read-only. Actions are shown but refused.',
};

const state = { me: null, cleanup: null, renderId: 0 };

const $ = (id) => document.getElementById(id);

function match(pathname) {
  let rest = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : pathname;
  rest = rest.replace(/^\/+|\/+$/g, '');
  if (rest === 'login') return { login: true };
  const parts = rest === '' ? [] : rest.split('/');
  for (const page of PAGES) {
    const pattern = page.path === '' ? [] : page.path.split('/');
    if (pattern.length !== parts.length) continue;
    const params = {};
    let ok = true;
    pattern.forEach((seg, i) => {
      if (seg.startsWith(':')) params[seg.slice(1)] = decodeURIComponent(parts[i]);
      else if (seg !== parts[i]) ok = false;
    });
    if (ok) return { page, params };
  }
  return { notFound: true };
}

export function navigate(path, { replace = false } = {}) {
  const url = path.startsWith('/') ? path : `${BASE}/${path}`;
  if (replace) history.replaceState({}, '', url);
  else history.pushState({}, '', url);
  route();
}

function can(permission) {
  return !!(state.me && state.me.permissions && state.me.permissions.includes(permission));
}

function deniedReason(permission) {
  const role = state.me ? state.me.role : 'your';
  const needs = {
    operate_installations: 'an operator or admin key',
    administer: 'an admin key',
  }[permission] || 'another role';
  return `Not allowed for the ${role} role: this needs ${needs}.`;
}

function renderNav(current) {
  const nav = $('nav');
  clear(nav);
  const list = h('ul', {});
  for (const page of PAGES) {
    if (page.parent) continue;
    const href = page.path ? `${BASE}/${page.path}` : BASE;
    const active = current && (current.path === page.path || current.parent === page.path);
    list.append(h('li', {}, h('a', { href, 'data-link': true, 'aria-current': active ? 'page' : null }, page.title)));
  }
  nav.append(list, h('p', { class: 'nav-foot' }, `Times shown in ${zoneName()}`));
}

function renderWhoami() {
  const box = $('whoami');
  clear(box);
  const me = state.me;
  box.append(
    h('span', { class: 'who', title: ROLE_NOTES[me.role] || '' },
      h('span', { class: 'who-name' }, me.key_name),
      h('span', { class: `role role-${me.role}` }, me.role)),
    h('button', { type: 'button', class: 'btn btn-small', id: 'logout', onclick: logout }, 'Log out'));
  box.hidden = false;
}

async function logout() {
  try {
    await api('POST', '/auth/logout');
    toast('You are logged out.');
  } catch (e) {
    toast(e.message, 'error');
  }
  state.me = null;
  setCsrfToken(null);
  showLogin();
}

function showChrome(visible) {
  $('nav').hidden = !visible;
  $('whoami').hidden = !visible;
  $('nav-toggle').hidden = !visible;
  $('app').dataset.state = visible ? 'ready' : 'login';
}

async function showLogin(message) {
  if (state.cleanup) {
    state.cleanup();
    state.cleanup = null;
  }
  showChrome(false);
  const target = location.pathname.startsWith(BASE) && !location.pathname.startsWith(`${BASE}/login`)
    ? location.pathname + location.search
    : BASE;
  history.replaceState({ next: target }, '', `${BASE}/login`);
  document.title = 'Log in · Hubkeeper';
  const main = clear($('main'));
  const { render } = await import('./pages/login.js');
  render({
    root: main,
    message,
    onLoggedIn: (me) => {
      state.me = me;
      setCsrfToken(me.csrf_token);
      toast(`Logged in as ${me.key_name} (${me.role}).`);
      navigate(target === `${BASE}/login` ? BASE : target, { replace: true });
    },
  });
}

async function route() {
  if (!state.me) {
    showLogin();
    return;
  }
  const found = match(location.pathname);
  if (found.login) {
    navigate(BASE, { replace: true });
    return;
  }
  if (state.cleanup) {
    state.cleanup();
    state.cleanup = null;
  }
  const renderId = ++state.renderId;
  showChrome(true);
  renderWhoami();
  renderNav(found.page);
  closeMobileNav();
  const main = clear($('main'));
  if (found.notFound) {
    document.title = 'Not found · Hubkeeper';
    main.append(h('h1', {}, 'Page not found'), h('p', {}, 'There is no dashboard page at this address. ', h('a', { href: BASE, 'data-link': true }, 'Go to the overview'), '.'));
    return;
  }
  document.title = `${found.page.title} · Hubkeeper`;
  try {
    const module = await import(found.page.module);
    if (renderId !== state.renderId) return;
    const cleanup = await module.render({
      root: main,
      me: state.me,
      params: found.params,
      query: new URLSearchParams(location.search),
      can,
      deniedReason,
      navigate,
      isCurrent: () => renderId === state.renderId,
    });
    if (renderId === state.renderId) state.cleanup = typeof cleanup === 'function' ? cleanup : null;
    else if (typeof cleanup === 'function') cleanup();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    console.warn('page failed to render', e);
    main.append(h('div', { class: 'state state-error', role: 'alert' },
      h('p', { class: 'state-title' }, 'This page could not be shown'),
      h('p', {}, e && e.message ? e.message : String(e)),
      h('button', { type: 'button', class: 'btn', onclick: () => route() }, 'Try again')));
  }
  const heading = main.querySelector('h1');
  if (heading && document.activeElement === document.body) heading.setAttribute('tabindex', '-1');
}

function closeMobileNav() {
  $('app').classList.remove('nav-open');
  $('nav-toggle').setAttribute('aria-expanded', 'false');
}

function setupGlobalHandlers() {
  document.addEventListener('click', (e) => {
    const link = e.target.closest('a[data-link]');
    if (!link || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const url = new URL(link.href, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith(BASE)) return;
    e.preventDefault();
    navigate(url.pathname + url.search);
    $('main').focus();
  });
  window.addEventListener('popstate', () => route());
  window.addEventListener('hk:unauthorized', () => {
    if (state.me) {
      state.me = null;
      setCsrfToken(null);
      showLogin('Your session has ended (it expired, you logged out elsewhere, or the key was revoked). Log in again to continue.');
    }
  });
  $('nav-toggle').addEventListener('click', () => {
    const open = !$('app').classList.contains('nav-open');
    $('app').classList.toggle('nav-open', open);
    $('nav-toggle').setAttribute('aria-expanded', String(open));
    if (open) {
      const first = $('nav').querySelector('a');
      if (first) first.focus();
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && $('app').classList.contains('nav-open')) {
      closeMobileNav();
      $('nav-toggle').focus();
    }
  });
}

/** The OAuth install flow returns here with its outcome in the query string. */
function reportOAuthOutcome() {
  const params = new URLSearchParams(location.search);
  // A connect session returns with installation_id, external_ref and status=connected: Token
  // Management highlights `connected=<id>`.
  if (params.get('status') === 'connected' && params.get('installation_id')) {
    params.set('connected', params.get('installation_id'));
    for (const key of ['status', 'installation_id', 'external_ref']) params.delete(key);
    history.replaceState({}, '', location.pathname + '?' + params.toString());
    return;
  }
  const outcome = params.get('oauth') || params.get('install');
  const error = params.get('error') || params.get('oauth_error');
  if (!outcome && !error) return;
  const messages = {
    access_denied: 'The customer cancelled on HubSpot\'s consent page; nothing was connected.',
    invalid_state: 'The connection link had expired or was already used. Start the connection again.',
    missing_code: 'HubSpot did not return an authorisation code. Start the connection again.',
    redirect_uri_mismatch: 'HubSpot refused the redirect URI: it must match the app\'s configuration in HubSpot exactly.',
    invalid_client: 'HubSpot refused the app\'s client ID or secret. Check the app in App Management.',
    token_exchange_failed: 'HubSpot did not exchange the code for tokens. Start the connection again; if it keeps failing, check the activity log.',
    account_mismatch: 'The customer reference already belongs to another HubSpot account of this app; nothing was changed. Connect with that account, or use another reference.',
  };
  if (error) {
    // Only codes Hubkeeper sends are shown: the URL is anyone's to write, so an unknown value
    // (a crafted link's "call this number") never reaches the page as text.
    const known = Object.prototype.hasOwnProperty.call(messages, error);
    const message = known
      ? messages[error]
      : 'Something went wrong. Start the connection again; if it keeps failing, check the activity log.';
    toast(`Connecting the account failed: ${message}`, 'error');
  } else if (outcome === 'success' || outcome === 'connected' || outcome === '1' || outcome === 'true') {
    const hub = params.get('hub_id');
    toast(hub ? `HubSpot account ${hub} is connected.` : 'The HubSpot account is connected.');
  }
  for (const key of ['oauth', 'install', 'error', 'oauth_error', 'error_description', 'hub_id', 'installation_id', 'installation', 'app_id', 'external_ref']) {
    params.delete(key);
  }
  const rest = params.toString();
  history.replaceState({}, '', location.pathname + (rest ? '?' + rest : ''));
}

async function start() {
  setupGlobalHandlers();
  startRelativeClock();
  reportOAuthOutcome();
  try {
    const session = await api('GET', '/auth/session');
    if (!session.authenticated) {
      showLogin();
      return;
    }
    state.me = session;
    setCsrfToken(session.csrf_token);
    route();
  } catch (e) {
    const main = clear($('main'));
    main.append(h('div', { class: 'state state-error', role: 'alert' },
      h('p', { class: 'state-title' }, 'Hubkeeper is not answering'),
      h('p', {}, e.message || String(e)),
      h('button', { type: 'button', class: 'btn', onclick: () => location.reload() }, 'Try again')));
  }
}

start();
