//! What every handler can reach, and the service bundles behind the routes. The binary's role
//! wiring fills them in; a process that lacks a bundle answers its routes with 503
//! `not_configured`.

use std::sync::Arc;

use hubkeeper_core::access::AuditLog;
use hubkeeper_core::backup::BackupService;
use hubkeeper_core::billing::BillingService;
use hubkeeper_core::notifications::NotificationService;
use hubkeeper_core::selftest::SelfTestDeps;
use hubkeeper_core::settings::{LiveSettings, SettingsService};
use hubkeeper_core::{AppService, OAuthService, ProxyService, TokenService};
use hubkeeper_webhooks::WebhookIngest;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::Authenticator;
use crate::client_addr::ClientPolicy;
use crate::error::ApiError;
use crate::oauth::OAuthRateLimiter;
use crate::server_config::ServerConfigView;

/// Apps, tokens and the install flow: everything that opens sealed secrets, so it exists only
/// on processes with master keys.
#[derive(Clone)]
pub struct TokenServices {
    pub apps: AppService,
    pub tokens: TokenService,
    pub oauth: OAuthService,
    pub oauth_limiter: Arc<OAuthRateLimiter>,
    /// HubSpot API calls on an installation's behalf (`/v1/proxy/…`).
    pub proxy: ProxyService,
    /// The apps' notification endpoints and deliveries (they hold sealed signing secrets).
    pub notifications: NotificationService,
    /// Base URL the dashboard is reached at (`HK_PUBLIC_URL`); `None`: relative redirects.
    pub public_url: Option<String>,
}

/// Runtime settings, backups and the self-test.
#[derive(Clone)]
pub struct MaintenanceServices {
    /// Runtime settings and the control channel.
    pub settings: SettingsService,
    /// The settings this process applied last.
    pub live: LiveSettings,
    /// Backups; `None` when this process cannot make them.
    pub backups: Option<BackupService>,
    /// What the self-test uses.
    pub selftest: SelfTestDeps,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    /// Dead letters live in JetStream.
    pub jetstream: async_nats::jetstream::Context,
    pub metrics: PrometheusHandle,
    pub auth: Arc<Authenticator>,
    /// Records key changes, log-ins and operator actions as events with their actor.
    pub audit: AuditLog,
    /// Trusted proxies (who the client is) and the per-client limits of `/auth/login`.
    pub clients: ClientPolicy,
    /// The effective, non-secret configuration (`GET /v1/server/config`).
    pub server_config: Arc<ServerConfigView>,
    /// `None` on processes without master keys.
    pub tokens: Option<TokenServices>,
    /// HubSpot webhook ingestion; `None` on processes without master keys (it needs the apps'
    /// client secrets to check signatures).
    pub webhooks: Option<Arc<WebhookIngest>>,
    /// Plans, subscriptions, usage and quotas.
    pub billing: Option<BillingService>,
    pub maintenance: Option<MaintenanceServices>,
    /// "Expiring soon" on the overview: active tokens expiring within this window, unless the
    /// request asks for another.
    pub expiring_window: chrono::Duration,
    /// The refresh scheduler's lead time (`HK_REFRESH_LEAD_SECS`), marked on the expiry chart.
    pub refresh_lead: chrono::Duration,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.inner.jetstream
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    pub fn clients(&self) -> &ClientPolicy {
        &self.inner.clients
    }

    pub fn proxy(&self) -> Result<&ProxyService, ApiError> {
        self.tokens().map(|t| &t.proxy)
    }

    pub fn server_config(&self) -> &ServerConfigView {
        &self.inner.server_config
    }

    pub fn expiring_window(&self) -> chrono::Duration {
        self.inner.expiring_window
    }

    pub fn refresh_lead(&self) -> chrono::Duration {
        self.inner.refresh_lead
    }

    pub fn webhooks(&self) -> Option<&Arc<WebhookIngest>> {
        self.inner.webhooks.as_ref()
    }

    pub fn tokens(&self) -> Result<&TokenServices, ApiError> {
        self.inner.tokens.as_ref().ok_or_else(|| {
            ApiError::not_configured(
                "token services are not configured on this process (HK_MASTER_KEYS is missing)",
            )
        })
    }

    pub fn billing(&self) -> Result<&BillingService, ApiError> {
        self.inner.billing.as_ref().ok_or_else(|| {
            ApiError::not_configured("plans and billing are not served by this process")
        })
    }

    pub fn maintenance(&self) -> Result<&MaintenanceServices, ApiError> {
        self.inner.maintenance.as_ref().ok_or_else(|| {
            ApiError::not_configured(
                "settings, backups and the self-test are not served by this process",
            )
        })
    }
}
