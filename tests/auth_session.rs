//! Dashboard sessions against a real `hubkeeper api`: login (JSON and form), the cookie's
//! attributes, CSRF on every cookie-authenticated change, logout, expiry, key revocation ending
//! sessions, and the security headers.

#[path = "auth_support/mod.rs"]
mod support;

use std::time::Duration;

use hubkeeper_api::auth::Role;
use hubkeeper_testkit::wait_until;
use support::{expect_json_error, http, login, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_issues_a_strict_cookie_and_csrf_guards_every_change() {
    let server = Server::api(&[("HK_SESSION_TTL_SECS", "120")]).await;
    let admin = server.key(Role::Admin).await;
    let client = http();

    // The cookie: HttpOnly, SameSite=Strict, lifetime from HK_SESSION_TTL_SECS, not Secure on
    // a loopback host.
    let session = login(&server, &admin).await;
    let attrs = session.set_cookie.to_ascii_lowercase();
    assert!(session.cookie.starts_with("hk_session="));
    assert!(attrs.contains("httponly"), "{attrs}");
    assert!(attrs.contains("samesite=strict"), "{attrs}");
    assert!(attrs.contains("max-age=120"), "{attrs}");
    assert!(attrs.contains("path=/"), "{attrs}");
    assert!(
        !attrs.contains("secure"),
        "loopback host: no Secure: {attrs}"
    );

    // The same login through a public host name gets a Secure cookie.
    let via_name = client
        .post(server.url("/auth/login"))
        .header("host", "hubkeeper.example.com")
        .json(&serde_json::json!({ "api_key": admin }))
        .send()
        .await
        .unwrap();
    assert_eq!(via_name.status(), 200);
    let cookie = via_name.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    // A form post logs in too and is sent on to the dashboard.
    let form = client
        .post(server.url("/auth/login"))
        .form(&[("api_key", admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    assert_eq!(form.headers()["location"], "/dashboard");
    assert!(form.headers().contains_key("set-cookie"));

    // /auth/me with the cookie: who, the role's permissions, the CSRF token.
    let me: serde_json::Value = client
        .get(server.url("/auth/me"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["auth"], "session");
    assert_eq!(me["csrf_token"], session.csrf.as_str());
    assert!(me["permissions"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("administer")));
    assert!(me["session_expires_at"].is_string());

    // A change authenticated by the cookie alone is refused: no token, wrong token, or sent
    // from another origin with the right token.
    let change = || {
        client
            .post(server.url("/v1/apps"))
            .json(&serde_json::json!({}))
    };
    let body = expect_json_error(
        change()
            .header("cookie", &session.cookie)
            .send()
            .await
            .unwrap(),
        403,
        "cookie without CSRF token",
    )
    .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("CSRF"));
    expect_json_error(
        change()
            .header("cookie", &session.cookie)
            .header("x-csrf-token", "not-the-token")
            .send()
            .await
            .unwrap(),
        403,
        "cookie with a wrong CSRF token",
    )
    .await;
    expect_json_error(
        change()
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &session.csrf)
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap(),
        403,
        "cross-origin change",
    )
    .await;
    // With the token the request gets past access control (to the handler's own answer).
    let passed = change()
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .header("origin", &server.base)
        .send()
        .await
        .unwrap();
    assert!(
        ![401, 403].contains(&passed.status().as_u16()),
        "the right CSRF token passes access control, got {}",
        passed.status()
    );
    // A bearer key needs no CSRF token (browsers never attach it by themselves).
    let bearer = change().bearer_auth(&admin).send().await.unwrap();
    assert!(![401, 403].contains(&bearer.status().as_u16()));
    // Another session's token is not this session's token.
    let other = login(&server, &admin).await;
    expect_json_error(
        change()
            .header("cookie", &session.cookie)
            .header("x-csrf-token", &other.csrf)
            .send()
            .await
            .unwrap(),
        403,
        "another session's CSRF token",
    )
    .await;

    // Logout needs the token too, then ends the session everywhere.
    expect_json_error(
        client
            .post(server.url("/auth/logout"))
            .header("cookie", &session.cookie)
            .send()
            .await
            .unwrap(),
        403,
        "logout without CSRF token",
    )
    .await;
    let out = client
        .post(server.url("/auth/logout"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("hk_session=;") && cleared.contains("Max-Age=0"));
    expect_json_error(
        client
            .get(server.url("/auth/me"))
            .header("cookie", &session.cookie)
            .send()
            .await
            .unwrap(),
        401,
        "the logged-out session",
    )
    .await;
    // Logging out an ended session just clears the cookie.
    let again = client
        .post(server.url("/auth/logout"))
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_cannot_log_in_and_service_keys_may_not_open_the_dashboard() {
    let server = Server::api(&[]).await;
    let client = http();
    let unknown = format!("hk_ak0123456789ab_{}", "x".repeat(43));
    for (body, status, what) in [
        (
            serde_json::json!({ "api_key": unknown }),
            401,
            "unknown key",
        ),
        (
            serde_json::json!({ "api_key": "hk_nonsense" }),
            401,
            "malformed key",
        ),
        (serde_json::json!({ "key": "x" }), 400, "wrong field"),
    ] {
        let response = client
            .post(server.url("/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("set-cookie").is_none(), "{what}");
        expect_json_error(response, status, what).await;
    }
    let service = server.key(Role::Service).await;
    let response = client
        .post(server.url("/auth/login"))
        .json(&serde_json::json!({ "api_key": service }))
        .send()
        .await
        .unwrap();
    expect_json_error(response, 403, "service key login").await;
    // A forged cookie is no session.
    expect_json_error(
        client
            .get(server.url("/auth/me"))
            .header("cookie", format!("hk_session={}", "A".repeat(43)))
            .send()
            .await
            .unwrap(),
        401,
        "forged session cookie",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_revoking_the_key_ends_them() {
    let server = Server::api(&[]).await;
    let client = http();
    let operator = server.key(Role::Operator).await;
    let me = |cookie: String| {
        let client = client.clone();
        let url = server.url("/auth/me");
        async move {
            client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };

    // Expiry: a session past its expires_at is refused with 401 JSON.
    let expiring = login(&server, &operator).await;
    assert_eq!(me(expiring.cookie.clone()).await.status(), 200);
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&server.pool)
        .await
        .unwrap();
    let body = expect_json_error(me(expiring.cookie.clone()).await, 401, "expired session").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("log in"));

    // Revocation through the CLI ends the key's sessions at once and its bearer use within the
    // key cache's lifetime.
    let session = login(&server, &operator).await;
    assert_eq!(me(session.cookie.clone()).await.status(), 200);
    let key_id = operator.split('_').nth(1).unwrap().to_string();
    let status = tokio::process::Command::new(hubkeeper_testkit::hubkeeper_binary())
        .args(["admin", "revoke-key", &key_id])
        .env("DATABASE_URL", server.env.database_url())
        .env("NATS_URL", server.env.nats_url())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE key_id = $1")
        .bind(&key_id)
        .fetch_one(&server.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "revoking deletes the key's sessions");
    let listed = tokio::process::Command::new(hubkeeper_testkit::hubkeeper_binary())
        .args(["admin", "list-keys"])
        .env("DATABASE_URL", server.env.database_url())
        .env("NATS_URL", server.env.nats_url())
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&key_id))
        .unwrap_or_else(|| panic!("list-keys shows {key_id}:\n{listed}"));
    assert!(
        line.contains("revoked") && line.contains("last used") && line.contains("0 session(s)"),
        "{line}"
    );
    assert!(
        !listed.contains(&operator),
        "list-keys never prints secrets"
    );
    expect_json_error(
        me(session.cookie.clone()).await,
        401,
        "session of a revoked key",
    )
    .await;
    let bearer_refused = || {
        let client = client.clone();
        let url = server.url("/auth/me");
        let key = operator.clone();
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .map(|r| r.status() == 401)
                .unwrap_or(false)
        }
    };
    wait_until(
        "the revoked key is refused",
        Duration::from_secs(15),
        bearer_refused,
    )
    .await;
    let response = http()
        .post(server.url("/auth/login"))
        .json(&serde_json::json!({ "api_key": operator }))
        .send()
        .await
        .unwrap();
    expect_json_error(response, 401, "login with a revoked key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let server = Server::api(&[]).await;
    let client = http();
    let root = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/dashboard");
    for path in [
        "/dashboard",
        "/dashboard/tokens",
        "/dashboard/assets/js/app.js",
        "/v1/installations",
        "/no/such/route",
        "/healthz",
        "/openapi.json",
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        let h = response.headers();
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"))
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
    }
    let page = client
        .get(server.url("/dashboard/users"))
        .send()
        .await
        .unwrap();
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("/dashboard/assets/js/app.js"));
    assert!(!html.contains("<script>"), "no inline scripts");
    let api = client
        .get(server.url("/v1/installations"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.headers()["cache-control"], "no-store");
}
