//! Revokes and disconnects announced ahead: the operator schedules one (the event goes out to
//! the app as `installation.removal_scheduled` at once), and the leader-elected
//! [`ScheduledRemovals`] task carries it out when it is due, through the same locked revoke and
//! disconnect as an operator's, with the actor "the scheduled removal by <who scheduled it>".
//!
//! The aggregate is the source of truth: the task finds candidates in the read model
//! (`rm_installations.removal_effective_at`) and, under the installation's lock, acts only if
//! the aggregate still holds a pending removal that is due. A removal cancelled, already done,
//! or replaced by a revoke, disconnect, uninstall or reconnect in the meantime is skipped, so a
//! lagging read model or a second leader after a failover cannot remove twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hubkeeper_bus::registry::SCHEDULED_REMOVALS_LOCK;
use hubkeeper_bus::{run_as_leader, LeaderRole, LeaderWork, Leadership};
use hubkeeper_domain::installation::{
    InstallationCommand, InstallationError, RemovalAction, ScheduledRemoval,
    MAX_REMOVAL_NOTICE_DAYS,
};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::InstallationId;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::revoke::check_reason;
use super::TokenService;
use crate::error::CoreError;

/// What [`TokenService::carry_out_scheduled_removal`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalRun {
    /// The pending removal was carried out.
    Done(RemovalAction),
    /// Nothing is pending any more (cancelled, done, or superseded): nothing to do.
    NothingPending,
    /// A removal is pending but not due yet (the read model was ahead of the clock).
    NotDue(DateTime<Utc>),
}

impl TokenService {
    /// Announces a revoke or disconnect for `notice` from now. The event is the app's notice
    /// (`installation.removal_scheduled`); nothing changes for the tokens until it is due. At
    /// most one removal is pending: another is refused (409) until it is cancelled.
    pub async fn schedule_removal(
        &self,
        id: &InstallationId,
        action: RemovalAction,
        reason: &str,
        notice: Duration,
        metadata: EventMetadata,
    ) -> Result<ScheduledRemoval, CoreError> {
        let reason = check_reason(reason)?;
        check_notice(notice, self.inner.config.removal_min_notice)?;
        let installation = self.inner.load(id).await?;
        if installation.installation_id().is_none() {
            return Err(CoreError::not_found("installation", id));
        }
        let notice = chrono::Duration::from_std(notice)
            .map_err(|_| CoreError::InvalidInput("notice_secs is too large".into()))?;
        let effective_at = self.inner.clock.now() + notice;
        self.inner
            .bus
            .installations()
            .execute(
                &id.to_string(),
                InstallationCommand::ScheduleRemoval {
                    action,
                    reason: reason.clone(),
                    effective_at,
                    scheduled_by: metadata.actor.to_string(),
                },
                &metadata.reason(reason),
            )
            .await?;
        let installation = self.inner.load(id).await?;
        let scheduled =
            installation
                .scheduled_removal()
                .cloned()
                .ok_or(CoreError::Installation(
                    InstallationError::NoRemovalScheduled,
                ))?;
        tracing::info!(
            installation_id = %id, action = %scheduled.action, effective_at = %scheduled.effective_at,
            "removal scheduled"
        );
        Ok(scheduled)
    }

    /// Withdraws the pending removal; returns what it was. Under the installation's lock, so a
    /// removal being carried out right now either finishes first (then this answers 404: nothing
    /// is pending) or sees the cancel and does nothing.
    pub async fn cancel_scheduled_removal(
        &self,
        id: &InstallationId,
        reason: Option<String>,
        metadata: EventMetadata,
    ) -> Result<ScheduledRemoval, CoreError> {
        let reason = reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(check_reason)
            .transpose()?;
        let id = *id;
        self.inner
            .clone()
            .exclusive(id, move |inner| async move {
                let installation = inner.load(&id).await?;
                if installation.installation_id().is_none() {
                    return Err(CoreError::not_found("installation", id));
                }
                let pending = installation
                    .scheduled_removal()
                    .cloned()
                    .ok_or(CoreError::Installation(InstallationError::NoRemovalScheduled))?;
                let metadata = match &reason {
                    Some(reason) => metadata.reason(reason.clone()),
                    None => metadata,
                };
                inner
                    .bus
                    .installations()
                    .execute(
                        &id.to_string(),
                        InstallationCommand::CancelScheduledRemoval { reason },
                        &metadata,
                    )
                    .await?;
                tracing::info!(installation_id = %id, action = %pending.action, "scheduled removal cancelled");
                Ok(pending)
            })
            .await
    }

    /// Carries out the installation's pending removal if it is due, exactly as the operator's
    /// revoke or disconnect would, under the same lock; the actor names who scheduled it.
    pub async fn carry_out_scheduled_removal(
        &self,
        id: &InstallationId,
    ) -> Result<RemovalRun, CoreError> {
        let id = *id;
        self.inner
            .clone()
            .exclusive(id, move |inner| async move {
                let installation = inner.load(&id).await?;
                let now = inner.clock.now();
                let Some(pending) = installation.scheduled_removal().cloned() else {
                    return Ok(RemovalRun::NothingPending);
                };
                if pending.effective_at > now {
                    return Ok(RemovalRun::NotDue(pending.effective_at));
                }
                let scheduled_by = pending
                    .scheduled_by
                    .parse::<Actor>()
                    .unwrap_or(Actor::System);
                let metadata = EventMetadata::new(Actor::scheduled_removal(&scheduled_by), now)
                    .correlation_id(format!(
                        "scheduled-removal:{id}:{}",
                        pending.scheduled_at.timestamp_micros()
                    ));
                match pending.action {
                    RemovalAction::Revoke => {
                        inner.revoke_locked(&id, &pending.reason, metadata).await?
                    }
                    RemovalAction::Disconnect => {
                        inner
                            .disconnect_locked(&id, &pending.reason, metadata)
                            .await?
                    }
                }
                Ok(RemovalRun::Done(pending.action))
            })
            .await
    }
}

/// The notice an operator may give: at least the configured minimum, at most
/// [`MAX_REMOVAL_NOTICE_DAYS`].
fn check_notice(notice: Duration, min: Duration) -> Result<(), CoreError> {
    let max = Duration::from_secs(MAX_REMOVAL_NOTICE_DAYS as u64 * 86_400);
    if notice < min || notice > max {
        return Err(CoreError::InvalidInput(format!(
            "notice_secs must be between {} and {} seconds",
            min.as_secs(),
            max.as_secs()
        )));
    }
    Ok(())
}

/// Settings of [`ScheduledRemovals`].
#[derive(Debug, Clone)]
pub struct ScheduledRemovalConfig {
    /// Time between looks for due removals (also how late one may run).
    pub poll: Duration,
    /// Time between attempts of a standby to take the lead.
    pub standby_poll: Duration,
    /// Most removals carried out per round.
    pub batch_limit: i64,
}

impl Default for ScheduledRemovalConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(15),
            standby_poll: Duration::from_secs(5),
            batch_limit: 100,
        }
    }
}

/// The leader-elected task that carries out scheduled removals when they come due.
pub struct ScheduledRemovals {
    pool: PgPool,
    tokens: TokenService,
    config: ScheduledRemovalConfig,
}

impl ScheduledRemovals {
    pub fn new(pool: PgPool, tokens: TokenService, config: ScheduledRemovalConfig) -> Self {
        Self {
            pool,
            tokens,
            config,
        }
    }

    /// Runs until `shutdown`: stands by until this process leads, then polls.
    pub async fn run(self, shutdown: CancellationToken) {
        let role = LeaderRole::new(
            SCHEDULED_REMOVALS_LOCK,
            self.config.standby_poll,
            self.config.standby_poll,
        );
        run_as_leader(&self.pool, &role, &self, &shutdown).await;
    }

    /// Carries out every removal the read model shows as due; returns how many were done.
    pub async fn tick(&self) -> Result<usize, sqlx::Error> {
        let due: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT installation_id FROM rm_installations
              WHERE removal_effective_at <= now()
              ORDER BY removal_effective_at
              LIMIT $1",
        )
        .bind(self.config.batch_limit)
        .fetch_all(&self.pool)
        .await?;
        let mut done = 0;
        for raw in due {
            let id = InstallationId::from_uuid(raw);
            let (action, outcome) = match self.tokens.carry_out_scheduled_removal(&id).await {
                Ok(RemovalRun::Done(action)) => {
                    done += 1;
                    tracing::info!(installation_id = %id, %action, "scheduled removal carried out");
                    (action.as_str(), "done")
                }
                // The read model lags the aggregate: already done, cancelled or not yet due.
                Ok(RemovalRun::NothingPending | RemovalRun::NotDue(_)) => continue,
                // The domain refuses the removal (e.g. nothing left to revoke): the goal holds.
                Err(CoreError::Installation(error)) => {
                    tracing::info!(installation_id = %id, %error, "scheduled removal skipped");
                    ("unknown", "skipped")
                }
                Err(error) => {
                    // HubSpot or the store failed: the removal stays pending and is tried again.
                    tracing::warn!(installation_id = %id, %error, "scheduled removal failed; retrying next round");
                    ("unknown", "failed")
                }
            };
            metrics::counter!("hk_scheduled_removals_total", "action" => action, "outcome" => outcome)
                .increment(1);
        }
        Ok(done)
    }
}

impl LeaderWork for ScheduledRemovals {
    type Error = sqlx::Error;

    async fn lead(
        &self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        while !shutdown.is_cancelled() {
            // Work runs on the pool: confirm first that this process still leads.
            leadership.confirm().await?;
            if let Err(error) = self.tick().await {
                tracing::warn!(%error, "scheduled removals round failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_is_bounded_by_the_configured_minimum_and_thirty_days() {
        let min = Duration::from_secs(60);
        assert!(check_notice(Duration::from_secs(59), min).is_err());
        assert!(check_notice(Duration::from_secs(60), min).is_ok());
        assert!(check_notice(Duration::from_secs(30 * 86_400), min).is_ok());
        assert!(check_notice(Duration::from_secs(30 * 86_400 + 1), min).is_err());
    }
}
