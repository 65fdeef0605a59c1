//! Plan events: persisted forever and relayed to other services, so their JSON shape is a
//! contract. See the crate docs for the compatibility rules.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::money::{Currency, Money};
use super::terms::{
    BillingInterval, LimitKind, PlanTerms, PlanType, UnitPricing, UsageLimits, UsageMetric,
};
use super::{LimitReduction, PlanId, PlanStatus};
use crate::ids::AppId;
use crate::stored::{convert_fields, convert_option, stored_enum};

/// Stable event type names (also the serde tags of [`PlanEvent`]).
pub mod event_types {
    /// [`super::PlanEvent::Created`].
    pub const PLAN_CREATED: &str = "PlanCreated";
    /// [`super::PlanEvent::DetailsChanged`].
    pub const PLAN_DETAILS_CHANGED: &str = "PlanDetailsChanged";
    /// [`super::PlanEvent::ReductionAnnounced`].
    pub const PLAN_REDUCTION_ANNOUNCED: &str = "PlanReductionAnnounced";
    /// [`super::PlanEvent::Repriced`].
    pub const PLAN_REPRICED: &str = "PlanRepriced";
    /// [`super::PlanEvent::StatusChanged`].
    pub const PLAN_STATUS_CHANGED: &str = "PlanStatusChanged";
    /// [`super::PlanEvent::Deleted`].
    pub const PLAN_DELETED: &str = "PlanDeleted";

    /// Every plan event type.
    pub const ALL: [&str; 6] = [
        PLAN_CREATED,
        PLAN_DETAILS_CHANGED,
        PLAN_REDUCTION_ANNOUNCED,
        PLAN_REPRICED,
        PLAN_STATUS_CHANGED,
        PLAN_DELETED,
    ];
}

/// Everything that can happen to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanEvent {
    /// The plan was defined (version 1).
    #[serde(rename = "PlanCreated")]
    Created(PlanCreated),
    /// Changes that affect nobody negatively: name, description, added features, raised limits.
    #[serde(rename = "PlanDetailsChanged")]
    DetailsChanged(PlanDetailsChanged),
    /// Features removed or limits lowered: new subscribers get the new terms at once, existing
    /// ones at `effective_at`.
    #[serde(rename = "PlanReductionAnnounced")]
    ReductionAnnounced(PlanReductionAnnounced),
    /// The price changed: a new version; existing subscribers keep theirs until renewal.
    #[serde(rename = "PlanRepriced")]
    Repriced(PlanRepriced),
    /// Active, inactive, deprecated or archived.
    #[serde(rename = "PlanStatusChanged")]
    StatusChanged(PlanStatusChanged),
    /// The plan was deleted; it accepts nothing further and its code stays taken.
    #[serde(rename = "PlanDeleted")]
    Deleted(PlanDeleted),
}

impl DomainEvent for PlanEvent {
    fn event_type(&self) -> String {
        use event_types::*;
        match self {
            Self::Created(_) => PLAN_CREATED,
            Self::DetailsChanged(_) => PLAN_DETAILS_CHANGED,
            Self::ReductionAnnounced(_) => PLAN_REDUCTION_ANNOUNCED,
            Self::Repriced(_) => PLAN_REPRICED,
            Self::StatusChanged(_) => PLAN_STATUS_CHANGED,
            Self::Deleted(_) => PLAN_DELETED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Payload of `PlanCreated` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCreated {
    /// The plan's id.
    pub plan_id: PlanId,
    /// Unique code, lower case (`starter`, `pro_v2`).
    pub code: String,
    /// Display name.
    pub name: String,
    /// Marketing text, possibly empty.
    #[serde(default)]
    pub description: String,
    /// The one app the plan is offered for; `None`: every app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<AppId>,
    /// Prices of version 1.
    pub terms: StoredPlanTerms,
    /// Included features, in display order.
    pub features: Vec<String>,
    /// Usage limits; an absent limit is unlimited.
    pub limits: StoredLimits,
    /// Initial status (active or inactive).
    pub status: StoredPlanStatus,
    /// Always 1.
    pub version: u32,
    /// When the plan was created.
    pub created_at: DateTime<Utc>,
}

/// Payload of `PlanDetailsChanged` (version 1.0): only what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDetailsChanged {
    /// The plan's id.
    pub plan_id: PlanId,
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New complete feature list (features were only added or reordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Limits raised, with their new value (`None`: now unlimited).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits_raised: BTreeMap<StoredLimitKind, Option<u64>>,
    /// When the change was made.
    pub changed_at: DateTime<Utc>,
}

/// One lowered limit, as plan events store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLimitReduction {
    /// The limit before (`None`: unlimited).
    pub from: Option<u64>,
    /// The limit after.
    pub to: u64,
}

convert_fields!(LimitReduction <=> StoredLimitReduction { from, to });

/// Payload of `PlanReductionAnnounced` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReductionAnnounced {
    /// The plan's id.
    pub plan_id: PlanId,
    /// New complete feature list, when features were removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// Features taken away.
    #[serde(default)]
    pub features_removed: Vec<String>,
    /// Limits lowered.
    #[serde(default)]
    pub limits_lowered: BTreeMap<StoredLimitKind, StoredLimitReduction>,
    /// When subscribers were notified (the change was made).
    pub announced_at: DateTime<Utc>,
    /// When the reduction applies to subscribers who joined before `announced_at`.
    pub effective_at: DateTime<Utc>,
}

/// Payload of `PlanRepriced` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRepriced {
    /// The plan's id.
    pub plan_id: PlanId,
    /// Version existing subscribers stay on until renewal.
    pub previous_version: u32,
    /// The new version.
    pub version: u32,
    /// Terms of the previous version.
    pub previous_terms: StoredPlanTerms,
    /// Terms of the new version.
    pub terms: StoredPlanTerms,
    /// When the new version took effect for new subscribers.
    pub repriced_at: DateTime<Utc>,
}

/// Payload of `PlanStatusChanged` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStatusChanged {
    /// The plan's id.
    pub plan_id: PlanId,
    /// Status before.
    pub from: StoredPlanStatus,
    /// Status after.
    pub to: StoredPlanStatus,
    /// Subscribers the caller counted at the time (audit).
    pub subscribers: u32,
    /// When the status changed.
    pub changed_at: DateTime<Utc>,
}

/// Payload of `PlanDeleted` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDeleted {
    /// The plan's id.
    pub plan_id: PlanId,
    /// Its code, which stays reserved.
    pub code: String,
    /// When the plan was deleted.
    pub deleted_at: DateTime<Utc>,
}

stored_enum!(
    /// [`PlanStatus`] as plan events store it.
    StoredPlanStatus <=> PlanStatus {
        Active = "active",
        Inactive = "inactive",
        Deprecated = "deprecated",
        Archived = "archived",
    }
);

stored_enum!(
    /// [`PlanType`] as plan and subscription events store it.
    StoredPlanType <=> PlanType {
        Free = "free",
        OneTime = "one_time",
        Recurring = "recurring",
        UsageBased = "usage_based",
        Hybrid = "hybrid",
    }
);

stored_enum!(
    /// [`BillingInterval`] as plan and subscription events store it.
    StoredBillingInterval <=> BillingInterval {
        Monthly = "monthly",
        Annual = "annual",
    }
);

stored_enum!(
    /// [`UsageMetric`] as plan and subscription events store it.
    StoredUsageMetric <=> UsageMetric {
        Requests = "requests",
        TokenHandouts = "token_handouts",
        Contacts = "contacts",
        Users = "users",
        StorageMb = "storage_mb",
        ConcurrentConnections = "concurrent_connections",
    }
);

stored_enum!(
    /// [`LimitKind`] as plan and subscription events store it.
    StoredLimitKind <=> LimitKind {
        RequestsPerMonth = "requests_per_month",
        TokenHandoutsPerMonth = "token_handouts_per_month",
        Contacts = "contacts",
        Users = "users",
        StorageMb = "storage_mb",
        ConcurrentConnections = "concurrent_connections",
    }
);

/// Usage limits as plan events store them: an absent limit is unlimited.
pub type StoredLimits = BTreeMap<StoredLimitKind, u64>;

/// [`UsageLimits`] in their stored form.
pub(crate) fn stored_limits(limits: UsageLimits) -> StoredLimits {
    limits.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

/// Stored limits as [`UsageLimits`].
pub(crate) fn usage_limits(limits: StoredLimits) -> UsageLimits {
    limits.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

/// An amount as plan and subscription events store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMoney {
    /// Amount in the currency's minor unit.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: Currency,
}

convert_fields!(Money <=> StoredMoney { amount_minor, currency });

/// A usage price as plan and subscription events store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUnitPricing {
    /// Price of one block, in minor units.
    pub amount_minor: i64,
    /// Units per block.
    pub per_units: u64,
    /// What is counted.
    pub metric: StoredUsageMetric,
}

convert_fields!(UnitPricing <=> StoredUnitPricing { amount_minor, per_units, metric });

/// [`PlanTerms`] as plan and subscription events store them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlanTerms {
    /// How the plan charges.
    pub plan_type: StoredPlanType,
    /// Period of the base price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<StoredBillingInterval>,
    /// Base, one-time or zero price.
    pub price: StoredMoney,
    /// Per-usage charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_pricing: Option<StoredUnitPricing>,
}

convert_fields!(PlanTerms <=> StoredPlanTerms {
    plan_type,
    interval via convert_option,
    price,
    unit_pricing via convert_option,
});
