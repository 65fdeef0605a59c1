//! Signed v3 webhook batches of 1, 10 and 100 events accepted by an API process (verified,
//! stored durably in JetStream, answered), against a plain client publishing the same bytes to
//! JetStream and waiting for the acknowledgement.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use hubkeeper_hubspot::signature::{sign_v3, HEADER_REQUEST_TIMESTAMP, HEADER_SIGNATURE_V3};
use hubkeeper_sim::SimConfig;
use serde::Serialize;

use super::load::{built_requests, closed_loop, LoadFigures, RawRequest};
use super::stack::{Stack, CLIENT_SECRET, HUB_BASE};
use super::{Goal, Goals};

#[derive(Debug, Serialize)]
pub struct WebhookFigures {
    pub seconds_per_run: u64,
    /// `GET /healthz` of the same API process by the same clients: the HTTP stack alone (every
    /// middleware, no body, no verification, no publish) on these cores, above any intake rate.
    pub http_floor: LoadFigures,
    pub runs: Vec<WebhookRun>,
}

#[derive(Debug, Serialize)]
pub struct WebhookRun {
    pub batch_events: usize,
    pub body_bytes: usize,
    pub hubkeeper: LoadFigures,
    pub baseline: LoadFigures,
    pub hubkeeper_events_per_second: f64,
    /// Hubkeeper's request rate over the baseline's (goal: at least 0.5).
    pub ratio: f64,
    /// The HTTP floor's rate over the baseline's: more than any intake could reach here.
    pub ceiling_ratio: f64,
    /// The ratio of an intake whose whole cost were the HTTP floor's plus the baseline's publish,
    /// when both saturate the same cores (their costs per request add up):
    /// `floor / (floor + baseline)`. A closer estimate of the reachable than `ceiling_ratio`.
    pub composed_ceiling_ratio: f64,
}

/// A batch as HubSpot sends it; event ids continue from `next_id`. Written straight as JSON
/// text (the same document `serde_json` would write for these fields): both sides of the
/// comparison build a fresh batch per call, and the load generator shares the cores it measures.
fn batch(events: usize, next_id: &AtomicI64) -> Bytes {
    use std::fmt::Write;
    let now = chrono::Utc::now().timestamp_millis();
    let mut json = String::with_capacity(events * 300 + 2);
    json.push('[');
    for i in 0..events {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if i > 0 {
            json.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(
            json,
            "{{\"appId\":5151,\"attemptNumber\":0,\"changeSource\":\"CRM\",\"eventId\":{id},\
             \"objectId\":{object},\"occurredAt\":{now},\"portalId\":{portal},\
             \"propertyName\":\"email\",\"propertyValue\":\"person{id}@example.com\",\
             \"subscriptionId\":4100001,\"subscriptionType\":\"contact.propertyChange\"}}",
            object = 1_000_000 + i,
            portal = HUB_BASE + (id as u64 % 50),
        );
    }
    json.push(']');
    Bytes::from(json)
}

pub async fn run(
    tools: PathBuf,
    sizes: &[usize],
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<WebhookFigures> {
    let mut stack = Stack::start(tools, SimConfig::default()).await?;
    let api = stack.spawn("api", &["api"], &[]).await?;
    let app = stack.register_app(api).await?;
    let url = format!("{}/webhooks/hubspot/{app}", stack.base(api));

    let js = hubkeeper_bus::jetstream(stack.nats.clone());
    // The baseline's stream: file storage like the webhook stream, acknowledged publishes.
    js.get_or_create_stream(jetstream::stream::Config {
        name: "BENCH_BASELINE".into(),
        subjects: vec!["bench.baseline.>".into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let duration = Duration::from_secs(seconds);
    let http_floor = stack.http_floor(api, concurrency, duration).await;
    let next_id = Arc::new(AtomicI64::new(1));
    let mut runs = Vec::new();
    for &events in sizes {
        let sample = batch(events, &next_id);
        let hubkeeper = {
            let url = url.clone();
            let next_id = next_id.clone();
            built_requests(concurrency, duration, move |_, _| {
                let body = batch(events, &next_id);
                let ts = chrono::Utc::now().timestamp_millis();
                let signature = sign_v3(CLIENT_SECRET, "POST", &url, &body, ts);
                RawRequest::new(
                    "POST",
                    &url,
                    &[
                        ("content-type", "application/json"),
                        (HEADER_SIGNATURE_V3, &signature),
                        (HEADER_REQUEST_TIMESTAMP, &ts.to_string()),
                    ],
                    &body,
                )
            })
            .await
        };
        eprintln!(
            "{}",
            hubkeeper.line(&format!("webhooks x{events} (hubkeeper)"))
        );
        let baseline = {
            let js = js.clone();
            let next_id = next_id.clone();
            closed_loop(concurrency, duration, move |client, _| {
                let js = js.clone();
                let body = batch(events, &next_id);
                async move {
                    match js.publish(format!("bench.baseline.{client}"), body).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await
        };
        eprintln!(
            "{}",
            baseline.line(&format!("webhooks x{events} (jetstream)"))
        );
        let run = WebhookRun {
            batch_events: events,
            body_bytes: sample.len(),
            hubkeeper_events_per_second: hubkeeper.per_second * events as f64,
            ratio: hubkeeper.per_second / baseline.per_second.max(f64::MIN_POSITIVE),
            ceiling_ratio: http_floor.per_second / baseline.per_second.max(f64::MIN_POSITIVE),
            composed_ceiling_ratio: http_floor.per_second
                / (http_floor.per_second + baseline.per_second).max(f64::MIN_POSITIVE),
            hubkeeper,
            baseline,
        };
        eprintln!(
            "webhooks x{events}: {:.2} of JetStream; the HTTP floor alone {:.2}, floor plus publish {:.2}",
            run.ratio, run.ceiling_ratio, run.composed_ceiling_ratio
        );
        runs.push(run);
    }
    Ok(WebhookFigures {
        seconds_per_run: seconds,
        http_floor,
        runs,
    })
}

impl Goals for WebhookFigures {
    /// At 1 and 10 events per batch, at least half a raw JetStream publisher's rate; at 100,
    /// p99 under 10 ms.
    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for run in &self.runs {
            if run.batch_events <= 10 {
                goals.push(Goal::at_least(
                    format!("webhooks_{}_per_batch_vs_jetstream", run.batch_events),
                    run.ratio,
                    0.5,
                    "x baseline",
                ));
            }
            if run.batch_events >= 100 {
                goals.push(Goal::below(
                    format!("webhooks_{}_per_batch_p99", run.batch_events),
                    run.hubkeeper.p99_ms,
                    10.0,
                    "ms",
                ));
            }
        }
        goals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_valid_json_with_every_field_and_consecutive_ids() {
        let next_id = AtomicI64::new(7);
        let body = batch(3, &next_id);
        assert_eq!(hubkeeper_webhooks::batch::validate_batch(&body), Ok(3));
        let events: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("JSON");
        let ids: Vec<i64> = events
            .iter()
            .map(|e| e["eventId"].as_i64().expect("eventId"))
            .collect();
        assert_eq!(ids, [7, 8, 9]);
        assert_eq!(events[1]["propertyValue"], "person8@example.com");
        assert_eq!(events[2]["objectId"], 1_000_002);
        assert!(events
            .iter()
            .all(|e| e.as_object().map(|o| o.len()) == Some(11)));
        assert_eq!(next_id.load(Ordering::Relaxed), 10);
    }
}
