//! Hubkeeper's HubSpot client (`hubkeeper-hubspot`) against the simulator: every error class the
//! client distinguishes, retries, rotation on and off, and both OAuth endpoint generations.

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::*;
use hubkeeper_hubspot::{
    AppCredentials, HubSpotClient, HubSpotConfig, HubSpotError, OAuthEndpoints, RefreshToken,
    RetryPolicy, TransientCause,
};
use hubkeeper_sim::{
    ExpireTokens, FaultEndpoint, FaultMode, FaultRule, RotationMode, SettingsPatch, SimConfig,
};
use secrecy::SecretString;
use serde_json::Value;

const GENERATIONS: [OAuthEndpoints; 2] = [OAuthEndpoints::V1Legacy, OAuthEndpoints::V2026_03];

fn client_for(sim: &Sim, retry: RetryPolicy, request_timeout: Duration) -> HubSpotClient {
    let base = url::Url::parse(&sim.handle.base_url).unwrap();
    HubSpotClient::new(HubSpotConfig {
        api_base_url: base.clone(),
        app_base_url: base,
        connect_timeout: Duration::from_secs(2),
        request_timeout,
        retry,
        // The client-side limiter is off so the simulator's 429s are what the client meets.
        rate_limit: None,
        ..HubSpotConfig::default()
    })
    .unwrap()
}

/// Fast retries so tests stay quick.
fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_server_wait: Duration::from_secs(5),
    }
}

fn client(sim: &Sim) -> HubSpotClient {
    client_for(sim, quick_retries(4), Duration::from_secs(5))
}

fn creds(endpoints: OAuthEndpoints) -> AppCredentials {
    AppCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: SecretString::from(CLIENT_SECRET),
        redirect_uri: REDIRECT.into(),
        endpoints,
    }
}

fn bad_secret(endpoints: OAuthEndpoints) -> AppCredentials {
    AppCredentials {
        client_secret: SecretString::from("not-the-secret"),
        ..creds(endpoints)
    }
}

#[tokio::test]
async fn install_through_the_consent_page_then_refresh_on_both_generations() {
    let sim = start().await;
    let hs = client(&sim);
    for (i, generation) in GENERATIONS.into_iter().enumerate() {
        let creds = creds(generation);
        let hub = [HUB_A, HUB_B][i];
        // The client's own authorize URL must be accepted by the consent page.
        let url = hs.authorize_url(
            &creds,
            &["oauth".into(), CONTACTS.into()],
            &["crm.objects.deals.read".into()],
            "state-123",
            Some(hub),
        );
        let page = sim.http.get(url.as_str()).send().await.unwrap();
        assert_eq!(page.status(), 200, "{url}");
        let html = page.text().await.unwrap();
        assert!(html.contains("Test Connector") && html.contains(CONTACTS));
        let account = format!("{hub}:{}", if hub == HUB_A { 9001 } else { hub * 10 + 1 });
        let decision = sim
            .http
            .post(sim.url("/oauth/authorize/decision"))
            .form(&[
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT),
                ("scope", "oauth crm.objects.contacts.read"),
                ("optional_scope", "crm.objects.deals.read"),
                ("state", "state-123"),
                ("account", &account),
                ("decision", "approve"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(decision.status(), 302);
        let location = url::Url::parse(decision.headers()["location"].to_str().unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "state-123");

        let tokens = hs.exchange_code(&creds, &q["code"]).await.unwrap();
        assert_eq!(tokens.hub_id, Some(hub));
        assert_eq!(tokens.expires_in, 1800);
        assert_eq!(
            tokens.scopes,
            vec!["oauth".to_string(), CONTACTS.to_string()]
        );

        let fresh = hs
            .refresh(&creds, &tokens.refresh_token, Some(hub))
            .await
            .unwrap();
        assert_ne!(fresh.access_token.expose(), tokens.access_token.expose());
        // Rotation off (HubSpot's documented behaviour): same refresh token back.
        assert_eq!(fresh.refresh_token.expose(), tokens.refresh_token.expose());

        let contacts: Value = hs
            .get_json(
                &fresh.access_token,
                "/crm/v3/objects/contacts?limit=2",
                Some(hub),
            )
            .await
            .unwrap();
        assert_eq!(contacts["results"].as_array().unwrap().len(), 2);
    }
    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.app(CLIENT_ID).code_exchanges, 2);
    assert_eq!(c.app(CLIENT_ID).refresh_calls, 2);
}

async fn code(sim: &Sim, hub: u64) -> String {
    sim.code(hub, &["oauth", CONTACTS]).await
}

#[tokio::test]
async fn invalid_grant_for_unknown_revoked_and_uninstalled_refresh_tokens() {
    let sim = start().await;
    let hs = client(&sim);
    for generation in GENERATIONS {
        let creds = creds(generation);
        let err = hs
            .refresh(&creds, &RefreshToken::new("na1-never-issued"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, HubSpotError::InvalidGrant { .. }), "{err:?}");
        assert!(err.is_reauth_required() && !err.is_retryable());
        let details = err.details().unwrap();
        assert_eq!(details.status.as_deref(), Some("BAD_REFRESH_TOKEN"));
        assert_eq!(details.error.as_deref(), Some("invalid_grant"));
        assert!(details.correlation_id.is_some());
        // The error never shows the token.
        assert!(!format!("{err} {err:?}").contains("never-issued"));

        // Revoke, then refresh.
        let tokens = hs
            .exchange_code(&creds, &code(&sim, HUB_A).await)
            .await
            .unwrap();
        hs.revoke_refresh_token(&creds, &tokens.refresh_token)
            .await
            .unwrap();
        let err = hs
            .refresh(&creds, &tokens.refresh_token, Some(HUB_A))
            .await
            .unwrap_err();
        assert!(err.is_reauth_required(), "{err:?}");
        // Access tokens issued before the revoke keep working.
        let _: Value = hs
            .get_json(
                &tokens.access_token,
                "/crm/v3/objects/contacts",
                Some(HUB_A),
            )
            .await
            .unwrap();

        // Uninstall, then refresh.
        let tokens = hs
            .exchange_code(&creds, &code(&sim, HUB_B).await)
            .await
            .unwrap();
        sim.ctl.uninstall(CLIENT_ID, HUB_B).await.unwrap();
        let err = hs
            .refresh(&creds, &tokens.refresh_token, Some(HUB_B))
            .await
            .unwrap_err();
        assert!(err.is_reauth_required(), "{err:?}");
        let err = hs
            .get_json::<Value>(
                &tokens.access_token,
                "/crm/v3/objects/contacts",
                Some(HUB_B),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, HubSpotError::Unauthorized { status: 401, .. }),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn invalid_client_for_wrong_secret_or_unknown_client() {
    let sim = start().await;
    let hs = client(&sim);
    for generation in GENERATIONS {
        let tokens = hs
            .exchange_code(&creds(generation), &code(&sim, HUB_A).await)
            .await
            .unwrap();
        let err = hs
            .refresh(&bad_secret(generation), &tokens.refresh_token, Some(HUB_A))
            .await
            .unwrap_err();
        assert!(matches!(err, HubSpotError::InvalidClient { .. }), "{err:?}");
        assert!(!err.is_reauth_required() && !err.is_retryable());
        assert!(!format!("{err:?}").contains("not-the-secret"));

        let unknown = AppCredentials {
            client_id: "no-such-client".into(),
            ..creds(generation)
        };
        let err = hs
            .exchange_code(&unknown, &code(&sim, HUB_A).await)
            .await
            .unwrap_err();
        assert!(matches!(err, HubSpotError::InvalidClient { .. }), "{err:?}");
        assert_eq!(
            err.details().unwrap().status.as_deref(),
            Some("BAD_CLIENT_ID")
        );
    }
    // The v3 introspection endpoint authenticates the client too.
    let tokens = hs
        .exchange_code(&creds(OAuthEndpoints::V2026_03), &code(&sim, HUB_A).await)
        .await
        .unwrap();
    let err = hs
        .introspect_access_token(&bad_secret(OAuthEndpoints::V2026_03), &tokens.access_token)
        .await
        .unwrap_err();
    assert!(matches!(err, HubSpotError::InvalidClient { .. }), "{err:?}");
}

#[tokio::test]
async fn redirect_mismatch_and_bad_or_used_codes() {
    let sim = start().await;
    let hs = client(&sim);
    for generation in GENERATIONS {
        let creds = creds(generation);
        let c = code(&sim, HUB_A).await;
        let wrong_redirect = AppCredentials {
            redirect_uri: format!("{REDIRECT}/"),
            ..creds.clone()
        };
        let err = hs.exchange_code(&wrong_redirect, &c).await.unwrap_err();
        assert!(
            matches!(err, HubSpotError::RedirectUriMismatch { .. }),
            "{err:?}"
        );

        // The refused exchange left the code usable; the second use is refused.
        hs.exchange_code(&creds, &c).await.unwrap();
        let err = hs.exchange_code(&creds, &c).await.unwrap_err();
        assert!(matches!(err, HubSpotError::BadAuthCode { .. }), "{err:?}");
        assert!(!err.is_retryable());

        let err = hs
            .exchange_code(&creds, "na1-made-up-code")
            .await
            .unwrap_err();
        assert!(matches!(err, HubSpotError::BadAuthCode { .. }), "{err:?}");
    }
    sim.ctl
        .update_settings(&SettingsPatch {
            code_lifetime_ms: Some(50),
            ..Default::default()
        })
        .await
        .unwrap();
    let c = code(&sim, HUB_A).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let err = hs
        .exchange_code(&creds(OAuthEndpoints::V2026_03), &c)
        .await
        .unwrap_err();
    assert!(matches!(err, HubSpotError::BadAuthCode { .. }), "{err:?}");
}

#[tokio::test]
async fn rate_limited_calls_back_off_from_headers_and_recover() {
    let sim = start_with(SimConfig {
        rate_limit: (3, Duration::from_millis(2000)),
        ..SimConfig::default()
    })
    .await;
    let hs = client(&sim);
    let creds = creds(OAuthEndpoints::V2026_03);
    let tokens = hs
        .exchange_code(&creds, &code(&sim, HUB_A).await)
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..3 {
        let _: Value = hs
            .get_json(
                &tokens.access_token,
                "/crm/v3/objects/contacts",
                Some(HUB_A),
            )
            .await
            .unwrap();
    }
    // The fourth call meets a 429 without Retry-After, waits out the window announced by the
    // rate-limit headers, and succeeds.
    let _: Value = hs
        .get_json(
            &tokens.access_token,
            "/crm/v3/objects/contacts",
            Some(HUB_A),
        )
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.account(HUB_A).rate_limited, 1);

    // Without retries the caller gets RateLimited with the wait HubSpot implied.
    let no_retry = client_for(&sim, RetryPolicy::none(), Duration::from_secs(5));
    let mut last = None;
    for _ in 0..4 {
        if let Err(e) = no_retry
            .get_json::<Value>(
                &tokens.access_token,
                "/crm/v3/objects/contacts",
                Some(HUB_A),
            )
            .await
        {
            last = Some(e);
            break;
        }
    }
    let err = last.expect("a 429 within four calls");
    assert!(matches!(err, HubSpotError::RateLimited { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_millis(2000)));
    assert_eq!(
        err.details().unwrap().category.as_deref(),
        Some("RATE_LIMIT")
    );

    // With Retry-After on (the other reading of HubSpot's docs) the header wins.
    sim.ctl
        .update_settings(&SettingsPatch {
            rate_limit_retry_after: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = no_retry
        .get_json::<Value>(
            &tokens.access_token,
            "/crm/v3/objects/contacts",
            Some(HUB_A),
        )
        .await
        .unwrap_err();
    let wait = err.retry_after().unwrap();
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
        "{wait:?}"
    );
}

#[tokio::test]
async fn transient_5xx_is_retried_then_succeeds_but_code_exchange_is_not_retried() {
    let sim = start().await;
    let hs = client(&sim);
    for generation in GENERATIONS {
        let creds = creds(generation);
        let tokens = hs
            .exchange_code(&creds, &code(&sim, HUB_A).await)
            .await
            .unwrap();
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
        let before = sim.ctl.request_log(None).await.unwrap().len();
        hs.refresh(&creds, &tokens.refresh_token, Some(HUB_A))
            .await
            .unwrap();
        let log = sim.ctl.request_log(None).await.unwrap();
        let statuses: Vec<u16> = log[before..].iter().map(|e| e.status).collect();
        assert_eq!(statuses, vec![503, 503, 200]);

        // Exchange is single-shot: a 502 surfaces as Transient and the code survives it.
        sim.ctl
            .inject_fault(&FaultRule::new(
                FaultEndpoint::Token,
                FaultMode::Burst {
                    status: 502,
                    count: 1,
                },
            ))
            .await
            .unwrap();
        let c = code(&sim, HUB_A).await;
        let err = hs.exchange_code(&creds, &c).await.unwrap_err();
        assert!(
            matches!(
                err,
                HubSpotError::Transient {
                    cause: TransientCause::Status(502),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_retryable());
        hs.exchange_code(&creds, &c).await.unwrap();
        sim.ctl.clear_faults().await.unwrap();
    }
    // Persistent failure exhausts the retry budget.
    sim.ctl
        .inject_fault(&FaultRule::new(
            FaultEndpoint::Crm,
            FaultMode::ErrorRate {
                status: 500,
                rate: 1.0,
            },
        ))
        .await
        .unwrap();
    let tokens = hs
        .exchange_code(&creds(OAuthEndpoints::V1Legacy), &code(&sim, HUB_B).await)
        .await
        .unwrap();
    let err = hs
        .get_json::<Value>(
            &tokens.access_token,
            "/crm/v3/objects/contacts",
            Some(HUB_B),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, HubSpotError::Transient { .. }), "{err:?}");
    let faults = sim.ctl.faults().await.unwrap();
    assert_eq!(faults[0].fired, 4, "four attempts with max_attempts = 4");
}

#[tokio::test]
async fn timeouts_and_dropped_connections_are_transient_and_retried() {
    let sim = start().await;
    let hs = client_for(&sim, quick_retries(3), Duration::from_millis(700));
    for generation in GENERATIONS {
        let creds = creds(generation);
        let tokens = hs
            .exchange_code(&creds, &code(&sim, HUB_A).await)
            .await
            .unwrap();

        // One hang longer than the client's timeout, then HubSpot answers.
        sim.ctl
            .inject_fault(
                &FaultRule::new(FaultEndpoint::Token, FaultMode::Timeout { ms: 5_000 }).times(1),
            )
            .await
            .unwrap();
        hs.refresh(&creds, &tokens.refresh_token, Some(HUB_A))
            .await
            .unwrap();

        // HubSpot unreachable for longer than the retry budget.
        sim.ctl
            .inject_fault(&FaultRule::new(FaultEndpoint::Token, FaultMode::Down).times(3))
            .await
            .unwrap();
        let err = hs
            .refresh(&creds, &tokens.refresh_token, Some(HUB_A))
            .await
            .unwrap_err();
        assert!(matches!(err, HubSpotError::Transient { .. }), "{err:?}");
        assert!(err.is_retryable() && !err.is_reauth_required());

        // Hanging on every attempt: a timeout.
        sim.ctl
            .inject_fault(
                &FaultRule::new(FaultEndpoint::Token, FaultMode::Timeout { ms: 5_000 }).times(3),
            )
            .await
            .unwrap();
        let err = hs
            .refresh(&creds, &tokens.refresh_token, Some(HUB_A))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                HubSpotError::Transient {
                    cause: TransientCause::Timeout,
                    ..
                }
            ),
            "{err:?}"
        );
        sim.ctl.clear_faults().await.unwrap();
        // And once HubSpot is back, the installation is fine.
        hs.refresh(&creds, &tokens.refresh_token, Some(HUB_A))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn rotation_on_the_client_stores_what_it_gets_and_old_tokens_die() {
    let sim = start_with(SimConfig {
        rotation: RotationMode::On {
            grace: Duration::from_millis(200),
        },
        ..SimConfig::default()
    })
    .await;
    let hs = client(&sim);
    for generation in GENERATIONS {
        let creds = creds(generation);
        let t0 = hs
            .exchange_code(&creds, &code(&sim, HUB_A).await)
            .await
            .unwrap();
        let t1 = hs
            .refresh(&creds, &t0.refresh_token, Some(HUB_A))
            .await
            .unwrap();
        assert_ne!(t1.refresh_token.expose(), t0.refresh_token.expose());
        let t2 = hs
            .refresh(&creds, &t1.refresh_token, Some(HUB_A))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let err = hs
            .refresh(&creds, &t0.refresh_token, Some(HUB_A))
            .await
            .unwrap_err();
        assert!(err.is_reauth_required(), "{err:?}");
        let info = hs
            .introspect_refresh_token(&creds, &t1.refresh_token)
            .await
            .unwrap();
        assert!(!info.active);
        let info = hs
            .introspect_refresh_token(&creds, &t2.refresh_token)
            .await
            .unwrap();
        assert!(info.active);
        assert_eq!(info.hub_id, Some(HUB_A));
        hs.refresh(&creds, &t2.refresh_token, Some(HUB_A))
            .await
            .unwrap();
    }
    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.account(HUB_A).rotated_tokens, 6);
}

#[tokio::test]
async fn introspection_and_revocation_on_both_generations() {
    let sim = start().await;
    let hs = client(&sim);
    for generation in GENERATIONS {
        let creds = creds(generation);
        let tokens = hs
            .exchange_code(&creds, &code(&sim, HUB_A).await)
            .await
            .unwrap();

        let info = hs
            .introspect_access_token(&creds, &tokens.access_token)
            .await
            .unwrap();
        assert!(info.active, "{generation:?}");
        assert_eq!(info.hub_id, Some(HUB_A));
        assert_eq!(info.app_id, Some(APP_ID));
        assert_eq!(info.user.as_deref(), Some("ops@alpha.example"));
        assert!(info.scopes.iter().any(|s| s == CONTACTS));
        assert!(info.expires_in.unwrap() > 1700);

        let info = hs
            .introspect_refresh_token(&creds, &tokens.refresh_token)
            .await
            .unwrap();
        assert!(info.active);
        assert_eq!(info.hub_id, Some(HUB_A));

        hs.revoke_refresh_token(&creds, &tokens.refresh_token)
            .await
            .unwrap();
        let info = hs
            .introspect_refresh_token(&creds, &tokens.refresh_token)
            .await
            .unwrap();
        assert!(!info.active, "{generation:?}");

        let unknown = hs
            .introspect_access_token(&creds, &hubkeeper_hubspot::AccessToken::new("CNnope"))
            .await
            .unwrap();
        assert!(!unknown.active);
    }
    // A second legacy revoke of the same token is reported as InvalidGrant ("already gone").
    let creds1 = creds(OAuthEndpoints::V1Legacy);
    let tokens = hs
        .exchange_code(&creds1, &code(&sim, HUB_B).await)
        .await
        .unwrap();
    hs.revoke_refresh_token(&creds1, &tokens.refresh_token)
        .await
        .unwrap();
    let err = hs
        .revoke_refresh_token(&creds1, &tokens.refresh_token)
        .await
        .unwrap_err();
    assert!(err.is_reauth_required(), "{err:?}");
    // The v3 endpoint follows RFC 7009: revoking a dead token succeeds, with 200 or 204.
    let creds3 = creds(OAuthEndpoints::V2026_03);
    hs.revoke_refresh_token(&creds3, &tokens.refresh_token)
        .await
        .unwrap();
    sim.ctl
        .update_settings(&SettingsPatch {
            v3_revoke_status: Some(204),
            ..Default::default()
        })
        .await
        .unwrap();
    hs.revoke_refresh_token(&creds3, &tokens.refresh_token)
        .await
        .unwrap();
    assert_eq!(sim.ctl.counters().await.unwrap().account(HUB_B).revokes, 4);
}

#[tokio::test]
async fn expired_access_tokens_are_refused_and_counted() {
    let sim = start().await;
    let hs = client(&sim);
    let creds = creds(OAuthEndpoints::V2026_03);
    sim.ctl
        .set_token_lifetime(Duration::from_secs(30))
        .await
        .unwrap();
    let tokens = hs
        .exchange_code(&creds, &code(&sim, HUB_A).await)
        .await
        .unwrap();
    assert_eq!(tokens.expires_in, 30);
    sim.ctl
        .expire_access_tokens(&ExpireTokens::default())
        .await
        .unwrap();
    let err = hs
        .get_json::<Value>(
            &tokens.access_token,
            "/crm/v3/objects/contacts",
            Some(HUB_A),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, HubSpotError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.details().unwrap().category.as_deref(),
        Some("EXPIRED_AUTHENTICATION")
    );
    let info = hs
        .introspect_access_token(&creds, &tokens.access_token)
        .await
        .unwrap();
    assert!(!info.active);
    let c = sim.ctl.counters().await.unwrap();
    assert_eq!(c.account(HUB_A).crm_calls_expired_token, 1);
}

/// An unknown or expired token is `active: false` on both generations, under both readings of
/// HubSpot's UNCONFIRMED answers: the legacy endpoint answering an expired access token with
/// `401 EXPIRED_AUTHENTICATION`, and the v3 endpoint answering a dead token with
/// `400 VALIDATION_ERROR` (the shape in HubSpot's spec).
#[tokio::test]
async fn introspecting_expired_or_invalid_tokens_reports_inactive_under_every_reading() {
    let sim = start().await;
    let hs = client(&sim);
    let legacy = creds(OAuthEndpoints::V1Legacy);
    let tokens = hs
        .exchange_code(&legacy, &code(&sim, HUB_A).await)
        .await
        .unwrap();
    sim.ctl
        .expire_access_tokens(&ExpireTokens::default())
        .await
        .unwrap();
    let info = hs
        .introspect_access_token(&legacy, &tokens.access_token)
        .await
        .unwrap();
    assert!(!info.active);

    sim.ctl
        .update_settings(&SettingsPatch {
            v3_inactive_introspection: Some(hubkeeper_sim::InactiveIntrospection::ValidationError),
            ..Default::default()
        })
        .await
        .unwrap();
    let v3 = creds(OAuthEndpoints::V2026_03);
    let info = hs
        .introspect_refresh_token(&v3, &RefreshToken::new("na1-unknown"))
        .await
        .unwrap();
    assert!(!info.active);
}
