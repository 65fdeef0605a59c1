// Billing & Upgrades: current plans and prices, usage this month against the limit
// (all tenants or one), peak day and daily average, recent plan changes, limits reached (upgrade
// offers), free vs paid registrations and the conversion rate; admins change a tenant's plan.

import { get, api, query, listOf } from '../api.js';
import { h, clear, pageHeader, section, stat, loading, errorState, emptyState, table, helpPanel, field, toast, actionButton, run, time, shortId, settle } from '../ui.js';
import { HELP } from '../help.js';
import { priceLabel } from '../format.js';
import { liveChart, totalsSentence } from '../charts.js';

const USAGE_BARS = [{ key: 'requests', label: 'Requests', tone: 'info' }];
const CHANGE_BARS = [
  { key: 'upgrades', label: 'Upgrades', tone: 'ok' },
  { key: 'downgrades', label: 'Downgrades', tone: 'warn' },
];
const REGISTRATION_BARS = [
  { key: 'free', label: 'Free registrations', tone: 'muted' },
  { key: 'paid', label: 'Paid registrations', tone: 'ok' },
];

// Usage per day this month (with the tenant's monthly limit as a line), upgrades and downgrades
// per week, registrations per week with the conversion rate.
function billingCharts() {
  const usage = liveChart('/v1/stats/usage', {}, {
    id: 'chart-usage', title: 'Requests per day this month', bars: USAGE_BARS,
    prepare: (s, o) => {
      const limit = s.context?.monthly_limit;
      return {
        ...o,
        rule: limit ? { value: limit, label: 'Monthly limit' } : null,
        summary: (x) => totalsSentence(x, USAGE_BARS, 'This month') + (limit ? ` The plan allows ${Number(limit).toLocaleString()} a month.` : ''),
      };
    },
  });
  const changes = liveChart('/v1/stats/plan-changes', {}, {
    id: 'chart-plan-changes', title: 'Upgrades and downgrades per week, last 12 weeks', bars: CHANGE_BARS,
    summary: (s) => totalsSentence(s, CHANGE_BARS, 'Last 12 weeks'),
  });
  const registrations = liveChart('/v1/stats/registrations', {}, {
    id: 'chart-registrations', title: 'Registrations per week and the conversion rate', bars: REGISTRATION_BARS,
    line: { key: 'conversion_rate_percent', label: 'Conversion rate (free to paid)', unit: '%' },
    summary: (s) => {
      const pts = (s.points || []).filter((p) => p.conversion_rate_percent !== null && p.conversion_rate_percent !== undefined);
      const rate = pts.length ? pts[pts.length - 1].conversion_rate_percent : null;
      return totalsSentence(s, REGISTRATION_BARS, 'Last 12 weeks') + ` ${(s.totals?.conversions ?? 0).toLocaleString()} conversions` + (rate === null ? '.' : `; conversion rate now ${rate}%.`);
    },
  });
  return { usage, changes, registrations };
}

const TRIGGERS = { registration: 'Registration', self_serve: 'Self-serve', admin: 'Admin', limit_reached: 'Limit reached' };
const DIRECTIONS = { new: ['info', 'New'], upgrade: ['ok', 'Upgrade'], downgrade: ['warn', 'Downgrade'], lateral: ['muted', 'Change'] };

function number(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString();
}

export async function render(ctx) {
  const { root } = ctx;
  let closed = false;
  const admin = ctx.can('administer');
  const change = actionButton('Change a tenant\'s plan', {
    allowed: admin,
    deniedReason: ctx.deniedReason('administer'),
    small: false,
    onClick: () => openChange(),
  });
  change.id = 'change-plan';
  const formSlot = h('div', { id: 'change-plan-slot' });
  const plansBox = h('div', { id: 'current-plans' }, loading('Loading plans…'));
  const tenantSelect = h('select', { id: 'usage-tenant', 'aria-label': 'Tenant' }, h('option', { value: '' }, 'All tenants'));
  const usageBox = h('div', { id: 'usage' }, loading('Loading usage…'));
  const changesBox = h('div', { id: 'recent-upgrades' }, loading());
  const limitsBox = h('div', { id: 'limits-reached' }, loading());
  const registrationsBox = h('div', { class: 'stats', id: 'registrations' }, loading('Counting registrations…'));
  const charts = billingCharts();
  root.append(
    pageHeader('Billing & Upgrades', 'Which plans tenants are on, how much of their allowance they use, and who upgraded.', change),
    formSlot,
    section('Current pricing', plansBox),
    section('Usage analytics', h('div', { class: 'filters' }, field('Tenant', tenantSelect)), usageBox, charts.usage.element),
    section('Recent upgrades', charts.changes.element, changesBox),
    section('Limits reached', limitsBox),
    section('Registration management', registrationsBox, charts.registrations.element),
    helpPanel(HELP.billing));

  let tenants = [];
  let overview = null;
  let loadSeq = 0;

  function tenantLabel(id) {
    const t = tenants.find((x) => x.installation_id === id);
    return t ? `${t.hub_domain || t.hub_id} (${t.hub_id})` : shortId(id);
  }

  async function loadTenants() {
    try {
      tenants = listOf(await get('/v1/installations' + query({ limit: 200 })), 'installations').items;
    } catch (e) {
      tenants = [];
    }
    for (const t of tenants) {
      tenantSelect.append(h('option', { value: t.installation_id }, tenantLabel(t.installation_id)));
    }
  }

  async function load() {
    const seq = ++loadSeq;
    try {
      const data = await get('/v1/billing/overview' + query({ installation_id: tenantSelect.value }));
      if (closed || seq !== loadSeq) return;
      overview = data;
      drawPlans(data.plans || []);
      drawUsage(data.usage || {});
      drawChanges(data.recent_changes || []);
      drawLimits(data.limits_reached || []);
      drawRegistrations(data.registrations || {});
    } catch (e) {
      if (!closed && seq === loadSeq) clear(plansBox).append(errorState(e, load));
    }
  }

  function drawPlans(plans) {
    clear(plansBox);
    if (!plans.length) {
      plansBox.append(emptyState('No plans yet', 'Without active plans tenants use the apps without limits or charges.',
        h('a', { class: 'btn', href: '/dashboard/pricing', 'data-link': true }, 'Go to Pricing Models')));
      return;
    }
    plansBox.append(h('div', { class: 'grid-2 plan-cards' }, plans.map((p) => h('article', { class: 'card plan-card', dataset: { code: p.code } },
      h('div', { class: 'card-head' }, h('h3', {}, p.name), h('span', { class: `badge badge-${p.paid ? 'info' : 'ok'}` }, p.paid ? 'Paid' : 'Free')),
      h('ul', {}, (p.features || []).map((f) => h('li', {}, '✓ ', f))),
      h('p', { class: 'stat-value' }, priceLabel(p)),
      h('p', { class: 'card-foot muted' }, `${p.subscribers ?? 0} tenant(s) · code ${p.code}`)))));
  }

  function drawUsage(usage) {
    clear(usageBox);
    const limit = usage.requests_limit;
    const used = usage.requests_this_month ?? 0;
    const tone = limit !== null && limit !== undefined && used >= limit ? 'warn' : undefined;
    usageBox.append(h('div', { class: 'stats' },
      stat('This month', limit !== null && limit !== undefined ? `${number(used)} / ${number(limit)}` : number(used),
        usage.installation_id ? 'Requests against the tenant\'s monthly limit' : `Requests of all tenants in ${usage.period || 'this month'}`, { tone }),
      stat('Peak usage day', usage.peak_day ? number(usage.peak_day.quantity) : '—', usage.peak_day ? usage.peak_day.day : 'No usage yet'),
      stat('Average daily', number(usage.average_daily), 'Requests per day so far this month'),
      stat('Token hand-outs', number(usage.token_handouts_this_month), 'Access tokens handed out this month')));
  }

  function drawChanges(changes) {
    clear(changesBox);
    changesBox.append(table([
      { label: 'Date', cell: (c) => time(c.occurred_at) },
      { label: 'Tenant', cell: (c) => h('a', { href: `/dashboard/users/${c.installation_id}`, 'data-link': true }, tenantLabel(c.installation_id)) },
      { label: 'From plan', cell: (c) => c.from_plan || h('span', { class: 'muted' }, '—') },
      { label: 'To plan', cell: (c) => c.to_plan },
      { label: 'Change', cell: (c) => { const [kind, label] = DIRECTIONS[c.direction] || ['muted', c.direction]; return h('span', { class: `badge badge-${kind}` }, label); } },
      { label: 'Amount', cell: (c) => c.amount.display },
      { label: 'Trigger', cell: (c) => TRIGGERS[c.trigger] || c.trigger },
    ], changes, { caption: 'Recent plan changes', empty: emptyState('No upgrade history yet', 'Plan changes are listed here with their date, from and to plans, amount and trigger.') }));
  }

  function drawLimits(limits) {
    clear(limitsBox);
    limitsBox.append(table([
      { label: 'Date', cell: (l) => time(l.occurred_at) },
      { label: 'Tenant', cell: (l) => tenantLabel(l.installation_id) },
      { label: 'Plan', cell: (l) => l.plan_code },
      { label: 'Limit', cell: (l) => `${l.limit.replace(/_/g, ' ')}: ${number(l.used)} of ${number(l.limit_value)}` },
      { label: 'Upgrade offer', cell: (l) => l.offer_plan_code || h('span', { class: 'muted' }, 'none with more room') },
    ], limits, { caption: 'Limits reached', empty: emptyState('No limits reached', 'When a tenant uses up an allowance it is recorded here with a plan to offer.') }));
  }

  function drawRegistrations(r) {
    clear(registrationsBox).append(
      stat('Free registrations', number(r.free ?? 0), 'Tenants on no paid plan at registration'),
      stat('Paid registrations', number(r.paid ?? 0), 'Tenants that started on a paid plan'),
      stat('Conversion rate', r.conversion_rate_percent === null || r.conversion_rate_percent === undefined ? '—' : `${r.conversion_rate_percent}%`,
        `${number(r.converted ?? 0)} free tenant(s) moved to a paid plan`));
  }

  function openChange() {
    clear(formSlot);
    const tenant = h('select', { name: 'installation_id', required: true },
      tenants.map((t) => h('option', { value: t.installation_id }, tenantLabel(t.installation_id))));
    const plan = h('select', { name: 'plan_id', required: true },
      ((overview && overview.plans) || []).map((p) => h('option', { value: p.plan_id }, `${p.name} (${p.code}) – ${priceLabel(p)}`)));
    const current = h('p', { class: 'hint', id: 'current-plan' });
    const showCurrent = async () => {
      clear(current);
      if (!tenant.value) return;
      try {
        const s = await get(`/v1/installations/${tenant.value}/plan`);
        current.append(`Now on ${s.plan_code} (version ${s.plan_version}, ${s.price.display})` + (s.renews_at ? `, renews ${new Date(s.renews_at).toLocaleDateString()}` : '') + '.');
      } catch (e) {
        current.append(e.status === 404 ? 'Not on a plan yet.' : e.message);
      }
    };
    tenant.addEventListener('change', showCurrent);
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Change plan');
    const cancel = h('button', { type: 'button', class: 'btn', onclick: () => clear(formSlot) }, 'Cancel');
    const formError = h('p', { class: 'field-error', role: 'alert', hidden: true });
    const form = h('form', { id: 'change-plan-form', novalidate: true },
      h('div', { class: 'form-grid' }, field('Tenant', tenant), field('New plan', plan, 'Only active plans take new subscribers.')),
      current, formError, h('div', { class: 'form-actions' }, cancel, submit));
    if (!tenants.length || !plan.options.length) {
      formError.textContent = !tenants.length ? 'There are no tenants yet.' : 'There are no active plans (see Pricing Models).';
      formError.hidden = false;
      submit.disabled = true;
    }
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      formError.hidden = true;
      await run(submit, async () => {
        try {
          const r = await api('PUT', `/v1/installations/${tenant.value}/plan`, { plan_id: plan.value, trigger: 'admin' });
          toast(r.changed ? `${tenantLabel(tenant.value)} is now on ${r.subscription.plan_code}.` : `${tenantLabel(tenant.value)} was on that plan already.`);
          clear(formSlot);
          settle(load);
        } catch (err) {
          formError.textContent = err.message;
          formError.hidden = false;
        }
      });
    });
    formSlot.append(h('section', { class: 'card', 'aria-labelledby': 'change-plan-title' }, h('h2', { id: 'change-plan-title' }, 'Change a tenant\'s plan'), form));
    showCurrent();
    tenant.focus();
  }

  tenantSelect.addEventListener('change', () => {
    clear(usageBox).append(loading('Loading usage…'));
    load();
    charts.usage.refresh({ installation_id: tenantSelect.value });
  });
  await loadTenants();
  await Promise.all([load(), charts.usage.refresh(), charts.changes.refresh(), charts.registrations.refresh()]);
  return () => { closed = true; };
}
