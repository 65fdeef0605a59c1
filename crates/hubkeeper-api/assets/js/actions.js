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

/**
 * Whether the tenant's app hears of `type` (an enabled endpoint receives it), as a line for the
 * confirmation dialog: the notification is queued as soon as the action is recorded.
 */
async function notificationNotice(inst, type) {
  try {
    const r = await get(`/v1/apps/${inst.app_id}/receivers?type=${encodeURIComponent(type)}`);
    return r.notified
      ? h('p', { class: 'notice', dataset: { notification: 'sent' } },
        'The app is notified: ', h('code', {}, type), ` goes to ${r.urls.join(', ')} as soon as you confirm.`)
      : h('p', { class: 'notice muted', dataset: { notification: 'none' } },
        'No notification goes out: the app has no enabled endpoint for ', h('code', {}, type), ' (Notifications page).');
  } catch (e) {
    return h('p', { class: 'notice muted', dataset: { notification: 'unknown' } },
      `Whether the app is notified could not be checked: ${e.message}`);
  }
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
      const notice = await notificationNotice(inst, 'installation.revoked');
      const answer = await confirmAction({
        title: `Revoke the tokens of ${label(inst)}?`,
        extra: notice,
        intro: 'HubSpot is told to invalidate the refresh token, and Hubkeeper deletes the stored tokens.',
        consequences: HELP.revoke.consequences,
        confirmLabel: 'Revoke tokens',
        danger: true,
        askReason: true,
        reasonRequired: true,
        typeToConfirm: inst.hub_id,
      });
      if (!answer) return;
      await attempt(btn, () => post(`/v1/installations/${inst.installation_id}/revoke`, { reason: answer.reason }), {
        succeeded: () => `Tokens of ${label(inst)} revoked. The customer must connect again to restore access.`,
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
      const notice = await notificationNotice(inst, 'installation.disconnected');
      const answer = await confirmAction({
        title: `Disconnect ${label(inst)}?`,
        extra: notice,
        intro: 'Hubkeeper removes the account\'s tokens and marks it disconnected. Its data and history are kept.',
        consequences: HELP.disconnect.consequences,
        confirmLabel: 'Disconnect',
        danger: true,
        askReason: true,
        reasonRequired: true,
      });
      if (!answer) return;
      await attempt(btn, () => post(`/v1/installations/${inst.installation_id}/disconnect`, { reason: answer.reason }), {
        succeeded: (r) => `${label(inst)} is ${r && r.status ? r.status : 'disconnected'}. The customer can connect again to restore access.`,
        failed: `Disconnect failed for ${label(inst)}`,
      });
      settle(done);
    },
  });
  btn.dataset.action = 'disconnect';
  return btn;
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
