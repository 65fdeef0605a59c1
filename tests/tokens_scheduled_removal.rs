//! Revokes and disconnects scheduled with notice, against real Postgres and NATS, the HubSpot
//! simulator and separate `hubkeeper` processes (API, relay, projector, notifier, refresher):
//! the app's endpoint (its signatures checked with the testkit's Standard Webhooks verification)
//! is told `installation.removal_scheduled` before the revoke reaches HubSpot, then
//! `installation.revoked`; a cancelled schedule never runs; a disconnect with notice works; a
//! removal that came due while the executor was killed runs once when executors come back; and
//! in a browser, the revoke dialog says whether and to whom a notification goes out, scheduling
//! shows the pending removal on the tenant's page and the token list, and Cancel removes it.

#[path = "tokens_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use hubkeeper_sim::SimConfig;
use hubkeeper_testkit::{verify_standard_webhook, wait_until, Browser, HkProcess, Page, PAGE_WAIT};
use serde_json::{json, Value};
use support::Harness;

/// Shortest notice the processes accept here (seconds); the schedules below give a little more.
const MIN_NOTICE: &str = "2";
/// Time compressed: the executor looks for due removals every second.
const POLL: &str = "1";

/// One notification the app's receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: DateTime<Utc>,
    verified: Result<(), String>,
    body: Value,
}

#[derive(Default)]
struct Receiver {
    secret: Option<String>,
    received: Vec<Received>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn receive(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Utc::now();
    let mut state = state.lock().unwrap();
    let verified = match &state.secret {
        Some(secret) => verify_standard_webhook(secret, &headers, &body),
        None => Err("no secret yet".into()),
    };
    state.received.push(Received {
        at,
        verified,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (SocketAddr, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/app", post(receive))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, state)
}

/// The first notification of `kind` about `installation`, once it arrived.
fn first(state: &Shared, kind: &str, installation: &str) -> Option<Received> {
    state
        .lock()
        .unwrap()
        .received
        .iter()
        .find(|r| r.body["type"] == kind && r.body["data"]["installation_id"] == installation)
        .cloned()
}

async fn wait_for_notification(state: &Shared, kind: &str, installation: &str) -> Received {
    wait_until(
        &format!("{kind} for {installation} received"),
        Duration::from_secs(60),
        || async { first(state, kind, installation).is_some() },
    )
    .await;
    first(state, kind, installation).expect("received")
}

async fn wait_for_status(h: &Harness, installation: &str, status: &str) {
    wait_until(
        &format!("{installation} {status}"),
        Duration::from_secs(60),
        || async { h.details(0, installation).await["status"] == status },
    )
    .await;
}

fn worker(h: &Harness, name: &str, role: &str) -> HkProcess {
    h.spawn_worker(
        name,
        role,
        &[
            ("HK_REMOVAL_MIN_NOTICE_SECS", MIN_NOTICE),
            ("HK_REMOVAL_POLL_SECS", POLL),
        ],
    )
}

async fn revokes_at_hubspot(h: &Harness) -> u64 {
    h.ctl.counters().await.unwrap().total.revokes
}

/// Every stored event of `event_type` for `installation`: (recorded_at, actor).
async fn events_of(
    h: &Harness,
    installation: &str,
    event_type: &str,
) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as(
        "SELECT recorded_at, metadata->>'actor' FROM events
          WHERE aggregate_type = 'installation' AND aggregate_id = $1 AND event_type = $2
          ORDER BY global_position",
    )
    .bind(installation)
    .bind(event_type)
    .fetch_all(&h.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_app_is_told_before_a_scheduled_removal_and_a_cancelled_one_never_runs() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h
        .spawn_api("api", &[("HK_REMOVAL_MIN_NOTICE_SECS", MIN_NOTICE)])
        .await;
    let app = h.register_app(api, "notice-secret", "notice-secret").await;
    let (addr, receiver) = start_receiver().await;
    let mut workers = vec![
        worker(&h, "relay", "relay"),
        worker(&h, "projector", "projector"),
        worker(&h, "notifier", "notifier"),
        worker(&h, "refresher", "refresher"),
    ];
    let hubs = [61_000_001, 61_000_002, 61_000_003];
    let mut ids = Vec::new();
    for hub in hubs {
        h.register_account(hub).await;
        ids.push(h.install(api, &app, hub).await);
    }
    let (revoked, disconnected, cancelled) = (&ids[0], &ids[1], &ids[2]);

    // Before the app has an endpoint, the dialog's question has the answer "nobody".
    let targets_url =
        |id: &str| format!("{}/v1/installations/{id}/notification-targets", h.api(api));
    let (status, targets) = h.admin(Method::GET, &targets_url(revoked), None).await;
    assert_eq!(status, StatusCode::OK, "{targets}");
    assert_eq!(targets["app_id"], app.app_id.as_str());
    let kinds: Vec<&str> = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "installation.removal_scheduled",
            "installation.revoked",
            "installation.disconnected"
        ]
    );
    assert!(targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["notified"] == false && t["endpoints"] == json!([])));

    // The app's endpoint hears of scheduled removals, their cancels, revokes and disconnects.
    let url = format!("http://{addr}/app");
    let (status, endpoint) = h
        .admin(
            Method::POST,
            &format!("{}/v1/apps/{}/endpoints", h.api(api), app.app_id),
            Some(json!({
                "url": url,
                "event_types": ["installation.removal_scheduled", "installation.removal_cancelled",
                                "installation.revoked", "installation.disconnected"],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    receiver.lock().unwrap().secret = Some(endpoint["secret"].as_str().unwrap().to_owned());
    let (_, targets) = h.admin(Method::GET, &targets_url(revoked), None).await;
    for target in targets["targets"].as_array().unwrap() {
        assert_eq!(target["notified"], true, "{targets}");
        assert_eq!(target["endpoints"][0]["url"], url.as_str(), "{targets}");
        assert_eq!(
            target["endpoints"][0]["endpoint_id"],
            endpoint["endpoint_id"]
        );
    }

    // Bad input names the field; nothing is scheduled by it.
    let revoke_path = |id: &str| format!("/v1/installations/{id}/revoke");
    for (body, named) in [
        (json!({"reason": "r", "notice_secs": 0}), "notice_secs"),
        (json!({"reason": "r", "notice_secs": 1}), "notice_secs"),
        (
            json!({"reason": "r", "notice_secs": 31 * 86_400}),
            "notice_secs",
        ),
        (json!({"reason": "r", "notice_secs": "soon"}), "notice_secs"),
        (json!({"reason": "r", "notice_secs": -5}), "notice_secs"),
        (json!({"notice_secs": 60}), "reason"),
    ] {
        let (status, answer) = h.post(api, &revoke_path(revoked), Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(named),
            "{body}: {answer}"
        );
    }
    let cancel_path = |id: &str| format!("/v1/installations/{id}/scheduled-removal/cancel");
    let (status, answer) = h.post(api, &cancel_path(revoked), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing pending: {answer}");
    assert!(events_of(&h, revoked, "InstallationRemovalScheduled")
        .await
        .is_empty());

    // A schedule cancelled at once: due first, it must never run.
    let (status, answer) = h
        .post(
            api,
            &revoke_path(cancelled),
            Some(json!({"reason": "contract ended", "notice_secs": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, answer) = h
        .post(
            api,
            &cancel_path(cancelled),
            Some(json!({"reason": "customer paid"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["cancelled"]["action"], "revoke");

    // A revoke and a disconnect with notice, due a few seconds later.
    let revokes_before = revokes_at_hubspot(&h).await;
    let (status, scheduled) = h
        .post(
            api,
            &revoke_path(revoked),
            Some(json!({"reason": "contract ended", "notice_secs": 8})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{scheduled}");
    assert_eq!(scheduled["status"], "removal_scheduled");
    assert_eq!(scheduled["scheduled_removal"]["action"], "revoke");
    assert_eq!(scheduled["scheduled_removal"]["reason"], "contract ended");
    let scheduled_by = scheduled["scheduled_removal"]["scheduled_by"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(scheduled_by.starts_with("key:"), "{scheduled}");
    let effective_at: DateTime<Utc> = scheduled["scheduled_removal"]["effective_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // One pending removal at a time: another is refused, naming the pending one.
    let (status, answer) = h
        .post(
            api,
            &format!("/v1/installations/{revoked}/disconnect"),
            Some(json!({"reason": "other", "notice_secs": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "removal_already_scheduled");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoke"),
        "{answer}"
    );
    let details = h.details(api, revoked).await;
    assert_eq!(
        details["scheduled_removal"]["action"], "revoke",
        "{details}"
    );
    assert_eq!(details["status"], "connected");
    let (status, answer) = h
        .post(
            api,
            &format!("/v1/installations/{disconnected}/disconnect"),
            Some(json!({"reason": "customer left", "notice_secs": 8})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["scheduled_removal"]["action"], "disconnect");

    // The notice reaches the app while HubSpot has not been asked to revoke anything.
    let notice = wait_for_notification(&receiver, "installation.removal_scheduled", revoked).await;
    assert_eq!(revokes_at_hubspot(&h).await, revokes_before, "told first");
    assert_eq!(h.details(api, revoked).await["status"], "connected");
    assert_eq!(notice.verified, Ok(()), "{notice:?}");
    let data = &notice.body["data"];
    assert_eq!(data["action"], "revoke", "{data}");
    assert_eq!(data["reason"], "contract ended");
    assert_eq!(data["scheduled_by"], scheduled_by.as_str());
    assert_eq!(data["hub_id"], hubs[0]);
    let told_effective: DateTime<Utc> = data["effective_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(told_effective.timestamp(), effective_at.timestamp());

    // Then the removals happen, through the same revoke and disconnect as an operator's.
    wait_for_status(&h, revoked, "revoked").await;
    wait_for_status(&h, disconnected, "disconnected").await;
    let revoked_events = events_of(&h, revoked, "InstallationRevoked").await;
    assert_eq!(revoked_events.len(), 1);
    let (revoked_at, actor) = &revoked_events[0];
    assert!(
        notice.at < *revoked_at,
        "told at {} but revoked at {revoked_at}",
        notice.at
    );
    assert!(*revoked_at >= effective_at, "not before it was due");
    assert_eq!(actor, &format!("scheduled-removal:by:{scheduled_by}"));
    let disconnect_events = events_of(&h, disconnected, "InstallationDisconnected").await;
    assert_eq!(disconnect_events.len(), 1);
    assert!(disconnect_events[0]
        .1
        .starts_with("scheduled-removal:by:key:"));
    let told_revoked = wait_for_notification(&receiver, "installation.revoked", revoked).await;
    assert!(notice.at < told_revoked.at);
    let told_disconnected =
        wait_for_notification(&receiver, "installation.disconnected", disconnected).await;
    assert_eq!(told_disconnected.body["data"]["reason"], "customer left");
    let _ = wait_for_notification(&receiver, "installation.removal_scheduled", disconnected).await;
    assert!(h.details(api, revoked).await["scheduled_removal"].is_null());

    // The cancelled one was due before both and never ran: the app heard of the cancel.
    let told_cancel =
        wait_for_notification(&receiver, "installation.removal_cancelled", cancelled).await;
    assert_eq!(told_cancel.body["data"]["reason"], "customer paid");
    assert_eq!(h.details(api, cancelled).await["status"], "connected");
    assert!(events_of(&h, cancelled, "InstallationRevoked")
        .await
        .is_empty());
    // One revoke at HubSpot each: the revoke, and the disconnect's best-effort one.
    assert_eq!(revokes_at_hubspot(&h).await, revokes_before + 2);
    for request in receiver.lock().unwrap().received.iter() {
        assert_eq!(request.verified, Ok(()), "{request:?}");
    }
    // The token list shows no pending removal any more.
    wait_until("read model cleared", Duration::from_secs(30), || async {
        let (_, list) = h
            .admin(
                Method::GET,
                &format!("{}/v1/installations", h.api(api)),
                None,
            )
            .await;
        list["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|i| i["removal_action"].is_null()))
    })
    .await;
    for worker in &mut workers {
        worker.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removal_due_while_the_executor_was_down_runs_once_when_it_is_back() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h
        .spawn_api("api", &[("HK_REMOVAL_MIN_NOTICE_SECS", MIN_NOTICE)])
        .await;
    let app = h.register_app(api, "down-secret", "down-secret").await;
    let mut relay = worker(&h, "relay", "relay");
    let mut projector = worker(&h, "projector", "projector");
    let mut executor = worker(&h, "refresher-a", "refresher");
    let mut ids = Vec::new();
    for hub in [62_000_001, 62_000_002] {
        h.register_account(hub).await;
        ids.push(h.install(api, &app, hub).await);
    }
    let (cancelled, id) = (ids[0].clone(), ids[1].clone());
    let revokes_before = revokes_at_hubspot(&h).await;

    // Two revokes scheduled; the first one is due first.
    let mut due = Vec::new();
    for target in [&cancelled, &id] {
        let (status, scheduled) = h
            .post(
                api,
                &format!("/v1/installations/{target}/revoke"),
                Some(json!({"reason": "fraud review done", "notice_secs": 3})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{scheduled}");
        due.push(
            scheduled["scheduled_removal"]["effective_at"]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap(),
        );
    }
    let pending_in_read_model = |target: String| {
        let pool = h.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT removal_action FROM rm_installations WHERE installation_id = $1::uuid",
            )
            .bind(target)
            .fetch_one(&pool)
            .await
            .ok()
            .flatten()
            .is_some()
        }
    };
    wait_until(
        "both pending in the read model",
        Duration::from_secs(30),
        || async {
            pending_in_read_model(cancelled.clone()).await
                && pending_in_read_model(id.clone()).await
        },
    )
    .await;
    // The read model goes stale (projector stopped) and still shows the first one pending after
    // it is cancelled: the executor must find nothing to do for it in the aggregate.
    projector.kill();
    let (status, answer) = h
        .post(
            api,
            &format!("/v1/installations/{cancelled}/scheduled-removal/cancel"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The executor dies before they are due; the due time passes without it.
    executor.crash();
    let last_due = due[1];
    wait_until("both are due", Duration::from_secs(30), || async {
        Utc::now() > last_due + chrono::Duration::seconds(1)
    })
    .await;
    assert_eq!(h.details(api, &id).await["status"], "connected");
    assert_eq!(revokes_at_hubspot(&h).await, revokes_before);
    assert!(
        pending_in_read_model(cancelled.clone()).await,
        "stale on purpose"
    );

    // Two executors come back; one leads and carries out the due one, once, and skips the
    // cancelled one the stale read model still offers (it was due first).
    let mut executors = [
        worker(&h, "refresher-b", "refresher"),
        worker(&h, "refresher-c", "refresher"),
    ];
    wait_for_status(&h, &id, "revoked").await;
    let mut projector = worker(&h, "projector-2", "projector");
    wait_until("read model cleared", Duration::from_secs(30), || async {
        !pending_in_read_model(id.clone()).await && !pending_in_read_model(cancelled.clone()).await
    })
    .await;
    assert_eq!(events_of(&h, &id, "InstallationRevoked").await.len(), 1);
    assert!(events_of(&h, &cancelled, "InstallationRevoked")
        .await
        .is_empty());
    let details = h.details(api, &cancelled).await;
    assert_eq!(details["status"], "connected", "{details}");
    assert!(details["scheduled_removal"].is_null(), "{details}");
    assert_eq!(revokes_at_hubspot(&h).await, revokes_before + 1);
    for process in executors.iter_mut().chain([&mut relay, &mut projector]) {
        process.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_dialog_says_who_is_told_and_a_scheduled_revoke_can_be_cancelled() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    let app = h.register_app(api, "ui-secret", "ui-secret").await;
    let mut relay = worker(&h, "relay", "relay");
    let mut projector = worker(&h, "projector", "projector");
    let hub = 63_000_001u64;
    h.register_account(hub).await;
    let id = h.install(api, &app, hub).await;

    let browser = Browser::start(1366, 1000).await;
    let mut ui = Page::new(
        &browser,
        h.api(api),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../test-artifacts/dashboard-scheduled-removal"),
    );
    ui.go("/dashboard/login").await;
    ui.fill("#api-key", &h.admin_key).await;
    ui.click("#login-submit").await;
    ui.until_text("h1", "Overview").await;

    // Without an endpoint for it, the dialog says plainly that nobody is told in advance.
    ui.go(&format!("/dashboard/users/{id}")).await;
    ui.until_text("h1", &format!("Hub {hub}")).await;
    ui.click("button[data-action=revoke]").await;
    ui.until_text("dialog", "Now (security incident: no advance notice)")
        .await;
    ui.until_text(
        "dialog p[data-notification=none]",
        "no notification goes out",
    )
    .await;
    ui.click("dialog input[name=removal-when][value='86400']")
        .await;
    ui.until_text(
        "dialog p[data-notification=none]",
        "No endpoint of this app subscribes to installation.removal_scheduled: nobody will be told in advance",
    )
    .await;
    ui.shot("nobody-told").await;
    ui.click("dialog button[value=cancel]").await;

    // With two endpoints that hear of it, the dialog counts them and says when.
    for path in ["one", "two"] {
        let (status, endpoint) = h
            .admin(
                Method::POST,
                &format!("{}/v1/apps/{}/endpoints", h.api(api), app.app_id),
                Some(json!({
                    "url": format!("http://127.0.0.1:9/{path}"),
                    "event_types": ["installation.removal_scheduled", "installation.revoked"],
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    }
    ui.go(&format!("/dashboard/users/{id}")).await;
    ui.until_text("h1", &format!("Hub {hub}")).await;
    ui.click("button[data-action=revoke]").await;
    ui.until_text(
        "dialog p[data-notification=sent]",
        "The app's 2 endpoints will be told",
    )
    .await;
    ui.click("dialog input[name=removal-when][value='86400']")
        .await;
    ui.until_text(
        "dialog p[data-notification=advance]",
        "The app's 2 endpoints will be told now",
    )
    .await;
    ui.until_text(
        "dialog p[data-notification=advance]",
        "and the tokens revoked at",
    )
    .await;
    ui.fill("#confirm-reason", "Contract ended").await;
    ui.fill("#confirm-type", &hub.to_string()).await;
    ui.shot("advance-notice").await;
    ui.click("dialog button[value=confirm]").await;
    ui.toast("scheduled").await;
    ui.dismiss_toasts().await;

    // The pending removal shows on the tenant's page and in the token list.
    ui.until_text("[data-pending-removal=revoke]", "Revoke scheduled for")
        .await;
    let details = h.details(api, &id).await;
    assert_eq!(details["scheduled_removal"]["action"], "revoke");
    assert_eq!(details["scheduled_removal"]["reason"], "Contract ended");
    assert_eq!(details["status"], "connected", "nothing removed yet");
    ui.nav("Token Management").await;
    ui.until_text(
        "#tokens-list [data-pending-removal=revoke]",
        "Revoke scheduled for",
    )
    .await;
    ui.shot("token-list-pending").await;

    // Cancel removes it.
    ui.click("#tokens-list button[data-action=cancel-removal]")
        .await;
    ui.until_text("dialog", "Cancel the scheduled revoke").await;
    ui.click("dialog button[value=confirm]").await;
    ui.toast("cancelled").await;
    wait_until("the pending removal is gone", PAGE_WAIT, || async {
        h.details(api, &id).await["scheduled_removal"].is_null()
    })
    .await;
    ui.go(&format!("/dashboard/users/{id}")).await;
    ui.until_text("h1", &format!("Hub {hub}")).await;
    ui.until_text("dl", "Token pair").await;
    assert!(!ui.body_text().await.contains("scheduled for"));
    ui.shot("cancelled").await;
    ui.assert_clean_console("scheduled removal pages", &[])
        .await;
    relay.kill();
    projector.kill();
}
