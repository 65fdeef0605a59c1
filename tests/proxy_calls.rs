//! The HubSpot API proxy against real Postgres, NATS, two `hubkeeper api` processes and the
//! simulator: 300 calls for one portal through both processes never put more than the portal's
//! limit into any window at HubSpot and never draw a 429 from it; an access token revoked at
//! HubSpot mid-run is refreshed once and every call still succeeds; paths that would leave
//! HubSpot's API are refused with a 400 before anything is sent.
//!
//! The window is compressed (110 calls per 2 s at the simulator and in the proxies) so the run
//! stays short; the rule checked is the same: no window of that length ever holds more than 110.

#[path = "tokens_support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_sim::SimConfig;
use hubkeeper_testkit::{wait_until, SecretKind};
use secrecy::ExposeSecret;
use serde_json::Value;
use support::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HUB: u64 = 51_000_001;
const LIMIT: u32 = 110;
const WINDOW: Duration = Duration::from_secs(2);
const CALLS: usize = 300;
const CONTACTS: &str = "/crm/v3/objects/contacts";

fn proxy_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HK_PROXY_RATE_LIMIT_MAX", "110"),
        ("HK_PROXY_RATE_LIMIT_WINDOW", "2s"),
        // The production default: arrivals at HubSpot jitter by more than 100 ms when the
        // machine is loaded, and a window packed to its limit then sees one call too many.
        ("HK_PROXY_RATE_LIMIT_GUARD", "250ms"),
        ("HK_PROXY_MAX_WAIT", "30s"),
    ]
}

async fn started() -> (Harness, String, String, support::TestApp) {
    let sim = SimConfig {
        rate_limit: (LIMIT, WINDOW),
        ..SimConfig::default()
    };
    let mut h = Harness::start(sim).await;
    let env = proxy_env();
    let a = h.spawn_api("api-a", &env).await;
    h.spawn_api("api-b", &env).await;
    h.register_account(HUB).await;
    let app = h
        .register_app(a, "secret-proxy-0123456789", "secret-proxy-0123456789")
        .await;
    let id = h.install(a, &app, HUB).await;
    // The harness's service key is bound to the app.
    let service = h.service_key.clone().expect("service key");
    (h, id, service, app)
}

/// Revokes an access token at the simulator, as HubSpot would on the user's request.
async fn revoke_at_hubspot(h: &Harness, app: &support::TestApp, token: &str) {
    let response = h
        .http
        .post(format!("{}/oauth/v3/token/revoke", h.sim.base_url))
        .form(&[
            ("client_id", app.client_id.as_str()),
            ("client_secret", "secret-proxy-0123456789"),
            ("token", token),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "revoke: {}",
        response.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_keep_one_portal_under_hubspots_limit_and_survive_a_revoked_token() {
    let (h, id, service, app) = started().await;
    let h = Arc::new(h);
    let before = h.ctl.request_log(None).await.unwrap();
    let since = before.last().map(|e| e.seq);
    let refreshes_before = h.ctl.counters().await.unwrap().total.refresh_calls;

    let done = Arc::new(AtomicU64::new(0));
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let h = h.clone();
        let id = id.clone();
        let service = service.clone();
        let done = done.clone();
        calls.push(tokio::spawn(async move {
            let base = h.api(i % 2).to_string();
            let response = h
                .http
                .get(format!("{base}/v1/proxy/{id}{CONTACTS}?limit=1"))
                .bearer_auth(&service)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            done.fetch_add(1, Ordering::Relaxed);
            (status, body)
        }));
    }
    // Mid-run, the user revokes the current access token at HubSpot.
    wait_until(
        "a third of the calls answered",
        Duration::from_secs(60),
        || {
            let done = done.clone();
            async move { done.load(Ordering::Relaxed) >= (CALLS / 3) as u64 }
        },
    )
    .await;
    let (status, token) = h.token(0, &id, 10).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    revoke_at_hubspot(&h, &app, token["access_token"].as_str().unwrap()).await;

    let mut statuses = Vec::new();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "a proxied call failed: {body}");
        assert!(
            body["results"].is_array(),
            "HubSpot's answer relayed: {body}"
        );
        statuses.push(status);
    }
    assert_eq!(statuses.len(), CALLS);

    // What HubSpot saw: the successful CRM calls of this run, by arrival time.
    let log = h.ctl.request_log(since).await.unwrap();
    let crm: Vec<_> = log
        .iter()
        .filter(|e| e.path == CONTACTS && e.hub_id == Some(HUB))
        .collect();
    assert!(
        crm.iter().all(|e| e.status != 429),
        "HubSpot answered 429 to the proxy"
    );
    assert_eq!(h.ctl.counters().await.unwrap().total.rate_limited, 0);
    let mut times: Vec<_> = crm
        .iter()
        .filter(|e| e.status == 200)
        .map(|e| e.at)
        .collect();
    times.sort();
    assert_eq!(
        times.len(),
        CALLS,
        "every call reached HubSpot once with a live token"
    );
    let window = chrono::Duration::from_std(WINDOW).unwrap();
    let mut busiest = 0;
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|t| **t - *start < window)
            .count();
        busiest = busiest.max(in_window);
    }
    eprintln!(
        "proxy run: {} calls answered 200, busiest {WINDOW:?} window at HubSpot {busiest} (limit {LIMIT})",
        times.len()
    );
    assert!(
        busiest <= LIMIT as usize,
        "{busiest} calls reached HubSpot within one {WINDOW:?} window (limit {LIMIT})"
    );
    assert!(
        busiest >= (LIMIT as usize) * 3 / 4,
        "the budget was used, not wasted: busiest window {busiest}"
    );
    // The revoked token was refused (401) and replaced by exactly one refresh, whichever
    // process met the 401 first.
    let refused = crm.iter().filter(|e| e.status == 401).count();
    eprintln!("proxy run: {refused} calls met the revoked token (401) before the refresh");
    assert!(refused >= 1, "the revoked token was used at least once");
    // Calls that waited for a slot re-read the token just before it, so only those already
    // near their slot when the token was revoked (and until the refresh) meet the 401; the rest
    // use the refreshed token (when calls kept the token they took before waiting, 190 of the
    // 300 met the 401, each spending a slot of the portal's budget).
    assert!(
        refused < CALLS / 4,
        "{refused} calls were sent with the revoked token: waiting calls must re-read it"
    );
    assert_eq!(
        h.ctl.counters().await.unwrap().total.refresh_calls - refreshes_before,
        1,
        "one refresh for the revoked token"
    );

    // Counted per installation: every proxied call was a hand-out.
    wait_until("proxy calls counted", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT sum(handouts)::bigint FROM token_usage WHERE installation_id = $1",
        )
        .bind(&id)
        .fetch_one(&h.pool)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
            >= CALLS as i64
    })
    .await;
    let details = h.details(0, &id).await;
    assert!(details["generation"].as_u64().unwrap() >= 2, "{details}");

    // Status classes in the metrics.
    let metrics = h
        .http
        .get(format!("{}/metrics", h.api(0)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hk_proxy_requests_total{class=\"2xx\"}"),
        "proxy metrics by status class"
    );
    h.scan_for_leaks(&[SecretKind::AccessToken]).await;
}

/// One raw HTTP/1.1 request, so the path reaches the server exactly as written (an HTTP client
/// library would normalise `..` and `%2e%2e` away before sending).
async fn raw_get(port: u16, path: &str, key: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Small answers come in one chunk or with a content length; find the JSON object.
    let json = body
        .find('{')
        .and_then(|start| body.rfind('}').map(|end| &body[start..=end]))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_that_leave_hubspots_api_are_refused_before_anything_is_sent() {
    let (h, id, service, _app) = started().await;
    let port = h.apis[0].port;
    let before = h.ctl.counters().await.unwrap().total.crm_calls;
    let log_before = h.ctl.request_log(None).await.unwrap().len();
    for escape in [
        "crm/v3/../../oauth/v1/token",
        "crm/%2e%2e/%2e%2e/oauth/v1/token",
        "crm/%2E%2E/oauth",
        "crm/.%2e/oauth",
        "%2e%2e/x",
        "crm/v3%2F..%2F..%2Foauth",
        "https:%2F%2Fevil.example/x",
        "https://evil.example/x",
        "/evil.example/x",
        "crm/%5c..%5coauth",
        "crm/v3/%00",
    ] {
        let (status, body) = raw_get(port, &format!("/v1/proxy/{id}/{escape}"), &service).await;
        assert_eq!(status, 400, "{escape}: {body}");
        assert_eq!(
            body["error"]["code"], "invalid_parameter",
            "{escape}: {body}"
        );
        assert_eq!(body["error"]["parameter"], "path", "{escape}: {body}");
    }
    assert_eq!(
        h.ctl.counters().await.unwrap().total.crm_calls,
        before,
        "nothing reached HubSpot"
    );
    assert_eq!(
        h.ctl.request_log(None).await.unwrap().len(),
        log_before,
        "no request at all reached HubSpot"
    );
    // The same call with a proper path works, and only for keys that may use tokens.
    let (status, body) =
        raw_get(port, &format!("/v1/proxy/{id}{CONTACTS}?limit=2"), &service).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2), "{body}");
    let auditor = create_key(&h.pool, "auditor", Role::Auditor, "test")
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_string();
    let (status, body) = raw_get(port, &format!("/v1/proxy/{id}{CONTACTS}"), &auditor).await;
    assert_eq!(status, 403, "{body}");
    // Admin keys and service keys of other apps carry no installation's token either.
    let (status, body) = raw_get(port, &format!("/v1/proxy/{id}{CONTACTS}"), &h.admin_key).await;
    assert_eq!(status, 403, "{body}");
    let unbound = create_key(&h.pool, "unbound", Role::Service, "test")
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_string();
    let (status, body) = raw_get(port, &format!("/v1/proxy/{id}{CONTACTS}"), &unbound).await;
    assert_eq!(status, 403, "{body}");
    // An unknown installation is a 404 in the JSON error shape.
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = raw_get(port, &format!("/v1/proxy/{unknown}{CONTACTS}"), &service).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_answers_429_with_retry_after_without_calling_hubspot() {
    let sim = SimConfig {
        rate_limit: (LIMIT, WINDOW),
        ..SimConfig::default()
    };
    let mut h = Harness::start(sim).await;
    // Two calls per minute, and no waiting: the third is ours to refuse.
    let a = h
        .spawn_api(
            "api",
            &[
                ("HK_PROXY_RATE_LIMIT_MAX", "2"),
                ("HK_PROXY_RATE_LIMIT_WINDOW", "60s"),
                ("HK_PROXY_MAX_WAIT", "0"),
            ],
        )
        .await;
    h.register_account(HUB).await;
    let app = h
        .register_app(a, "secret-proxy-0123456789", "secret-proxy-0123456789")
        .await;
    let id = h.install(a, &app, HUB).await;
    let url = format!("{}/v1/proxy/{id}{CONTACTS}", h.api(a));
    let key = h.service_key.clone().expect("service key");
    for _ in 0..2 {
        let r = h.http.get(&url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let calls = h.ctl.counters().await.unwrap().total.crm_calls;
    let r = h.http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=61).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(h.ctl.counters().await.unwrap().total.crm_calls, calls);
}
