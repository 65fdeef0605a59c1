//! The read side over HTTP: query endpoints (filters, sorting, keyset pages, 400s naming the
//! parameter), the audit history (upcast on read, NDJSON export equal to the CLI's), point-in-time
//! state, and replay's bookkeeping. The history includes an `AppRegistered` stored in its old 1.0
//! shape, written straight into the events table.

#[path = "support/read_side.rs"]
mod support;

use std::time::Duration;

use chrono::{Duration as Span, Utc};
use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_domain::AppId;
use hubkeeper_projections::{replay, ReplayOptions};
use hubkeeper_testkit::{free_port, hubkeeper_binary, wait_until, Server, TestEnv};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use support::{app_rows, connected_row, insert_rows, installation_id, lifecycle_row, Row, SEALED};

struct Api {
    base: String,
    http: reqwest::Client,
    key: String,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(&self.key, path).await
    }

    async fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }
}

fn legacy_app_registered(app: AppId) -> Row {
    Row {
        aggregate_type: "app".into(),
        aggregate_id: app.to_string(),
        sequence: 1,
        event_type: "AppRegistered".into(),
        event_version: "1.0".into(),
        payload: json!({"AppRegistered": {
            "app_id": app.to_string(),
            "label": "Legacy prototype app",
            "environment": "production",
            "client_id": "12345678-abcd-ef01-2345-6789abcdef01",
            "client_secret": SEALED,
            "redirect_uri": "https://example.com/oauth/callback",
            "scopes": "oauth crm.objects.contacts.read",
            "registered_at": "2025-01-02T03:04:05Z"
        }}),
        metadata: json!({"actor": "system", "occurred_at": "2025-01-02T03:04:05.000000Z"}),
    }
}

async fn assert_bad(api: &Api, path: &str, parameter: &str) {
    let (status, body) = api.get(path).await;
    assert_eq!(status, 400, "{path}: {body}");
    assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
    assert_eq!(body["error"]["code"], "invalid_parameter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_audit_history_point_in_time_and_upcasting() {
    let env = TestEnv::start().await;
    let pool = env.pool();
    let app = AppId::from_uuid(uuid::Uuid::from_u128(0xA11));
    let legacy = AppId::from_uuid(uuid::Uuid::from_u128(0x1E6));
    let start = Utc::now() - Span::days(3);

    // History in several transactions: apps, 40 installations with varied lifecycles, a legacy
    // app, one installation whose revoke comes later (for the point-in-time check).
    insert_rows(&pool, &app_rows(app, "Main", start))
        .await
        .unwrap();
    insert_rows(&pool, &[legacy_app_registered(legacy)])
        .await
        .unwrap();
    let mut rows = Vec::new();
    for k in 0..40u64 {
        let owner = if k % 4 == 0 { legacy } else { app };
        let at = start + Span::minutes(k as i64);
        rows.push(connected_row(
            owner,
            80_000 + k,
            at,
            Utc::now() + Span::hours(2),
        ));
        for seq in 2..=(2 + k as i64 % 5) {
            rows.push(lifecycle_row(
                owner,
                80_000 + k,
                k,
                seq,
                at + Span::minutes(seq),
            ));
        }
    }
    insert_rows(&pool, &rows[..60]).await.unwrap();
    insert_rows(&pool, &rows[60..]).await.unwrap();
    let watched = installation_id(app, 90_000);
    insert_rows(
        &pool,
        &[connected_row(
            app,
            90_000,
            Utc::now(),
            Utc::now() + Span::hours(1),
        )],
    )
    .await
    .unwrap();
    let between: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let revoke = Row {
        aggregate_type: "installation".into(),
        aggregate_id: watched.to_string(),
        sequence: 2,
        event_type: "InstallationRevoked".into(),
        event_version: "1.0".into(),
        payload: json!({"InstallationRevoked": {"reason": "audit test", "revoked_at": Utc::now()}}),
        metadata: json!({"actor": "key:akoperator0001", "reason": "audit test"}),
    };
    wait_until(
        "clock moves past `between`",
        Duration::from_secs(5),
        || async {
            let now: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
                .fetch_one(&pool)
                .await
                .unwrap();
            now > between
        },
    )
    .await;
    insert_rows(&pool, &[revoke]).await.unwrap();

    // Replay projects the history; its count is the table's.
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let report = replay(
        &pool,
        &ReplayOptions {
            batch_size: 37,
            ..Default::default()
        },
        |_| {},
    )
    .await
    .expect("replay");
    assert_eq!(
        report.events as i64, total,
        "every event replayed exactly once"
    );
    let again = replay(&pool, &ReplayOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(again.events as i64, total);

    // The legacy app was upcast before projection.
    let (scopes, versions, generation): (Vec<String>, Vec<String>, String) = sqlx::query_as(
        "SELECT scopes, signature_versions, oauth_generation FROM rm_apps WHERE app_id = $1",
    )
    .bind(legacy.as_uuid())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(scopes, vec!["oauth", "crm.objects.contacts.read"]);
    assert_eq!(versions, vec!["v1", "v2", "v3"]);
    assert_eq!(generation, "v1");

    // The API.
    let mut vars = env.process_env();
    vars.push(("HK_MASTER_KEYS".into(), String::new()));
    let server = Server::start(
        free_port(),
        "api",
        &["api"],
        &vars,
        &env.path().join("logs"),
    )
    .await;
    let base = server.base.clone();
    let auditor = create_key(&pool, "auditor", Role::Auditor, "test")
        .await
        .unwrap();
    let service = create_key(&pool, "service", Role::Service, "test")
        .await
        .unwrap();
    let api = Api {
        base,
        http: reqwest::Client::new(),
        key: auditor.token.expose_secret().to_owned(),
    };

    // Authentication and roles.
    let r = api
        .http
        .get(format!("{}/v1/installations", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (status, _) = api
        .get_as(service.token.expose_secret(), "/v1/events")
        .await;
    assert_eq!(status, 403, "a service key reads no history");

    // Events in global order, upcast on read.
    let (status, page) = api
        .get(&format!(
            "/v1/events?aggregate_type=app&aggregate_id={legacy}"
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    let item = &page["items"][0];
    assert_eq!(item["event_type"], "AppRegistered");
    assert_eq!(item["stored_version"], "1.0");
    assert_eq!(item["event_version"], "1.1.0");
    assert_eq!(
        item["payload"]["AppRegistered"]["scopes"],
        json!(["oauth", "crm.objects.contacts.read"])
    );
    let mut seen = 0;
    let mut after = String::new();
    let mut last_position = (0u64, 0i64);
    loop {
        let (status, page) = api.get(&format!("/v1/events?limit=25{after}")).await;
        assert_eq!(status, 200);
        for e in page["items"].as_array().unwrap() {
            let (tx, pos) = e["position"].as_str().unwrap().split_once('-').unwrap();
            let here = (tx.parse().unwrap(), pos.parse().unwrap());
            assert!(here > last_position, "global order");
            last_position = here;
            seen += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => after = format!("&after={c}"),
            None => break,
        }
    }
    assert_eq!(seen, total);
    assert_bad(&api, "/v1/events?after=nope", "after").await;
    assert_bad(&api, "/v1/events?from=yesterday", "from").await;

    // Export: NDJSON over HTTP equals the CLI's.
    let exported = api
        .text("/v1/events/export?aggregate_type=installation")
        .await;
    let cli = std::process::Command::new(hubkeeper_binary())
        .args(["events", "export", "--aggregate-type", "installation"])
        .env("DATABASE_URL", env.database_url())
        .env("HK_LOG", "warn")
        .output()
        .expect("events export");
    assert!(cli.status.success());
    let cli_out = String::from_utf8(cli.stdout).unwrap();
    let installations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'installation'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(exported.lines().count() as i64, installations);
    assert_eq!(exported, cli_out, "API and CLI export the same lines");
    assert!(String::from_utf8_lossy(&cli.stderr).contains("exported"));

    // Point in time.
    let (status, before) = api
        .get(&format!(
            "/v1/installations/{watched}/as-of?at={}",
            between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ))
        .await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["status"], "connected");
    let (_, now) = api
        .get(&format!(
            "/v1/installations/{watched}/as-of?at={}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ))
        .await;
    assert_eq!(now["status"], "revoked");
    assert_eq!(now["sequence"], 2);
    let (status, _) = api
        .get(&format!("/v1/apps/{legacy}/as-of?at=2020-01-01T00:00:00Z"))
        .await;
    assert_eq!(status, 404);
    let (_, then) = api
        .get(&format!(
            "/v1/apps/{legacy}/as-of?at={}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ))
        .await;
    assert_eq!(
        then["scopes"],
        json!(["crm.objects.contacts.read", "oauth"])
    );
    assert_bad(&api, &format!("/v1/apps/{legacy}/as-of"), "at").await;

    // Installations: filter, sort, keyset pages.
    let expected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_installations WHERE app_id = $1 AND status <> 'revoked'",
    )
    .bind(app.as_uuid())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        expected > 0,
        "the fixture has installations to page through"
    );
    let mut cursor = String::new();
    let mut hubs = Vec::new();
    loop {
        let (status, page) = api
            .get(&format!(
                "/v1/installations?app_id={app}&status=connected,expired,needs_reauthorization,disconnected,forgotten&sort=-hub_id&limit=7{cursor}"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], expected);
        for i in page["items"].as_array().unwrap() {
            assert_eq!(i["app_id"], app.to_string());
            assert_eq!(i["app_label"], "Main (renamed)");
            hubs.push(i["hub_id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(hubs.len() as i64, expected);
    assert!(
        hubs.windows(2).all(|w| w[0] > w[1]),
        "sorted by hub id, descending"
    );
    let (_, one) = api.get("/v1/installations?q=portal-80003").await;
    assert_eq!(one["total"], 1);
    assert_eq!(one["items"][0]["hub_domain"], "portal-80003.hubspot.com");
    assert_bad(&api, "/v1/installations?status=bogus", "status").await;
    assert_bad(&api, "/v1/installations?limit=0", "limit").await;
    assert_bad(&api, "/v1/installations?app_id=xyz", "app_id").await;
    assert_bad(&api, "/v1/installations?hub_id=abc", "hub_id").await;
    assert_bad(&api, "/v1/installations?sort=nope", "sort").await;
    let (_, first) = api.get("/v1/installations?sort=expires&limit=2").await;
    let c = first["next_cursor"].as_str().unwrap();
    assert_bad(
        &api,
        &format!("/v1/installations?sort=hub_id&cursor={c}"),
        "cursor",
    )
    .await;

    // Apps with counts.
    let (_, apps) = api.get("/v1/apps?sort=label").await;
    let listed: Vec<&str> = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["label"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec!["Legacy prototype app", "Main (renamed)"]);
    assert_eq!(apps["items"][0]["installation_count"], 10);
    assert_eq!(apps["items"][1]["installation_count"], 31);
    assert_bad(&api, "/v1/apps?environment=moon", "environment").await;

    // Activity: levels, apps, pages.
    let (_, errors) = api
        .get(&format!("/v1/activity?level=error&app_id={app}&limit=3"))
        .await;
    let error_items = errors["items"].as_array().unwrap();
    let error_total = errors["total"].as_u64().expect("total");
    assert!(error_total > 0, "the fixture has errors: {errors}");
    assert_eq!(error_items.len() as u64, error_total.min(3), "{errors}");
    for a in error_items {
        assert_eq!(a["level"], "error");
        assert_eq!(a["app_id"], app.to_string());
    }
    let (_, all) = api.get("/v1/activity?limit=500").await;
    assert_eq!(all["total"], total);
    let (_, revoked) = api
        .get(&format!("/v1/activity?installation_id={watched}&order=asc"))
        .await;
    let lines: Vec<&str> = revoked["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["message"].as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].starts_with("Tokens revoked (hub 90000): audit test"),
        "{lines:?}"
    );
    assert_bad(&api, "/v1/activity?level=loud", "level").await;
    assert_bad(
        &api,
        "/v1/activity?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "from",
    )
    .await;

    // Overview.
    let (status, overview) = api.get("/v1/stats/overview").await;
    assert_eq!(status, 200, "{overview}");
    let connected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_installations WHERE status = 'connected'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(overview["active_users"]["current"], connected);
    assert!(overview["active_users"]["week_ago"].is_i64());
    assert!(overview["tokens"]["active"].is_i64());
    assert_eq!(overview["recent_activity"].as_array().unwrap().len(), 10);
    assert_bad(
        &api,
        "/v1/stats/overview?expiring_within=-5",
        "expiring_within",
    )
    .await;
}
