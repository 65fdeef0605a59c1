//! What `POST /webhooks/hubspot/{app_id}` refuses, and with which status and JSON answer: forged
//! and tampered signatures, replayed (stale) and future timestamps, versions the app does not
//! accept, missing headers and unknown apps all get one and the same 401 (app ids cannot be
//! probed); oversized bodies and malformed batches their own. Also measures the accept latency of
//! valid batches for the figures.

#[path = "support/read_side.rs"]
mod read_side;
#[path = "support/webhooks.rs"]
mod webhooks;

use std::time::Instant;

use chrono::Utc;
use hubkeeper_hubspot::signature::{sign_v1, sign_v3};
use hubkeeper_testkit::TestEnv;
use read_side::percentile;
use serde_json::{json, Value};
use webhooks::start_api;

const SECRET: &str = "5f0e7d3c-1b2a-4c5d-8e9f-0a1b2c3d4e5f";
const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const STRICT_CLIENT_ID: &str = "66666666-7777-4888-8999-aaaaaaaaaaaa";

fn batch(n: usize, portal: u64) -> Vec<u8> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"eventId": 1_000_000 + i, "subscriptionId": 25, "portalId": portal,
                   "appId": 1, "occurredAt": Utc::now().timestamp_millis(),
                   "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
                   "objectId": 500 + i, "propertyName": "lifecyclestage",
                   "propertyValue": "lead", "changeSource": "CRM"})
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

struct Sent {
    status: u16,
    body: Value,
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Sent {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let r = request.send().await.expect("request");
    Sent {
        status: r.status().as_u16(),
        body: r.json().await.unwrap_or(Value::Null),
    }
}

fn v3_headers(secret: &str, url: &str, body: &[u8], timestamp: i64) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-hubspot-signature-v3",
            sign_v3(secret, "POST", url, body, timestamp),
        ),
        ("x-hubspot-request-timestamp", timestamp.to_string()),
    ]
}

fn assert_rejected(sent: &Sent, status: u16, code: &str) {
    assert_eq!(sent.status, status, "{}", sent.body);
    assert_eq!(sent.body["error"]["code"], code, "{}", sent.body);
}

/// The one answer to every request that is not verified, whatever the cause (the cause is only
/// in the server's log and metrics).
fn assert_unverified(sent: &Sent) {
    assert_eq!(sent.status, 401, "{}", sent.body);
    assert_eq!(
        sent.body,
        json!({"error": {"code": "invalid_signature",
                         "message": hubkeeper_api::webhooks::UNVERIFIED_MESSAGE}}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_stale_oversized_and_malformed_requests_are_rejected() {
    let env = TestEnv::start().await;
    let hk = start_api(&env, &[("HK_WEBHOOK_MAX_BODY_BYTES", "65536")]).await;
    let app = hk
        .register_app(
            "Any signature",
            CLIENT_ID,
            SECRET,
            Some(&["v1", "v2", "v3"]),
        )
        .await;
    let strict = hk
        .register_app("v3 only", STRICT_CLIENT_ID, SECRET, Some(&["v3"]))
        .await;
    let url = hk.webhook_url(app);
    let http = reqwest::Client::new();
    let now = || Utc::now().timestamp_millis();

    // Valid: v3, and v1 for an app that accepts it. Latency of accepted batches for the figures.
    let mut latencies = Vec::new();
    for i in 0..200 {
        let body = batch(100, 40_000_000 + i);
        let headers = v3_headers(SECRET, &url, &body, now());
        let started = Instant::now();
        let sent = post(&http, &url, body, &headers).await;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(sent.status, 200, "{}", sent.body);
        assert_eq!(sent.body["accepted"], 100);
    }
    let body = batch(3, 41);
    let v1 = vec![
        ("x-hubspot-signature", sign_v1(SECRET, &body)),
        ("x-hubspot-signature-version", "v1".to_owned()),
    ];
    assert_eq!(post(&http, &url, body.clone(), &v1).await.status, 200);
    // The same request again is accepted (HubSpot retries) and recognised as a duplicate.
    let again = post(&http, &url, body, &v1).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["duplicate"], true);

    // Forged: signed with another secret.
    let body = batch(2, 42);
    let forged = v3_headers("not-the-secret", &url, &body, now());
    assert_unverified(&post(&http, &url, body, &forged).await);

    // Tampered: a correct signature over other bytes.
    let body = batch(2, 43);
    let headers = v3_headers(SECRET, &url, &body, now());
    let mut tampered = body.clone();
    let at = tampered
        .iter()
        .position(|b| *b == b'4')
        .expect("a digit to change");
    tampered[at] = b'5';
    assert_unverified(&post(&http, &url, tampered, &headers).await);
    // ...or signed for another URL (another app's endpoint).
    let headers = v3_headers(SECRET, &hk.webhook_url(strict), &body, now());
    assert_unverified(&post(&http, &url, body.clone(), &headers).await);

    // Replayed: a correctly signed request from ten minutes ago.
    let stale = v3_headers(SECRET, &url, &body, now() - 10 * 60 * 1000);
    assert_unverified(&post(&http, &url, body.clone(), &stale).await);
    let future = v3_headers(SECRET, &url, &body, now() + 10 * 60 * 1000);
    assert_unverified(&post(&http, &url, body.clone(), &future).await);

    // No signature at all; a v1 signature where only v3 is accepted.
    assert_unverified(&post(&http, &url, body.clone(), &[]).await);
    let strict_url = hk.webhook_url(strict);
    let v1 = vec![
        ("x-hubspot-signature", sign_v1(SECRET, &body)),
        ("x-hubspot-signature-version", "v1".to_owned()),
    ];
    assert_unverified(&post(&http, &strict_url, body.clone(), &v1).await);

    // Oversized: 413 before anything else (even with a valid signature).
    let huge = vec![b' '; 70_000];
    let headers = v3_headers(SECRET, &url, &huge, now());
    assert_rejected(
        &post(&http, &url, huge, &headers).await,
        413,
        "payload_too_large",
    );

    // Malformed, correctly signed: not an array, an event without portalId, over 100 events.
    for bad in [
        b"{\"eventId\": 1}".to_vec(),
        serde_json::to_vec(&json!([{"eventId": 1, "subscriptionType": "x", "occurredAt": 1}]))
            .unwrap(),
        batch(101, 44),
        b"[]".to_vec(),
    ] {
        let headers = v3_headers(SECRET, &url, &bad, now());
        assert_rejected(
            &post(&http, &url, bad, &headers).await,
            400,
            "malformed_batch",
        );
    }

    // Unknown app (or not an id at all): the same 401 as a wrong signature.
    let nobody = format!("{}/webhooks/hubspot/{}", hk.base, uuid::Uuid::from_u128(7));
    let body = batch(1, 45);
    let headers = v3_headers(SECRET, &nobody, &body, now());
    assert_unverified(&post(&http, &nobody, body, &headers).await);
    let not_an_id = format!("{}/webhooks/hubspot/not-an-id", hk.base);
    let body = batch(1, 46);
    let headers = v3_headers(SECRET, &not_an_id, &body, now());
    assert_unverified(&post(&http, &not_an_id, body, &headers).await);

    // Only the valid batches were stored (200 + 1; the repeat was dropped by JetStream).
    let js = hubkeeper_bus::jetstream(env.nats_client().await);
    let mut stream = js.get_stream("HK_WEBHOOKS").await.expect("batch stream");
    assert_eq!(stream.info().await.unwrap().state.messages, 201);

    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "FIGURES webhook accept (100-event batches, one client at a time, verify + JetStream \
         file-store ack): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} requests",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default(),
        latencies.len()
    );

    // Throughput: 16 concurrent senders (HubSpot allows 10 in flight per account).
    const SENDERS: u64 = 16;
    const EACH: u64 = 25;
    let started = Instant::now();
    let tasks: Vec<_> = (0..SENDERS)
        .map(|s| {
            let http = http.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut times = Vec::new();
                for i in 0..EACH {
                    let body = batch(100, 50_000_000 + s * 1000 + i);
                    let headers = v3_headers(SECRET, &url, &body, Utc::now().timestamp_millis());
                    let t = Instant::now();
                    let sent = post(&http, &url, body, &headers).await;
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    assert_eq!(sent.status, 200, "{}", sent.body);
                }
                times
            })
        })
        .collect();
    let mut concurrent = Vec::new();
    for t in tasks {
        concurrent.extend(t.await.expect("sender"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    concurrent.sort_by(f64::total_cmp);
    eprintln!(
        "FIGURES webhook accept under load ({SENDERS} concurrent senders, {} batches of 100): \
         p50 {:.1} ms, p99 {:.1} ms; {:.0} requests/s = {:.0} events/s accepted",
        concurrent.len(),
        percentile(&concurrent, 50.0),
        percentile(&concurrent, 99.0),
        concurrent.len() as f64 / elapsed,
        concurrent.len() as f64 * 100.0 / elapsed,
    );
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        201 + SENDERS * EACH
    );
}
