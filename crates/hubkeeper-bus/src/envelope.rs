//! The message every relayed event travels in. This is a compatibility boundary for every
//! consumer (our projectors and the app's own): fields are only ever added, and
//! `envelope_version` changes if a field's meaning does.

use chrono::{DateTime, Utc};
use hubkeeper_store::StoredEvent;
use serde::{Deserialize, Serialize};

pub const ENVELOPE_VERSION: u32 = 1;

/// Prefix of every event subject: `hk.events.<aggregate_type>.<aggregate_id>`.
pub const EVENT_SUBJECT_PREFIX: &str = "hk.events";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayedEvent {
    pub envelope_version: u32,
    pub global_position: i64,
    /// Transaction id as a string: it can exceed what JSON numbers carry exactly.
    pub tx_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl RelayedEvent {
    /// The JetStream message id: JetStream drops a republished event with the same id inside the
    /// stream's duplicate window.
    pub fn message_id(&self) -> String {
        message_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }

    pub fn subject(&self) -> String {
        event_subject(&self.aggregate_type, &self.aggregate_id)
    }
}

impl From<StoredEvent> for RelayedEvent {
    fn from(e: StoredEvent) -> Self {
        Self {
            envelope_version: ENVELOPE_VERSION,
            global_position: e.global_position,
            tx_id: e.tx_id.to_string(),
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }
    }
}

pub fn message_id(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    format!("{aggregate_type}:{aggregate_id}:{sequence}")
}

/// Subject tokens may not contain `.`, `*`, `>` or whitespace; anything outside a safe set is
/// replaced so that no id can address another subject.
pub fn event_subject(aggregate_type: &str, aggregate_id: &str) -> String {
    format!(
        "{EVENT_SUBJECT_PREFIX}.{}.{}",
        subject_token(aggregate_type),
        subject_token(aggregate_id)
    )
}

pub fn subject_token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".into();
    }
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_cannot_be_escaped() {
        assert_eq!(
            event_subject("installation", "a.b"),
            "hk.events.installation.a_b"
        );
        assert_eq!(event_subject("app", "*"), "hk.events.app._");
        assert_eq!(event_subject("app", ">"), "hk.events.app._");
        assert_eq!(event_subject("app", ""), "hk.events.app._");
        assert_eq!(
            event_subject("installation", "0b6c7c1e-1111-4aaa-8bbb-123456789abc"),
            "hk.events.installation.0b6c7c1e-1111-4aaa-8bbb-123456789abc"
        );
    }

    #[test]
    fn message_id_names_aggregate_and_sequence() {
        assert_eq!(message_id("app", "x", 7), "app:x:7");
    }
}
