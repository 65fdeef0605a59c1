//! The stack every dashboard browser test runs against: a fresh Postgres and nats-server, the
//! HubSpot simulator seeded with one app whose redirect URI is this dashboard's OAuth callback
//! (behind a recording tap, for the leak check) or no HubSpot at all, `hubkeeper up` on a port of
//! its own, the first admin key `up` wrote, and headless Chromium logged in with it.

use std::path::Path;

use hubkeeper_sim::{AccountSpec, AppSpec, ClientSecret, SeedFile, SimConfig, SimHandle, UserSpec};

use crate::{
    free_port, Browser, HubSpotTap, Page, SecretKind, SecretScan, Server, TapRecord, TestEnv,
};

/// The one app the simulator knows, and the HubSpot accounts that may install it.
#[derive(Debug, Clone)]
pub struct SimulatedApp {
    pub app_id: u64,
    pub client_id: &'static str,
    pub client_secret: &'static str,
    pub name: &'static str,
    pub accounts: Vec<AccountSpec>,
}

impl SimulatedApp {
    /// An account `hub_id` on `domain` with one user who may approve installs.
    pub fn account(hub_id: u64, domain: &str, user_id: u64, email: &str) -> AccountSpec {
        AccountSpec {
            hub_id,
            domain: domain.into(),
            users: vec![UserSpec {
                user_id,
                email: email.into(),
            }],
        }
    }
}

/// What to start: [`DashboardStack::with_simulator`] or [`DashboardStack::without_hubspot`],
/// then [`DashboardStackSetup::start`].
pub struct DashboardStackSetup {
    app: Option<SimulatedApp>,
    public_url: bool,
}

impl DashboardStackSetup {
    /// Tells `up` the URL it is reached at (`HK_PUBLIC_URL`), for absolute links it hands out
    /// (connect sessions).
    pub fn public_url(mut self) -> Self {
        self.public_url = true;
        self
    }

    pub async fn start(self) -> DashboardStack {
        let env = TestEnv::start().await;
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut vars = env.process_env();
        let (sim, tap, client_secret) = match self.app {
            Some(app) => {
                let sim = hubkeeper_sim::spawn(SimConfig {
                    seed: Some(SeedFile {
                        apps: vec![AppSpec {
                            app_id: app.app_id,
                            client_id: app.client_id.into(),
                            client_secret: ClientSecret::new(app.client_secret),
                            name: app.name.into(),
                            redirect_uris: vec![format!("{base}/oauth/callback")],
                            scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
                        }],
                        accounts: app.accounts,
                    }),
                    ..SimConfig::default()
                })
                .await
                .expect("start the HubSpot simulator");
                // Through a tap: the leak check learns every token HubSpot issued.
                let tap = HubSpotTap::start(&sim.base_url, "up", &TapRecord::default()).await;
                vars.push(("HK_HUBSPOT_API_URL".into(), tap.url.clone()));
                vars.push(("HK_HUBSPOT_APP_URL".into(), sim.base_url.clone()));
                (Some(sim), Some(tap), Some(app.client_secret))
            }
            None => {
                // A port nothing listens on: HubSpot calls fail at once.
                let hubspot = format!("http://127.0.0.1:{}/", free_port());
                vars.push(("HK_HUBSPOT_API_URL".into(), hubspot.clone()));
                vars.push(("HK_HUBSPOT_APP_URL".into(), hubspot));
                (None, None, None)
            }
        };
        if self.public_url {
            vars.push(("HK_PUBLIC_URL".into(), base.clone()));
        }
        let hubkeeper = Server::start(port, "up", &["up"], &vars, &env.log_dir()).await;
        let admin_key = std::fs::read_to_string(env.path().join("data/admin-key"))
            .expect("up wrote the first admin key")
            .trim()
            .to_string();
        DashboardStack {
            env,
            sim,
            tap,
            hubkeeper,
            base,
            admin_key,
            client_secret,
        }
    }
}

/// A running dashboard under test; everything stops on drop.
pub struct DashboardStack {
    pub env: TestEnv,
    sim: Option<SimHandle>,
    tap: Option<HubSpotTap>,
    pub hubkeeper: Server,
    /// `http://127.0.0.1:<port>` of `up`.
    pub base: String,
    /// The first admin key, as `up` wrote it.
    pub admin_key: String,
    client_secret: Option<&'static str>,
}

impl DashboardStack {
    /// HubSpot is the simulator, seeded with `app`.
    pub fn with_simulator(app: SimulatedApp) -> DashboardStackSetup {
        DashboardStackSetup {
            app: Some(app),
            public_url: false,
        }
    }

    /// No HubSpot: its URLs point at a port nothing listens on.
    pub fn without_hubspot() -> DashboardStackSetup {
        DashboardStackSetup {
            app: None,
            public_url: false,
        }
    }

    /// The simulator (a stack started [`DashboardStack::without_hubspot`] has none).
    pub fn sim(&self) -> &SimHandle {
        self.sim
            .as_ref()
            .expect("this dashboard stack runs without the HubSpot simulator")
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        self.hubkeeper.url(path)
    }

    /// `method path` on the dashboard's API with `key` as bearer and an optional JSON body: the
    /// status and the JSON answer (`Null` when the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_default())
    }

    /// [`DashboardStack::call`] that must succeed: its JSON answer.
    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (status, answer) = self.call(method, path, key, body).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// A browser with a `width`×`height` window and a page on this dashboard, not logged in,
    /// keeping its screenshots in `test-artifacts/<artifacts>/`. The browser must outlive the
    /// page (dropping it stops chromedriver).
    pub async fn browser(&self, width: u32, height: u32, artifacts: &str) -> (Browser, Page) {
        let browser = Browser::start(width, height).await;
        let page = Page::new(
            &browser,
            &self.base,
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../test-artifacts")
                .join(artifacts),
        );
        (browser, page)
    }

    /// [`DashboardStack::browser`], logged in with the first admin key.
    pub async fn admin_browser(&self, width: u32, height: u32, artifacts: &str) -> (Browser, Page) {
        let (browser, page) = self.browser(width, height, artifacts).await;
        page.log_in(&self.admin_key).await;
        (browser, page)
    }

    /// The leak check over every table and every process's log for `secrets`, every token
    /// HubSpot issued through the tap and the app's client secret; `kinds` are the kinds it
    /// must hold at least one of.
    pub async fn assert_no_secrets(&self, mut secrets: SecretScan, kinds: &[SecretKind]) {
        if let Some(tap) = &self.tap {
            secrets.merge(&tap.record.secrets());
        }
        if let Some(client_secret) = self.client_secret {
            secrets.add(SecretKind::ClientSecret, client_secret);
        }
        self.env.assert_no_secrets(&secrets, kinds).await;
    }
}
