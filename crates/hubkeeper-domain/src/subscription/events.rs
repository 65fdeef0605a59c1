//! Subscription events: persisted forever and relayed to other services, so their JSON shape is
//! a contract. See the crate docs for the compatibility rules.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{ChangeDirection, ChangeTrigger, PlanOffer, PlanRef};
use crate::ids::{AppId, InstallationId};
use crate::plan::{PlanId, StoredLimitKind, StoredMoney, StoredPlanTerms};
use crate::stored::{convert_fields, stored_enum};

/// Stable event type names (also the serde tags of [`SubscriptionEvent`]).
pub mod event_types {
    /// [`super::SubscriptionEvent::Started`].
    pub const SUBSCRIPTION_STARTED: &str = "SubscriptionStarted";
    /// [`super::SubscriptionEvent::PlanChanged`].
    pub const SUBSCRIPTION_PLAN_CHANGED: &str = "SubscriptionPlanChanged";
    /// [`super::SubscriptionEvent::Renewed`].
    pub const SUBSCRIPTION_RENEWED: &str = "SubscriptionRenewed";
    /// [`super::SubscriptionEvent::UsageLimitReached`].
    pub const USAGE_LIMIT_REACHED: &str = "UsageLimitReached";

    /// Every subscription event type.
    pub const ALL: [&str; 4] = [
        SUBSCRIPTION_STARTED,
        SUBSCRIPTION_PLAN_CHANGED,
        SUBSCRIPTION_RENEWED,
        USAGE_LIMIT_REACHED,
    ];
}

/// Everything that can happen to a tenant's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionEvent {
    /// The tenant's first plan (its registration: free or paid).
    #[serde(rename = "SubscriptionStarted")]
    Started(SubscriptionStarted),
    /// Upgrade, downgrade or a move to a plan of the same price.
    #[serde(rename = "SubscriptionPlanChanged")]
    PlanChanged(SubscriptionPlanChanged),
    /// A new billing period on the plan's current version.
    #[serde(rename = "SubscriptionRenewed")]
    Renewed(SubscriptionRenewed),
    /// A usage limit of the plan was reached in a period (once per limit and period).
    #[serde(rename = "UsageLimitReached")]
    UsageLimitReached(UsageLimitReached),
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        use event_types::*;
        match self {
            Self::Started(_) => SUBSCRIPTION_STARTED,
            Self::PlanChanged(_) => SUBSCRIPTION_PLAN_CHANGED,
            Self::Renewed(_) => SUBSCRIPTION_RENEWED,
            Self::UsageLimitReached(_) => USAGE_LIMIT_REACHED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Payload of `SubscriptionStarted` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionStarted {
    /// The tenant (also the aggregate id).
    pub installation_id: InstallationId,
    /// The tenant's app.
    pub app_id: AppId,
    /// The plan and the version (price) signed up for.
    pub plan: StoredPlanRef,
    /// Whether the registration was paid (for conversion statistics).
    pub started_paid: bool,
    /// What caused it.
    pub trigger: StoredChangeTrigger,
    /// When the subscription started.
    pub started_at: DateTime<Utc>,
    /// End of the first billing period; `None` for plans that do not renew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews_at: Option<DateTime<Utc>>,
}

/// Payload of `SubscriptionPlanChanged` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionPlanChanged {
    /// The tenant.
    pub installation_id: InstallationId,
    /// The plan left.
    pub from: StoredPlanRef,
    /// The plan joined.
    pub to: StoredPlanRef,
    /// Upgrade, downgrade or lateral, by monthly-equivalent base price.
    pub direction: StoredChangeDirection,
    /// The new plan's base price (what the change costs per period or once).
    pub amount: StoredMoney,
    /// What caused it.
    pub trigger: StoredChangeTrigger,
    /// When the change took effect.
    pub changed_at: DateTime<Utc>,
    /// End of the new plan's first period; `None` for plans that do not renew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews_at: Option<DateTime<Utc>>,
}

/// Payload of `SubscriptionRenewed` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRenewed {
    /// The tenant.
    pub installation_id: InstallationId,
    /// The version the period before was billed at.
    pub from_version: u32,
    /// The plan at its current version, billed from now on.
    pub plan: StoredPlanRef,
    /// When the renewal was recorded.
    pub renewed_at: DateTime<Utc>,
    /// Start of the new period (the end of the previous one).
    pub period_start: DateTime<Utc>,
    /// End of the new period.
    pub renews_at: DateTime<Utc>,
}

/// Payload of `UsageLimitReached` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageLimitReached {
    /// The tenant.
    pub installation_id: InstallationId,
    /// The tenant's plan.
    pub plan_id: PlanId,
    /// Its code.
    pub plan_code: String,
    /// The limit reached.
    pub limit: StoredLimitKind,
    /// Its value.
    pub limit_value: u64,
    /// Usage when it was noticed.
    pub used: u64,
    /// `YYYY-MM` for monthly limits; also the month a level limit was first reached in.
    pub period: String,
    /// A plan to offer as an upgrade, if one has room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<StoredPlanOffer>,
    /// When it was noticed.
    pub reached_at: DateTime<Utc>,
}

/// [`PlanRef`] as subscription events store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlanRef {
    /// The plan.
    pub plan_id: PlanId,
    /// Its code at the time.
    pub code: String,
    /// The version.
    pub version: u32,
    /// Its prices.
    pub terms: StoredPlanTerms,
}

convert_fields!(PlanRef <=> StoredPlanRef { plan_id, code, version, terms });

/// [`PlanOffer`] as subscription events store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlanOffer {
    /// The plan.
    pub plan_id: PlanId,
    /// Its code.
    pub code: String,
}

convert_fields!(PlanOffer <=> StoredPlanOffer { plan_id, code });

stored_enum!(
    /// [`ChangeTrigger`] as subscription events store it.
    StoredChangeTrigger <=> ChangeTrigger {
        Registration = "registration",
        SelfServe = "self_serve",
        Admin = "admin",
        LimitReached = "limit_reached",
    }
);

stored_enum!(
    /// [`ChangeDirection`] as subscription events store it.
    StoredChangeDirection <=> ChangeDirection {
        Upgrade = "upgrade",
        Downgrade = "downgrade",
        Lateral = "lateral",
    }
);
