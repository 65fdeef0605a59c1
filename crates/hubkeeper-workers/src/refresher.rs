//! Refresher workers: any number of processes share one durable pull consumer on the
//! `HK_REFRESH` work queue and run each command through the token service's single-flight path.
//!
//! Retries live in JetStream, not in memory: a transient failure is NAKed with a growing delay,
//! so a crash loses nothing (an unacknowledged message is redelivered after `ack_wait`). At the
//! last delivery a still-failing command is copied to the dead-letter stream
//! (`hk.dlq.refresh`) with the reason, where operators see it, and then acknowledged.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;
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

/// What happened to one queued command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkOutcome {
    Done(RefreshResult),
    RetryLater { delivered: i64 },
    DeadLettered { reason: String },
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

    fn consumer_config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(REFRESHER_CONSUMER.into()),
            description: Some("Refresher workers (shared)".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            // Two spare deliveries: if a worker dies while handling the last one, the command
            // comes back once more and is dead-lettered instead of stranded in the queue.
            max_deliver: self.config.max_deliver + 2,
            max_ack_pending: (self.config.concurrency as i64 * 8).max(64),
            filter_subject: format!("{}.>", hubkeeper_bus::REFRESH_SUBJECT_PREFIX),
            ..Default::default()
        }
    }

    /// Consumes until shutdown; reconnects to the consumer after errors (e.g. NATS restart).
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        while !shutdown.is_cancelled() {
            if let Err(error) = this.clone().consume(&shutdown).await {
                tracing::warn!(%error, "refresher consumer interrupted; resubscribing");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        tracing::info!("refresher stopped");
    }

    async fn consume(self: Arc<Self>, shutdown: &CancellationToken) -> Result<(), String> {
        let stream = self
            .js
            .get_stream(hubkeeper_bus::REFRESH_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(REFRESHER_CONSUMER, self.consumer_config())
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("message stream ended".into()),
            };
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                this.handle(message).await;
            });
        }
        // Let in-flight refreshes finish (their results are recorded before they are acked).
        let _ = permits.acquire_many(self.config.concurrency as u32).await;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(installation_id, delivered))]
    async fn handle(&self, message: jetstream::Message) -> WorkOutcome {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        tracing::Span::current().record("delivered", delivered);
        let command: RefreshCommand = match serde_json::from_slice(&message.payload) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("undecodable refresh command: {e}");
                return self.dead_letter(&message, &reason, delivered).await;
            }
        };
        tracing::Span::current().record("installation_id", command.installation_id.as_str());
        let mode = match command.reason {
            RefreshReason::Expiring => RefreshMode::IfExpiringWithin(self.config.lead_time),
            RefreshReason::Idle => RefreshMode::Force,
        };
        let result = self.executor.refresh(&command.installation_id, mode).await;
        let label = match &result {
            RefreshResult::Refreshed => "refreshed",
            RefreshResult::StillFresh => "still_fresh",
            RefreshResult::NotRefreshable(_) => "not_refreshable",
            RefreshResult::ReauthRequired => "reauth_required",
            RefreshResult::Transient(_) => "transient",
        };
        metrics::counter!("hk_refresher_results_total", "result" => label).increment(1);
        match result {
            RefreshResult::Transient(reason) if delivered >= self.config.max_deliver => {
                self.dead_letter(&message, &reason, delivered).await
            }
            RefreshResult::Transient(reason) => {
                let index = (delivered.max(1) as usize - 1)
                    .min(self.config.backoff.len().saturating_sub(1));
                let delay = self.config.backoff.get(index).copied();
                tracing::info!(%reason, ?delay, "refresh failed transiently; will retry");
                if let Err(e) = message.ack_with(AckKind::Nak(delay)).await {
                    tracing::warn!(error = %e, "nak failed; the message is redelivered after ack_wait");
                }
                WorkOutcome::RetryLater { delivered }
            }
            done => {
                if let Err(e) = message.double_ack().await {
                    tracing::warn!(error = %e, "ack failed; the command will run again (idempotent)");
                }
                WorkOutcome::Done(done)
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        reason: &str,
        delivered: i64,
    ) -> WorkOutcome {
        let subject = format!("{}.refresh", hubkeeper_bus::DLQ_SUBJECT_PREFIX);
        let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let publish = PublishMessage::build()
            .payload(Bytes::copy_from_slice(&message.payload))
            .message_id(format!("dlq:refresh:{stream_seq}"))
            .header("Hk-Dlq-Reason", truncate(reason, 300).as_str())
            .header("Hk-Dlq-Source-Subject", message.subject.as_str())
            .header("Hk-Dlq-Deliveries", delivered.to_string().as_str());
        let stored = match self.js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if stored {
            metrics::counter!("hk_dead_letters_total", "kind" => "refresh").increment(1);
            tracing::error!(reason, delivered, "refresh command dead-lettered");
            let _ = message.ack_with(AckKind::Term).await;
            WorkOutcome::DeadLettered {
                reason: reason.to_string(),
            }
        } else {
            // Not stored: leave it to be redelivered rather than lose it.
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
            WorkOutcome::RetryLater { delivered }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    // Header values must be one line.
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.chars().take(max).collect()
}
