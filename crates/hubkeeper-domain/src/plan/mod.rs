//! The `Plan` aggregate: one pricing plan (code, type, price, features, usage limits, status).
//!
//! Rules come from the dashboard's Pricing Models page:
//! - descriptions and added features or raised limits take effect at once for everybody;
//! - a price change creates a new plan version: existing subscribers keep the version (and
//!   price) they signed up for until their renewal;
//! - removing a feature or lowering a limit is announced with a notice date: new subscribers
//!   get the reduced plan at once, existing ones keep the old terms until the notice runs out;
//! - status: active (open to sign-ups), inactive/hidden (no new sign-ups, subscribers keep
//!   access), deprecated (no new sign-ups, subscribers encouraged to move), archived (no
//!   subscribers left, kept for the record and accepting no more changes);
//! - deleting or archiving a plan with subscribers is refused, naming how many.
//!
//! The aggregate cannot see subscriptions or other plans: the edge reserves the code (a unique
//! index) before creating a plan and counts subscribers before a delete or archive.

mod events;
mod money;
mod terms;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use events::{
    event_types, PlanCreated, PlanDeleted, PlanDetailsChanged, PlanEvent, PlanReductionAnnounced,
    PlanRepriced, PlanStatusChanged, StoredBillingInterval, StoredLimitKind, StoredLimitReduction,
    StoredLimits, StoredMoney, StoredPlanStatus, StoredPlanTerms, StoredPlanType,
    StoredUnitPricing, StoredUsageMetric,
};
pub use money::{Currency, Money, CURRENCIES, MAX_AMOUNT_MINOR};
pub use terms::{
    BillingInterval, LimitKind, MetricKind, PlanTerms, PlanType, UnitPricing, UsageLimits,
    UsageMetric,
};

use crate::aggregate::aggregate;
pub use crate::ids::PlanId;

use crate::ids::AppId;
use crate::validate::{shorten, single_line};
use crate::ParseError;

/// Longest plan name.
pub const MAX_NAME_CHARS: usize = 80;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest feature line.
pub const MAX_FEATURE_CHARS: usize = 200;
/// Most features per plan.
pub const MAX_FEATURES: usize = 50;
/// Notice given for reductions when the caller names none.
pub const DEFAULT_NOTICE_DAYS: u32 = 30;
/// Longest notice accepted.
pub const MAX_NOTICE_DAYS: u32 = 365;

/// Whether a plan takes new subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Open to new sign-ups and renewals.
    #[default]
    Active,
    /// Hidden: no new sign-ups; subscribers keep access.
    Inactive,
    /// No new sign-ups; subscribers encouraged to move.
    Deprecated,
    /// No subscribers left; kept for the record only.
    Archived,
}

impl PlanStatus {
    /// Every status.
    pub const ALL: [PlanStatus; 4] = [
        PlanStatus::Active,
        PlanStatus::Inactive,
        PlanStatus::Deprecated,
        PlanStatus::Archived,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Active => "active",
            PlanStatus::Inactive => "inactive",
            PlanStatus::Deprecated => "deprecated",
            PlanStatus::Archived => "archived",
        }
    }

    /// Whether new subscribers may join.
    pub fn accepts_sign_ups(self) -> bool {
        self == PlanStatus::Active
    }
}

impl fmt::Display for PlanStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PlanStatus {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "active" => Ok(PlanStatus::Active),
            "inactive" | "hidden" => Ok(PlanStatus::Inactive),
            "deprecated" => Ok(PlanStatus::Deprecated),
            "archived" => Ok(PlanStatus::Archived),
            _ => Err(ParseError::new(
                "plan status",
                s,
                "expected active, inactive, deprecated or archived",
            )),
        }
    }
}

/// Prices as typed in the dashboard; the currency is validated by the aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingInput {
    /// How the plan charges.
    pub plan_type: PlanType,
    /// Billing period (recurring, hybrid).
    pub interval: Option<BillingInterval>,
    /// Base or one-time price in minor units (0 for free and usage-based plans).
    pub price_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Usage price (usage-based, hybrid).
    pub unit_pricing: Option<UnitPricing>,
}

/// Input of [`PlanCommand::CreatePlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePlan {
    /// Id of the new plan (also the aggregate id).
    pub plan_id: PlanId,
    /// Unique code; trimmed and lower-cased.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Marketing text.
    pub description: Option<String>,
    /// The one app the plan is for; `None`: all apps.
    pub app_id: Option<AppId>,
    /// Prices.
    pub pricing: PricingInput,
    /// Included features.
    pub features: Vec<String>,
    /// Usage limits (absent: unlimited).
    pub limits: UsageLimits,
    /// `None`: active. Only active or inactive are allowed for a new plan.
    pub status: Option<PlanStatus>,
}

/// Input of [`PlanCommand::UpdatePlan`]: `None` leaves a field unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdatePlan {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New complete feature list.
    pub features: Option<Vec<String>>,
    /// New complete set of limits (absent: unlimited).
    pub limits: Option<UsageLimits>,
    /// New prices (complete): a new version when they differ.
    pub pricing: Option<PricingInput>,
    /// Notice for removed features and lowered limits; `None`: [`DEFAULT_NOTICE_DAYS`].
    pub notice_days: Option<u32>,
}

/// Commands accepted by [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanCommand {
    /// Define a plan.
    CreatePlan(CreatePlan),
    /// Change name, description, features, limits or prices.
    UpdatePlan(UpdatePlan),
    /// Move to another status.
    ChangeStatus {
        /// The new status.
        status: PlanStatus,
        /// Current subscribers, counted by the caller (archiving needs none).
        subscribers: u32,
    },
    /// Delete the plan.
    DeletePlan {
        /// Current subscribers, counted by the caller (deleting needs none).
        subscribers: u32,
    },
}

/// Why a plan command was refused. Messages are meant for operators.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// Create on an existing plan.
    #[error("plan {0} already exists")]
    AlreadyExists(PlanId),
    /// Any command before creation.
    #[error("plan does not exist")]
    NotFound,
    /// Any command after deletion.
    #[error("plan has been deleted; it is kept for the record only")]
    Deleted,
    /// Changes to an archived plan.
    #[error("plan is archived and kept for the record only; create a new plan instead")]
    Archived,
    /// Bad plan code.
    #[error(
        "plan code {code:?} is invalid: use 2 to 40 lower-case letters, digits, '_' or '-', \
         starting with a letter (e.g. starter, pro_v2)"
    )]
    InvalidCode {
        /// The offending code (shortened).
        code: String,
    },
    /// Bad name.
    #[error("plan name {reason} (at most {max} characters, one line)", max = MAX_NAME_CHARS)]
    InvalidName {
        /// What is wrong.
        reason: &'static str,
    },
    /// Description too long.
    #[error("description is longer than {max} characters", max = MAX_DESCRIPTION_CHARS)]
    DescriptionTooLong,
    /// Currency not in the accepted ISO 4217 list.
    #[error("currency {0:?} is not an accepted ISO 4217 code (e.g. USD, EUR, NOK, GBP, SEK, DKK)")]
    UnknownCurrency(String),
    /// Type, interval and prices do not fit together.
    #[error("invalid {plan_type} pricing: {reason}")]
    InvalidPricing {
        /// The plan type.
        plan_type: PlanType,
        /// What is wrong.
        reason: &'static str,
    },
    /// Bad feature line.
    #[error("feature {feature:?} {reason}")]
    InvalidFeature {
        /// The offending entry (shortened).
        feature: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Too many features.
    #[error("a plan has at most {max} features", max = MAX_FEATURES)]
    TooManyFeatures,
    /// Notice out of range.
    #[error("notice must be between 0 and {max} days", max = MAX_NOTICE_DAYS)]
    InvalidNotice,
    /// A new plan must start active or inactive.
    #[error("a new plan starts active or inactive, not {0}")]
    InvalidInitialStatus(PlanStatus),
    /// Delete or archive refused.
    #[error("plan has {count} subscriber(s); move them to another plan before you {action} it")]
    HasSubscribers {
        /// Subscribers counted by the caller.
        count: u32,
        /// `delete` or `archive`.
        action: &'static str,
    },
}

/// One price version of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanVersion {
    /// Version number, from 1.
    pub version: u32,
    /// Its prices.
    pub terms: PlanTerms,
    /// When it became the current version.
    pub since: DateTime<Utc>,
}

/// One lowered limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitReduction {
    /// The limit before (`None`: unlimited).
    pub from: Option<u64>,
    /// The limit after.
    pub to: u64,
}

/// A reduction that has been announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// When it was announced.
    pub announced_at: DateTime<Utc>,
    /// When it applies to existing subscribers.
    pub effective_at: DateTime<Utc>,
    /// Features taken away.
    pub features_removed: Vec<String>,
    /// Limits lowered.
    pub limits_lowered: std::collections::BTreeMap<LimitKind, LimitReduction>,
}

/// Configuration of a live plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDefinition {
    /// Unique code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Marketing text.
    pub description: String,
    /// Offered for one app only, or for all.
    pub app_id: Option<AppId>,
    /// Current (newest) version number.
    pub version: u32,
    /// Prices of the current version.
    pub terms: PlanTerms,
    /// Features for new subscribers.
    pub features: Vec<String>,
    /// Limits for new subscribers.
    pub limits: UsageLimits,
    /// Status.
    pub status: PlanStatus,
    /// When the plan was created.
    pub created_at: DateTime<Utc>,
}

/// State of one plan, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    plan_id: Option<PlanId>,
    definition: Option<PlanDefinition>,
    versions: Vec<PlanVersion>,
    notices: Vec<Notice>,
    updated_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
}

impl Plan {
    /// The plan's id, once created.
    pub fn plan_id(&self) -> Option<PlanId> {
        self.plan_id
    }

    /// The current definition (also after deletion, for the record).
    pub fn definition(&self) -> Option<&PlanDefinition> {
        self.definition.as_ref()
    }

    /// Every price version, oldest first.
    pub fn versions(&self) -> &[PlanVersion] {
        &self.versions
    }

    /// The terms of `version`, if it exists.
    pub fn version(&self, version: u32) -> Option<&PlanVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// Announced reductions, oldest first.
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    /// When anything last changed.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }

    /// When the plan was deleted.
    pub fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }

    /// Whether the plan was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// The limits that bind a subscriber who joined the plan at `joined_at`, at `now`: the
    /// current limits, except that reductions announced after the subscriber joined and not yet
    /// effective still leave the old (more generous) value.
    pub fn limits_for(&self, joined_at: DateTime<Utc>, now: DateTime<Utc>) -> UsageLimits {
        let mut limits = self
            .definition
            .as_ref()
            .map(|d| d.limits.clone())
            .unwrap_or_default();
        for notice in self.pending_for(joined_at, now) {
            for (kind, reduction) in &notice.limits_lowered {
                let current = limits.get(kind).copied();
                if terms::more_generous(reduction.from, current) {
                    match reduction.from {
                        Some(value) => limits.insert(*kind, value),
                        None => limits.remove(kind),
                    };
                }
            }
        }
        limits
    }

    /// The features a subscriber who joined at `joined_at` has at `now` (see [`Self::limits_for`]).
    pub fn features_for(&self, joined_at: DateTime<Utc>, now: DateTime<Utc>) -> Vec<String> {
        let mut features = self
            .definition
            .as_ref()
            .map(|d| d.features.clone())
            .unwrap_or_default();
        for notice in self.pending_for(joined_at, now) {
            for feature in &notice.features_removed {
                if !features.contains(feature) {
                    features.push(feature.clone());
                }
            }
        }
        features
    }

    fn pending_for(
        &self,
        joined_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = &Notice> {
        self.notices
            .iter()
            .filter(move |n| n.announced_at > joined_at && n.effective_at > now)
    }

    fn live(&self) -> Result<(PlanId, &PlanDefinition), PlanError> {
        if self.is_deleted() {
            return Err(PlanError::Deleted);
        }
        match (self.plan_id, &self.definition) {
            (Some(id), Some(definition)) => Ok((id, definition)),
            _ => Err(PlanError::NotFound),
        }
    }

    fn create(&self, cmd: CreatePlan, now: DateTime<Utc>) -> Result<PlanEvent, PlanError> {
        if self.is_deleted() {
            return Err(PlanError::Deleted);
        }
        if let Some(existing) = self.plan_id {
            return Err(PlanError::AlreadyExists(existing));
        }
        let status = cmd.status.unwrap_or_default();
        if !matches!(status, PlanStatus::Active | PlanStatus::Inactive) {
            return Err(PlanError::InvalidInitialStatus(status));
        }
        Ok(PlanEvent::Created(PlanCreated {
            plan_id: cmd.plan_id,
            code: normalize_code(&cmd.code)?,
            name: validate_name(&cmd.name)?,
            description: validate_description(cmd.description.as_deref().unwrap_or_default())?,
            app_id: cmd.app_id,
            terms: terms_from(&cmd.pricing)?.into(),
            features: validate_features(&cmd.features)?,
            limits: events::stored_limits(cmd.limits),
            status: status.into(),
            version: 1,
            created_at: now,
        }))
    }

    fn update(&self, cmd: UpdatePlan, now: DateTime<Utc>) -> Result<Vec<PlanEvent>, PlanError> {
        let (plan_id, current) = self.live()?;
        if current.status == PlanStatus::Archived {
            return Err(PlanError::Archived);
        }
        let notice_days = cmd.notice_days.unwrap_or(DEFAULT_NOTICE_DAYS);
        if notice_days > MAX_NOTICE_DAYS {
            return Err(PlanError::InvalidNotice);
        }
        let name = cmd.name.as_deref().map(validate_name).transpose()?;
        let description = cmd
            .description
            .as_deref()
            .map(validate_description)
            .transpose()?;
        let features = cmd.features.as_deref().map(validate_features).transpose()?;
        let terms = cmd.pricing.as_ref().map(terms_from).transpose()?;

        let mut details = PlanDetailsChanged {
            plan_id,
            name: name.filter(|n| *n != current.name),
            description: description.filter(|d| *d != current.description),
            features: None,
            limits_raised: Default::default(),
            changed_at: now,
        };
        let mut reduction = PlanReductionAnnounced {
            plan_id,
            features: None,
            features_removed: Vec::new(),
            limits_lowered: Default::default(),
            announced_at: now,
            effective_at: now + Duration::days(i64::from(notice_days)),
        };
        if let Some(features) = features.filter(|f| *f != current.features) {
            let removed: Vec<String> = current
                .features
                .iter()
                .filter(|f| !features.contains(f))
                .cloned()
                .collect();
            if removed.is_empty() {
                details.features = Some(features);
            } else {
                reduction.features = Some(features);
                reduction.features_removed = removed;
            }
        }
        if let Some(limits) = &cmd.limits {
            for kind in LimitKind::ALL {
                let old = current.limits.get(&kind).copied();
                let new = limits.get(&kind).copied();
                if terms::more_generous(new, old) {
                    details.limits_raised.insert(kind.into(), new);
                } else if let (Some(to), true) = (new, old != new) {
                    reduction
                        .limits_lowered
                        .insert(kind.into(), StoredLimitReduction { from: old, to });
                }
            }
        }

        let mut events = Vec::new();
        if details.name.is_some()
            || details.description.is_some()
            || details.features.is_some()
            || !details.limits_raised.is_empty()
        {
            events.push(PlanEvent::DetailsChanged(details));
        }
        if !reduction.features_removed.is_empty() || !reduction.limits_lowered.is_empty() {
            events.push(PlanEvent::ReductionAnnounced(reduction));
        }
        if let Some(terms) = terms.filter(|t| *t != current.terms) {
            events.push(PlanEvent::Repriced(PlanRepriced {
                plan_id,
                previous_version: current.version,
                version: current.version + 1,
                previous_terms: current.terms.into(),
                terms: terms.into(),
                repriced_at: now,
            }));
        }
        Ok(events)
    }

    fn change_status(
        &self,
        status: PlanStatus,
        subscribers: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<PlanEvent>, PlanError> {
        let (plan_id, current) = self.live()?;
        if current.status == status {
            return Ok(None);
        }
        if current.status == PlanStatus::Archived {
            return Err(PlanError::Archived);
        }
        if status == PlanStatus::Archived && subscribers > 0 {
            return Err(PlanError::HasSubscribers {
                count: subscribers,
                action: "archive",
            });
        }
        Ok(Some(PlanEvent::StatusChanged(PlanStatusChanged {
            plan_id,
            from: current.status.into(),
            to: status.into(),
            subscribers,
            changed_at: now,
        })))
    }

    fn delete(&self, subscribers: u32, now: DateTime<Utc>) -> Result<PlanEvent, PlanError> {
        let (plan_id, current) = self.live()?;
        if subscribers > 0 {
            return Err(PlanError::HasSubscribers {
                count: subscribers,
                action: "delete",
            });
        }
        Ok(PlanEvent::Deleted(PlanDeleted {
            plan_id,
            code: current.code.clone(),
            deleted_at: now,
        }))
    }
}

aggregate!(Plan, "plan", PlanCommand, PlanEvent, PlanError);

impl Plan {
    /// The events `command` leads to at `now`, from the state before it; none when it
    /// changes nothing.
    fn decide(
        &self,
        command: PlanCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlanEvent>, PlanError> {
        let events = match command {
            PlanCommand::CreatePlan(cmd) => vec![self.create(cmd, now)?],
            PlanCommand::UpdatePlan(cmd) => self.update(cmd, now)?,
            PlanCommand::ChangeStatus {
                status,
                subscribers,
            } => self
                .change_status(status, subscribers, now)?
                .into_iter()
                .collect(),
            PlanCommand::DeletePlan { subscribers } => vec![self.delete(subscribers, now)?],
        };
        Ok(events)
    }

    fn evolve(&mut self, event: PlanEvent) {
        match event {
            PlanEvent::Created(e) => {
                self.plan_id = Some(e.plan_id);
                let terms = PlanTerms::from(e.terms);
                self.versions = vec![PlanVersion {
                    version: e.version,
                    terms,
                    since: e.created_at,
                }];
                self.definition = Some(PlanDefinition {
                    code: e.code,
                    name: e.name,
                    description: e.description,
                    app_id: e.app_id,
                    version: e.version,
                    terms,
                    features: e.features,
                    limits: events::usage_limits(e.limits),
                    status: e.status.into(),
                    created_at: e.created_at,
                });
                self.updated_at = Some(e.created_at);
            }
            PlanEvent::DetailsChanged(e) => {
                self.updated_at = Some(e.changed_at);
                // Events other than Created cannot be produced before it; ignoring them keeps
                // replay total instead of panicking on a corrupt stream.
                let Some(d) = self.definition.as_mut() else {
                    return;
                };
                if let Some(name) = e.name {
                    d.name = name;
                }
                if let Some(description) = e.description {
                    d.description = description;
                }
                if let Some(features) = e.features {
                    d.features = features;
                }
                for (kind, value) in e.limits_raised {
                    match value {
                        Some(value) => d.limits.insert(kind.into(), value),
                        None => d.limits.remove(&kind.into()),
                    };
                }
            }
            PlanEvent::ReductionAnnounced(e) => {
                self.updated_at = Some(e.announced_at);
                let Some(d) = self.definition.as_mut() else {
                    return;
                };
                if let Some(features) = e.features {
                    d.features = features;
                }
                for (kind, reduction) in &e.limits_lowered {
                    d.limits.insert((*kind).into(), reduction.to);
                }
                self.notices.push(Notice {
                    announced_at: e.announced_at,
                    effective_at: e.effective_at,
                    features_removed: e.features_removed,
                    limits_lowered: e
                        .limits_lowered
                        .into_iter()
                        .map(|(kind, reduction)| (kind.into(), reduction.into()))
                        .collect(),
                });
            }
            PlanEvent::Repriced(e) => {
                self.updated_at = Some(e.repriced_at);
                let terms = PlanTerms::from(e.terms);
                self.versions.push(PlanVersion {
                    version: e.version,
                    terms,
                    since: e.repriced_at,
                });
                if let Some(d) = self.definition.as_mut() {
                    d.version = e.version;
                    d.terms = terms;
                }
            }
            PlanEvent::StatusChanged(e) => {
                self.updated_at = Some(e.changed_at);
                if let Some(d) = self.definition.as_mut() {
                    d.status = e.to.into();
                }
            }
            PlanEvent::Deleted(e) => {
                self.updated_at = Some(e.deleted_at);
                self.deleted_at = Some(e.deleted_at);
            }
        }
    }
}

/// Trims and lower-cases a plan code and checks its syntax; the result is what the edge
/// reserves in its unique index.
pub fn normalize_code(code: &str) -> Result<String, PlanError> {
    let code = code.trim().to_ascii_lowercase();
    let valid = (2..=40).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if valid {
        Ok(code)
    } else {
        Err(PlanError::InvalidCode {
            code: shorten(&code, 48),
        })
    }
}

fn validate_name(name: &str) -> Result<String, PlanError> {
    single_line(name, MAX_NAME_CHARS).map_err(|reason| PlanError::InvalidName { reason })
}

fn validate_description(description: &str) -> Result<String, PlanError> {
    let description = description.trim();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(PlanError::DescriptionTooLong);
    }
    Ok(description.to_owned())
}

fn validate_features(features: &[String]) -> Result<Vec<String>, PlanError> {
    if features.len() > MAX_FEATURES {
        return Err(PlanError::TooManyFeatures);
    }
    let mut out: Vec<String> = Vec::with_capacity(features.len());
    for feature in features {
        let line = single_line(feature, MAX_FEATURE_CHARS).map_err(|reason| {
            PlanError::InvalidFeature {
                feature: shorten(feature, 48),
                reason,
            }
        })?;
        if out.contains(&line) {
            return Err(PlanError::InvalidFeature {
                feature: shorten(&line, 48),
                reason: "is listed twice",
            });
        }
        out.push(line);
    }
    Ok(out)
}

fn terms_from(input: &PricingInput) -> Result<PlanTerms, PlanError> {
    let currency = Currency::parse(&input.currency)
        .ok_or_else(|| PlanError::UnknownCurrency(shorten(input.currency.trim(), 8)))?;
    let terms = PlanTerms {
        plan_type: input.plan_type,
        interval: input.interval,
        price: Money {
            amount_minor: input.price_minor,
            currency,
        },
        unit_pricing: input.unit_pricing,
    };
    terms.validate()?;
    Ok(terms)
}
