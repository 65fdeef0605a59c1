//! Token hand-out and refresh against real Postgres, NATS, `hubkeeper api` processes and the
//! HubSpot simulator: refresh near expiry (rotation off and on), single flight across two
//! processes, and master-key rotation without downtime.

#[path = "tokens_support/mod.rs"]
mod support;

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use hubkeeper_sim::{RotationMode, SimConfig};
use hubkeeper_testkit::{hubkeeper_binary, wait_until, SecretKind};
use serde_json::{json, Value};
use support::{master_key, Harness};

fn expires_at(token: &Value) -> DateTime<Utc> {
    token["expires_at"].as_str().unwrap().parse().unwrap()
}

/// Installs with short-lived tokens (32 s), then lets later tokens live a minute, so a hand-out
/// that asks for more than the first token's remaining life (but less than its lifetime, or it
/// is refused outright) must refresh, and the new token easily satisfies the margin.
async fn installed_with_short_first_token(
    h: &mut Harness,
    api: usize,
) -> (support::TestApp, String) {
    h.register_account(40_000_001).await;
    let app = h
        .register_app(api, "secret-refresh-0123456", "secret-refresh-0123456")
        .await;
    h.ctl
        .set_token_lifetime(Duration::from_secs(32))
        .await
        .unwrap();
    let id = h.install(api, &app, 40_000_001).await;
    h.ctl
        .set_token_lifetime(Duration::from_secs(60))
        .await
        .unwrap();
    (app, id)
}

/// Waits until `token` has less than `secs` left.
async fn first_token_aged_below(token: &Value, secs: i64) {
    let expires = expires_at(token);
    wait_until(
        "the first token aged below the margin",
        Duration::from_secs(10),
        || async { expires - Utc::now() < chrono::Duration::seconds(secs) },
    )
    .await;
}

async fn hand_out_refreshes_near_expiry(rotation: RotationMode) {
    let mut h = Harness::start(SimConfig {
        rotation,
        ..SimConfig::default()
    })
    .await;
    let api = h.spawn_api("api", &[]).await;
    let (app, id) = installed_with_short_first_token(&mut h, api).await;

    // Valid for 32 s: a 10 s margin is served from what is stored, without HubSpot.
    let (status, first) = h.token(api, &id, 10).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(expires_at(&first) - Utc::now() >= chrono::Duration::seconds(10));
    let (_, again) = h.token(api, &id, 10).await;
    assert_eq!(again["access_token"], first["access_token"], "cached");
    assert_eq!(h.ctl.counters().await.unwrap().total.refresh_calls, 0);

    // A 30 s margin cannot be met by the first token once it aged: refreshed first, never
    // handed out short.
    first_token_aged_below(&first, 30).await;
    let (status, second) = h.token(api, &id, 30).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["access_token"], first["access_token"]);
    assert!(expires_at(&second) - Utc::now() >= chrono::Duration::seconds(30));
    assert_eq!(h.ctl.counters().await.unwrap().total.refresh_calls, 1);
    assert_eq!(
        h.crm_status(second["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    let details = h.details(api, &id).await;
    assert_eq!(details["generation"], 2);
    assert!(details["last_refreshed_at"].is_string());
    // The refresh was recorded before the hand-out, by the refresher actor.
    let actor: String = sqlx::query_scalar(
        "SELECT metadata::json->>'actor' FROM events
          WHERE aggregate_id = $1 AND event_type = 'InstallationTokensRefreshed'",
    )
    .bind(&id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(actor, "system:refresher");

    // A manual refresh must present the latest refresh token: with rotation on and no grace,
    // the first one is already dead, so this proves the rotated one was stored.
    let (status, body) = h
        .post(api, &format!("/v1/installations/{id}/refresh"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["refreshed"], true);
    assert_eq!(body["generation"], 3);
    let (_, third) = h.token(api, &id, 30).await;
    assert_ne!(
        third["access_token"], second["access_token"],
        "cache dropped"
    );
    assert_eq!(
        h.crm_status(third["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    let counters = h.ctl.counters().await.unwrap();
    assert_eq!(counters.total.refresh_calls, 2);
    assert_eq!(counters.total.refresh_failures, 0);
    // (The manual refresh deliberately replaced a still-valid token, so the per-lifetime
    // statistic is not asserted here; the single-flight test does.)
    assert!(counters.installation(&app.client_id, 40_000_001).is_some());
    match rotation {
        RotationMode::Off => assert_eq!(counters.total.rotated_tokens, 0),
        RotationMode::On { .. } => assert_eq!(counters.total.rotated_tokens, 2),
    }
    let manual_actor: String = sqlx::query_scalar(
        "SELECT metadata::json->>'actor' FROM events
          WHERE aggregate_id = $1 AND event_type = 'InstallationTokensRefreshed'
          ORDER BY sequence DESC LIMIT 1",
    )
    .bind(&id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(manual_actor.starts_with("key:"), "{manual_actor}");

    // HubSpot down: a clear 503, no token, nothing marked dead.
    h.ctl
        .inject_fault(
            &serde_json::from_value(
                json!({"endpoint": "token", "mode": "error_rate", "status": 503, "rate": 1.0}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let (status, body) = h
        .post(api, &format!("/v1/installations/{id}/refresh"), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "hubspot_unavailable");
    let details = h.details(api, &id).await;
    assert_eq!(details["status"], "connected");
    assert!(details["consecutive_failures"].as_u64().unwrap() >= 1);
    h.ctl.clear_faults().await.unwrap();
    h.scan_for_leaks(&SecretKind::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_out_refreshes_near_expiry_without_rotation() {
    hand_out_refreshes_near_expiry(RotationMode::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_out_refreshes_near_expiry_with_rotation() {
    hand_out_refreshes_near_expiry(RotationMode::On {
        grace: Duration::ZERO,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_hand_outs_on_two_processes_refresh_once() {
    let mut h = Harness::start(SimConfig {
        rotation: RotationMode::On {
            grace: Duration::ZERO,
        },
        ..SimConfig::default()
    })
    .await;
    let a = h.spawn_api("api-a", &[]).await;
    let b = h.spawn_api("api-b", &[]).await;
    let (app, id) = installed_with_short_first_token(&mut h, a).await;
    // Both processes have seen the first token (cached), so both must notice it is too short.
    let mut first = Value::Null;
    for api in [a, b] {
        let (status, body) = h.token(api, &id, 5).await;
        assert_eq!(status, StatusCode::OK);
        first = body;
    }
    first_token_aged_below(&first, 30).await;
    let before = h.ctl.counters().await.unwrap().total.refresh_calls;

    let h = std::sync::Arc::new(h);
    let mut calls = Vec::new();
    for i in 0..50 {
        let h = h.clone();
        let id = id.clone();
        let api = if i % 2 == 0 { a } else { b };
        calls.push(tokio::spawn(async move { h.token(api, &id, 30).await }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            expires_at(&body) - Utc::now() >= chrono::Duration::seconds(29),
            "never a token valid for less than the margin"
        );
        tokens.insert(body["access_token"].as_str().unwrap().to_string());
    }
    let counters = h.ctl.counters().await.unwrap();
    assert_eq!(
        counters.total.refresh_calls - before,
        1,
        "exactly one refresh at HubSpot for 50 concurrent requests on two processes"
    );
    assert_eq!(tokens.len(), 1, "everyone got the one new token");
    assert_eq!(counters.total.refresh_failures, 0);
    assert!(
        counters
            .installation(&app.client_id, 40_000_001)
            .unwrap()
            .max_refreshes_per_token_lifetime
            <= 1
    );
    // Both now serve the new one for a small margin too.
    let current = tokens.iter().next().unwrap().clone();
    for api in [a, b] {
        let (_, body) = h.token(api, &id, 5).await;
        assert_eq!(body["access_token"], current.as_str());
    }

    // A change in one process reaches the other's cache through the NATS broadcast: B holds
    // a still-valid cached token for up to 60 s, A refreshes, B must stop serving it within
    // moments.
    let (status, body) = h
        .post(a, &format!("/v1/installations/{id}/refresh"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let old = current.clone();
    wait_until(
        "B drops its cached copy when A refreshes",
        Duration::from_secs(3),
        || async { h.token(b, &id, 5).await.1["access_token"] != old.as_str() },
    )
    .await;
    // Same for a revoke: B must not hand out its cached (still valid) token afterwards.
    let (status, body) = h
        .post(
            a,
            &format!("/v1/installations/{id}/revoke"),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(
        "B stops handing out the revoked installation's cached token",
        Duration::from_secs(3),
        || async {
            let (status, body) = h.token(b, &id, 5).await;
            status == StatusCode::CONFLICT && body["error"]["code"] == "revoked"
        },
    )
    .await;
    h.scan_for_leaks(&SecretKind::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_rotation_rewraps_without_downtime() {
    let mut h = Harness::start(SimConfig::default()).await;
    h.master_keys = master_key("k1", 7);
    let old = h.spawn_api("api-k1", &[]).await;
    // `old` only knows k1: it stands for the deployment before the rotation started.
    h.register_account(40_000_001).await;
    let app = h
        .register_app(old, "secret-rotate-01234567", "secret-rotate-01234567")
        .await;
    let id = h.install(old, &app, 40_000_001).await;

    // Rolling restart with k2 added and active (k1 kept), then rotation while it serves.
    let both = format!("{},{}", master_key("k1", 7), master_key("k2", 9));
    h.master_keys = both.clone();
    let during = h.spawn_api("api-k1k2", &[("HK_ACTIVE_KEY_ID", "k2")]).await;
    let (status, _) = h.token(during, &id, 60).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "old data keys still unwrap before rotation"
    );
    let mut vars = h.env.process_env();
    vars.push(("HK_MASTER_KEYS".into(), both.clone()));
    vars.push(("HK_ACTIVE_KEY_ID".into(), "k2".into()));
    let output = std::process::Command::new(hubkeeper_binary())
        .args(["keys", "rotate"])
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "rotate failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("re-wrapped"), "{stdout}");
    assert!(stdout.contains("master key k2:"), "{stdout}");
    let kids: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT master_kid FROM data_keys WHERE wrapped IS NOT NULL")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(kids, vec!["k2".to_string()]);
    let (status, _) = h.token(during, &id, 60).await;
    assert_eq!(status, StatusCode::OK, "serving throughout the rotation");

    // A process that only knows k2 reads everything: installation tokens and the app secret.
    h.master_keys = master_key("k2", 9);
    let new = h.spawn_api("api-k2", &[]).await;
    let (status, body) = h.token(new, &id, 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h
        .post(new, &format!("/v1/installations/{id}/refresh"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "client secret readable under k2: {body}"
    );

    // `keys status` reports it; `keys generate` prints a usable entry.
    let output = std::process::Command::new(hubkeeper_binary())
        .args(["keys", "generate", "--kid", "k3"])
        .output()
        .unwrap();
    let entry = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(entry.starts_with("k3:") && entry.len() > 40, "{entry}");
    assert!(hubkeeper_crypto::MasterKeyring::parse(&entry, None).is_ok());
    h.scan_for_leaks(&SecretKind::ALL).await;
}

/// The backend pid holding an installation refresh lock, once some process holds one.
async fn refresh_lock_holder(h: &Harness) -> i32 {
    let class = hubkeeper_bus::registry::TOKEN_REFRESH_LOCK_CLASS.class;
    let holder = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_locks
              WHERE locktype = 'advisory' AND granted AND objsubid = 2
                AND classid = $1::int4::oid LIMIT 1",
        )
        .bind(class)
        .fetch_optional(&h.pool)
        .await
        .unwrap()
    };
    wait_until(
        "a process holds the refresh lock",
        Duration::from_secs(20),
        || async { holder().await.is_some() },
    )
    .await;
    holder().await.expect("lock holder")
}

/// Waits until the simulator's fault rule `id` fired (the delayed call reached HubSpot).
async fn fault_fired(h: &Harness, id: u64) {
    wait_until(
        "the delayed token call reached the simulator",
        Duration::from_secs(20),
        || async {
            h.ctl
                .faults()
                .await
                .unwrap()
                .iter()
                .any(|f| f.id == id && f.fired > 0)
        },
    )
    .await;
}

/// A manual refresh on API `api` tagged with `request_id`, in the background.
fn refresh_in_background(
    h: &Harness,
    api: usize,
    id: &str,
    request_id: &'static str,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let request = h
        .http
        .post(format!("{}/v1/installations/{id}/refresh", h.api(api)))
        .bearer_auth(&h.admin_key)
        .header("x-request-id", request_id);
    tokio::spawn(async move {
        let r = request.send().await.expect("refresh request");
        let status = r.status();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    })
}

/// Events of the installation recorded since `after` (sequence), as (type, request id).
async fn events_since(h: &Harness, id: &str, after: i64) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT event_type, coalesce(metadata::json->>'request_id', '') FROM events
          WHERE aggregate_id = $1 AND sequence > $2 ORDER BY sequence",
    )
    .bind(id)
    .bind(after)
    .fetch_all(&h.pool)
    .await
    .unwrap()
}

async fn last_sequence(h: &Harness, id: &str) -> i64 {
    sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

async fn delay_next_token_call(h: &Harness, ms: u64) -> u64 {
    h.ctl
        .inject_fault(
            &serde_json::from_value(
                json!({"endpoint": "token", "mode": "latency", "ms": ms, "times": 1}),
            )
            .unwrap(),
        )
        .await
        .unwrap()
        .id
}

/// Two API processes and one installation, for the tests in which the refresh lock of API `a` is
/// lost mid-refresh.
struct LostLock {
    h: Harness,
    a: usize,
    b: usize,
    id: String,
    /// The installation's last event sequence before the refreshes under test.
    before: i64,
}

impl LostLock {
    async fn start(sim: SimConfig, client_secret: &str) -> LostLock {
        let mut h = Harness::start(sim).await;
        let a = h.spawn_api("api-a", &[]).await;
        let b = h.spawn_api("api-b", &[]).await;
        h.register_account(40_000_001).await;
        let app = h.register_app(a, client_secret, client_secret).await;
        let id = h.install(a, &app, 40_000_001).await;
        let before = last_sequence(&h, &id).await;
        LostLock {
            h,
            a,
            b,
            id,
            before,
        }
    }

    /// Starts a refresh on A whose HubSpot call takes 3 s, and kills A's lock session once the
    /// call reached HubSpot; the refresh answers later.
    async fn refresh_on_a_losing_its_lock(
        &self,
        request_id: &'static str,
    ) -> tokio::task::JoinHandle<(StatusCode, Value)> {
        let slow = delay_next_token_call(&self.h, 3_000).await;
        let lost = refresh_in_background(&self.h, self.a, &self.id, request_id);
        let holder = refresh_lock_holder(&self.h).await;
        fault_fired(&self.h, slow).await;
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(holder)
            .fetch_one(&self.h.pool)
            .await
            .unwrap();
        assert!(killed, "the lock holder's session was terminated");
        lost
    }

    /// The installation's events since the set-up; none recorded by `lost_request` and no
    /// re-authorisation.
    async fn events_without(&self, lost_request: &str) -> Vec<(String, String)> {
        let events = events_since(&self.h, &self.id, self.before).await;
        assert!(
            events.iter().all(|(_, request)| request != lost_request),
            "the process that lost its lock recorded: {events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|(kind, _)| kind == "InstallationReauthorizationRequired"),
            "{events:?}"
        );
        events
    }

    /// The installation is connected and its token (handed out by `api`) works at HubSpot.
    async fn assert_connected(&self, api: usize) {
        let details = self.h.details(api, &self.id).await;
        assert_eq!(details["status"], "connected", "{details}");
        let (status, token) = self.h.token(api, &self.id, 0).await;
        assert_eq!(status, StatusCode::OK, "{token}");
        let access = token["access_token"].as_str().unwrap_or_default();
        assert_eq!(self.h.crm_status(access).await, StatusCode::OK);
    }
}

/// A refresh behind another process's refresh lock waits at most the configured lock timeout
/// (enforced by Postgres's `lock_timeout` on the lock statement) and answers 503 `busy`, while the
/// holder's refresh goes on and lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_behind_another_process_lock_waits_at_most_the_lock_timeout() {
    let mut h = Harness::start(SimConfig::default()).await;
    let a = h.spawn_api("api-a", &[]).await;
    let b = h
        .spawn_api("api-b", &[("HK_REFRESH_LOCK_TIMEOUT_SECS", "1")])
        .await;
    h.register_account(40_000_002).await;
    let secret = "secret-busy-0123456789";
    let app = h.register_app(a, secret, secret).await;
    let id = h.install(a, &app, 40_000_002).await;

    // A holds the installation's lock while HubSpot takes 8 s to answer its refresh.
    let slow = delay_next_token_call(&h, 8_000).await;
    let holder = refresh_in_background(&h, a, &id, "refresh-holding-the-lock");
    refresh_lock_holder(&h).await;
    fault_fired(&h, slow).await;

    let (status, body) = refresh_in_background(&h, b, &id, "refresh-behind-the-lock")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "busy", "{body}");
    assert!(
        !holder.is_finished(),
        "B gave up after its lock timeout, while A still held the lock"
    );
    let (status, body) = holder.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["refreshed"], true, "{body}");
}

/// A refresh whose lock session is killed while HubSpot answers records nothing: the process
/// that took the lock over records its own refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_that_lost_its_lock_records_nothing() {
    let t = LostLock::start(SimConfig::default(), "secret-lock-0123456789").await;

    // A's call to HubSpot is slow; meanwhile its lock session is killed.
    let lost = t
        .refresh_on_a_losing_its_lock("refresh-that-lost-its-lock")
        .await;
    // B takes the lock over; its HubSpot call is slower still, so A's answer comes first.
    let slower = delay_next_token_call(&t.h, 6_000).await;
    let winner = refresh_in_background(&t.h, t.b, &t.id, "refresh-that-took-over");
    fault_fired(&t.h, slower).await;

    let (status, body) = lost.await.unwrap();
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::CONFLICT
            || status.is_success(),
        "{status} {body}"
    );
    let (status, body) = winner.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["refreshed"], true, "{body}");

    let events = t.events_without("refresh-that-lost-its-lock").await;
    assert!(
        events
            .iter()
            .any(|(kind, request)| kind == "InstallationTokensRefreshed"
                && request == "refresh-that-took-over"),
        "{events:?}"
    );
    t.assert_connected(t.a).await;
}

/// A refresh that lost the race (HubSpot refuses the refresh token another process already
/// rotated) records no re-authorisation and answers with the other process's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_refresh_race_records_no_reauthorisation() {
    let sim = SimConfig {
        rotation: RotationMode::On {
            grace: Duration::ZERO,
        },
        ..SimConfig::default()
    };
    let t = LostLock::start(sim, "secret-race-0123456789").await;

    // A presents the refresh token, slowly; its lock session dies; B refreshes at once and
    // HubSpot rotates the token, so A's (older) call is refused with invalid_grant.
    let lost = t
        .refresh_on_a_losing_its_lock("refresh-that-lost-the-race")
        .await;
    let winner = refresh_in_background(&t.h, t.b, &t.id, "refresh-that-won-the-race");
    let (status, body) = winner.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = lost.await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "the lost race must not answer re-authorisation: {body}"
    );

    t.events_without("refresh-that-lost-the-race").await;
    t.assert_connected(t.b).await;
}
