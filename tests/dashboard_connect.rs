//! A connect session in a real browser (headless Chromium through chromedriver), against
//! `hubkeeper up`, the HubSpot simulator and a tiny HTTP server that plays the app's return URL:
//! the app's backend creates a session, the customer's browser opens its link, approves on the
//! simulator's consent page and lands on the app's page with `installation_id`, `external_ref` and
//! `status=connected`; opening the used link again shows the public failure page, never the
//! admin login. Screenshots go to test-artifacts/dashboard-connect/.
//!
//! Needs `chromium` and `chromedriver` (scripts/bootstrap.sh --browser installs them).

use std::collections::HashMap;

use axum::extract::RawQuery;
use axum::response::Html;
use axum::routing::get;
use hubkeeper_api::auth::{create_key_for_apps, Role};
use hubkeeper_testkit::{DashboardStack, SimulatedApp};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::json;

const CLIENT_ID: &str = "6c2e1f4a-8d3b-4f9c-a072-4b3e5d6f7a81";
const CLIENT_SECRET: &str = "sim-secret-for-the-connect-test-0123456789";
const HUB_ID: u64 = 40_000_007;

/// The app's own page behind the return URL: shows the query it was reached with.
async fn app_page(RawQuery(query): RawQuery) -> Html<String> {
    let query = query.unwrap_or_default().replace(['<', '>', '&', '"'], "_");
    Html(format!(
        "<!doctype html><title>App</title><h1 id=\"app-done\">Back in the app</h1><p id=\"query\">{query}</p>"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connect_session_returns_the_browser_to_the_apps_return_url() {
    let stack = DashboardStack::with_simulator(SimulatedApp {
        app_id: 1_000_007,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        name: "Hubkeeper connect test",
        accounts: vec![SimulatedApp::account(
            HUB_ID,
            "globex.hubspot.com",
            7_000_007,
            "hank@globex.example",
        )],
    })
    .public_url()
    .start()
    .await;
    let (base, admin) = (&stack.base, &stack.admin_key);

    // The app's return URL: a local server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let router = axum::Router::new().route("/app/hubspot/{*rest}", get(app_page));
        axum::serve(listener, router).await.ok();
    });

    let app = stack
        .ok(
            Method::POST,
            "/v1/apps",
            admin,
            Some(json!({
                "label": "Globex sync", "environment": "production",
                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "redirect_uri": format!("{base}/oauth/callback"),
                "scopes": "crm.objects.contacts.read oauth",
                "return_urls": [format!("{app_base}/app/hubspot/")],
            })),
        )
        .await;
    let app_id = app["app_id"].as_str().expect("app created").to_string();
    // The app's backend creates sessions with a key bound to the app.
    let service = create_key_for_apps(
        &stack.env.pool(),
        "app backend",
        Role::Service,
        &[app_id.parse().expect("app id")],
        "test",
    )
    .await
    .expect("bound service key")
    .token
    .expose_secret()
    .to_string();
    let session = stack
        .ok(
            Method::POST,
            &format!("/v1/apps/{app_id}/connect-sessions"),
            &service,
            Some(json!({
                "external_ref": "globex-42",
                "metadata": {"plan": "team"},
                "return_url": format!("{app_base}/app/hubspot/connected?from=settings"),
            })),
        )
        .await;
    let connect_url = session["connect_url"]
        .as_str()
        .unwrap_or_else(|| panic!("session: {session}"))
        .to_string();
    let connect_path = connect_url
        .strip_prefix(base.as_str())
        .filter(|path| path.starts_with("/connect/cs_"))
        .unwrap_or_else(|| panic!("a connect link on {base}: {connect_url}"))
        .to_string();

    let (_browser, mut ui) = stack.browser(1280, 900, "dashboard-connect").await;
    ui.go(&connect_path).await;
    // The simulator's consent page.
    ui.click("input[name=account]").await;
    ui.shot("consent").await;
    ui.click("button.approve").await;
    ui.until_text("#app-done", "Back in the app").await;
    ui.shot("back-in-the-app").await;
    let url = ui.client.current_url().await.unwrap();
    assert!(
        url.as_str()
            .starts_with(&format!("{app_base}/app/hubspot/connected?from=settings&")),
        "{url}"
    );
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["status"], "connected", "{url}");
    assert_eq!(query["external_ref"], "globex-42");
    let installation_id = query["installation_id"].clone();
    let details = stack
        .ok(
            Method::GET,
            &format!("/v1/installations/{installation_id}"),
            admin,
            None,
        )
        .await;
    assert_eq!(details["hub_id"], HUB_ID);
    assert_eq!(details["external_ref"], "globex-42");
    assert_eq!(details["metadata"]["plan"], "team");

    // The link was used: the public failure page with its code, not the dashboard's login.
    ui.go(&connect_path).await;
    let code = ui.until_text("#error-code", "session_used").await;
    assert_eq!(code.text().await.unwrap(), "session_used");
    ui.until_text("h1", "Connection failed").await;
    ui.shot("link-used").await;
    assert!(!ui
        .client
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/dashboard"));

    // The dashboard shows the customer on the tenant's details (logged in with the admin key).
    ui.log_in(admin).await;
    ui.go(&format!("/dashboard/users/{installation_id}")).await;
    ui.until_text("#external-ref", "globex-42").await;
    assert_eq!(
        ui.el("#external-ref").await.text().await.unwrap(),
        "globex-42"
    );
}
