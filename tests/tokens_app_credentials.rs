//! An app's client credentials against real Postgres, NATS, `hubkeeper` processes and the
//! HubSpot simulator: rotating the client secret mid-traffic (no reinstall, refreshes with the
//! new secret, webhook signatures with either secret during the overlap and only the new one
//! after), HubSpot rejecting the app's credentials (one app-level event, refreshes parked, no
//! dead letters, resumed by an operator or by a rotation), `min_validity_secs` no token can
//! satisfy (400 before any HubSpot call), the negative cache after a failed refresh, and "last
//! used" on Token Management.

#[path = "tokens_support/mod.rs"]
mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use hubkeeper_hubspot::signature::sign_v3;
use hubkeeper_sim::{ClientSecret, RotateSecret, SimConfig};
use hubkeeper_testkit::{free_port, hubkeeper_binary, wait_until, HkProcess, SecretKind};
use serde_json::{json, Value};
use support::Harness;

const OLD_SECRET: &str = "old-secret-4f1c9e2a-7b3d-4a5e";
const NEW_SECRET: &str = "new-secret-8d2e6f1a-3c4b-4d9f";

fn at(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a timestamp, got {value}"))
        .parse()
        .unwrap()
}

/// Token calls that reached HubSpot through the tap so far.
fn hubspot_calls(h: &Harness) -> usize {
    h.tap.record.calls().len()
}

async fn events_of(h: &Harness, aggregate_id: &str, event_type: &str) -> Vec<(String, Value)> {
    sqlx::query_as::<_, (String, sqlx::types::Json<Value>)>(
        "SELECT metadata::json->>'actor', payload FROM events
          WHERE aggregate_id = $1 AND event_type = $2 ORDER BY sequence",
    )
    .bind(aggregate_id)
    .bind(event_type)
    .fetch_all(&h.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(actor, payload)| (actor, payload.0))
    .collect()
}

async fn count_events(h: &Harness, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

/// Posts a one-event webhook batch signed (v3) with `secret`; returns the status.
async fn webhook(h: &Harness, api: usize, app_id: &str, secret: &str, n: u64) -> StatusCode {
    let body = serde_json::to_vec(&json!([{
        "eventId": 7_000_000 + n, "subscriptionId": 25, "portalId": 41_000_001_u64,
        "appId": 1, "occurredAt": Utc::now().timestamp_millis(),
        "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
        "objectId": 900 + n, "propertyName": "lifecyclestage", "propertyValue": "lead",
        "changeSource": "CRM"
    }]))
    .unwrap();
    let url = format!("{}/webhooks/hubspot/{app_id}", h.api(api));
    let timestamp = Utc::now().timestamp_millis();
    h.http
        .post(&url)
        .header("content-type", "application/json")
        .header(
            "x-hubspot-signature-v3",
            sign_v3(secret, "POST", &url, &body, timestamp),
        )
        .header("x-hubspot-request-timestamp", timestamp.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

fn spawn_workers(h: &Harness, extra: &[(&str, &str)]) -> HkProcess {
    let mut vars = h.api_env(free_port(), &[("HK_LOG", "info")]);
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        vars.push((k.to_string(), v.to_string()));
    }
    HkProcess::spawn(
        &hubkeeper_binary(),
        "workers",
        &["worker", "all"],
        &vars,
        &h.env.path().join("logs"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_the_client_secret_mid_traffic_needs_no_reinstall() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    h.register_account(41_000_001).await;
    let app = h.register_app(api, OLD_SECRET, OLD_SECRET).await;
    let id = h.install(api, &app, 41_000_001).await;
    let (status, first) = h.token(api, &id, 60).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        webhook(&h, api, &app.app_id, OLD_SECRET, 1).await,
        StatusCode::OK
    );

    // The developer rotates the secret in HubSpot; there the old one dies at once.
    h.ctl
        .rotate_secret(&RotateSecret {
            client_id: app.client_id.clone(),
            client_secret: ClientSecret::new(NEW_SECRET),
            overlap_secs: 0,
        })
        .await
        .expect("rotate at the simulator");
    h.client_secrets.push(NEW_SECRET.to_owned());

    // Bad input first: empty secret, endless overlap, unknown app, unknown field.
    let path = format!("/v1/apps/{}/rotate-secret", app.app_id);
    for (body, code) in [
        (json!({"client_secret": " "}), StatusCode::BAD_REQUEST),
        (
            json!({"client_secret": NEW_SECRET, "overlap_secs": 40 * 86_400}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"client_secret": NEW_SECRET, "secret": "x"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, answer) = h.post(api, &path, Some(body)).await;
        assert_eq!(status, code, "{answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
        assert!(!answer.to_string().contains(NEW_SECRET), "{answer}");
    }
    let (status, answer) = h
        .post(
            api,
            &format!("/v1/apps/{}/rotate-secret", uuid::Uuid::new_v4()),
            Some(json!({"client_secret": NEW_SECRET})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    let (status, rotated) = h
        .post(
            api,
            &path,
            Some(json!({"client_secret": NEW_SECRET, "overlap_secs": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert!(!rotated.to_string().contains(NEW_SECRET), "{rotated}");
    let overlap_ends = at(&rotated["previous_secret_valid_until"]);
    assert!(rotated["secret_rotated_at"].is_string());
    let stored = events_of(&h, &app.app_id, "AppClientSecretRotated").await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].0.starts_with("key:"), "{}", stored[0].0);
    let payload = stored[0].1.to_string();
    assert!(
        !payload.contains(NEW_SECRET) && !payload.contains(OLD_SECRET),
        "sealed, never in clear: {payload}"
    );

    // Refreshes use the new secret at once: a forced refresh succeeds without a reinstall.
    let calls_before = hubspot_calls(&h);
    let (status, refreshed) = h
        .post(api, &format!("/v1/installations/{id}/refresh"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["refreshed"], true);
    let calls = h.tap.record.calls();
    assert_eq!(calls.len(), calls_before + 1);
    assert_eq!(
        calls.last().unwrap().status,
        200,
        "HubSpot took the new secret"
    );
    let (status, second) = h.token(api, &id, 60).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["access_token"], first["access_token"]);
    let details = h.details(api, &id).await;
    assert_eq!(details["status"], "connected");
    assert_eq!(details["generation"], 2);
    assert_eq!(
        count_events(&h, "InstallationConnected").await,
        1,
        "nobody reinstalled"
    );

    // Webhooks: either secret during the overlap, then only the new one.
    assert_eq!(
        webhook(&h, api, &app.app_id, OLD_SECRET, 2).await,
        StatusCode::OK,
        "old secret accepted during the overlap"
    );
    assert_eq!(
        webhook(&h, api, &app.app_id, NEW_SECRET, 3).await,
        StatusCode::OK
    );
    wait_until("the overlap ends", Duration::from_secs(10), || async {
        Utc::now() > overlap_ends
    })
    .await;
    assert_eq!(
        webhook(&h, api, &app.app_id, OLD_SECRET, 4).await,
        StatusCode::UNAUTHORIZED,
        "old secret refused after the overlap"
    );
    assert_eq!(
        webhook(&h, api, &app.app_id, NEW_SECRET, 5).await,
        StatusCode::OK
    );
    assert_eq!(
        webhook(&h, api, &app.app_id, "never-the-secret", 6).await,
        StatusCode::UNAUTHORIZED
    );
    h.scan_for_leaks(&SecretKind::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejected_app_credentials_park_refreshes_until_resumed_or_rotated() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    for hub in [42_000_001, 42_000_002] {
        h.register_account(hub).await;
    }
    let app = h.register_app(api, OLD_SECRET, OLD_SECRET).await;
    // Tokens live 15 minutes, inside the scheduler's 20 minute lead: every installation is due.
    h.ctl
        .set_token_lifetime(Duration::from_secs(900))
        .await
        .unwrap();
    let a = h.install(api, &app, 42_000_001).await;
    let b = h.install(api, &app, 42_000_002).await;
    // The secret changed at HubSpot and Hubkeeper was not told: invalid_client from now on.
    h.ctl
        .rotate_secret(&RotateSecret {
            client_id: app.client_id.clone(),
            client_secret: ClientSecret::new(NEW_SECRET),
            overlap_secs: 0,
        })
        .await
        .unwrap();
    h.client_secrets.push(NEW_SECRET.to_owned());

    // The scheduler enqueues both installations; the first refusal parks the app.
    let mut workers = spawn_workers(&h, &[("HK_REFRESH_LEAD_SECS", "1200")]);
    wait_until(
        "HubSpot's refusal parks the app",
        Duration::from_secs(60),
        || async {
            let (_, app_view) = h
                .admin(
                    Method::GET,
                    &format!("{}/v1/apps/{}", h.api(api), app.app_id),
                    None,
                )
                .await;
            app_view["refreshes_parked"].is_object()
        },
    )
    .await;
    wait_until(
        "the apps list shows the parked app",
        Duration::from_secs(30),
        || async {
            let (_, list) = h
                .admin(Method::GET, &format!("{}/v1/apps", h.api(api)), None)
                .await;
            list["items"][0]["refreshes_parked_at"].is_string()
        },
    )
    .await;
    // Parked: a hand-out that needs a refresh is refused without calling HubSpot.
    let calls = hubspot_calls(&h);
    let (status, body) = h.token(api, &a, 899).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "app_credentials_rejected");
    assert_eq!(hubspot_calls(&h), calls, "no HubSpot call while parked");
    // One app-level event; nothing per installation; nothing dead-lettered.
    let rejected = events_of(&h, &app.app_id, "AppCredentialsRejected").await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        rejected[0].1["AppCredentialsRejected"]["error"],
        "invalid_client"
    );
    for installation in [&a, &b] {
        let details = h.details(api, installation).await;
        assert_eq!(details["status"], "connected", "{details}");
        assert_eq!(details["consecutive_failures"], 0, "{details}");
    }
    assert_eq!(count_events(&h, "InstallationRefreshFailed").await, 0);
    assert_eq!(
        count_events(&h, "InstallationReauthorizationRequired").await,
        0
    );
    let dead: i64 = {
        let (_, letters) = h
            .admin(
                Method::GET,
                &format!("{}/v1/dead-letters", h.api(api)),
                None,
            )
            .await;
        letters["items"].as_array().map_or(0, |l| l.len() as i64)
    };
    assert_eq!(dead, 0, "not dead-lettered one by one");
    let activity: String = sqlx::query_scalar(
        "SELECT message FROM rm_activity WHERE event_type = 'AppCredentialsRejected'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(activity.contains("parked"), "{activity}");

    // An operator resumes (recorded with the operator's key); HubSpot still refuses the old
    // secret, so the next refresh parks the app again: a second event, still one per refusal.
    let (status, body) = h
        .post(
            api,
            &format!("/v1/apps/{}/resume-refreshes", app.app_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refreshes_parked"].is_null(), "{body}");
    let resumed = events_of(&h, &app.app_id, "AppRefreshesResumed").await;
    assert_eq!(resumed.len(), 1);
    assert!(resumed[0].0.starts_with("key:"), "{}", resumed[0].0);
    let (status, body) = h
        .post(
            api,
            &format!("/v1/apps/{}/resume-refreshes", app.app_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "not_parked");
    let (status, body) = h.token(api, &a, 899).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    wait_until("parked again", Duration::from_secs(30), || async {
        events_of(&h, &app.app_id, "AppCredentialsRejected")
            .await
            .len()
            == 2
    })
    .await;

    // Rotating the secret resumes refreshes: the scheduler refreshes both installations.
    let (status, body) = h
        .post(
            api,
            &format!("/v1/apps/{}/rotate-secret", app.app_id),
            Some(json!({"client_secret": NEW_SECRET})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refreshes_parked"].is_null(), "{body}");
    wait_until(
        "both installations refreshed with the new secret",
        Duration::from_secs(60),
        || async { count_events(&h, "InstallationTokensRefreshed").await >= 2 },
    )
    .await;
    let (status, body) = h.token(api, &b, 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(count_events(&h, "InstallationRefreshFailed").await, 0);
    workers.stop(Duration::from_secs(10));
    h.scan_for_leaks(&SecretKind::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn min_validity_negative_cache_and_last_used() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h
        .spawn_api("api", &[("HK_TOKEN_FAILURE_CACHE_SECS", "30")])
        .await;
    h.register_account(43_000_001).await;
    h.register_account(43_000_002).await;
    let app = h.register_app(api, OLD_SECRET, OLD_SECRET).await;
    h.ctl
        .set_token_lifetime(Duration::from_secs(120))
        .await
        .unwrap();
    let id = h.install(api, &app, 43_000_001).await;
    let idle = h.install(api, &app, 43_000_002).await;

    // A margin no token of this installation can satisfy: 400 before any HubSpot call.
    let calls = hubspot_calls(&h);
    for margin in [120, 3600] {
        let (status, body) = h.token(api, &id, margin).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "min_validity_unsatisfiable");
    }
    assert_eq!(
        hubspot_calls(&h),
        calls,
        "no HubSpot call for an impossible margin"
    );

    // HubSpot fails the refresh: the first hand-out that needs one calls HubSpot once; the
    // ones right after answer from that failure (Retry-After) without calling again.
    h.ctl
        .inject_fault(
            &serde_json::from_value(
                json!({"endpoint": "token", "mode": "error_rate", "status": 503, "rate": 1.0}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    // (The first token must have aged below the margin, so that the hand-out needs a refresh.)
    let expires = at(&h.details(api, &id).await["access_expires_at"]);
    wait_until(
        "the token has less than 119 s left",
        Duration::from_secs(10),
        || async { expires - Utc::now() < chrono::Duration::seconds(119) },
    )
    .await;
    let (status, body) = h.token(api, &id, 119).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let after_failure = hubspot_calls(&h);
    assert!(after_failure > calls, "the first hand-out asked HubSpot");
    for _ in 0..5 {
        let response = h
            .http
            .get(format!(
                "{}/v1/installations/{id}/token?min_validity_secs=119",
                h.api(api)
            ))
            .bearer_auth(h.service_key.as_deref().expect("service key"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "refresh_recently_failed", "{body}");
    }
    assert_eq!(
        hubspot_calls(&h),
        after_failure,
        "answered from the failure, not from HubSpot"
    );
    // Tokens that need no refresh are still handed out.
    let (status, _) = h.token(api, &id, 10).await;
    assert_eq!(status, StatusCode::OK);

    // "Last used" on Token Management: written from the batched hand-out counts, sortable.
    let mut workers = spawn_workers(&h, &[]);
    h.wait_for_usage_flush().await;
    wait_until(
        "last used shown on Token Management",
        Duration::from_secs(30),
        || async {
            let (_, list) = h
                .admin(
                    Method::GET,
                    &format!("{}/v1/installations?sort=-last_used", h.api(api)),
                    None,
                )
                .await;
            list["items"][0]["installation_id"] == id.as_str()
                && list["items"][0]["last_used_at"].is_string()
        },
    )
    .await;
    let (_, list) = h
        .admin(
            Method::GET,
            &format!("{}/v1/installations?sort=last_used", h.api(api)),
            None,
        )
        .await;
    let order: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["installation_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec![idle.as_str(), id.as_str()], "never used first");
    assert!(list["items"][0]["last_used_at"].is_null());
    let stored: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM rm_installations WHERE installation_id = $1")
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .fetch_one(&h.pool)
            .await
            .unwrap();
    let usage = h.details(api, &id).await["usage"]["last_handed_out_at"].clone();
    assert_eq!(stored, Some(at(&usage)));
    workers.stop(Duration::from_secs(10));
}
