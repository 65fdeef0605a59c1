//! Hand-out counting: hand-outs are not events; they are counted in memory and written to
//! `token_usage` (and the latest to `rm_installations.last_used_at`, "last used" on Token
//! Management) in one statement per flush, whatever the traffic.

use std::collections::HashMap;
use std::future::Future;
use std::sync::PoisonError;

use chrono::{DateTime, NaiveDate, Utc};
use hubkeeper_domain::InstallationId;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Inner, TokenService};
use crate::error::CoreError;

/// Hand-out statistics of an installation (from `token_usage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    pub last_handed_out_at: Option<DateTime<Utc>>,
    pub handouts_today: i64,
    pub handouts_total: i64,
}

/// Hand-outs not yet flushed: (installation, UTC day) -> (count, last hand-out).
pub(super) type UsageCounters = HashMap<(InstallationId, NaiveDate), (i64, DateTime<Utc>)>;

impl TokenService {
    /// Hand-out statistics, as flushed so far.
    pub async fn usage(&self, id: &InstallationId) -> Result<TokenUsage, CoreError> {
        let today = self.inner.clock.now().date_naive();
        let row: (Option<DateTime<Utc>>, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT max(last_handed_out_at),
                    sum(handouts) FILTER (WHERE day = $2)::bigint,
                    sum(handouts)::bigint
               FROM token_usage WHERE installation_id = $1",
        )
        .bind(id.to_string())
        .bind(today)
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(TokenUsage {
            last_handed_out_at: row.0,
            handouts_today: row.1.unwrap_or(0),
            handouts_total: row.2.unwrap_or(0),
        })
    }

    /// The background task that writes hand-out counters to `token_usage` every
    /// [`TokenConfig::usage_flush_interval`] (one statement per flush, whatever the traffic),
    /// and once more at shutdown.
    pub fn usage_flusher(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let mut tick = tokio::time::interval(inner.config.usage_flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => inner.flush_usage().await,
                }
            }
            inner.flush_usage().await;
        }
    }

    /// Writes pending hand-out counters now (tests, shutdown).
    pub async fn flush_usage(&self) {
        self.inner.flush_usage().await;
    }
}

impl Inner {
    pub(super) fn count_handout(&self, id: InstallationId, now: DateTime<Utc>) {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = usage.entry((id, now.date_naive())).or_insert((0, now));
        entry.0 += 1;
        entry.1 = entry.1.max(now);
    }

    async fn flush_usage(&self) {
        let pending =
            std::mem::take(&mut *self.usage.lock().unwrap_or_else(PoisonError::into_inner));
        if pending.is_empty() {
            return;
        }
        let mut ids = Vec::with_capacity(pending.len());
        let mut days = Vec::with_capacity(pending.len());
        let mut counts = Vec::with_capacity(pending.len());
        let mut lasts = Vec::with_capacity(pending.len());
        for ((id, day), (count, last)) in &pending {
            ids.push(id.to_string());
            days.push(*day);
            counts.push(*count);
            lasts.push(*last);
        }
        // One statement: the day counters, and "last used" on the installations read model (a
        // side column the projector never writes, shown and sorted on by Token Management).
        let written = sqlx::query(
            "WITH counted AS (
                 INSERT INTO token_usage (installation_id, day, handouts, last_handed_out_at)
                 SELECT * FROM UNNEST($1::text[], $2::date[], $3::bigint[], $4::timestamptz[])
                 ON CONFLICT (installation_id, day) DO UPDATE
                    SET handouts = token_usage.handouts + EXCLUDED.handouts,
                        last_handed_out_at = GREATEST(token_usage.last_handed_out_at,
                                                      EXCLUDED.last_handed_out_at)
                 RETURNING installation_id, last_handed_out_at
             ), latest AS (
                 SELECT installation_id::uuid AS id, max(last_handed_out_at) AS at
                   FROM counted GROUP BY installation_id
             )
             UPDATE rm_installations r
                SET last_used_at = GREATEST(r.last_used_at, latest.at)
               FROM latest
              WHERE r.installation_id = latest.id",
        )
        .bind(&ids)
        .bind(&days)
        .bind(&counts)
        .bind(&lasts)
        .execute(&self.pool)
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "token usage not written; keeping the counts for the next flush");
            let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, (count, last)) in pending {
                let entry = usage.entry(key).or_insert((0, last));
                entry.0 += count;
                entry.1 = entry.1.max(last);
            }
        }
    }
}
