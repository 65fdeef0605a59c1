//! Webhook delivery the way HubSpot does it: JSON batches of up to 100 events, signed over the
//! exact bytes and URL, retried on timeout, connection failure or any non-2xx along a schedule
//! with jitter, at most 10 requests in flight per account, duplicates on request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hubkeeper_hubspot::signature::{sign_v1, sign_v2, sign_v3, SignatureVersion};
use rand::seq::index::sample;
use rand::Rng;
use serde_json::{json, Map, Value};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::{
    AttemptOutcome, AttemptReport, BatchReport, BatchStatus, ClientSecret, DeliverRequest,
    DeliveryReport, DeliveryState, GenerateEvents,
};
use crate::state::SimState;

/// HubSpot's cap on events per request.
const MAX_BATCH: usize = 100;
/// HubSpot retries a failed delivery at most this many times.
const MAX_RETRIES: usize = 10;
/// Finished deliveries kept for `GET /_sim/webhooks/status`.
const DELIVERY_HISTORY: usize = 1000;

/// Why a delivery request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliverError {
    #[error("unknown client_id {0}")]
    UnknownApp(String),
    #[error("{0}")]
    Invalid(String),
}

struct PlannedBatch {
    index: usize,
    portal_id: u64,
    events: Vec<Map<String, Value>>,
    duplicate: bool,
}

struct Job {
    id: Uuid,
    url: url::Url,
    secret: ClientSecret,
    signatures: Vec<SignatureVersion>,
    timeout: Duration,
    schedule: Vec<Duration>,
    cancel: CancellationToken,
}

fn invalid(message: impl Into<String>) -> DeliverError {
    DeliverError::Invalid(message.into())
}

fn generated_event(app_id: u64, g: &GenerateEvents, rng: &mut impl Rng) -> Map<String, Value> {
    let subscription_type = g
        .subscription_type
        .clone()
        .unwrap_or_else(|| "contact.propertyChange".to_string());
    let mut event = json!({
        "eventId": rng.gen_range(1_000_000_000u64..5_000_000_000),
        "subscriptionId": 25,
        "portalId": g.portal_id,
        "appId": app_id,
        "occurredAt": Utc::now().timestamp_millis(),
        "subscriptionType": subscription_type,
        "attemptNumber": 0,
        "objectId": rng.gen_range(1_000u64..10_000_000),
        "changeSource": "CRM",
    });
    if subscription_type.ends_with(".propertyChange") {
        const STAGES: [&str; 4] = ["subscriber", "lead", "opportunity", "customer"];
        event["propertyName"] = json!("lifecyclestage");
        event["propertyValue"] = json!(STAGES[rng.gen_range(0..STAGES.len())]);
    }
    match event {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Completes a caller-supplied event with the fields HubSpot always sends.
fn complete_event(
    app_id: u64,
    value: Value,
    rng: &mut impl Rng,
) -> Result<Map<String, Value>, DeliverError> {
    let Value::Object(mut event) = value else {
        return Err(invalid("every event must be a JSON object"));
    };
    if !event.get("portalId").is_some_and(Value::is_u64) {
        return Err(invalid("every event needs a numeric portalId"));
    }
    event
        .entry("eventId")
        .or_insert_with(|| json!(rng.gen_range(1_000_000_000u64..5_000_000_000)));
    event.entry("subscriptionId").or_insert_with(|| json!(25));
    event.entry("appId").or_insert_with(|| json!(app_id));
    event
        .entry("occurredAt")
        .or_insert_with(|| json!(Utc::now().timestamp_millis()));
    Ok(event)
}

fn portal_of(event: &Map<String, Value>) -> u64 {
    event.get("portalId").and_then(Value::as_u64).unwrap_or(0)
}

/// Groups events by portal (concurrency is per account) and chunks them into batches.
fn batches_of(
    events: Vec<Map<String, Value>>,
    batch_size: usize,
    duplicate: bool,
    next_index: &mut usize,
) -> Vec<PlannedBatch> {
    let mut portals: Vec<(u64, Vec<Map<String, Value>>)> = Vec::new();
    for e in events {
        let p = portal_of(&e);
        match portals.iter_mut().find(|(id, _)| *id == p) {
            Some((_, list)) => list.push(e),
            None => portals.push((p, vec![e])),
        }
    }
    let mut out = Vec::new();
    for (portal_id, list) in portals {
        for chunk in list.chunks(batch_size) {
            out.push(PlannedBatch {
                index: *next_index,
                portal_id,
                events: chunk.to_vec(),
                duplicate,
            });
            *next_index += 1;
        }
    }
    out
}

/// Validates and plans a delivery, registers it and starts it in the background.
pub(crate) fn start(
    state: &SimState,
    req: DeliverRequest,
) -> Result<(Uuid, JoinHandle<()>), DeliverError> {
    if req.batch_size == 0 || req.batch_size > MAX_BATCH {
        return Err(invalid(format!(
            "batch_size must be between 1 and {MAX_BATCH}"
        )));
    }
    if !(0.0..=1.0).contains(&req.duplicate_rate) {
        return Err(invalid("duplicate_rate must be between 0 and 1"));
    }
    if req.timeout_ms == 0 {
        return Err(invalid("timeout_ms must be positive"));
    }
    let url = url::Url::parse(&req.target_url)
        .map_err(|e| invalid(format!("target_url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("target_url must be http or https"));
    }
    if req.signature_versions.contains(&SignatureVersion::V1)
        && req.signature_versions.contains(&SignatureVersion::V2)
    {
        return Err(invalid(
            "v1 and v2 both use the X-HubSpot-Signature header; ask for one of them",
        ));
    }
    let (app_id, secret, schedule, cancel) = {
        let store = state.lock();
        let app = store
            .apps
            .get(&req.client_id)
            .ok_or_else(|| DeliverError::UnknownApp(req.client_id.clone()))?;
        (
            app.app_id,
            app.client_secret.clone(),
            store.settings.webhook_retry_schedule.clone(),
            store.deliveries_cancel.child_token(),
        )
    };
    let mut rng = rand::thread_rng();
    let mut events = Vec::new();
    for e in req.events {
        events.push(complete_event(app_id, e, &mut rng)?);
    }
    if let Some(g) = &req.generate {
        events.extend((0..g.count).map(|_| generated_event(app_id, g, &mut rng)));
    }
    if events.is_empty() {
        return Err(invalid("nothing to deliver: give events or generate"));
    }
    let duplicates: Vec<Map<String, Value>> = {
        let n = ((events.len() as f64) * req.duplicate_rate).round() as usize;
        let mut picked: Vec<usize> = sample(&mut rng, events.len(), n.min(events.len())).into_vec();
        picked.sort_unstable();
        picked.into_iter().map(|i| events[i].clone()).collect()
    };
    let mut next_index = 0;
    let mut plan = batches_of(events, req.batch_size, false, &mut next_index);
    plan.extend(batches_of(
        duplicates,
        req.batch_size,
        true,
        &mut next_index,
    ));

    let id = Uuid::new_v4();
    let report = DeliveryReport {
        id,
        client_id: req.client_id.clone(),
        target_url: url.to_string(),
        state: DeliveryState::Running,
        started_at: Utc::now(),
        finished_at: None,
        delivered_batches: 0,
        failed_batches: 0,
        total_attempts: 0,
        batches: plan
            .iter()
            .map(|b| BatchReport {
                index: b.index,
                portal_id: b.portal_id,
                event_ids: b
                    .events
                    .iter()
                    .map(|e| e.get("eventId").cloned().unwrap_or(Value::Null))
                    .collect(),
                duplicate: b.duplicate,
                status: BatchStatus::Pending,
                attempts: Vec::new(),
            })
            .collect(),
    };
    {
        let mut store = state.lock();
        if store.deliveries.len() >= DELIVERY_HISTORY {
            let oldest = store
                .deliveries
                .iter()
                .filter(|(_, d)| d.state != DeliveryState::Running)
                .min_by_key(|(_, d)| d.started_at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                store.deliveries.remove(&oldest);
            }
        }
        store.deliveries.insert(id, report);
    }
    let job = Arc::new(Job {
        id,
        url,
        secret,
        signatures: req.signature_versions,
        timeout: Duration::from_millis(req.timeout_ms),
        schedule: schedule.into_iter().take(MAX_RETRIES).collect(),
        cancel,
    });
    let handle = tokio::spawn(run(state.clone(), job, plan));
    Ok((id, handle))
}

fn update_batch(state: &SimState, id: Uuid, index: usize, f: impl FnOnce(&mut BatchReport)) {
    let mut store = state.lock();
    if let Some(report) = store.deliveries.get_mut(&id) {
        if let Some(batch) = report.batches.iter_mut().find(|b| b.index == index) {
            f(batch);
        }
        report.delivered_batches = report
            .batches
            .iter()
            .filter(|b| b.status == BatchStatus::Delivered)
            .count();
        report.failed_batches = report
            .batches
            .iter()
            .filter(|b| b.status == BatchStatus::Failed)
            .count();
        report.total_attempts = report.batches.iter().map(|b| b.attempts.len()).sum();
    }
}

/// Originals first, duplicates after every original settled: a duplicate always arrives in a
/// later request than its original.
async fn run(state: SimState, job: Arc<Job>, plan: Vec<PlannedBatch>) {
    let (originals, duplicates): (Vec<_>, Vec<_>) = plan.into_iter().partition(|b| !b.duplicate);
    for wave in [originals, duplicates] {
        let mut set = JoinSet::new();
        for batch in wave {
            set.spawn(deliver_batch(state.clone(), job.clone(), batch));
        }
        while set.join_next().await.is_some() {}
    }
    let mut store = state.lock();
    if let Some(report) = store.deliveries.get_mut(&job.id) {
        report.state = if job.cancel.is_cancelled() {
            DeliveryState::Cancelled
        } else {
            DeliveryState::Completed
        };
        report.finished_at = Some(Utc::now());
    }
}

fn jittered(base: Duration, rng: &mut impl Rng) -> Duration {
    base.mul_f64(rng.gen_range(0.75..1.25))
}

async fn deliver_batch(state: SimState, job: Arc<Job>, batch: PlannedBatch) {
    let attempts = 1 + job.schedule.len();
    let semaphore = state.account_semaphore(batch.portal_id);
    for attempt in 0..attempts {
        let permit = tokio::select! {
            p = semaphore.clone().acquire_owned() => p,
            _ = job.cancel.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        update_batch(&state, job.id, batch.index, |b| {
            b.status = BatchStatus::InFlight
        });
        let at = Utc::now();
        let started = Instant::now();
        let outcome = tokio::select! {
            o = send(&state, &job, &batch, attempt as u32) => o,
            _ = job.cancel.cancelled() => break,
        };
        drop(permit);
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let success = outcome.is_success();
        tracing::debug!(delivery = %job.id, batch = batch.index, attempt, ?outcome, "webhook attempt");
        let last = attempt + 1 == attempts;
        update_batch(&state, job.id, batch.index, |b| {
            b.attempts.push(AttemptReport {
                attempt_number: attempt as u32,
                at,
                outcome,
                latency_ms,
            });
            b.status = if success {
                BatchStatus::Delivered
            } else if last {
                BatchStatus::Failed
            } else {
                BatchStatus::WaitingRetry
            };
        });
        if success || last {
            return;
        }
        let delay = jittered(job.schedule[attempt], &mut rand::thread_rng());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = job.cancel.cancelled() => break,
        }
    }
    update_batch(&state, job.id, batch.index, |b| {
        if !matches!(b.status, BatchStatus::Delivered | BatchStatus::Failed) {
            b.status = BatchStatus::Cancelled;
        }
    });
}

/// One signed POST. The signatures cover exactly the bytes and URL sent.
async fn send(state: &SimState, job: &Job, batch: &PlannedBatch, attempt: u32) -> AttemptOutcome {
    let events: Vec<Value> = batch
        .events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.insert("attemptNumber".to_string(), json!(attempt));
            Value::Object(e)
        })
        .collect();
    let body = match serde_json::to_vec(&events) {
        Ok(b) => b,
        Err(e) => {
            return AttemptOutcome::Transport {
                message: format!("cannot serialise batch: {e}"),
            }
        }
    };
    let uri = job.url.as_str();
    let secret = job.secret.expose();
    let mut request = state
        .inner
        .webhook_http
        .post(job.url.clone())
        .timeout(job.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for version in &job.signatures {
        request = match version {
            SignatureVersion::V1 => request
                .header("X-HubSpot-Signature", sign_v1(secret, &body))
                .header("X-HubSpot-Signature-Version", "v1"),
            SignatureVersion::V2 => request
                .header("X-HubSpot-Signature", sign_v2(secret, "POST", uri, &body))
                .header("X-HubSpot-Signature-Version", "v2"),
            SignatureVersion::V3 => {
                let ts = Utc::now().timestamp_millis();
                request
                    .header(
                        "X-HubSpot-Signature-v3",
                        sign_v3(secret, "POST", uri, &body, ts),
                    )
                    .header("X-HubSpot-Request-Timestamp", ts.to_string())
            }
        };
    }
    match request.body(body).send().await {
        Ok(response) => AttemptOutcome::Http {
            status: response.status().as_u16(),
        },
        Err(e) if e.is_timeout() => AttemptOutcome::Timeout,
        Err(e) => AttemptOutcome::Transport {
            message: error_chain(&e),
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(portal: u64, id: u64) -> Map<String, Value> {
        match json!({"portalId": portal, "eventId": id}) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn batches_group_by_portal_and_respect_size() {
        let events = vec![ev(1, 1), ev(2, 2), ev(1, 3), ev(1, 4), ev(2, 5)];
        let mut next = 0;
        let batches = batches_of(events, 2, false, &mut next);
        let shape: Vec<(u64, usize)> = batches
            .iter()
            .map(|b| (b.portal_id, b.events.len()))
            .collect();
        assert_eq!(shape, vec![(1, 2), (1, 1), (2, 2)]);
        assert_eq!(next, 3);
    }

    #[test]
    fn supplied_events_are_completed_and_validated() {
        let mut rng = rand::thread_rng();
        let e = complete_event(
            9,
            json!({"portalId": 5, "subscriptionType": "deal.creation"}),
            &mut rng,
        )
        .unwrap();
        assert_eq!(e["appId"], json!(9));
        assert!(e["eventId"].is_u64() && e["occurredAt"].is_i64());
        assert!(complete_event(9, json!({"subscriptionType": "x"}), &mut rng).is_err());
        assert!(complete_event(9, json!([1]), &mut rng).is_err());
    }
}
