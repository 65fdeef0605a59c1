//! The Pricing Models, Billing & Upgrades and Settings pages in a real browser (Debian's
//! headless Chromium through chromedriver) against `hubkeeper up` and the HubSpot simulator: an
//! admin adds a free and a paid plan through the form, sees them counted and listed, sees the
//! paid plan on the billing page, changes the rate limit and runs the integration self-test
//! from the Settings page. Screenshots go to test-artifacts/dashboard-billing/; the browser's
//! console must stay free of errors.
//!
//! Needs `chromium` and `chromedriver` (scripts/bootstrap.sh --browser installs them).

use hubkeeper_testkit::{DashboardStack, SecretKind, SecretScan, SimulatedApp};

const CLIENT_ID: &str = "5b1f0d3e-7c2a-4e8b-9f61-3a2d4c5e6f71";
const CLIENT_SECRET: &str = "sim-secret-for-the-billing-browser-test-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pricing_billing_and_settings_pages_work_in_a_browser() {
    let stack = DashboardStack::with_simulator(SimulatedApp {
        app_id: 1_000_002,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        name: "Hubkeeper billing browser test",
        accounts: vec![SimulatedApp::account(
            40_000_001,
            "acme-demo.hubspot.com",
            7_000_001,
            "ada@acme-demo.example",
        )],
    })
    .start()
    .await;
    let (base, admin_key) = (&stack.base, &stack.admin_key);
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/v1/apps"))
        .bearer_auth(admin_key)
        .json(&serde_json::json!({
            "label": "Browser test app", "environment": "development", "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "redirect_uri": format!("{base}/oauth/callback"),
            "scopes": "crm.objects.contacts.read oauth"
        }))
        .send()
        .await
        .expect("create app");
    assert!(created.status().is_success(), "{:?}", created.text().await);

    let (browser, mut ui) = stack.admin_browser(1366, 1000, "dashboard-billing").await;

    // Pricing Models: add a free plan and a paid one through the form.
    ui.go("/dashboard/pricing").await;
    ui.until_text(".state-empty", "No plans yet").await;
    ui.click("#add-plan").await;
    ui.fill("#plan-form input[name=code]", "starter").await;
    ui.fill("#plan-form input[name=name]", "Starter").await;
    ui.fill(
        "#plan-form textarea[name=features]",
        "100 requests/month\nStandard support",
    )
    .await;
    ui.fill("#plan-form input[name=requests_per_month]", "100")
        .await;
    ui.shot("pricing-add-free").await;
    ui.click("#plan-form button[type=submit]").await;
    ui.until_text("#plans-list td", "starter").await;
    ui.click("#add-plan").await;
    ui.fill("#plan-form input[name=code]", "pro").await;
    ui.fill("#plan-form input[name=name]", "Pro").await;
    ui.el("#plan-form select[name=type]")
        .await
        .select_by_value("recurring")
        .await
        .expect("choose the recurring type");
    ui.fill("#plan-form input[name=price]", "10.00").await;
    ui.fill(
        "#plan-form textarea[name=features]",
        "Unlimited requests\nPriority support",
    )
    .await;
    ui.click("#plan-form button[type=submit]").await;
    ui.until_text("#plans-list td", "10.00 USD / month").await;
    ui.until_text("#plan-counts", "Premium plans\n1").await;
    ui.shot("pricing").await;
    let plans: serde_json::Value = http
        .get(format!("{base}/v1/plans/pro"))
        .bearer_auth(admin_key)
        .send()
        .await
        .expect("plan")
        .json()
        .await
        .expect("json");
    assert_eq!(
        plans["price"]["amount_minor"], 1000,
        "10.00 typed is 1000 cents"
    );
    assert_eq!(plans["interval"], "monthly");

    // Billing & Upgrades: the paid plan is on offer.
    ui.go("/dashboard/billing").await;
    ui.until_text(".plan-card", "Pro").await;
    ui.until_text("#registrations .stat", "Conversion rate")
        .await;
    ui.until_text("#recent-upgrades", "No upgrade history yet")
        .await;
    ui.shot("billing").await;

    // Settings: change the rate limit, run the self-test.
    ui.go("/dashboard/settings").await;
    ui.until_text("#server-config", "HK_BIND").await;
    ui.fill("#rate-limit-settings input[name=max_per_ip]", "20")
        .await;
    ui.click("#rate-limit-settings button").await;
    ui.until_text(".toast", "Rate limiting saved").await;
    ui.click("#run-selftest").await;
    ui.until_text("#selftest-report", "Passed").await;
    ui.until_text("#selftest-report td", "Rate-limit enforcement")
        .await;
    ui.shot("settings").await;
    let settings: serde_json::Value = http
        .get(format!("{base}/v1/settings"))
        .bearer_auth(admin_key)
        .send()
        .await
        .expect("settings")
        .json()
        .await
        .expect("json");
    assert_eq!(settings["values"]["oauth_rate_limit"]["max_per_ip"], 20);
    ui.assert_clean_console("on the billing pages", &[]).await;
    drop(browser);

    // Nothing secret in any table or in the process's log.
    stack
        .assert_no_secrets(SecretScan::new(), &SecretKind::ALL)
        .await;
}
