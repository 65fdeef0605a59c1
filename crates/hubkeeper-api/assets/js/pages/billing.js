// Billing & Upgrades: plans in use, usage against limits, upgrades and registrations. Without
// plans nothing is billed; the registration figures are real (every tenant counts as free).

import { get, query, listOf } from '../api.js';
import { h, clear, pageHeader, section, stat, emptyState, errorState, loading, table, helpPanel, actionButton } from '../ui.js';
import { HELP } from '../help.js';

export async function render(ctx) {
  const { root } = ctx;
  let closed = false;
  const upgrade = actionButton('Change a tenant\'s plan', { allowed: false, deniedReason: 'There are no plans to move tenants to yet (see Pricing Models).', small: false });
  upgrade.id = 'change-plan';
  const registrations = h('div', { class: 'stats' }, loading('Counting tenants…'));
  root.append(
    pageHeader('Billing & Upgrades', 'Revenue and plan changes: which plans tenants are on, how much of their allowance they use, and who upgraded.', upgrade),
    section('Current plans', emptyState('No plans yet', 'With no pricing plans, tenants use the apps without limits or charges. Plans are listed on the Pricing Models page.',
      h('a', { class: 'btn', href: '/dashboard/pricing', 'data-link': true }, 'Go to Pricing Models'))),
    section('Usage this month', emptyState('No usage limits to measure', 'Usage is compared with a plan\'s limits (requests per month and others); without plans there is no allowance to use up.')),
    section('Recent upgrades', table([], [], { empty: emptyState('No upgrades yet', 'Plan changes will be listed here with their date, from and to plans, amount and trigger.') })),
    section('Registrations', registrations),
    helpPanel(HELP.billing));

  try {
    const data = await get('/v1/installations' + query({ limit: 1 }));
    if (closed) return undefined;
    const { items, page } = listOf(data, 'installations');
    const total = page.total ?? items.length;
    const paid = 0;
    clear(registrations).append(
      stat('Free registrations', String(total - paid), 'Tenants on no paid plan'),
      stat('Paid registrations', String(paid), 'Tenants on a paid plan'),
      stat('Conversion rate', total ? `${Math.round((paid / total) * 100)}%` : '—', total ? 'Free tenants who moved to a paid plan' : 'No tenants yet'));
  } catch (e) {
    if (!closed) clear(registrations).append(errorState(e));
  }
  return () => { closed = true; };
}
