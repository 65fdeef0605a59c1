//! Stream definitions live in code and are applied at start-up by every role, idempotently:
//! `create_or_update_stream` converges a stream to this definition whichever process runs first.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::BusError;

pub const EVENTS_STREAM: &str = "HK_EVENTS";

#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// Window in which JetStream drops a republished `Nats-Msg-Id`. The relay republishes only
    /// what it sent after its last saved cursor, so this needs to cover a relay restart, not more.
    pub duplicate_window: Duration,
    /// Replicas per stream: 1 on a single node, 3 on the cluster in `nats/cluster/`.
    pub replicas: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
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

/// Creates or updates every stream Hubkeeper uses.
pub async fn ensure_streams(
    js: &jetstream::Context,
    config: &StreamsConfig,
) -> Result<(), BusError> {
    js.create_or_update_stream(events_stream_config(config))
        .await
        .map_err(|e| BusError::JetStream(format!("stream {EVENTS_STREAM}: {e}")))?;
    Ok(())
}
