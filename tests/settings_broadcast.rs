//! Settings reach every running process without a restart: a change made through API process A
//! is applied by API process B within seconds (OAuth rate limit, log level), "clear rate-limit
//! cache" resets B's counters, and B keeps running throughout.

#[path = "tokens_support/mod.rs"]
mod support;

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_sim::SimConfig;
use hubkeeper_testkit::wait_until;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use support::{client_from, Harness};

/// Whether B's OAuth callback refuses a request from `ip` with 429 (one request counted).
async fn limited(base: &str, ip: IpAddr) -> bool {
    let response = client_from(ip)
        .get(format!("{base}/oauth/callback?state=x&code=y"))
        .send()
        .await
        .expect("callback");
    response.status() == StatusCode::TOO_MANY_REQUESTS
}

/// B's count of control messages of `kind` it received (`hk_control_received_total`).
async fn control_received(base: &str, kind: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("hk_control_received_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn settings_of(h: &Harness, api: usize) -> Value {
    let (status, body) = h
        .admin(Method::GET, &format!("{}/v1/settings", h.api(api)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// When process `api` says it started (`GET /v1/server/config`).
async fn started_at(h: &Harness, api: usize) -> String {
    let (status, body) = h
        .admin(
            Method::GET,
            &format!("{}/v1/server/config", h.api(api)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["started_at"]
        .as_str()
        .unwrap_or_else(|| panic!("started_at in {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_settings_change_through_one_process_takes_effect_in_another_without_restart() {
    let mut h = Harness::start(SimConfig::default()).await;
    let limit = [("HK_OAUTH_RATE_LIMIT_MAX", "1000"), ("HK_LOG", "info")];
    let a = h.spawn_api("api-a", &limit).await;
    let b = h.spawn_api("api-b", &limit).await;
    let b_started = started_at(&h, b).await;
    let b_base = h.api(b).to_string();

    // Before any change B runs with its own configuration (1000 per window).
    let x = IpAddr::from([127, 10, 0, 1]);
    for _ in 0..5 {
        assert!(!limited(&b_base, x).await, "B's configured limit is 1000");
    }
    let before = settings_of(&h, b).await;
    assert_eq!(before["version"], 0);
    assert_eq!(before["customized"]["oauth_rate_limit"], false);

    // An auditor may read but not change settings.
    let auditor = create_key(&h.pool, "auditor", Role::Auditor, "test")
        .await
        .expect("auditor key");
    let refused = h
        .http
        .put(format!("{}/v1/settings", h.api(a)))
        .bearer_auth(auditor.token.expose_secret())
        .json(&json!({"oauth_rate_limit": {"enabled": true, "window_secs": 60, "max_per_ip": 2}}))
        .send()
        .await
        .expect("put");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Change rate limiting and logging through A.
    let (status, changed) = h
        .admin(
            Method::PUT,
            &format!("{}/v1/settings", h.api(a)),
            Some(json!({
                "oauth_rate_limit": {"enabled": true, "window_secs": 60, "max_per_ip": 2},
                "logging": {"verbose_requests": true, "level": "debug", "retention_days": 7}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let version = changed["version"].as_u64().expect("version");
    assert_eq!(version, 2, "two sections changed: two events");

    // B applies it within seconds, without a restart.
    let started = std::time::Instant::now();
    wait_until("B applied the new settings", Duration::from_secs(5), || {
        let h = &h;
        async move { settings_of(h, b).await["applied_version"].as_u64() == Some(version) }
    })
    .await;
    let y = IpAddr::from([127, 10, 0, 2]);
    assert!(!limited(&b_base, y).await);
    assert!(!limited(&b_base, y).await);
    assert!(
        limited(&b_base, y).await,
        "the third request in the window is refused"
    );
    let applied_after = started.elapsed();
    wait_until("B switched its log filter", Duration::from_secs(5), || {
        let log = h.apis[b].process.log_text();
        async move { log.contains("log settings applied") && log.contains("debug,hyper=info") }
    })
    .await;
    let b_settings = settings_of(&h, b).await;
    assert_eq!(b_settings["customized"]["oauth_rate_limit"], true);
    assert_eq!(b_settings["values"]["oauth_rate_limit"]["max_per_ip"], 2);

    // Forged control messages change nothing: one claiming new values (limiting off) with a
    // version far ahead, one asking to clear the counters with no reset on record. B hears both
    // (its received counters move) and keeps limiting `y`.
    let received = |kind: &'static str| {
        let base = b_base.clone();
        async move { control_received(&base, kind).await }
    };
    let (settings_before, clears_before) = (
        received("settings").await,
        received("clear_rate_limits").await,
    );
    let nats = h.env.nats_client().await;
    let forged_settings = json!({
        "kind": "settings", "version": 1_000_000,
        "values": {
            "oauth_rate_limit": {"enabled": false, "window_secs": 60, "max_per_ip": 1000},
            "logging": {"verbose_requests": false, "level": "error", "retention_days": 7},
            "backups": {"enabled": false, "daily_at": "01:00", "keep": 1}
        },
        "customized": {"oauth_rate_limit": true, "logging": true, "backups": true}
    });
    for (subject, payload) in [
        ("hk.control.settings", forged_settings),
        (
            "hk.control.clear-rate-limits",
            json!({"kind": "clear_rate_limits"}),
        ),
    ] {
        nats.publish(subject, serde_json::to_vec(&payload).unwrap().into())
            .await
            .expect("publish forged control message");
    }
    nats.flush().await.expect("flush");
    wait_until(
        "B received both forged messages",
        Duration::from_secs(5),
        || {
            let received = &received;
            async move {
                received("settings").await > settings_before
                    && received("clear_rate_limits").await > clears_before
            }
        },
    )
    .await;
    assert!(
        limited(&b_base, y).await,
        "a forged control message cleared B's counters or turned limiting off"
    );
    let b_settings = settings_of(&h, b).await;
    assert_eq!(b_settings["applied_version"].as_u64(), Some(version));
    assert_eq!(b_settings["values"]["oauth_rate_limit"]["enabled"], true);

    // "Clear rate-limit cache" through A resets B's counters.
    let (status, body) = h
        .admin(
            Method::POST,
            &format!("{}/v1/maintenance/clear-rate-limits", h.api(a)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_until("B forgot its counters", Duration::from_secs(5), || {
        let b_base = b_base.clone();
        async move { !limited(&b_base, y).await }
    })
    .await;

    // Turning limiting off reaches B as well; "reload" makes B re-read the store.
    let (status, body) = h
        .admin(
            Method::PUT,
            &format!("{}/v1/settings", h.api(a)),
            Some(
                json!({"oauth_rate_limit": {"enabled": false, "window_secs": 60, "max_per_ip": 2}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .admin(
            Method::POST,
            &format!("{}/v1/maintenance/reload-config", h.api(a)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let z = IpAddr::from([127, 10, 0, 4]);
    wait_until("B stopped limiting", Duration::from_secs(5), || {
        let b_base = b_base.clone();
        async move {
            for _ in 0..4 {
                if limited(&b_base, z).await {
                    return false;
                }
            }
            true
        }
    })
    .await;

    // The same process all along (B says it started when it first did, and its log shows one
    // start), and the change is on record with its actor.
    assert!(h.apis[b].process.is_running(), "B is still running");
    assert_eq!(
        started_at(&h, b).await,
        b_started,
        "B never restarted: its start time changed"
    );
    assert_eq!(
        h.apis[b]
            .process
            .log_text()
            .matches("API listening")
            .count(),
        1,
        "B started once"
    );
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE aggregate_type = 'settings' ORDER BY sequence",
    )
    .fetch_all(&h.pool)
    .await
    .expect("settings events");
    assert_eq!(actors.len(), 3);
    assert!(actors.iter().all(|a| a.starts_with("key:")), "{actors:?}");
    eprintln!("settings applied by the other process within {applied_after:?}");
}
