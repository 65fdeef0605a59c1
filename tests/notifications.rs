//! Outbound notifications against real Postgres and NATS, the HubSpot simulator and separate
//! `hubkeeper` processes (API, relay, notifiers): every notification reaches a receiver that
//! fails for a while, across a SIGKILLed notifier, each signature checked with the testkit's
//! verification written from the Standard Webhooks specification (not Hubkeeper's signer);
//! 429 `Retry-After` is honoured; 410 disables the endpoint.

#[path = "tokens_support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hubkeeper_sim::{DeliverRequest, DeliveryState, SimConfig};
use hubkeeper_testkit::{verify_standard_webhook, wait_until, HkProcess};
use serde_json::{json, Value};
use support::{fresh_browser, Harness};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    id: String,
    at: Instant,
    status: u16,
    verified: Result<(), String>,
    body: Value,
}

/// How the receiver answers, by path.
#[derive(Default)]
struct ReceiverState {
    secrets: HashMap<String, String>,
    /// `/main` answers 503 while this is set.
    failing: bool,
    /// Webhook ids answered 429 (with `Retry-After: 2`) on their first attempt.
    throttle_once: HashSet<String>,
    /// Webhook ids already throttled.
    throttled: HashSet<String>,
    /// `/main` throttles the first attempt of its first delivery of this type.
    throttle_type: Option<String>,
    received: Vec<Received>,
}

type Shared = Arc<Mutex<ReceiverState>>;

async fn receive(
    State(state): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path().to_owned();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut state = state.lock().unwrap();
    let verified = match state.secrets.get(&path) {
        Some(secret) => verify_standard_webhook(secret, &headers, &body),
        None => Err(format!("no secret for {path}")),
    };
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut retry_after = None;
    let status = if path == "/gone" {
        StatusCode::GONE
    } else if state.failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        let kind = parsed["type"].as_str().unwrap_or_default().to_owned();
        if state.throttle_type.as_deref() == Some(kind.as_str()) {
            state.throttle_type = None;
            state.throttle_once.insert(id.clone());
        }
        if state.throttle_once.contains(&id) && !state.throttled.contains(&id) {
            state.throttled.insert(id.clone());
            retry_after = Some("2");
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::NO_CONTENT
        }
    };
    state.received.push(Received {
        path,
        id,
        at: Instant::now(),
        status: status.as_u16(),
        verified,
        body: parsed,
    });
    let mut response = status.into_response();
    if let Some(after) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}

async fn start_receiver() -> (SocketAddr, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/main", post(receive))
        .route("/gone", post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, state)
}

fn worker(h: &Harness, name: &str, role: &str) -> HkProcess {
    // Time compressed: 0.2 s to 1 s between attempts instead of minutes to hours.
    let backoff = ["200", "400", "800"]
        .into_iter()
        .chain(std::iter::repeat_n("1000", 37))
        .collect::<Vec<_>>()
        .join(",");
    h.spawn_worker(
        name,
        role,
        &[
            ("HK_NOTIFIER_BACKOFF_MS", &backoff),
            ("HK_NOTIFIER_ACK_WAIT_SECS", "8"),
            ("HK_NOTIFIER_TIMEOUT_SECS", "2"),
        ],
    )
}

async fn delivered_ids(state: &Shared, path: &str) -> HashSet<String> {
    state
        .lock()
        .unwrap()
        .received
        .iter()
        .filter(|r| r.path == path && (200..300).contains(&r.status))
        .map(|r| r.id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_survive_a_killed_notifier_and_a_failing_receiver() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    let app = h.register_app(api, "notify-secret", "notify-secret").await;
    let (addr, receiver) = start_receiver().await;

    // Endpoints: validation first, then one that works and one that is gone.
    let endpoints = format!("{}/v1/apps/{}/endpoints", h.api(api), app.app_id);
    for (body, what) in [
        (
            json!({"url": "http://example.com/hook"}),
            "http off loopback",
        ),
        (
            json!({"url": format!("http://{addr}/main"), "event_types": ["installation.exploded"]}),
            "unknown type",
        ),
        (
            json!({"url": "https://x.example/h", "secret": "mine"}),
            "unknown field",
        ),
    ] {
        let (status, answer) = h.admin(Method::POST, &endpoints, Some(body)).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {status} {answer}"
        );
        assert!(answer["error"]["code"].is_string(), "{what}: {answer}");
    }
    let (status, main) = h
        .admin(
            Method::POST,
            &endpoints,
            Some(json!({
                "url": format!("http://{addr}/main"),
                "event_types": ["installation.connected", "installation.revoked",
                                "installation.disconnected"],
                "description": "the app's receiver",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{main}");
    let main_secret = main["secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    assert!(main_secret.starts_with("whsec_"));
    assert!(STANDARD.decode(&main_secret[6..]).unwrap().len() >= 24);
    let main_id = main["endpoint_id"].as_str().unwrap().to_owned();
    let (status, gone) = h
        .admin(
            Method::POST,
            &endpoints,
            Some(json!({"url": format!("http://{addr}/gone"),
                        "event_types": ["installation.connected"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{gone}");
    let gone_id = gone["endpoint_id"].as_str().unwrap().to_owned();
    {
        let mut state = receiver.lock().unwrap();
        state.secrets.insert("/main".into(), main_secret.clone());
        state
            .secrets
            .insert("/gone".into(), gone["secret"].as_str().unwrap().to_owned());
    }
    // The secret is never shown again, and is not stored in clear.
    let (status, listed) = h.admin(Method::GET, &endpoints, None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&main_secret));
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%'")
            .bind(&main_secret[6..])
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0, "the signing secret is sealed in its event");

    // The receiver is down; the workers start; tenants connect.
    receiver.lock().unwrap().failing = true;
    let mut relay = worker(&h, "relay", "relay");
    let mut notifier_a = worker(&h, "notifier-a", "notifier");
    let mut notifier_b = worker(&h, "notifier-b", "notifier");
    let hubs: Vec<u64> = (0..6).map(|i| 51_000_000 + i).collect();
    let mut installations = Vec::new();
    for hub in &hubs {
        h.register_account(*hub).await;
        installations.push(h.install(api, &app, *hub).await);
    }
    // An operator revokes one and disconnects another.
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{}/revoke", installations[0]),
            Some(json!({"reason": "fraud check"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{}/disconnect", installations[1]),
            Some(json!({"reason": "paused by support"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = hubs.len() + 2;

    // Attempts fail while the receiver is down; one notifier dies mid-way.
    wait_until(
        "every notification attempted against the failing receiver",
        Duration::from_secs(60),
        || async {
            receiver
                .lock()
                .unwrap()
                .received
                .iter()
                .filter(|r| r.path == "/main" && r.status == 503)
                .map(|r| r.id.clone())
                .collect::<HashSet<_>>()
                .len()
                >= expected
        },
    )
    .await;
    notifier_a.crash();
    let mut notifier_c = worker(&h, "notifier-c", "notifier");
    // The first connect notification delivered after recovery is throttled once.
    {
        let mut state = receiver.lock().unwrap();
        state.throttle_type = Some("installation.connected".into());
        state.failing = false;
    }

    wait_until(
        "every notification delivered",
        Duration::from_secs(90),
        || async { delivered_ids(&receiver, "/main").await.len() >= expected },
    )
    .await;
    let (received, throttled) = {
        let state = receiver.lock().unwrap();
        (state.received.clone(), state.throttled.clone())
    };
    let main_requests: Vec<&Received> = received.iter().filter(|r| r.path == "/main").collect();
    for request in &main_requests {
        assert_eq!(request.verified, Ok(()), "{request:?}");
        assert!(request.id.starts_with("msg_"), "{request:?}");
        assert_eq!(request.body["version"], 1);
    }
    let delivered: Vec<&&Received> = main_requests
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .collect();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for request in &delivered {
        if seen.insert(request.id.clone()) {
            *kinds
                .entry(request.body["type"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), expected, "one id per notification");
    assert_eq!(kinds.get("installation.connected"), Some(&hubs.len()));
    assert_eq!(kinds.get("installation.revoked"), Some(&1));
    assert_eq!(kinds.get("installation.disconnected"), Some(&1));
    // Retries reuse the id: every failed attempt's id was delivered later.
    for request in main_requests.iter().filter(|r| r.status == 503) {
        assert!(seen.contains(&request.id), "{request:?} never delivered");
    }
    let revoked = delivered
        .iter()
        .find(|r| r.body["type"] == "installation.revoked")
        .unwrap();
    assert_eq!(
        revoked.body["data"]["installation_id"],
        installations[0].as_str()
    );
    assert_eq!(revoked.body["data"]["app_id"], app.app_id.as_str());
    assert_eq!(revoked.body["data"]["reason"], "fraud check");
    assert!(revoked.body["data"]["hub_id"].is_u64());
    // Installed without a connect session: no customer, but the field is there.
    assert!(
        revoked.body["data"]
            .as_object()
            .is_some_and(|d| d.contains_key("external_ref") && d["external_ref"].is_null()),
        "{}",
        revoked.body
    );

    // 429: the next attempt came no sooner than Retry-After.
    let throttled_id = throttled.iter().next().expect("one throttled").clone();
    let attempts: Vec<&&Received> = main_requests
        .iter()
        .filter(|r| r.id == throttled_id && r.status != 503)
        .collect();
    assert_eq!(attempts[0].status, 429);
    let waited = attempts[1].at - attempts[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried {waited:?} after a 429 asking for 2 s"
    );

    // The deliveries API shows each with its attempts.
    let (status, list) = h
        .admin(
            Method::GET,
            &format!("{endpoints}/{main_id}/deliveries?limit=100"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), expected, "{list}");
    for item in items {
        assert_eq!(item["status"], "delivered", "{item}");
        assert!(item["attempts"].as_i64().unwrap() >= 2, "{item}");
        assert!(item["last_latency_ms"].is_i64(), "{item}");
    }

    // 410: the endpoint is disabled by an event of the system, its delivery is `gone`.
    wait_until(
        "the gone endpoint disabled",
        Duration::from_secs(30),
        || async {
            let (_, endpoint) = h
                .admin(Method::GET, &format!("{endpoints}/{gone_id}"), None)
                .await;
            endpoint["enabled"] == false
        },
    )
    .await;
    let (_, endpoint) = h
        .admin(Method::GET, &format!("{endpoints}/{gone_id}"), None)
        .await;
    assert_eq!(
        endpoint["disabled_reason"],
        "the receiver answered 410 Gone"
    );
    let actor: String = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events
          WHERE event_type = 'NotificationEndpointDisabled' AND aggregate_id = $1",
    )
    .bind(&app.app_id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(actor, "system");
    let gone_attempts = receiver
        .lock()
        .unwrap()
        .received
        .iter()
        .filter(|r| r.path == "/gone")
        .count();
    assert!(gone_attempts >= 1);

    // A re-send goes out again with the same id and a fresh valid signature.
    let resent_id = items[0]["webhook_id"].as_str().unwrap().to_owned();
    let before = receiver.lock().unwrap().received.len();
    let (status, answer) = h
        .admin(
            Method::POST,
            &format!("{endpoints}/{main_id}/deliveries/{resent_id}/resend"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    wait_until("the re-send delivered", Duration::from_secs(30), || async {
        receiver.lock().unwrap().received[before..]
            .iter()
            .any(|r| r.id == resent_id && r.status == 204 && r.verified.is_ok())
    })
    .await;
    // Rotation: the old secret keeps verifying during the overlap, the new one too.
    let (status, rotated) = h
        .admin(
            Method::POST,
            &format!("{endpoints}/{main_id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, main_secret);
    receiver
        .lock()
        .unwrap()
        .secrets
        .insert("/main".into(), new_secret);
    let before = receiver.lock().unwrap().received.len();
    let (status, _) = h
        .admin(
            Method::POST,
            &format!("{endpoints}/{main_id}/deliveries/{resent_id}/resend"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_until(
        "the re-send verified with the new secret",
        Duration::from_secs(30),
        || async {
            receiver.lock().unwrap().received[before..]
                .iter()
                .any(|r| r.id == resent_id && r.status == 204 && r.verified.is_ok())
        },
    )
    .await;
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'notification_endpoints'
          ORDER BY global_position",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert!(events.contains(&"NotificationDeliveryResent".to_string()));
    assert!(events.contains(&"NotificationEndpointSecretRotated".to_string()));

    notifier_b.stop(Duration::from_secs(20));
    notifier_c.stop(Duration::from_secs(20));
    relay.stop(Duration::from_secs(20));
    // No signing secret in any log.
    let logs = std::fs::read_dir(h.env.path().join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        !logs.contains(&main_secret[6..]),
        "a signing secret in a log"
    );
}

/// HubSpot's webhook events, sent through the simulator (signed, in batches, some twice),
/// reach the app's endpoint that subscribed to `hubspot.webhook`: one notification per
/// installation and batch, each event once, with the installation and the app's customer
/// (`external_ref` of the connect session), signed as Standard Webhooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hubspot_webhooks_reach_a_subscribed_endpoint_with_the_installation_and_its_customer() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    let app = h.register_app(api, "hook-secret", "hook-secret").await;
    let (addr, receiver) = start_receiver().await;
    let endpoints = format!("{}/v1/apps/{}/endpoints", h.api(api), app.app_id);
    let (status, endpoint) = h
        .admin(
            Method::POST,
            &endpoints,
            Some(json!({"url": format!("http://{addr}/main"), "event_types": ["hubspot.webhook"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    receiver.lock().unwrap().secrets.insert(
        "/main".into(),
        endpoint["secret"].as_str().unwrap().to_owned(),
    );
    let _relay = worker(&h, "relay", "relay");
    let _projector = worker(&h, "projector", "projector");
    let _webhooks = worker(&h, "webhooks", "webhooks");
    let _notifier = worker(&h, "notifier", "notifier");

    // The tenant connects through a connect session naming the app's customer.
    let hub = 52_000_001;
    h.register_account(hub).await;
    let service = h.service_key.clone().expect("service key");
    let response = h
        .http
        .post(format!(
            "{}/v1/apps/{}/connect-sessions",
            h.api(api),
            app.app_id
        ))
        .bearer_auth(&service)
        .json(&json!({"external_ref": "cust-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let session: Value = response.json().await.unwrap();
    let opened = fresh_browser()
        .get(session["connect_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::SEE_OTHER);
    let params: HashMap<String, String> =
        url::Url::parse(opened.headers()["location"].to_str().unwrap())
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let redirect = h.consent(&params, hub, false, None).await;
    let target = h.callback(api, &redirect).await;
    let installation = url::Url::parse(&format!("http://result{target}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "installation_id")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("connected: {target}"));

    // HubSpot sends 250 events in batches of 100, a tenth of the batches twice.
    let unique = 250;
    let mut request = DeliverRequest::new(
        &format!("{}/webhooks/hubspot/{}", h.api(api), app.app_id),
        &app.client_id,
    )
    .generate(unique, hub);
    request.duplicate_rate = 0.1;
    let delivery = h.ctl.deliver_webhooks(&request).await.unwrap();
    let report = h
        .ctl
        .wait_for_delivery(delivery.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(report.state, DeliveryState::Completed, "{report:?}");
    assert_eq!(report.failed_batches, 0, "{report:?}");

    let forwarded = || {
        let state = receiver.lock().unwrap();
        let mut ids = HashSet::new();
        let mut events = 0;
        for r in state.received.iter().filter(|r| r.status == 204) {
            if ids.insert(r.id.clone()) {
                events += r.body["data"]["events"].as_array().map_or(0, Vec::len);
            }
        }
        events
    };
    wait_until(
        "every HubSpot event forwarded",
        Duration::from_secs(60),
        || async { forwarded() >= unique },
    )
    .await;
    let received = receiver.lock().unwrap().received.clone();
    let mut notifications = HashSet::new();
    let mut events = HashSet::new();
    for r in &received {
        assert_eq!(r.verified, Ok(()), "{r:?}");
        assert_eq!(r.body["type"], "hubspot.webhook", "{r:?}");
        let data = &r.body["data"];
        assert_eq!(data["installation_id"], installation.as_str());
        assert_eq!(data["external_ref"], "cust-42");
        assert_eq!(data["app_id"], app.app_id.as_str());
        assert_eq!(data["hub_id"], hub);
        if !notifications.insert(r.id.clone()) {
            continue;
        }
        for e in data["events"].as_array().expect("events") {
            assert!(e["subscription_type"].is_string(), "{e}");
            let identity = (
                e["event_id"].as_u64().expect("event id"),
                e["occurred_at"].as_str().unwrap_or_default().to_owned(),
                e["object_id"].as_u64(),
            );
            assert!(events.insert(identity), "forwarded twice: {e}");
        }
    }
    assert_eq!(events.len(), unique, "each event forwarded once");
    // Grouped: one notification per batch of new events (not one per event).
    assert!(
        notifications.len() <= report.batches.len() && notifications.len() >= 3,
        "{} notifications for {} batches",
        notifications.len(),
        report.batches.len()
    );
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'hubspot_webhook_log'
            AND aggregate_id = $1",
    )
    .bind(&installation)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(logged, unique as i64);
}
