//! Client addresses and the per-client limits across API processes, against real Postgres and
//! NATS and `hubkeeper api` processes: a spoofed `X-Forwarded-For` from a peer that is not a
//! trusted proxy changes nothing; two API processes share one log-in budget per client; behind a
//! trusted proxy the forwarded client is counted, an IPv6 client by its /64; the client address
//! is on every request's log line.

use std::time::Duration;

use hubkeeper_testkit::{wait_until, Server, TestEnv};
use reqwest::StatusCode;

/// `hubkeeper api` on this test's servers with `extra` settings.
async fn api(env: &TestEnv, name: &str, extra: &[(&str, &str)]) -> Server {
    let mut vars = env.process_env();
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        vars.push((k.to_string(), v.to_string()));
    }
    Server::start(
        hubkeeper_testkit::free_port(),
        name,
        &["api"],
        &vars,
        &env.path().join("logs"),
    )
    .await
}

/// One log-in attempt with a key that does not exist (a guess), optionally claiming to be
/// forwarded for `forwarded_for`.
async fn attempt(server: &Server, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/auth/login", server.base))
        .json(&serde_json::json!({"api_key": "hk_guess_0000000000000000"}));
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

const LIMITS: [(&str, &str); 2] = [
    ("HK_LOGIN_RATE_LIMIT_MAX", "3"),
    ("HK_LOGIN_RATE_LIMIT_WINDOW_SECS", "300"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_are_ignored_and_replicas_share_the_limit(
) {
    let env = TestEnv::start().await;
    let a = api(&env, "api-a", &LIMITS).await;
    let b = api(&env, "api-b", &LIMITS).await;
    // Three guesses, spread over both processes, each claiming another origin.
    for (server, spoof) in [
        (&a, "198.51.100.1"),
        (&b, "198.51.100.2"),
        (&a, "198.51.100.3"),
    ] {
        let r = attempt(server, Some(spoof)).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "a guess is refused, not limited yet"
        );
    }
    // The fourth is over the limit whichever process gets it and whatever it claims.
    for (server, spoof) in [(&b, Some("203.0.113.99")), (&a, None)] {
        let r = attempt(server, spoof).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((290..=300).contains(&retry), "Retry-After {retry}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    }
    // The log line of each request names the real client, not the spoofed one.
    wait_until(
        "client address in the log",
        Duration::from_secs(10),
        || async {
            let log = a.process.log_text();
            log.contains("\"client\":\"127.0.0.1\"") && log.contains("/auth/login")
        },
    )
    .await;
    assert!(!a.process.log_text().contains("\"client\":\"198.51.100.1\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_counts_and_ipv6_by_its_64() {
    let env = TestEnv::start().await;
    let mut settings = LIMITS.to_vec();
    settings.push(("HK_TRUSTED_PROXIES", "127.0.0.1/32"));
    let a = api(&env, "api-a", &settings).await;
    let b = api(&env, "api-b", &settings).await;

    // Two clients behind the proxy: each has its own budget, shared by both processes.
    for server in [&a, &b, &a] {
        assert_eq!(
            attempt(server, Some("1.1.1.1, 198.51.100.7"))
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        attempt(&b, Some("198.51.100.7")).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the rightmost untrusted hop is the client; what it wrote to the left does not matter"
    );
    assert_eq!(
        attempt(&b, Some("198.51.100.8")).await.status(),
        StatusCode::UNAUTHORIZED,
        "another client behind the same proxy has its own budget"
    );

    // IPv6: three addresses of one /64 use up its budget; the next /64 is another client.
    for (server, ip) in [
        (&a, "2001:db8:1:2::1"),
        (&b, "2001:db8:1:2::2"),
        (&a, "2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
    ] {
        assert_eq!(
            attempt(server, Some(ip)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = reqwest::Client::new()
        .post(format!("{}/auth/login", b.base))
        .header(
            "forwarded",
            "for=\"[2001:db8:1:2:ffff::9]:4711\";proto=https",
        )
        .json(&serde_json::json!({"api_key": "hk_guess_0000000000000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "same /64, via Forwarded"
    );
    assert_eq!(
        attempt(&a, Some("2001:db8:1:3::1")).await.status(),
        StatusCode::UNAUTHORIZED,
        "a neighbouring /64 is another client"
    );
    wait_until(
        "forwarded client in the log",
        Duration::from_secs(10),
        || async { b.process.log_text().contains("\"client\":\"198.51.100.8\"") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_callback_have_separate_budgets_shared_across_processes() {
    let env = TestEnv::start().await;
    let settings = [
        ("HK_OAUTH_RATE_LIMIT_MAX", "2"),
        ("HK_OAUTH_RATE_LIMIT_WINDOW_SECS", "300"),
        (
            "HK_MASTER_KEYS",
            "k1:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        ),
    ];
    let a = api(&env, "api-a", &settings).await;
    let b = api(&env, "api-b", &settings).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let app = uuid::Uuid::new_v4();
    // An unknown app is a 404, but the request counted.
    for server in [&a, &b] {
        let r = http
            .get(format!("{}/oauth/{app}/install", server.base))
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let r = http
        .get(format!("{}/oauth/{app}/install", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "install budget shared"
    );
    // The callback budget is untouched by the installs.
    for server in [&b, &a] {
        let r = http
            .get(format!("{}/oauth/callback?code=x&state=y", server.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "{}", r.status());
    }
    let r = http
        .get(format!("{}/oauth/callback?code=x&state=y", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "callback budget shared"
    );
}
