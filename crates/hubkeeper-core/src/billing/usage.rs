//! Usage and quotas: idempotent usage reports, the quota of a tenant against its plan's limits
//! (recording each limit reached once per month, with an upgrade offer), and pruning receipts.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::plan::{LimitKind, MetricKind, PlanId, PlanTerms, UsageMetric};
use hubkeeper_domain::subscription::{period_of, PlanOffer, SubscriptionCommand};
use hubkeeper_domain::{AppId, InstallationId};

use super::plans::{plan_from_row, terms_of, PLAN_SELECT};
use super::views::{LimitStatus, PlanView, Quota, QuotaPlan, UsageAccepted, UsageReport};
use super::BillingService;
use crate::error::CoreError;

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// Largest quantity one usage report may carry.
pub const MAX_USAGE_QUANTITY: u64 = 1_000_000_000;

impl BillingService {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
}
