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
//! The queue mechanics (pulling, NAK delays, dead letters after the last delivery, finishing the
//! batch in flight on shutdown) are `hubkeeper_bus::consume`'s, in its batch form: the loop
//! hands over whatever the subscription has buffered, this module orders and applies it.
//!
//! Lag, reported as `hk_projector_lag_events` and `hk_projector_lag_seconds`, is measured against
//! `HK_EVENTS`: messages not yet delivered or not yet acknowledged, and the age (since it was
//! recorded in the store) of the oldest unacknowledged one. The relay's own lag
//! (`hk_relay_lag_*`) adds to it for the end-to-end delay from commit to read model.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use hubkeeper_bus::consume::{
    consume_batches, Backoff, BatchHandler, BoxError, ConsumerSpec, Delivery, Outcome,
};
use hubkeeper_bus::{dead_letter, RelayedEvent, EVENTS_STREAM};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::apply::{apply_events, ApplyReport, Outcome as ApplyOutcome};
use crate::counts::{recount_all, recount_apps};
use crate::event::ProjectedEvent;
use crate::tables::Tables;

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

/// One projector worker process.
pub struct Projector {
    pool: PgPool,
    js: jetstream::Context,
    config: ProjectorConfig,
    tables: Tables,
}

struct Item {
    /// Index of its delivery in the batch.
    index: usize,
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

    /// Where the workers consume from and how they retry. Batches are applied one at a time per
    /// process (concurrency 1): each batch is sorted and applied in one transaction, and what
    /// the next one may apply depends on what this one committed.
    pub fn consumer_spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            stream: EVENTS_STREAM.into(),
            durable_name: PROJECTOR_CONSUMER.into(),
            description: "Projector workers (shared): events -> Postgres read models".into(),
            filter_subject: None,
            dead_letter_kind: dead_letter::kind::PROJECTOR,
            ack_wait: self.config.ack_wait,
            max_deliver: self.config.max_deliver,
            backoff: Backoff(self.config.backoff.clone()),
            concurrency: 1,
            batch_size: self.config.batch_size,
            max_ack_pending: (self.config.batch_size as i64 * 8).max(1024),
            errors_counter: "hk_projector_errors_total",
            // A redelivered event is a duplicate by its sequence: not worth a round trip.
            confirm_acks: false,
        }
    }

    /// Consumes until `shutdown` (the batch in flight is committed and acknowledged first),
    /// reporting the lag alongside.
    pub async fn run(self, shutdown: CancellationToken) {
        let spec = self.consumer_spec();
        let js = self.js.clone();
        let lag = tokio::spawn(report_lag(
            js.clone(),
            self.config.lag_interval,
            shutdown.clone(),
        ));
        consume_batches(&js, &spec, self, &shutdown).await;
        let _ = lag.await;
        tracing::info!("projector stopped");
    }

    /// Applies one batch; returns each delivery's outcome, in the order given.
    async fn process(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        let started = Instant::now();
        let size = deliveries.len();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; size];
        let mut items = Vec::with_capacity(size);
        for (index, delivery) in deliveries.iter().enumerate() {
            let decoded = serde_json::from_slice::<RelayedEvent>(delivery.payload())
                .ok()
                .and_then(ProjectedEvent::from_relayed);
            match decoded {
                Some(event) => items.push(Item { index, event }),
                None => {
                    outcomes[index] = Some(Outcome::dead_letter("not a relayed event envelope"))
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
                    outcomes[item.index] =
                        Some(self.judge(item, &deliveries[item.index], Ok(report.outcome)));
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
                    let outcome =
                        result.map(|r| r.first().map_or(ApplyOutcome::Skipped, |r| r.outcome));
                    outcomes[item.index] = Some(self.judge(item, &deliveries[item.index], outcome));
                }
            }
        }
        metrics::histogram!("hk_projector_batch_seconds").record(started.elapsed().as_secs_f64());
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retry("not applied")))
            .collect()
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

    /// What an apply result means for the event's message.
    fn judge(
        &self,
        item: &Item,
        delivery: &Delivery,
        applied: Result<ApplyOutcome, sqlx::Error>,
    ) -> Outcome {
        let label = match &applied {
            Ok(ApplyOutcome::Applied) => "applied",
            Ok(ApplyOutcome::Duplicate) => "duplicate",
            Ok(ApplyOutcome::Skipped) => "skipped",
            Ok(ApplyOutcome::Gap { .. }) => "gap",
            Err(_) => "error",
        };
        metrics::counter!("hk_projector_events_total", "outcome" => label).increment(1);
        let delivered = delivery.delivered();
        match applied {
            Ok(ApplyOutcome::Applied | ApplyOutcome::Duplicate | ApplyOutcome::Skipped) => {
                Outcome::Ack
            }
            Ok(ApplyOutcome::Gap { last_sequence }) => {
                let delay = (self.config.gap_delay * delivered.clamp(1, 100) as u32)
                    .min(Duration::from_secs(5));
                Outcome::retry_after(
                    delay,
                    format!(
                        "sequence {} never became applicable: the aggregate's last applied \
                         sequence is {last_sequence} (replay the projections to repair)",
                        item.event.sequence
                    ),
                )
            }
            Err(error) => {
                if !delivery.is_last() {
                    tracing::warn!(
                        %error,
                        event_type = %item.event.event_type,
                        aggregate_id = %item.event.aggregate_id,
                        sequence = item.event.sequence,
                        delivered,
                        "projecting an event failed; will retry"
                    );
                }
                Outcome::retry(format!("apply failed: {error}"))
            }
        }
    }
}

impl BatchHandler for Projector {
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        self.process(deliveries).await
    }

    /// Counts left stale by a crash between commit and recount are fixed here.
    async fn prepare(&self) -> Result<(), BoxError> {
        let mut conn = self.pool.acquire().await?;
        recount_all(&mut conn, &self.tables.apps, &self.tables.installations).await?;
        Ok(())
    }
}

/// Refreshes the lag gauges every `interval` until `shutdown`.
async fn report_lag(js: jetstream::Context, interval: Duration, shutdown: CancellationToken) {
    loop {
        if let Ok(stream) = js.get_stream(EVENTS_STREAM).await {
            report_lag_once(&stream).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn report_lag_once(stream: &jetstream::stream::Stream) {
    let Ok(info) = stream.consumer_info(PROJECTOR_CONSUMER).await else {
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
