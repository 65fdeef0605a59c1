// Pricing Models: the plans tenants can be on. This version of Hubkeeper stores no plans, so the
// page shows the true state (none) and explains how plans work; `renderPlans` is what draws the
// list once a plan store exists (fetch it in `render` and pass the plans in).

import { h, clear, pageHeader, section, stat, emptyState, table, helpPanel, actionButton } from '../ui.js';
import { HELP } from '../help.js';

const NO_PLAN_STORE = 'Plans cannot be created in this version of Hubkeeper.';

function priceText(plan) {
  if (!plan.price_minor) return 'Free';
  const amount = plan.price_minor / 10 ** (plan.currency_exponent ?? 2);
  return new Intl.NumberFormat(undefined, { style: 'currency', currency: plan.currency }).format(amount);
}

export function renderPlans(box, plans) {
  clear(box);
  if (!plans.length) {
    box.append(emptyState('No plans yet', 'Every tenant is currently on no plan, and nothing is charged. The guide below explains the kinds of plans and the rules for changing them.'));
    return;
  }
  box.append(table([
    { label: 'Plan code', cell: (p) => h('code', {}, p.code) },
    { label: 'App', cell: (p) => p.app_label || 'All apps' },
    { label: 'Type', cell: (p) => p.kind },
    { label: 'Price', cell: (p) => priceText(p) },
    { label: 'Features', cell: (p) => (p.features || []).join(', ') },
    { label: 'Status', cell: (p) => p.status },
  ], plans, { caption: 'Pricing plans' }));
}

export async function render(ctx) {
  const { root } = ctx;
  const plans = [];
  const add = actionButton('Add a plan', { allowed: false, deniedReason: NO_PLAN_STORE, small: false });
  add.id = 'add-plan';
  const listBox = h('div', { id: 'plans-list' });
  const count = (predicate) => String(plans.filter(predicate).length);
  root.append(
    pageHeader('Pricing Models', 'Subscription plans, usage limits and prices for your apps: what a tenant gets and what it pays.', add),
    h('div', { class: 'stats' },
      stat('Free plans', count((p) => !p.price_minor), 'No charge'),
      stat('Premium plans', count((p) => p.price_minor > 0), 'Paid'),
      stat('Recurring plans', count((p) => p.kind === 'recurring' || p.kind === 'hybrid'), 'Monthly or yearly billing')),
    section('Plans', listBox),
    h('div', { class: 'help-grid' }, helpPanel(HELP.pricingTypes), helpPanel(HELP.pricingRules)));
  renderPlans(listBox, plans);
}
