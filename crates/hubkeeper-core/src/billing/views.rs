//! What the billing services accept and answer: plain serde types the HTTP layer passes
//! through as JSON. Money is always integer minor units with its currency and exponent, plus a
//! display string computed with integers; no floating-point amounts anywhere.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use hubkeeper_domain::plan::{
    BillingInterval, LimitKind, Money, Notice, Plan, PlanDefinition, PlanStatus, PlanTerms,
    PlanType, UnitPricing, UsageLimits, UsageMetric,
};
use hubkeeper_domain::subscription::{ChangeTrigger, PlanOffer};
use hubkeeper_domain::{AppId, InstallationId};
use serde::{Deserialize, Deserializer, Serialize};

/// Money as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoneyView {
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Digits after the decimal point.
    pub exponent: u8,
    /// `0.10 USD`.
    pub display: String,
}

impl From<Money> for MoneyView {
    fn from(m: Money) -> Self {
        MoneyView {
            amount_minor: m.amount_minor,
            currency: m.currency.code().to_owned(),
            exponent: m.currency.exponent(),
            display: m.to_string(),
        }
    }
}

/// A usage price as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitPricingView {
    /// Price of one block.
    pub price: MoneyView,
    /// Units per block.
    pub per_units: u64,
    /// What is counted.
    pub metric: UsageMetric,
}

/// One price version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanVersionView {
    /// Version number.
    pub version: u32,
    /// Its price.
    pub price: MoneyView,
    /// Its type.
    #[serde(rename = "type")]
    pub plan_type: PlanType,
    /// Its interval.
    pub interval: Option<BillingInterval>,
    /// Since when it is the current version.
    pub since: DateTime<Utc>,
}

/// A plan as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanView {
    /// The plan's id.
    pub plan_id: String,
    /// Unique code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Marketing text.
    pub description: String,
    /// The one app it is offered for; `null`: all apps.
    pub app_id: Option<String>,
    /// How it charges.
    #[serde(rename = "type")]
    pub plan_type: PlanType,
    /// Billing interval (recurring, hybrid).
    pub interval: Option<BillingInterval>,
    /// Base, one-time or zero price of the current version.
    pub price: MoneyView,
    /// Usage price (usage-based, hybrid).
    pub unit_pricing: Option<UnitPricingView>,
    /// Included features.
    pub features: Vec<String>,
    /// Limits for new subscribers (absent: unlimited).
    pub limits: UsageLimits,
    /// Status.
    pub status: PlanStatus,
    /// Current version.
    pub version: u32,
    /// Whether subscribers pay (a premium plan).
    pub paid: bool,
    /// Whether it bills every period.
    pub recurring: bool,
    /// Tenants on the plan.
    pub subscribers: u32,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    /// When deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Every price version (details only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<PlanVersionView>>,
    /// Announced reductions (details only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notices: Option<Vec<Notice>>,
}

impl PlanView {
    pub(crate) fn from_terms_and_definition(
        plan_id: String,
        d: &PlanDefinition,
        subscribers: u32,
        updated_at: DateTime<Utc>,
        deleted_at: Option<DateTime<Utc>>,
    ) -> Self {
        PlanView {
            plan_id,
            code: d.code.clone(),
            name: d.name.clone(),
            description: d.description.clone(),
            app_id: d.app_id.map(|a| a.to_string()),
            plan_type: d.terms.plan_type,
            interval: d.terms.interval,
            price: d.terms.price.into(),
            unit_pricing: unit_view(&d.terms),
            features: d.features.clone(),
            limits: d.limits.clone(),
            status: d.status,
            version: d.version,
            paid: d.terms.is_paid(),
            recurring: d.terms.is_recurring(),
            subscribers,
            created_at: d.created_at,
            updated_at,
            deleted_at,
            versions: None,
            notices: None,
        }
    }

    /// The full view of a plan aggregate, with versions and notices.
    pub(crate) fn detailed(plan: &Plan, subscribers: u32) -> Option<Self> {
        let id = plan.plan_id()?.to_string();
        let d = plan.definition()?;
        let mut view = Self::from_terms_and_definition(
            id,
            d,
            subscribers,
            plan.updated_at().unwrap_or(d.created_at),
            plan.deleted_at(),
        );
        view.versions = Some(
            plan.versions()
                .iter()
                .map(|v| PlanVersionView {
                    version: v.version,
                    price: v.terms.price.into(),
                    plan_type: v.terms.plan_type,
                    interval: v.terms.interval,
                    since: v.since,
                })
                .collect(),
        );
        view.notices = Some(plan.notices().to_vec());
        Some(view)
    }
}

pub(crate) fn unit_view(terms: &PlanTerms) -> Option<UnitPricingView> {
    terms.unit_pricing.map(|u| UnitPricingView {
        price: Money {
            amount_minor: u.amount_minor,
            currency: terms.price.currency,
        }
        .into(),
        per_units: u.per_units,
        metric: u.metric,
    })
}

/// Plan counts of the Pricing Models page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    /// Plans (not deleted).
    pub total: u32,
    /// No-charge plans.
    pub free: u32,
    /// Paid plans (any type with a price).
    pub premium: u32,
    /// Plans billed every period (recurring, hybrid).
    pub recurring: u32,
}

/// `GET /v1/plans`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanList {
    /// Counts over every plan that is not deleted (whatever the filter).
    pub counts: PlanCounts,
    /// The plans matching the filter.
    pub plans: Vec<PlanView>,
}

/// Filter of the plan list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    /// Only plans with this status.
    #[serde(default)]
    pub status: Option<PlanStatus>,
    /// Only plans offered for this app (including plans for all apps).
    #[serde(default)]
    pub app_id: Option<AppId>,
    /// Include deleted plans.
    #[serde(default)]
    pub include_deleted: bool,
}

/// A price as typed: integer minor units and a currency code.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    /// Amount in minor units (cents); fractions are refused.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// `POST /v1/plans`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    /// Unique code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Marketing text.
    #[serde(default)]
    pub description: Option<String>,
    /// The one app it is for; absent or `null`: all apps.
    #[serde(default)]
    pub app_id: Option<AppId>,
    /// How it charges.
    #[serde(rename = "type")]
    pub plan_type: PlanType,
    /// Billing interval (recurring, hybrid).
    #[serde(default)]
    pub interval: Option<BillingInterval>,
    /// Base, one-time or zero price.
    pub price: PriceInput,
    /// Usage price (usage-based, hybrid).
    #[serde(default)]
    pub unit_pricing: Option<UnitPricing>,
    /// Included features.
    #[serde(default)]
    pub features: Vec<String>,
    /// Usage limits (absent: unlimited).
    #[serde(default)]
    pub limits: UsageLimits,
    /// Initial status (active or inactive; default active).
    #[serde(default)]
    pub status: Option<PlanStatus>,
}

/// Distinguishes a field sent as `null` (`Some(None)`) from one not sent (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /v1/plans/{id}`: absent fields are unchanged. Any of `type`, `interval`, `price`,
/// `unit_pricing` makes a price change (a new version when the result differs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanChanges {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New complete feature list.
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// New complete limits (absent keys: unlimited).
    #[serde(default)]
    pub limits: Option<UsageLimits>,
    /// New type.
    #[serde(default, rename = "type")]
    pub plan_type: Option<PlanType>,
    /// New interval (`null` removes it).
    #[serde(default, deserialize_with = "present")]
    pub interval: Option<Option<BillingInterval>>,
    /// New price.
    #[serde(default)]
    pub price: Option<PriceInput>,
    /// New usage price (`null` removes it).
    #[serde(default, deserialize_with = "present")]
    pub unit_pricing: Option<Option<UnitPricing>>,
    /// Notice for removed features and lowered limits, in days (default 30).
    #[serde(default)]
    pub notice_days: Option<u32>,
}

/// Which plan to put a tenant on: by id or by code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignPlan {
    /// The plan's id.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// Or its code.
    #[serde(default)]
    pub plan_code: Option<String>,
    /// What caused the change; defaults to `admin` for admins and `self_serve` for the app.
    #[serde(default)]
    pub trigger: Option<ChangeTrigger>,
}

/// A tenant's subscription.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    /// The tenant.
    pub installation_id: String,
    /// Its app.
    pub app_id: Option<String>,
    /// The plan.
    pub plan_id: String,
    /// Its code.
    pub plan_code: String,
    /// The version the tenant pays until renewal.
    pub plan_version: u32,
    /// The plan's newest version (higher: the price changes at renewal).
    pub current_plan_version: Option<u32>,
    /// What the tenant pays.
    pub price: MoneyView,
    /// Type of the version paid.
    #[serde(rename = "type")]
    pub plan_type: PlanType,
    /// Interval of the version paid.
    pub interval: Option<BillingInterval>,
    /// When the tenant got its first plan.
    pub started_at: Option<DateTime<Utc>>,
    /// Whether that first plan was paid.
    pub started_paid: Option<bool>,
    /// When the tenant joined this plan.
    pub joined_at: DateTime<Utc>,
    /// Start of the current period.
    pub period_start: DateTime<Utc>,
    /// End of the current period (`null`: does not renew).
    pub renews_at: Option<DateTime<Utc>>,
}

/// Answer of `PUT /v1/installations/{id}/plan`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanAssignment {
    /// Whether anything changed (`false`: the tenant was on the plan already).
    pub changed: bool,
    /// The subscription now.
    pub subscription: SubscriptionView,
}

/// `POST /v1/usage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// The tenant.
    pub installation_id: InstallationId,
    /// What was used.
    pub metric: UsageMetric,
    /// How much: added for counters (requests), the current level for the others.
    pub quantity: u64,
    /// Unique per report: a retry with the same key is not counted again. May also come in
    /// the `Idempotency-Key` header.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Answer of `POST /v1/usage`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageAccepted {
    /// `true` when the key was seen before (nothing counted this time).
    pub duplicate: bool,
    /// The tenant's quota after the report.
    pub quota: Quota,
}

/// One limit in a quota answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitStatus {
    /// The limit.
    pub limit: u64,
    /// Usage (this month for counters, the latest level otherwise).
    pub used: u64,
    /// `limit - used`, at least 0.
    pub remaining: u64,
    /// Counters: `used >= limit` (no room for another unit); levels: `used > limit`.
    pub exceeded: bool,
}

/// The plan a quota is computed for.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaPlan {
    /// The plan.
    pub plan_id: String,
    /// Its code.
    pub code: String,
    /// Its name.
    pub name: String,
    /// The version the tenant is on.
    pub version: u32,
    /// The plan's status.
    pub status: PlanStatus,
}

/// `GET /v1/installations/{id}/quota`.
#[derive(Debug, Clone, Serialize)]
pub struct Quota {
    /// The tenant.
    pub installation_id: String,
    /// Its plan; `null` when it is on none (then nothing is limited).
    pub plan: Option<QuotaPlan>,
    /// The month counters refer to, `YYYY-MM` (UTC).
    pub period: String,
    /// First day of the period.
    pub period_start: NaiveDate,
    /// First day of the next period.
    pub period_end: NaiveDate,
    /// The limits binding the tenant now (absent: unlimited).
    pub limits: BTreeMap<LimitKind, LimitStatus>,
    /// Usage of every metric (this month for counters).
    pub usage: BTreeMap<UsageMetric, u64>,
    /// Whether the tenant is within every limit.
    pub within_limits: bool,
    /// The limits that are exceeded.
    pub exceeded: Vec<LimitKind>,
    /// The tenant's features.
    pub features: Vec<String>,
    /// A plan with room, when a limit is exceeded.
    pub upgrade_offer: Option<PlanOffer>,
}

/// One day of usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Requests that day.
    pub quantity: u64,
}

/// Usage analytics of the Billing page.
#[derive(Debug, Clone, Serialize)]
pub struct UsageAnalytics {
    /// The tenant analysed; `null`: all tenants together.
    pub installation_id: Option<String>,
    /// `YYYY-MM`.
    pub period: String,
    /// Requests this month.
    pub requests_this_month: u64,
    /// The tenant's monthly request limit (`null`: unlimited, or all tenants).
    pub requests_limit: Option<u64>,
    /// Token hand-outs this month.
    pub token_handouts_this_month: u64,
    /// The busiest day this month.
    pub peak_day: Option<DayUsage>,
    /// Requests per day so far this month (rounded down).
    pub average_daily: u64,
    /// Every day with usage this month.
    pub daily: Vec<DayUsage>,
}

/// A plan change in the Recent Upgrades table.
#[derive(Debug, Clone, Serialize)]
pub struct PlanChangeView {
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// The tenant.
    pub installation_id: String,
    /// The plan left (`null`: the registration).
    pub from_plan: Option<String>,
    /// The plan joined.
    pub to_plan: String,
    /// `new` (the first plan), `upgrade`, `downgrade` or `lateral`.
    pub direction: String,
    /// The new plan's base price.
    pub amount: MoneyView,
    /// `registration`, `self_serve`, `admin` or `limit_reached`.
    pub trigger: String,
    /// Who did it.
    pub actor: String,
}

/// A limit reached (an upgrade offer).
#[derive(Debug, Clone, Serialize)]
pub struct LimitReachedView {
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// The tenant.
    pub installation_id: String,
    /// Its plan.
    pub plan_code: String,
    /// The limit.
    pub limit: String,
    /// Its value.
    pub limit_value: u64,
    /// Usage when reached.
    pub used: u64,
    /// The plan offered.
    pub offer_plan_code: Option<String>,
}

/// Free vs paid registrations.
#[derive(Debug, Clone, Serialize)]
pub struct Registrations {
    /// Tenants whose first plan was free.
    pub free: u64,
    /// Tenants whose first plan was paid.
    pub paid: u64,
    /// Tenants that started free and are on a paid plan now.
    pub converted: u64,
    /// `converted / free` in percent, one decimal (`null` without free registrations).
    pub conversion_rate_percent: Option<f64>,
}

/// `GET /v1/billing/overview`.
#[derive(Debug, Clone, Serialize)]
pub struct BillingOverview {
    /// Plan counts.
    pub counts: PlanCounts,
    /// Plans open to sign-ups (the Current Pricing cards), cheapest first.
    pub plans: Vec<PlanView>,
    /// Usage analytics.
    pub usage: UsageAnalytics,
    /// The latest plan changes.
    pub recent_changes: Vec<PlanChangeView>,
    /// The latest limits reached.
    pub limits_reached: Vec<LimitReachedView>,
    /// Registrations and conversion.
    pub registrations: Registrations,
}

/// Filter of the billing overview.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    /// Usage analytics for one tenant instead of all.
    #[serde(default)]
    pub installation_id: Option<InstallationId>,
}
