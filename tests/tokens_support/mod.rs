//! Shared harness of the token-lifecycle integration tests: real Postgres and NATS
//! (`TestEnv`), the HubSpot simulator over real HTTP, `hubkeeper api` processes, and a recording
//! tap in front of the simulator's API host that remembers every token HubSpot issued (so tests
//! can prove none of them leaks into logs or tables: [`Harness::scan_for_leaks`]).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use hubkeeper_api::auth::{create_key, create_key_for_apps, Role};
use hubkeeper_sim::{
    AccountSpec, AppSpec, ApproveRequest, ClientSecret, SimConfig, SimControl, SimHandle, UserSpec,
};
use hubkeeper_testkit::{
    wait_until, HubSpotTap, SecretKind, SecretScan, Server, TapRecord, TestEnv,
};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::PgPool;

pub const SCOPES: &str = "crm.objects.contacts.read oauth";

/// A 32-byte master key in configuration form.
pub fn master_key(kid: &str, byte: u8) -> String {
    use base64::Engine;
    format!(
        "{kid}:{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

/// A client whose requests come from `ip` (any 127.0.0.0/8 address works on Linux), so tests
/// can act as many browsers without tripping the per-IP OAuth rate limit, or as one on purpose.
pub fn client_from(ip: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip)
        .build()
        .unwrap()
}

/// A client from a fresh random loopback address.
pub fn fresh_browser() -> reqwest::Client {
    let [a, b, c] = rand::random::<[u8; 3]>();
    client_from(std::net::IpAddr::from([127, a, b, c.max(2)]))
}

/// One `hubkeeper api` process.
pub struct Api {
    pub base: String,
    pub port: u16,
    pub process: hubkeeper_testkit::HkProcess,
}

pub struct Harness {
    pub env: TestEnv,
    pub sim: SimHandle,
    pub ctl: SimControl,
    pub tap: HubSpotTap,
    pub pool: PgPool,
    pub http: reqwest::Client,
    pub admin_key: String,
    /// A service key bound to every app registered through [`Harness::register_app`] (a new
    /// one after each registration): the key the app's backend fetches tokens with.
    pub service_key: Option<String>,
    /// The apps registered through [`Harness::register_app`].
    pub app_ids: Vec<hubkeeper_domain::AppId>,
    pub master_keys: String,
    pub apis: Vec<Api>,
    /// Client secrets registered (for the leak scan).
    pub client_secrets: Vec<String>,
    /// Authorization codes seen (for the leak scan).
    pub codes: Vec<String>,
    /// Tokens handed out through [`Harness::token`] (the usage counters must account for them).
    pub handouts: AtomicU64,
}

/// An app known both to the simulator and to Hubkeeper.
#[derive(Debug, Clone)]
pub struct TestApp {
    pub app_id: String,
    pub client_id: String,
    pub redirect_uri: String,
}

impl Harness {
    pub async fn start(sim: SimConfig) -> Harness {
        let env = TestEnv::start().await;
        let sim = hubkeeper_sim::spawn(sim).await.expect("simulator");
        let ctl = sim.control().expect("sim control");
        let tap = HubSpotTap::start(&sim.base_url, "api", &TapRecord::default()).await;
        let pool = env.pool();
        let admin = create_key(&pool, "test-admin", Role::Admin, "test")
            .await
            .expect("admin key");
        Harness {
            env,
            sim,
            ctl,
            tap,
            pool,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            admin_key: admin.token.expose_secret().to_string(),
            service_key: None,
            app_ids: Vec::new(),
            master_keys: master_key("k1", 7),
            apis: Vec::new(),
            client_secrets: Vec::new(),
            codes: Vec::new(),
            handouts: AtomicU64::new(0),
        }
    }

    /// Environment of an API process; `extra` overrides (an empty value unsets).
    pub fn api_env(&self, port: u16, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars = self.env.process_env();
        vars.retain(|(k, _)| k != "HK_LOG");
        vars.extend([
            ("HK_LOG".to_string(), "debug".to_string()),
            ("HK_BIND".to_string(), format!("127.0.0.1:{port}")),
            ("HK_MASTER_KEYS".to_string(), self.master_keys.clone()),
            ("HK_HUBSPOT_API_URL".to_string(), self.tap.url.clone()),
            ("HK_HUBSPOT_APP_URL".to_string(), self.sim.base_url.clone()),
            ("HK_OAUTH_RATE_LIMIT_MAX".to_string(), "10000".to_string()),
        ]);
        for (k, v) in extra {
            vars.retain(|(key, _)| key != k);
            vars.push((k.to_string(), v.to_string()));
        }
        vars
    }

    /// Starts `hubkeeper worker <role>` with the API's environment (health and metrics on a free
    /// port instead of the API's bind); `extra` overrides as in [`Harness::api_env`].
    pub fn spawn_worker(
        &self,
        name: &str,
        role: &str,
        extra: &[(&str, &str)],
    ) -> hubkeeper_testkit::HkProcess {
        let port = hubkeeper_testkit::free_port();
        let metrics = format!("127.0.0.1:{port}");
        let mut extra = extra.to_vec();
        extra.push(("HK_METRICS_BIND", &metrics));
        let mut vars = self.api_env(port, &extra);
        vars.retain(|(k, _)| k != "HK_BIND");
        hubkeeper_testkit::HkProcess::spawn(
            &hubkeeper_testkit::hubkeeper_binary(),
            name,
            &["worker", role],
            &vars,
            &self.env.path().join("logs"),
        )
    }

    /// Starts `hubkeeper api` and waits until it is ready; returns its index.
    pub async fn spawn_api(&mut self, name: &str, extra: &[(&str, &str)]) -> usize {
        let port = hubkeeper_testkit::free_port();
        let vars = self.api_env(port, extra);
        let server =
            Server::start(port, name, &["api"], &vars, &self.env.path().join("logs")).await;
        self.apis.push(Api {
            base: server.base,
            port,
            process: server.process,
        });
        self.apis.len() - 1
    }

    pub fn api(&self, index: usize) -> &str {
        &self.apis[index].base
    }

    /// All API process logs.
    pub fn logs(&self) -> String {
        self.apis.iter().map(|a| a.process.log_text()).collect()
    }

    pub async fn admin(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, url).bearer_auth(&self.admin_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Registers an app in the simulator (redirect URIs: API `api`'s callback and a second
    /// one) and in Hubkeeper (the first). `hubspot_secret` may differ from `our_secret` to
    /// provoke `invalid_client`.
    pub async fn register_app(
        &mut self,
        api: usize,
        our_secret: &str,
        hubspot_secret: &str,
    ) -> TestApp {
        let client_id = uuid::Uuid::new_v4().to_string();
        let redirect_uri = format!("{}/oauth/callback", self.api(api));
        self.ctl
            .register_app(&AppSpec {
                app_id: rand::random::<u32>() as u64,
                client_id: client_id.clone(),
                client_secret: ClientSecret::new(hubspot_secret),
                name: "Test app".into(),
                redirect_uris: vec![redirect_uri.clone(), format!("{redirect_uri}2")],
                scopes: SCOPES.split(' ').map(str::to_string).collect(),
            })
            .await
            .expect("register sim app");
        self.client_secrets.push(our_secret.to_string());
        self.client_secrets.push(hubspot_secret.to_string());
        let (status, body) = self
            .admin(
                Method::POST,
                &format!("{}/v1/apps", self.api(api)),
                Some(json!({
                    "label": "Test app",
                    "environment": "development",
                    "client_id": client_id,
                    "client_secret": our_secret,
                    "redirect_uri": redirect_uri,
                    "scopes": SCOPES,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create app: {body}");
        let app_id = body["app_id"].as_str().unwrap().to_string();
        self.app_ids.push(app_id.parse().expect("app id"));
        let service = create_key_for_apps(
            &self.pool,
            "test app backend",
            Role::Service,
            &self.app_ids,
            "test",
        )
        .await
        .expect("service key");
        self.service_key = Some(service.token.expose_secret().to_string());
        TestApp {
            app_id,
            client_id,
            redirect_uri,
        }
    }

    pub async fn register_account(&self, hub_id: u64) {
        self.ctl
            .register_account(&AccountSpec {
                hub_id,
                domain: format!("hub{hub_id}.example.com"),
                users: vec![UserSpec {
                    user_id: hub_id * 10 + 1,
                    email: format!("admin@hub{hub_id}.example.com"),
                }],
            })
            .await
            .expect("register account");
    }

    /// `GET /oauth/{app}/install` → the authorize URL's query parameters.
    pub async fn start_install(&self, api: usize, app: &TestApp) -> HashMap<String, String> {
        self.start_install_from(&fresh_browser(), api, app).await
    }

    pub async fn start_install_from(
        &self,
        browser: &reqwest::Client,
        api: usize,
        app: &TestApp,
    ) -> HashMap<String, String> {
        let response = browser
            .get(format!("{}/oauth/{}/install", self.api(api), app.app_id))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_redirection(),
            "install redirects, got {}",
            response.status()
        );
        let location = response.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with(&self.sim.base_url),
            "install goes to HubSpot's consent page: {location}"
        );
        url::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// Scripted consent at the simulator; returns the callback URL HubSpot would redirect to.
    pub async fn consent(
        &mut self,
        params: &HashMap<String, String>,
        hub_id: u64,
        deny: bool,
        redirect_uri: Option<&str>,
    ) -> String {
        let approval = self
            .ctl
            .approve(&ApproveRequest {
                client_id: params["client_id"].clone(),
                redirect_uri: redirect_uri
                    .map(str::to_string)
                    .unwrap_or_else(|| params["redirect_uri"].clone()),
                scopes: params["scope"].split(' ').map(str::to_string).collect(),
                optional_scopes: Vec::new(),
                state: params.get("state").cloned(),
                hub_id,
                user: None,
                deny,
            })
            .await
            .expect("approve");
        if let Some(code) = &approval.code {
            self.codes.push(code.expose_secret().to_string());
        }
        approval.location.expose_secret().to_string()
    }

    /// Calls our callback with the query of `hubspot_redirect` (whatever URL HubSpot chose) and
    /// returns where it sends the browser (a connect session's return URL, or the public result
    /// page `/connect-result?...`).
    pub async fn callback(&self, api: usize, hubspot_redirect: &str) -> String {
        let query = url::Url::parse(hubspot_redirect)
            .unwrap()
            .query()
            .unwrap_or_default()
            .to_string();
        self.callback_query(api, &query).await
    }

    pub async fn callback_query(&self, api: usize, query: &str) -> String {
        let response = fresh_browser()
            .get(format!("{}/oauth/callback?{query}", self.api(api)))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_redirection(),
            "callback redirects, got {}",
            response.status()
        );
        response.headers()["location"].to_str().unwrap().to_string()
    }

    /// The whole install flow; returns the installation id.
    pub async fn install(&mut self, api: usize, app: &TestApp, hub_id: u64) -> String {
        let params = self.start_install(api, app).await;
        let redirect = self.consent(&params, hub_id, false, None).await;
        let target = self.callback(api, &redirect).await;
        let id = target
            .strip_prefix("/connect-result?status=connected&installation_id=")
            .unwrap_or_else(|| panic!("install failed: {target}"));
        id.to_string()
    }

    /// A hand-out with the apps' service key (as the app's backend asks for one).
    pub async fn token(&self, api: usize, id: &str, min_validity_secs: u64) -> (StatusCode, Value) {
        let key = self.service_key.as_deref().expect("register an app first");
        let response = self
            .http
            .get(format!(
                "{}/v1/installations/{id}/token?min_validity_secs={min_validity_secs}",
                self.api(api)
            ))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer = (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        );
        if answer.0 == StatusCode::OK {
            self.handouts.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// Waits until the hand-out counters (flushed in batches) account for every token handed
    /// out through [`Harness::token`].
    pub async fn wait_for_usage_flush(&self) {
        let expected = self.handouts.load(Ordering::Relaxed) as i64;
        wait_until(
            "hand-out counters flushed",
            Duration::from_secs(30),
            || async {
                sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT sum(handouts)::bigint FROM token_usage",
                )
                .fetch_one(&self.pool)
                .await
                .ok()
                .flatten()
                .unwrap_or(0)
                    >= expected
            },
        )
        .await;
    }

    pub async fn details(&self, api: usize, id: &str) -> Value {
        let (status, body) = self
            .admin(
                Method::GET,
                &format!("{}/v1/installations/{id}", self.api(api)),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "details: {body}");
        body
    }

    pub async fn post(&self, api: usize, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.admin(Method::POST, &format!("{}{path}", self.api(api)), body)
            .await
    }

    /// Calls the simulator's CRM with an access token: proves the token really works.
    pub async fn crm_status(&self, access_token: &str) -> StatusCode {
        self.http
            .get(format!(
                "{}/crm/v3/objects/contacts?limit=1",
                self.sim.base_url
            ))
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Every secret the simulator issued or the test registered.
    pub fn secrets(&self) -> SecretScan {
        let mut scan = self.tap.record.secrets();
        scan.extend(SecretKind::ClientSecret, &self.client_secrets);
        scan.extend(SecretKind::Code, &self.codes);
        scan
    }

    /// The leak check over every table and every process's log, once the hand-out counters
    /// have landed (so their table is covered too); `kinds` are the secrets the test must have
    /// handled.
    pub async fn scan_for_leaks(&self, kinds: &[SecretKind]) {
        self.wait_for_usage_flush().await;
        self.env.assert_no_secrets(&self.secrets(), kinds).await;
    }
}
