//! Webhook workers: any number of processes share one durable pull consumer on `HK_WEBHOOKS`
//! and turn each raw batch into processed events, exactly once per unique event.
//!
//! For each batch:
//! 1. split it into events and compute each event's identity ([`WebhookEvent::dedupe_key`]);
//!    drop those already in `webhook_events_seen` (HubSpot redeliveries);
//! 2. route each new event to one installation of (app, portal) in `rm_installations` (see
//!    [`choose_installation`] for which one when there are several: user-level installs,
//!    leftovers of earlier installs). A portal without a row whose installation exists in the
//!    event store means the projector is behind: the batch is retried shortly. A portal with no
//!    installation at all is kept in `webhook_unrouted` for review;
//! 3. uninstall events become `MarkUninstalled` commands on every installation of the app in
//!    the portal (idempotent: the aggregate ignores an uninstall it already recorded, and one
//!    older than the latest connect), each followed by the token-cache invalidation that revoke
//!    publishes, so no process keeps handing out a cached token of an uninstalled installation;
//! 4. republish every new event on `hk.webhooks.<app>.<portal>.<type>` (message id = its
//!    identity, so a republish after a crash is dropped by JetStream);
//! 5. in one transaction, record the identities (a unique key: of two workers racing on the
//!    same event, one inserts it) and append each event this transaction inserted, and only
//!    those, to the event store as a `HubSpotWebhookReceived` of its webhook log
//!    (`hubkeeper_domain::webhook_log`): the routed installation's log, or the app's log for
//!    unrouted ones, which are also kept in `webhook_unrouted` for review. The rows are written
//!    with one multi-row INSERT in the columns postgres-es writes (no aggregate load: a log is
//!    append-only and nothing decides on its state); each log's next sequence is read under a
//!    per-log advisory lock (`WEBHOOK_LOG_LOCK_CLASS`) taken before the transaction's first
//!    write, so its events enter the global order in sequence order. Every count
//!    (`rm_installations.webhook_events`, `last_webhook_at`, `webhook_usage_daily`, the
//!    `/v1/stats/webhooks` series) is folded from these events by the projector, so a replay
//!    rebuilds them exactly;
//! 6. acknowledge the batch.
//!
//! A crash anywhere before 5 commits redoes the batch (commands idempotent, republish
//! deduplicated); a crash after it finds every event seen. Failures are retried with backoff; at
//! the last delivery the batch is copied to the dead-letter stream (`hk.dlq.webhooks`). The queue
//! mechanics are `hubkeeper_bus::consume`'s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hubkeeper_bus::consume::{consume, Backoff, ConsumerSpec, Delivery, Handler, Outcome};
use hubkeeper_bus::dead_letter;
use hubkeeper_bus::registry::WEBHOOK_LOG_LOCK_CLASS;
use hubkeeper_core::tokens::record_uninstall;
use hubkeeper_core::{Broadcaster, CommandBus, CommandError};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::webhook_log::{
    self, log_id, WebhookLogEvent, AGGREGATE_TYPE as WEBHOOK_LOG_TYPE,
};
use hubkeeper_domain::{AppId, HubId, InstallationId, UserId};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::batch::{parse_batch, WebhookEvent};
use crate::streams::{event_subject, BATCH_STREAM, BATCH_SUBJECT_PREFIX};

pub const WEBHOOK_CONSUMER: &str = "webhooks";

#[derive(Debug, Clone)]
pub struct WebhookWorkerConfig {
    /// Batches processed at once per process.
    pub concurrency: usize,
    /// Redelivery of a batch whose worker died without answering.
    pub ack_wait: Duration,
    /// Deliveries before a batch is dead-lettered.
    pub max_deliver: i64,
    /// Delays before retrying a failed batch (the last one repeats).
    pub backoff: Vec<Duration>,
    /// Delay before retrying a batch waiting for the projector to catch up.
    pub projection_wait: Duration,
}

impl Default for WebhookWorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(15),
                Duration::from_secs(60),
                Duration::from_secs(300),
            ],
            projection_wait: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Not a batch at all: no retry can help.
    #[error("undecodable batch: {0}")]
    Poison(String),
    /// A portal's installation exists but is not projected yet.
    #[error("installation of portal {0} is not projected yet")]
    AwaitingProjection(i64),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Bus(String),
    #[error("command failed: {0}")]
    Command(String),
}

/// What processing a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events processed for the first time.
    pub new_events: usize,
    pub duplicates: usize,
    /// Of the new ones, for portals without an installation.
    pub unrouted: usize,
    pub uninstalls: usize,
}

pub struct WebhookWorker {
    pool: PgPool,
    js: jetstream::Context,
    bus: Arc<CommandBus>,
    broadcaster: Broadcaster,
    config: WebhookWorkerConfig,
}

/// Where the events of one portal (and, when events name one, user) go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Installations {
        /// Receives the events: counted on it, named on the republished message.
        target: Uuid,
        /// Every installation of the app in the portal: an uninstall removes the app from the
        /// portal, so it disconnects all of them.
        all: Vec<Uuid>,
    },
    Unrouted,
}

impl Route {
    fn target(&self) -> Option<Uuid> {
        match self {
            Route::Installations { target, .. } => Some(*target),
            Route::Unrouted => None,
        }
    }
}

/// Routes are shared by the events of one portal and user.
type RouteKey = (i64, Option<i64>);

fn route_key(event: &WebhookEvent) -> RouteKey {
    (event.portal_id, event.user_id())
}

/// An installation of (app, portal) as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RouteCandidate {
    pub installation_id: Uuid,
    /// Set for user-level installations.
    pub user_id: Option<i64>,
    pub status: String,
    pub last_connected_at: DateTime<Utc>,
}

/// Which of the installations of (app, portal) an event belongs to, deterministically:
///
/// 1. if the event names a user (`userId`) and some candidates are that user's user-level
///    installations, only those are considered; otherwise all are;
/// 2. an installation that holds tokens wins: `connected`, then `needs_reauthorization`, then
///    the rest (`disconnected`, `revoked`, `forgotten`: leftovers of earlier installs);
/// 3. then the most recently connected;
/// 4. then the smallest installation id, so every worker picks the same one.
///
/// `None` only when there are no candidates. docs/webhooks.md states the same rule.
pub fn choose_installation(candidates: &[RouteCandidate], user: Option<i64>) -> Option<Uuid> {
    let users_own = |c: &&RouteCandidate| user.is_some() && c.user_id == user;
    let narrowed = candidates.iter().any(|c| users_own(&c));
    let rank = |status: &str| match status {
        "connected" => 0,
        "needs_reauthorization" => 1,
        _ => 2,
    };
    candidates
        .iter()
        .filter(|c| !narrowed || users_own(c))
        .min_by(|a, b| {
            rank(&a.status)
                .cmp(&rank(&b.status))
                .then(b.last_connected_at.cmp(&a.last_connected_at))
                .then(a.installation_id.cmp(&b.installation_id))
        })
        .map(|c| c.installation_id)
}

impl WebhookWorker {
    pub fn new(
        pool: PgPool,
        js: jetstream::Context,
        bus: Arc<CommandBus>,
        config: WebhookWorkerConfig,
    ) -> Self {
        // Uninstalls invalidate token caches over the same connection the worker already has.
        let broadcaster = Broadcaster::new(js.client());
        Self {
            pool,
            js,
            bus,
            broadcaster,
            config,
        }
    }

    /// Where the workers consume from and how they retry.
    pub fn consumer_spec(&self) -> ConsumerSpec {
        ConsumerSpec {
            stream: BATCH_STREAM.into(),
            durable_name: WEBHOOK_CONSUMER.into(),
            description: "Webhook workers (shared)".into(),
            filter_subject: Some(format!("{BATCH_SUBJECT_PREFIX}.>")),
            dead_letter_kind: dead_letter::kind::WEBHOOKS,
            ack_wait: self.config.ack_wait,
            max_deliver: self.config.max_deliver,
            backoff: Backoff(self.config.backoff.clone()),
            concurrency: self.config.concurrency,
            batch_size: 1,
            max_ack_pending: (self.config.concurrency as i64 * 16).max(128),
            errors_counter: "hk_webhook_errors_total",
            // A redelivered batch finds every event already seen: not worth a round trip.
            confirm_acks: false,
        }
    }

    /// Consumes until shutdown; batches in flight finish first.
    pub async fn run(self, shutdown: CancellationToken) {
        let spec = self.consumer_spec();
        let js = self.js.clone();
        consume(&js, &spec, self, &shutdown).await;
    }

    /// Processes one raw batch of `app_id` (steps 1-5 of the module docs). Public so tests and the
    /// DLQ tooling can run a batch directly.
    pub async fn process(
        &self,
        app_id: Uuid,
        body: &[u8],
        batch_sequence: u64,
    ) -> Result<BatchOutcome, ProcessError> {
        let events = parse_batch(body).map_err(|e| ProcessError::Poison(e.to_string()))?;
        let total = events.len();
        let mut unique: Vec<([u8; 32], WebhookEvent)> = Vec::with_capacity(total);
        let mut in_batch = HashSet::new();
        for event in events {
            let key = event.dedupe_key(app_id);
            if in_batch.insert(key) {
                unique.push((key, event));
            }
        }
        let keys: Vec<Vec<u8>> = unique.iter().map(|(k, _)| k.to_vec()).collect();
        let seen: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT dedupe_key FROM webhook_events_seen WHERE dedupe_key = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(&self.pool)
        .await?;
        let seen: HashSet<Vec<u8>> = seen.into_iter().collect();
        let fresh: Vec<([u8; 32], WebhookEvent)> = unique
            .into_iter()
            .filter(|(k, _)| !seen.contains(k.as_slice()))
            .collect();
        let mut outcome = BatchOutcome {
            duplicates: total - fresh.len(),
            ..BatchOutcome::default()
        };
        if fresh.is_empty() {
            return Ok(outcome);
        }

        let mut routes: HashMap<RouteKey, Route> = HashMap::new();
        for (_, event) in &fresh {
            if let std::collections::hash_map::Entry::Vacant(slot) = routes.entry(route_key(event))
            {
                let (portal, user) = *slot.key();
                slot.insert(self.route(app_id, portal, user).await?);
            }
        }

        for (key, event) in &fresh {
            if !event.is_uninstall() {
                continue;
            }
            if let Some(Route::Installations { all, .. }) = routes.get(&route_key(event)) {
                for id in all {
                    self.mark_uninstalled(*id, event, key, batch_sequence)
                        .await?;
                    outcome.uninstalls += 1;
                }
            }
        }

        self.republish(app_id, &fresh, &routes).await?;
        let recorded = self.record(app_id, &fresh, &routes, batch_sequence).await?;
        outcome.new_events = recorded.0;
        outcome.unrouted = recorded.1;
        outcome.duplicates += fresh.len() - recorded.0;
        Ok(outcome)
    }

    async fn route(
        &self,
        app_id: Uuid,
        portal_id: i64,
        user: Option<i64>,
    ) -> Result<Route, ProcessError> {
        let candidates: Vec<RouteCandidate> = sqlx::query_as(
            "SELECT installation_id, user_id, status, last_connected_at FROM rm_installations
              WHERE hub_id = $1 AND app_id = $2 ORDER BY installation_id",
        )
        .bind(portal_id)
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?;
        // Not projected yet, or not installed? The store knows the ids an installation of this
        // portal (hub-level, or the named user's) would have.
        let derive = |user: Option<i64>| {
            InstallationId::derive(
                AppId::from_uuid(app_id),
                HubId(u64::try_from(portal_id).unwrap_or_default()),
                user.and_then(|u| u64::try_from(u).ok()).map(UserId),
            )
            .to_string()
        };
        let mut unprojected = Vec::new();
        if candidates.is_empty() {
            unprojected.push(derive(None));
        }
        if user.is_some() && !candidates.iter().any(|c| c.user_id == user) {
            unprojected.push(derive(user));
        }
        if !unprojected.is_empty() {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'installation'
                                  AND aggregate_id = ANY($1))",
            )
            .bind(&unprojected)
            .fetch_one(&self.pool)
            .await?;
            if exists {
                return Err(ProcessError::AwaitingProjection(portal_id));
            }
        }
        Ok(match choose_installation(&candidates, user) {
            Some(target) => Route::Installations {
                target,
                all: candidates.iter().map(|c| c.installation_id).collect(),
            },
            None => Route::Unrouted,
        })
    }

    async fn mark_uninstalled(
        &self,
        installation: Uuid,
        event: &WebhookEvent,
        key: &[u8; 32],
        batch_sequence: u64,
    ) -> Result<(), ProcessError> {
        let metadata = EventMetadata::new(Actor::HubSpot, Utc::now())
            .request_id(format!("webhook-batch:{batch_sequence}"))
            .causation_id(format!("webhook:{}", hex::encode(key)));
        match record_uninstall(
            &self.bus,
            &self.broadcaster,
            &InstallationId::from_uuid(installation),
            event.occurred_at(),
            &metadata,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(CommandError::Rejected(reason)) => {
                // E.g. never connected: nothing to disconnect; the webhook is still counted.
                tracing::info!(%installation, %reason, "uninstall webhook changed nothing");
                Ok(())
            }
            Err(e) => Err(ProcessError::Command(e.to_string())),
        }
    }

    async fn republish(
        &self,
        app_id: Uuid,
        fresh: &[([u8; 32], WebhookEvent)],
        routes: &HashMap<RouteKey, Route>,
    ) -> Result<(), ProcessError> {
        let mut acks = Vec::with_capacity(fresh.len());
        for (key, event) in fresh {
            let body =
                serde_json::to_vec(&event.raw).map_err(|e| ProcessError::Bus(e.to_string()))?;
            let mut message = PublishMessage::build()
                .payload(Bytes::from(body))
                .message_id(hex::encode(key))
                .header("Hk-App-Id", app_id.to_string().as_str())
                .header("Hk-Portal-Id", event.portal_id.to_string().as_str());
            if let Some(target) = routes.get(&route_key(event)).and_then(Route::target) {
                message = message.header("Hk-Installation-Id", target.to_string().as_str());
            }
            let ack = self
                .js
                .send_publish(
                    event_subject(app_id, event.portal_id, &event.subscription_type),
                    message,
                )
                .await
                .map_err(|e| ProcessError::Bus(e.to_string()))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| ProcessError::Bus(e.to_string()))?;
        }
        Ok(())
    }

    /// Records the identities and appends the events this transaction inserted to the webhook
    /// logs; returns (inserted, of them unrouted).
    async fn record(
        &self,
        app_id: Uuid,
        fresh: &[([u8; 32], WebhookEvent)],
        routes: &HashMap<RouteKey, Route>,
        batch_sequence: u64,
    ) -> Result<(usize, usize), ProcessError> {
        let mut sorted: Vec<&([u8; 32], WebhookEvent)> = fresh.iter().collect();
        // One insertion order everywhere: concurrent workers wait for each other, never deadlock.
        sorted.sort_by_key(|a| a.0);
        let mut keys = Vec::with_capacity(sorted.len());
        let mut portals = Vec::with_capacity(sorted.len());
        let mut event_ids = Vec::with_capacity(sorted.len());
        let mut types = Vec::with_capacity(sorted.len());
        let mut times = Vec::with_capacity(sorted.len());
        let mut installations: Vec<Option<Uuid>> = Vec::with_capacity(sorted.len());
        for (key, event) in &sorted {
            keys.push(key.to_vec());
            portals.push(event.portal_id);
            event_ids.push(event.event_id);
            types.push(event.subscription_type.clone());
            times.push(event.occurred_at());
            installations.push(routes.get(&route_key(event)).and_then(Route::target));
        }
        let target = |event: &WebhookEvent| routes.get(&route_key(event)).and_then(Route::target);
        let log_of = |event: &WebhookEvent| {
            log_id(
                AppId::from_uuid(app_id),
                target(event).map(InstallationId::from_uuid),
            )
        };
        let mut logs: Vec<String> = sorted.iter().map(|(_, e)| log_of(e)).collect();
        logs.sort();
        logs.dedup();

        let mut tx = self.pool.begin().await?;
        // The logs' locks come before any write: this transaction's id is taken only once every
        // earlier append to these logs has committed, so a log's events are in the global
        // order in sequence order (what the relay, the projector and replay rely on).
        sqlx::query(
            "SELECT pg_advisory_xact_lock($1, h)
               FROM (SELECT DISTINCT hashtext(l) AS h FROM UNNEST($2::text[]) AS l ORDER BY h) AS s",
        )
        .bind(WEBHOOK_LOG_LOCK_CLASS.class)
        .bind(&logs)
        .execute(&mut *tx)
        .await?;
        let inserted: Vec<Vec<u8>> = sqlx::query_scalar(
            "INSERT INTO webhook_events_seen
                (dedupe_key, app_id, portal_id, event_id, subscription_type, occurred_at,
                 batch_sequence, installation_id)
             SELECT k, $2, p, e, t, o, $3, i
               FROM UNNEST($1::bytea[], $4::bigint[], $5::bigint[], $6::text[], $7::timestamptz[],
                           $8::uuid[]) AS u(k, p, e, t, o, i)
             ON CONFLICT (dedupe_key) DO NOTHING
             RETURNING dedupe_key",
        )
        .bind(&keys)
        .bind(app_id)
        .bind(i64::try_from(batch_sequence).unwrap_or(i64::MAX))
        .bind(&portals)
        .bind(&event_ids)
        .bind(&types)
        .bind(&times)
        .bind(&installations)
        .fetch_all(&mut *tx)
        .await?;
        let inserted: HashSet<Vec<u8>> = inserted.into_iter().collect();
        if inserted.is_empty() {
            tx.commit().await?;
            return Ok((0, 0));
        }

        // The next sequence of each log, under its lock.
        let last: Vec<(String, i64)> = sqlx::query_as(
            "SELECT l, COALESCE((SELECT max(sequence) FROM events
                                  WHERE aggregate_type = $1 AND aggregate_id = l), 0)
               FROM UNNEST($2::text[]) AS l",
        )
        .bind(WEBHOOK_LOG_TYPE)
        .bind(&logs)
        .fetch_all(&mut *tx)
        .await?;
        let mut next: BTreeMap<String, i64> = last.into_iter().collect();

        let now = Utc::now();
        let mut appended: Vec<(&[u8; 32], &WebhookEvent, String)> = sorted
            .iter()
            .filter(|(key, _)| inserted.contains(key.as_slice()))
            .map(|(key, event)| (key, event, log_of(event)))
            .collect();
        // Within a log, in the order HubSpot says they happened.
        appended.sort_by(|a, b| {
            (&a.2, a.1.occurred_at_ms, a.1.event_id, a.0).cmp(&(
                &b.2,
                b.1.occurred_at_ms,
                b.1.event_id,
                b.0,
            ))
        });
        let batch = format!("webhook-batch:{batch_sequence}");
        let mut aggregate_ids = Vec::with_capacity(appended.len());
        let mut sequences = Vec::with_capacity(appended.len());
        let mut payloads = Vec::with_capacity(appended.len());
        let mut metadata = Vec::with_capacity(appended.len());
        let mut unrouted = 0;
        for (key, event, log) in &appended {
            let installation = target(event);
            let received = event.received(key, app_id, installation);
            let payload = serde_json::to_string(&WebhookLogEvent::Received(received))
                .map_err(|e| ProcessError::Command(e.to_string()))?;
            let meta = EventMetadata::new(Actor::HubSpot, now)
                .request_id(batch.clone())
                .correlation_id(batch.clone())
                .causation_id(format!("webhook:{}", hex::encode(key)));
            let meta = serde_json::to_string(&meta.to_map())
                .map_err(|e| ProcessError::Command(e.to_string()))?;
            let sequence = next.entry(log.clone()).or_insert(0);
            *sequence += 1;
            aggregate_ids.push(log.clone());
            sequences.push(*sequence);
            payloads.push(payload);
            metadata.push(meta);
            if installation.is_none() {
                unrouted += 1;
                sqlx::query(
                    "INSERT INTO webhook_unrouted (dedupe_key, app_id, portal_id, subscription_type, event)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedupe_key) DO NOTHING",
                )
                .bind(key.to_vec())
                .bind(app_id)
                .bind(event.portal_id)
                .bind(&event.subscription_type)
                .bind(serde_json::Value::Object(event.raw.clone()))
                .execute(&mut *tx)
                .await?;
            }
        }
        // One statement for the batch; positions follow the order given.
        sqlx::query(
            "INSERT INTO events
                (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT $1, a, s, $2, $3, p::json, m::json
               FROM UNNEST($4::text[], $5::bigint[], $6::text[], $7::text[])
                    WITH ORDINALITY AS u(a, s, p, m, n)
              ORDER BY n",
        )
        .bind(WEBHOOK_LOG_TYPE)
        .bind(webhook_log::event_types::HUBSPOT_WEBHOOK_RECEIVED)
        .bind(webhook_log::HUBSPOT_WEBHOOK_RECEIVED_VERSION)
        .bind(&aggregate_ids)
        .bind(&sequences)
        .bind(&payloads)
        .bind(&metadata)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // The relay follows the events table: tell it about these after their commit.
        self.bus.events_waker().wake();
        Ok((inserted.len(), unrouted))
    }
}

impl Handler for WebhookWorker {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let started = Instant::now();
        let app = delivery.header("Hk-App-Id").map(str::to_owned).or_else(|| {
            delivery
                .subject()
                .strip_prefix(&format!("{BATCH_SUBJECT_PREFIX}."))
                .map(str::to_owned)
        });
        let result = match app.as_deref().map(Uuid::parse_str) {
            Some(Ok(app_id)) => {
                self.process(app_id, delivery.payload(), delivery.stream_sequence())
                    .await
            }
            _ => Err(ProcessError::Poison("no app id on the batch".into())),
        };
        metrics::histogram!("hk_webhook_processing_seconds")
            .record(started.elapsed().as_secs_f64());
        let (label, outcome) = match result {
            Ok(outcome) => {
                metrics::counter!("hk_webhook_events_total", "outcome" => "new")
                    .increment(outcome.new_events as u64);
                metrics::counter!("hk_webhook_events_total", "outcome" => "duplicate")
                    .increment(outcome.duplicates as u64);
                metrics::counter!("hk_webhook_events_total", "outcome" => "unrouted")
                    .increment(outcome.unrouted as u64);
                ("processed", Outcome::Ack)
            }
            Err(ProcessError::Poison(reason)) => ("poison", Outcome::dead_letter(reason)),
            Err(error) if delivery.is_last() => {
                ("dead_lettered", Outcome::retry(error.to_string()))
            }
            Err(error @ ProcessError::AwaitingProjection(_)) => {
                tracing::debug!(%error, "batch waits for the projector");
                (
                    "awaiting_projection",
                    Outcome::retry_after(self.config.projection_wait, error.to_string()),
                )
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    delivered = delivery.delivered(),
                    delay = ?delivery.backoff_delay(),
                    "webhook batch failed; will retry"
                );
                ("retry", Outcome::retry(error.to_string()))
            }
        };
        metrics::counter!("hk_webhook_batches_total", "result" => label).increment(1);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn candidate(n: u128, user: Option<i64>, status: &str, connected_day: u32) -> RouteCandidate {
        RouteCandidate {
            installation_id: Uuid::from_u128(n),
            user_id: user,
            status: status.into(),
            last_connected_at: Utc
                .with_ymd_and_hms(2026, 1, connected_day, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }

    #[test]
    fn the_installation_holding_tokens_wins_over_leftovers() {
        // A reinstall by another user left the older installation disconnected; it was also
        // connected more recently, so status must come before recency.
        let candidates = [
            candidate(1, None, "disconnected", 20),
            candidate(2, Some(7), "connected", 10),
            candidate(3, Some(8), "revoked", 25),
        ];
        assert_eq!(
            choose_installation(&candidates, None),
            Some(Uuid::from_u128(2))
        );
        let waiting = [
            candidate(1, None, "disconnected", 20),
            candidate(2, None, "needs_reauthorization", 10),
        ];
        assert_eq!(
            choose_installation(&waiting, None),
            Some(Uuid::from_u128(2))
        );
    }

    #[test]
    fn ties_break_on_recency_then_id_whatever_the_order() {
        let mut candidates = vec![
            candidate(9, Some(1), "connected", 5),
            candidate(4, Some(2), "connected", 12),
            candidate(3, Some(3), "connected", 12),
        ];
        for _ in 0..3 {
            candidates.rotate_left(1);
            assert_eq!(
                choose_installation(&candidates, None),
                Some(Uuid::from_u128(3))
            );
        }
    }

    #[test]
    fn a_named_user_gets_their_own_installation() {
        let candidates = [
            candidate(1, Some(7), "connected", 20),
            candidate(2, Some(8), "needs_reauthorization", 10),
        ];
        assert_eq!(
            choose_installation(&candidates, Some(8)),
            Some(Uuid::from_u128(2))
        );
        // A user without an installation of their own: the portal rule applies.
        assert_eq!(
            choose_installation(&candidates, Some(99)),
            Some(Uuid::from_u128(1))
        );
        assert_eq!(choose_installation(&[], Some(8)), None);
    }
}
