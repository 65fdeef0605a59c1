//! The plan catalogue: create (with a reserved, never reused code), edit, change status,
//! delete, and list from the read model.

use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::plan::{
    normalize_code, Plan, PlanCommand, PlanId, PlanStatus, PlanTerms, PricingInput, UpdatePlan,
    UsageLimits,
};
use hubkeeper_domain::subscription::event_types as subscription_events;
use sqlx::Row;
use uuid::Uuid;

use super::views::{unit_view, NewPlan, PlanChanges, PlanCounts, PlanList, PlanQuery, PlanView};
use super::BillingService;
use crate::error::CoreError;

/// A code reservation whose plan never appeared (the process died between reserving and
/// creating) is taken over after this long.
const STALE_RESERVATION_SECS: i64 = 60;

impl BillingService {
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
    pub(super) async fn load_plan(&self, plan_id: PlanId) -> Result<Plan, CoreError> {
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

pub(super) const PLAN_SELECT: &str = "
SELECT p.plan_id, p.code, p.name, p.description, p.app_id, p.plan_type, p.billing_interval,
       p.price_minor, p.currency, p.unit_price_minor, p.unit_per_units, p.unit_metric,
       p.features, p.limits, p.status, p.version, p.created_at, p.updated_at, p.deleted_at,
       (SELECT count(*) FROM rm_subscriptions s WHERE s.plan_id = p.plan_id) AS subscribers
  FROM rm_plans p";

pub(super) fn plan_from_row(row: &sqlx::postgres::PgRow) -> Result<PlanView, CoreError> {
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
pub(super) fn terms_of(plan: &PlanView) -> Option<PlanTerms> {
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
    use crate::billing::PriceInput;
    use hubkeeper_domain::plan::{BillingInterval, Currency, Money, PlanType};

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
