//! A connect session in a real browser (headless Chromium through chromedriver), against
//! `hubkeeper up`, the HubSpot simulator and a tiny HTTP server that plays the app's return URL:
//! the app's backend creates a session, the customer's browser opens its link, approves on the
//! simulator's consent page and lands on the app's page with `installation_id`, `external_ref` and
//! `status=connected`; opening the used link again shows the public failure page, never the
//! admin login.
//!
//! Needs `chromium` and `chromedriver` (scripts/bootstrap.sh --browser installs them).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::response::Html;
use axum::routing::get;
use fantoccini::Locator;
use hubkeeper_api::auth::{create_key, create_key_for_apps, Role};
use hubkeeper_sim::{AccountSpec, AppSpec, ClientSecret, SeedFile, SimConfig, UserSpec};
use hubkeeper_testkit::{free_port, wait_until, Browser, Server, TestEnv};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const CLIENT_ID: &str = "6c2e1f4a-8d3b-4f9c-a072-4b3e5d6f7a81";
const CLIENT_SECRET: &str = "sim-secret-for-the-connect-test-0123456789";
const HUB_ID: u64 = 40_000_007;
const WAIT: Duration = Duration::from_secs(20);

/// The app's own page behind the return URL: shows the query it was reached with.
async fn app_page(RawQuery(query): RawQuery) -> Html<String> {
    let query = query.unwrap_or_default().replace(['<', '>', '&', '"'], "_");
    Html(format!(
        "<!doctype html><title>App</title><h1 id=\"app-done\">Back in the app</h1><p id=\"query\">{query}</p>"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connect_session_returns_the_browser_to_the_apps_return_url() {
    let env = TestEnv::start().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let sim = hubkeeper_sim::spawn(SimConfig {
        seed: Some(SeedFile {
            apps: vec![AppSpec {
                app_id: 1_000_007,
                client_id: CLIENT_ID.into(),
                client_secret: ClientSecret::new(CLIENT_SECRET),
                name: "Hubkeeper connect test".into(),
                redirect_uris: vec![format!("{base}/oauth/callback")],
                scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
            }],
            accounts: vec![AccountSpec {
                hub_id: HUB_ID,
                domain: "globex.hubspot.com".into(),
                users: vec![UserSpec {
                    user_id: 7_000_007,
                    email: "hank@globex.example".into(),
                }],
            }],
        }),
        ..SimConfig::default()
    })
    .await
    .unwrap();

    // The app's return URL: a local server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let router = axum::Router::new().route("/app/hubspot/{*rest}", get(app_page));
        axum::serve(listener, router).await.ok();
    });

    let mut vars = env.process_env();
    vars.push(("HK_HUBSPOT_API_URL".into(), sim.base_url.clone()));
    vars.push(("HK_HUBSPOT_APP_URL".into(), sim.base_url.clone()));
    vars.push(("HK_PUBLIC_URL".into(), base.clone()));
    let _hubkeeper = Server::start(port, "up", &["up"], &vars, &env.path().join("logs")).await;
    let admin = create_key(&env.pool(), "connect admin", Role::Admin, "test")
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_string();
    let http = reqwest::Client::new();
    let app: Value = http
        .post(format!("{base}/v1/apps"))
        .bearer_auth(&admin)
        .json(&json!({
            "label": "Globex sync", "environment": "production",
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "redirect_uri": format!("{base}/oauth/callback"),
            "scopes": "crm.objects.contacts.read oauth",
            "return_urls": [format!("{app_base}/app/hubspot/")],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app_id = app["app_id"].as_str().expect("app created").to_string();
    // The app's backend creates sessions with a key bound to the app.
    let service = create_key_for_apps(
        &env.pool(),
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
    let session: Value = http
        .post(format!("{base}/v1/apps/{app_id}/connect-sessions"))
        .bearer_auth(&service)
        .json(&json!({
            "external_ref": "globex-42",
            "metadata": {"plan": "team"},
            "return_url": format!("{app_base}/app/hubspot/connected?from=settings"),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connect_url = session["connect_url"]
        .as_str()
        .unwrap_or_else(|| panic!("session: {session}"))
        .to_string();
    assert!(connect_url.starts_with(&format!("{base}/connect/cs_")));

    let browser = Browser::start(1280, 900).await;
    let c = browser.client.clone();
    c.goto(&connect_url).await.unwrap();
    // The simulator's consent page.
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("input[name=account]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#app-done"))
        .await
        .expect("the browser ends on the app's return URL");
    assert_eq!(done.text().await.unwrap(), "Back in the app");
    let url = c.current_url().await.unwrap();
    assert!(
        url.as_str()
            .starts_with(&format!("{app_base}/app/hubspot/connected?from=settings&")),
        "{url}"
    );
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(query["status"], "connected", "{url}");
    assert_eq!(query["external_ref"], "globex-42");
    let installation_id = query["installation_id"].clone();
    let details: Value = http
        .get(format!("{base}/v1/installations/{installation_id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["hub_id"], HUB_ID);
    assert_eq!(details["external_ref"], "globex-42");
    assert_eq!(details["metadata"]["plan"], "team");

    // The link was used: the public failure page with its code, not the dashboard's login.
    c.goto(&connect_url).await.unwrap();
    let code = match c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#error-code"))
        .await
    {
        Ok(code) => code,
        Err(e) => panic!(
            "no error code on {:?} ({e}): {}",
            c.current_url().await,
            c.source().await.unwrap_or_default()
        ),
    };
    assert_eq!(code.text().await.unwrap(), "session_used");
    let heading = c
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(heading, "Connection failed");
    assert!(!c
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/dashboard"));

    // The dashboard shows the customer on the tenant's details (logged in with the admin key).
    c.goto(&format!("{base}/dashboard/login")).await.unwrap();
    let key_input = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#api-key"))
        .await
        .unwrap();
    key_input.send_keys(&admin).await.unwrap();
    c.find(Locator::Css("#login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until("logged in", WAIT, || async {
        c.find(Locator::Css(".whoami")).await.is_ok()
    })
    .await;
    c.goto(&format!("{base}/dashboard/users/{installation_id}"))
        .await
        .unwrap();
    let reference = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#external-ref"))
        .await
        .unwrap();
    assert_eq!(reference.text().await.unwrap(), "globex-42");
}
