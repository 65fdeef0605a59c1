//! Stream definitions live in code and are applied at start-up by every role, idempotently:
//! `create_or_update_stream` converges a stream to this definition whichever process runs first.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::BusError;

pub const EVENTS_STREAM: &str = "HK_EVENTS";
/// Refresh commands from the scheduler to the refreshers: a work queue (a message is gone once a
/// refresher acknowledges it), deduplicated per installation and token generation.
pub const REFRESH_STREAM: &str = "HK_REFRESH";
pub const REFRESH_SUBJECT_PREFIX: &str = "hk.refresh";
/// Notification deliveries from the notifier's fan-out to its delivery workers: a work queue (a
/// message is gone once delivered or given up), `hk.notify.<app>.<endpoint>`, deduplicated by
/// `webhook-id` inside the duplicate window so a repeated fan-out queues nothing twice.
pub const NOTIFY_STREAM: &str = "HK_NOTIFY";
pub const NOTIFY_SUBJECT_PREFIX: &str = "hk.notify";
/// Every dead letter, whatever produced it, on `hk.dlq.<kind>` (`refresh`, `webhooks`, ...): one
/// place for operators to list, inspect and re-drive.
pub const DLQ_STREAM: &str = "HK_DLQ";
pub const DLQ_SUBJECT_PREFIX: &str = "hk.dlq";

#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// Window in which JetStream drops a republished `Nats-Msg-Id`. The relay republishes only
    /// what it sent after its last saved cursor, so this needs to cover a relay restart, not more.
    pub duplicate_window: Duration,
    /// Replicas per stream: 1 on a single node, 3 on the cluster in `nats/cluster/`.
    pub replicas: usize,
    /// Dedup window of refresh commands: a command for the same installation and token
    /// generation published again inside it is dropped. It should cover the scheduler's lead time,
    /// so a pending refresh is not enqueued twice.
    pub refresh_dedup_window: Duration,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            refresh_dedup_window: Duration::from_secs(600),
        }
    }
}

pub fn events_stream_config(config: &StreamsConfig) -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.into(),
        description: Some("Every event of the Hubkeeper event store, in commit order".into()),
        subjects: vec![format!("{}.>", crate::envelope::EVENT_SUBJECT_PREFIX)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        allow_direct: true,
        ..Default::default()
    }
}

pub fn refresh_stream_config(config: &StreamsConfig) -> stream::Config {
    stream::Config {
        name: REFRESH_STREAM.into(),
        description: Some("Refresh commands: scheduler -> refreshers".into()),
        subjects: vec![format!("{REFRESH_SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.refresh_dedup_window,
        ..Default::default()
    }
}

pub fn notify_stream_config(config: &StreamsConfig) -> stream::Config {
    stream::Config {
        name: NOTIFY_STREAM.into(),
        description: Some("Notification deliveries: notifier fan-out -> notifier delivery".into()),
        subjects: vec![format!("{NOTIFY_SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    }
}

pub fn dlq_stream_config(config: &StreamsConfig) -> stream::Config {
    stream::Config {
        name: DLQ_STREAM.into(),
        description: Some("Dead letters of every worker, by kind".into()),
        subjects: vec![format!("{DLQ_SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_age: Duration::from_secs(30 * 24 * 3600),
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates or updates every stream Hubkeeper uses.
pub async fn ensure_streams(
    js: &jetstream::Context,
    config: &StreamsConfig,
) -> Result<(), BusError> {
    js.create_or_update_stream(events_stream_config(config))
        .await
        .map_err(|e| BusError::JetStream(format!("stream {EVENTS_STREAM}: {e}")))?;
    for (name, definition) in [
        (REFRESH_STREAM, refresh_stream_config(config)),
        (NOTIFY_STREAM, notify_stream_config(config)),
        (DLQ_STREAM, dlq_stream_config(config)),
    ] {
        js.create_or_update_stream(definition)
            .await
            .map_err(|e| BusError::JetStream(format!("stream {name}: {e}")))?;
    }
    Ok(())
}
