//! The relay (transactional outbox): tails the event store in global order and publishes every
//! event to JetStream.
//!
//! Guarantees, and how:
//! - Nothing is skipped: the store is read with the xmin-bounded cursor (see
//!   `hubkeeper_store::log`), and the cursor is saved only after JetStream acknowledged every
//!   event up to it. It is saved at most once per [`RelayConfig::cursor_save_interval`] while
//!   events keep coming, and once caught up: a durable commit per batch sat in the relay's path
//!   between two reads. A relay that dies republishes what it sent since its last save.
//! - Nothing is duplicated inside JetStream's duplicate window: each message carries
//!   `Nats-Msg-Id = <type>:<id>:<sequence>`, so what a crashed relay published but did not record
//!   is dropped when its successor republishes it.
//! - Per-aggregate order holds in the stream: publishes are pipelined, but never two of the same
//!   aggregate at once (the second waits for the first's ack), so a NATS failure in the middle of
//!   a batch cannot persist event n+1 without event n.
//! - One active relay ([`crate::leadership`]): leadership is a Postgres advisory lock held by
//!   the session the relay reads and saves its cursor on, which Postgres releases the moment that
//!   session or process dies; standbys retry every second.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use hubkeeper_store::{
    follow, read_after, FollowConfig, Follower, GlobalCursor, LazyCursor, Step, StoredEvent,
};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::envelope::{event_subject, message_id, RelayedEvent};
use crate::leadership::{run_as_leader, LeaderRole, LeaderWork, Leadership};
use crate::registry::{RELAY_CURSOR, RELAY_LOCK};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Cursor row in `stream_cursors`.
    pub cursor_name: String,
    /// Events read and published per round trip.
    pub batch_size: i64,
    /// Longest sleep between reads when no NOTIFY arrives (covers transactions that end without
    /// writing events, which release the xmin horizon silently).
    pub idle_wait: Duration,
    /// How often a standby tries to take over.
    pub standby_poll: Duration,
    /// Pause after an error (Postgres or NATS down) before trying again.
    pub error_backoff: Duration,
    /// How often the lag gauges are refreshed.
    pub lag_interval: Duration,
    /// Shortest time between two cursor saves while events keep coming (a caught-up relay saves
    /// at its next read after this). What a successor republishes after a crash is at most this
    /// much plus one batch, and JetStream drops it as duplicates: this must stay well inside the
    /// events stream's duplicate window.
    pub cursor_save_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            cursor_name: RELAY_CURSOR.into(),
            batch_size: 1000,
            idle_wait: Duration::from_millis(200),
            standby_poll: Duration::from_secs(1),
            error_backoff: Duration::from_millis(500),
            lag_interval: Duration::from_secs(2),
            cursor_save_interval: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("publish to JetStream failed: {0}")]
    Publish(String),
    #[error("cannot encode event {0}")]
    Encode(String),
}

/// What one relay step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayOutcome {
    /// Events were published and the cursor advanced past them (saved when due).
    Published { events: usize, duplicates: usize },
    /// Nothing committed after the cursor (or held back by an open transaction).
    Idle,
}

pub struct EventRelay {
    pool: PgPool,
    js: jetstream::Context,
    config: RelayConfig,
    /// Saved at most every [`RelayConfig::cursor_save_interval`].
    cursor: LazyCursor,
}

impl EventRelay {
    pub fn new(pool: PgPool, js: jetstream::Context, config: RelayConfig) -> Self {
        let cursor = LazyCursor::new(config.cursor_name.clone(), config.cursor_save_interval);
        Self {
            pool,
            js,
            config,
            cursor,
        }
    }

    /// Runs until `shutdown`: stands by until this process leads, relays, and starts over from
    /// the saved cursor after any error.
    pub async fn run(self, shutdown: CancellationToken) {
        let role = LeaderRole::new(
            RELAY_LOCK,
            self.config.standby_poll,
            self.config.error_backoff,
        );
        run_as_leader(&self.pool, &role, &self, &shutdown).await;
    }
    /// Publishes the next batch after `cursor` and advances it. Public so tests and the bench can
    /// drive the relay one step at a time.
    #[tracing::instrument(skip_all, fields(after_tx = cursor.tx, after_position = cursor.position))]
    pub async fn step(
        &self,
        conn: &mut PgConnection,
        cursor: &mut GlobalCursor,
    ) -> Result<RelayOutcome, RelayError> {
        let started = Instant::now();
        let batch = read_after(&mut *conn, *cursor, self.config.batch_size).await?;
        let Some(last) = batch.last().map(StoredEvent::cursor) else {
            // Caught up: what was published and not saved yet is saved now, or at the next
            // read (a NOTIFY or the idle wait) once the interval has passed.
            self.cursor.save_when_due(conn, *cursor, false).await?;
            return Ok(RelayOutcome::Idle);
        };
        let duplicates = self.publish_in_order(&batch).await?;
        *cursor = last;
        self.cursor.save_when_due(conn, last, false).await?;
        metrics::counter!("hk_relay_published_total").increment(batch.len() as u64);
        metrics::counter!("hk_relay_duplicates_total").increment(duplicates as u64);
        metrics::histogram!("hk_relay_batch_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(events = batch.len(), duplicates, "relayed a batch");
        Ok(RelayOutcome::Published {
            events: batch.len(),
            duplicates,
        })
    }

    /// Pipelines the publishes, flushing whenever an aggregate already has one in flight.
    async fn publish_in_order(&self, batch: &[StoredEvent]) -> Result<usize, RelayError> {
        let mut in_flight: Vec<PublishAckFuture> = Vec::with_capacity(batch.len());
        let mut aggregates_in_flight: HashSet<(&str, &str)> = HashSet::new();
        let mut duplicates = 0;
        for event in batch {
            let key = (event.aggregate_type.as_str(), event.aggregate_id.as_str());
            if aggregates_in_flight.contains(&key) {
                duplicates += await_acks(&mut in_flight).await?;
                aggregates_in_flight.clear();
            }
            let subject = event_subject(&event.aggregate_type, &event.aggregate_id);
            let id = message_id(&event.aggregate_type, &event.aggregate_id, event.sequence);
            let body = serde_json::to_vec(&RelayedEvent::from(event.clone()))
                .map_err(|_| RelayError::Encode(id.clone()))?;
            let message = PublishMessage::build()
                .payload(Bytes::from(body))
                .message_id(&id)
                .header("Hk-Event-Type", event.event_type.as_str())
                .header(
                    "Hk-Global-Position",
                    event.global_position.to_string().as_str(),
                );
            let ack = self
                .js
                .send_publish(subject, message)
                .await
                .map_err(|e| RelayError::Publish(e.to_string()))?;
            in_flight.push(ack);
            aggregates_in_flight.insert(key);
        }
        duplicates += await_acks(&mut in_flight).await?;
        Ok(duplicates)
    }
}

impl LeaderWork for EventRelay {
    type Error = RelayError;

    /// Relays on the leader's own session (reads and cursor saves fail, and the relay steps
    /// down, the moment that session dies).
    async fn lead(
        &self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let follow_config = FollowConfig {
            idle_wait: self.config.idle_wait,
            housekeeping_interval: self.config.lag_interval,
            lag_events_gauge: "hk_relay_lag_events",
            lag_seconds_gauge: "hk_relay_lag_seconds",
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

impl Follower for EventRelay {
    type Error = RelayError;

    async fn read_next(
        &self,
        conn: &mut PgConnection,
        cursor: &mut GlobalCursor,
    ) -> Result<Step, RelayError> {
        let read = match self.step(conn, cursor).await? {
            RelayOutcome::Published { events, .. } => events,
            RelayOutcome::Idle => 0,
        };
        Ok(Step::after_read(read, self.config.batch_size))
    }

    /// Shutting down: leave nothing for a successor to republish.
    async fn stopped(
        &self,
        conn: &mut PgConnection,
        cursor: GlobalCursor,
    ) -> Result<(), RelayError> {
        Ok(self.cursor.save_when_due(conn, cursor, true).await?)
    }
}

async fn await_acks(in_flight: &mut Vec<PublishAckFuture>) -> Result<usize, RelayError> {
    let mut duplicates = 0;
    for ack in in_flight.drain(..) {
        let ack = ack.await.map_err(|e| RelayError::Publish(e.to_string()))?;
        if ack.duplicate {
            duplicates += 1;
        }
    }
    Ok(duplicates)
}
