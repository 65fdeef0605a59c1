//! The dead-letter stream `HK_DLQ` (`hk.dlq.<kind>`), shared by every worker: webhook batches,
//! refresh commands, projector events. Operators list, inspect and re-drive its messages.
//!
//! A dead letter is the original payload and headers plus `Hk-Dlq-Reason`,
//! `Hk-Dlq-Source-Subject` and `Hk-Dlq-Deliveries`. Re-driving publishes the payload and the
//! original headers to the source subject again (with a fresh message id, so the source stream's
//! duplicate window does not drop it) and, once JetStream has stored it, deletes the dead letter.
//! Re-driving is safe to repeat: every consumer is idempotent.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, AckKind};
use async_nats::HeaderMap;
use base64::Engine;
use bytes::Bytes;
use hubkeeper_bus::{DLQ_STREAM, DLQ_SUBJECT_PREFIX};
use serde::Serialize;

pub const HEADER_REASON: &str = "Hk-Dlq-Reason";
pub const HEADER_SOURCE_SUBJECT: &str = "Hk-Dlq-Source-Subject";
pub const HEADER_DELIVERIES: &str = "Hk-Dlq-Deliveries";
pub const HEADER_DEAD_AT: &str = "Hk-Dlq-At";

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("dead letter {0} has no source subject to re-drive to")]
    NoSource(u64),
    #[error("NATS: {0}")]
    Bus(String),
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

fn one_line(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// Copies `message` to `hk.dlq.<kind>` with the reason and terminates it; if the copy is not
/// stored, NAKs it instead so it is not lost.
pub async fn dead_letter(
    js: &jetstream::Context,
    kind: &str,
    message: &jetstream::Message,
    reason: &str,
    delivered: i64,
) {
    let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mut publish = PublishMessage::build()
        .payload(Bytes::copy_from_slice(&message.payload))
        .message_id(format!("dlq:{kind}:{stream_seq}"));
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case("Nats-Msg-Id") || name.starts_with("Hk-Dlq-") {
                continue;
            }
            for value in values {
                publish = publish.header(name, value.as_str());
            }
        }
    }
    let publish = publish
        .header(HEADER_REASON, one_line(reason, 300).as_str())
        .header(HEADER_SOURCE_SUBJECT, message.subject.as_str())
        .header(HEADER_DELIVERIES, delivered.to_string().as_str())
        .header(HEADER_DEAD_AT, chrono::Utc::now().to_rfc3339().as_str());
    let stored = match js
        .send_publish(format!("{DLQ_SUBJECT_PREFIX}.{kind}"), publish)
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if stored {
        metrics::counter!("hk_dead_letters_total", "kind" => kind.to_owned()).increment(1);
        tracing::error!(kind, reason, delivered, "message dead-lettered");
        let _ = message.ack_with(AckKind::Term).await;
    } else {
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
            .await;
    }
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
            .filter(|(name, _)| {
                let name: &str = name.as_ref();
                !name.starts_with("Hk-Dlq-") && !name.eq_ignore_ascii_case("Nats-Msg-Id")
            })
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
) -> Result<Vec<DeadLetter>, DlqError> {
    let mut stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(|e| DlqError::Bus(e.to_string()))?;
    let info = stream
        .info()
        .await
        .map_err(|e| DlqError::Bus(e.to_string()))?;
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
            Err(e) => return Err(DlqError::Bus(e.to_string())),
        }
        seq -= 1;
    }
    Ok(out)
}

async fn fetch(
    js: &jetstream::Context,
    seq: u64,
) -> Result<jetstream::message::StreamMessage, DlqError> {
    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(|e| DlqError::Bus(e.to_string()))?;
    stream.get_raw_message(seq).await.map_err(|e| {
        if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound {
            DlqError::NotFound(seq)
        } else {
            DlqError::Bus(e.to_string())
        }
    })
}

/// One dead letter with its payload and original headers.
pub async fn show(js: &jetstream::Context, seq: u64) -> Result<DeadLetter, DlqError> {
    Ok(describe(&fetch(js, seq).await?, true))
}

/// Republishes dead letter `seq` to its source subject and deletes it; returns the source
/// subject.
pub async fn redrive(js: &jetstream::Context, seq: u64) -> Result<String, DlqError> {
    let message = fetch(js, seq).await?;
    let source = header(&message.headers, HEADER_SOURCE_SUBJECT).ok_or(DlqError::NoSource(seq))?;
    let mut publish = PublishMessage::build()
        .payload(message.payload.clone())
        .message_id(format!(
            "redrive:{seq}:{}",
            chrono::Utc::now().timestamp_millis()
        ));
    for (name, values) in message.headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Hk-Dlq-") || name.eq_ignore_ascii_case("Nats-Msg-Id") {
            continue;
        }
        for value in values {
            publish = publish.header(name, value.as_str());
        }
    }
    let ack = js
        .send_publish(source.clone(), publish)
        .await
        .map_err(|e| DlqError::Bus(e.to_string()))?;
    ack.await.map_err(|e| DlqError::Bus(e.to_string()))?;
    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(|e| DlqError::Bus(e.to_string()))?;
    stream
        .delete_message(seq)
        .await
        .map_err(|e| DlqError::Bus(e.to_string()))?;
    metrics::counter!("hk_dead_letters_redriven_total").increment(1);
    tracing::info!(seq, %source, "dead letter re-driven");
    Ok(source)
}
