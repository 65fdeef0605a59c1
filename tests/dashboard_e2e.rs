//! The dashboard in a real browser: Debian's headless Chromium driven through chromedriver,
//! against `hubkeeper up` on a test Postgres/NATS with the HubSpot simulator.
//!
//! An admin logs in, adds and edits an app, connects a HubSpot account through the simulator's
//! consent page, sees it on Overview and Token Management, refreshes it, revokes it after
//! confirming, filters the activity log and logs out; an auditor then sees every page but every
//! action is refused. Each page is screenshotted (laptop and phone sizes) into
//! test-artifacts/dashboard/, and the browser's console must stay free of errors.
//!
//! Needs `chromium` and `chromedriver` (scripts/bootstrap.sh --browser installs them); without
//! them the test fails with that instruction rather than passing silently.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_testkit::{wait_until, DashboardStack, Page, SecretKind, SecretScan, SimulatedApp};
use reqwest::Method;
use secrecy::ExposeSecret;

const CLIENT_ID: &str = "5b1f0d3e-7c2a-4e8b-9f61-3a2d4c5e6f70";
const CLIENT_SECRET: &str = "sim-secret-for-the-browser-test-0123456789";
const HUB_ID: u64 = 40_000_001;
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_works_end_to_end_in_a_browser() {
    let started = Instant::now();
    let stack = DashboardStack::with_simulator(SimulatedApp {
        app_id: 1_000_001,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        name: "Hubkeeper browser test",
        accounts: vec![SimulatedApp::account(
            HUB_ID,
            "acme-demo.hubspot.com",
            7_000_001,
            "ada@acme-demo.example",
        )],
    })
    .start()
    .await;
    let (env, base, admin_key) = (&stack.env, &stack.base, &stack.admin_key);
    let auditor_key = create_key(&env.pool(), "browser auditor", Role::Auditor, "test")
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_string();

    let (browser, mut ui) = stack.browser(1366, 900, "dashboard").await;

    // --- login: a wrong key is explained, the right one opens the Overview ---
    ui.go("/").await;
    ui.heading("Log in to Hubkeeper").await;
    assert!(ui
        .client
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/dashboard/login"));
    ui.fill("#api-key", "my-password").await;
    ui.click("#login-submit").await;
    ui.until_text("#login-error", "start with hk_").await;
    ui.fill("#api-key", &format!("hk_ak0123456789ab_{}", "x".repeat(43)))
        .await;
    ui.click("#login-submit").await;
    ui.until_text("#login-error", "unknown or revoked").await;
    ui.shot("login-error").await;
    ui.fill("#api-key", admin_key).await;
    ui.click("#login-submit").await;
    ui.heading("Overview").await;
    ui.until_text(".whoami", "admin").await;
    // The only activity so far is the operator's own: the refused log-in and the log-in.
    ui.until_text(
        "#activity-feed",
        "logged in to the dashboard from 127.0.0.1",
    )
    .await;
    ui.until_text(
        "#activity-feed",
        "Failed log-in from 127.0.0.1: key ak0123456789ab",
    )
    .await;
    ui.dismiss_toasts().await;
    ui.shot("overview-empty").await;

    // --- apps: validation, add, edit ---
    ui.nav("App Management").await;
    ui.heading("App Management").await;
    ui.until_text(".state-empty", "No apps yet").await;
    ui.click("#add-app").await;
    ui.fill("#app-form input[name=label]", "Production EU")
        .await;
    ui.fill("#app-form input[name=client_id]", "not-a-client-id")
        .await;
    ui.fill("#app-form input[name=client_secret]", CLIENT_SECRET)
        .await;
    ui.fill("#app-form input[name=redirect_uri]", "ftp://example.com/cb")
        .await;
    ui.fill(
        "#app-form input[name=scopes]",
        "crm.objects.contacts.read oauth",
    )
    .await;
    ui.click("#app-form button[type=submit]").await;
    ui.until_text(".field-error", "client ID looks like").await;
    ui.until_text(".field-error", "must start with https://")
        .await;
    ui.shot("apps-add-validation").await;
    ui.fill("#app-form input[name=client_id]", CLIENT_ID).await;
    ui.fill(
        "#app-form input[name=redirect_uri]",
        &format!("{base}/oauth/callback"),
    )
    .await;
    ui.click("#app-form button[type=submit]").await;
    ui.toast("added").await;
    ui.until_text("#apps-list td", "Production EU").await;
    ui.dismiss_toasts().await;
    ui.click("button[data-action=edit]").await;
    ui.until_text("#app-form-title", "Edit").await;
    let client_id_readonly = ui
        .el("#app-form input[name=client_id]")
        .await
        .attr("readonly")
        .await
        .unwrap();
    assert!(
        client_id_readonly.is_some(),
        "the client id cannot be edited"
    );
    assert!(
        ui.client
            .find(Locator::Css("#app-form input[name=client_secret]"))
            .await
            .is_err(),
        "the client secret is not editable"
    );
    ui.fill("#app-form input[name=label]", "Production (EU)")
        .await;
    ui.fill(
        "#app-form textarea[name=description]",
        "Customers in the EU",
    )
    .await;
    ui.shot("apps-edit").await;
    ui.click("#app-form button[type=submit]").await;
    ui.toast("saved").await;
    ui.until_text("#apps-list td", "Production (EU)").await;
    ui.dismiss_toasts().await;
    ui.shot("apps").await;

    // --- only error codes Hubkeeper sends are shown from the URL ---
    ui.go("/dashboard/tokens?error=access_denied").await;
    ui.toast("cancelled on HubSpot").await;
    ui.dismiss_toasts().await;
    for crafted in [
        "Call%20%2B1-555-0100%20to%20unlock",
        "__proto__",
        "constructor",
    ] {
        ui.go(&format!("/dashboard/tokens?error={crafted}")).await;
        let shown = ui.toast("Connecting the account failed").await;
        assert!(shown.contains("Something went wrong"), "{crafted}: {shown}");
        for raw in ["555-0100", "proto", "constructor", "function"] {
            assert!(!shown.contains(raw), "{crafted} reached the page: {shown}");
        }
        ui.dismiss_toasts().await;
    }

    // --- connect an account through the simulator's consent page ---
    ui.nav("Token Management").await;
    ui.heading("Token Management").await;
    ui.until_text(".state-empty", "No HubSpot accounts are connected yet")
        .await;
    ui.click("#connect-account").await;
    // A connect session for the customer's reference, returning to Token Management.
    ui.fill("#connect-external-ref", "acme-demo").await;
    ui.shot("connect-session").await;
    ui.click("dialog button[value=confirm]").await;
    ui.until_text("body", "Connect app").await;
    ui.shot("simulator-consent").await;
    ui.click("input[name=account]").await;
    ui.click("button.approve").await;
    ui.heading("Token Management").await;
    ui.toast(&format!("HubSpot account {HUB_ID}")).await;
    let row = ui.until_text("#tokens-list tr", &HUB_ID.to_string()).await;
    assert!(row.text().await.unwrap().contains("Connected"));
    ui.shot("tokens-connected").await;
    ui.dismiss_toasts().await;

    // --- Overview shows it, with the live feed ---
    ui.nav("Overview").await;
    ui.heading("Overview").await;
    let tokens_stat = ui.until_text(".stat", "Active tokens").await;
    let value = tokens_stat
        .find(Locator::Css(".stat-value"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(value, "1", "one active token");
    ui.until_text("#activity-feed", &HUB_ID.to_string()).await;
    ui.until_text("#live-status", "Live").await;
    // Something happens elsewhere (a refresh through the API): the feed shows it without a
    // reload.
    let list = stack
        .ok(Method::GET, "/v1/installations", admin_key, None)
        .await;
    let installation_id = list["items"][0]["installation_id"]
        .as_str()
        .expect("the installation is listed");
    let (status, refreshed) = stack
        .call(
            Method::POST,
            &format!("/v1/installations/{installation_id}/refresh"),
            admin_key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    ui.until_text("#activity-feed li.fresh", "refreshed").await;
    ui.shot("overview").await;

    // --- refresh, then revoke after confirming ---
    ui.nav("Token Management").await;
    ui.until_text("#tokens-list tr", &HUB_ID.to_string()).await;
    ui.click("#tokens-list button[data-action=refresh]").await;
    let outcome = ui.toast("refreshed").await;
    assert!(outcome.contains("New expiry"), "{outcome}");
    ui.shot("tokens-refreshed").await;
    ui.dismiss_toasts().await;
    ui.click("#tokens-list button[data-action=revoke]").await;
    ui.until_text("dialog", "cannot be undone").await;
    let confirm = ui.el("dialog button[value=confirm]").await;
    assert!(
        confirm
            .prop("disabled")
            .await
            .unwrap()
            .is_some_and(|v| v == "true"),
        "confirming needs a reason and the hub id"
    );
    ui.fill("#confirm-reason", "Customer cancelled").await;
    ui.fill("#confirm-type", &HUB_ID.to_string()).await;
    ui.shot("tokens-revoke-confirm").await;
    ui.click("dialog button[value=confirm]").await;
    ui.toast("revoked").await;
    ui.until_text("#tokens-list tr", "Revoked").await;
    ui.shot("tokens-revoked").await;
    ui.dismiss_toasts().await;

    // --- tenants and one tenant's details ---
    ui.nav("User Management").await;
    ui.heading("User Management").await;
    ui.until_text("#users-list tr", "acme-demo.hubspot.com")
        .await;
    ui.shot("users").await;
    ui.click("#users-list a[href^='/dashboard/users/']").await;
    ui.heading(&format!("Hub {HUB_ID}")).await;
    ui.until_text(".card", "Granted scopes").await;
    ui.until_text(".chip", "crm.objects.contacts.read").await;
    ui.until_text(".card", "Tokens revoked").await;
    ui.until_text(".card", "Customer cancelled").await;
    ui.shot("user-details").await;

    // --- activity log filters ---
    // An event this version cannot read (stored by a newer or broken writer) is an error line:
    // the error filter then has something to show.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('app', $1, 1, 'AppUpdated', '1.0', '{\"AppUpdated\": {\"label\": 7}}',
                 '{\"actor\": \"key:akadmin0000001\"}')",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .execute(&env.pool())
    .await
    .expect("store an unreadable event");
    wait_until("the unreadable event is projected", WAIT, || async {
        let errors = stack
            .ok(Method::GET, "/v1/activity?level=error", admin_key, None)
            .await;
        errors["total"].as_u64().unwrap_or(0) > 0
    })
    .await;
    ui.nav("Activity Logs").await;
    ui.heading("Activity Logs").await;
    ui.until_text("#activity-list td", "revoked").await;
    let app_option = ui
        .el("#filter-app option:nth-child(2)")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    ui.el("#filter-level")
        .await
        .select_by_value("error")
        .await
        .unwrap();
    ui.click("#activity-filters button[type=submit]").await;
    ui.settled("#activity-list").await;
    assert!(ui
        .client
        .current_url()
        .await
        .unwrap()
        .query()
        .unwrap_or("")
        .contains("level=error"));
    let levels = ui
        .client
        .find_all(Locator::Css("#activity-list td[data-label=Level]"))
        .await
        .unwrap();
    assert!(
        !levels.is_empty(),
        "the error filter lists the errors on record"
    );
    for cell in levels {
        assert_eq!(
            cell.text().await.unwrap(),
            "Error",
            "only errors are listed"
        );
    }
    ui.el("#filter-level")
        .await
        .select_by_value("info")
        .await
        .unwrap();
    ui.el("#filter-app")
        .await
        .select_by_value(&app_option)
        .await
        .unwrap();
    ui.click("#activity-filters button[type=submit]").await;
    ui.until_text("#activity-list td", "Info").await;
    let query = ui
        .client
        .current_url()
        .await
        .unwrap()
        .query()
        .unwrap_or("")
        .to_string();
    assert!(
        query.contains("level=info") && query.contains("app_id="),
        "{query}"
    );
    ui.shot("activity-filtered").await;

    // --- the pages without data of their own yet, and settings ---
    ui.nav("Pricing Models").await;
    ui.until_text("main", "Pricing").await;
    ui.shot("pricing").await;
    ui.nav("Billing & Upgrades").await;
    ui.until_text("main", "Billing").await;
    ui.shot("billing").await;
    ui.nav("Settings").await;
    ui.until_text("#server-config", "HK_BIND").await;
    let settings = ui.el("#server-config").await.text().await.unwrap();
    assert!(
        settings.contains("set (secret, not shown)"),
        "secrets are masked"
    );
    assert!(
        !settings.contains(&env.database_url()),
        "no database URL on the page"
    );
    ui.shot("settings").await;

    // --- a phone-sized screen: the menu folds, tables become cards ---
    ui.client.set_window_size(390, 844).await.unwrap();
    nav_mobile(&ui, "Overview").await;
    ui.heading("Overview").await;
    ui.shot("phone-overview").await;
    nav_mobile(&ui, "Token Management").await;
    ui.until_text("#tokens-list", "Revoked").await;
    ui.shot("phone-tokens").await;
    ui.client.set_window_size(1366, 900).await.unwrap();
    let sim_favicon = format!("{}/favicon.ico", stack.sim().base_url);
    ui.assert_clean_console(
        "during the admin's session",
        &[
            "/auth/login - Failed to load resource: the server responded with a status of 401",
            // The simulator's consent page (not ours) has no icon.
            &sim_favicon,
        ],
    )
    .await;

    // --- logout ---
    ui.click("#logout").await;
    ui.heading("Log in to Hubkeeper").await;
    ui.go("/dashboard/tokens").await;
    ui.heading("Log in to Hubkeeper").await;

    // --- an auditor sees everything and can change nothing ---
    ui.fill("#api-key", &auditor_key).await;
    ui.click("#login-submit").await;
    ui.heading("Token Management").await;
    ui.until_text("#tokens-list tr", &HUB_ID.to_string()).await;
    for action in ["refresh", "revoke"] {
        let css = format!("#tokens-list button[data-action={action}]");
        assert!(
            ui.is_disabled(&css).await,
            "{action} is disabled for auditors"
        );
        let title = ui
            .el(&css)
            .await
            .attr("title")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(title.contains("auditor"), "the reason is given: {title}");
    }
    ui.shot("auditor-tokens").await;
    ui.nav("App Management").await;
    ui.until_text("#apps-list td", "Production (EU)").await;
    assert!(ui.is_disabled("#add-app").await);
    assert!(ui.is_disabled("button[data-action=edit]").await);
    assert!(ui.is_disabled("button[data-action=delete]").await);
    ui.shot("auditor-apps").await;
    ui.nav("User Management").await;
    ui.until_text("#users-list tr", "acme-demo").await;
    ui.nav("Activity Logs").await;
    ui.until_text("#activity-list td", "revoked").await;
    // The server refuses the auditor whatever the page allows: every change, with the session's
    // own CSRF token, from inside the page.
    let auditor_target: String = ui
        .client
        .execute(
            "return fetch('/v1/installations').then(r => r.json()).then(d => d.items[0].installation_id)",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let app_id = app_option;
    let attempts = serde_json::json!([
        [
            "POST",
            format!("/v1/installations/{auditor_target}/refresh")
        ],
        ["POST", format!("/v1/installations/{auditor_target}/revoke")],
        [
            "POST",
            format!("/v1/installations/{auditor_target}/disconnect")
        ],
        ["POST", "/v1/apps"],
        ["PATCH", format!("/v1/apps/{app_id}")],
        ["DELETE", format!("/v1/apps/{app_id}")],
    ]);
    let attempts_made = attempts.as_array().map_or(0, Vec::len);
    let statuses = ui
        .client
        .execute_async(
            r#"const [attempts, done] = arguments;
               fetch('/auth/me').then(r => r.json()).then(async (me) => {
                 const out = [];
                 for (const [method, url] of attempts) {
                   const r = await fetch(url, { method, headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrf_token }, body: JSON.stringify({ reason: 'auditor test', label: 'x' }) });
                   const body = await r.json();
                   out.push([method + ' ' + url, r.status, body.error && body.error.code]);
                 }
                 done(out);
               });"#,
            vec![attempts],
        )
        .await
        .unwrap();
    let statuses = statuses.as_array().unwrap();
    assert_eq!(
        statuses.len(),
        attempts_made,
        "every attempt answered: {statuses:?}"
    );
    for attempt in statuses {
        assert_eq!(attempt[1], 403, "auditor: {attempt}");
        assert_eq!(attempt[2], "forbidden", "auditor: {attempt}");
    }
    ui.assert_clean_console("during the auditor's session", &["status of 403"])
        .await;

    let screenshots = ui.screenshots();
    ui.client.close().await.unwrap();
    drop(browser);

    // Nothing secret in any table or in the process's log.
    stack
        .assert_no_secrets(SecretScan::new(), &SecretKind::ALL)
        .await;
    eprintln!(
        "browser test: {} screenshots in test-artifacts/dashboard, {:?}",
        screenshots,
        started.elapsed()
    );
}

/// On a phone the navigation sits behind the menu button.
async fn nav_mobile(ui: &Page, label: &str) {
    ui.click("#nav-toggle").await;
    ui.until_text("#nav a", label).await;
    ui.nav(label).await;
}
