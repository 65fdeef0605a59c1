// Settings: the runtime settings every process applies within seconds (OAuth callback
// rate limiting, logging, backups), maintenance actions (reload configuration, clear the
// rate-limit cache), backups and the integration self-test; then the dashboard's own sections
// (your access, the process configuration) from process-configuration.js.

import { get, post, api } from '../api.js';
import { h, clear, section, loading, errorState, table, helpPanel, field, setFieldError, toast, confirmAction, actionButton, run, attempt, time, stat } from '../ui.js';
import { HELP } from '../help.js';
import { renderProcessConfiguration } from '../process-configuration.js';

const LEVELS = [['', 'From each process\'s configuration (HK_LOG)'], ['error', 'error'], ['warn', 'warn'], ['info', 'info'], ['debug', 'debug'], ['trace', 'trace']];

const STEP_LABELS = {
  database_schema: 'Database schema',
  oauth_initiation: 'OAuth flow initiation',
  oauth_callback: 'OAuth callback handling',
  token_exchange_and_refresh: 'Token exchange and refresh',
  hubspot_api: 'HubSpot API connectivity',
  rate_limit_enforcement: 'Rate-limit enforcement',
};

function checkbox(id, checked) {
  return h('input', { type: 'checkbox', id, checked: !!checked });
}

function intInput(name, value, min, max) {
  return h('input', { name, type: 'number', min, max, step: 1, value, required: true });
}

/** A whole number within [min, max], or null (and the field shows why). */
function readInt(input, min, max) {
  const v = input.value.trim();
  const ok = /^\d+$/.test(v) && Number(v) >= min && Number(v) <= max;
  setFieldError(input, ok ? null : `A whole number from ${min} to ${max}.`);
  return ok ? Number(v) : null;
}

function statusBadgeOf(status) {
  const kind = status === 'passed' ? 'ok' : status === 'failed' ? 'error' : 'muted';
  return h('span', { class: `badge badge-${kind}` }, status);
}

export async function render(ctx) {
  const { root } = ctx;
  let closed = false;
  const admin = ctx.can('administer');
  const denied = ctx.deniedReason('administer');
  const cleanupServer = await renderProcessConfiguration(ctx);

  const versionNote = h('p', { class: 'hint', id: 'settings-version' });
  const rateBox = h('div', { id: 'rate-limit-settings' }, loading());
  const loggingBox = h('div', { id: 'logging-settings' }, loading());
  const backupBox = h('div', { id: 'backup-settings' }, loading());
  const selftestBox = h('div', { id: 'selftest' }, loading());
  const maintenanceBox = h('div', { id: 'maintenance' });
  const mine = h('div', { id: 'runtime-settings' },
    versionNote,
    section('Security & rate limiting', rateBox),
    section('Logging configuration', loggingBox),
    section('Automated backups', backupBox),
    section('Integration testing', selftestBox),
    section('Maintenance', maintenanceBox));
  const header = root.querySelector('.page-header');
  if (header) header.after(mine);
  else root.prepend(mine);

  async function save(body, button, what) {
    const saved = await attempt(button, () => api('PUT', '/v1/settings', body), {
      succeeded: (r) => `${what} saved (settings version ${r.version}); every running Hubkeeper process applies it within seconds.`,
      failed: `${what} not saved`,
    });
    if (saved) draw(saved);
  }

  function saveButton(label) {
    return actionButton(label, { allowed: admin, deniedReason: denied, small: false });
  }

  function draw(s) {
    const v = s.values;
    clear(versionNote).append(s.version
      ? `Settings version ${s.version}, changed ${s.changed_at ? new Date(s.changed_at).toLocaleString() : ''}. This process applied version ${s.applied_version}.`
      : 'No setting has been changed yet: every process runs with its defaults and its own configuration.');

    // Rate limiting.
    const enabled = checkbox('rl-enabled', v.oauth_rate_limit.enabled);
    const windowSecs = intInput('window_secs', v.oauth_rate_limit.window_secs, 1, 86400);
    const max = intInput('max_per_ip', v.oauth_rate_limit.max_per_ip, 1, 100000);
    const rateSave = saveButton('Save rate limiting');
    rateSave.type = 'submit';
    const rateForm = h('form', { novalidate: true },
      h('div', { class: 'check' }, enabled, h('label', { for: 'rl-enabled' }, 'Limit OAuth callback requests per IP address')),
      h('div', { class: 'form-grid' },
        field('Time window (seconds)', windowSecs, 'Time window for rate limiting. Production: 60; development: 300.'),
        field('Max requests per window', max, 'Maximum requests allowed per IP per window. Production: 10; development: 30.')),
      s.customized && !s.customized.oauth_rate_limit ? h('p', { class: 'note' }, 'Not set here yet: each process uses HK_OAUTH_RATE_LIMIT_MAX and HK_OAUTH_RATE_LIMIT_WINDOW_SECS until you save.') : null,
      h('div', { class: 'form-actions' }, rateSave));
    rateForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const w = readInt(windowSecs, 1, 86400);
      const m = readInt(max, 1, 100000);
      if (w === null || m === null) return;
      save({ oauth_rate_limit: { enabled: enabled.checked, window_secs: w, max_per_ip: m } }, rateSave, 'Rate limiting');
    });
    clear(rateBox).append(rateForm);

    // Logging.
    const verbose = checkbox('log-verbose', v.logging.verbose_requests);
    const level = h('select', { name: 'level' }, LEVELS.map(([val, label]) => h('option', { value: val, selected: (v.logging.level || '') === val }, label)));
    const retention = intInput('retention_days', v.logging.retention_days, 1, 3650);
    const logSave = saveButton('Save logging');
    logSave.type = 'submit';
    const logForm = h('form', { novalidate: true },
      h('div', { class: 'check' }, verbose, h('label', { for: 'log-verbose' }, 'Verbose request logging (one line per request and response)')),
      h('div', { class: 'form-grid' },
        field('Log level', level, 'INFO for production; DEBUG only while troubleshooting.'),
        field('Retention (days)', retention, 'How long Hubkeeper keeps usage receipts and backup and self-test records.')),
      h('div', { class: 'form-actions' }, logSave));
    logForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const days = readInt(retention, 1, 3650);
      if (days === null) return;
      save({ logging: { verbose_requests: verbose.checked, level: level.value || null, retention_days: days } }, logSave, 'Logging');
    });
    clear(loggingBox).append(logForm, helpPanel(HELP.logging));

    // Backups.
    const backupsOn = checkbox('backup-enabled', v.backups.enabled);
    const at = h('input', { name: 'daily_at', type: 'time', value: v.backups.daily_at, required: true });
    const keep = intInput('keep', v.backups.keep, 1, 1000);
    const backupSave = saveButton('Save backups');
    backupSave.type = 'submit';
    const backupNow = actionButton('Back up now', { allowed: admin, deniedReason: denied, small: false });
    backupNow.id = 'backup-now';
    backupNow.addEventListener('click', async () => {
      if (!admin) return;
      await attempt(backupNow, () => post('/v1/backups'), {
        succeeded: (r) => `Backup ${r.file} written (${Math.round(r.bytes / 1024)} KiB).`,
        failed: 'The backup failed',
      });
      loadBackups();
    });
    const backupForm = h('form', { novalidate: true },
      h('div', { class: 'check' }, backupsOn, h('label', { for: 'backup-enabled' }, 'Schedule automatic database backups')),
      h('div', { class: 'form-grid' },
        field('Daily at (UTC)', at, 'Default 01:00.'),
        field('Keep the newest', keep, 'Older backups are deleted. Default 30.')),
      h('div', { class: 'form-actions' }, backupNow, backupSave),
      h('div', { id: 'backup-runs' }, loading('Loading backups…')));
    backupForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const k = readInt(keep, 1, 1000);
      const ok = /^\d{2}:\d{2}$/.test(at.value);
      setFieldError(at, ok ? null : 'A time of day, HH:MM.');
      if (k === null || !ok) return;
      save({ backups: { enabled: backupsOn.checked, daily_at: at.value, keep: k } }, backupSave, 'Backups');
    });
    clear(backupBox).append(backupForm);
    loadBackups();
  }

  async function loadBackups() {
    const box = document.getElementById('backup-runs');
    if (!box) return;
    try {
      const b = await get('/v1/backups');
      if (closed) return;
      const last = (b.runs || [])[0];
      clear(box).append(
        h('p', { class: 'hint' }, last
          ? ['Last backup: ', time(last.started_at), ` (${last.trigger}) `, last.ok === false ? h('span', { class: 'badge badge-error' }, 'failed: ' + (last.error || '')) : last.ok ? h('span', { class: 'badge badge-ok' }, last.file || 'ok') : h('span', { class: 'badge badge-muted' }, 'running')]
          : 'Last backup: never.'),
        b.dir ? h('p', { class: 'hint' }, 'Directory on this server: ', h('code', {}, b.dir)) : null,
        table([
          { label: 'File', cell: (f) => h('code', {}, f.name) },
          { label: 'Size', cell: (f) => `${Math.max(1, Math.round(f.bytes / 1024))} KiB` },
        ], (b.files || []).slice(0, 10), { caption: 'Backup files' , empty: h('p', { class: 'muted' }, 'No backup files on this server yet.') }));
    } catch (e) {
      if (!closed) clear(box).append(errorState(e, loadBackups));
    }
  }

  function drawReport(box, report) {
    clear(box);
    if (!report) {
      box.append(h('p', { class: 'hint' }, 'Last run: never.'));
      return;
    }
    box.append(
      h('div', { class: 'stats stats-small' },
        stat('Result', report.passed ? 'Passed' : 'Failed', `${new Date(report.finished_at).toLocaleString()}`, { tone: report.passed ? 'ok' : 'down' }),
        stat('Against', report.simulator ? 'Simulator' : 'HubSpot', report.hubspot_api_url)),
      table([
        { label: 'Step', cell: (s) => STEP_LABELS[s.name] || s.name },
        { label: 'Result', cell: (s) => statusBadgeOf(s.status) },
        { label: 'Details', cell: (s) => s.detail },
        { label: 'Time', cell: (s) => `${s.duration_ms} ms` },
      ], report.steps || [], { caption: 'Self-test steps' }));
  }

  async function loadSelftest() {
    const runButton = actionButton('Run tests', { allowed: admin, deniedReason: denied, small: false });
    runButton.id = 'run-selftest';
    runButton.classList.add('btn-primary');
    const reportBox = h('div', { id: 'selftest-report' }, loading());
    runButton.addEventListener('click', async () => {
      if (!admin) return;
      await run(runButton, async () => {
        try {
          const report = await post('/v1/selftest');
          drawReport(reportBox, report);
          const failed = (report.steps || []).find((s) => s.status === 'failed');
          toast(report.passed ? 'Every integration test passed.' : `The self-test failed at "${STEP_LABELS[failed.name] || failed.name}": ${failed.detail}`, report.passed ? 'ok' : 'error');
        } catch (e) {
          toast(`The self-test could not run: ${e.message}`, 'error');
        }
      });
    });
    clear(selftestBox).append(
      h('p', {}, 'Tests OAuth flow initiation and callback handling, token exchange and refresh, HubSpot API connectivity, database schema validation and rate-limit enforcement against the configured HubSpot, without changing tenant data.'),
      h('div', { class: 'form-actions' }, runButton),
      reportBox);
    try {
      const last = await get('/v1/selftest');
      if (!closed) drawReport(reportBox, last.last);
    } catch (e) {
      if (!closed) clear(reportBox).append(errorState(e));
    }
  }

  function drawMaintenance() {
    const clearLimits = actionButton('Clear rate-limit cache', { allowed: admin, deniedReason: denied, small: false });
    clearLimits.id = 'clear-rate-limits';
    clearLimits.addEventListener('click', async () => {
      if (!admin) return;
      const ok = await confirmAction({
        title: 'Clear the rate-limit cache?',
        consequences: ['Every process resets its per-IP counters at once.', 'Blocked users can connect again.', 'Security risk: protection against abuse is lifted until the counters fill up again.'],
        confirmLabel: 'Clear counters',
      });
      if (!ok) return;
      await run(clearLimits, async () => {
        try {
          const r = await post('/v1/maintenance/clear-rate-limits');
          toast(r.message || 'Rate-limit counters cleared everywhere.');
        } catch (e) {
          toast(e.message, 'error');
        }
      });
    });
    const reload = actionButton('Reload configuration', { allowed: admin, deniedReason: denied, small: false });
    reload.id = 'reload-config';
    reload.addEventListener('click', async () => {
      if (!admin) return;
      await run(reload, async () => {
        try {
          const r = await post('/v1/maintenance/reload-config');
          toast(r.message || 'Every process re-reads its settings now.');
        } catch (e) {
          toast(e.message, 'error');
        }
      });
      setTimeout(load, 1000);
    });
    clear(maintenanceBox).append(
      h('div', { class: 'form-actions' }, clearLimits, reload),
      h('p', { class: 'hint' }, 'Reload makes every process re-read these settings from the database (zero downtime). Environment settings such as ports, URLs and keys (listed under Server configuration) need a restart.'));
  }

  async function load() {
    try {
      const s = await get('/v1/settings');
      if (!closed) draw(s);
    } catch (e) {
      if (!closed) {
        for (const box of [rateBox, loggingBox, backupBox]) clear(box).append(errorState(e, load));
      }
    }
  }

  drawMaintenance();
  await Promise.all([load(), loadSelftest()]);
  return () => {
    closed = true;
    if (typeof cleanupServer === 'function') cleanupServer();
  };
}
