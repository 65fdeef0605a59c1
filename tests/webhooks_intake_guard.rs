//! The webhook intake under attack: an unknown app and a bad signature get the same answer (app
//! ids cannot be probed), failures are limited per client across every API process (429 with
//! `Retry-After`, other clients unaffected), new apps accept signature v3 only unless v1/v2 are
//! asked for on purpose, and processed events are forgotten after the deduplication window.
//! (The flood of unknown app ids is in `crates/hubkeeper-webhooks/tests/intake_flood.rs`.)

#[path = "support/webhooks.rs"]
mod webhooks;

use std::time::Duration;

use chrono::Utc;
use hubkeeper_hubspot::signature::sign_v3;
use hubkeeper_testkit::{free_port, Server, TestEnv};
use serde_json::{json, Value};
use webhooks::start_api;

const SECRET: &str = "guarded-secret-0123456789";
const CLIENT_ID: &str = "12121212-3434-4565-8787-909090909090";
const FAILURE_LIMIT: usize = 5;

fn batch(portal: u64) -> Vec<u8> {
    serde_json::to_vec(&json!([{
        "eventId": 77, "subscriptionId": 25, "portalId": portal, "appId": 1,
        "occurredAt": Utc::now().timestamp_millis(),
        "subscriptionType": "contact.creation", "attemptNumber": 0, "objectId": 5
    }]))
    .expect("batch")
}

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

/// Posts a batch to `url` signed (v3) with `secret`, as the client at `client` (behind the
/// trusted local proxy).
async fn post_signed(http: &reqwest::Client, url: &str, secret: &str, client: &str) -> Answer {
    let body = batch(3_000);
    let timestamp = Utc::now().timestamp_millis();
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-forwarded-for", client)
        .header(
            "x-hubspot-signature-v3",
            sign_v3(secret, "POST", url, &body, timestamp),
        )
        .header("x-hubspot-request-timestamp", timestamp.to_string())
        .body(body)
        .send()
        .await
        .expect("webhook request");
    Answer {
        status: r.status().as_u16(),
        retry_after: r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        body: r.json().await.unwrap_or(Value::Null),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_apps_look_like_bad_signatures_and_failures_are_limited_per_client() {
    let env = TestEnv::start().await;
    let limits = [
        ("HK_TRUSTED_PROXIES", "127.0.0.1"),
        ("HK_WEBHOOK_FAILURE_LIMIT_MAX", "5"),
        ("HK_WEBHOOK_FAILURE_LIMIT_WINDOW_SECS", "600"),
    ];
    let a = start_api(&env, &limits).await;
    // A second API process on the same database and master keys.
    let port_b = free_port();
    let mut vars_b = a.vars.clone();
    vars_b.retain(|(k, _)| k != "HK_BIND" && k != "HK_PUBLIC_URL");
    vars_b.push(("HK_BIND".into(), format!("127.0.0.1:{port_b}")));
    vars_b.push(("HK_PUBLIC_URL".into(), format!("http://127.0.0.1:{port_b}")));
    let b = Server::start(port_b, "api-b", &["api"], &vars_b, &env.path().join("logs")).await;
    let app = a.register_app("Guarded", CLIENT_ID, SECRET, None).await;
    let http = reqwest::Client::new();
    let url_a = a.webhook_url(app);
    let url_b = format!("{}/webhooks/hubspot/{app}", b.base);

    // Enumeration: an unknown app and a wrong signature answer alike, on both processes.
    let wrong_secret = post_signed(&http, &url_a, "a-guess", "198.51.100.1").await;
    let unknown_url = a.webhook_url(uuid::Uuid::new_v4());
    let unknown = post_signed(&http, &unknown_url, SECRET, "198.51.100.1").await;
    assert_eq!(wrong_secret.status, 401, "{}", wrong_secret.body);
    assert_eq!(
        (unknown.status, &unknown.body),
        (wrong_secret.status, &wrong_secret.body),
        "an unknown app must not be told apart from a wrong signature"
    );
    let unknown_b = post_signed(
        &http,
        &format!("{}/webhooks/hubspot/{}", b.base, uuid::Uuid::new_v4()),
        SECRET,
        "198.51.100.1",
    )
    .await;
    assert_eq!(
        (unknown_b.status, &unknown_b.body),
        (wrong_secret.status, &wrong_secret.body)
    );
    // The real app is served.
    let ok = post_signed(&http, &url_a, SECRET, "198.51.100.1").await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    // One client's failures, spread over both processes, count against one budget.
    let attacker = "203.0.113.66";
    for i in 0..FAILURE_LIMIT {
        let url = if i % 2 == 0 { &url_a } else { &url_b };
        let answer = post_signed(&http, url, "a-guess", attacker).await;
        assert_eq!(answer.status, 401, "failure {i}: {}", answer.body);
    }
    for url in [&url_b, &url_a] {
        let limited = post_signed(&http, url, "a-guess", attacker).await;
        assert_eq!(limited.status, 429, "{}", limited.body);
        assert_eq!(
            limited.body["error"]["code"], "rate_limited",
            "{}",
            limited.body
        );
        assert!(
            limited.retry_after.is_some_and(|secs| secs > 0),
            "429 without Retry-After"
        );
    }
    // Unknown app ids count the same, and are refused once over the limit.
    let probe = post_signed(&http, &unknown_url, SECRET, attacker).await;
    assert_eq!(probe.status, 429, "{}", probe.body);

    // Another client is unaffected: its own failures are 401s, its signed batches 200.
    let other = "198.51.100.77";
    let failure = post_signed(&http, &url_b, "a-guess", other).await;
    assert_eq!(failure.status, 401, "{}", failure.body);
    let ok = post_signed(&http, &url_b, SECRET, other).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let ok = post_signed(&http, &url_a, SECRET, other).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    // The bucket is in the shared limiter, not in a process.
    let counted: i64 = sqlx::query_scalar(
        "SELECT coalesce(cardinality(slots), 0)::bigint FROM rate_limit_windows WHERE bucket = $1",
    )
    .bind(format!("webhook-failures:{attacker}"))
    .fetch_one(&env.pool())
    .await
    .expect("the attacker's bucket");
    assert_eq!(counted, FAILURE_LIMIT as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_apps_accept_v3_only_unless_legacy_signatures_are_asked_for() {
    let env = TestEnv::start().await;
    let hk = start_api(&env, &[]).await;
    let create = |versions: Option<Value>, opt_in: Option<bool>, client_id: &'static str| {
        let mut body = json!({
            "label": "Signatures",
            "environment": "development",
            "client_id": client_id,
            "client_secret": SECRET,
            "redirect_uri": hubkeeper_sim::DEV_REDIRECT_URI,
            "scopes": "oauth",
        });
        if let Some(versions) = versions {
            body["signature_versions"] = versions;
        }
        if let Some(opt_in) = opt_in {
            body["allow_legacy_signatures"] = json!(opt_in);
        }
        let request = hk
            .http
            .post(format!("{}/v1/apps", hk.base))
            .bearer_auth(&hk.admin_key)
            .json(&body);
        async move {
            let r = request.send().await.expect("register");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };

    // No versions named: v3 only, nothing to warn about.
    let (status, app) = create(None, None, "10000000-0000-4000-8000-000000000001").await;
    assert_eq!(status, 201, "{app}");
    assert_eq!(app["signature_versions"], json!(["v3"]), "{app}");
    assert_eq!(app["warnings"], json!([]), "{app}");

    // v1/v2 without the opt-in: 400 naming the field; nothing registered.
    for versions in [
        json!(["v1"]),
        json!(["v2", "v3"]),
        json!(["v1", "v2", "v3"]),
    ] {
        for opt_in in [None, Some(false)] {
            let (status, refused) = create(
                Some(versions.clone()),
                opt_in,
                "10000000-0000-4000-8000-000000000002",
            )
            .await;
            assert_eq!(status, 400, "{versions}: {refused}");
            assert_eq!(refused["error"]["code"], "validation_failed", "{refused}");
            assert_eq!(
                refused["error"]["parameter"], "allow_legacy_signatures",
                "{refused}"
            );
            assert!(
                refused["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("allow_legacy_signatures")),
                "{refused}"
            );
        }
    }
    // With it: accepted, and the answer says why it is risky.
    let (status, legacy) = create(
        Some(json!(["v1", "v3"])),
        Some(true),
        "10000000-0000-4000-8000-000000000002",
    )
    .await;
    assert_eq!(status, 201, "{legacy}");
    assert_eq!(
        legacy["signature_versions"],
        json!(["v1", "v3"]),
        "{legacy}"
    );
    let warning = legacy["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("v1") && warning.contains("replayed"),
        "{legacy}"
    );

    // Widening a v3-only app by update needs the opt-in too.
    let patch = |body: Value| {
        let request = hk
            .http
            .patch(format!(
                "{}/v1/apps/{}",
                hk.base,
                app["app_id"].as_str().unwrap_or("")
            ))
            .bearer_auth(&hk.admin_key)
            .json(&body);
        async move {
            let r = request.send().await.expect("update");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let (status, refused) = patch(json!({"signature_versions": ["v2", "v3"]})).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["parameter"], "allow_legacy_signatures");
    let (status, widened) = patch(json!({
        "signature_versions": ["v2", "v3"], "allow_legacy_signatures": true
    }))
    .await;
    assert_eq!(status, 200, "{widened}");
    assert_eq!(widened["app"]["signature_versions"], json!(["v2", "v3"]));
    assert!(
        widened["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w.as_str().unwrap_or("").contains("v2"))),
        "{widened}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_forgets_only_processed_events_older_than_the_window() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    hubkeeper_store::migrate(&pool).await.expect("migrate");
    let app = uuid::Uuid::new_v4();
    // Ages in hours: beyond the 6-day window, just inside it, recent.
    let ages = [24 * 30, 24 * 8, 24 * 6 + 1, 24 * 6 - 1, 24 * 3, 1];
    for (i, hours) in ages.iter().enumerate() {
        sqlx::query(
            "INSERT INTO webhook_events_seen (dedupe_key, app_id, portal_id, event_id,
                 subscription_type, occurred_at, batch_sequence, processed_at)
             VALUES ($1, $2, 1, $3, 'contact.creation', now(), 1,
                     now() - make_interval(hours => $4))",
        )
        .bind(vec![i as u8; 32])
        .bind(app)
        .bind(i as i64)
        .bind(*hours)
        .execute(&pool)
        .await
        .expect("seen row");
    }
    // Batches of one: the pruning goes on until nothing older is left.
    let pruned = hubkeeper_core::backup::prune_webhook_events_seen(
        &pool,
        Duration::from_secs(6 * 86_400),
        1,
    )
    .await
    .expect("prune");
    assert_eq!(pruned, 3);
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT event_id FROM webhook_events_seen ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(left, vec![3, 4, 5]);
    // A window shorter than HubSpot's retry horizon (3 days) is raised to 4 days: the 3-day-old
    // row stays.
    let pruned =
        hubkeeper_core::backup::prune_webhook_events_seen(&pool, Duration::from_secs(3_600), 100)
            .await
            .expect("prune");
    assert_eq!(pruned, 1);
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT event_id FROM webhook_events_seen ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .expect("rows");
    assert_eq!(left, vec![4, 5]);
}
