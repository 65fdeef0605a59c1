// The Settings page's read-only part: who you are logged in as, and the configuration this
// Hubkeeper process runs with (effective values and their source; secrets only as set/unset).
// That configuration comes from the environment at start-up, so it is shown, not edited.

import { get } from './api.js';
import { h, clear, pageHeader, section, loading, errorState, emptyState, time, table, helpPanel } from './ui.js';
import { HELP } from './help.js';

const GROUPS = [
  ['Network and addresses', /^(bind|public-url|metrics-bind)$/],
  ['OAuth and rate limiting', /^(oauth|rate)/],
  ['Tokens and refresh', /^(refresh|scheduler|refresher|token|master|hubspot|key)/],
  ['Storage and messaging', /^(database|nats|data-dir|db-|local-|relay)/],
  ['Logging', /^log/],
  ['Dashboard and access', /^(session|bootstrap)/],
];

function groupOf(name) {
  const found = GROUPS.find(([, re]) => re.test(name));
  return found ? found[0] : 'Other';
}

export async function renderProcessConfiguration(ctx) {
  const { root, me } = ctx;
  let closed = false;
  const configBox = h('div', { id: 'server-config' }, loading('Loading the configuration…'));
  root.append(
    pageHeader('Settings', 'How this Hubkeeper runs: your access, and the configuration in effect with where each value came from.'),
    section('Your access',
      h('dl', { class: 'facts' },
        h('dt', {}, 'Key'), h('dd', {}, `${me.key_name} (${me.key_id})`),
        h('dt', {}, 'Role'), h('dd', {}, me.role),
        h('dt', {}, 'Permissions'), h('dd', {}, (me.permissions || []).map((p) => p.replace(/_/g, ' ')).join(', ')),
        h('dt', {}, 'Session ends'), h('dd', {}, time(me.session_expires_at))),
      h('p', { class: 'hint' }, 'Keys are created and revoked with ', h('code', {}, 'hubkeeper admin create-key'), ' and ', h('code', {}, 'hubkeeper admin revoke-key'), '; revoking a key ends its sessions at once.')),
    section('Server configuration', configBox),
    h('div', { class: 'help-grid' }, helpPanel(HELP.serverConfig), helpPanel(HELP.logging)));

  async function load() {
    try {
      const view = await get('/v1/server/config');
      if (closed) return;
      clear(configBox);
      configBox.append(h('dl', { class: 'facts' },
        h('dt', {}, 'Version'), h('dd', {}, view.version),
        h('dt', {}, 'Roles of this process'), h('dd', {}, view.roles),
        h('dt', {}, 'Running since'), h('dd', {}, time(view.started_at))));
      const settings = view.settings || [];
      if (!settings.length) {
        configBox.append(emptyState('This process does not describe its settings', 'It was started without the command-line definition (e.g. embedded in a test).'));
        return;
      }
      const groups = new Map();
      for (const s of settings) {
        const g = groupOf(s.name);
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g).push(s);
      }
      for (const [name] of [...GROUPS, ['Other']]) {
        const rows = groups.get(name);
        if (!rows) continue;
        configBox.append(h('h3', {}, name), table([
          { label: 'Setting', cell: (s) => h('span', {}, h('code', {}, s.env || s.name), s.help ? h('span', { class: 'sub' }, s.help) : null) },
          { label: 'Value', cell: (s) => (s.secret
            ? h('span', { class: 'muted' }, s.source === 'unset' ? 'not set' : 'set (secret, not shown)')
            : (s.value === null || s.value === undefined ? h('span', { class: 'muted' }, 'not set') : h('code', { class: 'break' }, s.value))) },
          { label: 'Source', cell: (s) => s.source },
        ], rows, { caption: name }));
      }
    } catch (e) {
      if (!closed) clear(configBox).append(errorState(e, load));
    }
  }

  await load();
  return () => { closed = true; };
}
