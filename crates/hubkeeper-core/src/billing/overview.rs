//! The Billing & Upgrades page: active plans, this month's usage, recent plan changes and
//! limits reached, and free/paid registrations with the conversion rate.

use chrono::{Datelike, NaiveDate};
use hubkeeper_domain::plan::{LimitKind, PlanStatus};
use hubkeeper_domain::subscription::period_of;
use hubkeeper_domain::InstallationId;
use sqlx::Row;
use uuid::Uuid;

use super::plans::terms_of;
use super::usage::month_of;
use super::views::{
    BillingOverview, DayUsage, LimitReachedView, OverviewQuery, PlanChangeView, PlanQuery,
    Registrations, UsageAnalytics,
};
use super::BillingService;
use crate::error::CoreError;

impl BillingService {
    /// A tenant's limit of `kind` under the plan version it is held to (`None`: no plan, or
    /// unlimited). Reads the aggregates; records nothing.
    pub async fn monthly_limit(
        &self,
        installation: InstallationId,
        kind: LimitKind,
    ) -> Result<Option<u64>, CoreError> {
        let (subscription, _) = self
            .bus
            .subscriptions()
            .load(&installation.to_string())
            .await?;
        let Some(current) = subscription.current() else {
            return Ok(None);
        };
        let (plan, _) = self
            .bus
            .plans()
            .load(&current.plan.plan_id.to_string())
            .await?;
        Ok(plan
            .limits_for(current.joined_at, self.clock.now())
            .get(&kind)
            .copied())
    }

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
            Some(id) => self.monthly_limit(id, LimitKind::RequestsPerMonth).await?,
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
}
