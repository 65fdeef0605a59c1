// The operator actions on one installation (Refresh, Revoke, Disconnect), shared by Token
// Management, User Management and the tenant details page. Each asks for confirmation when it
// has consequences, sends the reason given, and reports its outcome.

import { get, post } from './api.js';
import { h, confirmAction, actionButton, attempt, settle, connectButton } from './ui.js';
import { formatAbsolute, relative } from './time.js';
import { HELP } from './help.js';

const PERMISSION = 'operate_installations';

function label(inst) {
  return inst.hub_domain ? `hub ${inst.hub_id} (${inst.hub_domain})` : `hub ${inst.hub_id}`;
}

function expiryText(iso) {
  return iso ? `${formatAbsolute(iso)} (${relative(iso)})` : 'unknown';
}

/** The notice an operator may give before a revoke or disconnect, in seconds. */
const NOTICE_CHOICES = [
  [3600, '1 hour'],
  [86400, '24 hours'],
  [604800, '7 days'],
];

/** The pending scheduled removal of an installation (details or list row), or null. */
export function pendingRemoval(inst) {
  if (inst.scheduled_removal) return inst.scheduled_removal;
  if (inst.removal_action) return { action: inst.removal_action, effective_at: inst.removal_effective_at };
  return null;
}

/** Which enabled endpoints of the app hear of each removal notification type (by type). */
async function notificationTargets(inst) {
  try {
    const r = await get(`/v1/installations/${inst.installation_id}/notification-targets`);
    return Object.fromEntries(r.targets.map((t) => [t.type, t]));
  } catch (e) {
    return { error: e.message };
  }
}

function endpointCount(target) {
  const n = target.endpoints.length;
  return n === 1 ? 'The app\'s endpoint' : `The app's ${n} endpoints`;
}

/**
 * The dialog's "when" choice: now (a security incident: no advance notice) or after notifying
 * the app, with a line that says plainly who is told what, and when. `removedType` is the
 * notification of the removal itself; `done` says what happens ("the tokens revoked"), `later`
 * the same as a sentence of its own ("The tokens are revoked").
 */
function removalTiming(inst, targets, removedType, done, later) {
  const pending = pendingRemoval(inst);
  const statement = h('p', { class: 'notice', role: 'status' });
  const radio = (value, label, disabled) => h('label', { class: 'choice' },
    h('input', { type: 'radio', name: 'removal-when', value: String(value), checked: value === 'now', disabled }), ' ', label);
  const fieldset = h('fieldset', { class: 'field removal-when' },
    h('legend', {}, 'When'),
    radio('now', 'Now (security incident: no advance notice)', false),
    NOTICE_CHOICES.map(([secs, label]) => radio(secs, `Notify the app first and remove in ${label}`, Boolean(pending))),
    pending ? h('p', { class: 'hint' }, `A ${pending.action} is already scheduled for ${formatAbsolute(pending.effective_at)}: cancel it to schedule another.`) : null,
    statement);
  const selected = () => {
    const input = fieldset.querySelector('input[name="removal-when"]:checked');
    return !input || input.value === 'now' ? undefined : Number(input.value);
  };
  const describe = () => {
    const notice = selected();
    const set = (state, ...content) => {
      statement.dataset.notification = state;
      statement.classList.toggle('muted', state === 'none' || state === 'unknown');
      statement.replaceChildren(...content);
    };
    if (targets.error) {
      set('unknown', `Whether the app is notified could not be checked: ${targets.error}`);
      return;
    }
    if (notice) {
      const when = formatAbsolute(new Date(Date.now() + notice * 1000).toISOString());
      const target = targets['installation.removal_scheduled'];
      if (target && target.notified) {
        set('advance', `${endpointCount(target)} will be told now (`, h('code', {}, 'installation.removal_scheduled'), `, to ${target.endpoints.map((e) => e.url).join(', ')}) and ${done} at ${when}.`);
      } else {
        set('none', 'No endpoint of this app subscribes to ', h('code', {}, 'installation.removal_scheduled'), `: nobody will be told in advance. ${later} at ${when}.`);
      }
      return;
    }
    const target = targets[removedType];
    if (target && target.notified) {
      set('sent', `No advance notice. ${endpointCount(target)} will be told (`, h('code', {}, removedType), `, to ${target.endpoints.map((e) => e.url).join(', ')}) as soon as you confirm.`);
    } else {
      set('none', 'No advance notice, and no notification goes out: the app has no enabled endpoint for ', h('code', {}, removedType), ' (Notifications page).');
    }
  };
  fieldset.addEventListener('change', describe);
  describe();
  return { element: fieldset, notice: selected };
}

/** The scheduled removal's confirmation toast text. */
function scheduledText(inst, r) {
  const s = r && r.scheduled_removal;
  const when = s ? `${formatAbsolute(s.effective_at)} (${relative(s.effective_at)})` : 'later';
  return `${s && s.action === 'disconnect' ? 'Disconnect' : 'Revoke'} of ${label(inst)} scheduled for ${when}; the app is being told now. Cancel it from the account's details until then.`;
}

/** Refreshes now; `done` is called after any outcome so the caller can reload. */
export function refreshButton(ctx, inst, done) {
  const active = ['connected', 'expired'].includes(inst.status);
  const btn = actionButton('Refresh', {
    allowed: ctx.can(PERMISSION) && active,
    deniedReason: !ctx.can(PERMISSION)
      ? ctx.deniedReason(PERMISSION)
      : 'Only connected or expired accounts have a refresh token to use; this one must connect again.',
    onClick: async () => {
      await attempt(btn, () => post(`/v1/installations/${inst.installation_id}/refresh`), {
        succeeded: (r) => (r && r.refreshed === false
          ? `Token for ${label(inst)} is still valid until ${expiryText(r.expires_at)}: no refresh was needed`
          : `Token refreshed for ${label(inst)}. New expiry: ${expiryText(r && r.expires_at)}`),
        failed: `Refresh failed for ${label(inst)}`,
      });
      settle(done);
    },
  });
  btn.dataset.action = 'refresh';
  return btn;
}

export function revokeButton(ctx, inst, done) {
  const active = ['connected', 'expired', 'needs_reauthorization'].includes(inst.status);
  const btn = actionButton('Revoke', {
    danger: true,
    allowed: ctx.can(PERMISSION) && active,
    deniedReason: !ctx.can(PERMISSION)
      ? ctx.deniedReason(PERMISSION)
      : 'This account holds no tokens to revoke.',
    onClick: async () => {
      const timing = removalTiming(inst, await notificationTargets(inst), 'installation.revoked', 'the tokens revoked', 'The tokens are revoked');
      const answer = await confirmAction({
        title: `Revoke the tokens of ${label(inst)}?`,
        extra: timing.element,
        intro: 'HubSpot is told to invalidate the refresh token, and Hubkeeper deletes the stored tokens.',
        consequences: HELP.revoke.consequences,
        confirmLabel: 'Revoke tokens',
        danger: true,
        askReason: true,
        reasonRequired: true,
        typeToConfirm: inst.hub_id,
      });
      if (!answer) return;
      const notice = timing.notice();
      await attempt(btn, () => post(`/v1/installations/${inst.installation_id}/revoke`, { reason: answer.reason, notice_secs: notice }), {
        succeeded: (r) => (notice
          ? scheduledText(inst, r)
          : `Tokens of ${label(inst)} revoked. The customer must connect again to restore access.`),
        failed: `Revoke failed for ${label(inst)}`,
      });
      settle(done);
    },
  });
  btn.dataset.action = 'revoke';
  return btn;
}

export function disconnectButton(ctx, inst, done) {
  const active = !['disconnected', 'revoked', 'forgotten'].includes(inst.status);
  const btn = actionButton('Disconnect', {
    danger: true,
    allowed: ctx.can(PERMISSION) && active,
    deniedReason: !ctx.can(PERMISSION)
      ? ctx.deniedReason(PERMISSION)
      : 'This account is already disconnected.',
    onClick: async () => {
      const timing = removalTiming(inst, await notificationTargets(inst), 'installation.disconnected', 'the account disconnected', 'The account is disconnected');
      const answer = await confirmAction({
        title: `Disconnect ${label(inst)}?`,
        extra: timing.element,
        intro: 'Hubkeeper removes the account\'s tokens and marks it disconnected. Its data and history are kept.',
        consequences: HELP.disconnect.consequences,
        confirmLabel: 'Disconnect',
        danger: true,
        askReason: true,
        reasonRequired: true,
      });
      if (!answer) return;
      const notice = timing.notice();
      await attempt(btn, () => post(`/v1/installations/${inst.installation_id}/disconnect`, { reason: answer.reason, notice_secs: notice }), {
        succeeded: (r) => (notice
          ? scheduledText(inst, r)
          : `${label(inst)} is ${r && r.status ? r.status : 'disconnected'}. The customer can connect again to restore access.`),
        failed: `Disconnect failed for ${label(inst)}`,
      });
      settle(done);
    },
  });
  btn.dataset.action = 'disconnect';
  return btn;
}

/**
 * The pending scheduled revoke or disconnect, with a button that cancels it (the app is told of
 * the cancel too); null when none is pending.
 */
export function pendingRemovalNote(ctx, inst, done) {
  const pending = pendingRemoval(inst);
  if (!pending) return null;
  const what = pending.action === 'disconnect' ? 'Disconnect' : 'Revoke';
  const btn = actionButton('Cancel', {
    allowed: ctx.can(PERMISSION),
    deniedReason: ctx.deniedReason(PERMISSION),
    onClick: async () => {
      const answer = await confirmAction({
        title: `Cancel the scheduled ${pending.action} of ${label(inst)}?`,
        intro: `The ${pending.action} due ${formatAbsolute(pending.effective_at)} will not happen; the app is told it was cancelled (installation.removal_cancelled).`,
        confirmLabel: `Cancel the ${pending.action}`,
        askReason: true,
      });
      if (!answer) return;
      await attempt(btn, () => post(`/v1/installations/${inst.installation_id}/scheduled-removal/cancel`, { reason: answer.reason }), {
        succeeded: () => `The scheduled ${pending.action} of ${label(inst)} is cancelled.`,
        failed: `Cancelling the scheduled ${pending.action} of ${label(inst)} failed`,
      });
      settle(done);
    },
  });
  btn.dataset.action = 'cancel-removal';
  return h('span', { class: 'pending-removal', dataset: { pendingRemoval: pending.action } },
    `${what} scheduled for ${formatAbsolute(pending.effective_at)} (${relative(pending.effective_at)}) `, btn);
}

/** For accounts without working tokens: the customer (or you, in their browser) connects again. */
export function reconnectLink(inst) {
  if (!['needs_reauthorization', 'disconnected', 'revoked'].includes(inst.status)) return null;
  const btn = connectButton({ app_id: inst.app_id, label: inst.app_label }, { label: 'Reconnect', small: true, externalRef: inst.external_ref });
  btn.title = 'Opens HubSpot\'s consent page; whoever approves it must be able to authorise the app for this account.';
  btn.dataset.action = 'reconnect';
  return btn;
}

export function detailsLink(inst) {
  return h('a', { class: 'btn btn-small btn-link', href: `/dashboard/users/${inst.installation_id}`, 'data-link': true, 'aria-label': `Details of hub ${inst.hub_id}` }, 'Details');
}
