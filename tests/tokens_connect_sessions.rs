//! Connect sessions end to end, against real Postgres and NATS, `hubkeeper api` and `worker all`
//! processes and the HubSpot simulator: an app's backend creates a session for its customer, the
//! customer's browser opens the link once, consents at HubSpot, and lands on the app's return
//! URL; the customer is on the installation (events, details, `?external_ref=` filter); a
//! second session for the same customer reconnects the same installation; bad input is a 4xx.

#[path = "tokens_support/mod.rs"]
mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hubkeeper_api::auth::{create_key, create_key_for_apps, Role};
use hubkeeper_sim::SimConfig;
use hubkeeper_testkit::{free_port, hubkeeper_binary, wait_until, HkProcess, SecretKind};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use support::{fresh_browser, Harness};

const RETURN: &str = "http://127.0.0.1:9/app/hubspot/done";

/// `POST /v1/apps/{app}/connect-sessions` with `key`.
async fn create_session(
    h: &Harness,
    api: usize,
    key: &str,
    app: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = h
        .http
        .post(format!("{}/v1/apps/{app}/connect-sessions", h.api(api)))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Opens a connect URL; returns HubSpot's authorize parameters.
async fn open(h: &Harness, connect_url: &str) -> std::collections::HashMap<String, String> {
    let response = fresh_browser().get(connect_url).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "connect URL redirects"
    );
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&h.sim.base_url), "{location}");
    url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_sessions_take_the_apps_customer_to_its_return_url_and_reconnect() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    let base = h.api(api).to_string();
    let workers_env = h.api_env(free_port(), &[("HK_LOG", "info")]);
    let _workers = HkProcess::spawn(
        &hubkeeper_binary(),
        "workers",
        &["worker", "all"],
        &workers_env,
        &h.env.path().join("logs"),
    );
    h.register_account(40_000_001).await;
    h.register_account(40_000_002).await;
    let app = h
        .register_app(api, "secret-0123456789", "secret-0123456789")
        .await;
    let service = create_key_for_apps(
        &h.pool,
        "app-backend",
        Role::Service,
        &[app.app_id.parse().unwrap()],
        "test",
    )
    .await
    .expect("service key");
    let service = service.token.expose_secret().to_string();
    let other_app = h
        .register_app(api, "secret-9876543210", "secret-9876543210")
        .await;
    let foreign = create_key_for_apps(
        &h.pool,
        "other-backend",
        Role::Service,
        &[other_app.app_id.parse().unwrap()],
        "test",
    )
    .await
    .expect("foreign key");
    let foreign = foreign.token.expose_secret().to_string();
    let auditor = create_key(&h.pool, "auditor", Role::Auditor, "test")
        .await
        .expect("auditor key");
    let auditor = auditor.token.expose_secret().to_string();

    // The app registers its return URLs; a bad one is a 400 naming it.
    let (status, body) = h
        .admin(
            Method::PATCH,
            &format!("{base}/v1/apps/{}", app.app_id),
            Some(json!({"return_urls": ["http://app.example.com/done"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("https"),
        "{body}"
    );
    let (status, body) = h
        .admin(
            Method::PATCH,
            &format!("{base}/v1/apps/{}", app.app_id),
            Some(json!({"return_urls": [RETURN]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["app"]["return_urls"], json!([RETURN]));

    // --- a first connect through a session ---------------------------------------------------
    let (status, session) = create_session(
        &h,
        api,
        &service,
        &app.app_id,
        json!({
            "external_ref": "cust-17",
            "metadata": {"plan": "pro", "seats": 3},
            "return_url": format!("{RETURN}/tenant?tab=crm"),
            "app_version": "3.1.0",
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let session_id = session["session_id"].as_str().unwrap().to_string();
    assert!(session_id.starts_with("cs_"), "{session}");
    let connect_url = session["connect_url"].as_str().unwrap().to_string();
    assert_eq!(connect_url, format!("{base}/connect/{session_id}"));
    assert_eq!(session["installation_id"], Value::Null);
    let expires_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(session["expires_at"].clone()).unwrap();
    let lifetime = expires_at - chrono::Utc::now();
    assert!(
        lifetime <= chrono::Duration::seconds(900) && lifetime > chrono::Duration::seconds(800),
        "default lifetime 15 minutes: {lifetime}"
    );
    let params = open(&h, &connect_url).await;
    let redirect = h.consent(&params, 40_000_001, false, None).await;
    let target = h.callback(api, &redirect).await;
    assert!(
        target.starts_with(&format!("{RETURN}/tenant?tab=crm&")),
        "back to the app's return URL, its query kept: {target}"
    );
    let outcome = query_of(&target);
    assert_eq!(outcome["status"], "connected");
    assert_eq!(outcome["external_ref"], "cust-17");
    let id = outcome["installation_id"].clone();
    let details = h.details(api, &id).await;
    assert_eq!(details["external_ref"], "cust-17");
    assert_eq!(details["metadata"], json!({"plan": "pro", "seats": 3}));
    assert_eq!(details["app_version"], "3.1.0");
    assert_eq!(details["hub_id"], 40_000_001);
    let stored: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'InstallationConnected'",
    )
    .bind(&id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(stored["InstallationConnected"]["external_ref"], "cust-17");
    assert_eq!(stored["InstallationConnected"]["metadata"]["plan"], "pro");

    // The link was single-use: opened again it is refused (JSON for API clients, the public
    // failure page for browsers).
    let again = fresh_browser()
        .get(&connect_url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_used", "{body}");
    let page = fresh_browser().get(&connect_url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::CONFLICT);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("session_used") && !html.contains("login"),
        "{html}"
    );
    // Replaying HubSpot's redirect is refused too, back to the app with the code.
    let replayed = h.callback(api, &redirect).await;
    assert!(
        replayed.contains("error=invalid_state"),
        "a replayed state goes nowhere: {replayed}"
    );

    // The read model is filterable by the customer.
    let filtered = format!("{base}/v1/installations?external_ref=cust-17");
    wait_until(
        "the installation in the read model",
        Duration::from_secs(30),
        || async {
            let (_, page) = h.admin(Method::GET, &filtered, None).await;
            page["items"][0]["installation_id"] == id.as_str()
        },
    )
    .await;
    let (_, page) = h.admin(Method::GET, &filtered, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["external_ref"], "cust-17");
    let (_, none) = h
        .admin(
            Method::GET,
            &format!("{base}/v1/installations?external_ref=cust-18"),
            None,
        )
        .await;
    assert_eq!(none["items"], json!([]));
    let (status, bad) = h
        .admin(
            Method::GET,
            &format!("{base}/v1/installations?external_ref=a%20b"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // --- a second session for the same customer reconnects the same installation -------------
    let (status, second) = create_session(
        &h,
        api,
        &service,
        &app.app_id,
        json!({"external_ref": "cust-17", "metadata": {"plan": "enterprise"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(
        second["installation_id"],
        id.as_str(),
        "announced as a reconnect"
    );
    let params = open(&h, second["connect_url"].as_str().unwrap()).await;
    let redirect = h.consent(&params, 40_000_001, false, None).await;
    let target = h.callback(api, &redirect).await;
    assert!(
        target.starts_with("/connect-result?"),
        "no return URL: the public result page: {target}"
    );
    let target = format!("{base}{target}");
    let outcome = query_of(&target);
    assert_eq!(outcome["installation_id"], id, "same installation");
    assert_eq!(outcome["status"], "connected");
    let page = fresh_browser().get(&target).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Connected") && html.contains(&id), "{html}");
    let details = h.details(api, &id).await;
    assert_eq!(details["generation"], 2, "history kept: a reconnect");
    assert_eq!(details["metadata"], json!({"plan": "enterprise"}));
    assert!(details["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["change"]["kind"] == "reconnected"));

    // A reconnect session answered with another HubSpot account is refused, not re-pointed.
    let (_, third) = create_session(
        &h,
        api,
        &service,
        &app.app_id,
        json!({"external_ref": "cust-17", "return_url": RETURN}),
    )
    .await;
    let params = open(&h, third["connect_url"].as_str().unwrap()).await;
    let redirect = h.consent(&params, 40_000_002, false, None).await;
    let target = h.callback(api, &redirect).await;
    let outcome = query_of(&target);
    assert_eq!(outcome["error"], "account_mismatch", "{target}");
    assert_eq!(outcome["external_ref"], "cust-17");
    // Declining at HubSpot returns to the app with the callback's code.
    let (_, fourth) = create_session(
        &h,
        api,
        &service,
        &app.app_id,
        json!({"external_ref": "cust-20", "return_url": RETURN}),
    )
    .await;
    let params = open(&h, fourth["connect_url"].as_str().unwrap()).await;
    let denied = h.consent(&params, 40_000_002, true, None).await;
    let target = h.callback(api, &denied).await;
    assert!(target.starts_with(RETURN), "{target}");
    assert_eq!(query_of(&target)["error"], "access_denied");

    // --- bad input: clear 4xx JSON -------------------------------------------------------------
    let cases: Vec<(String, Value, StatusCode, &str)> = vec![
        (
            app.app_id.clone(),
            json!({"external_ref": "c1", "return_url": "https://evil.example/phish"}),
            StatusCode::BAD_REQUEST,
            "not on the app's list of return URLs",
        ),
        (
            app.app_id.clone(),
            json!({"external_ref": "c1", "return_url": format!("{RETURN}x")}),
            StatusCode::BAD_REQUEST,
            "not on the app's list of return URLs",
        ),
        (
            app.app_id.clone(),
            json!({"external_ref": "c1", "metadata": {"blob": "x".repeat(5000)}}),
            StatusCode::BAD_REQUEST,
            "metadata is",
        ),
        (
            app.app_id.clone(),
            json!({"external_ref": "c1", "metadata": [1, 2]}),
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            app.app_id.clone(),
            json!({"external_ref": ""}),
            StatusCode::BAD_REQUEST,
            "external_ref",
        ),
        (
            app.app_id.clone(),
            json!({"external_ref": "c 1"}),
            StatusCode::BAD_REQUEST,
            "external_ref",
        ),
        (
            app.app_id.clone(),
            json!({"metadata": {}}),
            StatusCode::BAD_REQUEST,
            "external_ref",
        ),
        (
            app.app_id.clone(),
            json!({"external_ref": "c1", "expires_in_secs": 86_401}),
            StatusCode::BAD_REQUEST,
            "expires_in_secs",
        ),
        (
            "not-a-uuid".into(),
            json!({"external_ref": "c1"}),
            StatusCode::BAD_REQUEST,
            "",
        ),
    ];
    for (app_id, body, expected, needle) in cases {
        let (status, answer) = create_session(&h, api, &service, &app_id, body.clone()).await;
        assert_eq!(status, expected, "{body}: {answer}");
        let text = format!(
            "{} {}",
            answer["error"]["code"].as_str().unwrap_or_default(),
            answer["error"]["message"].as_str().unwrap_or_default()
        );
        assert!(text.contains(needle), "{body}: {answer}");
    }
    // An unknown app: 404 for an admin (a bound service key is refused first: 403).
    let unknown = uuid::Uuid::new_v4().to_string();
    let admin_key = h.admin_key.clone();
    let (status, answer) =
        create_session(&h, api, &admin_key, &unknown, json!({"external_ref": "c1"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "not_found", "{answer}");
    let (status, _) =
        create_session(&h, api, &service, &unknown, json!({"external_ref": "c1"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A service key of another app: 403 naming the binding, before the body is looked at.
    for body in [json!({"external_ref": "c1"}), json!({"nonsense": true})] {
        let (status, answer) = create_session(&h, api, &foreign, &app.app_id, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(answer["error"]["reason"], "app_not_bound", "{answer}");
    }
    // Roles: an auditor may not create sessions; nobody without a key.
    let (status, answer) = create_session(
        &h,
        api,
        &auditor,
        &app.app_id,
        json!({"external_ref": "c1"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let anonymous = h
        .http
        .post(format!("{base}/v1/apps/{}/connect-sessions", app.app_id))
        .json(&json!({"external_ref": "c1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Expired: a session whose time ran out (moved into the past in the database, instead of
    // waiting its minimum lifetime).
    let (_, stale) = create_session(
        &h,
        api,
        &service,
        &app.app_id,
        json!({"external_ref": "c-stale", "expires_in_secs": 60}),
    )
    .await;
    sqlx::query(
        "UPDATE connect_sessions SET expires_at = now() - interval '1 second'
          WHERE external_ref = 'c-stale'",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    let expired = fresh_browser()
        .get(stale["connect_url"].as_str().unwrap())
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::GONE);
    let body: Value = expired.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_expired", "{body}");
    let page = fresh_browser()
        .get(stale["connect_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
    assert!(page.text().await.unwrap().contains("session_expired"));
    // Unknown and malformed links.
    for link in [
        format!("{base}/connect/cs_{}", "A".repeat(43)),
        format!("{base}/connect/nonsense"),
    ] {
        let unknown = fresh_browser()
            .get(&link)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "{link}");
        let body: Value = unknown.json().await.unwrap();
        assert_eq!(body["error"]["code"], "session_not_found");
    }

    // Session ids are bearer capabilities: only their hash is stored.
    let stored_plain: i64 =
        sqlx::query_scalar("SELECT count(*) FROM connect_sessions WHERE session_hash = $1")
            .bind(&session_id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(stored_plain, 0);
    assert!(!h.logs().contains(&session_id), "session ids never logged");

    h.scan_for_leaks(&[SecretKind::ClientSecret]).await;
}
