//! Outbound notifications to the app: its endpoints (the `AppEndpoints` aggregate, with sealed
//! signing secrets), the deliveries made to them, and the notifier role that makes them.
//!
//! * [`NotificationService`]: endpoint commands and queries behind the API (create, change,
//!   rotate, remove, list deliveries, re-send).
//! * [`signing`]: Standard Webhooks secrets and signatures.
//! * [`payload`]: which events become which notifications, and the delivery body.
//! * [`worker`]: the notifier role: a fan-out from `HK_EVENTS` into the `HK_NOTIFY` work queue,
//!   and delivery workers that POST each notification with retries, both on the one consume
//!   loop of `hubkeeper_bus::consume`.

pub mod payload;
pub mod signing;
pub mod worker;

use std::sync::Arc;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::notification::{
    AddEndpoint, AppEndpoints, ChangeEndpoint, Endpoint, EndpointCommand, EndpointError,
};
use hubkeeper_domain::{AppId, EndpointId, InstallationId};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgPool;

use crate::commands::CommandBus;
use crate::error::CoreError;
use crate::vault::Vault;

pub use worker::{NotifierConfig, NotifyMessage};

/// How long a rotated-out signing secret keeps signing (both signatures are sent meanwhile).
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

/// One endpoint as the API shows it. There is deliberately no secret field: the secret is
/// returned once, by [`NotificationService::create`] and [`NotificationService::rotate_secret`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointView {
    pub endpoint_id: EndpointId,
    pub app_id: AppId,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Why the notifier disabled it (410 Gone), if it did.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret also signs, after a rotation.
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointView {
    fn of(app_id: AppId, endpoint: &Endpoint) -> Self {
        Self {
            endpoint_id: endpoint.endpoint_id,
            app_id,
            url: endpoint.url.clone(),
            event_types: endpoint.event_types.iter().cloned().collect(),
            description: endpoint.description.clone(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.clone(),
            previous_secret_valid_until: endpoint.previous_secret.as_ref().map(|(_, until)| *until),
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

/// An endpoint with its signing secret: the one answer that carries it.
#[derive(Debug, Clone)]
pub struct EndpointWithSecret {
    pub endpoint: EndpointView,
    pub secret: SecretString,
}

/// Input of [`NotificationService::create`].
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    /// `None`: every type but `installation.refreshed`.
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
}

/// Input of [`NotificationService::change`]; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// One delivery (one notification to one endpoint) and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DeliveryView {
    /// The `webhook-id` header: the same on every attempt and re-send.
    pub webhook_id: String,
    #[sqlx(rename = "notification_type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// `pending`, `retrying`, `delivered`, `failed` (given up; in the dead letters) or `gone`
    /// (the receiver answered 410 and the endpoint was disabled).
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    /// Duration of the last attempt, in milliseconds.
    pub last_latency_ms: Option<i32>,
    pub installation_id: Option<uuid::Uuid>,
    /// `aggregate_type:aggregate_id:sequence` of the event it reports.
    pub source_event: String,
    pub event_recorded_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<String>,
    pub installation_id: Option<InstallationId>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// Delivery statuses, as stored and filtered on.
pub const DELIVERY_STATUSES: [&str; 5] = ["pending", "retrying", "delivered", "failed", "gone"];

/// Endpoint commands and queries. Cheap to clone.
#[derive(Clone)]
pub struct NotificationService {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    bus: Arc<CommandBus>,
    vault: Vault,
    js: jetstream::Context,
}

impl NotificationService {
    pub fn new(pool: PgPool, bus: Arc<CommandBus>, vault: Vault, js: jetstream::Context) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                bus,
                vault,
                js,
            }),
        }
    }

    /// The notifier role on this service's store, vault and JetStream.
    pub fn notifier(&self, config: NotifierConfig) -> Result<worker::Notifier, CoreError> {
        worker::Notifier::new(
            self.inner.pool.clone(),
            self.inner.bus.clone(),
            self.inner.vault.clone(),
            self.inner.js.clone(),
            config,
        )
        .map_err(|e| CoreError::Unavailable(format!("the notifier's HTTP client: {e}")))
    }

    /// The app must exist and not be deleted.
    async fn live_app(&self, app_id: AppId) -> Result<(), CoreError> {
        let (app, _) = self.inner.bus.apps().load(&app_id.to_string()).await?;
        if app.app_id().is_none() {
            return Err(CoreError::not_found("app", app_id));
        }
        if app.is_deleted() {
            return Err(CoreError::AppDeleted {
                app_id: app_id.to_string(),
            });
        }
        Ok(())
    }

    async fn endpoints(&self, app_id: AppId) -> Result<AppEndpoints, CoreError> {
        Ok(self
            .inner
            .bus
            .endpoints()
            .load(&app_id.to_string())
            .await?
            .0)
    }

    async fn view(&self, app_id: AppId, id: EndpointId) -> Result<EndpointView, CoreError> {
        let endpoints = self.endpoints(app_id).await?;
        endpoints
            .endpoint(&id)
            .map(|e| EndpointView::of(app_id, e))
            .ok_or_else(|| CoreError::from(EndpointError::UnknownEndpoint(id.to_string())))
    }

    async fn execute(
        &self,
        app_id: AppId,
        command: EndpointCommand,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        Ok(self
            .inner
            .bus
            .endpoints()
            .execute(&app_id.to_string(), command, metadata)
            .await?)
    }

    /// Every endpoint of the app, oldest first.
    pub async fn list(&self, app_id: AppId) -> Result<Vec<EndpointView>, CoreError> {
        self.live_app(app_id).await?;
        let endpoints = self.endpoints(app_id).await?;
        Ok(endpoints
            .endpoints()
            .map(|e| EndpointView::of(app_id, e))
            .collect())
    }

    /// One endpoint.
    pub async fn get(&self, app_id: AppId, id: EndpointId) -> Result<EndpointView, CoreError> {
        self.live_app(app_id).await?;
        self.view(app_id, id).await
    }

    /// Adds an endpoint with a new signing secret, returned this once.
    pub async fn create(
        &self,
        app_id: AppId,
        new: NewEndpoint,
        metadata: &EventMetadata,
    ) -> Result<EndpointWithSecret, CoreError> {
        self.live_app(app_id).await?;
        let endpoint_id = EndpointId::new();
        let secret = signing::generate_secret();
        let sealed = self
            .inner
            .vault
            .seal_signing_secret(&app_id, &endpoint_id, &secret)
            .await?;
        self.execute(
            app_id,
            EndpointCommand::Add(AddEndpoint {
                app_id,
                endpoint_id,
                url: new.url,
                event_types: new.event_types,
                description: new.description,
                secret: sealed,
            }),
            metadata,
        )
        .await?;
        Ok(EndpointWithSecret {
            endpoint: self.view(app_id, endpoint_id).await?,
            secret,
        })
    }

    /// Changes an endpoint (URL, types, description, enabled).
    pub async fn change(
        &self,
        app_id: AppId,
        id: EndpointId,
        changes: EndpointChanges,
        metadata: &EventMetadata,
    ) -> Result<EndpointView, CoreError> {
        self.live_app(app_id).await?;
        self.execute(
            app_id,
            EndpointCommand::Change(ChangeEndpoint {
                endpoint_id: id,
                url: changes.url,
                event_types: changes.event_types,
                description: changes.description,
                enabled: changes.enabled,
            }),
            metadata,
        )
        .await?;
        self.view(app_id, id).await
    }

    /// A new signing secret, returned this once; the previous one signs too for
    /// [`ROTATION_OVERLAP`].
    pub async fn rotate_secret(
        &self,
        app_id: AppId,
        id: EndpointId,
        metadata: &EventMetadata,
    ) -> Result<EndpointWithSecret, CoreError> {
        self.live_app(app_id).await?;
        self.view(app_id, id).await?;
        let secret = signing::generate_secret();
        let sealed = self
            .inner
            .vault
            .seal_signing_secret(&app_id, &id, &secret)
            .await?;
        self.execute(
            app_id,
            EndpointCommand::RotateSecret {
                endpoint_id: id,
                secret: sealed,
                overlap: ROTATION_OVERLAP,
            },
            metadata,
        )
        .await?;
        Ok(EndpointWithSecret {
            endpoint: self.view(app_id, id).await?,
            secret,
        })
    }

    /// Removes an endpoint: nothing more is delivered to it.
    pub async fn remove(
        &self,
        app_id: AppId,
        id: EndpointId,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        self.live_app(app_id).await?;
        self.execute(
            app_id,
            EndpointCommand::Remove { endpoint_id: id },
            metadata,
        )
        .await
    }

    /// The endpoint's deliveries, newest first.
    pub async fn deliveries(
        &self,
        app_id: AppId,
        id: EndpointId,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryView>, CoreError> {
        self.get(app_id, id).await?;
        let rows = sqlx::query_as::<_, DeliveryView>(
            "SELECT webhook_id, notification_type, status, attempts, last_status_code,
                    last_error, last_latency_ms, installation_id, source_event,
                    event_recorded_at, created_at, last_attempt_at, next_attempt_at, delivered_at
               FROM notification_deliveries
              WHERE app_id = $1 AND endpoint_id = $2
                AND ($3::text IS NULL OR status = $3)
                AND ($4::uuid IS NULL OR installation_id = $4)
              ORDER BY created_at DESC, webhook_id DESC
              LIMIT $5",
        )
        .bind(app_id.as_uuid())
        .bind(id.as_uuid())
        .bind(filter.status.as_deref())
        .bind(filter.installation_id.map(|i| i.as_uuid()))
        .bind(filter.limit.clamp(1, 500))
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(rows)
    }

    /// Sends a delivery again (same `webhook-id`, same body, a fresh signature), whatever its
    /// status; recorded as an event with the operator.
    pub async fn resend(
        &self,
        app_id: AppId,
        id: EndpointId,
        webhook_id: &str,
        metadata: &EventMetadata,
    ) -> Result<DeliveryView, CoreError> {
        self.get(app_id, id).await?;
        let found: Option<String> = sqlx::query_scalar(
            "SELECT webhook_id FROM notification_deliveries
              WHERE webhook_id = $1 AND app_id = $2 AND endpoint_id = $3",
        )
        .bind(webhook_id)
        .bind(app_id.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(&self.inner.pool)
        .await?;
        if found.is_none() {
            return Err(CoreError::not_found("delivery", webhook_id));
        }
        self.execute(
            app_id,
            EndpointCommand::Resend {
                endpoint_id: id,
                webhook_id: webhook_id.to_owned(),
            },
            metadata,
        )
        .await?;
        sqlx::query(
            "UPDATE notification_deliveries SET status = 'pending', next_attempt_at = now()
              WHERE webhook_id = $1",
        )
        .bind(webhook_id)
        .execute(&self.inner.pool)
        .await?;
        let message = NotifyMessage {
            webhook_id: webhook_id.to_owned(),
            app_id,
            endpoint_id: id,
            resend: true,
        };
        worker::enqueue(
            &self.inner.js,
            &message,
            &format!("{webhook_id}:resend:{}", uuid::Uuid::now_v7()),
        )
        .await
        .map_err(|e| CoreError::Unavailable(format!("queueing the re-send: {e}")))?;
        let row = sqlx::query_as::<_, DeliveryView>(
            "SELECT webhook_id, notification_type, status, attempts, last_status_code,
                    last_error, last_latency_ms, installation_id, source_event,
                    event_recorded_at, created_at, last_attempt_at, next_attempt_at, delivered_at
               FROM notification_deliveries WHERE webhook_id = $1",
        )
        .bind(webhook_id)
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(row)
    }

    /// Whether `kind` would reach the app now: its enabled endpoints that receive it (the
    /// dashboard's revoke and disconnect dialogs say so before the operator confirms).
    pub async fn receivers(
        &self,
        app_id: AppId,
        kind: hubkeeper_domain::notification::NotificationType,
    ) -> Result<Vec<EndpointView>, CoreError> {
        let endpoints = self.endpoints(app_id).await?;
        Ok(endpoints
            .receivers(kind)
            .map(|e| EndpointView::of(app_id, e))
            .collect())
    }
}

impl EndpointWithSecret {
    /// The secret in clear, for the one response that returns it.
    pub fn secret_text(&self) -> &str {
        self.secret.expose_secret()
    }
}
