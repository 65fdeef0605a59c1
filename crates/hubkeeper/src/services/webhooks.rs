//! HubSpot webhooks: their streams, the ingestion the API runs, and the worker that routes
//! stored batches.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_nats::jetstream;
use hubkeeper_api::state::TokenServices;
use hubkeeper_core::CommandBus;
use hubkeeper_domain::DomainServices;
use hubkeeper_webhooks::{
    ensure_webhook_streams, AppServiceCredentials, IngestConfig, WebhookIngest,
    WebhookStreamsConfig, WebhookWorker, WebhookWorkerConfig,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The webhook streams (created when missing) and, on a process with token services, the
/// ingestion behind `POST /webhooks/hubspot/{app_id}`.
pub async fn ingest(
    config: &Config,
    js: &jetstream::Context,
    tokens: Option<&TokenServices>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Arc<WebhookIngest>>> {
    let streams = WebhookStreamsConfig {
        replicas: config.nats.nats_replicas,
        events_max_age: config
            .webhook_ingest
            .webhook_events_max_age
            .max(Duration::from_secs(60)),
        ..WebhookStreamsConfig::default()
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match ensure_webhook_streams(js, &streams).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "webhook streams not ready; retrying in {delay:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(anyhow!("shut down while creating webhook streams")),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    let public_url = config
        .http
        .public_url
        .as_ref()
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{}", config.http.bind));
    let webhooks = tokens.map(|l| {
        Arc::new(WebhookIngest::new(
            js.clone(),
            Arc::new(AppServiceCredentials::new(l.apps.clone())),
            IngestConfig {
                public_url: public_url.clone(),
                max_body_bytes: config.webhook_ingest.webhook_max_body_bytes,
                max_age: config.webhook_ingest.webhook_max_age,
                ..IngestConfig::default()
            },
        ))
    });
    Ok(webhooks)
}

pub fn worker(config: &Config, pool: &PgPool, js: &jetstream::Context) -> WebhookWorker {
    WebhookWorker::new(
        pool.clone(),
        js.clone(),
        Arc::new(CommandBus::new(pool, DomainServices::system())),
        WebhookWorkerConfig {
            concurrency: config.webhook_worker.webhook_concurrency.max(1),
            ack_wait: config
                .webhook_worker
                .webhook_ack_wait
                .max(Duration::from_secs(1)),
            max_deliver: config.webhook_worker.webhook_max_deliver.max(1),
            backoff: config.webhook_worker.webhook_backoff.0.clone(),
            ..WebhookWorkerConfig::default()
        },
    )
}
