//! The dashboard's charts in a real browser (Debian's headless Chromium through chromedriver)
//! against `hubkeeper up` and the HubSpot simulator.
//!
//! Data is made the way users make it: three accounts connect through the simulator's consent,
//! refreshes succeed and one fails at HubSpot, the app fetches tokens and reports usage, tenants
//! change plans, HubSpot delivers webhooks. Then every chart is opened and checked against the
//! event store (the source of truth, not the read model the series come from) and against the
//! figures the page shows beside it: the number of points, the totals, the limit line, the lead
//! time marker; the Overview's charts follow new activity without a reload; a bar of the activity
//! chart filters the list to its hour. The series endpoints refuse bad ranges and buckets with a
//! 400 naming the parameter. Screenshots go to test-artifacts/dashboard-charts/.
//!
//! Needs `chromium` and `chromedriver` (scripts/bootstrap.sh --browser installs them).

use std::collections::HashMap;
use std::time::Duration;

use hubkeeper_api::auth::{create_key_for_apps, Role};
use hubkeeper_sim::{ApproveRequest, DeliverRequest, FaultEndpoint, FaultMode, FaultRule};
use hubkeeper_testkit::{
    wait_until, DashboardStack, Page, SecretKind, SecretScan, SimulatedApp, TestEnv,
};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const CLIENT_ID: &str = "5b1f0d3e-7c2a-4e8b-9f61-3a2d4c5e6f72";
const CLIENT_SECRET: &str = "sim-secret-for-the-charts-browser-test-01";
const HUBS: [u64; 3] = [42_000_001, 42_000_002, 42_000_003];
const WEBHOOK_EVENTS: usize = 7;
const HANDOUTS: u64 = 5;
const REQUESTS_REPORTED: u64 = 30;
const SETTLE: Duration = Duration::from_secs(30);

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        self.ok(Method::GET, path, None).await
    }
}

/// What a chart on the page draws, read from its DOM.
#[derive(Debug)]
struct Drawn {
    points: usize,
    buckets: usize,
    sums: HashMap<String, i64>,
    dots: Vec<f64>,
    summary: String,
    legend: String,
    rule: Option<f64>,
    marker: bool,
    table_rows: usize,
}

const READ_CHART: &str = r#"
const f = document.getElementById(arguments[0]);
if (!f) return null;
const sums = {};
f.querySelectorAll('rect.chart-bar').forEach((r) => {
  const k = r.getAttribute('data-key');
  sums[k] = (sums[k] || 0) + Number(r.getAttribute('data-value'));
});
const rule = f.querySelector('line.chart-rule');
return {
  points: Number(f.getAttribute('data-points')),
  buckets: f.querySelectorAll('g.chart-bucket').length,
  sums,
  dots: [...f.querySelectorAll('circle.chart-dot')].map((c) => Number(c.getAttribute('data-value'))),
  summary: f.querySelector('.chart-summary').textContent,
  legend: f.querySelector('.chart-legend').textContent,
  rule: rule ? Number(rule.getAttribute('data-value')) : null,
  marker: !!f.querySelector('line.chart-marker'),
  table_rows: f.querySelectorAll('.chart-table tbody tr').length,
};
"#;

async fn drawn_when(page: &Page, id: &str, done: impl Fn(&Drawn) -> bool) -> Drawn {
    let script = READ_CHART.replace("arguments[0]", &format!("{id:?}"));
    let value = page
        .until_value(&format!("chart {id}"), &script, |v| {
            v.is_object() && done(&to_drawn(v))
        })
        .await;
    to_drawn(&value)
}

/// Scrolls a chart to the top of the window, for the screenshot.
async fn show(page: &Page, id: &str) {
    page.client
        .execute(
            "document.getElementById(arguments[0]).scrollIntoView({block: 'start'})",
            vec![json!(id)],
        )
        .await
        .unwrap_or_else(|e| panic!("scroll to {id}: {e}"));
}

async fn drawn(page: &Page, id: &str) -> Drawn {
    drawn_when(page, id, |_| true).await
}

fn to_drawn(v: &Value) -> Drawn {
    Drawn {
        points: v["points"].as_u64().unwrap_or(0) as usize,
        buckets: v["buckets"].as_u64().unwrap_or(0) as usize,
        sums: v["sums"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_i64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default(),
        dots: v["dots"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default(),
        summary: v["summary"].as_str().unwrap_or_default().to_string(),
        legend: v["legend"].as_str().unwrap_or_default().to_string(),
        rule: v["rule"].as_f64(),
        marker: v["marker"].as_bool().unwrap_or(false),
        table_rows: v["table_rows"].as_u64().unwrap_or(0) as usize,
    }
}

impl Drawn {
    fn sum(&self, key: &str) -> i64 {
        self.sums.get(key).copied().unwrap_or(0)
    }

    /// One `<g>` per point, one table row per point, as many as the API answered.
    fn has_points(&self, series: &Value) {
        let answered = series["points"].as_array().map_or(0, Vec::len);
        assert_eq!(self.points, answered, "{self:?}");
        assert_eq!(self.buckets, answered, "{self:?}");
        assert_eq!(self.table_rows, answered, "{self:?}");
    }

    /// The drawn sum of every count equals the API's total and the figure in the legend.
    fn has_totals(&self, series: &Value, keys: &[&str]) {
        for key in keys {
            let total = series["totals"][key].as_i64().unwrap_or(-1);
            assert_eq!(self.sum(key), total, "{key}: {self:?}");
            assert!(
                self.legend.contains(&format!("({total})")),
                "legend shows {key}'s total {total}: {}",
                self.legend
            );
        }
    }
}

/// Waits until the activity list's pager says "… of `total`".
async fn pager_total(page: &Page, total: i64) {
    let wanted = format!(" of {total}");
    page.until_value(
        &format!("the activity list counts {total} entries"),
        "const l = document.querySelector('#activity-list .pager-label'); return l ? l.textContent : null",
        |v| v.as_str().is_some_and(|t| t.ends_with(&wanted)),
    )
    .await;
}

async fn events_of_type(env: &TestEnv, event_type: &str, aggregate: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = $1
            AND ($2::text IS NULL OR aggregate_id = $2)",
    )
    .bind(event_type)
    .bind(aggregate)
    .fetch_one(&env.pool())
    .await
    .expect("count events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn charts_draw_what_happened_and_match_the_figures_beside_them() {
    let stack = DashboardStack::with_simulator(SimulatedApp {
        app_id: 1_000_003,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        name: "Hubkeeper charts browser test",
        accounts: HUBS
            .iter()
            .map(|&hub_id| {
                SimulatedApp::account(
                    hub_id,
                    &format!("hub{hub_id}.example.com"),
                    hub_id * 10 + 1,
                    &format!("admin@hub{hub_id}.example.com"),
                )
            })
            .collect(),
    })
    .start()
    .await;
    let (env, base) = (&stack.env, stack.base.clone());
    let control = stack.sim().control().expect("simulator control");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let api = Api {
        http: http.clone(),
        base: base.clone(),
        key: stack.admin_key.clone(),
    };

    // ---- the series endpoints refuse what they cannot answer ---------------------------------
    for (path, parameter) in [
        (
            "/v1/stats/refreshes?from=2026-12-06T10:00:00Z&to=2026-12-06T09:00:00Z",
            "from",
        ),
        ("/v1/stats/activity?bucket=2h", "bucket"),
        ("/v1/stats/registrations?bucket=1m", "bucket"),
        (
            "/v1/stats/refreshes?from=2020-01-01T00:00:00Z&bucket=1m",
            "bucket",
        ),
        ("/v1/stats/usage?bucket=1h", "bucket"),
        ("/v1/stats/connected?installation_id=x", "installation_id"),
        (
            "/v1/stats/refreshes?installation_id=not-a-uuid",
            "installation_id",
        ),
        ("/v1/stats/webhooks?to=yesterday", "to"),
    ] {
        let (status, body) = api.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }

    // ---- plans, the app, three accounts connected through HubSpot's consent -------------------
    api.ok(
        Method::POST,
        "/v1/plans",
        Some(json!({
            "code": "free", "name": "Free", "type": "free",
            "price": {"amount_minor": 0, "currency": "USD"},
            "features": ["100 requests a month"], "limits": {"requests_per_month": 100}
        })),
    )
    .await;
    api.ok(
        Method::POST,
        "/v1/plans",
        Some(json!({
            "code": "pro", "name": "Pro", "type": "recurring", "interval": "monthly",
            "price": {"amount_minor": 1000, "currency": "USD"}, "features": ["More"],
            "limits": {"requests_per_month": 10000}
        })),
    )
    .await;
    let app = api
        .ok(
            Method::POST,
            "/v1/apps",
            Some(json!({
                "label": "Charts app", "environment": "development", "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET, "redirect_uri": format!("{base}/oauth/callback"),
                "scopes": "crm.objects.contacts.read oauth"
            })),
        )
        .await;
    let app_id = app["app_id"]
        .as_str()
        .or_else(|| app["id"].as_str())
        .expect("app id")
        .to_string();
    // The app's backend: a service key bound to the app fetches tokens and reports usage.
    let backend = Api {
        http: http.clone(),
        base: base.clone(),
        key: create_key_for_apps(
            &env.pool(),
            "charts backend",
            Role::Service,
            &[app_id.parse().expect("app id")],
            "test",
        )
        .await
        .expect("service key")
        .token
        .expose_secret()
        .to_string(),
    };
    let mut codes = Vec::new();
    for hub_id in HUBS {
        let install = http
            .get(format!("{base}/oauth/{app_id}/install"))
            .send()
            .await
            .expect("install");
        assert!(install.status().is_redirection(), "{}", install.status());
        let location = install.headers()["location"].to_str().expect("location");
        let params: HashMap<String, String> = url::Url::parse(location)
            .expect("consent URL")
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let approval = control
            .approve(&ApproveRequest {
                client_id: params["client_id"].clone(),
                redirect_uri: params["redirect_uri"].clone(),
                scopes: params["scope"].split(' ').map(str::to_string).collect(),
                optional_scopes: Vec::new(),
                state: params.get("state").cloned(),
                hub_id,
                user: None,
                deny: false,
            })
            .await
            .expect("consent");
        if let Some(code) = &approval.code {
            codes.push(code.expose_secret().to_string());
        }
        let query = url::Url::parse(approval.location.expose_secret())
            .expect("callback URL")
            .query()
            .unwrap_or_default()
            .to_string();
        let callback = http
            .get(format!("{base}/oauth/callback?{query}"))
            .send()
            .await
            .expect("callback");
        assert!(
            callback.status().is_redirection() || callback.status().is_success(),
            "callback: {}",
            callback.status()
        );
    }
    let mut ids = Vec::new();
    for hub_id in HUBS {
        let path = format!("/v1/installations?hub_id={hub_id}");
        wait_until("the installation is projected", SETTLE, || async {
            api.get(&path).await["items"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .await;
        let list = api.get(&path).await;
        ids.push(
            list["items"][0]["installation_id"]
                .as_str()
                .expect("installation id")
                .to_string(),
        );
    }
    for id in &ids {
        let path = format!("/v1/installations/{id}/plan");
        wait_until("the tenant is on the default plan", SETTLE, || async {
            api.call(Method::GET, &path, None).await.0 == StatusCode::OK
        })
        .await;
    }

    // ---- refreshes: two succeed, one fails at HubSpot ----------------------------------------
    for id in &ids[..2] {
        api.ok(
            Method::POST,
            &format!("/v1/installations/{id}/refresh"),
            Some(json!({})),
        )
        .await;
    }
    control
        .inject_fault(
            &FaultRule::new(
                FaultEndpoint::Token,
                FaultMode::ErrorRate {
                    status: 503,
                    rate: 1.0,
                },
            )
            .for_account(HUBS[2]),
        )
        .await
        .expect("fault");
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/installations/{}/refresh", ids[2]),
            Some(json!({})),
        )
        .await;
    assert!(!status.is_success(), "HubSpot answered 503: {body}");
    control.clear_faults().await.expect("clear faults");
    let failed = events_of_type(env, "InstallationRefreshFailed", None).await
        + events_of_type(env, "InstallationReauthorizationRequired", None).await;
    assert!(failed >= 1, "the failure is an event");

    // ---- hand-outs, usage, plan changes, webhooks --------------------------------------------
    for _ in 0..HANDOUTS {
        backend
            .get(&format!("/v1/installations/{}/token", ids[0]))
            .await;
    }
    backend
        .ok(
            Method::POST,
            "/v1/usage",
            Some(json!({
                "installation_id": ids[0], "metric": "requests", "quantity": REQUESTS_REPORTED,
                "idempotency_key": "charts-1"
            })),
        )
        .await;
    for (id, plan) in [(&ids[0], "pro"), (&ids[2], "pro"), (&ids[2], "free")] {
        api.ok(
            Method::PUT,
            &format!("/v1/installations/{id}/plan"),
            Some(json!({"plan_code": plan, "trigger": "admin"})),
        )
        .await;
    }
    let mut delivery = DeliverRequest::new(&format!("{base}/webhooks/hubspot/{app_id}"), CLIENT_ID)
        .generate(WEBHOOK_EVENTS, HUBS[0]);
    delivery.wait = true;
    control.deliver_webhooks(&delivery).await.expect("webhooks");
    let handouts_path = format!("/v1/stats/handouts?installation_id={}", ids[0]);
    wait_until("hand-outs are counted", SETTLE, || async {
        api.get(&handouts_path).await["totals"]["handouts"] == json!(HANDOUTS)
    })
    .await;
    wait_until("webhook events are recorded", SETTLE, || async {
        api.get("/v1/stats/webhooks").await["totals"]["received"] == json!(WEBHOOK_EVENTS)
    })
    .await;
    wait_until("plan changes are projected", SETTLE, || async {
        api.get("/v1/stats/plan-changes").await["totals"]["downgrades"] == json!(1)
    })
    .await;
    let refreshed = events_of_type(env, "InstallationTokensRefreshed", None).await;
    let refresh_failed = events_of_type(env, "InstallationRefreshFailed", None).await;
    let reauth = events_of_type(env, "InstallationReauthorizationRequired", None).await;
    wait_until("refreshes are projected", SETTLE, || async {
        let s = api.get("/v1/stats/refreshes").await;
        s["totals"]["succeeded"] == json!(refreshed)
            && s["totals"]["failed"] == json!(refresh_failed)
            && s["totals"]["needs_reauthorization"] == json!(reauth)
    })
    .await;
    assert!(refreshed >= 2, "two refreshes succeeded");

    // ---- the browser ---------------------------------------------------------------------------
    let (browser, mut page) = stack.admin_browser(1366, 1100, "dashboard-charts").await;

    // Overview: refreshes, expiries ahead with the lead time, connected accounts, webhooks.
    let series = api.get("/v1/stats/refreshes").await;
    let chart = drawn(&page, "chart-refreshes").await;
    chart.has_points(&series);
    assert_eq!(chart.points, 24, "24 hours by hour");
    chart.has_totals(&series, &["succeeded", "failed", "needs_reauthorization"]);
    assert_eq!(chart.sum("succeeded"), refreshed);
    assert_eq!(chart.sum("failed"), refresh_failed);
    assert_eq!(chart.sum("needs_reauthorization"), reauth);
    assert!(
        chart.summary.contains(&format!("{refreshed} succeeded")),
        "{}",
        chart.summary
    );

    let connected_now = api.get("/v1/installations?status=connected").await["total"]
        .as_i64()
        .expect("total");
    let series = api.get("/v1/stats/expiries").await;
    let chart = drawn(&page, "chart-expiries").await;
    chart.has_points(&series);
    assert_eq!(chart.points, 24, "two hours by five minutes");
    chart.has_totals(&series, &["expiring"]);
    assert_eq!(
        chart.sum("expiring"),
        connected_now,
        "every connected token expires within the simulator's 30 minutes"
    );
    assert!(chart.marker, "the refresh lead time is marked");

    let series = api.get("/v1/stats/connected").await;
    let chart = drawn(&page, "chart-connected").await;
    chart.has_points(&series);
    assert_eq!(chart.points, 30, "30 days by day");
    assert_eq!(
        chart.dots.last().copied(),
        Some(connected_now as f64),
        "today's point is the accounts connected now"
    );
    assert!(
        chart
            .summary
            .contains(&format!("{connected_now} accounts connected today")),
        "{}",
        chart.summary
    );

    let series = api.get("/v1/stats/webhooks").await;
    let chart = drawn(&page, "chart-webhooks").await;
    chart.has_points(&series);
    assert_eq!(chart.points, 60, "an hour by minute");
    chart.has_totals(&series, &["received"]);
    assert_eq!(chart.sum("received"), WEBHOOK_EVENTS as i64);
    assert!(!chart.dots.is_empty(), "latency is drawn where events were");
    page.dismiss_toasts().await;
    show(&page, "chart-refreshes").await;
    page.shot("overview").await;

    // The Overview follows new activity: one more refresh appears without a reload.
    api.ok(
        Method::POST,
        &format!("/v1/installations/{}/refresh", ids[1]),
        Some(json!({})),
    )
    .await;
    drawn_when(&page, "chart-refreshes", |d| {
        d.sum("succeeded") == refreshed + 1
    })
    .await;
    let refreshed = refreshed + 1;

    // Token Management: all accounts; Tenant details: one account.
    page.go("/dashboard/tokens").await;
    let year_ago = (chrono::Utc::now() - chrono::Duration::days(365))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let series = api
        .get(&format!("/v1/stats/refreshes?bucket=1d&from={year_ago}"))
        .await;
    let chart = drawn(&page, "chart-installation-refreshes").await;
    assert_eq!(chart.points, 14, "14 days by day");
    assert_eq!(chart.sum("succeeded"), refreshed);
    assert_eq!(
        series["totals"]["succeeded"],
        json!(refreshed),
        "every refresh of the past year is today's"
    );
    let chart = drawn(&page, "chart-installation-handouts").await;
    assert_eq!(chart.points, 30, "30 days by day");
    assert_eq!(chart.sum("handouts"), HANDOUTS as i64);
    show(&page, "chart-installation-refreshes").await;
    page.shot("tokens").await;

    page.go(&format!("/dashboard/users/{}", ids[0])).await;
    let own = events_of_type(env, "InstallationTokensRefreshed", Some(&ids[0])).await;
    let chart = drawn(&page, "chart-installation-refreshes").await;
    assert_eq!(chart.points, 14);
    assert_eq!(chart.sum("succeeded"), own, "only this account's refreshes");
    let chart = drawn(&page, "chart-installation-handouts").await;
    assert_eq!(chart.sum("handouts"), HANDOUTS as i64);
    page.until_text(".stat", "Token hand-outs in all").await;
    show(&page, "chart-installation-refreshes").await;
    page.shot("tenant-details").await;

    // Billing & Upgrades: usage this month against the limit, plan changes, registrations.
    page.go("/dashboard/billing").await;
    let series = api.get("/v1/stats/usage").await;
    let chart = drawn(&page, "chart-usage").await;
    chart.has_points(&series);
    chart.has_totals(&series, &["requests"]);
    assert_eq!(chart.sum("requests"), REQUESTS_REPORTED as i64);
    assert_eq!(chart.rule, None, "all tenants together have no limit");
    page.el("#usage-tenant")
        .await
        .select_by_value(&ids[0])
        .await
        .expect("choose a tenant");
    let chart = drawn_when(&page, "chart-usage", |d| d.rule.is_some()).await;
    let tenant = api
        .get(&format!("/v1/billing/overview?installation_id={}", ids[0]))
        .await;
    assert_eq!(
        chart.rule,
        tenant["usage"]["requests_limit"].as_f64(),
        "the limit the page states"
    );
    assert_eq!(chart.rule, Some(10000.0), "the Pro plan's limit");
    assert_eq!(chart.sum("requests"), REQUESTS_REPORTED as i64);
    let series = api.get("/v1/stats/plan-changes").await;
    let chart = drawn(&page, "chart-plan-changes").await;
    chart.has_points(&series);
    assert_eq!(chart.points, 12, "12 weeks by week");
    chart.has_totals(&series, &["upgrades", "downgrades"]);
    assert_eq!((chart.sum("upgrades"), chart.sum("downgrades")), (2, 1));
    let series = api.get("/v1/stats/registrations").await;
    let chart = drawn(&page, "chart-registrations").await;
    chart.has_points(&series);
    chart.has_totals(&series, &["free", "paid"]);
    assert_eq!((chart.sum("free"), chart.sum("paid")), (3, 0));
    assert_eq!(series["totals"]["conversions"], json!(2));
    let overview = api.get("/v1/billing/overview").await;
    let rate = overview["registrations"]["conversion_rate_percent"]
        .as_f64()
        .expect("rate");
    assert_eq!(chart.dots.last().copied(), Some(rate), "{chart:?}");
    assert!(
        chart
            .summary
            .contains(&format!("conversion rate now {rate}%")),
        "{}",
        chart.summary
    );
    page.until_text("#registrations", &format!("{rate}%")).await;
    show(&page, "chart-usage").await;
    page.shot("billing").await;
    show(&page, "chart-registrations").await;
    page.shot("billing-registrations").await;

    // Activity Logs: entries per hour by level; a bar lists its hour.
    page.go("/dashboard/activity").await;
    let series = api.get("/v1/stats/activity").await;
    let chart = drawn(&page, "chart-activity").await;
    chart.has_points(&series);
    let all = chart.sum("info") + chart.sum("warn") + chart.sum("error");
    let listed = api.get("/v1/activity?limit=1").await["total"]
        .as_i64()
        .expect("total");
    assert_eq!(all, listed, "every entry is in one bucket");
    assert!(chart.sum("warn") + chart.sum("error") >= 1, "the failure");
    pager_total(&page, listed).await;
    show(&page, "chart-activity").await;
    page.shot("activity").await;
    let last_hour: i64 = series["points"]
        .as_array()
        .and_then(|p| p.last())
        .map(|p| {
            ["info", "warn", "error"]
                .iter()
                .map(|k| p[*k].as_i64().unwrap_or(0))
                .sum()
        })
        .expect("a last bucket");
    page.click("#chart-activity g.chart-bucket:last-of-type")
        .await;
    pager_total(&page, last_hour).await;
    let from = page
        .until_value(
            "the hour is in the filter",
            "return document.getElementById('filter-from').value",
            |v| v.as_str().is_some_and(|s| !s.is_empty()),
        )
        .await;
    assert!(from.is_string());
    page.shot("activity-hour").await;
    page.assert_clean_console("on the chart pages", &[]).await;
    drop(browser);

    // Nothing secret in any table or in the process's log.
    let mut secrets = SecretScan::new();
    for code in &codes {
        secrets.add(SecretKind::Code, code);
    }
    stack.assert_no_secrets(secrets, &SecretKind::ALL).await;
}
