//! The API Keys page in a real browser (Debian's headless Chromium through chromedriver) against
//! `hubkeeper up`: an admin creates a key, sees it once with a copy button (gone after a
//! reload), the key works against the API, the admin revokes it after confirming and it stops
//! working; an auditor sees the list with every action refused. Screenshots go to
//! test-artifacts/dashboard-keys/; the browser's console must stay free of errors; the key is in
//! no table and no log.
//!
//! Needs `chromium` and `chromedriver` (scripts/bootstrap.sh --browser installs them).

use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_testkit::{DashboardStack, SecretKind, SecretScan};
use secrecy::ExposeSecret;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_creates_sees_once_and_revokes_a_key_in_the_dashboard() {
    let stack = DashboardStack::without_hubspot().start().await;
    let http = reqwest::Client::new();
    let me = |key: String| {
        let http = http.clone();
        let url = stack.url("/auth/me");
        async move {
            http.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    let (browser, mut ui) = stack.admin_browser(1366, 1000, "dashboard-keys").await;

    // Create an operator key through the form.
    ui.nav("API Keys").await;
    ui.heading("API Keys").await;
    ui.until_text("#keys-list td", "bootstrap admin").await;
    ui.click("#create-key").await;
    ui.el("#key-role")
        .await
        .select_by_value("operator")
        .await
        .expect("choose the operator role");
    ui.fill("#key-name", "browser-made").await;
    ui.click("#save-key").await;
    ui.until_text("#key-secret", "you will not see it again")
        .await;
    let key = ui
        .el("#new-key-secret")
        .await
        .text()
        .await
        .expect("the key's text")
        .trim()
        .to_string();
    assert!(key.starts_with("hk_ak"), "the key is shown: {key}");
    ui.until_text("#keys-list td", "browser-made").await;
    ui.shot("created").await;
    ui.click("#copy-key").await;
    ui.until_text(".toast", "cop").await;

    // The key works against the API.
    assert_eq!(me(key.clone()).await, 200, "the new key works");

    // After a reload the key is gone from the page for good; the list still names it.
    ui.go("/dashboard/keys").await;
    ui.until_text("#keys-list td", "browser-made").await;
    assert!(
        !ui.body_text().await.contains(&key),
        "the key is not shown again"
    );
    let key_id = key.split('_').nth(1).expect("key id").to_string();
    let row = format!("#keys-list tr[data-id={key_id}]");
    ui.until_text(&row, "Active").await;

    // Revoke it, after confirming.
    ui.click(&format!("{row} button[data-action=revoke]")).await;
    ui.until_text("dialog", "Revoke the key \"browser-made\"")
        .await;
    ui.shot("revoke-confirm").await;
    ui.click("dialog button[value=confirm]").await;
    ui.until_text(".toast", "revoked").await;
    ui.until_text(&row, "Revoked").await;
    ui.shot("revoked").await;
    assert_eq!(me(key.clone()).await, 401, "the revoked key stops working");
    let refused = http
        .post(stack.url("/auth/login"))
        .json(&serde_json::json!({ "api_key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // An auditor sees the list, but every action is refused.
    let pool = stack.env.pool();
    let auditor = create_key(&pool, "browser auditor", Role::Auditor, "test")
        .await
        .expect("auditor key");
    let auditor = auditor.token.expose_secret().to_string();
    pool.close().await;
    ui.click("#logout").await;
    ui.fill("#api-key", &auditor).await;
    ui.click("#login-submit").await;
    // Logging in again returns to the page the session ended on.
    ui.heading("API Keys").await;
    ui.until_text("#keys-list td", "browser-made").await;
    assert!(ui.is_disabled("#create-key").await);
    assert!(
        ui.is_disabled("#keys-list button[data-action=revoke]")
            .await
    );
    ui.shot("auditor").await;
    ui.assert_clean_console("on the API Keys page", &[]).await;
    drop(browser);

    let mut secrets = SecretScan::new();
    secrets.add(SecretKind::ApiKey, &key);
    secrets.add(SecretKind::ApiKey, key.rsplit('_').next().unwrap());
    stack
        .assert_no_secrets(secrets, &[SecretKind::ApiKey])
        .await;
}
