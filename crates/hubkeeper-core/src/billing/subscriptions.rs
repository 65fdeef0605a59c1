//! Which plan each tenant is on: assignment (self-serve, admin, limit reached), the default
//! plan of a new installation, and renewals, which move subscribers to a plan's current version.

use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::plan::{Plan, PlanId};
use hubkeeper_domain::subscription::{
    ChangeTrigger, PlanSnapshot, Subscription, SubscriptionCommand,
};
use hubkeeper_domain::{AppId, InstallationId};
use uuid::Uuid;

use super::views::{AssignPlan, PlanAssignment, SubscriptionView};
use super::BillingService;
use crate::error::CoreError;

impl BillingService {
    /// The app of an installation, from its first event; `None` if it never connected.
    pub async fn installation_app(
        &self,
        installation_id: InstallationId,
    ) -> Result<Option<AppId>, CoreError> {
        Ok(crate::access::scope::installation_app(&self.pool, &installation_id).await?)
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
        let before = self
            .change_plan(installation_id, app_id, plan_id, trigger, metadata)
            .await?
            .unwrap_or_default();
        let id = installation_id.to_string();
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
        let changed = self
            .change_plan(
                installation_id,
                app_id,
                plan_id,
                ChangeTrigger::Registration,
                metadata,
            )
            .await?;
        Ok(changed.is_some())
    }

    /// Moves a tenant onto the current version of `plan_id` and returns its subscription's
    /// sequence before the command. A registration only ever starts a subscription: for a
    /// tenant that has one already it does nothing and answers `None`.
    async fn change_plan(
        &self,
        installation_id: InstallationId,
        app_id: AppId,
        plan_id: PlanId,
        trigger: ChangeTrigger,
        metadata: &EventMetadata,
    ) -> Result<Option<usize>, CoreError> {
        let (_, snapshot) = self.snapshot(plan_id).await?;
        let id = installation_id.to_string();
        let (_, before) = self.bus.subscriptions().load(&id).await?;
        if trigger == ChangeTrigger::Registration && before > 0 {
            return Ok(None);
        }
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
        Ok(Some(before))
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
}
