use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

/// What every handler can reach. Cheap to clone.
///
/// Each area adds what it needs in its own section below (keep edits inside your section so
/// parallel work does not collide); the binary's role wiring fills them in.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

pub struct Inner {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub metrics: PrometheusHandle,
    // --- section: tokens, apps, OAuth install flow (issue 4) ---
    /// Apps, tokens and the install flow; `None` on processes without master keys (then the
    /// issue-4 routes answer 503 `not_configured`).
    pub lifecycle: Option<crate::lifecycle::LifecycleServices>,
    // --- end section: issue 4 ---
    // --- section: webhooks, queries, audit (issue 5) ---
    /// Read models, audit history, webhook ingestion and dead letters.
    pub read_side: crate::queries::ReadSide,
    // --- end section: issue 5 ---
    // --- section: auth and dashboard (issue 6) ---
    pub auth: Arc<crate::auth::Authenticator>,
    /// The effective, non-secret configuration (`GET /v1/server/config`).
    pub server_config: Arc<crate::server_config::ServerConfigView>,
    // --- end section: issue 6 ---
    // --- section: pricing, billing, settings (issue 7) ---
    /// Plans, billing, settings, backups and the self-test; `None` on processes that do not
    /// serve them (the issue-7 routes then answer 503).
    pub operations: Option<crate::operations::OperationsServices>,
    // --- end section: issue 7 ---
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

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    pub fn auth(&self) -> &crate::auth::Authenticator {
        &self.inner.auth
    }

    /// Every service, for handlers that need one not given an accessor above.
    pub fn services(&self) -> &Inner {
        &self.inner
    }
}
