//! The `Subscription` aggregate: which plan a tenant (an installation) is on, at which price
//! version, and the limits it reached. Its id is the installation id.
//!
//! Rules come from the dashboard's Billing & Upgrades page:
//! - the first plan is the registration and records whether it was free or paid;
//! - a plan change (upgrade, downgrade) records date, from, to, amount and trigger
//!   (registration, self-serve, admin, limit reached);
//! - only plans open to sign-ups (active), offered for the tenant's app, can be joined;
//!   subscribers of a plan that is later hidden or deprecated keep it;
//! - a subscriber keeps the price version it joined at until its renewal, when it moves to the
//!   plan's current version;
//! - reaching a usage limit is recorded once per limit and period, with an upgrade offer when
//!   a plan with more room exists.
//!
//! The aggregate cannot see plans: the edge loads the plan and passes a [`PlanSnapshot`].

mod events;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Months, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use events::{
    event_types, StoredChangeDirection, StoredChangeTrigger, StoredPlanOffer, StoredPlanRef,
    SubscriptionEvent, SubscriptionPlanChanged, SubscriptionRenewed, SubscriptionStarted,
    UsageLimitReached,
};

use crate::aggregate::aggregate;
use crate::ids::{AppId, InstallationId};
use crate::plan::{LimitKind, PlanId, PlanStatus, PlanTerms};
use crate::ParseError;

/// A plan as the edge loaded it for a subscription command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSnapshot {
    /// The plan.
    pub plan_id: PlanId,
    /// Its code.
    pub code: String,
    /// Its current version.
    pub version: u32,
    /// Prices of that version.
    pub terms: PlanTerms,
    /// Its status.
    pub status: PlanStatus,
    /// The one app it is offered for (`None`: all).
    pub app_id: Option<AppId>,
    /// Whether it was deleted.
    pub deleted: bool,
}

impl PlanSnapshot {
    fn reference(&self) -> PlanRef {
        PlanRef {
            plan_id: self.plan_id,
            code: self.code.clone(),
            version: self.version,
            terms: self.terms,
        }
    }
}

/// A plan at one version, as recorded in subscription events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRef {
    /// The plan.
    pub plan_id: PlanId,
    /// Its code at the time.
    pub code: String,
    /// The version.
    pub version: u32,
    /// Its prices (what the subscriber pays until renewal).
    pub terms: PlanTerms,
}

/// A plan suggested as an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOffer {
    /// The plan.
    pub plan_id: PlanId,
    /// Its code.
    pub code: String,
}

/// What caused a plan change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTrigger {
    /// Hubkeeper put a new installation on the default plan.
    Registration,
    /// The tenant chose it in the app (reported by the app's backend).
    SelfServe,
    /// An operator changed it.
    Admin,
    /// The tenant upgraded after reaching a usage limit.
    LimitReached,
}

impl ChangeTrigger {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeTrigger::Registration => "registration",
            ChangeTrigger::SelfServe => "self_serve",
            ChangeTrigger::Admin => "admin",
            ChangeTrigger::LimitReached => "limit_reached",
        }
    }
}

impl fmt::Display for ChangeTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeTrigger {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "registration" => Ok(ChangeTrigger::Registration),
            "self_serve" => Ok(ChangeTrigger::SelfServe),
            "admin" => Ok(ChangeTrigger::Admin),
            "limit_reached" => Ok(ChangeTrigger::LimitReached),
            _ => Err(ParseError::new(
                "plan change trigger",
                s,
                "expected self_serve, admin or limit_reached",
            )),
        }
    }
}

/// Whether a plan change costs more or less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeDirection {
    /// A higher monthly-equivalent base price.
    Upgrade,
    /// A lower one.
    Downgrade,
    /// The same price, or prices in different currencies.
    Lateral,
}

impl ChangeDirection {
    /// How moving from `from` to `to` compares. Zero is zero in any currency; other amounts in
    /// different currencies are not compared (no exchange rates in the domain).
    pub fn between(from: &PlanTerms, to: &PlanTerms) -> ChangeDirection {
        let (a, b) = (
            from.monthly_equivalent_minor(),
            to.monthly_equivalent_minor(),
        );
        let comparable = a == 0 || b == 0 || from.price.currency == to.price.currency;
        match (comparable, a.cmp(&b)) {
            (true, std::cmp::Ordering::Less) => ChangeDirection::Upgrade,
            (true, std::cmp::Ordering::Greater) => ChangeDirection::Downgrade,
            _ => ChangeDirection::Lateral,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeDirection::Upgrade => "upgrade",
            ChangeDirection::Downgrade => "downgrade",
            ChangeDirection::Lateral => "lateral",
        }
    }
}

/// Commands accepted by [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionCommand {
    /// Put the tenant on a plan (first plan, upgrade or downgrade).
    ChangePlan {
        /// The tenant (the aggregate id).
        installation_id: InstallationId,
        /// The tenant's app.
        app_id: AppId,
        /// The plan to join.
        plan: PlanSnapshot,
        /// What caused the change.
        trigger: ChangeTrigger,
    },
    /// Start a new billing period at the plan's current version.
    Renew {
        /// The tenant's plan as it is now.
        plan: PlanSnapshot,
    },
    /// Record that a usage limit was reached.
    RecordLimitReached {
        /// The limit.
        limit: LimitKind,
        /// Its value for this subscriber.
        limit_value: u64,
        /// Usage when noticed.
        used: u64,
        /// `YYYY-MM`.
        period: String,
        /// Upgrade to suggest.
        offer: Option<PlanOffer>,
    },
}

/// Why a subscription command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubscriptionError {
    /// The plan was deleted.
    #[error("plan {code} has been deleted")]
    PlanDeleted {
        /// The plan's code.
        code: String,
    },
    /// The plan does not take sign-ups.
    #[error("plan {code} is {status} and takes no new subscribers")]
    PlanClosed {
        /// The plan's code.
        code: String,
        /// Its status.
        status: PlanStatus,
    },
    /// The plan is for another app.
    #[error("plan {code} is offered for another app")]
    WrongApp {
        /// The plan's code.
        code: String,
    },
    /// The command names another app than the subscription's.
    #[error("installation belongs to app {expected}, not {given}")]
    AppMismatch {
        /// The subscription's app.
        expected: AppId,
        /// The app given.
        given: AppId,
    },
    /// Renewal or limit before any plan.
    #[error("installation is on no plan yet")]
    NotSubscribed,
    /// Renewal names a plan the tenant is not on.
    #[error("installation is on plan {current}, not {given}; renewals keep the plan")]
    NotCurrentPlan {
        /// The tenant's plan.
        current: String,
        /// The plan given.
        given: String,
    },
    /// The plan never renews.
    #[error("plan {code} has no billing period to renew")]
    NoRenewal {
        /// The plan's code.
        code: String,
    },
    /// Renewal before the period ended.
    #[error("the current period runs until {renews_at}; renewal is not due yet")]
    RenewalNotDue {
        /// End of the period.
        renews_at: DateTime<Utc>,
    },
    /// Bad period.
    #[error("period {0:?} is not a month of the form YYYY-MM")]
    InvalidPeriod(String),
}

/// The plan a tenant is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentPlan {
    /// The plan and the version billed.
    pub plan: PlanRef,
    /// When the tenant joined this plan.
    pub joined_at: DateTime<Utc>,
    /// Start of the current period.
    pub period_start: DateTime<Utc>,
    /// End of the current period (`None`: never renews).
    pub renews_at: Option<DateTime<Utc>>,
}

/// State of one tenant's subscription, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    installation_id: Option<InstallationId>,
    app_id: Option<AppId>,
    current: Option<CurrentPlan>,
    started_at: Option<DateTime<Utc>>,
    started_paid: Option<bool>,
    /// Latest period in which each limit was reported reached.
    limits_reached: BTreeMap<LimitKind, String>,
}

impl Subscription {
    /// The tenant, once subscribed.
    pub fn installation_id(&self) -> Option<InstallationId> {
        self.installation_id
    }

    /// The tenant's app.
    pub fn app_id(&self) -> Option<AppId> {
        self.app_id
    }

    /// The plan the tenant is on.
    pub fn current(&self) -> Option<&CurrentPlan> {
        self.current.as_ref()
    }

    /// When the tenant got its first plan.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    /// Whether the registration was paid.
    pub fn started_paid(&self) -> Option<bool> {
        self.started_paid
    }

    /// Whether `limit` was already recorded as reached in `period`.
    pub fn limit_reached_in(&self, limit: LimitKind, period: &str) -> bool {
        self.limits_reached
            .get(&limit)
            .is_some_and(|p| p.as_str() >= period)
    }

    fn change_plan(
        &self,
        installation_id: InstallationId,
        app_id: AppId,
        plan: PlanSnapshot,
        trigger: ChangeTrigger,
        now: DateTime<Utc>,
    ) -> Result<Option<SubscriptionEvent>, SubscriptionError> {
        if let Some(expected) = self.app_id.filter(|a| *a != app_id) {
            return Err(SubscriptionError::AppMismatch {
                expected,
                given: app_id,
            });
        }
        if let Some(current) = &self.current {
            // Putting a tenant on the plan it is on is a no-op (PUT semantics), as is a second
            // default-plan assignment (the registration happened already).
            if current.plan.plan_id == plan.plan_id || trigger == ChangeTrigger::Registration {
                return Ok(None);
            }
        }
        if plan.deleted {
            return Err(SubscriptionError::PlanDeleted { code: plan.code });
        }
        if plan.app_id.is_some_and(|a| a != app_id) {
            return Err(SubscriptionError::WrongApp { code: plan.code });
        }
        if !plan.status.accepts_sign_ups() {
            return Err(SubscriptionError::PlanClosed {
                code: plan.code,
                status: plan.status,
            });
        }
        let renews_at = plan
            .terms
            .renewal_months()
            .and_then(|months| now.checked_add_months(Months::new(months)));
        let to = plan.reference();
        Ok(Some(match &self.current {
            None => SubscriptionEvent::Started(SubscriptionStarted {
                installation_id,
                app_id,
                started_paid: to.terms.is_paid(),
                plan: to.into(),
                trigger: trigger.into(),
                started_at: now,
                renews_at,
            }),
            Some(current) => SubscriptionEvent::PlanChanged(SubscriptionPlanChanged {
                installation_id,
                direction: ChangeDirection::between(&current.plan.terms, &to.terms).into(),
                amount: to.terms.price.into(),
                from: current.plan.clone().into(),
                to: to.into(),
                trigger: trigger.into(),
                changed_at: now,
                renews_at,
            }),
        }))
    }

    fn renew(
        &self,
        plan: PlanSnapshot,
        now: DateTime<Utc>,
    ) -> Result<SubscriptionEvent, SubscriptionError> {
        let (installation_id, current) = match (self.installation_id, &self.current) {
            (Some(id), Some(current)) => (id, current),
            _ => return Err(SubscriptionError::NotSubscribed),
        };
        if current.plan.plan_id != plan.plan_id {
            return Err(SubscriptionError::NotCurrentPlan {
                current: current.plan.code.clone(),
                given: plan.code,
            });
        }
        if plan.deleted {
            return Err(SubscriptionError::PlanDeleted { code: plan.code });
        }
        let (Some(ends), Some(months)) = (current.renews_at, plan.terms.renewal_months()) else {
            return Err(SubscriptionError::NoRenewal { code: plan.code });
        };
        if now < ends {
            return Err(SubscriptionError::RenewalNotDue { renews_at: ends });
        }
        // Periods follow each other without gaps, even when the renewal is recorded late.
        let mut period_start = ends;
        let mut renews_at = ends;
        while renews_at <= now {
            period_start = renews_at;
            renews_at = renews_at.checked_add_months(Months::new(months)).ok_or(
                SubscriptionError::NoRenewal {
                    code: plan.code.clone(),
                },
            )?;
        }
        Ok(SubscriptionEvent::Renewed(SubscriptionRenewed {
            installation_id,
            from_version: current.plan.version,
            plan: plan.reference().into(),
            renewed_at: now,
            period_start,
            renews_at,
        }))
    }

    fn record_limit(
        &self,
        limit: LimitKind,
        limit_value: u64,
        used: u64,
        period: String,
        offer: Option<PlanOffer>,
        now: DateTime<Utc>,
    ) -> Result<Option<SubscriptionEvent>, SubscriptionError> {
        let (installation_id, current) = match (self.installation_id, &self.current) {
            (Some(id), Some(current)) => (id, current),
            _ => return Err(SubscriptionError::NotSubscribed),
        };
        if !valid_period(&period) {
            return Err(SubscriptionError::InvalidPeriod(crate::validate::shorten(
                &period, 16,
            )));
        }
        if self.limit_reached_in(limit, &period) {
            return Ok(None);
        }
        Ok(Some(SubscriptionEvent::UsageLimitReached(
            UsageLimitReached {
                installation_id,
                plan_id: current.plan.plan_id,
                plan_code: current.plan.code.clone(),
                limit: limit.into(),
                limit_value,
                used,
                period,
                offer: offer.map(Into::into),
                reached_at: now,
            },
        )))
    }
}

/// The `YYYY-MM` period (UTC calendar month) that `at` falls in.
pub fn period_of(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

fn valid_period(period: &str) -> bool {
    let bytes = period.as_bytes();
    bytes.len() == 7
        && bytes[4] == b'-'
        && period[..4].bytes().all(|b| b.is_ascii_digit())
        && period[5..]
            .parse::<u32>()
            .is_ok_and(|m| (1..=12).contains(&m))
        && period[5..].bytes().all(|b| b.is_ascii_digit())
}

aggregate!(
    Subscription,
    "subscription",
    SubscriptionCommand,
    SubscriptionEvent,
    SubscriptionError
);

impl Subscription {
    /// The events `command` leads to at `now`, from the state before it; none when it
    /// changes nothing.
    fn decide(
        &self,
        command: SubscriptionCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let event = match command {
            SubscriptionCommand::ChangePlan {
                installation_id,
                app_id,
                plan,
                trigger,
            } => self.change_plan(installation_id, app_id, plan, trigger, now)?,
            SubscriptionCommand::Renew { plan } => Some(self.renew(plan, now)?),
            SubscriptionCommand::RecordLimitReached {
                limit,
                limit_value,
                used,
                period,
                offer,
            } => self.record_limit(limit, limit_value, used, period, offer, now)?,
        };
        Ok(event.into_iter().collect())
    }

    fn evolve(&mut self, event: SubscriptionEvent) {
        match event {
            SubscriptionEvent::Started(e) => {
                self.installation_id = Some(e.installation_id);
                self.app_id = Some(e.app_id);
                self.started_at = Some(e.started_at);
                self.started_paid = Some(e.started_paid);
                self.current = Some(CurrentPlan {
                    plan: e.plan.into(),
                    joined_at: e.started_at,
                    period_start: e.started_at,
                    renews_at: e.renews_at,
                });
            }
            SubscriptionEvent::PlanChanged(e) => {
                self.installation_id = Some(e.installation_id);
                self.current = Some(CurrentPlan {
                    plan: e.to.into(),
                    joined_at: e.changed_at,
                    period_start: e.changed_at,
                    renews_at: e.renews_at,
                });
                // Limits of the old plan say nothing about the new one.
                self.limits_reached.clear();
            }
            SubscriptionEvent::Renewed(e) => {
                if let Some(current) = self.current.as_mut() {
                    current.plan = e.plan.into();
                    current.period_start = e.period_start;
                    current.renews_at = Some(e.renews_at);
                }
            }
            SubscriptionEvent::UsageLimitReached(e) => {
                self.limits_reached.insert(e.limit.into(), e.period);
            }
        }
    }
}
