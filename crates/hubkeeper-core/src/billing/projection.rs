//! The billing projection: keeps `rm_plans`, `rm_subscriptions`, `rm_plan_changes` and
//! `rm_limits_reached` (and the `plan_code` side column of `rm_installations`) in step with the
//! plan and subscription events, and puts newly connected installations on their app's default
//! plan (a process manager).
//!
//! It reads the event store's global order directly (the relay's xmin-bounded reader) rather
//! than the shared JetStream projector consumer, whose apply code is closed over the
//! installation, app and activity read models: one leader (`hubkeeper_bus::leadership`, like the
//! relay) applies each batch and saves its cursor in the same transaction, so every event is
//! applied exactly once and in commit order, and a crash replays the batch that was not
//! committed. A batch with nothing to apply (most are: refreshes, webhooks, app edits) writes
//! nothing and its cursor is saved lazily, like the relay's: a crash re-reads events that change
//! nothing. Rows are rebuilt by folding the
//! aggregate's events up to the one being applied, so applying is deterministic and a replay
//! yields the same rows. Lag is exported as `hk_billing_projection_lag_events` and
//! `hk_billing_projection_lag_seconds`.

use std::collections::HashMap;
use std::time::Duration;

use cqrs_es::Aggregate;
use hubkeeper_bus::registry::{BILLING_PROJECTION_CURSOR, BILLING_PROJECTION_LOCK};
use hubkeeper_bus::{run_as_leader, LeaderRole, LeaderWork, Leadership};
use hubkeeper_domain::installation::event_types as installation_events;
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::plan::{Plan, PlanEvent};
use hubkeeper_domain::subscription::{Subscription, SubscriptionEvent};
use hubkeeper_domain::{AppId, InstallationId};
use hubkeeper_store::{
    follow, read_after, save_cursor, FollowConfig, Follower, GlobalCursor, LazyCursor, Step,
    StoredEvent,
};
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::BillingService;
use crate::error::CoreError;

/// Settings of the projector.
#[derive(Debug, Clone)]
pub struct BillingProjectorConfig {
    /// Events read per round trip.
    pub batch_size: i64,
    /// Longest sleep without a NOTIFY.
    pub idle_wait: Duration,
    /// How often a standby tries to take over.
    pub standby_poll: Duration,
    /// Pause after an error.
    pub error_backoff: Duration,
    /// How often the lag gauges and the `plan_code` side column are refreshed.
    pub housekeeping_interval: Duration,
    /// Put newly connected installations on their app's default (free) plan.
    pub assign_default_plans: bool,
    /// Shortest time between two saves of a cursor moved only past events with nothing to
    /// apply (a batch that writes saves its cursor in its own transaction).
    pub cursor_save_interval: Duration,
}

impl Default for BillingProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            idle_wait: Duration::from_millis(250),
            standby_poll: Duration::from_secs(1),
            error_backoff: Duration::from_millis(500),
            housekeeping_interval: Duration::from_secs(2),
            assign_default_plans: true,
            cursor_save_interval: Duration::from_millis(100),
        }
    }
}

/// What an event makes the projection write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    Plan,
    Subscription,
    /// A first connect: the installation goes on its app's default plan.
    DefaultPlan,
}

/// The projector loop of one process (one leads, the others stand by).
pub struct BillingProjector {
    pool: PgPool,
    billing: BillingService,
    config: BillingProjectorConfig,
    /// Saved with each batch that writes; past batches with nothing to apply, at most every
    /// [`BillingProjectorConfig::cursor_save_interval`].
    cursor: LazyCursor,
}

impl BillingProjector {
    /// A projector writing through `pool`; `billing` issues the default-plan commands.
    pub fn new(pool: PgPool, billing: BillingService, config: BillingProjectorConfig) -> Self {
        let cursor = LazyCursor::new(BILLING_PROJECTION_CURSOR, config.cursor_save_interval);
        Self {
            pool,
            billing,
            config,
            cursor,
        }
    }

    /// Runs until `shutdown`: stands by until this process leads, projects, and starts over
    /// from the saved cursor after errors.
    pub async fn run(self, shutdown: CancellationToken) {
        let role = LeaderRole::new(
            BILLING_PROJECTION_LOCK,
            self.config.standby_poll,
            self.config.error_backoff,
        );
        run_as_leader(&self.pool, &role, &self, &shutdown).await;
    }

    /// Applies the next batch after `cursor` in one transaction that also saves the cursor, and
    /// advances it; a batch with nothing to apply only advances it (saved at most every
    /// [`BillingProjectorConfig::cursor_save_interval`]). Returns how many events were read.
    /// Public so tests can drive the projection step by step ([`Self::save_reached`] after).
    pub async fn step(
        &self,
        conn: &mut PgConnection,
        cursor: &mut GlobalCursor,
    ) -> Result<usize, CoreError> {
        let batch = read_after(&mut *conn, *cursor, self.config.batch_size).await?;
        let Some(last) = batch.last().map(StoredEvent::cursor) else {
            // Caught up: a cursor moved past events with nothing to apply is saved now, or at
            // the next read once the interval has passed.
            self.cursor.save_when_due(conn, *cursor, false).await?;
            return Ok(0);
        };
        if !batch.iter().any(|event| self.applies_to(event).is_some()) {
            // Nothing to write: no transaction, and the cursor saved lazily (a crash re-reads
            // events that change nothing). Most batches are of this kind: refreshes, webhooks.
            *cursor = last;
            self.cursor.save_when_due(conn, last, false).await?;
            metrics::counter!("hk_billing_projection_events_total").increment(batch.len() as u64);
            return Ok(batch.len());
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for event in &batch {
            match self.applies_to(event) {
                Some(Apply::Plan) => apply_plan(&mut tx, event).await?,
                Some(Apply::Subscription) => apply_subscription(&mut tx, event).await?,
                Some(Apply::DefaultPlan) => self.assign_default(&mut tx, event).await?,
                None => {}
            }
        }
        save_cursor(&mut *tx, self.cursor.name(), last).await?;
        tx.commit().await?;
        self.cursor.saved_elsewhere(last);
        *cursor = last;
        metrics::counter!("hk_billing_projection_events_total").increment(batch.len() as u64);
        Ok(batch.len())
    }

    /// Saves `cursor` now if the last save was before it: what the loop does when it stops,
    /// for callers that drive [`Self::step`] themselves.
    pub async fn save_reached(
        &self,
        conn: &mut PgConnection,
        cursor: GlobalCursor,
    ) -> Result<(), CoreError> {
        Ok(self.cursor.save_when_due(conn, cursor, true).await?)
    }

    /// What applying `event` writes, if anything.
    fn applies_to(&self, event: &StoredEvent) -> Option<Apply> {
        match event.aggregate_type.as_str() {
            t if t == Plan::TYPE => Some(Apply::Plan),
            t if t == Subscription::TYPE => Some(Apply::Subscription),
            "installation"
                if self.config.assign_default_plans
                    && event.event_type == installation_events::CONNECTED =>
            {
                Some(Apply::DefaultPlan)
            }
            _ => None,
        }
    }

    /// The process manager: a first connect puts the installation on the default plan. The
    /// plan is chosen inside the batch's transaction (it sees plans created earlier in the
    /// batch); the command is idempotent, so replaying the batch after a crash is harmless.
    async fn assign_default(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), CoreError> {
        let (Ok(installation_id), Some(app_id)) = (
            event.aggregate_id.parse::<InstallationId>(),
            event
                .payload
                .get(installation_events::CONNECTED)
                .and_then(|p| p.get("app_id"))
                .and_then(|a| a.as_str())
                .and_then(|a| a.parse::<AppId>().ok()),
        ) else {
            return Ok(());
        };
        let metadata = serde_json::from_value::<HashMap<String, String>>(event.metadata.clone())
            .unwrap_or_default();
        let follow_up = EventMetadata::follow_up(
            &metadata,
            format!(
                "{}/{}/{}",
                event.aggregate_type, event.aggregate_id, event.sequence
            ),
            Actor::System,
            chrono::Utc::now(),
        );
        if self
            .billing
            .start_default_subscription(tx, installation_id, app_id, &follow_up)
            .await?
        {
            metrics::counter!("hk_billing_default_plans_assigned_total").increment(1);
        }
        Ok(())
    }
}

impl LeaderWork for BillingProjector {
    type Error = CoreError;

    /// Projects on the leader's own session: the cursor is read and saved there, so a leader
    /// whose session died cannot apply another batch.
    async fn lead(
        &self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), CoreError> {
        let follow_config = FollowConfig {
            idle_wait: self.config.idle_wait,
            housekeeping_interval: self.config.housekeeping_interval,
            lag_events_gauge: "hk_billing_projection_lag_events",
            lag_seconds_gauge: "hk_billing_projection_lag_seconds",
        };
        follow(
            self,
            &self.pool,
            leadership.connection(),
            self.cursor.name(),
            follow_config,
            shutdown,
        )
        .await
    }
}

impl Follower for BillingProjector {
    type Error = CoreError;

    async fn read_next(
        &self,
        conn: &mut PgConnection,
        cursor: &mut GlobalCursor,
    ) -> Result<Step, CoreError> {
        let read = self.step(conn, cursor).await?;
        Ok(Step::after_read(read, self.config.batch_size))
    }

    /// Shutting down: a cursor saved lazily is saved now.
    async fn stopped(
        &self,
        conn: &mut PgConnection,
        cursor: GlobalCursor,
    ) -> Result<(), CoreError> {
        self.save_reached(conn, cursor).await
    }

    /// Keeps the `plan_code` side column in step with plan renames.
    async fn housekeeping(&self, conn: &mut PgConnection) -> Result<(), CoreError> {
        sync_plan_codes(conn).await
    }
}

/// Folds the events of one aggregate up to `sequence`.
async fn fold<A>(tx: &mut PgConnection, aggregate_id: &str, sequence: i64) -> Result<A, CoreError>
where
    A: Aggregate,
    A::Event: DeserializeOwned,
{
    let payloads: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence <= $3
          ORDER BY sequence",
    )
    .bind(A::TYPE)
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_all(&mut *tx)
    .await?;
    let mut aggregate = A::default();
    for payload in payloads {
        let event: A::Event = serde_json::from_value(payload).map_err(|e| {
            CoreError::Store(format!(
                "{} {aggregate_id}: an event does not decode: {e}",
                A::TYPE
            ))
        })?;
        aggregate.apply(event);
    }
    Ok(aggregate)
}

fn decode<E: DeserializeOwned>(event: &StoredEvent) -> Option<E> {
    match serde_json::from_value(event.payload.clone()) {
        Ok(decoded) => Some(decoded),
        Err(e) => {
            // An event type of a newer release: skip it rather than stall the projection.
            metrics::counter!("hk_billing_projection_undecodable_total").increment(1);
            tracing::warn!(
                event_type = %event.event_type,
                aggregate_id = %event.aggregate_id,
                error = %e,
                "billing projection skips an event it cannot read"
            );
            None
        }
    }
}

async fn apply_plan(tx: &mut PgConnection, event: &StoredEvent) -> Result<(), CoreError> {
    if decode::<PlanEvent>(event).is_none() {
        return Ok(());
    }
    let Ok(plan_id) = event.aggregate_id.parse::<Uuid>() else {
        return Ok(());
    };
    let plan: Plan = fold(tx, &event.aggregate_id, event.sequence).await?;
    let Some(d) = plan.definition() else {
        return Ok(());
    };
    let unit = d.terms.unit_pricing;
    sqlx::query(
        "INSERT INTO rm_plans (plan_id, code, name, description, app_id, plan_type,
                               billing_interval, price_minor, currency, unit_price_minor,
                               unit_per_units, unit_metric, features, limits, status, version,
                               created_at, updated_at, deleted_at, last_sequence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20)
         ON CONFLICT (plan_id) DO UPDATE SET
             code = EXCLUDED.code, name = EXCLUDED.name, description = EXCLUDED.description,
             app_id = EXCLUDED.app_id, plan_type = EXCLUDED.plan_type,
             billing_interval = EXCLUDED.billing_interval, price_minor = EXCLUDED.price_minor,
             currency = EXCLUDED.currency, unit_price_minor = EXCLUDED.unit_price_minor,
             unit_per_units = EXCLUDED.unit_per_units, unit_metric = EXCLUDED.unit_metric,
             features = EXCLUDED.features, limits = EXCLUDED.limits, status = EXCLUDED.status,
             version = EXCLUDED.version, updated_at = EXCLUDED.updated_at,
             deleted_at = EXCLUDED.deleted_at, last_sequence = EXCLUDED.last_sequence
         WHERE rm_plans.last_sequence < EXCLUDED.last_sequence",
    )
    .bind(plan_id)
    .bind(&d.code)
    .bind(&d.name)
    .bind(&d.description)
    .bind(d.app_id.map(|a| a.as_uuid()))
    .bind(d.terms.plan_type.as_str())
    .bind(d.terms.interval.map(|i| i.as_str()))
    .bind(d.terms.price.amount_minor)
    .bind(d.terms.price.currency.code())
    .bind(unit.map(|u| u.amount_minor))
    .bind(unit.map(|u| i64::try_from(u.per_units).unwrap_or(i64::MAX)))
    .bind(unit.map(|u| u.metric.as_str()))
    .bind(serde_json::to_value(&d.features).unwrap_or_default())
    .bind(serde_json::to_value(&d.limits).unwrap_or_default())
    .bind(d.status.as_str())
    .bind(i32::try_from(d.version).unwrap_or(i32::MAX))
    .bind(d.created_at)
    .bind(plan.updated_at().unwrap_or(d.created_at))
    .bind(plan.deleted_at())
    .bind(event.sequence)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply_subscription(tx: &mut PgConnection, event: &StoredEvent) -> Result<(), CoreError> {
    let Some(decoded) = decode::<SubscriptionEvent>(event) else {
        return Ok(());
    };
    let Ok(installation_id) = event.aggregate_id.parse::<Uuid>() else {
        return Ok(());
    };
    let sub: Subscription = fold(tx, &event.aggregate_id, event.sequence).await?;
    let (Some(current), Some(app_id)) = (sub.current(), sub.app_id()) else {
        return Ok(());
    };
    let limit_reached_at = match &decoded {
        SubscriptionEvent::UsageLimitReached(e) => Some(e.reached_at),
        _ => None,
    };
    sqlx::query(
        "INSERT INTO rm_subscriptions (installation_id, app_id, plan_id, plan_code, plan_version,
                                       price_minor, currency, started_at, started_paid,
                                       current_paid, joined_at, renews_at, last_limit_reached_at,
                                       last_sequence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (installation_id) DO UPDATE SET
             plan_id = EXCLUDED.plan_id, plan_code = EXCLUDED.plan_code,
             plan_version = EXCLUDED.plan_version, price_minor = EXCLUDED.price_minor,
             currency = EXCLUDED.currency, current_paid = EXCLUDED.current_paid,
             joined_at = EXCLUDED.joined_at, renews_at = EXCLUDED.renews_at,
             last_limit_reached_at = COALESCE(EXCLUDED.last_limit_reached_at,
                                              rm_subscriptions.last_limit_reached_at),
             last_sequence = EXCLUDED.last_sequence
         WHERE rm_subscriptions.last_sequence < EXCLUDED.last_sequence",
    )
    .bind(installation_id)
    .bind(app_id.as_uuid())
    .bind(current.plan.plan_id.as_uuid())
    .bind(&current.plan.code)
    .bind(i32::try_from(current.plan.version).unwrap_or(i32::MAX))
    .bind(current.plan.terms.price.amount_minor)
    .bind(current.plan.terms.price.currency.code())
    .bind(sub.started_at().unwrap_or(current.joined_at))
    .bind(sub.started_paid().unwrap_or(false))
    .bind(current.plan.terms.is_paid())
    .bind(current.joined_at)
    .bind(current.renews_at)
    .bind(limit_reached_at)
    .bind(event.sequence)
    .execute(&mut *tx)
    .await?;
    let actor = event
        .metadata
        .get(hubkeeper_domain::metadata::ACTOR)
        .and_then(|a| a.as_str())
        .unwrap_or("unknown")
        .to_owned();
    match decoded {
        SubscriptionEvent::Started(e) => {
            insert_change(
                tx,
                event.global_position,
                installation_id,
                e.started_at,
                None,
                &e.plan.code,
                "new",
                e.plan.terms.price.into(),
                e.trigger.as_str(),
                &actor,
            )
            .await?;
        }
        SubscriptionEvent::PlanChanged(e) => {
            insert_change(
                tx,
                event.global_position,
                installation_id,
                e.changed_at,
                Some(&e.from.code),
                &e.to.code,
                e.direction.as_str(),
                e.amount.into(),
                e.trigger.as_str(),
                &actor,
            )
            .await?;
        }
        SubscriptionEvent::UsageLimitReached(e) => {
            sqlx::query(
                "INSERT INTO rm_limits_reached (global_position, installation_id, plan_code,
                                                limit_kind, limit_value, used, period,
                                                offer_plan_code, occurred_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (global_position) DO NOTHING",
            )
            .bind(event.global_position)
            .bind(installation_id)
            .bind(&e.plan_code)
            .bind(e.limit.as_str())
            .bind(i64::try_from(e.limit_value).unwrap_or(i64::MAX))
            .bind(i64::try_from(e.used).unwrap_or(i64::MAX))
            .bind(&e.period)
            .bind(e.offer.as_ref().map(|o| o.code.as_str()))
            .bind(e.reached_at)
            .execute(&mut *tx)
            .await?;
        }
        SubscriptionEvent::Renewed(_) => {}
    }
    sqlx::query("UPDATE rm_installations SET plan_code = $2 WHERE installation_id = $1")
        .bind(installation_id)
        .bind(&current.plan.code)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert_change(
    tx: &mut PgConnection,
    global_position: i64,
    installation_id: Uuid,
    occurred_at: chrono::DateTime<chrono::Utc>,
    from: Option<&str>,
    to: &str,
    direction: &str,
    amount: hubkeeper_domain::plan::Money,
    trigger: &str,
    actor: &str,
) -> Result<(), CoreError> {
    sqlx::query(
        "INSERT INTO rm_plan_changes (global_position, installation_id, occurred_at,
                                      from_plan_code, to_plan_code, direction, amount_minor,
                                      currency, trigger, actor)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (global_position) DO NOTHING",
    )
    .bind(global_position)
    .bind(installation_id)
    .bind(occurred_at)
    .bind(from)
    .bind(to)
    .bind(direction)
    .bind(amount.amount_minor)
    .bind(amount.currency.code())
    .bind(trigger)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Copies each tenant's plan code into `rm_installations` rows the installations projection
/// created after the subscription event was applied (the two projections run independently).
async fn sync_plan_codes(conn: &mut PgConnection) -> Result<(), CoreError> {
    sqlx::query(
        "UPDATE rm_installations i SET plan_code = s.plan_code
           FROM rm_subscriptions s
          WHERE s.installation_id = i.installation_id
            AND i.plan_code IS DISTINCT FROM s.plan_code",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
