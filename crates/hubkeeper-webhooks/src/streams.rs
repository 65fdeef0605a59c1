//! The JetStream streams of webhook processing, created idempotently at start-up by every role
//! that touches them (API and webhook workers).
//!
//! * `HK_WEBHOOKS` (`hk.webhook_batches.<app_id>`): raw, verified batches exactly as HubSpot sent
//!   them, a work queue: a batch is gone once a worker has processed it. File storage, so an
//!   accepted batch survives a NATS restart.
//! * `HK_WEBHOOK_EVENTS` (`hk.webhooks.<app_id>.<portal_id>.<subscription type>`): every verified,
//!   deduplicated event, one message each, kept for `events_max_age` for the app's own consumers
//!   (see docs/webhooks.md). The subscription type's dots become subject levels
//!   (`contact.propertyChange` → `...contact.propertyChange`), so consumers can filter on
//!   `hk.webhooks.<app>.*.contact.>`.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use hubkeeper_bus::envelope::subject_token;
use uuid::Uuid;

pub const BATCH_STREAM: &str = "HK_WEBHOOKS";
pub const BATCH_SUBJECT_PREFIX: &str = "hk.webhook_batches";
pub const EVENT_STREAM: &str = "HK_WEBHOOK_EVENTS";
pub const EVENT_SUBJECT_PREFIX: &str = "hk.webhooks";

#[derive(Debug, Clone)]
pub struct WebhookStreamsConfig {
    pub replicas: usize,
    /// How long verified events stay available to the app's consumers.
    pub events_max_age: Duration,
    /// Window in which a republished batch or event (same message id) is dropped: covers a
    /// worker crashing between publishing and recording.
    pub duplicate_window: Duration,
}

impl Default for WebhookStreamsConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(600),
        }
    }
}

pub fn batch_subject(app_id: Uuid) -> String {
    format!("{BATCH_SUBJECT_PREFIX}.{app_id}")
}

/// `hk.webhooks.<app>.<portal>.<subscription type, one level per dot-separated part>`.
pub fn event_subject(app_id: Uuid, portal_id: i64, subscription_type: &str) -> String {
    let parts: Vec<String> = subscription_type.split('.').map(subject_token).collect();
    format!(
        "{EVENT_SUBJECT_PREFIX}.{app_id}.{portal_id}.{}",
        parts.join(".")
    )
}

/// A webhook stream that could not be created or updated.
#[derive(Debug, thiserror::Error)]
#[error("stream {stream}: {source}")]
pub struct StreamSetupError {
    pub stream: &'static str,
    #[source]
    pub source: jetstream::context::CreateStreamError,
}

pub async fn ensure_webhook_streams(
    js: &jetstream::Context,
    config: &WebhookStreamsConfig,
) -> Result<(), StreamSetupError> {
    js.create_or_update_stream(stream::Config {
        name: BATCH_STREAM.into(),
        description: Some("Verified raw HubSpot webhook batches awaiting processing".into()),
        subjects: vec![format!("{BATCH_SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_age: Duration::from_secs(14 * 24 * 3600),
        ..Default::default()
    })
    .await
    .map_err(|source| StreamSetupError {
        stream: BATCH_STREAM,
        source,
    })?;
    js.create_or_update_stream(stream::Config {
        name: EVENT_STREAM.into(),
        description: Some(
            "Verified, deduplicated HubSpot webhook events for the app's consumers".into(),
        ),
        subjects: vec![format!("{EVENT_SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_age: config.events_max_age,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(|source| StreamSetupError {
        stream: EVENT_STREAM,
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_types_as_levels_and_cannot_escape() {
        let app = Uuid::nil();
        assert_eq!(
            event_subject(app, 33, "contact.propertyChange"),
            format!("hk.webhooks.{app}.33.contact.propertyChange")
        );
        assert_eq!(
            event_subject(app, 33, "a.*.>"),
            format!("hk.webhooks.{app}.33.a._._")
        );
        assert_eq!(batch_subject(app), format!("hk.webhook_batches.{app}"));
    }
}
