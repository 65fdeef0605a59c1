//! Pricing plans, subscriptions, usage and quotas (issue 7).
//!
//! Commands go to the `Plan` and `Subscription` aggregates; what the aggregates cannot see is
//! decided here, at the edge, against tables this module owns:
//! - plan code uniqueness: `plan_codes` (a unique index), reserved before the plan is created;
//! - subscriber counts for delete/archive: counted from the event store itself (the latest plan
//!   of every subscription), so a plan is never deleted under a subscriber the read model has
//!   not seen yet;
//! - usage: `usage_reports` (idempotency), `usage_daily` (counters), `usage_levels` (levels),
//!   written in one transaction per report; token hand-outs come from issue 4's `token_usage`.
//!
//! Lists and the overview read the read models of [`projection`].

pub mod projection;
mod views;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use hubkeeper_domain::installation::event_types as installation_events;
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::plan::{
    normalize_code, LimitKind, MetricKind, Plan, PlanCommand, PlanId, PlanStatus, PlanTerms,
    PricingInput, UpdatePlan, UsageLimits, UsageMetric,
};
use hubkeeper_domain::subscription::{
    event_types as subscription_events, period_of, ChangeTrigger, PlanOffer, PlanSnapshot,
    Subscription, SubscriptionCommand,
};
use hubkeeper_domain::{AppId, DomainServices, InstallationId};
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub use views::*;

use crate::commands::CommandBus;
use crate::error::CoreError;

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
/// Largest quantity one usage report may carry.
pub const MAX_USAGE_QUANTITY: u64 = 1_000_000_000;
/// A code reservation whose plan never appeared (the process died between reserving and
/// creating) is taken over after this long.
const STALE_RESERVATION_SECS: i64 = 60;

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

    // ---- plans -----------------------------------------------------------------------------

    /// Creates a plan after reserving its code.
    pub async fn create_plan(
        &self,
        input: NewPlan,
        metadata: &EventMetadata,
    ) -> Result<PlanView, CoreError> {
        let code = normalize_code(&input.code)?;
        let plan_id = PlanId::new();
        self.reserve_code(&code, plan_id).await?;
        let command = PlanCommand::CreatePlan(hubkeeper_domain::plan::CreatePlan {
            plan_id,
            code: code.clone(),
            name: input.name,
            description: input.description,
            app_id: input.app_id,
            pricing: PricingInput {
                plan_type: input.plan_type,
                interval: input.interval,
                price_minor: input.price.amount_minor,
                currency: input.price.currency,
                unit_pricing: input.unit_pricing,
            },
            features: input.features,
            limits: input.limits,
            status: input.status,
        });
        if let Err(e) = self
            .bus
            .plans()
            .execute(&plan_id.to_string(), command, metadata)
            .await
        {
            // Refused: give the code back so the corrected form can use it.
            sqlx::query("DELETE FROM plan_codes WHERE code = $1 AND plan_id = $2")
                .bind(&code)
                .bind(plan_id.as_uuid())
                .execute(&self.pool)
                .await?;
            return Err(e.into());
        }
        self.get_plan(plan_id).await
    }

    async fn reserve_code(&self, code: &str, plan_id: PlanId) -> Result<(), CoreError> {
        let reserved = sqlx::query(
            "INSERT INTO plan_codes (code, plan_id) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING",
        )
        .bind(code)
        .bind(plan_id.as_uuid())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if reserved == 1 {
            return Ok(());
        }
        let row = sqlx::query(
            "SELECT plan_id, now() - reserved_at > make_interval(secs => $2) AS stale
               FROM plan_codes WHERE code = $1",
        )
        .bind(code)
        .bind(STALE_RESERVATION_SECS as f64)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            // Released between the two statements: try once more.
            return Box::pin(self.reserve_code(code, plan_id)).await;
        };
        let holder: Uuid = row.try_get("plan_id")?;
        let stale: bool = row.try_get("stale")?;
        let (_, sequence) = self.bus.plans().load(&holder.to_string()).await?;
        if sequence == 0 && stale {
            let taken = sqlx::query(
                "UPDATE plan_codes SET plan_id = $3, reserved_at = now()
                  WHERE code = $1 AND plan_id = $2",
            )
            .bind(code)
            .bind(holder)
            .bind(plan_id.as_uuid())
            .execute(&self.pool)
            .await?
            .rows_affected();
            if taken == 1 {
                return Ok(());
            }
        }
        Err(CoreError::Conflict(format!(
            "plan code {code:?} is already used by plan {holder}; codes are never reused, \
             choose another (e.g. {code}_v2)"
        )))
    }

    /// The plan aggregate, or `NotFound`.
    async fn load_plan(&self, plan_id: PlanId) -> Result<Plan, CoreError> {
        let (plan, sequence) = self.bus.plans().load(&plan_id.to_string()).await?;
        if sequence == 0 {
            return Err(CoreError::not_found("plan", plan_id));
        }
        Ok(plan)
    }

    /// One plan with its versions, notices and subscriber count (strongly consistent).
    pub async fn get_plan(&self, plan_id: PlanId) -> Result<PlanView, CoreError> {
        let plan = self.load_plan(plan_id).await?;
        let subscribers = self.subscriber_count(plan_id).await?;
        PlanView::detailed(&plan, subscribers).ok_or_else(|| CoreError::not_found("plan", plan_id))
    }

    /// Resolves a plan code to its plan.
    pub async fn plan_id_by_code(&self, code: &str) -> Result<PlanId, CoreError> {
        let normalized = normalize_code(code).map_err(|_| CoreError::not_found("plan", code))?;
        let id: Option<Uuid> = sqlx::query_scalar("SELECT plan_id FROM plan_codes WHERE code = $1")
            .bind(&normalized)
            .fetch_optional(&self.pool)
            .await?;
        id.map(PlanId::from_uuid)
            .ok_or_else(|| CoreError::not_found("plan", normalized))
    }

    /// Changes name, description, features, limits or prices.
    pub async fn update_plan(
        &self,
        plan_id: PlanId,
        changes: PlanChanges,
        metadata: &EventMetadata,
    ) -> Result<PlanView, CoreError> {
        let plan = self.load_plan(plan_id).await?;
        let current = plan
            .definition()
            .ok_or_else(|| CoreError::not_found("plan", plan_id))?;
        let pricing = merged_pricing(&current.terms, &changes);
        let command = PlanCommand::UpdatePlan(UpdatePlan {
            name: changes.name,
            description: changes.description,
            features: changes.features,
            limits: changes.limits,
            pricing,
            notice_days: changes.notice_days,
        });
        self.bus
            .plans()
            .execute(&plan_id.to_string(), command, metadata)
            .await?;
        self.get_plan(plan_id).await
    }

    /// Moves a plan to another status (archiving needs no subscribers).
    pub async fn set_plan_status(
        &self,
        plan_id: PlanId,
        status: PlanStatus,
        metadata: &EventMetadata,
    ) -> Result<PlanView, CoreError> {
        self.load_plan(plan_id).await?;
        let subscribers = self.subscriber_count(plan_id).await?;
        self.bus
            .plans()
            .execute(
                &plan_id.to_string(),
                PlanCommand::ChangeStatus {
                    status,
                    subscribers,
                },
                metadata,
            )
            .await?;
        self.get_plan(plan_id).await
    }

    /// Deletes a plan without subscribers; refused with the count otherwise.
    pub async fn delete_plan(
        &self,
        plan_id: PlanId,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        self.load_plan(plan_id).await?;
        let subscribers = self.subscriber_count(plan_id).await?;
        self.bus
            .plans()
            .execute(
                &plan_id.to_string(),
                PlanCommand::DeletePlan { subscribers },
                metadata,
            )
            .await?;
        Ok(())
    }

    /// Tenants whose latest plan event puts them on `plan_id`, counted from the event store.
    pub async fn subscriber_count(&self, plan_id: PlanId) -> Result<u32, CoreError> {
        let count: i64 = sqlx::query_scalar(
            "WITH latest AS (
                 SELECT DISTINCT ON (aggregate_id) event_type, payload
                   FROM events
                  WHERE aggregate_type = 'subscription' AND event_type = ANY($2)
                  ORDER BY aggregate_id, sequence DESC
             )
             SELECT count(*) FROM latest
              WHERE COALESCE(payload -> $3 -> 'plan' ->> 'plan_id',
                             payload -> $4 -> 'to' ->> 'plan_id',
                             payload -> $5 -> 'plan' ->> 'plan_id') = $1",
        )
        .bind(plan_id.to_string())
        .bind(vec![
            subscription_events::SUBSCRIPTION_STARTED,
            subscription_events::SUBSCRIPTION_PLAN_CHANGED,
            subscription_events::SUBSCRIPTION_RENEWED,
        ])
        .bind(subscription_events::SUBSCRIPTION_STARTED)
        .bind(subscription_events::SUBSCRIPTION_PLAN_CHANGED)
        .bind(subscription_events::SUBSCRIPTION_RENEWED)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Plans from the read model, with counts for the Pricing Models page.
    pub async fn list_plans(&self, query: &PlanQuery) -> Result<PlanList, CoreError> {
        let rows = sqlx::query(&format!(
            "{PLAN_SELECT}
              WHERE ($1::text IS NULL OR p.status = $1)
                AND ($2::uuid IS NULL OR p.app_id IS NULL OR p.app_id = $2)
                AND ($3 OR p.deleted_at IS NULL)
              ORDER BY p.created_at"
        ))
        .bind(query.status.map(|s| s.as_str()))
        .bind(query.app_id.map(|a| a.as_uuid()))
        .bind(query.include_deleted)
        .fetch_all(&self.pool)
        .await?;
        let plans = rows
            .iter()
            .map(plan_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PlanList {
            counts: self.plan_counts().await?,
            plans,
        })
    }

    async fn plan_counts(&self) -> Result<PlanCounts, CoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS total,
                    count(*) FILTER (WHERE price_minor = 0 AND unit_price_minor IS NULL) AS free,
                    count(*) FILTER (WHERE price_minor > 0 OR unit_price_minor IS NOT NULL)
                        AS premium,
                    count(*) FILTER (WHERE plan_type IN ('recurring', 'hybrid')) AS recurring
               FROM rm_plans WHERE deleted_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        let count = |name: &str| -> Result<u32, sqlx::Error> {
            row.try_get::<i64, _>(name)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        Ok(PlanCounts {
            total: count("total")?,
            free: count("free")?,
            premium: count("premium")?,
            recurring: count("recurring")?,
        })
    }

    // ---- subscriptions ---------------------------------------------------------------------

    /// The app of an installation, from its first event; `None` if it never connected.
    pub async fn installation_app(
        &self,
        installation_id: InstallationId,
    ) -> Result<Option<AppId>, CoreError> {
        let app: Option<String> = sqlx::query_scalar(
            "SELECT payload -> $2 ->> 'app_id' FROM events
              WHERE aggregate_type = 'installation' AND aggregate_id = $1 AND event_type = $2
              ORDER BY sequence LIMIT 1",
        )
        .bind(installation_id.to_string())
        .bind(installation_events::CONNECTED)
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        Ok(app.and_then(|a| a.parse().ok()))
    }

    async fn snapshot(&self, plan_id: PlanId) -> Result<(Plan, PlanSnapshot), CoreError> {
        let plan = self.load_plan(plan_id).await?;
        let d = plan
            .definition()
            .ok_or_else(|| CoreError::not_found("plan", plan_id))?;
        let snapshot = PlanSnapshot {
            plan_id,
            code: d.code.clone(),
            version: d.version,
            terms: d.terms,
            status: d.status,
            app_id: d.app_id,
            deleted: plan.is_deleted(),
        };
        Ok((plan, snapshot))
    }

    /// Puts a tenant on a plan (first plan, upgrade or downgrade). Idempotent.
    pub async fn assign_plan(
        &self,
        installation_id: InstallationId,
        request: AssignPlan,
        default_trigger: ChangeTrigger,
        metadata: &EventMetadata,
    ) -> Result<PlanAssignment, CoreError> {
        let app_id = self
            .installation_app(installation_id)
            .await?
            .ok_or_else(|| CoreError::not_found("installation", installation_id))?;
        let plan_id = match (&request.plan_id, &request.plan_code) {
            (Some(id), _) => id
                .parse::<PlanId>()
                .map_err(|e| CoreError::InvalidInput(e.to_string()))?,
            (None, Some(code)) => self.plan_id_by_code(code).await?,
            (None, None) => {
                return Err(CoreError::InvalidInput(
                    "give the plan as plan_id or plan_code".into(),
                ))
            }
        };
        let trigger = request.trigger.unwrap_or(default_trigger);
        if trigger == ChangeTrigger::Registration {
            return Err(CoreError::InvalidInput(
                "the registration trigger is Hubkeeper's own (the default plan of a new \
                 installation); use self_serve, admin or limit_reached"
                    .into(),
            ));
        }
        let (_, snapshot) = self.snapshot(plan_id).await?;
        let id = installation_id.to_string();
        let (_, before) = self.bus.subscriptions().load(&id).await?;
        self.bus
            .subscriptions()
            .execute(
                &id,
                SubscriptionCommand::ChangePlan {
                    installation_id,
                    app_id,
                    plan: snapshot,
                    trigger,
                },
                metadata,
            )
            .await?;
        let (subscription, after) = self.bus.subscriptions().load(&id).await?;
        let view = self
            .subscription_view(installation_id, &subscription)
            .await?
            .ok_or_else(|| CoreError::not_found("subscription", installation_id))?;
        Ok(PlanAssignment {
            changed: after > before,
            subscription: view,
        })
    }

    /// Puts a new installation on its app's default plan: the oldest active free plan for the
    /// app, else for all apps, looked up through `conn` (the projection's transaction).
    /// `Ok(false)` when there is none or the installation has a plan already.
    pub async fn start_default_subscription(
        &self,
        conn: &mut sqlx::PgConnection,
        installation_id: InstallationId,
        app_id: AppId,
        metadata: &EventMetadata,
    ) -> Result<bool, CoreError> {
        let plan: Option<Uuid> = sqlx::query_scalar(
            "SELECT plan_id FROM rm_plans
              WHERE deleted_at IS NULL AND status = 'active' AND plan_type = 'free'
                AND (app_id IS NULL OR app_id = $1)
              ORDER BY app_id IS NULL, created_at
              LIMIT 1",
        )
        .bind(app_id.as_uuid())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(plan_id) = plan.map(PlanId::from_uuid) else {
            return Ok(false);
        };
        let (_, snapshot) = self.snapshot(plan_id).await?;
        let id = installation_id.to_string();
        let (_, before) = self.bus.subscriptions().load(&id).await?;
        if before > 0 {
            return Ok(false);
        }
        self.bus
            .subscriptions()
            .execute(
                &id,
                SubscriptionCommand::ChangePlan {
                    installation_id,
                    app_id,
                    plan: snapshot,
                    trigger: ChangeTrigger::Registration,
                },
                metadata,
            )
            .await?;
        Ok(true)
    }

    /// A tenant's subscription; `None` when it is on no plan.
    pub async fn subscription(
        &self,
        installation_id: InstallationId,
    ) -> Result<Option<SubscriptionView>, CoreError> {
        let (subscription, _) = self
            .bus
            .subscriptions()
            .load(&installation_id.to_string())
            .await?;
        self.subscription_view(installation_id, &subscription).await
    }

    async fn subscription_view(
        &self,
        installation_id: InstallationId,
        subscription: &Subscription,
    ) -> Result<Option<SubscriptionView>, CoreError> {
        let Some(current) = subscription.current() else {
            return Ok(None);
        };
        let (plan, _) = self
            .bus
            .plans()
            .load(&current.plan.plan_id.to_string())
            .await?;
        Ok(Some(SubscriptionView {
            installation_id: installation_id.to_string(),
            app_id: subscription.app_id().map(|a| a.to_string()),
            plan_id: current.plan.plan_id.to_string(),
            plan_code: current.plan.code.clone(),
            plan_version: current.plan.version,
            current_plan_version: plan.definition().map(|d| d.version),
            price: current.plan.terms.price.into(),
            plan_type: current.plan.terms.plan_type,
            interval: current.plan.terms.interval,
            started_at: subscription.started_at(),
            started_paid: subscription.started_paid(),
            joined_at: current.joined_at,
            period_start: current.period_start,
            renews_at: current.renews_at,
        }))
    }

    // ---- usage and quota -------------------------------------------------------------------

    /// Records a usage report once per idempotency key and answers the quota after it.
    pub async fn report_usage(
        &self,
        report: UsageReport,
        metadata: &EventMetadata,
    ) -> Result<UsageAccepted, CoreError> {
        let key = report
            .idempotency_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                CoreError::InvalidInput(
                    "an idempotency key is required (idempotency_key or the Idempotency-Key \
                     header), so a retried report is not counted twice"
                        .into(),
                )
            })?;
        if key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS || key.chars().any(char::is_control) {
            return Err(CoreError::InvalidInput(format!(
                "the idempotency key must be one line of at most {MAX_IDEMPOTENCY_KEY_CHARS} \
                 characters"
            )));
        }
        if !report.metric.reportable() {
            return Err(CoreError::InvalidInput(format!(
                "{} are counted by Hubkeeper itself and cannot be reported",
                report.metric
            )));
        }
        if report.quantity > MAX_USAGE_QUANTITY {
            return Err(CoreError::InvalidInput(format!(
                "quantity must be at most {MAX_USAGE_QUANTITY} per report"
            )));
        }
        let installation = report.installation_id;
        if self.installation_app(installation).await?.is_none() {
            return Err(CoreError::not_found("installation", installation));
        }
        let now = self.clock.now();
        let quantity = i64::try_from(report.quantity).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO usage_reports (installation_id, idempotency_key, metric, quantity,
                                        reported_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(installation.as_uuid())
        .bind(key)
        .bind(report.metric.as_str())
        .bind(quantity)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            match report.metric.kind() {
                MetricKind::MonthlyCounter => {
                    sqlx::query(
                        "INSERT INTO usage_daily (installation_id, metric, day, quantity)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (installation_id, metric, day)
                         DO UPDATE SET quantity = usage_daily.quantity + EXCLUDED.quantity",
                    )
                    .bind(installation.as_uuid())
                    .bind(report.metric.as_str())
                    .bind(now.date_naive())
                    .bind(quantity)
                    .execute(&mut *tx)
                    .await?;
                }
                MetricKind::Gauge => {
                    sqlx::query(
                        "INSERT INTO usage_levels (installation_id, metric, value, reported_at)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (installation_id, metric) DO UPDATE
                            SET value = EXCLUDED.value, reported_at = EXCLUDED.reported_at
                          WHERE usage_levels.reported_at <= EXCLUDED.reported_at",
                    )
                    .bind(installation.as_uuid())
                    .bind(report.metric.as_str())
                    .bind(quantity)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            metrics::counter!("hk_usage_reports_total", "metric" => report.metric.as_str())
                .increment(1);
        } else {
            let (metric, stored): (String, i64) = sqlx::query_as(
                "SELECT metric, quantity FROM usage_reports
                  WHERE installation_id = $1 AND idempotency_key = $2",
            )
            .bind(installation.as_uuid())
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            if metric != report.metric.as_str() || stored != quantity {
                return Err(CoreError::Conflict(format!(
                    "idempotency key {key:?} was already used for a different report \
                     ({stored} {metric}); use a new key for a new report"
                )));
            }
            metrics::counter!("hk_usage_reports_duplicate_total").increment(1);
        }
        tx.commit().await?;
        let quota = self.quota(installation, metadata).await?;
        Ok(UsageAccepted {
            duplicate: !inserted,
            quota,
        })
    }

    /// Whether a tenant is within its plan's limits. Reaching a limit is recorded as a
    /// `UsageLimitReached` event (once per limit and month), with an upgrade offer.
    pub async fn quota(
        &self,
        installation_id: InstallationId,
        metadata: &EventMetadata,
    ) -> Result<Quota, CoreError> {
        let app_id = self
            .installation_app(installation_id)
            .await?
            .ok_or_else(|| CoreError::not_found("installation", installation_id))?;
        let now = self.clock.now();
        let (period_start, period_end) = month_of(now);
        let usage = self
            .usage(installation_id, period_start, period_end)
            .await?;
        let id = installation_id.to_string();
        let (subscription, _) = self.bus.subscriptions().load(&id).await?;
        let mut quota = Quota {
            installation_id: id.clone(),
            plan: None,
            period: period_of(now),
            period_start,
            period_end,
            limits: BTreeMap::new(),
            usage: usage.clone(),
            within_limits: true,
            exceeded: Vec::new(),
            features: Vec::new(),
            upgrade_offer: None,
        };
        let Some(current) = subscription.current() else {
            return Ok(quota);
        };
        let (plan, _) = self
            .bus
            .plans()
            .load(&current.plan.plan_id.to_string())
            .await?;
        let limits = plan.limits_for(current.joined_at, now);
        quota.features = plan.features_for(current.joined_at, now);
        if let Some(d) = plan.definition() {
            quota.plan = Some(QuotaPlan {
                plan_id: current.plan.plan_id.to_string(),
                code: d.code.clone(),
                name: d.name.clone(),
                version: current.plan.version,
                status: d.status,
            });
        }
        let mut newly_reached = Vec::new();
        for (kind, limit) in &limits {
            let metric = kind.metric();
            let used = usage.get(&metric).copied().unwrap_or(0);
            let exceeded = match metric.kind() {
                MetricKind::MonthlyCounter => used >= *limit,
                MetricKind::Gauge => used > *limit,
            };
            if exceeded {
                quota.exceeded.push(*kind);
            }
            if used >= *limit && !subscription.limit_reached_in(*kind, &quota.period) {
                newly_reached.push((*kind, *limit, used));
            }
            quota.limits.insert(
                *kind,
                LimitStatus {
                    limit: *limit,
                    used,
                    remaining: limit.saturating_sub(used),
                    exceeded,
                },
            );
        }
        quota.within_limits = quota.exceeded.is_empty();
        let worst = quota
            .exceeded
            .first()
            .copied()
            .or(newly_reached.first().map(|r| r.0));
        if let Some(kind) = worst {
            let used = usage.get(&kind.metric()).copied().unwrap_or(0);
            quota.upgrade_offer = self
                .upgrade_offer(
                    app_id,
                    current.plan.plan_id,
                    &current.plan.terms,
                    kind,
                    used,
                )
                .await?;
        }
        for (kind, limit, used) in newly_reached {
            self.bus
                .subscriptions()
                .execute(
                    &id,
                    SubscriptionCommand::RecordLimitReached {
                        limit: kind,
                        limit_value: limit,
                        used,
                        period: quota.period.clone(),
                        offer: quota.upgrade_offer.clone(),
                    },
                    metadata,
                )
                .await?;
            metrics::counter!("hk_usage_limits_reached_total", "limit" => kind.as_str())
                .increment(1);
        }
        Ok(quota)
    }

    /// Usage of every metric: counters over `[start, end)`, levels as last reported.
    async fn usage(
        &self,
        installation_id: InstallationId,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeMap<UsageMetric, u64>, CoreError> {
        let mut usage: BTreeMap<UsageMetric, u64> = BTreeMap::new();
        let counters: Vec<(String, i64)> = sqlx::query_as(
            "SELECT metric, COALESCE(sum(quantity), 0)::bigint FROM usage_daily
              WHERE installation_id = $1 AND day >= $2 AND day < $3
              GROUP BY metric",
        )
        .bind(installation_id.as_uuid())
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        let levels: Vec<(String, i64)> =
            sqlx::query_as("SELECT metric, value FROM usage_levels WHERE installation_id = $1")
                .bind(installation_id.as_uuid())
                .fetch_all(&self.pool)
                .await?;
        for (metric, value) in counters.into_iter().chain(levels) {
            if let Ok(metric) = metric.parse::<UsageMetric>() {
                usage.insert(metric, u64::try_from(value).unwrap_or(0));
            }
        }
        let handouts: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(handouts), 0)::bigint FROM token_usage
              WHERE installation_id = $1 AND day >= $2 AND day < $3",
        )
        .bind(installation_id.to_string())
        .bind(start)
        .bind(end)
        .fetch_one(&self.pool)
        .await?;
        usage.insert(
            UsageMetric::TokenHandouts,
            u64::try_from(handouts).unwrap_or(0),
        );
        for metric in UsageMetric::ALL {
            usage.entry(metric).or_insert(0);
        }
        Ok(usage)
    }

    /// The cheapest plan open to the tenant with room for `used` units of `kind`.
    async fn upgrade_offer(
        &self,
        app_id: AppId,
        current: PlanId,
        current_terms: &PlanTerms,
        kind: LimitKind,
        used: u64,
    ) -> Result<Option<PlanOffer>, CoreError> {
        let rows = sqlx::query(&format!(
            "{PLAN_SELECT}
              WHERE p.deleted_at IS NULL AND p.status = 'active' AND p.plan_id <> $1
                AND (p.app_id IS NULL OR p.app_id = $2)"
        ))
        .bind(current.as_uuid())
        .bind(app_id.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        // Cheapest first, preferring the current plan's currency (no exchange rates here).
        let mut best: Option<((bool, i64), PlanView)> = None;
        for row in &rows {
            let plan = plan_from_row(row)?;
            let Some(terms) = terms_of(&plan) else {
                continue;
            };
            let room = plan.limits.get(&kind).is_none_or(|limit| *limit > used);
            if !room {
                continue;
            }
            let rank = (
                terms.price.currency != current_terms.price.currency,
                terms.monthly_equivalent_minor(),
            );
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, plan));
            }
        }
        Ok(best.and_then(|(_, plan)| {
            Some(PlanOffer {
                plan_id: plan.plan_id.parse().ok()?,
                code: plan.code,
            })
        }))
    }

    // ---- overview --------------------------------------------------------------------------

    /// The Billing & Upgrades page.
    pub async fn overview(&self, query: &OverviewQuery) -> Result<BillingOverview, CoreError> {
        let now = self.clock.now();
        let (start, end) = month_of(now);
        let mut plans = self
            .list_plans(&PlanQuery {
                status: Some(PlanStatus::Active),
                ..PlanQuery::default()
            })
            .await?;
        plans.plans.sort_by_key(|p| {
            (
                p.paid,
                terms_of(p).map_or(0, |t| t.monthly_equivalent_minor()),
            )
        });
        let installation = query.installation_id;
        let daily_rows: Vec<(NaiveDate, i64)> = sqlx::query_as(
            "SELECT day, sum(quantity)::bigint FROM usage_daily
              WHERE metric = 'requests' AND day >= $1 AND day < $2
                AND ($3::uuid IS NULL OR installation_id = $3)
              GROUP BY day ORDER BY day",
        )
        .bind(start)
        .bind(end)
        .bind(installation.map(|i| i.as_uuid()))
        .fetch_all(&self.pool)
        .await?;
        let daily: Vec<DayUsage> = daily_rows
            .into_iter()
            .map(|(day, q)| DayUsage {
                day,
                quantity: u64::try_from(q).unwrap_or(0),
            })
            .collect();
        let total: u64 = daily.iter().map(|d| d.quantity).sum();
        let peak_day = daily
            .iter()
            .max_by_key(|d| (d.quantity, std::cmp::Reverse(d.day)))
            .cloned();
        let handouts: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(handouts), 0)::bigint FROM token_usage
              WHERE day >= $1 AND day < $2 AND ($3::text IS NULL OR installation_id = $3)",
        )
        .bind(start)
        .bind(end)
        .bind(installation.map(|i| i.to_string()))
        .fetch_one(&self.pool)
        .await?;
        let requests_limit = match installation {
            Some(id) => {
                let (subscription, _) = self.bus.subscriptions().load(&id.to_string()).await?;
                match subscription.current() {
                    Some(current) => {
                        let (plan, _) = self
                            .bus
                            .plans()
                            .load(&current.plan.plan_id.to_string())
                            .await?;
                        plan.limits_for(current.joined_at, now)
                            .get(&LimitKind::RequestsPerMonth)
                            .copied()
                    }
                    None => None,
                }
            }
            None => None,
        };
        let days_so_far = u64::from(now.day()).max(1);
        let usage = UsageAnalytics {
            installation_id: installation.map(|i| i.to_string()),
            period: period_of(now),
            requests_this_month: total,
            requests_limit,
            token_handouts_this_month: u64::try_from(handouts).unwrap_or(0),
            peak_day,
            average_daily: total / days_so_far,
            daily,
        };
        let recent_changes = sqlx::query(
            "SELECT occurred_at, installation_id, from_plan_code, to_plan_code, direction,
                    amount_minor, currency, trigger, actor
               FROM rm_plan_changes ORDER BY occurred_at DESC, global_position DESC LIMIT 20",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| -> Result<PlanChangeView, CoreError> {
            let currency: String = row.try_get("currency")?;
            let amount = hubkeeper_domain::plan::Money {
                amount_minor: row.try_get("amount_minor")?,
                currency: hubkeeper_domain::plan::Currency::from_stored(&currency)
                    .ok_or_else(|| CoreError::Store(format!("bad currency {currency:?}")))?,
            };
            Ok(PlanChangeView {
                occurred_at: row.try_get("occurred_at")?,
                installation_id: row.try_get::<Uuid, _>("installation_id")?.to_string(),
                from_plan: row.try_get("from_plan_code")?,
                to_plan: row.try_get("to_plan_code")?,
                direction: row.try_get("direction")?,
                amount: amount.into(),
                trigger: row.try_get("trigger")?,
                actor: row.try_get("actor")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
        let limits_reached = sqlx::query(
            "SELECT occurred_at, installation_id, plan_code, limit_kind, limit_value, used,
                    offer_plan_code
               FROM rm_limits_reached ORDER BY occurred_at DESC, global_position DESC LIMIT 20",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| -> Result<LimitReachedView, CoreError> {
            Ok(LimitReachedView {
                occurred_at: row.try_get("occurred_at")?,
                installation_id: row.try_get::<Uuid, _>("installation_id")?.to_string(),
                plan_code: row.try_get("plan_code")?,
                limit: row.try_get("limit_kind")?,
                limit_value: u64::try_from(row.try_get::<i64, _>("limit_value")?).unwrap_or(0),
                used: u64::try_from(row.try_get::<i64, _>("used")?).unwrap_or(0),
                offer_plan_code: row.try_get("offer_plan_code")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
        let (free, paid, converted): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE NOT started_paid),
                    count(*) FILTER (WHERE started_paid),
                    count(*) FILTER (WHERE NOT started_paid AND current_paid)
               FROM rm_subscriptions",
        )
        .fetch_one(&self.pool)
        .await?;
        let conversion_rate_percent =
            (free > 0).then(|| ((converted as f64 / free as f64) * 1000.0).round() / 10.0);
        Ok(BillingOverview {
            counts: plans.counts,
            plans: plans.plans,
            usage,
            recent_changes,
            limits_reached,
            registrations: Registrations {
                free: u64::try_from(free).unwrap_or(0),
                paid: u64::try_from(paid).unwrap_or(0),
                converted: u64::try_from(converted).unwrap_or(0),
                conversion_rate_percent,
            },
        })
    }

    /// Renews every subscription whose period has ended (found in the read model, decided by
    /// the aggregate): each moves to its plan's current version, which is when a price change
    /// reaches existing subscribers. Returns how many were renewed; failures are logged and
    /// retried on the next run.
    pub async fn renew_due(&self, metadata: &EventMetadata) -> Result<u32, CoreError> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT installation_id FROM rm_subscriptions
              WHERE renews_at <= $1 ORDER BY renews_at LIMIT 500",
        )
        .bind(self.clock.now())
        .fetch_all(&self.pool)
        .await?;
        let mut renewed = 0;
        for id in due {
            let installation = InstallationId::from_uuid(id);
            let (subscription, _) = self.bus.subscriptions().load(&id.to_string()).await?;
            let Some(current) = subscription.current() else {
                continue;
            };
            let result = match self.snapshot(current.plan.plan_id).await {
                Ok((_, plan)) => self
                    .bus
                    .subscriptions()
                    .execute(
                        &id.to_string(),
                        SubscriptionCommand::Renew { plan },
                        metadata,
                    )
                    .await
                    .map_err(CoreError::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    renewed += 1;
                    metrics::counter!("hk_subscriptions_renewed_total").increment(1);
                }
                // The read model was behind the aggregate (renewed meanwhile): nothing to do.
                Err(CoreError::Subscription(
                    hubkeeper_domain::subscription::SubscriptionError::RenewalNotDue { .. },
                )) => {}
                Err(e) => {
                    tracing::warn!(%installation, error = %e, "subscription not renewed; retrying later")
                }
            }
        }
        Ok(renewed)
    }

    /// Deletes usage receipts older than `retention_days` (their idempotency window).
    pub async fn prune(&self, retention_days: u32) -> Result<u64, CoreError> {
        let deleted = sqlx::query(
            "DELETE FROM usage_reports WHERE reported_at < now() - make_interval(days => $1)",
        )
        .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }
}

/// First day of the month of `at` and of the next month (UTC).
pub fn month_of(at: DateTime<Utc>) -> (NaiveDate, NaiveDate) {
    let start = NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or(at.date_naive());
    let end = start
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(start);
    (start, end)
}

/// The complete new prices of a PATCH, or `None` when it changes no price field.
fn merged_pricing(current: &PlanTerms, changes: &PlanChanges) -> Option<PricingInput> {
    if changes.plan_type.is_none()
        && changes.interval.is_none()
        && changes.price.is_none()
        && changes.unit_pricing.is_none()
    {
        return None;
    }
    Some(PricingInput {
        plan_type: changes.plan_type.unwrap_or(current.plan_type),
        interval: changes.interval.unwrap_or(current.interval),
        price_minor: changes
            .price
            .as_ref()
            .map_or(current.price.amount_minor, |p| p.amount_minor),
        currency: changes.price.as_ref().map_or_else(
            || current.price.currency.code().to_owned(),
            |p| p.currency.clone(),
        ),
        unit_pricing: changes.unit_pricing.unwrap_or(current.unit_pricing),
    })
}

const PLAN_SELECT: &str = "
SELECT p.plan_id, p.code, p.name, p.description, p.app_id, p.plan_type, p.billing_interval,
       p.price_minor, p.currency, p.unit_price_minor, p.unit_per_units, p.unit_metric,
       p.features, p.limits, p.status, p.version, p.created_at, p.updated_at, p.deleted_at,
       (SELECT count(*) FROM rm_subscriptions s WHERE s.plan_id = p.plan_id) AS subscribers
  FROM rm_plans p";

fn plan_from_row(row: &sqlx::postgres::PgRow) -> Result<PlanView, CoreError> {
    let bad = |what: &str| CoreError::Store(format!("rm_plans holds an unreadable {what}"));
    let currency: String = row.try_get("currency")?;
    let currency =
        hubkeeper_domain::plan::Currency::from_stored(&currency).ok_or_else(|| bad("currency"))?;
    let plan_type: String = row.try_get("plan_type")?;
    let interval: Option<String> = row.try_get("billing_interval")?;
    let unit_metric: Option<String> = row.try_get("unit_metric")?;
    let unit_pricing = match (
        row.try_get::<Option<i64>, _>("unit_price_minor")?,
        row.try_get::<Option<i64>, _>("unit_per_units")?,
        unit_metric,
    ) {
        (Some(amount_minor), Some(per_units), Some(metric)) => {
            Some(hubkeeper_domain::plan::UnitPricing {
                amount_minor,
                per_units: u64::try_from(per_units).map_err(|_| bad("unit size"))?,
                metric: metric.parse().map_err(|_| bad("unit metric"))?,
            })
        }
        _ => None,
    };
    let terms = PlanTerms {
        plan_type: plan_type.parse().map_err(|_| bad("plan type"))?,
        interval: interval
            .map(|i| i.parse())
            .transpose()
            .map_err(|_| bad("interval"))?,
        price: hubkeeper_domain::plan::Money {
            amount_minor: row.try_get("price_minor")?,
            currency,
        },
        unit_pricing,
    };
    let features: serde_json::Value = row.try_get("features")?;
    let limits: serde_json::Value = row.try_get("limits")?;
    let status: String = row.try_get("status")?;
    let subscribers: i64 = row.try_get("subscribers")?;
    Ok(PlanView {
        plan_id: row.try_get::<Uuid, _>("plan_id")?.to_string(),
        code: row.try_get("code")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        app_id: row
            .try_get::<Option<Uuid>, _>("app_id")?
            .map(|a| a.to_string()),
        plan_type: terms.plan_type,
        interval: terms.interval,
        price: terms.price.into(),
        unit_pricing: unit_view(&terms),
        features: serde_json::from_value(features).map_err(|_| bad("feature list"))?,
        limits: serde_json::from_value::<UsageLimits>(limits).map_err(|_| bad("limits"))?,
        status: status.parse().map_err(|_| bad("status"))?,
        version: u32::try_from(row.try_get::<i32, _>("version")?).map_err(|_| bad("version"))?,
        paid: terms.is_paid(),
        recurring: terms.is_recurring(),
        subscribers: u32::try_from(subscribers).unwrap_or(u32::MAX),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        deleted_at: row.try_get("deleted_at")?,
        versions: None,
        notices: None,
    })
}

/// The terms a plan view describes.
fn terms_of(plan: &PlanView) -> Option<PlanTerms> {
    let currency = hubkeeper_domain::plan::Currency::from_stored(&plan.price.currency)?;
    Some(PlanTerms {
        plan_type: plan.plan_type,
        interval: plan.interval,
        price: hubkeeper_domain::plan::Money {
            amount_minor: plan.price.amount_minor,
            currency,
        },
        unit_pricing: plan
            .unit_pricing
            .as_ref()
            .map(|u| hubkeeper_domain::plan::UnitPricing {
                amount_minor: u.price.amount_minor,
                per_units: u.per_units,
                metric: u.metric,
            }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use hubkeeper_domain::plan::{BillingInterval, Currency, Money, PlanType};

    #[test]
    fn months_are_utc_calendar_months() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
            .single()
            .expect("valid");
        let (start, end) = month_of(at);
        assert_eq!(start.to_string(), "2026-12-01");
        assert_eq!(end.to_string(), "2027-01-01");
    }

    fn monthly(amount_minor: i64) -> PlanTerms {
        PlanTerms {
            plan_type: PlanType::Recurring,
            interval: Some(BillingInterval::Monthly),
            price: Money {
                amount_minor,
                currency: Currency::parse("USD").expect("listed"),
            },
            unit_pricing: None,
        }
    }

    #[test]
    fn a_patch_without_price_fields_is_no_price_change() {
        assert_eq!(
            merged_pricing(&monthly(1000), &PlanChanges::default()),
            None
        );
    }

    #[test]
    fn a_patch_merges_price_fields_over_the_current_terms() {
        let changes = PlanChanges {
            price: Some(PriceInput {
                amount_minor: 1500,
                currency: "EUR".into(),
            }),
            ..PlanChanges::default()
        };
        let merged = merged_pricing(&monthly(1000), &changes).expect("a price change");
        assert_eq!(merged.price_minor, 1500);
        assert_eq!(merged.currency, "EUR");
        assert_eq!(merged.plan_type, PlanType::Recurring);
        assert_eq!(merged.interval, Some(BillingInterval::Monthly));
        // `"interval": null` removes the interval; absence keeps it.
        let to_free: PlanChanges = serde_json::from_str(
            r#"{"type": "free", "interval": null, "price": {"amount_minor": 0, "currency": "USD"}}"#,
        )
        .expect("parses");
        let merged = merged_pricing(&monthly(1000), &to_free).expect("a price change");
        assert_eq!(merged.interval, None);
        assert_eq!(merged.plan_type, PlanType::Free);
        let fraction = serde_json::from_str::<PlanChanges>(
            r#"{"price": {"amount_minor": 9.99, "currency": "USD"}}"#,
        );
        assert!(fraction.is_err(), "minor units are integers");
    }
}
