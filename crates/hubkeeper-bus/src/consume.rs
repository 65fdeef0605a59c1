//! The one consume loop of every JetStream worker: pull from a durable consumer shared by any
//! number of processes, hand messages to a handler with bounded concurrency, settle each message
//! by the [`Outcome`] the handler returns, dead-letter what fails on its last delivery, and
//! drain the work in flight on shutdown.
//!
//! Retries live in JetStream, not in memory: a retry is a NAK with a delay, so a crash loses
//! nothing (an unacknowledged message is redelivered after `ack_wait`). The consumer allows two
//! deliveries more than [`ConsumerSpec::max_deliver`]: if a worker dies while handling the last
//! one, the message comes back once more and is dead-lettered instead of stranded.
//!
//! Handlers see one message at a time ([`Handler`]) or, when applying several in one
//! transaction pays off, whatever the subscription has buffered up to a batch size
//! ([`BatchHandler`]); both are settled here the same way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::dead_letter;

/// How a handler wants its message settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or nothing to do): acknowledge.
    Ack,
    /// Worth another try: NAK, redelivered after `delay` (`None`: the worker's backoff for this
    /// delivery, [`Delivery::backoff_delay`]). On the last delivery the message is
    /// dead-lettered with `reason` instead.
    Retry {
        delay: Option<Duration>,
        reason: String,
    },
    /// Nothing to keep and nothing a retry could fix (e.g. its subject no longer exists):
    /// terminate without a dead letter.
    Term { reason: String },
    /// Nothing a retry could fix, but operators must see it: dead-letter at once.
    DeadLetter { reason: String },
}

impl Outcome {
    /// A retry after the worker's backoff for this delivery.
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry {
            delay: None,
            reason: reason.into(),
        }
    }

    /// A retry after `delay` (e.g. a server's `Retry-After`).
    pub fn retry_after(delay: Duration, reason: impl Into<String>) -> Self {
        Outcome::Retry {
            delay: Some(delay),
            reason: reason.into(),
        }
    }

    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Outcome::DeadLetter {
            reason: reason.into(),
        }
    }
}

/// What the loop does with a message: the [`Outcome`] judged against its delivery count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    /// Redeliver after the delay (`None`: at once).
    Nak(Option<Duration>),
    Term,
    /// Copy to `hk.dlq.<kind>`, then terminate (or, if the copy is not stored, NAK it so it is
    /// not lost).
    DeadLetter(String),
}

/// The delays before redeliveries: the n-th delivery's failure waits the n-th entry; the last
/// entry repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff(pub Vec<Duration>);

impl Backoff {
    /// The delay after the `delivered`-th delivery failed; `None` when no delays are set.
    pub fn delay(&self, delivered: i64) -> Option<Duration> {
        let index = usize::try_from(delivered.max(1) - 1).unwrap_or(usize::MAX);
        self.0
            .get(index.min(self.0.len().saturating_sub(1)))
            .copied()
    }
}

/// Judges `outcome` against the delivery count: a retry on the last delivery is a dead letter.
pub fn settlement(
    outcome: Outcome,
    delivered: i64,
    max_deliver: i64,
    backoff: &Backoff,
) -> Settlement {
    match outcome {
        Outcome::Ack => Settlement::Ack,
        Outcome::Retry { reason, .. } if delivered >= max_deliver => Settlement::DeadLetter(reason),
        Outcome::Retry { delay, .. } => Settlement::Nak(delay.or_else(|| backoff.delay(delivered))),
        Outcome::Term { .. } => Settlement::Term,
        Outcome::DeadLetter { reason } => Settlement::DeadLetter(reason),
    }
}

/// One delivered message.
pub struct Delivery {
    message: jetstream::Message,
    delivered: i64,
    stream_sequence: u64,
    max_deliver: i64,
    backoff_delay: Option<Duration>,
}

impl Delivery {
    fn new(message: jetstream::Message, spec: &ConsumerSpec) -> Self {
        let (delivered, stream_sequence) = message
            .info()
            .map(|i| (i.delivered, i.stream_sequence))
            .unwrap_or((1, 0));
        Self {
            message,
            delivered,
            stream_sequence,
            max_deliver: spec.max_deliver,
            backoff_delay: spec.backoff.delay(delivered),
        }
    }

    pub fn message(&self) -> &jetstream::Message {
        &self.message
    }

    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// A header's (first) value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
    }

    /// 1 on the first delivery.
    pub fn delivered(&self) -> i64 {
        self.delivered
    }

    /// Whether a retry returned now would be dead-lettered instead.
    pub fn is_last(&self) -> bool {
        self.delivered >= self.max_deliver
    }

    /// The message's sequence in its stream.
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// The worker's backoff for this delivery (what [`Outcome::retry`] waits).
    pub fn backoff_delay(&self) -> Option<Duration> {
        self.backoff_delay
    }
}

/// Handles one message at a time (up to [`ConsumerSpec::concurrency`] at once).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;
}

/// Handles what the subscription has buffered, up to [`ConsumerSpec::batch_size`] messages at
/// once; returns one outcome per delivery, in the same order (a missing one is retried).
pub trait BatchHandler: Send + Sync + 'static {
    fn handle_batch(&self, deliveries: &[Delivery]) -> impl Future<Output = Vec<Outcome>> + Send;

    /// Runs before consuming, and again after every resubscription (e.g. to repair what a crash
    /// between two steps left behind); an error is retried like a lost subscription.
    fn prepare(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }
}

/// Any error a handler's [`BatchHandler::prepare`] reports, kept with its source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a subscription ended; the loop subscribes again after a pause.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("JetStream: {0}")]
    JetStream(#[source] BoxError),
    #[error("the message stream ended")]
    Ended,
    #[error("preparing the consumer: {0}")]
    Prepare(#[source] BoxError),
    #[error("the worker's slots were closed")]
    Closed,
}

/// A [`Handler`] seen as batches of one.
struct OneAtATime<H>(H);

impl<H: Handler> BatchHandler for OneAtATime<H> {
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(self.0.handle(delivery).await);
        }
        outcomes
    }
}

/// Where a worker consumes from and how it retries.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The stream consumed.
    pub stream: String,
    /// The durable consumer shared by every process of the worker.
    pub durable_name: String,
    pub description: String,
    /// Only subjects matching this (`None`: the whole stream).
    pub filter_subject: Option<String>,
    /// Dead letters go to `hk.dlq.<kind>`; also names the worker in logs.
    pub dead_letter_kind: &'static str,
    /// Redelivery of a message whose worker died without answering.
    pub ack_wait: Duration,
    /// Deliveries before a message that keeps failing is dead-lettered.
    pub max_deliver: i64,
    /// Delays of [`Outcome::retry`].
    pub backoff: Backoff,
    /// Handler calls in flight per process.
    pub concurrency: usize,
    /// Messages per handler call (1 for a [`Handler`]).
    pub batch_size: usize,
    /// Unacknowledged messages the server hands out to all processes together.
    pub max_ack_pending: i64,
    /// Counter of subscriptions lost (NATS restart, stream missing), e.g.
    /// `hk_projector_errors_total`.
    pub errors_counter: &'static str,
    /// Wait for the server to confirm each ack: one round trip more per message, for work that
    /// should not run twice after a crash when it can be helped (it must be idempotent anyway).
    pub confirm_acks: bool,
}

impl ConsumerSpec {
    /// The durable consumer's configuration (created on first use, shared afterwards).
    pub fn consumer_config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.durable_name.clone()),
            description: Some(self.description.clone()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            // Two spare deliveries: see the module docs.
            max_deliver: self.max_deliver + 2,
            max_ack_pending: self.max_ack_pending,
            filter_subject: self.filter_subject.clone().unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// Consumes with `handler`, one message per call, until `shutdown`.
pub async fn consume<H: Handler>(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    handler: H,
    shutdown: &CancellationToken,
) {
    let spec = ConsumerSpec {
        batch_size: 1,
        ..spec.clone()
    };
    consume_batches(js, &spec, OneAtATime(handler), shutdown).await
}

/// Consumes with `handler`, up to [`ConsumerSpec::batch_size`] messages per call, until
/// `shutdown`; resubscribes after errors (e.g. a NATS restart).
pub async fn consume_batches<H: BatchHandler>(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    handler: H,
    shutdown: &CancellationToken,
) {
    let worker = Arc::new(Worker {
        js: js.clone(),
        spec: spec.clone(),
        handler,
    });
    let name = spec.dead_letter_kind;
    while !shutdown.is_cancelled() {
        if let Err(error) = worker.clone().subscribe(shutdown).await {
            metrics::counter!(spec.errors_counter).increment(1);
            tracing::warn!(worker = name, %error, "consumer interrupted; resubscribing");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    tracing::info!(worker = name, "consumer stopped");
}

struct Worker<H> {
    js: jetstream::Context,
    spec: ConsumerSpec,
    handler: H,
}

type Next = Option<Result<jetstream::Message, consumer::pull::MessagesError>>;

fn received(next: Next) -> Result<jetstream::Message, SubscriptionError> {
    match next {
        Some(Ok(message)) => Ok(message),
        Some(Err(e)) => Err(SubscriptionError::JetStream(e.into())),
        None => Err(SubscriptionError::Ended),
    }
}

impl<H: BatchHandler> Worker<H> {
    async fn subscribe(
        self: Arc<Self>,
        shutdown: &CancellationToken,
    ) -> Result<(), SubscriptionError> {
        let spec = &self.spec;
        let stream = self
            .js
            .get_stream(&spec.stream)
            .await
            .map_err(|e| SubscriptionError::JetStream(e.into()))?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&spec.durable_name, spec.consumer_config())
            .await
            .map_err(|e| SubscriptionError::JetStream(e.into()))?;
        self.handler
            .prepare()
            .await
            .map_err(SubscriptionError::Prepare)?;
        let concurrency = spec.concurrency.max(1);
        let batch_size = spec.batch_size.max(1);
        // Pull what this process's slots can take, not more: the server hands a pull request
        // up to `max_ack_pending` messages, so a process asking for hundreds could hold the
        // queue while the other processes sharing the consumer had free slots and nothing to
        // do. The client asks again when half of a pull is delivered.
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(concurrency.saturating_mul(batch_size))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| SubscriptionError::JetStream(e.into()))?;
        tracing::info!(worker = spec.dead_letter_kind, stream = %spec.stream, "consuming");
        let permits = Arc::new(Semaphore::new(concurrency));
        let result = loop {
            // A free slot first: what is pulled is handled at once, its ack_wait not spent
            // queueing here.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break Err(SubscriptionError::Closed),
                },
            };
            let first = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                next = messages.next() => next,
            };
            let mut batch = match received(first) {
                Ok(message) => vec![Delivery::new(message, spec)],
                Err(e) => break Err(e),
            };
            let mut failed = None;
            while batch.len() < batch_size {
                match messages.next().now_or_never() {
                    Some(next) => match received(next) {
                        Ok(message) => batch.push(Delivery::new(message, spec)),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    },
                    None => break,
                }
            }
            let worker = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                worker.handle(batch).await;
            });
            if let Some(e) = failed {
                break Err(e);
            }
        };
        // Drain: what is in flight finishes and is settled before the subscription goes.
        let _ = permits.acquire_many(concurrency as u32).await;
        result
    }

    async fn handle(&self, batch: Vec<Delivery>) {
        let mut outcomes = self.handler.handle_batch(&batch).await.into_iter();
        for delivery in &batch {
            let outcome = outcomes
                .next()
                .unwrap_or_else(|| Outcome::retry("the handler returned no outcome"));
            self.settle(delivery, outcome).await;
        }
    }

    async fn settle(&self, delivery: &Delivery, outcome: Outcome) {
        let spec = &self.spec;
        let message = &delivery.message;
        if let Outcome::Term { reason } = &outcome {
            tracing::warn!(worker = spec.dead_letter_kind, %reason, "message terminated");
        }
        let acked = match settlement(outcome, delivery.delivered, spec.max_deliver, &spec.backoff) {
            Settlement::Ack if spec.confirm_acks => message.double_ack().await,
            Settlement::Ack => message.ack().await,
            Settlement::Nak(delay) => message.ack_with(AckKind::Nak(delay)).await,
            Settlement::Term => message.ack_with(AckKind::Term).await,
            Settlement::DeadLetter(reason) => {
                match dead_letter::write(
                    &self.js,
                    spec.dead_letter_kind,
                    message,
                    &reason,
                    delivery.delivered,
                )
                .await
                {
                    Ok(()) => message.ack_with(AckKind::Term).await,
                    Err(error) => {
                        // Not stored: leave it to be redelivered rather than lose it.
                        tracing::warn!(
                            worker = spec.dead_letter_kind, %error,
                            "dead letter not stored; the message will be redelivered"
                        );
                        message
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                            .await
                    }
                }
            }
        };
        if let Err(error) = acked {
            // Redelivered after ack_wait; every handler is idempotent.
            tracing::debug!(worker = spec.dead_letter_kind, %error, "acknowledgement failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff(vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ])
    }

    #[test]
    fn backoff_follows_deliveries_and_repeats_its_last_delay() {
        let b = backoff();
        assert_eq!(b.delay(1), Some(Duration::from_secs(1)));
        assert_eq!(b.delay(2), Some(Duration::from_secs(5)));
        assert_eq!(b.delay(3), Some(Duration::from_secs(30)));
        assert_eq!(b.delay(9), Some(Duration::from_secs(30)));
        // A missing delivery count counts as the first.
        assert_eq!(b.delay(0), Some(Duration::from_secs(1)));
        assert_eq!(Backoff::default().delay(3), None);
    }

    #[test]
    fn acks_and_terms_ignore_the_delivery_count() {
        for delivered in [1, 5, 6, 100] {
            assert_eq!(
                settlement(Outcome::Ack, delivered, 6, &backoff()),
                Settlement::Ack
            );
            assert_eq!(
                settlement(
                    Outcome::Term {
                        reason: "gone".into()
                    },
                    delivered,
                    6,
                    &backoff()
                ),
                Settlement::Term
            );
        }
    }

    #[test]
    fn retries_wait_the_backoff_or_the_delay_asked_for() {
        assert_eq!(
            settlement(Outcome::retry("db down"), 2, 6, &backoff()),
            Settlement::Nak(Some(Duration::from_secs(5)))
        );
        assert_eq!(
            settlement(
                Outcome::retry_after(Duration::from_secs(120), "429"),
                1,
                6,
                &backoff()
            ),
            Settlement::Nak(Some(Duration::from_secs(120)))
        );
        assert_eq!(
            settlement(Outcome::retry("db down"), 1, 6, &Backoff::default()),
            Settlement::Nak(None)
        );
    }

    #[test]
    fn a_retry_on_the_last_delivery_is_dead_lettered_with_its_reason() {
        assert_eq!(
            settlement(Outcome::retry("HubSpot 503"), 5, 6, &backoff()),
            Settlement::Nak(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            settlement(Outcome::retry("HubSpot 503"), 6, 6, &backoff()),
            Settlement::DeadLetter("HubSpot 503".into())
        );
        // The spare deliveries (a worker died during the last one) are dead-lettered too.
        assert_eq!(
            settlement(
                Outcome::retry_after(Duration::from_secs(1), "gap"),
                8,
                6,
                &backoff()
            ),
            Settlement::DeadLetter("gap".into())
        );
    }

    #[test]
    fn dead_letters_are_written_at_once_whatever_the_delivery() {
        assert_eq!(
            settlement(Outcome::dead_letter("undecodable"), 1, 6, &backoff()),
            Settlement::DeadLetter("undecodable".into())
        );
    }
}
