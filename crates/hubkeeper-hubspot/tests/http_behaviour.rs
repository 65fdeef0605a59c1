//! HTTP behaviour the simulator cannot (or should not) be asked to produce: scripted 5xx/429
//! sequences, odd headers, timeouts, redirects. Each test runs a throwaway axum server that
//! replays a script and records what the client sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hubkeeper_hubspot::{
    AccessToken, AppCredentials, HubSpotClient, HubSpotConfig, HubSpotError, OAuthEndpoints,
    RateLimitConfig, RefreshToken, RetryPolicy, TokenSet, TransientCause,
};
use secrecy::SecretString;
use url::Url;

const CLIENT_SECRET: &str = "client-secret-5f0a9d";
const REFRESH: &str = "na1-refresh/6b2e+c4d=";
const ACCESS: &str = "CJSP5qf1KhICAQEYs-access";

#[derive(Clone)]
struct Scripted {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: &str) -> Scripted {
    Scripted {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

impl Scripted {
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: String,
}

#[derive(Clone, Default)]
struct Server {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(State(server): State<Server>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    server.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let next = server.script.lock().unwrap().pop_front();
    let Some(s) = next else {
        return (StatusCode::IM_A_TEAPOT, "unscripted request").into_response();
    };
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let mut builder = Response::builder()
        .status(s.status)
        .header("content-type", "application/json");
    for (k, v) in &s.headers {
        builder = builder.header(*k, v);
    }
    builder
        .body(Body::from(s.body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn start(script: Vec<Scripted>) -> (Server, Url) {
    let server = Server {
        script: Arc::new(Mutex::new(script.into())),
        seen: Arc::default(),
    };
    let app = Router::new().fallback(handle).with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (server, Url::parse(&format!("http://{addr}")).unwrap())
}

/// A server replaying `script` and a client with the tests' configuration pointed at it.
async fn scripted(script: Vec<Scripted>) -> (Server, HubSpotClient) {
    let (server, base) = start(script).await;
    (server, HubSpotClient::new(config(&base)).unwrap())
}

/// A refresh of [`REFRESH`] with the app's credentials for `endpoints`.
async fn refresh(
    client: &HubSpotClient,
    endpoints: OAuthEndpoints,
    account_hint: Option<u64>,
) -> Result<TokenSet, HubSpotError> {
    client
        .refresh(&creds(endpoints), &RefreshToken::new(REFRESH), account_hint)
        .await
}

fn config(base: &Url) -> HubSpotConfig {
    HubSpotConfig {
        api_base_url: base.clone(),
        app_base_url: base.clone(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_server_wait: Duration::from_secs(2),
        },
        rate_limit: Some(RateLimitConfig::default()),
        ..HubSpotConfig::default()
    }
}

fn creds(endpoints: OAuthEndpoints) -> AppCredentials {
    AppCredentials {
        client_id: "cid-1".into(),
        client_secret: SecretString::from(CLIENT_SECRET),
        redirect_uri: "https://hk.example.com/oauth/callback".into(),
        endpoints,
    }
}

const TOKENS: &str = r#"{"access_token":"CJSP-new","refresh_token":"rt-new","expires_in":1800,
    "token_type":"bearer","token_use":"access_token","hub_id":62515,"user_id":9,"scopes":["oauth"]}"#;

fn form(seen: &Seen) -> Vec<(String, String)> {
    serde_urlencoded::from_str(&seen.body).unwrap()
}

fn has(pairs: &[(String, String)], k: &str, v: &str) -> bool {
    pairs.iter().any(|(a, b)| a == k && b == v)
}

#[tokio::test]
async fn refresh_retries_5xx_then_succeeds_and_sends_the_documented_form() {
    let (server, client) = scripted(vec![
        reply(502, "<html>bad gateway</html>"),
        reply(503, r#"{"status":"error","message":"down"}"#),
        reply(200, TOKENS),
    ])
    .await;
    let set = refresh(&client, OAuthEndpoints::V2026_03, Some(62515))
        .await
        .unwrap();
    assert_eq!(set.access_token.expose(), "CJSP-new");
    assert_eq!(set.refresh_token.expose(), "rt-new");
    assert_eq!(set.hub_id, Some(62515));

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.path_and_query, "/oauth/2026-03/token");
        assert_eq!(
            s.headers.get("content-type").unwrap(),
            "application/x-www-form-urlencoded"
        );
        let f = form(s);
        assert!(has(&f, "grant_type", "refresh_token"));
        assert!(has(&f, "client_id", "cid-1"));
        assert!(has(&f, "client_secret", CLIENT_SECRET));
        assert!(has(&f, "refresh_token", REFRESH));
    }
    // Every attempt counted against the account's client-side budget.
    assert_eq!(client.rate_limiter().unwrap().in_flight_window(62515), 3);
}

#[tokio::test]
async fn refresh_gives_up_after_max_attempts() {
    let (server, client) = scripted(vec![
        reply(500, ""),
        reply(500, ""),
        reply(500, ""),
        reply(200, TOKENS),
    ])
    .await;
    let err = refresh(&client, OAuthEndpoints::V1Legacy, None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        HubSpotError::Transient {
            cause: TransientCause::Status(500),
            ..
        }
    ));
    assert_eq!(server.seen().len(), 3);
    assert_eq!(server.seen()[0].path_and_query, "/oauth/v1/token");
}

#[tokio::test]
async fn exchange_code_is_never_retried() {
    let (server, client) = scripted(vec![reply(503, ""), reply(200, TOKENS)]).await;
    let err = client
        .exchange_code(&creds(OAuthEndpoints::V2026_03), "code-1")
        .await
        .unwrap_err();
    assert_eq!(err.class(), "transient");
    assert_eq!(server.seen().len(), 1);
    let f = form(&server.seen()[0]);
    assert!(has(&f, "grant_type", "authorization_code"));
    assert!(has(&f, "code", "code-1"));
    assert!(has(
        &f,
        "redirect_uri",
        "https://hk.example.com/oauth/callback"
    ));

    let (server, client) = scripted(vec![
        reply(429, "{}").header("retry-after", "0"),
        reply(200, TOKENS),
    ])
    .await;
    let err = client
        .exchange_code(&creds(OAuthEndpoints::V1Legacy), "code-2")
        .await
        .unwrap_err();
    assert_eq!(err.class(), "rate_limited");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn rate_limited_retry_honours_headers() {
    let body = r#"{"status":"error","message":"limit","errorType":"RATE_LIMIT","correlationId":"c-429","policyName":"TEN_SECONDLY_ROLLING"}"#;
    let (server, client) = scripted(vec![
        reply(429, body).header("retry-after", "0"),
        reply(429, body)
            .header("x-hubspot-ratelimit-remaining", "0")
            .header("x-hubspot-ratelimit-interval-milliseconds", "20"),
        reply(200, TOKENS),
    ])
    .await;
    let set = refresh(&client, OAuthEndpoints::V2026_03, Some(1))
        .await
        .unwrap();
    assert_eq!(set.expires_in, 1800);
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn long_retry_after_is_returned_not_slept() {
    let (server, client) = scripted(vec![
        reply(429, "{}").header("retry-after", "3600"),
        reply(200, TOKENS),
    ])
    .await;
    let err = refresh(&client, OAuthEndpoints::V2026_03, Some(5))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert!(err.is_retryable());
    assert_eq!(server.seen().len(), 1);
    // The account is paused locally as HubSpot asked.
    let wait = client.rate_limiter().unwrap().try_acquire(5).unwrap_err();
    assert!(wait > Duration::from_secs(3500));
}

#[tokio::test]
async fn retry_after_on_a_server_error_is_honoured_like_a_429() {
    // Short: slept in place, then the call is tried again.
    let (server, client) = scripted(vec![
        reply(503, "{}").header("retry-after", "0"),
        reply(200, TOKENS),
    ])
    .await;
    refresh(&client, OAuthEndpoints::V2026_03, Some(6))
        .await
        .expect("refreshed after the asked-for wait");
    assert_eq!(server.seen().len(), 2);

    // Long: returned to the caller (the refresher redelivers after it), not slept, and the
    // account is paused locally as HubSpot asked.
    let (server, client) = scripted(vec![
        reply(503, "{}").header("retry-after", "3600"),
        reply(200, TOKENS),
    ])
    .await;
    let err = refresh(&client, OAuthEndpoints::V2026_03, Some(7))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HubSpotError::Transient {
                cause: TransientCause::Status(503),
                retry_after: Some(wait),
                ..
            } if wait == Duration::from_secs(3600)
        ),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert!(err.is_retryable());
    assert_eq!(server.seen().len(), 1);
    let wait = client.rate_limiter().unwrap().try_acquire(7).unwrap_err();
    assert!(wait > Duration::from_secs(3500));

    // Without Retry-After a 5xx carries no wait: the caller's jittered backoff applies.
    let (_server, client) = scripted(vec![reply(502, ""), reply(502, ""), reply(502, "")]).await;
    let err = refresh(&client, OAuthEndpoints::V2026_03, Some(8))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), None, "{err:?}");
}

#[tokio::test]
async fn exhausted_window_on_success_pauses_the_account() {
    let (_server, client) = scripted(vec![reply(200, TOKENS)
        .header("x-hubspot-ratelimit-remaining", "0")
        .header("x-hubspot-ratelimit-interval-milliseconds", "10000")])
    .await;
    refresh(&client, OAuthEndpoints::V2026_03, Some(77))
        .await
        .unwrap();
    let wait = client.rate_limiter().unwrap().try_acquire(77).unwrap_err();
    assert!(wait > Duration::from_secs(9));
    assert!(client.rate_limiter().unwrap().try_acquire(78).is_ok());
}

#[tokio::test]
async fn both_error_shapes_map_to_reauth_and_are_not_retried() {
    for body in [
        r#"{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token","correlationId":"c-1"}"#,
        r#"{"error":"invalid_grant","error_description":"refresh token is revoked"}"#,
        r#"{"status":"BAD_REFRESH_TOKEN","message":"m","correlationId":"c-2","error":"invalid_grant","error_description":"d"}"#,
    ] {
        let (server, client) = scripted(vec![reply(400, body), reply(200, TOKENS)]).await;
        let err = refresh(&client, OAuthEndpoints::V1Legacy, None)
            .await
            .unwrap_err();
        assert!(err.is_reauth_required(), "{body}");
        assert!(!err.is_retryable());
        assert_eq!(server.seen().len(), 1);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(REFRESH) && !shown.contains(CLIENT_SECRET));
    }
}

#[tokio::test]
async fn legacy_introspection_and_revoke_put_the_token_in_the_path() {
    let legacy_info = r#"{"token":"x","user":"u@example.com","hub_domain":"d.com","scopes":["oauth"],
        "hub_id":62515,"app_id":456,"expires_in":1754,"user_id":123,"token_type":"access"}"#;
    let (server, client) = scripted(vec![
        reply(200, legacy_info),
        reply(404, r#"{"status":"error","message":"not found"}"#),
        reply(400, r#"{"status":"BAD_REFRESH_TOKEN","message":"m"}"#),
        reply(204, ""),
    ])
    .await;
    let c = creds(OAuthEndpoints::V1Legacy);

    let info = client
        .introspect_access_token(&c, &AccessToken::new(ACCESS))
        .await
        .unwrap();
    assert!(info.active);
    assert_eq!(info.hub_id, Some(62515));
    assert_eq!(info.user.as_deref(), Some("u@example.com"));

    let unknown = client
        .introspect_access_token(&c, &AccessToken::new("gone"))
        .await
        .unwrap();
    assert!(!unknown.active);
    let revoked = client
        .introspect_refresh_token(&c, &RefreshToken::new(REFRESH))
        .await
        .unwrap();
    assert!(!revoked.active);

    client
        .revoke_refresh_token(&c, &RefreshToken::new(REFRESH))
        .await
        .unwrap();

    let seen = server.seen();
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].path_and_query,
        format!("/oauth/v1/access-tokens/{ACCESS}")
    );
    assert_eq!(seen[1].path_and_query, "/oauth/v1/access-tokens/gone");
    // `/`, `+` and `=` are escaped so the token stays one path segment.
    assert_eq!(
        seen[2].path_and_query,
        "/oauth/v1/refresh-tokens/na1-refresh%2F6b2e%2Bc4d%3D"
    );
    assert_eq!(seen[3].method, "DELETE");
    assert_eq!(seen[3].path_and_query, seen[2].path_and_query);
}

#[tokio::test]
async fn current_introspection_and_revoke_post_forms() {
    let info = r#"{"active":true,"app_id":456,"client_id":"cid-1","hub_id":1,"user_id":2,
        "scopes":["oauth"],"token_use":"refresh_token","hub_domain":"d","user":"u"}"#;
    let (server, client) = scripted(vec![
        reply(200, info),
        reply(200, r#"{"active":false}"#),
        reply(200, ""),
        reply(204, ""),
        reply(400, r#"{"error":"invalid_client"}"#),
    ])
    .await;
    let c = creds(OAuthEndpoints::V2026_03);
    let rt = RefreshToken::new(REFRESH);

    let live = client.introspect_refresh_token(&c, &rt).await.unwrap();
    assert!(live.active);
    assert_eq!(live.client_id.as_deref(), Some("cid-1"));
    let dead = client
        .introspect_access_token(&c, &AccessToken::new(ACCESS))
        .await
        .unwrap();
    assert!(!dead.active);
    client.revoke_refresh_token(&c, &rt).await.unwrap();
    client.revoke_refresh_token(&c, &rt).await.unwrap();
    let err = client.revoke_refresh_token(&c, &rt).await.unwrap_err();
    assert_eq!(err.class(), "invalid_client");

    let seen = server.seen();
    assert_eq!(seen[0].path_and_query, "/oauth/2026-03/token/introspect");
    let f = form(&seen[0]);
    assert!(has(&f, "token", REFRESH) && has(&f, "token_type_hint", "refresh_token"));
    assert!(has(&f, "client_secret", CLIENT_SECRET));
    assert!(has(&form(&seen[1]), "token_type_hint", "access_token"));
    assert_eq!(seen[2].path_and_query, "/oauth/2026-03/token/revoke");
    assert!(has(&form(&seen[2]), "token_type_hint", "refresh_token"));
}

#[tokio::test]
async fn get_json_sends_bearer_and_maps_401() {
    let (server, client) = scripted(vec![
        reply(200, r#"{"results":[],"total":0}"#),
        reply(401, r#"{"status":"error","message":"expired","category":"EXPIRED_AUTHENTICATION","correlationId":"c"}"#),
    ]).await;
    let token = AccessToken::new(ACCESS);
    let v: serde_json::Value = client
        .get_json(&token, "/crm/v3/objects/contacts?limit=1", Some(3))
        .await
        .unwrap();
    assert_eq!(v["total"], 0);
    let err = client
        .get_json::<serde_json::Value>(&token, "/crm/v3/objects/contacts", Some(3))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        HubSpotError::Unauthorized { status: 401, .. }
    ));
    assert_eq!(
        err.details().and_then(|d| d.category.as_deref()),
        Some("EXPIRED_AUTHENTICATION")
    );
    let seen = server.seen();
    assert_eq!(seen[0].path_and_query, "/crm/v3/objects/contacts?limit=1");
    assert_eq!(
        seen[0].headers.get("authorization").unwrap(),
        &format!("Bearer {ACCESS}")
    );
}

#[tokio::test]
async fn timeouts_connect_failures_and_redirects() {
    let mut slow = reply(200, TOKENS);
    slow.delay = Duration::from_secs(3);
    let (_server, base) = start(vec![slow]).await;
    let mut cfg = config(&base);
    cfg.request_timeout = Duration::from_millis(100);
    cfg.retry = RetryPolicy::none();
    let client = HubSpotClient::new(cfg).unwrap();
    let err = refresh(&client, OAuthEndpoints::V2026_03, None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        HubSpotError::Transient {
            cause: TransientCause::Timeout,
            ..
        }
    ));

    // Nothing listens on port 9 of localhost.
    let mut cfg = config(&Url::parse("http://127.0.0.1:9").unwrap());
    cfg.retry = RetryPolicy::none();
    let client = HubSpotClient::new(cfg).unwrap();
    let err = client
        .introspect_access_token(&creds(OAuthEndpoints::V1Legacy), &AccessToken::new(ACCESS))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        HubSpotError::Transient {
            cause: TransientCause::Connect,
            ..
        }
    ));
    assert!(!format!("{err} {err:?}").contains(ACCESS));

    let (server, client) = scripted(vec![
        reply(302, "").header("location", "http://evil.example/steal")
    ])
    .await;
    let err = refresh(&client, OAuthEndpoints::V2026_03, None)
        .await
        .unwrap_err();
    assert!(matches!(err, HubSpotError::Unexpected { status: 302, .. }));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn malformed_success_body_is_reported_without_echoing_it() {
    let (_server, client) = scripted(vec![reply(
        200,
        r#"{"access_token":"CJSP-leak","refresh_token":7,"expires_in":1800}"#,
    )])
    .await;
    let err = client
        .exchange_code(&creds(OAuthEndpoints::V2026_03), "c")
        .await
        .unwrap_err();
    assert_eq!(err.class(), "invalid_response");
    assert!(!err.to_string().contains("CJSP-leak"));
}

/// Everything this crate logs, at every level, for a failing and a succeeding call.
#[tokio::test]
async fn logs_never_contain_secrets() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (_server, client) = scripted(vec![
        reply(503, ""),
        reply(400, r#"{"status":"BAD_REFRESH_TOKEN","message":"m"}"#),
        reply(200, TOKENS),
    ])
    .await;
    let c = creds(OAuthEndpoints::V1Legacy);
    let _ = client
        .refresh(&c, &RefreshToken::new(REFRESH), Some(1))
        .await;
    let _ = client
        .introspect_access_token(&c, &AccessToken::new(ACCESS))
        .await;

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("oauth.token.refresh"), "{logs}");
    assert!(logs.contains("retrying HubSpot request"), "{logs}");
    for secret in [REFRESH, ACCESS, CLIENT_SECRET, "CJSP-new", "rt-new"] {
        assert!(!logs.contains(secret), "{secret} leaked into logs:\n{logs}");
    }
}
