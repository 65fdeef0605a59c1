//! Pricing plans, subscriptions, usage and quotas.
//!
//! Commands go to the `Plan` and `Subscription` aggregates; what the aggregates cannot see is
//! decided here, at the edge, against tables this module owns:
//! - plan code uniqueness: `plan_codes` (a unique index), reserved before the plan is created;
//! - subscriber counts for delete/archive: counted from the event store itself (the latest plan
//!   of every subscription), so a plan is never deleted under a subscriber the read model has
//!   not seen yet;
//! - usage: `usage_reports` (idempotency), `usage_daily` (counters), `usage_levels` (levels),
//!   written in one transaction per report; token hand-outs come from the token service's
//!   `token_usage`.
//!
//! Lists and the overview read the read models of [`projection`].
//!
//! [`BillingService`]'s operations are split by subject: `plans` (the catalogue), `subscriptions`
//! (which plan each tenant is on, renewals), `usage` (reports, quotas, upgrade offers) and
//! `overview` (the Billing & Upgrades page).

mod overview;
mod plans;
pub mod projection;
mod subscriptions;
mod usage;
mod views;

use std::sync::Arc;

use hubkeeper_domain::DomainServices;
use sqlx::PgPool;

pub use usage::{month_of, MAX_IDEMPOTENCY_KEY_CHARS, MAX_USAGE_QUANTITY};
pub use views::*;

use crate::commands::CommandBus;

/// Plan, subscription and usage commands and queries. Cheap to clone.
#[derive(Clone)]
pub struct BillingService {
    pool: PgPool,
    bus: Arc<CommandBus>,
    clock: DomainServices,
}

impl BillingService {
    /// The service on `pool`, issuing commands through `bus`.
    pub fn new(pool: PgPool, bus: Arc<CommandBus>, clock: DomainServices) -> Self {
        Self { pool, bus, clock }
    }
}
