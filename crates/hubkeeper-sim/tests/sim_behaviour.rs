//! The simulator's own behaviour, over real HTTP on random local ports.

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::*;
use hubkeeper_hubspot::signature::{sign_v1, sign_v2, sign_v3, SignatureVersion};
use hubkeeper_sim::{
    dev_seed, ApproveRequest, AttemptOutcome, BatchStatus, DeliverRequest, DeliveryState,
    ExpireTokens, FaultEndpoint, FaultMode, FaultRule, InactiveIntrospection, RefreshTokenState,
    RotationMode, SettingsPatch, SimConfig, DEV_CLIENT_ID,
};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

// ---------------------------------------------------------------- consent

#[tokio::test]
async fn consent_page_renders_and_its_form_approves_with_code_and_state() {
    let sim = start().await;
    let page_url = format!(
        "/oauth/authorize?client_id={CLIENT_ID}&redirect_uri={}&scope=oauth%20{CONTACTS}&optional_scope=crm.objects.deals.read%20crm.objects.companies.read&state=xyz%2F1",
        url_encode(REDIRECT)
    );
    let response = sim.http.get(sim.url(&page_url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    for needle in [
        "Test Connector",
        CONTACTS,
        "crm.objects.deals.read",
        "alpha.hubspot.com",
        "beta.hubspot.com",
        "ops@alpha.example",
        "action=\"/oauth/authorize/decision\"",
        "value=\"approve\"",
        "value=\"deny\"",
    ] {
        assert!(html.contains(needle), "consent page lacks {needle}");
    }
    // The app cannot hold companies.read, so it is not offered.
    assert!(!html.contains("crm.objects.companies.read\" checked"));

    // Submit the form as a browser would: pick alpha, keep the optional scope ticked.
    let form = [
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "oauth crm.objects.contacts.read"),
        (
            "optional_scope",
            "crm.objects.deals.read crm.objects.companies.read",
        ),
        ("state", "xyz/1"),
        ("account", "101:9001"),
        ("grant_optional", "crm.objects.deals.read"),
        ("decision", "approve"),
    ];
    let response = sim
        .http
        .post(sim.url("/oauth/authorize/decision"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let url = url::Url::parse(&location).unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "xyz/1");
    let code = q["code"].clone();

    let (status, body) = sim.exchange("/oauth/v1/token", &code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hub_id"], json!(HUB_A));
    assert_eq!(body["user_id"], json!(9001));
    let scopes: Vec<&str> = body["scopes"].as_array().unwrap().iter().map(s).collect();
    assert_eq!(scopes, vec!["oauth", CONTACTS, "crm.objects.deals.read"]);
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn consent_deny_redirects_with_access_denied() {
    let sim = start().await;
    let form = [
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("scope", "oauth"),
        ("state", "s1"),
        ("account", "202:2021"),
        ("decision", "deny"),
    ];
    let response = sim
        .http
        .post(sim.url("/oauth/authorize/decision"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(REDIRECT));
    assert!(location.contains("error=access_denied"), "{location}");
    assert!(location.contains("state=s1"));
    assert!(!location.contains("code="));

    // Scripted deny gives the same answer.
    let mut req = ApproveRequest::new(CLIENT_ID, REDIRECT, &["oauth"], HUB_B);
    req.deny = true;
    req.state = Some("s2".into());
    let approval = sim.ctl.approve(&req).await.unwrap();
    assert!(approval.code.is_none());
    assert_eq!(approval.error.as_deref(), Some("access_denied"));
    assert!(approval.location.expose_secret().contains("state=s2"));
}

#[tokio::test]
async fn consent_refuses_bad_client_redirect_or_scope_without_redirecting() {
    let sim = start().await;
    let cases = [
        format!("/oauth/authorize?client_id=nope&redirect_uri={}&scope=oauth", url_encode(REDIRECT)),
        // Exact match only: a trailing slash is a different URI.
        format!(
            "/oauth/authorize?client_id={CLIENT_ID}&redirect_uri={}&scope=oauth",
            url_encode(&format!("{REDIRECT}/"))
        ),
        format!(
            "/oauth/authorize?client_id={CLIENT_ID}&redirect_uri={}&scope=oauth",
            url_encode("https://evil.example/cb")
        ),
        // Required scope the app is not configured with.
        format!(
            "/oauth/authorize?client_id={CLIENT_ID}&redirect_uri={}&scope=oauth%20crm.objects.companies.write",
            url_encode(REDIRECT)
        ),
        format!("/oauth/authorize?client_id={CLIENT_ID}&redirect_uri={}", url_encode(REDIRECT)),
    ];
    for path in cases {
        let response = sim.http.get(sim.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert!(response.headers().get("location").is_none(), "{path}");
        let html = response.text().await.unwrap();
        assert!(
            html.contains("Authorization failed") || html.contains("no scope"),
            "{html}"
        );
    }
    // The scripted consent refuses the same things.
    let err = sim
        .ctl
        .approve(&ApproveRequest::new(
            CLIENT_ID,
            "http://127.0.0.1:9/other",
            &["oauth"],
            HUB_A,
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("redirect_uri"), "{err}");
}

#[tokio::test]
async fn account_scoped_authorize_lists_only_that_account() {
    let sim = start().await;
    let path = format!(
        "/oauth/{HUB_B}/authorize?client_id={CLIENT_ID}&redirect_uri={}&scope=oauth",
        url_encode(REDIRECT)
    );
    let html = sim
        .http
        .get(sim.url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("beta.hubspot.com"));
    assert!(!html.contains("alpha.hubspot.com"));
    // Accounts without users get a made-up admin.
    assert!(html.contains("admin@beta.hubspot.com"));
    let missing = sim
        .http
        .get(sim.url(&path.replace(&HUB_B.to_string(), "999")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
}

// ---------------------------------------------------------------- token endpoint

#[tokio::test]
async fn token_success_shape_on_every_generation() {
    let sim = start().await;
    for path in ["/oauth/v1/token", "/oauth/2026-03/token", "/oauth/v3/token"] {
        let code = sim.code(HUB_A, &[CONTACTS, "oauth"]).await;
        let (status, body) = sim.exchange(path, &code).await;
        assert_eq!(status, 200, "{path}: {body}");
        let access = s(&body["access_token"]);
        assert!(access.starts_with("CN") && access.len() >= 64 && access.len() <= 300);
        assert!(s(&body["refresh_token"]).len() >= 64);
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["token_use"], "access_token");
        assert_eq!(body["expires_in"], 1800);
        assert_eq!(body["hub_id"], HUB_A);
        assert_eq!(body["user_id"], 9001);

        let (status, body) = sim.refresh(path, s(&body["refresh_token"])).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn codes_are_single_use_and_expire() {
    let sim = start().await;
    let code = sim.code(HUB_A, &["oauth"]).await;
    assert_eq!(sim.exchange("/oauth/v1/token", &code).await.0, 200);
    let (status, body) = sim.exchange("/oauth/v1/token", &code).await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "BAD_AUTH_CODE");
    assert_eq!(body["error"], "invalid_grant");
    assert!(s(&body["correlationId"]).len() >= 32);
    assert!(s(&body["error_description"]).contains("already been used"));

    sim.ctl
        .update_settings(&SettingsPatch {
            code_lifetime_ms: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let code = sim.code(HUB_A, &["oauth"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = sim.exchange("/oauth/2026-03/token", &code).await;
    assert_eq!((status, s(&body["status"])), (400, "BAD_AUTH_CODE"));
    assert!(s(&body["message"]).contains("expired"));

    let (status, body) = sim.exchange("/oauth/v1/token", "na1-not-a-code").await;
    assert_eq!((status, s(&body["error"])), (400, "invalid_grant"));

    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.app(CLIENT_ID).code_exchanges, 4);
    assert_eq!(c.app(CLIENT_ID).code_exchange_failures, 3);
}

#[tokio::test]
async fn token_endpoint_errors_carry_both_shapes() {
    let sim = start().await;
    let code = sim.code(HUB_A, &["oauth"]).await;

    let (status, body) = sim
        .post_form(
            "/oauth/v1/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "unknown-client"),
                ("client_secret", CLIENT_SECRET),
                ("redirect_uri", REDIRECT),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        (s(&body["status"]), s(&body["error"])),
        ("BAD_CLIENT_ID", "invalid_client")
    );

    let (status, body) = sim
        .post_form(
            "/oauth/2026-03/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT_ID),
                ("client_secret", "wrong"),
                ("redirect_uri", REDIRECT),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!((status, s(&body["error"])), (401, "invalid_client"));
    assert!(!body.to_string().contains("wrong"), "secret echoed: {body}");

    let (status, body) = sim
        .post_form(
            "/oauth/v1/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("redirect_uri", "http://127.0.0.1:9/oauth/callback/"),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        (s(&body["status"]), s(&body["error"])),
        ("BAD_REDIRECT_URI", "invalid_grant")
    );
    // A refused exchange does not burn the code.
    assert_eq!(sim.exchange("/oauth/v1/token", &code).await.0, 200);

    let (status, body) = sim
        .post_form(
            "/oauth/v1/token",
            &[("grant_type", "password"), ("client_id", CLIENT_ID)],
        )
        .await;
    assert_eq!((status, s(&body["error"])), (400, "unsupported_grant_type"));

    let (status, body) = sim.refresh("/oauth/v3/token", "na1-unknown").await;
    assert_eq!(status, 400);
    assert_eq!(
        (s(&body["status"]), s(&body["error"])),
        ("BAD_REFRESH_TOKEN", "invalid_grant")
    );
}

// ---------------------------------------------------------------- rotation, uninstall

#[tokio::test]
async fn rotation_off_returns_the_same_refresh_token() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let rt = s(&tokens["refresh_token"]).to_string();
    for _ in 0..3 {
        let (status, body) = sim.refresh("/oauth/v1/token", &rt).await;
        assert_eq!(status, 200);
        assert_eq!(s(&body["refresh_token"]), rt);
        assert_ne!(body["access_token"], tokens["access_token"]);
    }
    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.account(HUB_A).refresh_calls, 3);
    assert_eq!(c.account(HUB_A).rotated_tokens, 0);
}

#[tokio::test]
async fn rotation_on_issues_new_refresh_tokens_and_old_ones_die_after_grace() {
    let sim = start_with(SimConfig {
        rotation: RotationMode::On {
            grace: Duration::from_millis(1000),
        },
        ..SimConfig::default()
    })
    .await;
    let tokens = sim.install(HUB_A).await;
    let rt1 = s(&tokens["refresh_token"]).to_string();
    let (status, body) = sim.refresh("/oauth/2026-03/token", &rt1).await;
    assert_eq!(status, 200);
    let rt2 = s(&body["refresh_token"]).to_string();
    assert_ne!(rt1, rt2);
    // Within the grace period the old token still works (a crashed client can recover).
    assert_eq!(sim.refresh("/oauth/2026-03/token", &rt1).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = sim.refresh("/oauth/2026-03/token", &rt1).await;
    assert_eq!((status, s(&body["status"])), (400, "BAD_REFRESH_TOKEN"));
    assert_eq!(sim.refresh("/oauth/2026-03/token", &rt2).await.0, 200);

    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.account(HUB_A).rotated_tokens, 3);
    let inst = c.installation(CLIENT_ID, HUB_A).unwrap();
    assert_eq!(inst.refresh_tokens[0].state, RefreshTokenState::Dead);
    assert_eq!(inst.refresh_tokens[0].refresh_calls, 3);

    // Switching rotation off at run time.
    sim.ctl.set_rotation(RotationMode::Off).await.unwrap();
    let tokens = sim.install(HUB_B).await;
    let rt = s(&tokens["refresh_token"]).to_string();
    let (_, body) = sim.refresh("/oauth/v1/token", &rt).await;
    assert_eq!(s(&body["refresh_token"]), rt);
}

#[tokio::test]
async fn uninstall_kills_refresh_and_access_tokens() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let other = sim.install(HUB_B).await;
    sim.ctl.uninstall(CLIENT_ID, HUB_A).await.unwrap();

    let (status, body) = sim
        .refresh("/oauth/v1/token", s(&tokens["refresh_token"]))
        .await;
    assert_eq!(
        (status, s(&body["status"]), s(&body["error"])),
        (400, "BAD_REFRESH_TOKEN", "invalid_grant")
    );
    let (status, _, body) = sim
        .get_json("/crm/v3/objects/contacts", Some(s(&tokens["access_token"])))
        .await;
    assert_eq!(
        (status, s(&body["category"])),
        (401, "INVALID_AUTHENTICATION")
    );
    // Other installations are untouched.
    assert_eq!(
        sim.refresh("/oauth/v1/token", s(&other["refresh_token"]))
            .await
            .0,
        200
    );
    assert!(sim.ctl.uninstall(CLIENT_ID, 999).await.is_err());

    // Reinstalling works and yields fresh, working tokens.
    let again = sim.install(HUB_A).await;
    assert_eq!(
        sim.refresh("/oauth/v1/token", s(&again["refresh_token"]))
            .await
            .0,
        200
    );
    let c = sim.ctl.counters().await.unwrap();
    assert!(c.installation(CLIENT_ID, HUB_A).unwrap().installed);
    assert_eq!(c.account(HUB_A).crm_calls_invalid_token, 1);
}

// ---------------------------------------------------------------- introspection and revoke

#[tokio::test]
async fn legacy_introspection_and_revoke() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let at = s(&tokens["access_token"]).to_string();
    let rt = s(&tokens["refresh_token"]).to_string();

    let (status, _, info) = sim
        .get_json(&format!("/oauth/v1/access-tokens/{at}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(info["hub_id"], HUB_A);
    assert_eq!(info["app_id"], APP_ID);
    assert_eq!(info["user"], "ops@alpha.example");
    assert_eq!(info["hub_domain"], "alpha.hubspot.com");
    assert!(info["expires_in"].as_u64().unwrap() > 1700);

    let (status, _, info) = sim
        .get_json(&format!("/oauth/v1/refresh-tokens/{rt}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(info["client_id"], CLIENT_ID);

    let response = sim
        .http
        .delete(sim.url(&format!("/oauth/v1/refresh-tokens/{rt}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // Revoking does not kill access tokens already issued.
    assert_eq!(
        sim.get_json("/crm/v3/objects/contacts", Some(&at)).await.0,
        200
    );
    assert_eq!(sim.refresh("/oauth/v1/token", &rt).await.0, 400);
    let (status, _, _) = sim
        .get_json(&format!("/oauth/v1/refresh-tokens/{rt}"), None)
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = sim
        .get_json("/oauth/v1/access-tokens/CNunknown", None)
        .await;
    assert_eq!(status, 404);

    sim.ctl
        .expire_access_tokens(&ExpireTokens::default())
        .await
        .unwrap();
    let (status, _, body) = sim
        .get_json(&format!("/oauth/v1/access-tokens/{at}"), None)
        .await;
    assert_eq!(
        (status, s(&body["category"])),
        (401, "EXPIRED_AUTHENTICATION")
    );

    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.account(HUB_A).revokes, 1);
    assert_eq!(c.account(HUB_A).introspections, 4);
}

#[tokio::test]
async fn v3_introspection_and_revoke() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let at = s(&tokens["access_token"]).to_string();
    let rt = s(&tokens["refresh_token"]).to_string();
    let creds = |token: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("token_type_hint", token),
        ]
    };
    for path in [
        "/oauth/2026-03/token/introspect",
        "/oauth/v3/token/introspect",
    ] {
        let mut form = creds("access_token");
        form.push(("token", &at));
        let (status, body) = sim.post_form(path, &form).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["active"], true);
        assert_eq!(body["token_use"], "access_token");
        assert_eq!(body["hub_id"], HUB_A);
        assert_eq!(body["app_id"], APP_ID);

        let mut form = creds("refresh_token");
        form.push(("token", &rt));
        let (_, body) = sim.post_form(path, &form).await;
        assert_eq!(
            (body["active"].clone(), s(&body["token_use"])),
            (json!(true), "refresh_token")
        );
    }
    let (status, body) = sim
        .post_form(
            "/oauth/2026-03/token/introspect",
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", "nope"),
                ("token", &at),
            ],
        )
        .await;
    assert_eq!((status, s(&body["error"])), (401, "invalid_client"));

    let mut form = creds("refresh_token");
    form.push(("token", &rt));
    let (status, _) = sim.post_form("/oauth/2026-03/token/revoke", &form).await;
    assert_eq!(status, 200);
    let (_, body) = sim.post_form("/oauth/v3/token/introspect", &form).await;
    assert_eq!(body, json!({"active": false}));
    // Unknown tokens revoke "successfully" (RFC 7009).
    let (status, _) = sim
        .post_form(
            "/oauth/v3/token/revoke",
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("token", "na1-nothing"),
            ],
        )
        .await;
    assert_eq!(status, 200);

    // Both unconfirmed readings can be switched on.
    sim.ctl
        .update_settings(&SettingsPatch {
            v3_revoke_status: Some(204),
            v3_inactive_introspection: Some(InactiveIntrospection::ValidationError),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sim.post_form("/oauth/v3/token/revoke", &form).await.0, 204);
    let (status, body) = sim.post_form("/oauth/v3/token/introspect", &form).await;
    assert_eq!((status, s(&body["category"])), (400, "VALIDATION_ERROR"));
}

// ---------------------------------------------------------------- CRM and rate limits

#[tokio::test]
async fn crm_requires_a_live_token_with_the_scope() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let at = s(&tokens["access_token"]).to_string();
    let (status, headers, body) = sim
        .get_json("/crm/v3/objects/contacts?limit=5", Some(&at))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["results"].as_array().unwrap().len(), 5);
    assert_eq!(body["paging"]["next"]["after"], "5");
    assert_eq!(headers["x-hubspot-ratelimit-max"], "110");
    assert_eq!(
        headers["x-hubspot-ratelimit-interval-milliseconds"],
        "10000"
    );

    let (status, _, body) = sim.get_json("/crm/v3/objects/contacts", None).await;
    assert_eq!((status, s(&body["status"])), (401, "error"));
    let (status, _, body) = sim
        .get_json("/crm/v3/objects/contacts", Some("CNforged"))
        .await;
    assert_eq!(
        (status, s(&body["category"])),
        (401, "INVALID_AUTHENTICATION")
    );

    // Installed without the contacts scope: 403.
    let code = sim.code(HUB_B, &["oauth"]).await;
    let (_, no_scope) = sim.exchange("/oauth/v1/token", &code).await;
    let (status, _, body) = sim
        .get_json(
            "/crm/v3/objects/contacts",
            Some(s(&no_scope["access_token"])),
        )
        .await;
    assert_eq!((status, s(&body["category"])), (403, "MISSING_SCOPES"));

    // Compressed time: 1-second tokens expire for real.
    sim.ctl
        .set_token_lifetime(Duration::from_secs(1))
        .await
        .unwrap();
    let (_, short) = sim
        .refresh("/oauth/v1/token", s(&tokens["refresh_token"]))
        .await;
    assert_eq!(short["expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, body) = sim
        .get_json("/crm/v3/objects/contacts", Some(s(&short["access_token"])))
        .await;
    assert_eq!(
        (status, s(&body["category"])),
        (401, "EXPIRED_AUTHENTICATION")
    );
    assert!(s(&body["message"]).contains("expired"));

    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.account(HUB_A).crm_calls, 2);
    assert_eq!(c.account(HUB_A).crm_calls_expired_token, 1);
    assert_eq!(c.total.crm_calls_invalid_token, 1);
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers_and_recovers() {
    // A window of a minute: the burst below stays inside it however slow the machine is.
    let sim = start_with(SimConfig {
        rate_limit: (5, Duration::from_secs(60)),
        ..SimConfig::default()
    })
    .await;
    let a = sim.install(HUB_A).await;
    let b = sim.install(HUB_B).await;
    let at = s(&a["access_token"]).to_string();
    for expected_remaining in (0..5).rev() {
        let (status, headers, _) = sim.get_json("/crm/v3/objects/contacts", Some(&at)).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers["x-hubspot-ratelimit-remaining"],
            expected_remaining.to_string().as_str()
        );
        assert_eq!(headers["x-hubspot-ratelimit-max"], "5");
        assert_eq!(
            headers["x-hubspot-ratelimit-interval-milliseconds"],
            "60000"
        );
    }
    let (status, headers, body) = sim.get_json("/crm/v3/objects/contacts", Some(&at)).await;
    assert_eq!(status, 429);
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(
        body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert!(body["correlationId"].is_string());
    assert_eq!(headers["x-hubspot-ratelimit-remaining"], "0");
    assert!(headers.get("retry-after").is_none());
    // The limit is per account.
    assert_eq!(
        sim.get_json("/crm/v3/objects/contacts", Some(s(&b["access_token"])))
            .await
            .0,
        200
    );

    let limited = |c: &hubkeeper_sim::Counters| c.account(HUB_A).rate_limited;
    assert_eq!(limited(&sim.ctl.counters().await.unwrap()), 1);

    // The window rolls: with a short one the account recovers as soon as it has passed (every
    // refused attempt while waiting is counted too).
    sim.ctl
        .update_settings(&SettingsPatch {
            rate_limit_window_ms: Some(300),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let headers = loop {
        let (status, headers, _) = sim.get_json("/crm/v3/objects/contacts", Some(&at)).await;
        if status == 200 {
            break headers;
        }
        assert_eq!(status, 429);
        assert!(Instant::now() < deadline, "the window never rolled on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(headers["x-hubspot-ratelimit-remaining"], "4");
    let refused_while_waiting = limited(&sim.ctl.counters().await.unwrap());

    sim.ctl
        .update_settings(&SettingsPatch {
            rate_limit_max: Some(1),
            rate_limit_window_ms: Some(60_000),
            rate_limit_retry_after: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, headers, _) = sim.get_json("/crm/v3/objects/contacts", Some(&at)).await;
    assert_eq!(status, 429);
    // Whole seconds until the oldest counted call leaves the window: between 1 and the window.
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(
        limited(&sim.ctl.counters().await.unwrap()),
        refused_while_waiting + 1
    );
}

// ---------------------------------------------------------------- counters and log

#[tokio::test]
async fn refresh_discipline_statistic_catches_double_refreshes() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let rt = s(&tokens["refresh_token"]).to_string();
    sim.refresh("/oauth/v1/token", &rt).await;
    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(
        c.installation(CLIENT_ID, HUB_A)
            .unwrap()
            .max_refreshes_per_token_lifetime,
        1
    );
    // A second refresh while the first refreshed token is still valid.
    sim.refresh("/oauth/v1/token", &rt).await;
    let c = sim.ctl.counters().await.unwrap();
    let inst = c.installation(CLIENT_ID, HUB_A).unwrap();
    assert_eq!(inst.max_refreshes_per_token_lifetime, 2);
    assert_eq!(inst.refresh_times_ms.len(), 2);
    assert_eq!(inst.access_tokens_issued, 3);
}

#[tokio::test]
async fn request_log_never_contains_credentials() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let at = s(&tokens["access_token"]).to_string();
    let rt = s(&tokens["refresh_token"]).to_string();
    sim.refresh("/oauth/v1/token", &rt).await;
    sim.get_json(&format!("/oauth/v1/refresh-tokens/{rt}"), None)
        .await;
    sim.get_json("/crm/v3/objects/contacts", Some(&at)).await;
    let log = sim.ctl.request_log(None).await.unwrap();
    assert_eq!(log.len(), 4, "{log:?}");
    let dump = serde_json::to_string(&log).unwrap();
    for secret in [at.as_str(), rt.as_str(), CLIENT_SECRET] {
        assert!(!dump.contains(secret));
    }
    assert!(log.iter().all(|e| e.hub_id == Some(HUB_A)), "{log:?}");
    assert!(log[2].path.starts_with("/oauth/v1/refresh-tokens/[sha256:"));
    assert_eq!(log[1].token_hash, log[2].token_hash);
    let since = sim.ctl.request_log(Some(log[1].seq)).await.unwrap();
    assert_eq!(since.len(), 2);
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn burst_fault_fails_n_token_calls_then_clears() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let rt = s(&tokens["refresh_token"]).to_string();
    sim.ctl
        .inject_fault(&FaultRule::new(
            FaultEndpoint::Token,
            FaultMode::Burst {
                status: 503,
                count: 2,
            },
        ))
        .await
        .unwrap();
    assert_eq!(sim.refresh("/oauth/v1/token", &rt).await.0, 503);
    let (status, body) = sim.refresh("/oauth/v1/token", &rt).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "error");
    assert_eq!(sim.refresh("/oauth/v1/token", &rt).await.0, 200);
    let faults = sim.ctl.faults().await.unwrap();
    assert!(faults[0].exhausted && faults[0].fired == 2);
    let log = sim.ctl.request_log(None).await.unwrap();
    let faulted: Vec<_> = log.iter().filter(|e| e.fault.is_some()).collect();
    assert_eq!(faulted.len(), 2);
    assert_eq!(faulted[0].fault.as_deref(), Some("burst 503"));
    assert_eq!(faulted[0].hub_id, Some(HUB_A));
}

#[tokio::test]
async fn account_filtered_error_rate_only_hits_that_account() {
    let sim = start().await;
    let a = sim.install(HUB_A).await;
    let b = sim.install(HUB_B).await;
    sim.ctl
        .inject_fault(
            &FaultRule::new(
                FaultEndpoint::Any,
                FaultMode::ErrorRate {
                    status: 500,
                    rate: 1.0,
                },
            )
            .for_account(HUB_B),
        )
        .await
        .unwrap();
    assert_eq!(
        sim.get_json("/crm/v3/objects/contacts", Some(s(&a["access_token"])))
            .await
            .0,
        200
    );
    assert_eq!(
        sim.get_json("/crm/v3/objects/contacts", Some(s(&b["access_token"])))
            .await
            .0,
        500
    );
    assert_eq!(
        sim.refresh("/oauth/v1/token", s(&b["refresh_token"]))
            .await
            .0,
        500
    );
    assert_eq!(
        sim.refresh("/oauth/v1/token", s(&a["refresh_token"]))
            .await
            .0,
        200
    );
    // Rate 0 never fires.
    sim.ctl.clear_faults().await.unwrap();
    sim.ctl
        .inject_fault(&FaultRule::new(
            FaultEndpoint::Crm,
            FaultMode::ErrorRate {
                status: 502,
                rate: 0.0,
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        sim.get_json("/crm/v3/objects/contacts", Some(s(&b["access_token"])))
            .await
            .0,
        200
    );
    assert_eq!(
        sim.ctl
            .counters()
            .await
            .unwrap()
            .account(HUB_B)
            .faults_injected,
        2
    );
}

#[tokio::test]
async fn latency_timeout_and_down_faults() {
    let sim = start().await;
    let tokens = sim.install(HUB_A).await;
    let rt = s(&tokens["refresh_token"]).to_string();

    let latency = sim
        .ctl
        .inject_fault(&FaultRule::new(
            FaultEndpoint::Token,
            FaultMode::Latency { ms: 300 },
        ))
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(sim.refresh("/oauth/v1/token", &rt).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.ctl.remove_fault(latency.id).await.unwrap();

    sim.ctl
        .inject_fault(
            &FaultRule::new(FaultEndpoint::Token, FaultMode::Timeout { ms: 5_000 }).times(1),
        )
        .await
        .unwrap();
    let err = sim
        .http
        .post(sim.url("/oauth/v1/token"))
        .timeout(Duration::from_millis(300))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    sim.ctl
        .inject_fault(&FaultRule::new(FaultEndpoint::Introspect, FaultMode::Down).times(1))
        .await
        .unwrap();
    let err = sim
        .http
        .get(sim.url(&format!("/oauth/v1/refresh-tokens/{rt}")))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    // The outage rule is spent: the next call is answered.
    let (status, _, _) = sim
        .get_json(&format!("/oauth/v1/refresh-tokens/{rt}"), None)
        .await;
    assert_eq!(status, 200);

    let invalid = sim
        .http
        .post(sim.url("/_sim/faults"))
        .json(&json!({"endpoint": "token", "mode": "burst", "status": 200, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
}

// ---------------------------------------------------------------- webhooks

fn compressed() -> SimConfig {
    SimConfig {
        webhook_retry_schedule: vec![Duration::from_millis(20); 10],
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn webhooks_are_batched_and_signed_over_exact_bytes_and_url() {
    let sim = start_with(compressed()).await;
    let rx = Receiver::start().await;
    let target = rx.url("/webhooks/hubspot?tenant=a%3Ab");
    let mut req = DeliverRequest::new(&target, CLIENT_ID).generate(5, HUB_A);
    req.batch_size = 2;
    req.wait = true;
    let report = sim.ctl.deliver_webhooks(&req).await.unwrap();
    assert_eq!(report.state, DeliveryState::Completed);
    assert_eq!(report.delivered_batches, 3);
    let hits = rx.hits();
    assert_eq!(hits.len(), 3);
    let mut seen = 0;
    for hit in &hits {
        assert_eq!(hit.uri, "/webhooks/hubspot?tenant=a%3Ab");
        assert_eq!(
            hit.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            hit.header("x-hubspot-signature-version").as_deref(),
            Some("v1")
        );
        assert_eq!(
            hit.header("x-hubspot-signature").unwrap(),
            sign_v1(CLIENT_SECRET, &hit.body)
        );
        let ts: i64 = hit
            .header("x-hubspot-request-timestamp")
            .unwrap()
            .parse()
            .unwrap();
        assert!((chrono::Utc::now().timestamp_millis() - ts).abs() < 60_000);
        assert_eq!(
            hit.header("x-hubspot-signature-v3").unwrap(),
            sign_v3(CLIENT_SECRET, "POST", &target, &hit.body, ts)
        );
        for e in hit.events() {
            seen += 1;
            assert_eq!(e["portalId"], HUB_A);
            assert_eq!(e["appId"], APP_ID);
            assert_eq!(e["attemptNumber"], 0);
            assert_eq!(e["subscriptionType"], "contact.propertyChange");
            assert_eq!(e["propertyName"], "lifecyclestage");
            assert_eq!(e["changeSource"], "CRM");
            assert!(e["eventId"].is_u64() && e["objectId"].is_u64() && e["occurredAt"].is_i64());
        }
    }
    assert_eq!(seen, 5);

    // v2 on request, and the header clash is refused.
    req.signature_versions = vec![SignatureVersion::V2];
    req.generate = None;
    req.events =
        vec![json!({"portalId": HUB_B, "subscriptionType": "deal.creation", "objectId": 7})];
    sim.ctl.deliver_webhooks(&req).await.unwrap();
    let hit = rx.hits().pop().unwrap();
    assert_eq!(
        hit.header("x-hubspot-signature-version").as_deref(),
        Some("v2")
    );
    assert_eq!(
        hit.header("x-hubspot-signature").unwrap(),
        sign_v2(CLIENT_SECRET, "POST", &target, &hit.body)
    );
    assert!(hit.header("x-hubspot-signature-v3").is_none());
    assert_eq!(hit.events()[0]["subscriptionType"], "deal.creation");
    req.signature_versions = vec![SignatureVersion::V1, SignatureVersion::V2];
    assert!(sim.ctl.deliver_webhooks(&req).await.is_err());
}

#[tokio::test]
async fn webhooks_retry_failures_with_increasing_attempt_number() {
    let sim = start_with(compressed()).await;
    let rx = Receiver::start().await;
    rx.script(&[
        Reply::Status(500),
        Reply::Status(429),
        Reply::SleepMs(2_000),
    ]);
    let mut req = DeliverRequest::new(&rx.url("/hook"), CLIENT_ID).generate(3, HUB_A);
    req.timeout_ms = 1_000;
    req.wait = true;
    let report = sim.ctl.deliver_webhooks(&req).await.unwrap();
    let batch = &report.batches[0];
    assert_eq!(batch.status, BatchStatus::Delivered);
    let outcomes: Vec<_> = batch.attempts.iter().map(|a| a.outcome.clone()).collect();
    assert_eq!(
        outcomes,
        vec![
            AttemptOutcome::Http { status: 500 },
            AttemptOutcome::Http { status: 429 },
            AttemptOutcome::Timeout,
            AttemptOutcome::Http { status: 200 },
        ]
    );
    let hits = rx.hits();
    assert_eq!(hits.len(), 4);
    for (i, hit) in hits.iter().enumerate() {
        assert!(hit.events().iter().all(|e| e["attemptNumber"] == i));
        // Each attempt is signed afresh over its own bytes.
        assert_eq!(
            hit.header("x-hubspot-signature").unwrap(),
            sign_v1(CLIENT_SECRET, &hit.body)
        );
    }
}

#[tokio::test]
async fn webhooks_give_up_after_the_schedule_and_report_transport_errors() {
    let sim = start_with(SimConfig {
        webhook_retry_schedule: vec![Duration::from_millis(10); 3],
        ..SimConfig::default()
    })
    .await;
    let rx = Receiver::start().await;
    rx.script(&[Reply::Status(500); 10]);
    let mut req = DeliverRequest::new(&rx.url("/hook"), CLIENT_ID).generate(1, HUB_A);
    req.wait = true;
    let report = sim.ctl.deliver_webhooks(&req).await.unwrap();
    assert_eq!(report.batches[0].status, BatchStatus::Failed);
    assert_eq!(report.total_attempts, 4);
    assert_eq!(report.failed_batches, 1);

    // Nobody listening: connection refused, retried, then failed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let mut req = DeliverRequest::new(&dead_url, CLIENT_ID).generate(1, HUB_A);
    req.wait = false;
    let report = sim.ctl.deliver_webhooks(&req).await.unwrap();
    assert_eq!(report.state, DeliveryState::Running);
    let report = sim
        .ctl
        .wait_for_delivery(report.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.batches[0].status, BatchStatus::Failed);
    assert!(matches!(
        report.batches[0].attempts[0].outcome,
        AttemptOutcome::Transport { .. }
    ));
}

#[tokio::test]
async fn webhooks_send_requested_duplicates_in_later_batches() {
    let sim = start_with(compressed()).await;
    let rx = Receiver::start().await;
    let mut req = DeliverRequest::new(&rx.url("/hook"), CLIENT_ID).generate(10, HUB_A);
    req.batch_size = 10;
    req.duplicate_rate = 0.3;
    req.wait = true;
    let report = sim.ctl.deliver_webhooks(&req).await.unwrap();
    assert_eq!(report.batches.len(), 2);
    assert!(report.batches[1].duplicate);
    let hits = rx.hits();
    assert_eq!(hits.len(), 2);
    let first: Vec<Value> = hits[0]
        .events()
        .iter()
        .map(|e| e["eventId"].clone())
        .collect();
    let second: Vec<Value> = hits[1]
        .events()
        .iter()
        .map(|e| e["eventId"].clone())
        .collect();
    assert_eq!((first.len(), second.len()), (10, 3));
    assert!(second.iter().all(|id| first.contains(id)));
    assert!(hits[1].at >= hits[0].at);
}

#[tokio::test]
async fn webhooks_keep_at_most_ten_requests_in_flight_per_account() {
    let sim = start_with(compressed()).await;
    let rx = Receiver::start().await;
    rx.delay_all(150);
    let mut req = DeliverRequest::new(&rx.url("/hook"), CLIENT_ID).generate(25, HUB_A);
    req.batch_size = 1;
    req.wait = true;
    let report = sim.ctl.deliver_webhooks(&req).await.unwrap();
    assert_eq!(report.delivered_batches, 25);
    assert_eq!(rx.max_in_flight(), 10);
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test]
async fn dev_seed_reset_and_graceful_shutdown() {
    let sim = start_with(SimConfig {
        seed: Some(dev_seed()),
        ..SimConfig::default()
    })
    .await;
    let apps: Vec<Value> = sim
        .http
        .get(sim.url("/_sim/apps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["client_id"], DEV_CLIENT_ID);
    assert!(apps[0].get("client_secret").is_none());

    sim.ctl
        .register_account(&hubkeeper_sim::AccountSpec {
            hub_id: 5,
            domain: "extra.hubspot.com".into(),
            users: vec![],
        })
        .await
        .unwrap();
    sim.ctl
        .set_token_lifetime(Duration::from_secs(5))
        .await
        .unwrap();
    sim.ctl.reset().await.unwrap();
    let accounts: Vec<Value> = sim
        .http
        .get(sim.url("/_sim/accounts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accounts.len(), 2);
    assert_eq!(
        sim.ctl.settings().await.unwrap().token_lifetime,
        Duration::from_secs(1800)
    );

    let err = sim
        .ctl
        .set_token_lifetime(Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("token lifetime"), "{err}");

    let base = sim.handle.base_url.clone();
    sim.handle.shutdown().await.unwrap();
    let err = reqwest::Client::new()
        .get(format!("{base}/_sim/health"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn wildcard_bind_advertises_loopback_and_public_url_wins() {
    let sim = start_with(SimConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..SimConfig::default()
    })
    .await;
    assert!(
        sim.handle.base_url.starts_with("http://127.0.0.1:"),
        "{}",
        sim.handle.base_url
    );
    sim.ctl.counters().await.unwrap();

    let sim = start_with(SimConfig {
        public_url: Some("http://hubspot-sim.internal:8090/".into()),
        ..SimConfig::default()
    })
    .await;
    assert_eq!(sim.handle.base_url, "http://hubspot-sim.internal:8090");
    // The control client still reaches the bound address.
    sim.ctl.counters().await.unwrap();
}
