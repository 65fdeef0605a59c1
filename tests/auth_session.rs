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
        assert!(
            h.get("strict-transport-security").is_none(),
            "{path}: no HSTS without an https public URL"
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_deployment_gets_host_only_cookies_hsts_and_checked_login_origins() {
    let server = Server::api(&[("HK_PUBLIC_URL", "https://hubkeeper.example.com")]).await;
    let admin = server.key(Role::Admin).await;
    let client = http();

    // HSTS on every answer, the API's and the dashboard's.
    for path in [
        "/healthz",
        "/dashboard",
        "/v1/installations",
        "/no/such/route",
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
    }

    // Another site's page cannot log a browser in; the dashboard's own page can.
    let own_origin = format!("http://127.0.0.1:{}", server.port);
    for origin in ["https://evil.example", "null"] {
        let response = client
            .post(server.url("/auth/login"))
            .header("origin", origin)
            .json(&serde_json::json!({ "api_key": admin }))
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("set-cookie").is_none(), "{origin}");
        expect_json_error(response, 403, "cross-origin login").await;
    }
    let response = client
        .post(server.url("/auth/login"))
        .header("origin", &own_origin)
        .json(&serde_json::json!({ "api_key": admin }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The cookie is `__Host-` prefixed (Secure, Path=/, no Domain), and only that name counts:
    // a planted plain `hk_session` with the same secret is no session here.
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set_cookie.starts_with("__Host-hk_session="), "{set_cookie}");
    assert!(set_cookie.contains("; Path=/;") && set_cookie.ends_with("; Secure"));
    assert!(
        !set_cookie.to_ascii_lowercase().contains("domain="),
        "{set_cookie}"
    );
    let pair = set_cookie.split(';').next().unwrap().to_string();
    let secret = pair.split_once('=').unwrap().1.to_string();
    let me = client
        .get(server.url("/auth/me"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    expect_json_error(
        client
            .get(server.url("/auth/me"))
            .header("cookie", format!("hk_session={secret}"))
            .send()
            .await
            .unwrap(),
        401,
        "a plain-named cookie on an https deployment",
    )
    .await;

    // A key's last use moves only when its secret matched: its id with a wrong secret does not.
    let operator = server.key(Role::Operator).await;
    let (id, _) = hubkeeper_core::access::keys::parse_key(&operator).expect("key form");
    let last_used = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT last_used_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&server.pool)
        .await
        .expect("key row")
    };
    let wrong = format!("hk_{id}_{}", "W".repeat(43));
    let refused = client
        .get(server.url("/v1/installations"))
        .bearer_auth(&wrong)
        .send()
        .await
        .unwrap();
    expect_json_error(refused, 401, "a known id with a wrong secret").await;
    assert_eq!(last_used().await, None, "a wrong secret recorded a use");
    let ok = client
        .get(server.url("/v1/installations"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        last_used().await.is_some(),
        "the right secret records its use"
    );
}

/// Reads `response` until its body ends; fails if it is still open after `limit`.
async fn ends_within(response: &mut reqwest::Response, limit: Duration, what: &str) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Err(_) => panic!("{what}: the stream was still open after {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_stream_ends_on_revocation_logout_and_shutdown() {
    let mut server = Server::api(&[("HK_STREAM_RECHECK_SECS", "1")]).await;
    let client = http();
    let stream_url = server.url("/v1/activity/stream");

    // A key's stream ends once the key is revoked.
    let auditor = server.key(Role::Auditor).await;
    let mut by_key = client
        .get(&stream_url)
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.status(), 200);
    let (id, _) = hubkeeper_core::access::keys::parse_key(&auditor).expect("key form");
    assert!(hubkeeper_core::access::keys::revoke_key(&server.pool, id)
        .await
        .expect("revoke"));
    ends_within(&mut by_key, Duration::from_secs(30), "revoked key").await;

    // A session's stream ends at logout.
    let admin = server.key(Role::Admin).await;
    let session = login(&server, &admin).await;
    let mut by_session = client
        .get(&stream_url)
        .header("cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(by_session.status(), 200);
    let out = client
        .post(server.url("/auth/logout"))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    ends_within(
        &mut by_session,
        Duration::from_secs(30),
        "logged-out session",
    )
    .await;

    // A stream open at SIGTERM does not hold the process: it exits at once, well within the
    // shutdown deadline (10 s), and the stream ends.
    let other = server.key(Role::Auditor).await;
    let mut open = client
        .get(&stream_url)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let process = &mut server.server.process;
    let exited = tokio::task::block_in_place(|| process.terminate(Duration::from_secs(8)));
    assert!(exited, "the API did not exit on SIGTERM with a stream open");
    ends_within(&mut open, Duration::from_secs(5), "shutdown").await;
}
