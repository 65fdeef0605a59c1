// Formatting shared by several pages: who did something, what a plan costs, counts of things.

/** A readable name for an event's actor (`key:<id>`, `system:<role>`, `hubspot`, ...). */
export function actorLabel(actor) {
  if (!actor) return 'unknown';
  if (actor.startsWith('key:')) return `API key ${actor.slice(4)}`;
  return {
    'system:scheduler': 'refresh scheduler',
    'system:refresher': 'token refresher',
    hubspot: 'HubSpot',
    system: 'Hubkeeper',
    'system:bootstrap': 'Hubkeeper (first admin key)',
    cli: 'command line',
    anonymous: 'anonymous client',
  }[actor] || actor;
}

/** What a plan costs, from the plan API's view: `Free`, `10.00 USD / month + 0.10 USD per 1000 requests`. */
export function priceLabel(plan) {
  const parts = [];
  if (plan.type === 'free') return 'Free';
  if (plan.price && plan.price.amount_minor > 0) {
    const per = plan.interval === 'annual' ? ' / year' : plan.interval === 'monthly' ? ' / month' : plan.type === 'one_time' ? ' once' : '';
    parts.push(plan.price.display + per);
  }
  if (plan.unit_pricing) {
    parts.push(`${plan.unit_pricing.price.display} per ${plan.unit_pricing.per_units} ${plan.unit_pricing.metric.replace(/_/g, ' ')}`);
  }
  return parts.join(' + ') || plan.price.display;
}

/** `1 tenant`, `3 tenants`. */
export function countOf(n, singular, plural = singular + 's') {
  return `${n} ${n === 1 ? singular : plural}`;
}
