//! What a plan costs and what it includes: types, billing intervals, usage metrics and limits.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::money::{Money, MAX_AMOUNT_MINOR};
use super::PlanError;
use crate::ParseError;

/// How a plan charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanType {
    /// No charge (trial or basic tier).
    Free,
    /// A single payment at registration or upgrade.
    OneTime,
    /// A monthly or annual subscription.
    Recurring,
    /// Pay per use (per block of requests, ...), billed monthly.
    UsageBased,
    /// A recurring base fee plus usage charges.
    Hybrid,
}

impl PlanType {
    /// Every type, in the dashboard's order.
    pub const ALL: [PlanType; 5] = [
        PlanType::Free,
        PlanType::OneTime,
        PlanType::Recurring,
        PlanType::UsageBased,
        PlanType::Hybrid,
    ];

    /// The wire name (`usage_based`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PlanType::Free => "free",
            PlanType::OneTime => "one_time",
            PlanType::Recurring => "recurring",
            PlanType::UsageBased => "usage_based",
            PlanType::Hybrid => "hybrid",
        }
    }
}

impl fmt::Display for PlanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PlanType {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        PlanType::ALL
            .into_iter()
            .find(|t| t.as_str() == wanted)
            .ok_or_else(|| {
                ParseError::new(
                    "plan type",
                    s,
                    "expected free, one_time, recurring, usage_based or hybrid",
                )
            })
    }
}

/// Billing period of recurring charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingInterval {
    /// Every month.
    Monthly,
    /// Every year.
    Annual,
}

impl BillingInterval {
    /// Length in months.
    pub fn months(self) -> u32 {
        match self {
            BillingInterval::Monthly => 1,
            BillingInterval::Annual => 12,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BillingInterval::Monthly => "monthly",
            BillingInterval::Annual => "annual",
        }
    }
}

impl FromStr for BillingInterval {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "monthly" | "month" => Ok(BillingInterval::Monthly),
            "annual" | "annually" | "yearly" | "year" => Ok(BillingInterval::Annual),
            _ => Err(ParseError::new(
                "billing interval",
                s,
                "expected monthly or annual",
            )),
        }
    }
}

/// Whether a metric accumulates over the month or is a current level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Summed over the calendar month (UTC), starting at zero each month.
    MonthlyCounter,
    /// The latest reported value counts.
    Gauge,
}

/// What a tenant's usage is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageMetric {
    /// Requests the app made on the tenant's behalf (reported by the app).
    Requests,
    /// Access tokens Hubkeeper handed out for the tenant (counted by Hubkeeper itself).
    TokenHandouts,
    /// Contacts synced.
    Contacts,
    /// Users of the tenant.
    Users,
    /// Storage used, in megabytes.
    StorageMb,
    /// Connections open at the same time.
    ConcurrentConnections,
}

impl UsageMetric {
    /// Every metric.
    pub const ALL: [UsageMetric; 6] = [
        UsageMetric::Requests,
        UsageMetric::TokenHandouts,
        UsageMetric::Contacts,
        UsageMetric::Users,
        UsageMetric::StorageMb,
        UsageMetric::ConcurrentConnections,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageMetric::Requests => "requests",
            UsageMetric::TokenHandouts => "token_handouts",
            UsageMetric::Contacts => "contacts",
            UsageMetric::Users => "users",
            UsageMetric::StorageMb => "storage_mb",
            UsageMetric::ConcurrentConnections => "concurrent_connections",
        }
    }

    /// How reports of this metric combine.
    pub fn kind(self) -> MetricKind {
        match self {
            UsageMetric::Requests | UsageMetric::TokenHandouts => MetricKind::MonthlyCounter,
            _ => MetricKind::Gauge,
        }
    }

    /// The limit that caps this metric.
    pub fn limit(self) -> LimitKind {
        match self {
            UsageMetric::Requests => LimitKind::RequestsPerMonth,
            UsageMetric::TokenHandouts => LimitKind::TokenHandoutsPerMonth,
            UsageMetric::Contacts => LimitKind::Contacts,
            UsageMetric::Users => LimitKind::Users,
            UsageMetric::StorageMb => LimitKind::StorageMb,
            UsageMetric::ConcurrentConnections => LimitKind::ConcurrentConnections,
        }
    }

    /// Whether the app may report it. Token hand-outs are counted by Hubkeeper: accepting
    /// reports of them would let a client rewrite the numbers its quota is checked against.
    pub fn reportable(self) -> bool {
        self != UsageMetric::TokenHandouts
    }
}

impl fmt::Display for UsageMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UsageMetric {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UsageMetric::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim())
            .ok_or_else(|| {
                ParseError::new(
                    "usage metric",
                    s,
                    "expected requests, token_handouts, contacts, users, storage_mb or \
                     concurrent_connections",
                )
            })
    }
}

/// A usage limit a plan can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Requests per calendar month.
    RequestsPerMonth,
    /// Token hand-outs per calendar month.
    TokenHandoutsPerMonth,
    /// Contacts.
    Contacts,
    /// Users.
    Users,
    /// Storage in megabytes.
    StorageMb,
    /// Concurrent connections.
    ConcurrentConnections,
}

impl LimitKind {
    /// Every limit.
    pub const ALL: [LimitKind; 6] = [
        LimitKind::RequestsPerMonth,
        LimitKind::TokenHandoutsPerMonth,
        LimitKind::Contacts,
        LimitKind::Users,
        LimitKind::StorageMb,
        LimitKind::ConcurrentConnections,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMonth => "requests_per_month",
            LimitKind::TokenHandoutsPerMonth => "token_handouts_per_month",
            LimitKind::Contacts => "contacts",
            LimitKind::Users => "users",
            LimitKind::StorageMb => "storage_mb",
            LimitKind::ConcurrentConnections => "concurrent_connections",
        }
    }

    /// The metric this limit caps.
    pub fn metric(self) -> UsageMetric {
        match self {
            LimitKind::RequestsPerMonth => UsageMetric::Requests,
            LimitKind::TokenHandoutsPerMonth => UsageMetric::TokenHandouts,
            LimitKind::Contacts => UsageMetric::Contacts,
            LimitKind::Users => UsageMetric::Users,
            LimitKind::StorageMb => UsageMetric::StorageMb,
            LimitKind::ConcurrentConnections => UsageMetric::ConcurrentConnections,
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LimitKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LimitKind::ALL
            .into_iter()
            .find(|l| l.as_str() == s.trim())
            .ok_or_else(|| {
                ParseError::new(
                    "usage limit",
                    s,
                    "expected requests_per_month, token_handouts_per_month, contacts, users, \
                     storage_mb or concurrent_connections",
                )
            })
    }
}

/// Limits of a plan. A limit that is absent is unlimited.
pub type UsageLimits = BTreeMap<LimitKind, u64>;

/// Whether `new` is more generous than `old` (`None` = unlimited).
pub(crate) fn more_generous(new: Option<u64>, old: Option<u64>) -> bool {
    match (new, old) {
        (None, Some(_)) => true,
        (Some(n), Some(o)) => n > o,
        _ => false,
    }
}

/// The charge per block of usage of usage-based and hybrid plans, e.g. 10 cents per 1000
/// requests. Blocks keep per-unit prices in integers even when one unit costs a fraction of a
/// cent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPricing {
    /// Price of one block, in minor units of the plan's currency.
    pub amount_minor: i64,
    /// Units per block (at least 1).
    pub per_units: u64,
    /// What is counted; a monthly counter.
    pub metric: UsageMetric,
}

/// Everything that fixes what a subscriber pays: changing any of it makes a new plan version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTerms {
    /// How the plan charges.
    pub plan_type: PlanType,
    /// Period of the base price (recurring and hybrid plans only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<BillingInterval>,
    /// Base (recurring), one-time or zero (free, usage-based) price.
    pub price: Money,
    /// Per-usage charge (usage-based and hybrid plans only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_pricing: Option<UnitPricing>,
}

impl PlanTerms {
    /// Checks the combination of type, interval and prices.
    pub(crate) fn validate(&self) -> Result<(), PlanError> {
        let bad = |reason: &'static str| {
            Err(PlanError::InvalidPricing {
                plan_type: self.plan_type,
                reason,
            })
        };
        if !(0..=MAX_AMOUNT_MINOR).contains(&self.price.amount_minor) {
            return bad("the price must be between 0 and 1000000000000 minor units");
        }
        if let Some(unit) = &self.unit_pricing {
            if !(1..=MAX_AMOUNT_MINOR).contains(&unit.amount_minor) {
                return bad("the usage price must be between 1 and 1000000000000 minor units");
            }
            if unit.per_units == 0 {
                return bad("usage is priced per block of at least 1 unit");
            }
            if unit.metric.kind() != MetricKind::MonthlyCounter {
                return bad(
                    "usage can only be priced on a monthly counter (requests, token_handouts)",
                );
            }
        }
        let paid = self.price.amount_minor > 0;
        match self.plan_type {
            PlanType::Free => {
                if paid {
                    return bad("a free plan has a price of 0");
                }
                if self.interval.is_some() || self.unit_pricing.is_some() {
                    return bad("a free plan has no billing interval and no usage price");
                }
            }
            PlanType::OneTime => {
                if !paid {
                    return bad("a one-time plan needs a price above 0");
                }
                if self.interval.is_some() || self.unit_pricing.is_some() {
                    return bad("a one-time plan has no billing interval and no usage price");
                }
            }
            PlanType::Recurring => {
                if !paid {
                    return bad("a recurring plan needs a price above 0");
                }
                if self.interval.is_none() {
                    return bad("a recurring plan needs a billing interval (monthly or annual)");
                }
                if self.unit_pricing.is_some() {
                    return bad("a recurring plan has no usage price (use a hybrid plan)");
                }
            }
            PlanType::UsageBased => {
                if paid {
                    return bad("a usage-based plan has no base price (use a hybrid plan)");
                }
                if self.interval.is_some() {
                    return bad("a usage-based plan is billed monthly; give no billing interval");
                }
                if self.unit_pricing.is_none() {
                    return bad("a usage-based plan needs a usage price");
                }
            }
            PlanType::Hybrid => {
                if !paid {
                    return bad("a hybrid plan needs a base price above 0");
                }
                if self.interval.is_none() {
                    return bad("a hybrid plan needs a billing interval (monthly or annual)");
                }
                if self.unit_pricing.is_none() {
                    return bad("a hybrid plan needs a usage price");
                }
            }
        }
        Ok(())
    }

    /// Whether subscribers pay anything (a premium plan).
    pub fn is_paid(&self) -> bool {
        self.price.amount_minor > 0 || self.unit_pricing.is_some()
    }

    /// Whether the plan bills every period (the dashboard's "recurring plans").
    pub fn is_recurring(&self) -> bool {
        matches!(self.plan_type, PlanType::Recurring | PlanType::Hybrid)
    }

    /// Months between renewals; `None` for plans that never renew (free, one-time).
    pub fn renewal_months(&self) -> Option<u32> {
        match self.plan_type {
            PlanType::Recurring | PlanType::Hybrid => self.interval.map(BillingInterval::months),
            PlanType::UsageBased => Some(1),
            PlanType::Free | PlanType::OneTime => None,
        }
    }

    /// The base price spread over a month, to compare plans: annual prices count a twelfth,
    /// one-time prices count in full, usage charges are not predictable and count zero.
    pub fn monthly_equivalent_minor(&self) -> i64 {
        match (self.plan_type, self.interval) {
            (PlanType::Recurring | PlanType::Hybrid, Some(BillingInterval::Annual)) => {
                self.price.amount_minor / 12
            }
            (PlanType::Free | PlanType::UsageBased, _) => 0,
            _ => self.price.amount_minor,
        }
    }
}
