//! Keys bound to apps: a service key acts only on the installations (and connect sessions) of
//! the apps it is bound to, and only such keys receive tokens. The routes come from the served
//! `/openapi.json`, so a route added later that takes an installation or an app is covered here
//! without editing this file.

#[path = "tokens_support/mod.rs"]
mod support;

use axum::http::StatusCode;
use hubkeeper_api::auth::{create_key, create_key_for_apps, Role};
use hubkeeper_sim::SimConfig;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use support::Harness;

/// Every protected operation of the served document: (METHOD, path template, operation).
async fn protected_operations(h: &Harness, api: usize) -> Vec<(String, String, Value)> {
    let doc: Value = h
        .http
        .get(format!("{}/openapi.json", h.api(api)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            let public = op["security"].as_array().is_some_and(|s| s.is_empty());
            if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) && !public {
                ops.push((method, path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// The path with its installation or app parameter filled in; `None` for routes that take
/// neither.
fn aimed_at(path: &str, installation: &str, app: &str) -> Option<String> {
    let (prefix, id) = if path.starts_with("/v1/installations/{") {
        ("/v1/installations/", installation)
    } else if path.starts_with("/v1/apps/{") {
        ("/v1/apps/", app)
    } else {
        return None;
    };
    let rest = &path[prefix.len()..];
    let end = rest.find('}')?;
    let tail = &rest[end + 1..];
    if tail.contains('{') {
        return None;
    }
    Some(format!("{prefix}{id}{tail}"))
}

async fn call(
    h: &Harness,
    key: &str,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let mut request = h
        .http
        .request(method.parse().unwrap(), url)
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value, content_type)
}

fn bound_key_error(what: &str, status: StatusCode, body: &Value, content_type: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: JSON error, got {content_type:?}"
    );
    assert_eq!(body["error"]["code"], "forbidden", "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: the reason is named: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_key_acts_only_on_its_apps_and_only_it_receives_their_tokens() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    h.register_account(41_000_001).await;
    h.register_account(41_000_002).await;
    let app_a = h
        .register_app(
            api,
            "secret-a-0123456789abcdef",
            "secret-a-0123456789abcdef",
        )
        .await;
    let app_b = h
        .register_app(
            api,
            "secret-b-0123456789abcdef",
            "secret-b-0123456789abcdef",
        )
        .await;
    let tenant_a = h.install(api, &app_a, 41_000_001).await;
    let tenant_b = h.install(api, &app_b, 41_000_002).await;
    let key_for = |app: &str| {
        let pool = h.pool.clone();
        let app = app.parse().unwrap();
        async move {
            create_key_for_apps(&pool, "app backend", Role::Service, &[app], "test")
                .await
                .expect("bound key")
                .token
                .expose_secret()
                .to_string()
        }
    };
    let key_a = key_for(&app_a.app_id).await;
    let key_b = key_for(&app_b.app_id).await;
    let unbound = create_key(&h.pool, "unbound backend", Role::Service, "test")
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_string();
    let base = h.api(api).to_string();
    let token_url = |id: &str| format!("{base}/v1/installations/{id}/token");

    // Each app's key receives its own tenant's token, and that token works at HubSpot.
    let (status, a_token, _) = call(&h, &key_a, "GET", &token_url(&tenant_a), None).await;
    assert_eq!(status, StatusCode::OK, "{a_token}");
    let a_access = a_token["access_token"].as_str().unwrap().to_string();
    assert_eq!(h.crm_status(&a_access).await, StatusCode::OK);
    let (status, b_token, _) = call(&h, &key_b, "GET", &token_url(&tenant_b), None).await;
    assert_eq!(status, StatusCode::OK, "{b_token}");
    let b_access = b_token["access_token"].as_str().unwrap().to_string();
    assert_ne!(a_access, b_access);

    // Never the other app's tenant's token, whether cached or not, nor an unbound key's, nor
    // an admin's.
    for round in 0..3 {
        for (who, key, tenant, reason) in [
            ("app A's key", &key_a, &tenant_b, "app_not_bound"),
            ("app B's key", &key_b, &tenant_a, "app_not_bound"),
            (
                "an unbound service key",
                &unbound,
                &tenant_a,
                "app_not_bound",
            ),
            (
                "the admin key",
                &h.admin_key,
                &tenant_a,
                "service_key_required",
            ),
        ] {
            let what = format!("{who}, round {round}");
            let (status, body, content_type) = call(&h, key, "GET", &token_url(tenant), None).await;
            bound_key_error(&what, status, &body, &content_type);
            assert_eq!(body["error"]["reason"], reason, "{what}: {body}");
            let text = body.to_string();
            assert!(
                !text.contains(&a_access) && !text.contains(&b_access),
                "{what}: no token in a refusal"
            );
        }
    }
    let (_, refusal, _) = call(&h, &key_a, "GET", &token_url(&tenant_b), None).await;
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&app_b.app_id),
        "the refusal names the app: {refusal}"
    );

    // Every documented route that takes an installation or an app, with app A's key aimed at
    // app B: refused with a JSON 403; the same route aimed at app A is never refused for the
    // binding (it may still be refused by the role, or answer 400/404 for this plausible body).
    let ops = protected_operations(&h, api).await;
    let body = || {
        json!({
            "reason": "binding test",
            "label": "x",
            "plan_code": "none",
            "return_url": "https://example.com/back",
        })
    };
    let mut aimed = 0;
    let mut usable = Vec::new();
    for (method, path, op) in &ops {
        let Some(foreign) = aimed_at(path, &tenant_b, &app_b.app_id) else {
            continue;
        };
        let what = format!("app A's key on {method} {path} aimed at app B");
        let with_body = ["POST", "PUT", "PATCH"].contains(&method.as_str());
        let (status, refused, content_type) = call(
            &h,
            &key_a,
            method,
            &format!("{base}{foreign}"),
            with_body.then(body),
        )
        .await;
        bound_key_error(&what, status, &refused, &content_type);
        aimed += 1;
        if op["x-permission"] == "use_tokens" {
            let own = aimed_at(path, &tenant_a, &app_a.app_id).unwrap();
            let (status, answer, _) = call(
                &h,
                &key_a,
                method,
                &format!("{base}{own}"),
                with_body.then(body),
            )
            .await;
            assert!(
                status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                "app A's key on {method} {path} aimed at app A: {status} {answer}"
            );
            usable.push(format!("{method} {path}"));
        }
    }
    assert!(
        aimed >= 12,
        "only {aimed} routes take an installation or app"
    );
    for route in [
        "GET /v1/installations/{id}/token",
        "GET /v1/installations/{id}/quota",
        "PUT /v1/installations/{id}/plan",
    ] {
        assert!(
            usable.iter().any(|r| r == route),
            "{route} is usable by a bound key: {usable:?}"
        );
    }

    // Usage reports name the installation in the body: the same rule.
    let usage =
        |tenant: &str| json!({"installation_id": tenant, "metric": "requests", "quantity": 1});
    let (status, refused, content_type) = call(
        &h,
        &key_a,
        "POST",
        &format!("{base}/v1/usage"),
        Some(usage(&tenant_b)),
    )
    .await;
    bound_key_error(
        "usage for another app's tenant",
        status,
        &refused,
        &content_type,
    );
    let (status, accepted, _) = call(
        &h,
        &key_a,
        "POST",
        &format!("{base}/v1/usage"),
        Some(usage(&tenant_a)),
    )
    .await;
    assert_ne!(status, StatusCode::FORBIDDEN, "{accepted}");

    // An installation that never existed: 404 for a bound key, never a token or a 500.
    let (status, missing, _) = call(
        &h,
        &key_a,
        "GET",
        &token_url("0190c2a8-7b6e-7cc1-9d5e-3a1f2b4c5d6e"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");

    // A key for more than one app receives both apps' tokens.
    let both = create_key_for_apps(
        &h.pool,
        "two apps",
        Role::Service,
        &[app_a.app_id.parse().unwrap(), app_b.app_id.parse().unwrap()],
        "test",
    )
    .await
    .unwrap()
    .token
    .expose_secret()
    .to_string();
    for tenant in [&tenant_a, &tenant_b] {
        let (status, answer, _) = call(&h, &both, "GET", &token_url(tenant), None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
}
