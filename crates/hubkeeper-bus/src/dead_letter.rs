//! The dead-letter stream `HK_DLQ` (`hk.dlq.<kind>`), shared by every worker: its one writer
//! ([`write`], called by the consume loop of [`crate::consume`]) and its one reader ([`list`],
//! [`show`], [`redrive`]) behind both the API and the CLI.
//!
//! A dead letter is the original payload and original headers (every one but `Nats-Msg-Id`)
//! plus the same four headers for every kind: [`HEADER_REASON`], [`HEADER_SOURCE_SUBJECT`],
//! [`HEADER_DELIVERIES`] and [`HEADER_DEAD_AT`]. Re-driving publishes the payload and the original
//! headers to the source subject again (with a fresh message id, so the source stream's duplicate
//! window does not drop it) and, once JetStream has stored it, deletes the dead letter.
//! Re-driving is safe to repeat: every consumer is idempotent.

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::streams::{DLQ_STREAM, DLQ_SUBJECT_PREFIX};

/// Why the message was dead-lettered (one line, at most [`REASON_MAX_CHARS`] characters).
pub const HEADER_REASON: &str = "Hk-Dlq-Reason";
/// The subject the message was consumed from, where a re-drive sends it back.
pub const HEADER_SOURCE_SUBJECT: &str = "Hk-Dlq-Source-Subject";
/// How many times it was delivered before it was given up.
pub const HEADER_DELIVERIES: &str = "Hk-Dlq-Deliveries";
/// When it was given up (RFC 3339, UTC).
pub const HEADER_DEAD_AT: &str = "Hk-Dlq-At";
/// Every header this module adds starts with this; none of them is ever re-driven.
const OWN_HEADER_PREFIX: &str = "Hk-Dlq-";
/// Longest reason kept: header values must stay small.
pub const REASON_MAX_CHARS: usize = 300;

/// Dead-letter kinds (`hk.dlq.<kind>`) of the workers.
pub mod kind {
    /// Webhook batches (`hubkeeper_webhooks`).
    pub const WEBHOOKS: &str = "webhooks";
    /// Refresh commands (`hubkeeper_workers::refresher`).
    pub const REFRESH: &str = "refresh";
    /// Events the projector could not apply (`hubkeeper_projections::live`).
    pub const PROJECTOR: &str = "projector";
    /// Events the notifier could not turn into deliveries (`hubkeeper_core::notifications`).
    pub const NOTIFY_FANOUT: &str = "notify-fanout";
    /// Notification deliveries given up (`hubkeeper_core::notifications`).
    pub const NOTIFY: &str = "notify";
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("dead letter {0} has no source subject to re-drive to")]
    NoSource(u64),
    #[error("NATS: {0}")]
    Bus(String),
}

fn bus(e: impl std::fmt::Display) -> DeadLetterError {
    DeadLetterError::Bus(e.to_string())
}

/// One dead letter as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Sequence in `HK_DLQ`: the id to show or re-drive it.
    pub seq: u64,
    /// `webhooks`, `refresh`, `projector`, ...
    pub kind: String,
    pub reason: Option<String>,
    pub source_subject: Option<String>,
    pub deliveries: Option<i64>,
    pub dead_at: Option<String>,
    pub size: usize,
    /// The payload (JSON when it parses, else text or base64); only in [`show`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// Original headers (without the `Hk-Dlq-*` ones); only in [`show`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

/// Headers that travel with the payload: everything but the message id (a re-drive needs a
/// fresh one) and this module's own.
fn is_original(name: &str) -> bool {
    !name.starts_with(OWN_HEADER_PREFIX) && !name.eq_ignore_ascii_case("Nats-Msg-Id")
}

/// Copies the original headers (every value of each) that [`is_original`] keeps.
fn original_headers(headers: Option<&HeaderMap>) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if is_original(name) {
            for value in values {
                kept.append(name, value.as_str());
            }
        }
    }
    kept
}

fn one_line(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// The headers of a dead letter: the original ones plus the four this module defines.
pub fn dead_letter_headers(
    original: Option<&HeaderMap>,
    reason: &str,
    source_subject: &str,
    deliveries: i64,
    dead_at: DateTime<Utc>,
) -> HeaderMap {
    let mut headers = original_headers(original);
    headers.insert(HEADER_REASON, one_line(reason, REASON_MAX_CHARS).as_str());
    headers.insert(HEADER_SOURCE_SUBJECT, source_subject);
    headers.insert(HEADER_DELIVERIES, deliveries.to_string().as_str());
    headers.insert(HEADER_DEAD_AT, dead_at.to_rfc3339().as_str());
    headers
}

/// Copies `message` to `hk.dlq.<kind>` with `reason`; `Ok` once JetStream stored it. The caller
/// terminates the message after `Ok`, and leaves it to be redelivered after an error, so nothing
/// is lost. A repeat for the same source message is dropped by JetStream (the dead letter's
/// message id names the source stream sequence).
pub async fn write(
    js: &jetstream::Context,
    kind: &str,
    message: &jetstream::Message,
    reason: &str,
    deliveries: i64,
) -> Result<(), DeadLetterError> {
    let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let publish = PublishMessage::build()
        .payload(Bytes::copy_from_slice(&message.payload))
        .headers(dead_letter_headers(
            message.headers.as_ref(),
            reason,
            message.subject.as_str(),
            deliveries,
            Utc::now(),
        ))
        .message_id(format!("dlq:{kind}:{stream_seq}"));
    js.send_publish(format!("{DLQ_SUBJECT_PREFIX}.{kind}"), publish)
        .await
        .map_err(bus)?
        .await
        .map_err(bus)?;
    metrics::counter!("hk_dead_letters_total", "kind" => kind.to_owned()).increment(1);
    tracing::error!(kind, reason, deliveries, "message dead-lettered");
    Ok(())
}

fn describe(message: &jetstream::message::StreamMessage, full: bool) -> DeadLetter {
    let kind = message
        .subject
        .as_str()
        .strip_prefix(&format!("{DLQ_SUBJECT_PREFIX}."))
        .unwrap_or(message.subject.as_str())
        .to_owned();
    let h = &message.headers;
    let payload =
        full.then(
            || match serde_json::from_slice::<serde_json::Value>(&message.payload) {
                Ok(json) => json,
                Err(_) => match std::str::from_utf8(&message.payload) {
                    Ok(text) => serde_json::Value::String(text.to_owned()),
                    Err(_) => serde_json::json!({
                        "base64": base64::engine::general_purpose::STANDARD.encode(&message.payload)
                    }),
                },
            },
        );
    let headers = full.then(|| {
        h.iter()
            .filter(|(name, _)| is_original(name.as_ref()))
            .map(|(name, values)| {
                let name: &str = name.as_ref();
                let joined: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                (
                    name.to_owned(),
                    serde_json::Value::String(joined.join(", ")),
                )
            })
            .collect()
    });
    DeadLetter {
        seq: message.sequence,
        kind,
        reason: header(h, HEADER_REASON),
        source_subject: header(h, HEADER_SOURCE_SUBJECT),
        deliveries: header(h, HEADER_DELIVERIES).and_then(|d| d.parse().ok()),
        dead_at: header(h, HEADER_DEAD_AT),
        size: message.payload.len(),
        payload,
        headers,
    }
}

/// The newest dead letters first, optionally of one kind, at most `limit`; `before` pages back
/// (sequence to start below).
pub async fn list(
    js: &jetstream::Context,
    kind: Option<&str>,
    limit: usize,
    before: Option<u64>,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let mut stream = js.get_stream(DLQ_STREAM).await.map_err(bus)?;
    let info = stream.info().await.map_err(bus)?;
    let (first, last, count) = (
        info.state.first_sequence,
        info.state.last_sequence,
        info.state.messages,
    );
    let mut out = Vec::new();
    if count == 0 {
        return Ok(out);
    }
    let mut seq = before.map_or(last, |b| b.saturating_sub(1).min(last));
    while seq >= first && seq > 0 && out.len() < limit {
        match stream.get_raw_message(seq).await {
            Ok(message) => {
                let letter = describe(&message, false);
                if kind.is_none_or(|k| k == letter.kind) {
                    out.push(letter);
                }
            }
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(bus(e)),
        }
        seq -= 1;
    }
    Ok(out)
}

async fn fetch(
    js: &jetstream::Context,
    seq: u64,
) -> Result<jetstream::message::StreamMessage, DeadLetterError> {
    let stream = js.get_stream(DLQ_STREAM).await.map_err(bus)?;
    stream.get_raw_message(seq).await.map_err(|e| {
        if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound {
            DeadLetterError::NotFound(seq)
        } else {
            bus(e)
        }
    })
}

/// One dead letter with its payload and original headers.
pub async fn show(js: &jetstream::Context, seq: u64) -> Result<DeadLetter, DeadLetterError> {
    Ok(describe(&fetch(js, seq).await?, true))
}

/// Republishes dead letter `seq` to its source subject and deletes it; returns the source
/// subject.
pub async fn redrive(js: &jetstream::Context, seq: u64) -> Result<String, DeadLetterError> {
    let message = fetch(js, seq).await?;
    let source =
        header(&message.headers, HEADER_SOURCE_SUBJECT).ok_or(DeadLetterError::NoSource(seq))?;
    let publish = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(original_headers(Some(&message.headers)))
        .message_id(format!("redrive:{seq}:{}", Utc::now().timestamp_millis()));
    js.send_publish(source.clone(), publish)
        .await
        .map_err(bus)?
        .await
        .map_err(bus)?;
    let stream = js.get_stream(DLQ_STREAM).await.map_err(bus)?;
    stream.delete_message(seq).await.map_err(bus)?;
    metrics::counter!("hk_dead_letters_redriven_total").increment(1);
    tracing::info!(seq, %source, "dead letter re-driven");
    Ok(source)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .map(|v| v.as_str().to_owned())
            .collect()
    }

    #[test]
    fn dead_letters_keep_the_original_headers_and_add_the_same_four() {
        let mut original = HeaderMap::new();
        original.insert("Hk-App-Id", "app-1");
        original.append("X-Trace", "a");
        original.append("X-Trace", "b");
        original.insert("Nats-Msg-Id", "source-id");
        // From an earlier dead-lettering of a re-driven message: replaced, not doubled.
        original.insert(HEADER_REASON, "old reason");
        let dead_at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single();
        let headers = dead_letter_headers(
            Some(&original),
            "database down\nsecond line",
            "hk.webhooks.batches.app-1",
            10,
            dead_at.unwrap_or_default(),
        );
        assert_eq!(values(&headers, "Hk-App-Id"), ["app-1"]);
        assert_eq!(values(&headers, "X-Trace"), ["a", "b"]);
        assert!(values(&headers, "Nats-Msg-Id").is_empty());
        assert_eq!(
            values(&headers, HEADER_REASON),
            ["database down second line"]
        );
        assert_eq!(
            values(&headers, HEADER_SOURCE_SUBJECT),
            ["hk.webhooks.batches.app-1"]
        );
        assert_eq!(values(&headers, HEADER_DELIVERIES), ["10"]);
        assert_eq!(
            values(&headers, HEADER_DEAD_AT),
            ["2026-03-01T12:00:00+00:00"]
        );
    }

    #[test]
    fn messages_without_headers_still_get_all_four() {
        let headers = dead_letter_headers(None, &"x".repeat(1000), "hk.refresh.a", 6, Utc::now());
        assert_eq!(
            values(&headers, HEADER_REASON)
                .first()
                .map(|r| r.chars().count()),
            Some(REASON_MAX_CHARS)
        );
        for name in [HEADER_SOURCE_SUBJECT, HEADER_DELIVERIES, HEADER_DEAD_AT] {
            assert_eq!(values(&headers, name).len(), 1, "{name}");
        }
    }

    #[test]
    fn re_drives_carry_the_original_headers_only() {
        let mut stored = HeaderMap::new();
        stored.insert("Hk-Event-Type", "InstallationConnected");
        stored.insert("Nats-Msg-Id", "dlq:projector:7");
        stored.insert(HEADER_REASON, "gap");
        stored.insert(HEADER_DEAD_AT, "2026-03-01T12:00:00+00:00");
        let kept = original_headers(Some(&stored));
        assert_eq!(values(&kept, "Hk-Event-Type"), ["InstallationConnected"]);
        assert_eq!(kept.iter().count(), 1);
    }
}
