//! Refresher workers: any number of processes share one durable pull consumer on the
//! `HK_REFRESH` work queue and run each command through the token service's single-flight path.
//!
//! The queue mechanics (concurrency, retries with backoff in JetStream, dead letters on
//! `hk.dlq.refresh` after the last delivery, draining on shutdown) are `hubkeeper_bus::consume`'s;
//! this module decides what each refresh result means for its command.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use hubkeeper_bus::consume::{consume, Backoff, ConsumerSpec, Delivery, Handler, Outcome};
use hubkeeper_bus::dead_letter;
use tokio_util::sync::CancellationToken;

use crate::{RefreshCommand, RefreshExecutor, RefreshMode, RefreshReason, RefreshResult};

pub const REFRESHER_CONSUMER: &str = "refresher";

#[derive(Debug, Clone)]
pub struct RefresherConfig {
    /// Refresh when the token expires within this margin (should match the scheduler's lead).
    pub lead_time: Duration,
    /// Deliveries before a command is dead-lettered.
    pub max_deliver: i64,
    /// Delay before each redelivery after a transient failure (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// Redelivery of a command whose worker died without answering.
    pub ack_wait: Duration,
    /// Refreshes in flight per process.
    pub concurrency: usize,
}

impl Default for RefresherConfig {
    fn default() -> Self {
        Self {
            lead_time: Duration::from_secs(600),
            max_deliver: 6,
            backoff: vec![
                Duration::from_secs(2),
                Duration::from_secs(10),
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(120),
            ],
            ack_wait: Duration::from_secs(60),
            concurrency: 32,
        }
    }
}

pub struct RefreshWorker {
    js: jetstream::Context,
    executor: Arc<dyn RefreshExecutor>,
    config: RefresherConfig,
}

impl RefreshWorker {
    pub fn new(
        js: jetstream::Context,
        executor: Arc<dyn RefreshExecutor>,
        config: RefresherConfig,
    ) -> Self {
        Self {
            js,
            executor,
            config,
        }
    }

    /// Where the workers consume from and how they retry.
    pub fn consumer_spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            stream: hubkeeper_bus::REFRESH_STREAM.into(),
            durable_name: REFRESHER_CONSUMER.into(),
            description: "Refresher workers (shared)".into(),
            filter_subject: Some(format!("{}.>", hubkeeper_bus::REFRESH_SUBJECT_PREFIX)),
            dead_letter_kind: dead_letter::kind::REFRESH,
            ack_wait: self.config.ack_wait,
            max_deliver: self.config.max_deliver,
            backoff: Backoff(self.config.backoff.clone()),
            concurrency: self.config.concurrency,
            batch_size: 1,
            max_ack_pending: (self.config.concurrency as i64 * 8).max(64),
            errors_counter: "hk_refresher_errors_total",
            // A refresh is worth a round trip not to repeat after a crash.
            confirm_acks: true,
        }
    }

    /// Consumes until shutdown; in-flight refreshes finish (their results are recorded before
    /// they are acknowledged).
    pub async fn run(self, shutdown: CancellationToken) {
        let spec = self.consumer_spec();
        let js = self.js.clone();
        consume(
            &js,
            &spec,
            RefreshHandler {
                executor: self.executor,
                lead_time: self.config.lead_time,
            },
            &shutdown,
        )
        .await;
    }
}

/// The wait before a transient failure is redelivered: HubSpot's `Retry-After` when it gave one
/// (with a 429 or a 5xx alike; never less), else the worker's backoff for this delivery, plus up to a fifth of it at random
/// (`unit` in `0.0..1.0`), so the refreshes that failed together do not all come back together.
fn redelivery_delay(
    retry_after: Option<Duration>,
    backoff: Option<Duration>,
    unit: f64,
) -> Option<Duration> {
    let base = retry_after.or(backoff)?;
    Some(base + base.mul_f64(unit.clamp(0.0, 1.0) / 5.0))
}

/// What one queued command means for the token service, and its result for the queue.
struct RefreshHandler {
    executor: Arc<dyn RefreshExecutor>,
    lead_time: Duration,
}

impl Handler for RefreshHandler {
    #[tracing::instrument(skip_all, fields(installation_id, delivered = delivery.delivered()))]
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let command: RefreshCommand = match serde_json::from_slice(delivery.payload()) {
            Ok(c) => c,
            Err(e) => return Outcome::dead_letter(format!("undecodable refresh command: {e}")),
        };
        tracing::Span::current().record("installation_id", command.installation_id.as_str());
        let mode = match command.reason {
            RefreshReason::Expiring => RefreshMode::IfExpiringWithin(self.lead_time),
            RefreshReason::Idle => RefreshMode::Force,
        };
        let result = self.executor.refresh(&command.installation_id, mode).await;
        let label = match &result {
            RefreshResult::Refreshed => "refreshed",
            RefreshResult::StillFresh => "still_fresh",
            RefreshResult::NotRefreshable(_) => "not_refreshable",
            RefreshResult::ReauthRequired => "reauth_required",
            RefreshResult::Transient { .. } => "transient",
        };
        metrics::counter!("hk_refresher_results_total", "result" => label).increment(1);
        match result {
            RefreshResult::Transient {
                reason,
                retry_after,
            } => {
                let delay =
                    redelivery_delay(retry_after, delivery.backoff_delay(), rand::random::<f64>());
                if !delivery.is_last() {
                    tracing::info!(%reason, ?delay, ?retry_after, "refresh failed transiently; will retry");
                }
                match delay {
                    Some(delay) => Outcome::retry_after(delay, reason),
                    None => Outcome::retry(reason),
                }
            }
            // Recorded by the token service (or nothing to do): the command is done.
            RefreshResult::Refreshed
            | RefreshResult::StillFresh
            | RefreshResult::NotRefreshable(_)
            | RefreshResult::ReauthRequired => Outcome::Ack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_and_every_delay_is_jittered_upwards() {
        let s = Duration::from_secs;
        assert_eq!(redelivery_delay(Some(s(30)), Some(s(2)), 0.0), Some(s(30)));
        assert_eq!(redelivery_delay(Some(s(30)), Some(s(2)), 1.0), Some(s(36)));
        assert_eq!(redelivery_delay(None, Some(s(10)), 0.5), Some(s(11)));
        assert_eq!(redelivery_delay(None, None, 0.5), None);
        let jittered = redelivery_delay(None, Some(s(10)), 0.25).expect("delay");
        assert!(jittered > s(10) && jittered < s(12));
    }
}
