// Pricing Models: the plans tenants can be on. Counts of free, premium and recurring
// plans; the list; add, edit, change status, delete. Prices are typed as decimals and sent as
// integer minor units (converted with string arithmetic, never floating point).

import { get, post, patch, del, api, query, listOf } from '../api.js';
import { h, clear, pageHeader, section, stat, loading, errorState, emptyState, table, helpPanel, field, setFieldError, toast, confirmAction, actionButton, run, attempt, settle } from '../ui.js';
import { HELP } from '../help.js';
import { priceLabel } from '../format.js';

/** ISO 4217 codes the API accepts, with their minor-unit exponent. */
const CURRENCIES = {
  AUD: 2, BRL: 2, CAD: 2, CHF: 2, CZK: 2, DKK: 2, EUR: 2, GBP: 2, HUF: 2, INR: 2, ISK: 0,
  JPY: 0, KRW: 0, MXN: 2, NOK: 2, NZD: 2, PLN: 2, SEK: 2, SGD: 2, USD: 2, ZAR: 2,
};

const TYPES = [
  ['free', 'Free'], ['one_time', 'One-time'], ['recurring', 'Recurring'],
  ['usage_based', 'Usage-based'], ['hybrid', 'Hybrid'],
];

const LIMITS = [
  ['requests_per_month', 'Requests per month'],
  ['token_handouts_per_month', 'Token hand-outs per month'],
  ['contacts', 'Contacts'],
  ['users', 'Users'],
  ['storage_mb', 'Storage (MB)'],
  ['concurrent_connections', 'Concurrent connections'],
];

const STATUSES = [
  ['active', 'Active', 'Open to new sign-ups'],
  ['inactive', 'Inactive (hidden)', 'No new sign-ups; subscribers keep access'],
  ['deprecated', 'Deprecated', 'No new sign-ups; subscribers encouraged to move'],
  ['archived', 'Archived', 'No subscribers left; kept for the record (final)'],
];

const STATUS_BADGE = { active: 'ok', inactive: 'muted', deprecated: 'warn', archived: 'muted' };

/**
 * "12.50" in a currency with `exponent` decimals → "1250" (a string of digits), or null when the
 * text is not a plain non-negative amount with at most `exponent` decimals.
 */
function toMinorUnits(text, exponent) {
  const m = /^\s*(\d{1,13})(?:[.,](\d*))?\s*$/.exec(String(text));
  if (!m) return null;
  const fraction = m[2] || '';
  if (fraction.length > exponent) return null;
  const digits = (m[1] + fraction.padEnd(exponent, '0')).replace(/^0+(?=\d)/, '');
  return digits;
}

/** 1250 minor units → "12.50" (string arithmetic). */
function fromMinorUnits(minor, exponent) {
  const digits = String(minor ?? 0).padStart(exponent + 1, '0');
  return exponent ? `${digits.slice(0, -exponent)}.${digits.slice(-exponent)}` : digits;
}

function typeLabel(type) {
  const found = TYPES.find(([v]) => v === type);
  return found ? found[1] : String(type);
}

function limitsLabel(limits) {
  const entries = LIMITS.filter(([key]) => limits && limits[key] !== undefined);
  if (!entries.length) return h('span', { class: 'muted' }, 'Unlimited');
  return h('ul', { class: 'compact' }, entries.map(([key, label]) => h('li', {}, `${label}: ${Number(limits[key]).toLocaleString()}`)));
}

export async function render(ctx) {
  const { root } = ctx;
  let closed = false;
  const admin = ctx.can('administer');
  const add = actionButton('Add a plan', {
    allowed: admin,
    deniedReason: ctx.deniedReason('administer'),
    small: false,
    onClick: () => openForm(null),
  });
  add.id = 'add-plan';
  add.classList.add('btn-primary');
  const stats = h('div', { class: 'stats', id: 'plan-counts' },
    stat('Free plans', '–', 'No charge plans'),
    stat('Premium plans', '–', 'Paid subscriptions'),
    stat('Recurring plans', '–', 'Monthly/annual billing'));
  const formSlot = h('div', { id: 'plan-form-slot' });
  const listBox = h('div', { id: 'plans-list' }, loading('Loading plans…'));
  root.append(
    pageHeader('Pricing Models', 'Subscription plans, usage limits and prices for your apps: what a tenant gets and what it pays. Each plan has a unique code and applies to one app or to all.', add),
    stats,
    formSlot,
    section('Pricing configuration', listBox),
    h('div', { class: 'help-grid' }, helpPanel(HELP.pricingTypes), helpPanel(HELP.pricingRules)));

  let apps = [];
  let loadSeq = 0;

  async function loadApps() {
    try {
      apps = listOf(await get('/v1/apps' + query({ limit: 200 })), 'apps').items.filter((a) => !a.deleted_at);
    } catch (e) {
      apps = [];
    }
  }

  function appLabel(id) {
    if (!id) return 'All apps';
    const app = apps.find((a) => a.app_id === id);
    return app ? app.label : id.slice(0, 8);
  }

  async function load() {
    const seq = ++loadSeq;
    try {
      const data = await get('/v1/plans');
      if (closed || seq !== loadSeq) return;
      const counts = data.counts || {};
      clear(stats).append(
        stat('Free plans', String(counts.free ?? 0), 'No charge plans'),
        stat('Premium plans', String(counts.premium ?? 0), 'Paid subscriptions'),
        stat('Recurring plans', String(counts.recurring ?? 0), 'Monthly/annual billing'));
      const plans = data.plans || [];
      clear(listBox);
      if (!plans.length) {
        listBox.append(emptyState('No plans yet', admin
          ? 'Add a plan with "Add a plan". Starting with a free tier lowers the barrier to adoption; paid upgrades follow.'
          : 'An admin has to add plans. Until then tenants are on no plan and nothing is limited or charged.'));
        return;
      }
      listBox.append(table([
        { label: 'Plan code', cell: (p) => h('span', {}, h('code', {}, p.code), h('span', { class: 'sub' }, p.name)) },
        { label: 'App', cell: (p) => appLabel(p.app_id) },
        { label: 'Type', cell: (p) => typeLabel(p.type) },
        { label: 'Price', cell: (p) => h('span', {}, priceLabel(p), p.version > 1 ? h('span', { class: 'sub' }, `version ${p.version}`) : null) },
        { label: 'Currency', cell: (p) => p.price.currency },
        { label: 'Features', cell: (p) => (p.features && p.features.length ? h('ul', { class: 'compact' }, p.features.map((f) => h('li', {}, f))) : h('span', { class: 'muted' }, '—')) },
        { label: 'Limits', cell: (p) => limitsLabel(p.limits) },
        { label: 'Status', cell: (p) => h('span', { class: `badge badge-${STATUS_BADGE[p.status] || 'muted'}` }, p.status) },
        { label: 'Subscribers', cell: (p) => String(p.subscribers ?? 0) },
        { label: 'Actions', class: 'actions', cell: (p) => h('div', { class: 'row-actions' }, editButton(p), statusControl(p), deleteButton(p)) },
      ], plans, { caption: 'Pricing plans', rowId: (p) => p.plan_id }));
    } catch (e) {
      if (!closed && seq === loadSeq) clear(listBox).append(errorState(e, load));
    }
  }

  function editButton(plan) {
    const btn = actionButton('Edit', {
      allowed: admin && plan.status !== 'archived',
      deniedReason: plan.status === 'archived' ? 'Archived plans are kept for the record and cannot change.' : ctx.deniedReason('administer'),
      onClick: () => openForm(plan),
    });
    btn.dataset.action = 'edit';
    return btn;
  }

  function statusControl(plan) {
    const select = h('select', { 'aria-label': `Status of ${plan.code}`, disabled: !admin || plan.status === 'archived', dataset: { action: 'status' } },
      STATUSES.map(([v, l]) => h('option', { value: v, selected: v === plan.status }, l)));
    if (!admin) select.title = ctx.deniedReason('administer');
    select.addEventListener('change', async () => {
      const target = select.value;
      const meaning = STATUSES.find(([v]) => v === target);
      const answer = await confirmAction({
        title: `Make "${plan.code}" ${target}?`,
        consequences: [meaning ? meaning[2] + '.' : '', target === 'archived' ? 'Archiving is final and needs a plan without subscribers.' : ''].filter(Boolean),
        confirmLabel: 'Change status',
        askReason: true,
      });
      if (!answer) {
        select.value = plan.status;
        return;
      }
      try {
        await api('PUT', `/v1/plans/${plan.plan_id}/status`, { status: target, reason: answer.reason });
        toast(`Plan "${plan.code}" is now ${target}.`);
      } catch (e) {
        toast(`The status was not changed: ${e.message}`, 'error');
        select.value = plan.status;
      }
      settle(load);
    });
    return select;
  }

  function deleteButton(plan) {
    const btn = actionButton('Delete', {
      danger: true,
      allowed: admin,
      deniedReason: ctx.deniedReason('administer'),
      onClick: async () => {
        const subscribers = plan.subscribers ?? 0;
        const answer = await confirmAction({
          title: `Delete the plan "${plan.code}"?`,
          consequences: [
            'The plan is no longer available for new sign-ups.',
            'Its history is kept for accounting, and its code stays taken.',
            'It cannot be restored: create a new plan (e.g. "' + plan.code + '_v2") if needed.',
            subscribers ? `It has ${subscribers} subscriber(s): Hubkeeper refuses until they are moved to another plan.` : 'It has no subscribers.',
          ],
          confirmLabel: 'Delete plan',
          danger: true,
          askReason: true,
        });
        if (!answer) return;
        await attempt(btn, () => del(`/v1/plans/${plan.plan_id}` + query({ reason: answer.reason })), {
          succeeded: () => `Plan "${plan.code}" deleted.`,
          failed: 'The plan was not deleted',
        });
        settle(load);
      },
    });
    btn.dataset.action = 'delete';
    return btn;
  }

  function openForm(plan) {
    clear(formSlot);
    const editing = !!plan;
    const exponentOf = (c) => CURRENCIES[c] ?? 2;
    const code = h('input', { name: 'code', required: true, readonly: editing, maxlength: 40, value: plan ? plan.code : '', spellcheck: 'false', autocomplete: 'off', placeholder: 'starter' });
    const name = h('input', { name: 'name', required: true, maxlength: 80, value: plan ? plan.name : '' });
    const description = h('textarea', { name: 'description', rows: 2, maxlength: 1000 }, plan ? plan.description || '' : '');
    const app = h('select', { name: 'app_id', disabled: editing },
      h('option', { value: '' }, 'All apps'),
      apps.map((a) => h('option', { value: a.app_id, selected: plan && plan.app_id === a.app_id }, `${a.label} (${a.environment})`)));
    const type = h('select', { name: 'type' }, TYPES.map(([v, l]) => h('option', { value: v, selected: plan ? plan.type === v : v === 'free' }, l)));
    const interval = h('select', { name: 'interval' },
      h('option', { value: 'monthly', selected: !plan || plan.interval !== 'annual' }, 'Monthly'),
      h('option', { value: 'annual', selected: plan && plan.interval === 'annual' }, 'Annual'));
    const currency = h('select', { name: 'currency' }, Object.keys(CURRENCIES).map((c) => h('option', { value: c, selected: plan ? plan.price.currency === c : c === 'USD' }, c)));
    const price = h('input', { name: 'price', inputmode: 'decimal', value: plan ? fromMinorUnits(plan.price.amount_minor, plan.price.exponent) : '0', autocomplete: 'off' });
    const unitPrice = h('input', { name: 'unit_price', inputmode: 'decimal', value: plan && plan.unit_pricing ? fromMinorUnits(plan.unit_pricing.price.amount_minor, plan.unit_pricing.price.exponent) : '', autocomplete: 'off' });
    const perUnits = h('input', { name: 'per_units', type: 'number', min: 1, step: 1, value: plan && plan.unit_pricing ? plan.unit_pricing.per_units : 1000 });
    const unitMetric = h('select', { name: 'unit_metric' },
      h('option', { value: 'requests', selected: !plan || !plan.unit_pricing || plan.unit_pricing.metric === 'requests' }, 'requests'),
      h('option', { value: 'token_handouts', selected: plan && plan.unit_pricing && plan.unit_pricing.metric === 'token_handouts' }, 'token hand-outs'));
    const features = h('textarea', { name: 'features', rows: 4 }, plan ? (plan.features || []).join('\n') : '');
    const limitInputs = LIMITS.map(([key, label]) => [key, h('input', { name: key, type: 'number', min: 0, step: 1, value: plan && plan.limits && plan.limits[key] !== undefined ? plan.limits[key] : '', placeholder: 'unlimited' }), label]);
    const status = h('select', { name: 'status' }, h('option', { value: 'active' }, 'Active'), h('option', { value: 'inactive' }, 'Inactive (hidden)'));
    const notice = h('input', { name: 'notice_days', type: 'number', min: 0, max: 365, step: 1, value: 30 });
    const intervalField = field('Billing interval', interval);
    const unitFields = h('div', { class: 'form-grid' },
      field('Usage price', unitPrice, 'Price of one block of usage, in the plan\'s currency.'),
      field('Units per block', perUnits, 'e.g. 1000 requests.'),
      field('Usage counted', unitMetric));
    const syncType = () => {
      const t = type.value;
      intervalField.hidden = !(t === 'recurring' || t === 'hybrid');
      unitFields.hidden = !(t === 'usage_based' || t === 'hybrid');
      price.disabled = t === 'free' || t === 'usage_based';
      if (price.disabled) price.value = '0';
    };
    type.addEventListener('change', syncType);
    syncType();
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, editing ? 'Save changes' : 'Add plan');
    const cancel = h('button', { type: 'button', class: 'btn', onclick: () => clear(formSlot) }, 'Cancel');
    const formError = h('p', { class: 'field-error', role: 'alert', hidden: true });
    const form = h('form', { class: 'plan-form', novalidate: true, id: 'plan-form' },
      h('div', { class: 'form-grid' },
        field('Plan code', code, editing ? 'Codes never change.' : 'Unique: 2-40 lower-case letters, digits, _ or -, e.g. "starter", "pro", "pro_v2".'),
        field('Name', name),
        field('App', app, editing ? 'The app assignment cannot change.' : 'One app, or all apps.'),
        field('Type', type),
        intervalField,
        field('Price', price, 'Base, recurring or one-time price, e.g. 29.00.'),
        field('Currency', currency, 'ISO 4217.'),
        editing ? field('Notice for reductions (days)', notice, 'Removed features and lowered limits apply to existing subscribers after this notice.') : field('Status', status)),
      unitFields,
      h('div', { class: 'form-grid' },
        field('Features', features, 'One per line, e.g. "1000 contacts".'),
        field('Description', description)),
      h('fieldset', { class: 'limits' }, h('legend', {}, 'Usage limits (empty: unlimited)'),
        h('div', { class: 'form-grid' }, limitInputs.map(([, input, label]) => field(label, input)))),
      formError,
      h('div', { class: 'form-actions' }, cancel, submit));

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      formError.hidden = true;
      const exponent = exponentOf(currency.value);
      const minor = toMinorUnits(price.value, exponent);
      const problems = [
        [code, editing || /^[a-z][a-z0-9_-]{1,39}$/.test(code.value.trim().toLowerCase()) ? null : 'Use 2-40 lower-case letters, digits, _ or -, starting with a letter.'],
        [name, name.value.trim() ? null : 'Give the plan a name.'],
        [price, minor !== null ? null : `Enter an amount like 29${exponent ? '.' + '0'.repeat(exponent) : ''} (at most ${exponent} decimals).`],
      ];
      const usesUnits = type.value === 'usage_based' || type.value === 'hybrid';
      const unitMinor = usesUnits ? toMinorUnits(unitPrice.value, exponent) : null;
      if (usesUnits) problems.push([unitPrice, unitMinor !== null && unitMinor !== '0' ? null : 'Enter the price of one block of usage.']);
      const limits = {};
      for (const [key, input] of limitInputs) {
        const v = input.value.trim();
        if (v === '') {
          setFieldError(input, null);
          continue;
        }
        if (!/^\d+$/.test(v)) {
          problems.push([input, 'A whole number, or empty for unlimited.']);
        } else {
          limits[key] = Number(v);
        }
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
      const terms = {
        type: type.value,
        interval: type.value === 'recurring' || type.value === 'hybrid' ? interval.value : null,
        price: { amount_minor: Number(minor), currency: currency.value },
        unit_pricing: usesUnits ? { amount_minor: Number(unitMinor), per_units: Number(perUnits.value || 1), metric: unitMetric.value } : null,
      };
      const body = {
        name: name.value.trim(),
        description: description.value.trim(),
        features: features.value.split('\n').map((f) => f.trim()).filter(Boolean),
        limits,
        ...terms,
      };
      await run(submit, async () => {
        try {
          if (editing) {
            const notices = (plan.notices || []).length;
            const saved = await patch(`/v1/plans/${plan.plan_id}`, { ...body, notice_days: Number(notice.value || 30) });
            const newVersion = saved.version > plan.version;
            const announced = (saved.notices || []).length > notices;
            toast(`Plan "${plan.code}" saved.` + (newVersion ? ` The price change is version ${saved.version}: existing subscribers keep their price until renewal.` : '') + (announced ? ' Removed features or lowered limits apply to existing subscribers after the notice period.' : ''), newVersion || announced ? 'warn' : 'ok', { timeout: 12000 });
          } else {
            await post('/v1/plans', { ...body, code: code.value.trim(), app_id: app.value || null, status: status.value });
            toast(`Plan "${code.value.trim()}" added.`);
          }
          clear(formSlot);
          settle(load);
        } catch (err) {
          formError.textContent = err.message;
          formError.hidden = false;
        }
      });
    });

    formSlot.append(h('section', { class: 'card', 'aria-labelledby': 'plan-form-title' },
      h('h2', { id: 'plan-form-title' }, editing ? `Edit "${plan.code}"` : 'Add a plan'),
      editing ? helpPanel(HELP.pricingRules) : null,
      form));
    (editing ? name : code).focus();
    formSlot.scrollIntoView({ block: 'start' });
  }

  await loadApps();
  await load();
  return () => { closed = true; };
}
