//! The projector workers: any number of processes share one durable pull consumer on
//! `HK_EVENTS` (JetStream hands each message to one of them) and apply what they receive to the
//! live read models.
//!
//! A worker takes what its subscription has buffered (up to `batch_size` messages), sorts it by
//! (aggregate, sequence) and applies it in one Postgres transaction, then acknowledges:
//! - applied, duplicate and skipped events are acked;
//! - a gap (an earlier event of the aggregate is still being applied by another worker, or was
//!   NAKed) is NAKed with a short, growing delay;
//! - if the transaction fails as a whole (e.g. a deadlock with another worker's batch, or a bad
//!   event), each message is retried in a transaction of its own, so one bad event cannot hold
//!   back the rest; a message still failing is NAKed with backoff and, at its last delivery,
//!   copied to the dead-letter stream (`hk.dlq.projector`) and terminated.
//!
//! Sorting gives every batch the same lock order (app rows before installation rows, each by id),
//! so concurrent batches wait for each other instead of deadlocking.
//!
//! Lag, reported as `hk_projector_lag_events` and `hk_projector_lag_seconds`, is measured against
//! `HK_EVENTS`: messages not yet delivered or not yet acknowledged, and the age (since it was
//! recorded in the store) of the oldest unacknowledged one. The relay's own lag
//! (`hk_relay_lag_*`) adds to it for the end-to-end delay from commit to read model.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::PublishMessage, AckKind};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use hubkeeper_bus::{RelayedEvent, DLQ_SUBJECT_PREFIX, EVENTS_STREAM};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::apply::{apply_events, ApplyReport, Outcome};
use crate::counts::{recount_all, recount_apps};
use crate::event::ProjectedEvent;
use crate::tables::Tables;
use crate::ProjectionError;

/// The durable consumer all projector processes share.
pub const PROJECTOR_CONSUMER: &str = "projector";

#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    /// Redelivery of messages whose worker died without answering.
    pub ack_wait: Duration,
    /// Deliveries before a failing event is dead-lettered.
    pub max_deliver: i64,
    /// First delay before retrying an event that arrived before its predecessor (grows with
    /// each delivery, up to 5 s).
    pub gap_delay: Duration,
    /// Delays before retrying an event whose apply failed (the last one repeats).
    pub backoff: Vec<Duration>,
    /// How often the lag gauges are refreshed.
    pub lag_interval: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            batch_size: 256,
            ack_wait: Duration::from_secs(30),
            max_deliver: 60,
            gap_delay: Duration::from_millis(50),
            backoff: vec![
                Duration::from_millis(500),
                Duration::from_secs(2),
                Duration::from_secs(10),
                Duration::from_secs(30),
            ],
            lag_interval: Duration::from_secs(2),
        }
    }
}

/// One projector worker process's loop.
pub struct Projector {
    pool: PgPool,
    js: jetstream::Context,
    config: ProjectorConfig,
    tables: Tables,
}

struct Item {
    message: jetstream::Message,
    event: ProjectedEvent,
}

impl Projector {
    pub fn new(pool: PgPool, js: jetstream::Context, config: ProjectorConfig) -> Self {
        Self {
            pool,
            js,
            config,
            tables: Tables::live(),
        }
    }

    pub fn consumer_config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(PROJECTOR_CONSUMER.into()),
            description: Some("Projector workers (shared): events -> Postgres read models".into()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            // Spare deliveries: a worker dying during the last one still leaves one to
            // dead-letter the message instead of stranding it.
            max_deliver: self.config.max_deliver + 2,
            max_ack_pending: (self.config.batch_size as i64 * 8).max(1024),
            ..Default::default()
        }
    }

    /// Consumes until `shutdown`, resubscribing after errors (NATS restart, stream missing).
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(error) = self.consume(&shutdown).await {
                metrics::counter!("hk_projector_errors_total").increment(1);
                tracing::warn!(%error, "projector interrupted; resubscribing");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        tracing::info!("projector stopped");
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), ProjectionError> {
        let stream = self
            .js
            .get_stream(EVENTS_STREAM)
            .await
            .map_err(|e| ProjectionError::Bus(e.to_string()))?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(PROJECTOR_CONSUMER, self.consumer_config())
            .await
            .map_err(|e| ProjectionError::Bus(e.to_string()))?;
        // Counts left stale by a crash between commit and recount are fixed here.
        let mut conn = self.pool.acquire().await?;
        recount_all(&mut conn, &self.tables.apps, &self.tables.installations).await?;
        drop(conn);
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch_size)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| ProjectionError::Bus(e.to_string()))?;
        tracing::info!("projector consuming {EVENTS_STREAM}");
        let mut lag_due = Instant::now();
        loop {
            if Instant::now() >= lag_due {
                self.report_lag(&stream, &consumer).await;
                lag_due = Instant::now() + self.config.lag_interval;
            }
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.config.lag_interval) => continue,
                next = messages.next() => next,
            };
            let mut batch = vec![next_message(first)?];
            while batch.len() < self.config.batch_size {
                match messages.next().now_or_never() {
                    Some(next) => batch.push(next_message(next)?),
                    None => break,
                }
            }
            self.process(batch).await;
        }
    }

    /// Applies one batch and acknowledges each message according to its outcome.
    pub async fn process(&self, batch: Vec<jetstream::Message>) {
        let started = Instant::now();
        let size = batch.len();
        let mut items = Vec::with_capacity(size);
        for message in batch {
            let decoded = serde_json::from_slice::<RelayedEvent>(&message.payload)
                .ok()
                .and_then(ProjectedEvent::from_relayed);
            match decoded {
                Some(event) => items.push(Item { message, event }),
                None => {
                    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                    self.dead_letter(&message, "not a relayed event envelope", delivered)
                        .await;
                }
            }
        }
        items.sort_by(|a, b| {
            (
                &a.event.aggregate_type,
                &a.event.aggregate_id,
                a.event.sequence,
            )
                .cmp(&(
                    &b.event.aggregate_type,
                    &b.event.aggregate_id,
                    b.event.sequence,
                ))
        });
        match self.apply_batch(&items).await {
            Ok(reports) => {
                self.recount(&reports).await;
                for (item, report) in items.iter().zip(&reports) {
                    self.settle(item, Ok(report.outcome)).await;
                }
            }
            Err(error) => {
                metrics::counter!("hk_projector_batch_fallbacks_total").increment(1);
                tracing::debug!(%error, size, "batch failed; applying its events one by one");
                for item in &items {
                    let result = self.apply_batch(std::slice::from_ref(item)).await;
                    if let Ok(reports) = &result {
                        self.recount(reports).await;
                    }
                    let outcome = result.map(|r| r.first().map_or(Outcome::Skipped, |r| r.outcome));
                    self.settle(item, outcome).await;
                }
            }
        }
        metrics::histogram!("hk_projector_batch_seconds").record(started.elapsed().as_secs_f64());
    }

    async fn apply_batch(&self, items: &[Item]) -> Result<Vec<ApplyReport>, sqlx::Error> {
        let events: Vec<ProjectedEvent> = items.iter().map(|i| i.event.clone()).collect();
        let mut tx = self.pool.begin().await?;
        let reports = apply_events(&mut tx, &self.tables, &events).await?;
        tx.commit().await?;
        Ok(reports)
    }

    async fn recount(&self, reports: &[ApplyReport]) {
        let apps: BTreeSet<Uuid> = reports.iter().filter_map(|r| r.recount_app).collect();
        if apps.is_empty() {
            return;
        }
        let apps: Vec<Uuid> = apps.into_iter().collect();
        if let Err(error) = recount_apps(
            &self.pool,
            &self.tables.apps,
            &self.tables.installations,
            &apps,
        )
        .await
        {
            // The next change of these apps, or the next start, recounts them.
            tracing::warn!(%error, "recounting installation counts failed");
        }
    }

    async fn settle(&self, item: &Item, outcome: Result<Outcome, sqlx::Error>) {
        let message = &item.message;
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let label = match &outcome {
            Ok(Outcome::Applied) => "applied",
            Ok(Outcome::Duplicate) => "duplicate",
            Ok(Outcome::Skipped) => "skipped",
            Ok(Outcome::Gap { .. }) => "gap",
            Err(_) => "error",
        };
        metrics::counter!("hk_projector_events_total", "outcome" => label).increment(1);
        let result = match outcome {
            Ok(Outcome::Applied | Outcome::Duplicate | Outcome::Skipped) => message.ack().await,
            Ok(Outcome::Gap { last_sequence }) if delivered >= self.config.max_deliver => {
                let reason = format!(
                    "sequence {} never became applicable: the aggregate's last applied sequence \
                     is {last_sequence} (replay the projections to repair)",
                    item.event.sequence
                );
                self.dead_letter(message, &reason, delivered).await;
                return;
            }
            Ok(Outcome::Gap { .. }) => {
                let delay = (self.config.gap_delay * delivered.clamp(1, 100) as u32)
                    .min(Duration::from_secs(5));
                message.ack_with(AckKind::Nak(Some(delay))).await
            }
            Err(error) if delivered >= self.config.max_deliver => {
                self.dead_letter(message, &format!("apply failed: {error}"), delivered)
                    .await;
                return;
            }
            Err(error) => {
                let index = (delivered.max(1) as usize - 1)
                    .min(self.config.backoff.len().saturating_sub(1));
                let delay = self.config.backoff.get(index).copied();
                tracing::warn!(
                    %error,
                    event_type = %item.event.event_type,
                    aggregate_id = %item.event.aggregate_id,
                    sequence = item.event.sequence,
                    delivered,
                    "projecting an event failed; will retry"
                );
                message.ack_with(AckKind::Nak(delay)).await
            }
        };
        if let Err(e) = result {
            // Redelivered after ack_wait; applying again is a duplicate.
            tracing::debug!(error = %e, "acknowledgement failed");
        }
    }

    async fn dead_letter(&self, message: &jetstream::Message, reason: &str, delivered: i64) {
        let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let one_line: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        let publish = PublishMessage::build()
            .payload(Bytes::copy_from_slice(&message.payload))
            .message_id(format!("dlq:projector:{stream_seq}"))
            .header("Hk-Dlq-Reason", one_line.as_str())
            .header("Hk-Dlq-Source-Subject", message.subject.as_str())
            .header("Hk-Dlq-Deliveries", delivered.to_string().as_str());
        let stored = match self
            .js
            .send_publish(format!("{DLQ_SUBJECT_PREFIX}.projector"), publish)
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if stored {
            metrics::counter!("hk_dead_letters_total", "kind" => "projector").increment(1);
            tracing::error!(reason, delivered, "event dead-lettered by the projector");
            let _ = message.ack_with(AckKind::Term).await;
        } else {
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }

    async fn report_lag(
        &self,
        stream: &jetstream::stream::Stream,
        consumer: &consumer::PullConsumer,
    ) {
        let Ok(info) = consumer.get_info().await else {
            return;
        };
        let behind = info.num_pending + info.num_ack_pending as u64;
        metrics::gauge!("hk_projector_lag_events").set(behind as f64);
        let mut seconds = 0.0;
        if behind > 0 {
            let oldest = info.ack_floor.stream_sequence + 1;
            if let Ok(raw) = stream.get_raw_message(oldest).await {
                if let Ok(event) = serde_json::from_slice::<RelayedEvent>(&raw.payload) {
                    seconds = (chrono::Utc::now() - event.recorded_at)
                        .to_std()
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                }
            }
        }
        metrics::gauge!("hk_projector_lag_seconds").set(seconds);
    }
}

fn next_message(
    next: Option<Result<jetstream::Message, consumer::pull::MessagesError>>,
) -> Result<jetstream::Message, ProjectionError> {
    match next {
        Some(Ok(message)) => Ok(message),
        Some(Err(e)) => Err(ProjectionError::Bus(e.to_string())),
        None => Err(ProjectionError::Bus("message stream ended".into())),
    }
}
