use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    nats: async_nats::Client,
    metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(pool: PgPool, nats: async_nats::Client, metrics: PrometheusHandle) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                nats,
                metrics,
            }),
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
}
