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
    // --- end section: issue 4 ---
    // --- section: webhooks, queries, audit (issue 5) ---
    // --- end section: issue 5 ---
    // --- section: auth and dashboard (issue 6) ---
    pub auth: Arc<crate::auth::Authenticator>,
    // --- end section: issue 6 ---
    // --- section: pricing, billing, settings (issue 7) ---
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
