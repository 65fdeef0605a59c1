//! The refresh scheduler: one active process (advisory-lock leader), any number standing by.
//!
//! Every tick it finds installations whose access token expires within the lead time (and, less
//! often, installations idle for long) in the `rm_installations` read model and enqueues a
//! [`RefreshCommand`] for each into the `HK_REFRESH` work queue. The message id names the token
//! generation, so ticks that see the same installation again before its refresh lands enqueue
//! nothing new; the refresher re-checks the token itself, so a stale read model costs at most a
//! no-op message. A command this process enqueued within half the stream's duplicate window is
//! not even sent again (JetStream would drop it): while a backlog of due installations is worked
//! off, every tick would otherwise re-publish all of them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use hubkeeper_bus::registry::SCHEDULER_LOCK;
use hubkeeper_bus::REFRESH_STREAM;
use hubkeeper_bus::{run_as_leader, LeaderRole, LeaderWork, Leadership};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{RefreshCommand, RefreshReason};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Refresh tokens expiring within this much time.
    pub lead_time: Duration,
    /// How often to look.
    pub tick: Duration,
    /// Refresh an installation not refreshed (or connected) for this long, even if its token
    /// looks fine, so a grant that died quietly is noticed.
    pub idle_after: Duration,
    /// Most commands enqueued per tick (the rest next tick).
    pub batch_limit: i64,
    /// How often a standby checks whether it can take over.
    pub standby_poll: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lead_time: Duration::from_secs(600),
            tick: Duration::from_secs(5),
            idle_after: Duration::from_secs(7 * 24 * 3600),
            batch_limit: 5_000,
            standby_poll: Duration::from_secs(1),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickOutcome {
    pub enqueued: usize,
    /// Commands JetStream already held (dropped as duplicates), or that this process enqueued
    /// so recently that JetStream would have dropped them (not sent again).
    pub already_queued: usize,
}

pub struct RefreshScheduler {
    pool: PgPool,
    js: jetstream::Context,
    config: SchedulerConfig,
    /// When this process last had each command's message id acknowledged.
    enqueued: Mutex<HashMap<String, Instant>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("read model query failed: {0}")]
    Store(#[from] sqlx::Error),
    #[error("enqueue failed: {0}")]
    Publish(String),
    #[error("lost the leader's database session: {0}")]
    LostLeadership(sqlx::Error),
}

impl RefreshScheduler {
    pub fn new(pool: PgPool, js: jetstream::Context, config: SchedulerConfig) -> Self {
        Self {
            pool,
            js,
            config,
            enqueued: Mutex::new(HashMap::new()),
        }
    }

    /// How long after an acknowledged publish the same message id is certain to be dropped as a
    /// duplicate, with a margin: half the refresh stream's duplicate window, read from the
    /// stream itself on every tick (so a changed window is followed). `None` when the stream
    /// cannot be asked: then everything due is published, as JetStream decides anyway.
    async fn surely_duplicate_within(&self) -> Option<Duration> {
        // `get_stream` reads the stream's info already: one request.
        let stream = self.js.get_stream(REFRESH_STREAM).await.ok()?;
        Some(stream.cached_info().config.duplicate_window / 2)
    }

    fn recently_enqueued(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Entries are whole inserts and removals: a panic elsewhere leaves nothing half-written.
        self.enqueued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs until `shutdown`: stands by until this process leads, then ticks.
    pub async fn run(self, shutdown: CancellationToken) {
        let role = LeaderRole::new(
            SCHEDULER_LOCK,
            self.config.standby_poll,
            self.config.standby_poll,
        );
        run_as_leader(&self.pool, &role, &self, &shutdown).await;
    }

    /// Enqueues what is due now. Public so tests and benches can drive single ticks.
    #[tracing::instrument(skip_all)]
    pub async fn tick(&self) -> Result<TickOutcome, SchedulerError> {
        let lead = chrono::Duration::from_std(self.config.lead_time)
            .unwrap_or_else(|_| chrono::Duration::minutes(10));
        let idle = chrono::Duration::from_std(self.config.idle_after)
            .unwrap_or_else(|_| chrono::Duration::days(7));
        let due: Vec<(uuid::Uuid, i64, bool, Option<i64>)> = sqlx::query_as(
            "SELECT i.installation_id, i.generation, i.access_expires_at >= now() + $1 AS idle,
                    a.last_sequence
               FROM rm_installations i
               LEFT JOIN rm_apps a ON a.app_id = i.app_id
              WHERE i.status = 'connected'
                -- Refreshes of an app whose credentials HubSpot refused are parked.
                AND a.refreshes_parked_at IS NULL
                AND (i.access_expires_at < now() + $1
                     OR COALESCE(i.last_refreshed_at, i.last_connected_at) < now() - $2)
              ORDER BY i.access_expires_at
              LIMIT $3",
        )
        .bind(lead)
        .bind(idle)
        .bind(self.config.batch_limit)
        .fetch_all(&self.pool)
        .await?;

        let skip_within = self.surely_duplicate_within().await;
        let mut outcome = TickOutcome::default();
        match skip_within {
            Some(within) => self
                .recently_enqueued()
                .retain(|_, at| at.elapsed() < within),
            None => self.recently_enqueued().clear(),
        }
        let mut acks = Vec::with_capacity(due.len());
        for (installation_id, generation, idle, app_sequence) in due {
            let command = RefreshCommand {
                version: RefreshCommand::VERSION,
                installation_id: installation_id.to_string(),
                generation,
                reason: if idle {
                    RefreshReason::Idle
                } else {
                    RefreshReason::Expiring
                },
                app_sequence,
            };
            let message_id = command.message_id();
            if self.recently_enqueued().contains_key(&message_id) {
                outcome.already_queued += 1;
                continue;
            }
            let body =
                serde_json::to_vec(&command).map_err(|e| SchedulerError::Publish(e.to_string()))?;
            let ack = self
                .js
                .send_publish(
                    command.subject(),
                    PublishMessage::build()
                        .payload(Bytes::from(body))
                        .message_id(message_id.as_str()),
                )
                .await
                .map_err(|e| SchedulerError::Publish(e.to_string()))?;
            acks.push((message_id, ack));
        }
        for (message_id, ack) in acks {
            let ack = ack
                .await
                .map_err(|e| SchedulerError::Publish(e.to_string()))?;
            if ack.duplicate {
                outcome.already_queued += 1;
            } else {
                outcome.enqueued += 1;
            }
            if skip_within.is_some() {
                // Only what JetStream acknowledged: a failed publish is tried again next tick.
                self.recently_enqueued().insert(message_id, Instant::now());
            }
        }
        metrics::counter!("hk_scheduler_enqueued_total").increment(outcome.enqueued as u64);
        // Parked apps need an operator (rotate the secret or resume): the alert watches this.
        let parked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM rm_apps
              WHERE refreshes_parked_at IS NOT NULL AND deleted_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!("hk_apps_refreshes_parked").set(parked as f64);
        Ok(outcome)
    }
}

impl LeaderWork for RefreshScheduler {
    type Error = SchedulerError;

    async fn lead(
        &self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), SchedulerError> {
        while !shutdown.is_cancelled() {
            // Ticks run on the pool: confirm first that this process still leads.
            leadership
                .confirm()
                .await
                .map_err(SchedulerError::LostLeadership)?;
            match self.tick().await {
                Ok(outcome) if outcome.enqueued > 0 => {
                    tracing::info!(enqueued = outcome.enqueued, "refreshes enqueued")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "scheduler tick failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.config.tick) => {}
            }
        }
        Ok(())
    }
}
