//! Pricing, subscriptions, usage and quotas end to end: `hubkeeper api` and `hubkeeper worker
//! all` processes against real Postgres, NATS and the HubSpot simulator, a tenant installed
//! through the real OAuth flow.

#[path = "tokens_support/mod.rs"]
mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_bus::registry::BILLING_PROJECTION_CURSOR;
use hubkeeper_sim::SimConfig;
use hubkeeper_testkit::{
    cursor_at_end, free_port, hubkeeper_binary, wait_until, HkProcess, SecretKind,
};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::PgPool;
use support::Harness;

async fn call(
    h: &Harness,
    key: &str,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = h.http.request(method, url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_subscriptions_usage_quota_and_the_billing_overview() {
    let mut h = Harness::start(SimConfig::default()).await;
    let api = h.spawn_api("api", &[]).await;
    let base = h.api(api).to_string();
    let workers_env = h.api_env(free_port(), &[("HK_LOG", "info")]);
    let mut workers = HkProcess::spawn(
        &hubkeeper_binary(),
        "workers",
        &["worker", "all"],
        &workers_env,
        &h.env.path().join("logs"),
    );
    let admin = h.admin_key.clone();
    let service = create_key(&h.pool, "app-backend", Role::Service, "test")
        .await
        .expect("service key");
    let service = service.token.expose_secret().to_string();
    let auditor = create_key(&h.pool, "auditor", Role::Auditor, "test")
        .await
        .expect("auditor key");
    let auditor = auditor.token.expose_secret().to_string();

    // ---- plans ---------------------------------------------------------------------------
    let free = json!({
        "code": "free", "name": "Free Plan", "type": "free",
        "price": {"amount_minor": 0, "currency": "USD"},
        "features": ["100 requests/month", "Basic BRREG lookup", "Standard support"],
        "limits": {"requests_per_month": 5}
    });
    let (status, body) = call(
        &h,
        &admin,
        Method::POST,
        &format!("{base}/v1/plans"),
        Some(free),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["price"]["display"], "0.00 USD");
    let pro = json!({
        "code": "Pro", "name": "Pro Plan", "type": "recurring", "interval": "monthly",
        "price": {"amount_minor": 1000, "currency": "usd"},
        "features": ["Unlimited requests", "Bulk operations", "Priority support", "API access"],
        "limits": {"requests_per_month": 100}
    });
    let (status, pro_plan) = call(
        &h,
        &admin,
        Method::POST,
        &format!("{base}/v1/plans"),
        Some(pro.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{pro_plan}");
    assert_eq!(pro_plan["code"], "pro");
    assert_eq!(pro_plan["price"]["display"], "10.00 USD");

    // Codes are unique, currencies checked, prices integers, changes admin-only.
    let (status, body) = call(
        &h,
        &admin,
        Method::POST,
        &format!("{base}/v1/plans"),
        Some(pro.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(message(&body).contains("already used"), "{body}");
    let mut bad = pro.clone();
    bad["code"] = json!("pro2");
    bad["price"]["currency"] = json!("NKO");
    let (status, body) = call(
        &h,
        &admin,
        Method::POST,
        &format!("{base}/v1/plans"),
        Some(bad),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&body).contains("ISO 4217"), "{body}");
    let mut float = pro.clone();
    float["code"] = json!("pro3");
    float["price"]["amount_minor"] = json!(9.99);
    let (status, _) = call(
        &h,
        &admin,
        Method::POST,
        &format!("{base}/v1/plans"),
        Some(float),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "fractional minor units are refused"
    );
    let (status, _) = call(
        &h,
        &service,
        Method::POST,
        &format!("{base}/v1/plans"),
        Some(pro.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&h, &auditor, Method::GET, &format!("{base}/v1/plans"), None).await;
    assert_eq!(status, StatusCode::OK, "every role but service reads plans");
    let (status, _) = call(
        &h,
        &auditor,
        Method::DELETE,
        &format!("{base}/v1/plans/pro"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // ---- a tenant registers and lands on the default (free) plan --------------------------
    h.register_account(40_000_001).await;
    let app = h
        .register_app(api, "secret-0123456789abcdef", "secret-0123456789abcdef")
        .await;
    let tenant = h.install(api, &app, 40_000_001).await;
    // Usage, quotas and plan changes of this tenant: a service key bound to its app (the
    // unbound one above acts on no app).
    let unbound_service = service;
    let service = h.service_key.clone().expect("a key bound to the app");
    let (status, body) = call(
        &h,
        &unbound_service,
        Method::GET,
        &format!("{base}/v1/installations/{tenant}/quota"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["reason"], "app_not_bound");
    let plan_url = format!("{base}/v1/installations/{tenant}/plan");
    wait_until(
        "the tenant is on the default plan",
        Duration::from_secs(20),
        || {
            let h = &h;
            let (admin, url) = (admin.clone(), plan_url.clone());
            async move { call(h, &admin, Method::GET, &url, None).await.0 == StatusCode::OK }
        },
    )
    .await;
    let (_, subscription) = call(&h, &admin, Method::GET, &plan_url, None).await;
    assert_eq!(subscription["plan_code"], "free");
    assert_eq!(subscription["started_paid"], false);

    // ---- usage and quota ------------------------------------------------------------------
    let usage_url = format!("{base}/v1/usage");
    let report = |quantity: u64, key: &str| json!({"installation_id": tenant, "metric": "requests", "quantity": quantity, "idempotency_key": key});
    let (status, body) = call(
        &h,
        &service,
        Method::POST,
        &usage_url,
        Some(report(3, "r1")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], false);
    assert_eq!(body["quota"]["within_limits"], true);
    assert_eq!(
        body["quota"]["limits"]["requests_per_month"]["remaining"],
        2
    );
    let (_, body) = call(
        &h,
        &service,
        Method::POST,
        &usage_url,
        Some(report(3, "r1")),
    )
    .await;
    assert_eq!(
        body["duplicate"], true,
        "a retried report is not counted again"
    );
    assert_eq!(body["quota"]["usage"]["requests"], 3);
    let (status, body) = call(
        &h,
        &service,
        Method::POST,
        &usage_url,
        Some(report(4, "r1")),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a reused key with other content: {body}"
    );
    let (status, body) = call(
        &h,
        &service,
        Method::POST,
        &usage_url,
        Some(report(2, "r2")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let quota = &body["quota"];
    assert_eq!(quota["within_limits"], false);
    assert_eq!(quota["exceeded"], json!(["requests_per_month"]));
    assert_eq!(quota["upgrade_offer"]["code"], "pro");
    let quota_url = format!("{base}/v1/installations/{tenant}/quota");
    let (status, quota) = call(&h, &service, Method::GET, &quota_url, None).await;
    assert_eq!(status, StatusCode::OK, "{quota}");
    assert_eq!(
        quota["limits"]["requests_per_month"],
        json!({"limit": 5, "used": 5, "remaining": 0, "exceeded": true})
    );
    assert!(
        quota["usage"]["token_handouts"].is_u64(),
        "hand-outs are counted too: {quota}"
    );
    let (status, _) = call(&h, &auditor, Method::GET, &quota_url, None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "quotas are for the app's backend"
    );
    let reached: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'UsageLimitReached'",
    )
    .bind(&tenant)
    .fetch_one(&h.pool)
    .await
    .expect("count");
    assert_eq!(
        reached, 1,
        "reaching a limit is one event per limit and month"
    );

    // ---- upgrade after the limit ----------------------------------------------------------
    let (status, body) = call(
        &h,
        &service,
        Method::PUT,
        &plan_url,
        Some(json!({"plan_code": "pro", "trigger": "limit_reached"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(body["subscription"]["plan_code"], "pro");
    let (status, _) = call(
        &h,
        &service,
        Method::PUT,
        &plan_url,
        Some(json!({"plan_code": "free", "trigger": "admin"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a service key does not speak for admins"
    );
    let (_, quota) = call(&h, &service, Method::GET, &quota_url, None).await;
    assert_eq!(quota["within_limits"], true, "{quota}");
    assert_eq!(quota["limits"]["requests_per_month"]["remaining"], 95);

    let overview_url = format!("{base}/v1/billing/overview?installation_id={tenant}");
    wait_until(
        "the overview shows the upgrade",
        Duration::from_secs(20),
        || {
            let h = &h;
            let (admin, url) = (admin.clone(), overview_url.clone());
            async move {
                let (_, o) = call(h, &admin, Method::GET, &url, None).await;
                o["recent_changes"][0]["to_plan"] == "pro"
            }
        },
    )
    .await;
    let (_, overview) = call(&h, &admin, Method::GET, &overview_url, None).await;
    let upgrade = &overview["recent_changes"][0];
    assert_eq!(upgrade["from_plan"], "free");
    assert_eq!(upgrade["direction"], "upgrade");
    assert_eq!(upgrade["trigger"], "limit_reached");
    assert_eq!(upgrade["amount"]["display"], "10.00 USD");
    assert_eq!(overview["registrations"]["free"], 1);
    assert_eq!(overview["registrations"]["converted"], 1);
    assert_eq!(overview["registrations"]["conversion_rate_percent"], 100.0);
    assert_eq!(overview["usage"]["requests_this_month"], 5);
    assert_eq!(overview["usage"]["requests_limit"], 100);
    assert_eq!(overview["usage"]["peak_day"]["quantity"], 5);
    assert_eq!(overview["limits_reached"][0]["offer_plan_code"], "pro");
    assert_eq!(overview["counts"]["free"], 1);
    assert_eq!(overview["counts"]["premium"], 1);
    assert_eq!(overview["counts"]["recurring"], 1);

    // ---- price change: a new version; the subscriber keeps its price until renewal ---------
    let (status, body) = call(
        &h,
        &admin,
        Method::PATCH,
        &format!("{base}/v1/plans/pro"),
        Some(json!({"price": {"amount_minor": 1500, "currency": "USD"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["versions"].as_array().map(Vec::len), Some(2));
    let (_, subscription) = call(&h, &admin, Method::GET, &plan_url, None).await;
    assert_eq!(subscription["plan_version"], 1);
    assert_eq!(subscription["current_plan_version"], 2);
    assert_eq!(subscription["price"]["amount_minor"], 1000);

    // ---- a lowered limit is announced; the subscriber keeps the old one meanwhile ---------
    let (status, body) = call(
        &h,
        &admin,
        Method::PATCH,
        &format!("{base}/v1/plans/pro"),
        Some(json!({"limits": {"requests_per_month": 50}, "notice_days": 14})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["limits"]["requests_per_month"], 50);
    assert_eq!(body["notices"].as_array().map(Vec::len), Some(1));
    let (_, quota) = call(&h, &service, Method::GET, &quota_url, None).await;
    assert_eq!(
        quota["limits"]["requests_per_month"]["limit"], 100,
        "grace period"
    );

    // ---- deleting or archiving a plan with subscribers is refused, naming how many --------
    let (status, body) = call(
        &h,
        &admin,
        Method::DELETE,
        &format!("{base}/v1/plans/pro"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(message(&body).contains("1 subscriber(s)"), "{body}");
    let (status, body) = call(
        &h,
        &admin,
        Method::PUT,
        &format!("{base}/v1/plans/pro/status"),
        Some(json!({"status": "archived"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // ---- hidden plans take no new subscribers ---------------------------------------------
    let (status, _) = call(
        &h,
        &admin,
        Method::PUT,
        &format!("{base}/v1/plans/free/status"),
        Some(json!({"status": "inactive"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &h,
        &admin,
        Method::PUT,
        &plan_url,
        Some(json!({"plan_code": "free"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        message(&body).contains("takes no new subscribers"),
        "{body}"
    );

    // ---- move the tenant, then the empty plan can go; its code stays taken -----------------
    let basic = json!({
        "code": "basic", "name": "Basic", "type": "free",
        "price": {"amount_minor": 0, "currency": "USD"}, "limits": {"requests_per_month": 1000}
    });
    let (status, _) = call(
        &h,
        &admin,
        Method::POST,
        &format!("{base}/v1/plans"),
        Some(basic),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(
        &h,
        &admin,
        Method::PUT,
        &plan_url,
        Some(json!({"plan_code": "basic"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(
        &h,
        &admin,
        Method::DELETE,
        &format!("{base}/v1/plans/pro"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = call(
        &h,
        &admin,
        Method::GET,
        &format!("{base}/v1/plans/pro"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["deleted_at"].is_string(), "{body}");
    let (status, _) = call(
        &h,
        &admin,
        Method::POST,
        &format!("{base}/v1/plans"),
        Some(pro),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a deleted plan's code is never reused"
    );
    wait_until(
        "the plan list reflects the deletion",
        Duration::from_secs(20),
        || {
            let h = &h;
            let (admin, url) = (admin.clone(), format!("{base}/v1/plans"));
            async move {
                let (_, list) = call(h, &admin, Method::GET, &url, None).await;
                list["counts"] == json!({"total": 2, "free": 2, "premium": 0, "recurring": 0})
            }
        },
    )
    .await;

    // ---- the dashboard's tables: plan code on the tenant, the limit in the activity log ---
    wait_until(
        "the tenant row shows its plan",
        Duration::from_secs(30),
        || {
            let pool = h.pool.clone();
            let tenant = tenant.clone();
            async move {
                sqlx::query_scalar::<_, Option<String>>(
                    "SELECT plan_code FROM rm_installations WHERE installation_id::text = $1",
                )
                .bind(&tenant)
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten()
                .flatten()
                    == Some("basic".to_string())
            }
        },
    )
    .await;
    wait_until(
        "the activity log shows the limit",
        Duration::from_secs(30),
        || {
            let pool = h.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM rm_activity WHERE event_type = 'UsageLimitReached'",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                    == 1
            }
        },
    )
    .await;

    // ---- replay equals live: the billing read models rebuilt from the events alone --------
    wait_until(
        "the billing projection applied every event",
        Duration::from_secs(30),
        || cursor_at_end(&h.pool, BILLING_PROJECTION_CURSOR),
    )
    .await;
    let live = billing_checksums(&h.pool).await;
    for (table, rows, _) in &live {
        assert!(*rows > 0, "{table} has rows to compare");
    }
    workers.stop(Duration::from_secs(30));
    sqlx::raw_sql(
        "TRUNCATE rm_plans, rm_subscriptions, rm_plan_changes, rm_limits_reached;
         UPDATE rm_installations SET plan_code = NULL;",
    )
    .execute(&h.pool)
    .await
    .expect("reset the billing read models");
    sqlx::query("DELETE FROM stream_cursors WHERE name = $1")
        .bind(BILLING_PROJECTION_CURSOR)
        .execute(&h.pool)
        .await
        .expect("reset the billing projection's cursor");
    let mut rebuilt = HkProcess::spawn(
        &hubkeeper_binary(),
        "workers-replay",
        &["worker", "all"],
        &workers_env,
        &h.env.path().join("logs"),
    );
    wait_until(
        "the billing read models are rebuilt",
        Duration::from_secs(60),
        || cursor_at_end(&h.pool, BILLING_PROJECTION_CURSOR),
    )
    .await;
    assert_eq!(
        billing_checksums(&h.pool).await,
        live,
        "the billing read models rebuilt from the events differ from the live ones"
    );
    rebuilt.stop(Duration::from_secs(30));

    h.scan_for_leaks(&SecretKind::ALL).await;
}

/// The billing read models: `(table, rows, md5 of every row)`.
async fn billing_checksums(pool: &PgPool) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for (table, rows) in [
        ("rm_plans", "SELECT t::text FROM rm_plans t"),
        ("rm_subscriptions", "SELECT t::text FROM rm_subscriptions t"),
        ("rm_plan_changes", "SELECT t::text FROM rm_plan_changes t"),
        (
            "rm_limits_reached",
            "SELECT t::text FROM rm_limits_reached t",
        ),
    ] {
        let (count, md5): (i64, Option<String>) = sqlx::query_as(&format!(
            "SELECT count(*), md5(string_agg(r, E'\\n' ORDER BY r)) FROM ({rows}) AS x(r)"
        ))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("checksum of {table}: {e}"));
        out.push((table.to_owned(), count, md5.unwrap_or_default()));
    }
    out
}
