//! The notifier role: two consumers on the one consume loop of `hubkeeper_bus::consume`, any
//! number of processes sharing each.
//!
//! * **Fan-out** (`notifier-fanout` on `HK_EVENTS`): turns each relayed event that interests
//!   apps ([`payload::trigger`]) into one delivery per enabled endpoint that receives its type
//!   (and existed when the event was recorded): a row in `notification_deliveries`, then a
//!   message on `HK_NOTIFY` whose `Nats-Msg-Id` is the delivery's `webhook-id`. The event is
//!   acknowledged only after every delivery is queued, so a killed notifier repeats the fan-out
//!   and the duplicate window and the row's key drop what was already queued.
//! * **Delivery** (`notifier` on `HK_NOTIFY`): POSTs the stored body, signed per attempt
//!   (Standard Webhooks), and settles: 2xx acknowledges; 429 retries after `Retry-After`; 410
//!   disables the endpoint (an event) and dead-letters the delivery; anything else retries
//!   after the configured backoff with jitter (about a day by default) and is dead-lettered on
//!   its last attempt. Dead letters are re-driven with `hubkeeper dlq` or the API.
//!
//! HubSpot webhook events (`HubSpotWebhookReceived`) become `hubspot.webhook` notifications
//! grouped per installation and webhook worker transaction (one batch of HubSpot's): the
//! group's first event queues one delivery carrying every event of the group (`events`); the
//! group's source (log and transaction) stands in for the event in its `webhook-id`.
//!
//! The `webhook-id` is derived from the source event and the endpoint (and, for plan
//! notifications, the installation), so it is the same on every attempt, repeat and re-send.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use chrono::Utc;
use hubkeeper_bus::consume::{self, Backoff, ConsumerSpec, Delivery, Handler, Outcome};
use hubkeeper_bus::dead_letter;
use hubkeeper_bus::{RelayedEvent, NOTIFY_STREAM, NOTIFY_SUBJECT_PREFIX};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::notification::{AppEndpoints, EndpointCommand};
use hubkeeper_domain::webhook_log::AGGREGATE_TYPE as WEBHOOK_LOG_TYPE;
use hubkeeper_domain::{AppId, EndpointId, InstallationId};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::payload::{self, Subject};
use super::signing;
use crate::commands::CommandBus;
use crate::vault::Vault;

/// Durable consumer of the fan-out on `HK_EVENTS`.
pub const FANOUT_CONSUMER: &str = "notifier-fanout";
/// Durable consumer of the delivery workers on `HK_NOTIFY`.
pub const DELIVERY_CONSUMER: &str = "notifier";
/// `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("Hubkeeper-Notifier/", env!("CARGO_PKG_VERSION"));

/// The notifier's settings.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Deliveries in flight per process.
    pub concurrency: usize,
    /// Events fanned out at once per process.
    pub fanout_concurrency: usize,
    /// Redelivery of a message whose worker died; must exceed `timeout`.
    pub ack_wait: Duration,
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// Delays before the 2nd, 3rd, ... attempt; attempts = delays + 1.
    pub backoff: Vec<Duration>,
    /// Each delay is drawn uniformly within this fraction of itself either side.
    pub jitter: f64,
    /// Longest `Retry-After` honoured as asked (longer ones are cut to this).
    pub max_retry_after: Duration,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            fanout_concurrency: 8,
            ack_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(15),
            backoff: default_backoff(),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(6 * 3600),
        }
    }
}

/// 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 8 h: eleven attempts over about 24 h.
pub fn default_backoff() -> Vec<Duration> {
    [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// One queued delivery (the body is in its `notification_deliveries` row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyMessage {
    pub webhook_id: String,
    pub app_id: AppId,
    pub endpoint_id: EndpointId,
    /// An operator's re-send: delivered even if an earlier attempt succeeded.
    #[serde(default)]
    pub resend: bool,
}

/// The `webhook-id` of the notification of `source_event` to `endpoint` (about `installation`
/// when one event notifies several): `msg_` and 32 hex digits of a hash, the same however
/// often it is computed.
pub fn webhook_id(
    source_event: &str,
    endpoint: EndpointId,
    installation: Option<InstallationId>,
) -> String {
    let mut hash = Sha256::new();
    hash.update(source_event.as_bytes());
    hash.update(b"\n");
    hash.update(endpoint.to_string().as_bytes());
    hash.update(b"\n");
    if let Some(installation) = installation {
        hash.update(installation.to_string().as_bytes());
    }
    let digest = hash.finalize();
    format!("msg_{}", hex::encode(&digest[..16]))
}

fn subject_of(message: &NotifyMessage) -> String {
    format!(
        "{NOTIFY_SUBJECT_PREFIX}.{}.{}",
        message.app_id, message.endpoint_id
    )
}

/// Queues one delivery; `message_id` deduplicates inside the stream's window.
pub async fn enqueue(
    js: &jetstream::Context,
    message: &NotifyMessage,
    message_id: &str,
) -> Result<(), String> {
    let payload = serde_json::to_vec(message).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", message_id);
    js.publish_with_headers(subject_of(message), headers, payload.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// What both consumers share.
struct Shared {
    pool: PgPool,
    bus: Arc<CommandBus>,
    vault: Vault,
    js: jetstream::Context,
    http: reqwest::Client,
    config: NotifierConfig,
}

/// The notifier role.
pub struct Notifier {
    shared: Arc<Shared>,
}

impl Notifier {
    pub fn new(
        pool: PgPool,
        bus: Arc<CommandBus>,
        vault: Vault,
        js: jetstream::Context,
        config: NotifierConfig,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // A receiver's redirect is not followed: the endpoint's URL is the one configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                bus,
                vault,
                js,
                http,
                config,
            }),
        })
    }

    /// The fan-out consumer.
    pub fn fanout_spec(&self) -> ConsumerSpec {
        let concurrency = self.shared.config.fanout_concurrency.max(1);
        ConsumerSpec {
            stream: hubkeeper_bus::EVENTS_STREAM.into(),
            durable_name: FANOUT_CONSUMER.into(),
            description: "Notifier fan-out: events -> notification deliveries (shared)".into(),
            filter_subject: None,
            dead_letter_kind: dead_letter::kind::NOTIFY_FANOUT,
            ack_wait: Duration::from_secs(30),
            max_deliver: 8,
            backoff: Backoff(vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ]),
            concurrency,
            batch_size: 1,
            max_ack_pending: (concurrency as i64 * 8).max(64),
            errors_counter: "hk_notifier_errors_total",
            confirm_acks: false,
        }
    }

    /// The delivery consumer.
    pub fn delivery_spec(&self) -> ConsumerSpec {
        let config = &self.shared.config;
        let concurrency = config.concurrency.max(1);
        ConsumerSpec {
            stream: NOTIFY_STREAM.into(),
            durable_name: DELIVERY_CONSUMER.into(),
            description: "Notifier deliveries (shared)".into(),
            filter_subject: Some(format!("{NOTIFY_SUBJECT_PREFIX}.>")),
            dead_letter_kind: dead_letter::kind::NOTIFY,
            ack_wait: config.ack_wait.max(config.timeout + Duration::from_secs(5)),
            max_deliver: config.backoff.len() as i64 + 1,
            backoff: Backoff(config.backoff.clone()),
            concurrency,
            batch_size: 1,
            max_ack_pending: (concurrency as i64 * 8).max(64),
            errors_counter: "hk_notifier_errors_total",
            // A delivery acknowledged but lost would be sent again: worth the round trip.
            confirm_acks: true,
        }
    }

    /// Runs both consumers until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let fanout_spec = self.fanout_spec();
        let delivery_spec = self.delivery_spec();
        let js = self.shared.js.clone();
        tokio::join!(
            consume::consume(&js, &fanout_spec, FanOut(self.shared.clone()), &shutdown),
            consume::consume(&js, &delivery_spec, Deliver(self.shared.clone()), &shutdown),
        );
    }
}

/// One recipient of a notification: the app, the installation it is about and the identity
/// fields of its `data`.
struct Recipient {
    app_id: AppId,
    installation_id: InstallationId,
    identity: Map<String, Value>,
}

struct FanOut(Arc<Shared>);

impl Handler for FanOut {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let event: RelayedEvent = match serde_json::from_slice(delivery.payload()) {
            Ok(event) => event,
            Err(e) => return Outcome::dead_letter(format!("undecodable event: {e}")),
        };
        match self.fan_out(&event).await {
            Ok(queued) => {
                if queued > 0 {
                    metrics::counter!("hk_notifications_queued_total").increment(queued);
                }
                Outcome::Ack
            }
            Err(reason) => Outcome::retry(reason),
        }
    }
}

impl FanOut {
    async fn recipients(&self, subject: &Subject) -> Result<Vec<Recipient>, String> {
        let shared = &self.0;
        match subject {
            Subject::Installation(id)
            | Subject::WebhookGroup(payload::WebhookGroup {
                installation: id, ..
            }) => {
                let (installation, _) = shared
                    .bus
                    .installations()
                    .load(&id.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(app_id) = installation.app_id() else {
                    return Ok(vec![]);
                };
                let mut identity = Map::new();
                identity.insert("installation_id".into(), json!(id));
                identity.insert("app_id".into(), json!(app_id));
                identity.insert("hub_id".into(), json!(installation.hub_id()));
                identity.insert("user_id".into(), json!(installation.user_id()));
                identity.insert("hub_domain".into(), json!(installation.hub_domain()));
                identity.insert("external_ref".into(), json!(installation.external_ref()));
                Ok(vec![Recipient {
                    app_id,
                    installation_id: *id,
                    identity,
                }])
            }
            Subject::PlanSubscribers(plan_id) => {
                let rows: Vec<(uuid::Uuid, uuid::Uuid, Option<i64>)> = sqlx::query_as(
                    "SELECT s.installation_id, s.app_id, i.hub_id
                       FROM rm_subscriptions s
                       LEFT JOIN rm_installations i USING (installation_id)
                      WHERE s.plan_id = $1",
                )
                .bind(plan_id.as_uuid())
                .fetch_all(&shared.pool)
                .await
                .map_err(|e| e.to_string())?;
                Ok(rows
                    .into_iter()
                    .map(|(installation, app, hub_id)| {
                        let installation_id = InstallationId::from_uuid(installation);
                        let app_id = AppId::from_uuid(app);
                        let mut identity = Map::new();
                        identity.insert("installation_id".into(), json!(installation_id));
                        identity.insert("app_id".into(), json!(app_id));
                        identity.insert("hub_id".into(), json!(hub_id));
                        Recipient {
                            app_id,
                            installation_id,
                            identity,
                        }
                    })
                    .collect())
            }
        }
    }

    /// Queues every delivery `event` leads to; the count queued.
    async fn fan_out(&self, event: &RelayedEvent) -> Result<u64, String> {
        let Some(trigger) = payload::trigger(event) else {
            return Ok(0);
        };
        let shared = &self.0;
        let mut trigger = trigger;
        let mut source = event.message_id();
        if let Subject::WebhookGroup(group) = &trigger.subject {
            // One notification per installation and webhook worker transaction: queued by the
            // group's first event (the rest are acknowledged), with every event of the group,
            // all committed together and so all in the store already.
            let first: Option<i64> = sqlx::query_scalar(
                "SELECT min(sequence) FROM events
                  WHERE tx_id = $1::text::xid8 AND aggregate_type = $2 AND aggregate_id = $3",
            )
            .bind(&group.tx_id)
            .bind(WEBHOOK_LOG_TYPE)
            .bind(&group.log)
            .fetch_one(&shared.pool)
            .await
            .map_err(|e| format!("reading the webhook group: {e}"))?;
            if first.is_some_and(|first| first != group.sequence) {
                return Ok(0);
            }
            let payloads: Vec<Value> = sqlx::query_scalar(
                "SELECT payload::jsonb FROM events
                  WHERE tx_id = $1::text::xid8 AND aggregate_type = $2 AND aggregate_id = $3
                  ORDER BY sequence",
            )
            .bind(&group.tx_id)
            .bind(WEBHOOK_LOG_TYPE)
            .bind(&group.log)
            .fetch_all(&shared.pool)
            .await
            .map_err(|e| format!("reading the webhook group: {e}"))?;
            trigger.details = payload::webhook_events(&payloads);
            source = group.source();
        }
        let recipients = self.recipients(&trigger.subject).await?;
        let per_installation = matches!(trigger.subject, Subject::PlanSubscribers(_));
        let mut endpoints: HashMap<AppId, AppEndpoints> = HashMap::new();
        let mut queued = 0;
        for recipient in recipients {
            if let Entry::Vacant(slot) = endpoints.entry(recipient.app_id) {
                let (loaded, _) = shared
                    .bus
                    .endpoints()
                    .load(&recipient.app_id.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                slot.insert(loaded);
            }
            let Some(app_endpoints) = endpoints.get(&recipient.app_id) else {
                continue;
            };
            // An endpoint hears of what happened after it was added, not of the history.
            let receivers = app_endpoints
                .receivers(trigger.kind)
                .filter(|e| e.created_at <= event.recorded_at);
            for endpoint in receivers {
                let id = webhook_id(
                    &source,
                    endpoint.endpoint_id,
                    per_installation.then_some(recipient.installation_id),
                );
                let body = payload::body(
                    trigger.kind,
                    event.recorded_at,
                    recipient.identity.clone(),
                    &trigger.details,
                );
                sqlx::query(
                    "INSERT INTO notification_deliveries
                        (webhook_id, app_id, endpoint_id, notification_type, source_event,
                         installation_id, body, event_recorded_at, next_attempt_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
                     ON CONFLICT (webhook_id) DO NOTHING",
                )
                .bind(&id)
                .bind(recipient.app_id.as_uuid())
                .bind(endpoint.endpoint_id.as_uuid())
                .bind(trigger.kind.as_str())
                .bind(&source)
                .bind(recipient.installation_id.as_uuid())
                .bind(&body)
                .bind(event.recorded_at)
                .execute(&shared.pool)
                .await
                .map_err(|e| format!("recording the delivery: {e}"))?;
                let message = NotifyMessage {
                    webhook_id: id.clone(),
                    app_id: recipient.app_id,
                    endpoint_id: endpoint.endpoint_id,
                    resend: false,
                };
                enqueue(&shared.js, &message, &id)
                    .await
                    .map_err(|e| format!("queueing the delivery: {e}"))?;
                queued += 1;
            }
        }
        Ok(queued)
    }
}

struct Deliver(Arc<Shared>);

/// The stored side of one delivery.
#[derive(sqlx::FromRow)]
struct DeliveryRow {
    body: String,
    status: String,
    event_recorded_at: chrono::DateTime<Utc>,
}

/// How one attempt went.
struct Attempt {
    status: &'static str,
    code: Option<u16>,
    error: Option<String>,
    latency: Duration,
    next_in: Option<Duration>,
}

impl Handler for Deliver {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let message: NotifyMessage = match serde_json::from_slice(delivery.payload()) {
            Ok(message) => message,
            Err(e) => return Outcome::dead_letter(format!("undecodable delivery: {e}")),
        };
        match self.deliver(&message, delivery).await {
            Ok(outcome) => outcome,
            Err(reason) => Outcome::retry(reason),
        }
    }
}

impl Deliver {
    fn jittered(&self, delay: Duration) -> Duration {
        let jitter = self.0.config.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return delay;
        }
        let factor = rand::thread_rng().gen_range(1.0 - jitter..=1.0 + jitter);
        delay.mul_f64(factor)
    }

    async fn record(&self, webhook_id: &str, attempt: &Attempt) -> Result<(), String> {
        let latency_ms = i32::try_from(attempt.latency.as_millis()).unwrap_or(i32::MAX);
        let next = attempt
            .next_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
        sqlx::query(
            "UPDATE notification_deliveries
                SET status = $2, attempts = attempts + 1, last_status_code = $3,
                    last_error = $4, last_latency_ms = $5, last_attempt_at = now(),
                    next_attempt_at = $6,
                    delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END
              WHERE webhook_id = $1",
        )
        .bind(webhook_id)
        .bind(attempt.status)
        .bind(attempt.code.map(i32::from))
        .bind(attempt.error.as_deref())
        .bind(latency_ms)
        .bind(next)
        .execute(&self.0.pool)
        .await
        .map_err(|e| format!("recording the attempt: {e}"))?;
        Ok(())
    }

    async fn give_up(
        &self,
        webhook_id: &str,
        status: &'static str,
        why: &str,
    ) -> Result<(), String> {
        sqlx::query(
            "UPDATE notification_deliveries
                SET status = $2, last_error = $3, next_attempt_at = NULL
              WHERE webhook_id = $1",
        )
        .bind(webhook_id)
        .bind(status)
        .bind(why)
        .execute(&self.0.pool)
        .await
        .map_err(|e| format!("recording the delivery: {e}"))?;
        Ok(())
    }

    async fn deliver(
        &self,
        message: &NotifyMessage,
        delivery: &Delivery,
    ) -> Result<Outcome, String> {
        let shared = &self.0;
        let row: Option<DeliveryRow> = sqlx::query_as(
            "SELECT body, status, event_recorded_at FROM notification_deliveries
              WHERE webhook_id = $1",
        )
        .bind(&message.webhook_id)
        .fetch_optional(&shared.pool)
        .await
        .map_err(|e| format!("reading the delivery: {e}"))?;
        let Some(row) = row else {
            return Ok(Outcome::Term {
                reason: format!("no delivery {}", message.webhook_id),
            });
        };
        if row.status == "delivered" && !message.resend {
            // Delivered before a crash lost the acknowledgement.
            return Ok(Outcome::Ack);
        }
        let (endpoints, _) = shared
            .bus
            .endpoints()
            .load(&message.app_id.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let Some(endpoint) = endpoints.endpoint(&message.endpoint_id) else {
            self.give_up(&message.webhook_id, "failed", "the endpoint was removed")
                .await?;
            return Ok(Outcome::Term {
                reason: "the endpoint was removed".into(),
            });
        };
        if !endpoint.enabled {
            self.give_up(&message.webhook_id, "failed", "the endpoint is disabled")
                .await?;
            return Ok(Outcome::dead_letter(
                "the endpoint is disabled; re-drive after enabling it",
            ));
        }
        let now = Utc::now();
        let mut secrets = Vec::new();
        for sealed in endpoint.signing_secrets(now) {
            let secret = shared
                .vault
                .open_signing_secret(&message.app_id, &message.endpoint_id, sealed)
                .await
                .map_err(|e| format!("opening the signing secret: {e}"))?;
            secrets.push(secret);
        }
        let timestamp = now.timestamp();
        let signature = signing::signature_header(
            &secrets,
            &message.webhook_id,
            timestamp,
            row.body.as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let response = shared
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(row.body.clone())
            .send()
            .await;
        let latency = started.elapsed();
        metrics::histogram!("hk_notification_attempt_seconds").record(latency.as_secs_f64());
        let retry_delay = self.jittered(delivery.backoff_delay().unwrap_or(Duration::ZERO));
        let last = delivery.is_last();
        let (attempt, outcome) = match response {
            Ok(response) if response.status().is_success() => {
                let lag = (Utc::now() - row.event_recorded_at)
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                metrics::histogram!("hk_notification_lag_seconds").record(lag.as_secs_f64());
                (
                    Attempt {
                        status: "delivered",
                        code: Some(response.status().as_u16()),
                        error: None,
                        latency,
                        next_in: None,
                    },
                    Outcome::Ack,
                )
            }
            Ok(response) if response.status() == reqwest::StatusCode::GONE => {
                let metadata = EventMetadata::new(Actor::System, Utc::now())
                    .causation_id(message.webhook_id.clone());
                shared
                    .bus
                    .endpoints()
                    .execute(
                        &message.app_id.to_string(),
                        EndpointCommand::Disable {
                            endpoint_id: message.endpoint_id,
                            reason: "the receiver answered 410 Gone".into(),
                        },
                        &metadata,
                    )
                    .await
                    .map_err(|e| format!("disabling the endpoint: {e}"))?;
                (
                    Attempt {
                        status: "gone",
                        code: Some(410),
                        error: Some("410 Gone: the endpoint was disabled".into()),
                        latency,
                        next_in: None,
                    },
                    Outcome::dead_letter("the receiver answered 410 Gone; endpoint disabled"),
                )
            }
            Ok(response) if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                let asked =
                    hubkeeper_hubspot::retry::server_requested_wait(response.headers(), Utc::now());
                let delay = asked
                    .map(|d| d.min(shared.config.max_retry_after))
                    .unwrap_or(retry_delay);
                (
                    Attempt {
                        status: if last { "failed" } else { "retrying" },
                        code: Some(429),
                        error: Some("429 Too Many Requests".into()),
                        latency,
                        next_in: (!last).then_some(delay),
                    },
                    Outcome::retry_after(delay, "the receiver answered 429"),
                )
            }
            Ok(response) => {
                let code = response.status().as_u16();
                (
                    Attempt {
                        status: if last { "failed" } else { "retrying" },
                        code: Some(code),
                        error: Some(format!("HTTP {code}")),
                        latency,
                        next_in: (!last).then_some(retry_delay),
                    },
                    Outcome::retry_after(retry_delay, format!("the receiver answered {code}")),
                )
            }
            Err(error) => {
                let error = error.without_url().to_string();
                (
                    Attempt {
                        status: if last { "failed" } else { "retrying" },
                        code: None,
                        error: Some(error.clone()),
                        latency,
                        next_in: (!last).then_some(retry_delay),
                    },
                    Outcome::retry_after(retry_delay, error),
                )
            }
        };
        metrics::counter!("hk_notification_attempts_total", "status" => attempt.status)
            .increment(1);
        self.record(&message.webhook_id, &attempt).await?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_ids_are_stable_per_event_and_endpoint() {
        let endpoint = EndpointId::new();
        let other = EndpointId::new();
        let a = webhook_id("installation:x:3", endpoint, None);
        assert_eq!(a, webhook_id("installation:x:3", endpoint, None));
        assert_ne!(a, webhook_id("installation:x:4", endpoint, None));
        assert_ne!(a, webhook_id("installation:x:3", other, None));
        assert!(a.starts_with("msg_") && a.len() == 36);
    }

    #[test]
    fn the_default_schedule_retries_for_about_a_day() {
        let total: Duration = default_backoff().iter().sum();
        assert!(total >= Duration::from_secs(22 * 3600), "{total:?}");
        assert!(total <= Duration::from_secs(26 * 3600), "{total:?}");
    }
}
