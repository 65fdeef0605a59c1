//! API key management and the audit of operator actions, against real Postgres and NATS with
//! two `hubkeeper api` processes and the workers (relay, projector):
//!
//! - a key created over the API is answered once with its secret, works in the other API
//!   process, is listed without secret or hash, and once revoked is refused by the other process
//!   at once (its key cache is emptied by the broadcast, not by expiry);
//! - bad requests are 4xx JSON naming the problem; auditor and service keys are refused;
//! - every operator action (log in, log out, a refused log-in, key created and revoked over the
//!   API and the command line, rate limits cleared, configuration reloaded, a backup started,
//!   a self-test run, a settings change) is one event with its actor, and one activity line with
//!   a specific message, which `hubkeeper replay` rebuilds the same;
//! - the created key's secret is in no table and no log.

use std::time::Duration;

use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_testkit::{
    free_port, hubkeeper_binary, wait_until, HkProcess, SecretKind, SecretScan, Server, TestEnv,
};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

fn master_key() -> String {
    use base64::Engine;
    format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    )
}

/// Two API processes and one process with every worker, on one test's Postgres and NATS.
struct Fleet {
    env: TestEnv,
    a: Server,
    b: Server,
    _workers: HkProcess,
    /// An admin key made directly in the store (as `hubkeeper up` would).
    admin: String,
    admin_id: String,
}

impl Fleet {
    async fn start() -> Fleet {
        let env = TestEnv::start().await;
        // A port nothing listens on: the self-test's HubSpot calls fail at once.
        let hubspot = format!("http://127.0.0.1:{}/", free_port());
        let mut vars = env.process_env();
        vars.push(("HK_MASTER_KEYS".into(), master_key()));
        vars.push(("HK_HUBSPOT_API_URL".into(), hubspot.clone()));
        vars.push(("HK_HUBSPOT_APP_URL".into(), hubspot));
        let logs = env.path().join("logs");
        let a = Server::start(free_port(), "api-a", &["api"], &vars, &logs).await;
        let b = Server::start(free_port(), "api-b", &["api"], &vars, &logs).await;
        let mut worker_vars = vars.clone();
        worker_vars.push((
            "HK_METRICS_BIND".into(),
            format!("127.0.0.1:{}", free_port()),
        ));
        let workers = HkProcess::spawn(
            &hubkeeper_binary(),
            "workers",
            &["worker", "all"],
            &worker_vars,
            &logs,
        );
        let pool = env.pool();
        let admin = create_key(&pool, "test admin", Role::Admin, "test")
            .await
            .expect("admin key");
        pool.close().await;
        Fleet {
            admin_id: admin.id.clone(),
            admin: admin.token.expose_secret().to_string(),
            env,
            a,
            b,
            _workers: workers,
        }
    }

    /// `DELETE /v1/keys/{id}` on API A with `key`.
    async fn revoke(&self, id: &str, key: &str) -> (StatusCode, Value) {
        call(
            &self.a,
            reqwest::Method::DELETE,
            &format!("/v1/keys/{id}"),
            key,
            None,
        )
        .await
    }

    async fn register_app(&self) -> String {
        let response = reqwest::Client::new()
            .post(self.a.url("/v1/apps"))
            .bearer_auth(&self.admin)
            .json(&json!({
                "label": "Keys test app",
                "environment": "development",
                "client_id": "12345678-abcd-ef01-2345-6789abcdef01",
                "client_secret": "keys-test-secret-0001",
                "redirect_uri": "https://keys.example/oauth/callback",
                "scopes": "oauth crm.objects.contacts.read"
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "the app is registered");
        let app: Value = response.json().await.unwrap();
        app["app_id"].as_str().expect("app id").to_string()
    }
}

async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A 4xx JSON error whose message contains `naming`.
fn assert_refused(status: StatusCode, body: &Value, expected: u16, naming: &str, what: &str) {
    assert_eq!(status.as_u16(), expected, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        body["error"]["code"].is_string() && message.contains(naming),
        "{what}: the error names {naming:?}: {body}"
    );
}

/// The events of `aggregate_type` (optionally of one aggregate), oldest first.
async fn events(fleet: &Fleet, aggregate_type: &str, aggregate_id: Option<&str>) -> Vec<Value> {
    let mut path = format!("/v1/events?aggregate_type={aggregate_type}&limit=500");
    if let Some(id) = aggregate_id {
        path.push_str(&format!("&aggregate_id={id}"));
    }
    let (status, body) = call(&fleet.a, reqwest::Method::GET, &path, &fleet.admin, None).await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .or_else(|| body["events"].as_array())
        .cloned()
        .unwrap_or_else(|| panic!("an event list: {body}"))
}

/// Every activity message, newest first.
async fn activity(fleet: &Fleet) -> Vec<(String, String, String)> {
    let (status, body) = call(
        &fleet.b,
        reqwest::Method::GET,
        "/v1/activity?limit=500",
        &fleet.admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .or_else(|| body["activity"].as_array())
        .unwrap_or_else(|| panic!("an activity list: {body}"))
        .iter()
        .map(|item| {
            (
                item["event_type"].as_str().unwrap_or_default().to_string(),
                item["actor"].as_str().unwrap_or_default().to_string(),
                item["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until the activity log has a line of `event_type` by `actor` saying `message`, then
/// checks it is there once.
async fn expect_activity_once(fleet: &Fleet, event_type: &str, actor: &str, message: &str) {
    wait_until(&format!("the activity line {message:?}"), WAIT, || async {
        activity(fleet)
            .await
            .iter()
            .any(|(t, a, m)| t == event_type && a == actor && m == message)
    })
    .await;
    let lines = activity(fleet).await;
    let same = lines
        .iter()
        .filter(|(t, _, m)| t == event_type && m == message)
        .count();
    assert_eq!(same, 1, "{message:?} appears once: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_is_shown_once_works_everywhere_and_stops_everywhere_at_once_when_revoked() {
    let fleet = Fleet::start().await;
    let app = fleet.register_app().await;

    // Created on A: the secret is in this answer only, which no cache may keep.
    let response = reqwest::Client::new()
        .post(fleet.a.url("/v1/keys"))
        .bearer_auth(&fleet.admin)
        .json(&json!({"role": "service", "name": "ci-bot", "apps": [app]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let created: Value = response.json().await.unwrap();
    let key = created["api_key"].as_str().expect("the key").to_string();
    let id = created["id"].as_str().expect("its id").to_string();
    assert!(key.starts_with(&format!("hk_{id}_")), "{created}");
    assert_eq!(created["role"], "service");
    assert_eq!(created["apps"], json!([app]));
    assert_eq!(created["created_by"], format!("key:{}", fleet.admin_id));

    // It works on B (which now caches the verification) and receives no token beyond its app.
    let (status, me) = call(&fleet.b, reqwest::Method::GET, "/auth/me", &key, None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["key_id"].as_str(), me["role"].as_str()),
        (Some(id.as_str()), Some("service"))
    );

    // Listed on B, with its last use, never with its secret or hash.
    let (status, list) = call(
        &fleet.b,
        reqwest::Method::GET,
        "/v1/keys",
        &fleet.admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let listed = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("the new key is listed")
        .clone();
    assert_eq!(listed["name"], "ci-bot");
    assert_eq!(listed["apps"], json!([app]));
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(listed["revoked_at"].is_null(), "{listed}");
    let text = list.to_string();
    let secret = key.rsplit('_').next().unwrap();
    assert!(!text.contains(secret), "the list shows no secret");
    assert!(
        !text.contains("secret_hash") && !text.contains("api_key"),
        "{listed}"
    );

    // Revoked on A: B refuses it as soon as it heard the broadcast (its cache, filled above,
    // would otherwise still trust the key for a while).
    let (status, revoked) = fleet.revoke(&id, &fleet.admin).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let b_log = fleet.env.path().join("logs/api-b.log");
    wait_until("API B hears of the revocation", WAIT, || async {
        std::fs::read_to_string(&b_log)
            .unwrap_or_default()
            .contains("key cache emptied")
    })
    .await;
    let (status, body) = call(&fleet.b, reqwest::Method::GET, "/auth/me", &key, None).await;
    assert_refused(status, &body, 401, "revoked", "the revoked key on API B");
    let refused = reqwest::Client::new()
        .post(fleet.b.url("/auth/login"))
        .json(&json!({ "api_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        401,
        "no dashboard log-in with a revoked key"
    );
    let (status, body) = fleet.revoke(&id, &fleet.admin).await;
    assert_refused(status, &body, 409, "already revoked", "revoking twice");

    // History: the key's events, with the admin as actor and no secret.
    let history = events(&fleet, "api_key", Some(&id)).await;
    let types: Vec<&str> = history
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ApiKeyCreated", "ApiKeyRevoked"], "{history:#?}");
    for event in &history {
        assert_eq!(
            event["metadata"]["actor"],
            format!("key:{}", fleet.admin_id)
        );
        assert!(!event.to_string().contains(secret), "no secret in {event}");
    }
    expect_activity_once(
        &fleet,
        "ApiKeyCreated",
        &format!("key:{}", fleet.admin_id),
        &format!(
            "Key `ci-bot` (service, apps: {app}) created as {id} by key {}",
            fleet.admin_id
        ),
    )
    .await;
    expect_activity_once(
        &fleet,
        "ApiKeyRevoked",
        &format!("key:{}", fleet.admin_id),
        &format!("Key `ci-bot` ({id}) revoked by key {}", fleet.admin_id),
    )
    .await;

    // Nowhere in clear: not in a table, not in any process's log.
    let mut secrets = SecretScan::new();
    secrets.add(SecretKind::ApiKey, &key);
    secrets.add(SecretKind::ApiKey, secret);
    fleet
        .env
        .assert_no_secrets(&secrets, &[SecretKind::ApiKey])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_key_requests_are_refused_with_json_naming_the_problem() {
    let fleet = Fleet::start().await;
    let app = fleet.register_app().await;
    let post = |body: Value, key: String| {
        let server = &fleet.a;
        async move { call(server, reqwest::Method::POST, "/v1/keys", &key, Some(body)).await }
    };
    let admin = fleet.admin.clone();
    let unknown = "0190a3c4-0000-7000-8000-00000000dead";
    for (body, status, naming, what) in [
        (
            json!({"role": "root", "name": "x"}),
            400,
            "unknown role `root`",
            "an unknown role",
        ),
        (
            json!({"role": "service", "name": "ci"}),
            400,
            "`apps`",
            "a service key without apps",
        ),
        (
            json!({"role": "service", "name": "ci", "apps": [app, unknown]}),
            404,
            unknown,
            "an unknown app",
        ),
        (
            json!({"role": "service", "name": "ci", "apps": ["nope"]}),
            400,
            "nope",
            "an app id that is not one",
        ),
        (
            json!({"role": "admin", "name": "n".repeat(101)}),
            400,
            "too long",
            "an oversized name",
        ),
        (
            json!({"role": "admin", "name": "   "}),
            400,
            "empty",
            "a blank name",
        ),
        (
            json!({"role": "operator", "name": "ops", "apps": [app]}),
            400,
            "only service keys",
            "apps on an operator key",
        ),
    ] {
        let (s, b) = post(body, admin.clone()).await;
        assert_refused(s, &b, status, naming, what);
    }
    let (s, b) = post(
        json!({"role": "admin", "name": "x", "secret": "mine"}),
        admin.clone(),
    )
    .await;
    assert_eq!(s, 400, "unknown fields are refused: {b}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&fleet.env.pool())
        .await
        .unwrap();
    assert_eq!(count, 1, "no refused request left a key behind");

    // Auditors see the list but change nothing; service keys see nothing.
    let pool = fleet.env.pool();
    let mut made = Vec::new();
    for (name, role) in [("auditor", Role::Auditor), ("svc", Role::Service)] {
        let key = create_key(&pool, name, role, "test").await.unwrap();
        made.push(key.token.expose_secret().to_string());
    }
    let [auditor, service] = <[String; 2]>::try_from(made).expect("two keys");
    let (s, b) = call(&fleet.a, reqwest::Method::GET, "/v1/keys", &auditor, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["keys"].as_array().map(Vec::len), Some(3));
    for key in [&auditor, &service] {
        let (s, b) = post(json!({"role": "admin", "name": "escalate"}), key.clone()).await;
        assert_refused(
            s,
            &b,
            403,
            "administer",
            "creating a key without administer",
        );
        let (s, b) = fleet.revoke(&fleet.admin_id, key).await;
        assert_refused(s, &b, 403, "administer", "revoking without administer");
    }
    let (s, b) = call(&fleet.a, reqwest::Method::GET, "/v1/keys", &service, None).await;
    assert_refused(s, &b, 403, "read_audit", "a service key listing keys");

    // Ids: malformed, unknown, and the last admin key.
    for (id, status, naming, what) in [
        ("xyz", 400, "not a key id", "a malformed id"),
        ("ak000000000000", 404, "ak000000000000", "an unknown key"),
        (
            fleet.admin_id.as_str(),
            409,
            "last active admin key",
            "revoking the last admin key",
        ),
    ] {
        let (s, b) = fleet.revoke(id, &admin).await;
        assert_refused(s, &b, status, naming, what);
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_operator_action_is_one_event_with_its_actor_and_a_specific_activity_line() {
    let fleet = Fleet::start().await;
    let admin_actor = format!("key:{}", fleet.admin_id);
    let by_admin = format!("by key {}", fleet.admin_id);
    let http = reqwest::Client::new();

    // Log in and out of the dashboard.
    let login = http
        .post(fleet.a.url("/auth/login"))
        .json(&json!({ "api_key": fleet.admin }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let me: Value = login.json().await.unwrap();
    let logout = http
        .post(fleet.a.url("/auth/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", me["csrf_token"].as_str().unwrap())
        .header("origin", &fleet.a.base)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);

    // A refused log-in: the key id it named and the client are recorded, its secret is not.
    let guessed_secret = "GuessedSecretGuessedSecretGuessedSecret1234";
    let guess = format!("hk_ak0123456789ab_{guessed_secret}");
    let refused = http
        .post(fleet.b.url("/auth/login"))
        .json(&json!({ "api_key": guess }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // Maintenance actions, a settings change, the self-test and a backup.
    for (path, expected) in [
        ("/v1/maintenance/clear-rate-limits", 202),
        ("/v1/maintenance/reload-config", 202),
        ("/v1/selftest", 200),
        ("/v1/backups", 201),
    ] {
        let (status, body) = call(
            &fleet.a,
            reqwest::Method::POST,
            path,
            &fleet.admin,
            Some(json!({})),
        )
        .await;
        assert_eq!(status.as_u16(), expected, "{path}: {body}");
    }
    let (status, body) = call(
        &fleet.a,
        reqwest::Method::PUT,
        "/v1/settings",
        &fleet.admin,
        Some(json!({"oauth_rate_limit": {"enabled": true, "window_secs": 60, "max_per_ip": 20}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A key made and revoked on the command line.
    let cli = |args: Vec<String>| {
        let env = &fleet.env;
        async move {
            tokio::process::Command::new(hubkeeper_binary())
                .args(&args)
                .env("DATABASE_URL", env.database_url())
                .env("NATS_URL", env.nats_url())
                .env("HK_LOG", "warn")
                .output()
                .await
                .unwrap()
        }
    };
    let made = cli([
        "admin",
        "create-key",
        "--role",
        "auditor",
        "--name",
        "cli-made",
    ]
    .map(String::from)
    .to_vec())
    .await;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cli_key = String::from_utf8_lossy(&made.stdout).trim().to_string();
    let cli_id = cli_key.split('_').nth(1).unwrap().to_string();
    let revoked = cli(vec!["admin".into(), "revoke-key".into(), cli_id.clone()]).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );

    // One event each, with its actor.
    let keys = events(&fleet, "api_key", None).await;
    let operations = events(&fleet, "operation", None).await;
    let count = |list: &[Value], event_type: &str, actor: &str| {
        list.iter()
            .filter(|e| e["event_type"] == event_type && e["metadata"]["actor"] == actor)
            .count()
    };
    assert_eq!(
        count(&keys, "DashboardLoggedIn", &admin_actor),
        1,
        "{keys:#?}"
    );
    assert_eq!(
        count(&keys, "DashboardLoggedOut", &admin_actor),
        1,
        "{keys:#?}"
    );
    assert_eq!(count(&keys, "ApiKeyCreated", "cli"), 1, "{keys:#?}");
    assert_eq!(count(&keys, "ApiKeyRevoked", "cli"), 1, "{keys:#?}");
    assert_eq!(
        count(&operations, "DashboardLogInFailed", "anonymous"),
        1,
        "{operations:#?}"
    );
    for event_type in [
        "RateLimitsCleared",
        "ConfigurationReloaded",
        "SelfTestRun",
        "BackupStarted",
    ] {
        assert_eq!(
            count(&operations, event_type, &admin_actor),
            1,
            "{event_type}: {operations:#?}"
        );
    }
    let failed = operations
        .iter()
        .find(|e| e["event_type"] == "DashboardLogInFailed")
        .unwrap();
    assert_eq!(
        failed["payload"]["DashboardLogInFailed"]["key_id"],
        "ak0123456789ab"
    );
    assert_eq!(
        failed["payload"]["DashboardLogInFailed"]["client"],
        "127.0.0.1"
    );
    assert!(!failed.to_string().contains(guessed_secret), "{failed}");

    // One specific activity line each.
    let expected = [
        ("DashboardLoggedIn", admin_actor.as_str(), format!("Key {} logged in to the dashboard from 127.0.0.1", fleet.admin_id)),
        ("DashboardLoggedOut", admin_actor.as_str(), format!("Key {} logged out of the dashboard", fleet.admin_id)),
        ("DashboardLogInFailed", "anonymous", "Failed log-in from 127.0.0.1: key ak0123456789ab is unknown or revoked, or its secret is wrong".to_string()),
        ("RateLimitsCleared", admin_actor.as_str(), format!("Rate limits cleared in every process {by_admin}")),
        ("ConfigurationReloaded", admin_actor.as_str(), format!("Configuration reloaded in every process {by_admin}")),
        ("BackupStarted", admin_actor.as_str(), format!("Backup started {by_admin} (API)")),
        ("OAuthRateLimitSettingsChanged", admin_actor.as_str(), format!("Setting `oauth_rate_limit.max_per_ip` changed from 10 to 20 {by_admin}")),
        ("ApiKeyCreated", "cli", format!("Key `cli-made` (auditor) created as {cli_id} by the command line")),
        ("ApiKeyRevoked", "cli", format!("Key `cli-made` ({cli_id}) revoked by the command line")),
    ];
    for (event_type, actor, message) in &expected {
        expect_activity_once(&fleet, event_type, actor, message).await;
    }
    // The self-test against a HubSpot that does not answer fails; the line says which steps.
    let lines = activity(&fleet).await;
    let selftest: Vec<_> = lines
        .iter()
        .filter(|(t, _, _)| t == "SelfTestRun")
        .collect();
    assert_eq!(selftest.len(), 1, "{lines:#?}");
    assert!(
        selftest[0].2.starts_with("Self-test failed (")
            && selftest[0]
                .2
                .ends_with(&format!("run by key {}", fleet.admin_id)),
        "{selftest:?}"
    );

    // `hubkeeper replay` rebuilds the same lines.
    let before: Vec<(String, String, String)> = sorted(lines);
    let out = std::process::Command::new(hubkeeper_binary())
        .args(["replay", "--projection", "all"])
        .env("DATABASE_URL", fleet.env.database_url())
        .env("HK_LOG", "warn")
        .output()
        .expect("run hubkeeper replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sorted(activity(&fleet).await),
        before,
        "replay rebuilds the activity log"
    );
}

fn sorted(mut lines: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    lines.sort();
    lines
}
