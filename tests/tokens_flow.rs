//! The install flow, app management, revoke/disconnect/uninstall and crypto-shredding, against
//! real Postgres and NATS, `hubkeeper api` processes and the HubSpot simulator.

#[path = "tokens_support/mod.rs"]
mod support;

use axum::http::{Method, StatusCode};
use hubkeeper_core::Vault;
use hubkeeper_crypto::{MasterKeyring, Sealed};
use hubkeeper_domain::InstallationId;
use hubkeeper_sim::SimConfig;
use hubkeeper_testkit::SecretKind;
use serde_json::{json, Value};
use support::{Harness, SCOPES};

/// Fails if any token, refresh token, code or client secret appears in any table or log.
async fn assert_no_secret_leaks(h: &Harness) {
    h.scan_for_leaks(&SecretKind::ALL).await;
    assert!(
        h.logs().contains("installation connected"),
        "the scan reads the logs"
    );
}

fn error_code(target: &str) -> &str {
    target
        .strip_prefix("/connect-result?error=")
        .unwrap_or_else(|| panic!("expected an error redirect, got {target}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn install_flow_through_the_simulator_with_every_error_code() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    h.register_account(40_000_001).await;
    h.register_account(40_000_002).await;
    let app = h
        // Reserved characters: the leak check must also find it form-encoded (as sent to HubSpot).
        .register_app(
            api,
            "secret/good+0123=4567 89&",
            "secret/good+0123=4567 89&",
        )
        .await;

    // Success: consent, callback, the public result page with the installation id (never the
    // dashboard: the browser is the customer's).
    let id = h.install(api, &app, 40_000_001).await;
    let details = h.details(api, &id).await;
    assert_eq!(details["status"], "connected");
    assert_eq!(details["hub_id"], 40_000_001);
    assert_eq!(details["hub_domain"], "hub40000001.example.com");
    assert_eq!(details["app_id"], app.app_id.as_str());
    assert_eq!(
        details["installer"]["email"],
        "admin@hub40000001.example.com"
    );
    let scopes: Vec<&str> = details["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(scopes.join(" "), SCOPES);
    assert!(details.get("access_token").is_none() && details.get("tokens").is_none());
    let (status, token) = h.token(api, &id, 60).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(
        h.crm_status(token["access_token"].as_str().unwrap()).await,
        StatusCode::OK,
        "the handed-out token works at HubSpot"
    );

    // Reinstalling in the same hub reuses the installation.
    let again = h.install(api, &app, 40_000_001).await;
    assert_eq!(again, id, "a reconnect reuses the installation");
    assert_eq!(h.details(api, &id).await["generation"], 2);
    // Another hub is another installation.
    let other = h.install(api, &app, 40_000_002).await;
    assert_ne!(other, id);

    // access_denied: the user clicks Cancel.
    let params = h.start_install(api, &app).await;
    let denied = h.consent(&params, 40_000_001, true, None).await;
    assert_eq!(error_code(&h.callback(api, &denied).await), "access_denied");

    // invalid_state: replaying a used state, a forged one, none at all.
    let params = h.start_install(api, &app).await;
    let redirect = h.consent(&params, 40_000_001, false, None).await;
    assert!(h
        .callback(api, &redirect)
        .await
        .contains("status=connected"));
    assert_eq!(
        error_code(&h.callback(api, &redirect).await),
        "invalid_state",
        "a state is single-use"
    );
    let forged = redirect.replace("state=s1.", "state=s1.x");
    assert_eq!(error_code(&h.callback(api, &forged).await), "invalid_state");
    assert_eq!(
        error_code(&h.callback_query(api, "code=abc").await),
        "invalid_state"
    );

    // missing_code: a genuine state but no code and no error.
    let params = h.start_install(api, &app).await;
    let query = format!("state={}", params["state"]);
    assert_eq!(
        error_code(&h.callback_query(api, &query).await),
        "missing_code"
    );

    // token_exchange_failed: a genuine state with a code HubSpot does not know; no retry.
    let params = h.start_install(api, &app).await;
    let failures_before = h.ctl.counters().await.unwrap().total.code_exchange_failures;
    let query = format!("state={}&code=na1-not-a-real-code", params["state"]);
    assert_eq!(
        error_code(&h.callback_query(api, &query).await),
        "token_exchange_failed"
    );
    assert_eq!(
        h.ctl.counters().await.unwrap().total.code_exchange_failures,
        failures_before + 1,
        "the code is exchanged exactly once, never retried"
    );

    // redirect_uri_mismatch: HubSpot issued the code for another registered redirect URI.
    let params = h.start_install(api, &app).await;
    let other_uri = format!("{}2", app.redirect_uri);
    let redirect = h
        .consent(&params, 40_000_001, false, Some(&other_uri))
        .await;
    assert_eq!(
        error_code(&h.callback(api, &redirect).await),
        "redirect_uri_mismatch"
    );

    // invalid_client: our copy of the secret is not HubSpot's.
    let wrong = h
        .register_app(api, "secret-we-think-0123456", "secret-hubspot-has-0123")
        .await;
    let params = h.start_install(api, &wrong).await;
    let redirect = h.consent(&params, 40_000_001, false, None).await;
    assert_eq!(
        error_code(&h.callback(api, &redirect).await),
        "invalid_client"
    );

    // An unknown app: JSON 404, a malformed id: JSON 400.
    let response = support::fresh_browser()
        .get(format!(
            "{}/oauth/{}/install",
            h.api(api),
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let response = support::fresh_browser()
        .get(format!("{}/oauth/not-a-uuid/install", h.api(api)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Rate limit per client IP: one browser is refused once it used up its budget (2 per
    // minute from the environment here, or whatever the settings page stored; at most the
    // default 10), with a JSON 429; another address is unaffected.
    let limited = h
        .spawn_api("api-limited", &[("HK_OAUTH_RATE_LIMIT_MAX", "2")])
        .await;
    let browser = support::client_from(std::net::IpAddr::from([127, 0, 9, 9]));
    let url = format!("{}/oauth/{}/install", h.api(limited), app.app_id);
    let mut allowed = 0;
    let refused = loop {
        let response = browser.get(&url).send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            break response;
        }
        assert!(response.status().is_redirection(), "{}", response.status());
        allowed += 1;
        assert!(allowed <= 10, "the limiter never refused");
    };
    assert!(allowed >= 2, "allowed {allowed}");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    h.start_install(limited, &app).await;

    assert_no_secret_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apps_api_validates_hides_the_secret_and_guards_deletion() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    h.register_account(40_000_001).await;
    let base = h.api(api).to_string();

    // Validation errors name the problem; never a 500.
    let (status, body) = h
        .admin(
            Method::POST,
            &format!("{base}/v1/apps"),
            Some(json!({
                "label": "x", "environment": "production", "client_id": "not-a-uuid",
                "client_secret": "s3cr3t-value-000", "redirect_uri": "https://x.example/cb",
                "scopes": "oauth"
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("client id"));
    let (status, body) = h
        .admin(
            Method::POST,
            &format!("{base}/v1/apps"),
            Some(json!({"label": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{body}"
    );
    let (status, body) = h
        .admin(
            Method::POST,
            &format!("{base}/v1/apps"),
            Some(json!({
                "label": "x", "environment": "moon", "client_id": uuid::Uuid::new_v4(),
                "client_secret": "s", "redirect_uri": "https://x.example/cb", "scopes": "oauth"
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("environment"));
    let response = h
        .http
        .post(format!("{base}/v1/apps"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "admin routes need a key"
    );

    let app = h
        .register_app(api, "app-secret-abcdef0123", "app-secret-abcdef0123")
        .await;
    let (status, shown) = h
        .admin(Method::GET, &format!("{base}/v1/apps/{}", app.app_id), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["client_id"], app.client_id.as_str());
    assert!(!shown.to_string().contains("app-secret-abcdef0123"));
    // Only when the secret was rotated and until when the previous one counts: never a secret.
    let mut keys = Vec::new();
    collect_keys(&shown, &mut keys);
    for key in keys.iter().filter(|k| k.to_lowercase().contains("secret")) {
        assert!(
            ["secret_rotated_at", "previous_secret_valid_until"].contains(&key.as_str()),
            "app details hold a secret-like field {key}: {shown}"
        );
    }

    // Updates: label silently, scopes and redirect URI with warnings; never the secret.
    let (status, body) = h
        .admin(
            Method::PATCH,
            &format!("{base}/v1/apps/{}", app.app_id),
            Some(json!({"label": "Renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["app"]["label"], "Renamed");
    assert_eq!(body["warnings"], json!([]));
    let (status, body) = h
        .admin(
            Method::PATCH,
            &format!("{base}/v1/apps/{}", app.app_id),
            Some(json!({"scopes": "oauth crm.objects.contacts.read crm.objects.deals.read"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["warnings"].as_array().unwrap().len(), 1, "{body}");
    let (status, body) = h
        .admin(
            Method::PATCH,
            &format!("{base}/v1/apps/{}", app.app_id),
            Some(json!({"client_secret": "new-secret"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("client secret"));
    // Put the scopes back so installs match the simulator's app.
    h.admin(
        Method::PATCH,
        &format!("{base}/v1/apps/{}", app.app_id),
        Some(json!({"scopes": SCOPES})),
    )
    .await;

    // Deletion is refused while an installation is active, unless forced.
    let id = h.install(api, &app, 40_000_001).await;
    let (status, body) = h
        .admin(
            Method::DELETE,
            &format!("{base}/v1/apps/{}", app.app_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "has_active_installations");
    let (status, body) = h
        .admin(
            Method::DELETE,
            &format!("{base}/v1/apps/{}?force=true", app.app_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["active_installations"], 1);
    assert_eq!(body["forced"], true);
    // Tokens are kept (a still-valid one is handed out) but can no longer be refreshed.
    let (status, _) = h.token(api, &id, 60).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .post(api, &format!("/v1/installations/{id}/refresh"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "app_deleted");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("app deleted: tokens kept but cannot be refreshed"));
    let (status, _) = h
        .admin(
            Method::PATCH,
            &format!("{base}/v1/apps/{}", app.app_id),
            Some(json!({"label": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Unknown and malformed ids.
    let (status, body) = h
        .admin(
            Method::GET,
            &format!("{base}/v1/apps/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = h
        .admin(Method::GET, &format!("{base}/v1/installations/nope"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = h.token(api, &uuid::Uuid::new_v4().to_string(), 60).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    assert_no_secret_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_disconnect_reconnect_and_uninstall() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    for hub in [40_000_001, 40_000_002, 40_000_003] {
        h.register_account(hub).await;
    }
    let app = h
        .register_app(api, "secret-rdu-0123456789", "secret-rdu-0123456789")
        .await;

    // Revoke: HubSpot's revoke endpoint is called, then the status is revoked, for good.
    let revoked = h.install(api, &app, 40_000_001).await;
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{revoked}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a reason is required: {body}"
    );
    let (status, body) = h
        .post(api, &format!("/v1/installations/{revoked}/revoke"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a body is required: {body}"
    );
    let revokes_before = h.ctl.counters().await.unwrap().total.revokes;
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{revoked}/revoke"),
            Some(json!({"reason": "customer offboarded"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counters = h.ctl.counters().await.unwrap();
    assert_eq!(
        counters.total.revokes,
        revokes_before + 1,
        "revoked at HubSpot"
    );
    let installation = counters.installation(&app.client_id, 40_000_001).unwrap();
    assert!(installation
        .refresh_tokens
        .iter()
        .any(|t| format!("{:?}", t.state).to_lowercase().contains("revoked")));
    let details = h.details(api, &revoked).await;
    assert_eq!(details["status"], "revoked");
    assert_eq!(
        details["history"].as_array().unwrap().last().unwrap()["change"]["reason"],
        "customer offboarded"
    );
    let (status, body) = h.token(api, &revoked, 60).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("revoked"))
    );
    let (status, body) = h
        .post(api, &format!("/v1/installations/{revoked}/refresh"), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("revoked"))
    );
    // The actor and reason are in the event metadata.
    let metadata: String = sqlx::query_scalar(
        "SELECT metadata::text FROM events WHERE aggregate_id = $1 AND event_type = 'InstallationRevoked'",
    )
    .bind(&revoked)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    assert!(
        metadata["actor"].as_str().unwrap().starts_with("key:ak"),
        "{metadata}"
    );
    assert_eq!(metadata["reason"], "customer offboarded");
    assert!(metadata["request_id"].is_string(), "{metadata}");

    // Disconnect: tokens removed, data kept, HubSpot grant revoked best-effort; reconnect works.
    let disconnected = h.install(api, &app, 40_000_002).await;
    let revokes_before = h.ctl.counters().await.unwrap().total.revokes;
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{disconnected}/disconnect"),
            Some(json!({"reason": "paused by support"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "disconnected");
    assert_eq!(
        h.ctl.counters().await.unwrap().total.revokes,
        revokes_before + 1
    );
    let (status, body) = h.token(api, &disconnected, 60).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("disconnected"))
    );
    let again = h.install(api, &app, 40_000_002).await;
    assert_eq!(again, disconnected, "reconnect reuses the installation");
    let details = h.details(api, &disconnected).await;
    assert_eq!(details["status"], "connected");
    let (status, token) = h.token(api, &disconnected, 60).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert_eq!(
        h.crm_status(token["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );

    // Uninstall in HubSpot: the next refresh marks the installation as needing re-authorisation.
    let uninstalled = h.install(api, &app, 40_000_003).await;
    h.ctl.uninstall(&app.client_id, 40_000_003).await.unwrap();
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{uninstalled}/refresh"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "reauthorization_required");
    let details = h.details(api, &uninstalled).await;
    assert_eq!(details["status"], "needs_reauthorization");
    assert_eq!(details["last_failure"]["class"], "invalid_grant");
    let (status, body) = h.token(api, &uninstalled, 60).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "reauthorization_required");
    // The user reinstalls: back to connected.
    assert_eq!(h.install(api, &app, 40_000_003).await, uninstalled);
    assert_eq!(h.details(api, &uninstalled).await["status"], "connected");

    // Hand-outs are counted (flushed in batches every ~2 s).
    h.wait_for_usage_flush().await;
    let details = h.details(api, &disconnected).await;
    assert!(
        details["usage"]["handouts_total"].as_i64().unwrap() >= 1,
        "{details}"
    );
    assert!(details["usage"]["last_handed_out_at"].is_string());

    assert_no_secret_leaks(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forgetting_a_tenant_shreds_its_tokens_but_keeps_the_history() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    h.register_account(40_000_001).await;
    let app = h
        .register_app(api, "secret-shred-01234567", "secret-shred-01234567")
        .await;
    let id = h.install(api, &app, 40_000_001).await;
    let installation: InstallationId = id.parse().unwrap();

    // The sealed tokens as stored in the immutable history.
    let payload: String = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_id = $1 AND event_type = 'InstallationConnected'",
    )
    .bind(&id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    let payload: Value = serde_json::from_str(&payload).unwrap();
    let tokens = &payload["InstallationConnected"]["tokens"];
    let access: Sealed = tokens["access"].as_str().unwrap().parse().unwrap();
    let refresh: Sealed = tokens["refresh"].as_str().unwrap().parse().unwrap();
    let vault = Vault::new(
        h.pool.clone(),
        MasterKeyring::parse(&h.master_keys, None).unwrap(),
    );
    assert!(
        vault.open_access(&installation, &access).await.is_ok(),
        "readable before"
    );

    // Forgetting needs the grant to be dead at HubSpot first.
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{id}/forget"),
            Some(json!({"reason": "GDPR #42"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("still_connected"))
    );
    let (status, _) = h
        .post(
            api,
            &format!("/v1/installations/{id}/revoke"),
            Some(json!({"reason": "GDPR #42"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let events_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{id}/forget"),
            Some(json!({"reason": "GDPR #42"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["shredded"], true);

    // The history remains (plus the forget event) ...
    let events_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
            .bind(&id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(events_after, events_before + 1);
    let still_there: String = sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_id = $1 AND event_type = 'InstallationConnected'",
    )
    .bind(&id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(
        still_there.contains(&access.to_string()),
        "ciphertext still in the history"
    );
    // ... but its ciphertexts can no longer be opened, by a fresh vault or anyone else.
    let fresh = Vault::new(
        h.pool.clone(),
        MasterKeyring::parse(&h.master_keys, None).unwrap(),
    );
    for sealed in [&access] {
        let err = fresh.open_access(&installation, sealed).await.unwrap_err();
        assert!(err.to_string().contains("crypto-shredded"), "{err}");
    }
    let err = fresh
        .open_refresh(&installation, &refresh)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("crypto-shredded"), "{err}");
    let wrapped: Option<String> =
        sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE owner = $1")
            .bind(&id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(wrapped, None, "the wrapped data key is destroyed");
    let details = h.details(api, &id).await;
    assert!(details["forgotten_at"].is_string());
    assert_eq!(
        details["history"].as_array().unwrap().last().unwrap()["change"]["kind"],
        "tenant_forgotten"
    );
    // Forgetting again is harmless.
    let (status, body) = h
        .post(
            api,
            &format!("/v1/installations/{id}/forget"),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["shredded"], false);
    assert_no_secret_leaks(&h).await;
}

/// Commands load aggregates from a snapshot plus the events after it; the snapshot must be the
/// state a full replay gives, hold no secret in clear, and be disposable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_histories_load_from_snapshots_that_match_a_full_replay() {
    use cqrs_es::EventStore;

    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    let secret = "snapshot-secret-6b1d2f7e-0a9c-4e3b-8d5f-1c2e3a4b5c6d";
    let app = h.register_app(api, secret, secret).await;
    let url = format!("{}/v1/apps/{}", h.api(api), app.app_id);
    for i in 0..45 {
        let (status, body) = h
            .admin(
                Method::PATCH,
                &url,
                Some(json!({ "label": format!("Label {i}") })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "edit {i}: {body}");
    }
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'app' AND aggregate_id = $1",
    )
    .bind(&app.app_id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    let (snapshot_at, payload): (i64, Value) = sqlx::query_as(
        "SELECT last_sequence, payload::jsonb FROM snapshots
          WHERE aggregate_type = 'app' AND aggregate_id = $1",
    )
    .bind(&app.app_id)
    .fetch_one(&h.pool)
    .await
    .expect("a snapshot after 46 events");
    assert_eq!(events, 46);
    let every = hubkeeper_core::commands::SNAPSHOT_EVERY as i64;
    assert_eq!(
        snapshot_at,
        events / every * every,
        "one-event commands snapshot when they reach a multiple of {every}"
    );
    assert!(
        snapshot_at < events,
        "the load below applies events after the snapshot"
    );
    assert!(
        !payload.to_string().contains(secret),
        "the client secret is sealed in the snapshot too"
    );

    // Snapshot + tail == every event from the start.
    let bus = hubkeeper_core::CommandBus::new(&h.pool, hubkeeper_domain::DomainServices::system());
    let (from_snapshot, sequence) = bus.apps().load(&app.app_id).await.unwrap();
    let full: cqrs_es::persist::PersistedEventStore<_, hubkeeper_domain::app::App> =
        cqrs_es::persist::PersistedEventStore::new_event_store(
            postgres_es::PostgresEventRepository::new(h.pool.clone()),
        )
        .with_upcasters(hubkeeper_domain::upcasters::all());
    let replayed = full.load_aggregate(&app.app_id).await.unwrap();
    assert_eq!(sequence as i64, events);
    assert_eq!(replayed.current_sequence, sequence);
    assert_eq!(
        serde_json::to_value(&from_snapshot).unwrap(),
        serde_json::to_value(&replayed.aggregate).unwrap()
    );

    // Snapshots are a cache: losing them changes nothing.
    sqlx::query("DELETE FROM snapshots")
        .execute(&h.pool)
        .await
        .unwrap();
    let (status, body) = h
        .admin(
            Method::PATCH,
            &url,
            Some(json!({ "label": "After the loss" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, shown) = h.admin(Method::GET, &url, None).await;
    assert_eq!(shown["label"], "After the loss", "{shown}");
}

/// An aggregate whose `apply` is not idempotent, so a snapshot that folded an event twice shows.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Tally {
    count: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counted;

impl cqrs_es::DomainEvent for Counted {
    fn event_type(&self) -> String {
        "Counted".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug)]
struct NeverFails;

impl std::fmt::Display for NeverFails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never fails")
    }
}

impl std::error::Error for NeverFails {}

impl cqrs_es::Aggregate for Tally {
    const TYPE: &'static str = "test_tally";
    type Command = u8;
    type Event = Counted;
    type Error = NeverFails;
    type Services = ();

    async fn handle(
        &mut self,
        events: u8,
        _: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), NeverFails> {
        for _ in 0..events {
            sink.write(Counted, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, _: Counted) {
        self.count += 1;
    }
}

/// cqrs-es 0.5 folds a command's events into the loaded aggregate while handling it and again
/// when it builds the snapshot, and (with snapshots every N events) leaves out the events after
/// the N boundary; our store must fold every event exactly once, whatever the batch sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_fold_each_event_exactly_once() {
    use cqrs_es::EventStore;

    let env = hubkeeper_testkit::TestEnv::start().await;
    let pool = env.pool();
    let framework: hubkeeper_core::commands::Framework<Tally> = cqrs_es::CqrsFramework::new(
        hubkeeper_core::commands::SnapshotStore::new(&pool),
        vec![],
        (),
    );
    let mut total = 0u64;
    // Batches of 1..=7 events cross snapshot boundaries at every offset.
    for round in 0..30u8 {
        let n = round % 7 + 1;
        framework
            .execute_with_metadata("t-1", n, std::collections::HashMap::new())
            .await
            .unwrap();
        total += u64::from(n);
    }
    let (snapshot_at, payload): (i64, Value) = sqlx::query_as(
        "SELECT last_sequence, payload::jsonb FROM snapshots WHERE aggregate_type = 'test_tally'",
    )
    .fetch_one(&pool)
    .await
    .expect("snapshots were written");
    assert_eq!(
        payload["count"].as_i64(),
        Some(snapshot_at),
        "a snapshot at sequence {snapshot_at} must have counted {snapshot_at} events: {payload}"
    );
    let loaded = hubkeeper_core::commands::SnapshotStore::<Tally>::new(&pool)
        .load_aggregate("t-1")
        .await
        .unwrap();
    let mut loaded = loaded;
    assert_eq!(
        cqrs_es::AggregateContext::aggregate(&mut loaded).count,
        total
    );
}

/// Every object key in `value`, at any depth.
fn collect_keys(value: &Value, keys: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                keys.push(k.clone());
                collect_keys(v, keys);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_keys(v, keys)),
        _ => {}
    }
}

/// Commands racing on one aggregate: each commit is one statement (the events, with the
/// snapshot when one is due), and a lost race must write nothing and be retried, so every
/// command's events land exactly once and the snapshot counts exactly the events before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commands_on_one_aggregate_land_exactly_once() {
    use std::sync::Arc;

    let env = hubkeeper_testkit::TestEnv::start().await;
    let pool = env.pool();
    let framework: Arc<hubkeeper_core::commands::Framework<Tally>> =
        Arc::new(cqrs_es::CqrsFramework::new(
            hubkeeper_core::commands::SnapshotStore::new(&pool),
            vec![],
            (),
        ));
    let mut writers = Vec::new();
    for writer in 0..8u8 {
        let framework = framework.clone();
        writers.push(tokio::spawn(async move {
            let (mut written, mut conflicts) = (0u64, 0u64);
            for round in 0..15u8 {
                let n = (writer + round) % 3 + 1;
                loop {
                    match framework
                        .execute_with_metadata("race-1", n, std::collections::HashMap::new())
                        .await
                    {
                        Ok(()) => break,
                        Err(cqrs_es::AggregateError::AggregateConflict) => conflicts += 1,
                        Err(other) => panic!("unexpected store error: {other}"),
                    }
                }
                written += u64::from(n);
            }
            (written, conflicts)
        }));
    }
    let (mut total, mut conflicts) = (0u64, 0u64);
    for writer in writers {
        let (w, c) = writer.await.unwrap();
        total += w;
        conflicts += c;
    }
    let (events, max_sequence): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), max(sequence) FROM events
          WHERE aggregate_type = 'test_tally' AND aggregate_id = 'race-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        events as u64, total,
        "every command's events, once ({conflicts} lost races)"
    );
    assert_eq!(max_sequence, Some(events), "sequences without gaps");
    let (snapshot_at, payload): (i64, Value) = sqlx::query_as(
        "SELECT last_sequence, payload::jsonb FROM snapshots
          WHERE aggregate_type = 'test_tally' AND aggregate_id = 'race-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Commands of up to 3 events: the last snapshot is within SNAPSHOT_EVERY + 2 of the end.
    let every = hubkeeper_core::commands::SNAPSHOT_EVERY as i64;
    assert!(
        events - (every + 2) <= snapshot_at && snapshot_at <= events,
        "a snapshot at {snapshot_at} of {events} events"
    );
    assert_eq!(
        payload["count"].as_i64(),
        Some(snapshot_at),
        "the snapshot counts exactly the events before it: {payload}"
    );
    let mut loaded = cqrs_es::EventStore::load_aggregate(
        &hubkeeper_core::commands::SnapshotStore::<Tally>::new(&pool),
        "race-1",
    )
    .await
    .unwrap();
    assert_eq!(
        cqrs_es::AggregateContext::aggregate(&mut loaded).count,
        events as u64,
        "snapshot plus the events after it"
    );
}

/// A snapshot that no longer deserializes (the aggregate's state changed shape) is ignored: the
/// state is replayed from the events and the next command replaces the snapshot instead of
/// failing as a conflict forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_no_longer_deserializes_is_replaced() {
    use cqrs_es::EventStore;

    let env = hubkeeper_testkit::TestEnv::start().await;
    let pool = env.pool();
    let framework: hubkeeper_core::commands::Framework<Tally> = cqrs_es::CqrsFramework::new(
        hubkeeper_core::commands::SnapshotStore::new(&pool),
        vec![],
        (),
    );
    let run =
        |n: u8| framework.execute_with_metadata("shape-1", n, std::collections::HashMap::new());
    run(3).await.unwrap();
    run(2).await.unwrap();
    sqlx::query(
        "UPDATE snapshots SET payload = '{\"count\": \"no longer a number\"}'
          WHERE aggregate_type = 'test_tally' AND aggregate_id = 'shape-1'",
    )
    .execute(&pool)
    .await
    .unwrap();
    run(4)
        .await
        .expect("the command replays the events and writes a new snapshot");
    let (snapshot_at, payload): (i64, Value) = sqlx::query_as(
        "SELECT last_sequence, payload::jsonb FROM snapshots
          WHERE aggregate_type = 'test_tally' AND aggregate_id = 'shape-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (snapshot_at, payload["count"].as_i64()),
        (9, Some(9)),
        "{payload}"
    );
    let mut loaded = hubkeeper_core::commands::SnapshotStore::<Tally>::new(&pool)
        .load_aggregate("shape-1")
        .await
        .unwrap();
    assert_eq!(cqrs_es::AggregateContext::aggregate(&mut loaded).count, 9);
}

/// The followers of the global order (relay, billing projection) are woken by the writer after
/// its commit, not by a trigger inside the writing transaction (which serialized every commit on
/// Postgres's notification lock, held through the WAL flush): the events table has no trigger,
/// and a command's commit reaches a listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_wake_the_followers_after_their_commit() {
    let env = hubkeeper_testkit::TestEnv::start().await;
    let pool = env.pool();
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        triggers.is_empty(),
        "no trigger may NOTIFY inside a writing transaction: {triggers:?}"
    );
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener
        .listen(hubkeeper_store::EVENTS_CHANNEL)
        .await
        .unwrap();
    let framework: hubkeeper_core::commands::Framework<Tally> = cqrs_es::CqrsFramework::new(
        hubkeeper_core::commands::SnapshotStore::new(&pool),
        vec![],
        (),
    );
    framework
        .execute_with_metadata("wake-1", 1, std::collections::HashMap::new())
        .await
        .unwrap();
    let notification = tokio::time::timeout(std::time::Duration::from_secs(60), listener.recv())
        .await
        .expect("a command's commit wakes the followers")
        .unwrap();
    assert_eq!(notification.channel(), hubkeeper_store::EVENTS_CHANNEL);
}

/// A bus keeps the state its last command left an aggregate in and decides the next command on
/// it without a load. Another process (here a second bus on the same database) moving the
/// aggregate on must never let that kept state decide anything the stored state would not: a
/// lost race, a rejection and a command that writes nothing are each decided again on a load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_state_never_decides_what_the_stored_state_would_not() {
    use hubkeeper_core::commands::{CommandBus, CommandError};
    use hubkeeper_crypto::{seal, Aad, DataKey};
    use hubkeeper_domain::app::{AppCommand, AppError, Environment, RegisterApp, UpdateApp};
    use hubkeeper_domain::metadata::{Actor, EventMetadata};
    use hubkeeper_domain::{AppId, DomainServices};

    let env = hubkeeper_testkit::TestEnv::start().await;
    let pool = env.pool();
    let a = CommandBus::new(&pool, DomainServices::system());
    let b = CommandBus::new(&pool, DomainServices::system());
    let meta = || EventMetadata::new(Actor::AdminKey("ak_test".into()), chrono::Utc::now());
    let app = AppId::new();
    let id = app.to_string();
    let secret = seal(
        &DataKey::generate(),
        b"client-secret",
        &Aad::client_secret(id.clone()),
    )
    .unwrap();
    let register = AppCommand::RegisterApp(RegisterApp {
        app_id: app,
        label: "Kept".into(),
        description: None,
        environment: Environment::Production,
        client_id: "5f2c9a1e-3b4d-4e6f-8a7b-9c0d1e2f3a4b".into(),
        client_secret: secret,
        redirect_uri: "https://app.example.com/oauth/callback".into(),
        scopes: "oauth".into(),
        optional_scopes: String::new(),
        oauth_generation: None,
        signature_versions: None,
        allow_legacy_signatures: false,
        return_urls: Vec::new(),
    });
    a.apps().execute(&id, register, &meta()).await.unwrap();
    assert!(a.apps().keeps_state_of(&id), "a keeps the state it left");
    let park = || AppCommand::RecordCredentialsRejected {
        error: "BAD_CLIENT_ID".into(),
        message: "refused".into(),
    };
    let label = |l: &str| {
        AppCommand::UpdateApp(UpdateApp {
            label: Some(l.into()),
            ..UpdateApp::default()
        })
    };

    // A lost race: b edits, then a edits on its kept (older) state: re-run on a load, both land.
    b.apps().execute(&id, label("by b"), &meta()).await.unwrap();
    let edited = a
        .apps()
        .execute_returning(
            &id,
            AppCommand::UpdateApp(UpdateApp {
                description: Some("by a".into()),
                ..UpdateApp::default()
            }),
            &meta(),
        )
        .await
        .unwrap();
    let config = edited.after.config().unwrap();
    assert_eq!(
        (config.label.as_str(), config.description.as_str()),
        ("by b", "by a")
    );
    assert_eq!(edited.sequence, 3);

    // A rejection on a kept state: a's state says "not parked", b parked the app meanwhile.
    b.apps().execute(&id, park(), &meta()).await.unwrap();
    let resumed = a
        .apps()
        .execute_returning(&id, AppCommand::ResumeRefreshes, &meta())
        .await
        .expect("decided again on the stored (parked) state");
    assert!(resumed.before.refreshes_parked().is_some());
    assert!(resumed.after.refreshes_parked().is_none());

    // A command that writes nothing on a kept state: a parks (kept: parked), b resumes, and a's
    // next rejection must park again although its kept state says there is nothing to do.
    a.apps().execute(&id, park(), &meta()).await.unwrap();
    b.apps()
        .execute(&id, AppCommand::ResumeRefreshes, &meta())
        .await
        .unwrap();
    let parked = a
        .apps()
        .execute_returning(&id, park(), &meta())
        .await
        .unwrap();
    assert!(
        parked.before.refreshes_parked().is_none(),
        "decided on a load"
    );
    assert!(parked.after.refreshes_parked().is_some());

    // A rejection the stored state makes is still a rejection.
    b.apps()
        .execute(&id, AppCommand::ResumeRefreshes, &meta())
        .await
        .unwrap();
    a.apps().execute(&id, label("by a"), &meta()).await.unwrap();
    let refused = a
        .apps()
        .execute(&id, AppCommand::ResumeRefreshes, &meta())
        .await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(AppError::RefreshesNotParked))
        ),
        "{refused:?}"
    );

    // Kept and stored agree, every command landed once, in order.
    let (events, max_sequence): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), max(sequence) FROM events
          WHERE aggregate_type = 'app' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((events, max_sequence), (10, Some(10)));
    let kept = a
        .apps()
        .execute_returning(&id, label("last"), &meta())
        .await
        .unwrap();
    let (stored, sequence) = b.apps().load(&id).await.unwrap();
    assert_eq!(sequence, 11);
    assert_eq!(stored, kept.after);

    // Commands on kept states alone, across a snapshot boundary: each is decided on exactly the
    // state a load gives, whether or not the commit before it wrote a snapshot (no store check
    // can catch a kept state at the right sequence with the wrong content).
    for i in 0..hubkeeper_core::commands::SNAPSHOT_EVERY + 2 {
        let (stored, _) = b.apps().load(&id).await.unwrap();
        assert!(
            a.apps().keeps_state_of(&id),
            "edit {i} starts from a kept state"
        );
        let edited = a
            .apps()
            .execute_returning(&id, label(&format!("kept {i}")), &meta())
            .await
            .unwrap();
        assert_eq!(
            edited.before, stored,
            "edit {i} decided on the stored state"
        );
    }

    // A state loaded for a command (a refresh under its lock) is kept like a command's result:
    // the command takes it instead of loading, and when another process moved the aggregate on
    // in between, the command is decided again on the stored state.
    let c = CommandBus::new(&pool, DomainServices::system());
    assert!(!c.apps().keeps_state_of(&id));
    let (loaded, _) = c.apps().load_for_command(&id).await.unwrap();
    assert!(c.apps().keeps_state_of(&id), "kept for the command");
    let edited = c
        .apps()
        .execute_returning(&id, label("after a load"), &meta())
        .await
        .unwrap();
    assert_eq!(edited.before, loaded);
    c.apps().load_for_command(&id).await.unwrap();
    b.apps().execute(&id, park(), &meta()).await.unwrap();
    let (stored, sequence) = b.apps().load(&id).await.unwrap();
    let resumed = c
        .apps()
        .execute_returning(&id, AppCommand::ResumeRefreshes, &meta())
        .await
        .expect("decided on the stored (parked) state, not the loaded one");
    assert_eq!(resumed.before, stored);
    assert_eq!(resumed.sequence, sequence + 1);
}
