//! Shared harness of the token-lifecycle integration tests: real Postgres and NATS
//! (`TestEnv`), the HubSpot simulator over real HTTP, `hubkeeper api` processes, and a recording
//! tap in front of the simulator's API host that remembers every token HubSpot issued (so tests
//! can prove none of them leaks into logs or tables).

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hubkeeper_api::auth::{create_key, Role};
use hubkeeper_sim::{
    AccountSpec, AppSpec, ApproveRequest, ClientSecret, SimConfig, SimControl, SimHandle, UserSpec,
};
use hubkeeper_testkit::{wait_until, HkProcess, TestEnv};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::PgPool;

pub const BIN: &str = env!("CARGO_BIN_EXE_hubkeeper");
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Forwards everything to the simulator and records the tokens of every successful token
/// response (exchange and refresh) and every authorization code seen.
pub struct Tap {
    pub url: String,
    pub seen: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct TapState {
    target: String,
    http: reqwest::Client,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

async fn forward(
    State(tap): State<TapState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = tap
        .http
        .request(method, format!("{}{path}", tap.target))
        .body(body.to_vec());
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let Ok(answer) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap_or_default();
    if uri.path().ends_with("/token") && status.is_success() {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            let mut seen = tap.seen.lock().unwrap();
            for field in ["access_token", "refresh_token"] {
                if let Some(t) = v[field].as_str() {
                    seen.insert(t.to_string());
                }
            }
        }
    }
    let mut response = (status, bytes.to_vec()).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert("content-type", ct);
    }
    response
}

pub async fn spawn_tap(target: &str) -> Tap {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let state = TapState {
        target: target.trim_end_matches('/').to_string(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        seen: seen.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Tap { url, seen, task }
}

/// One `hubkeeper api` process.
pub struct Api {
    pub base: String,
    pub port: u16,
    pub process: HkProcess,
}

pub struct Harness {
    pub env: TestEnv,
    pub sim: SimHandle,
    pub ctl: SimControl,
    pub tap: Tap,
    pub pool: PgPool,
    pub http: reqwest::Client,
    pub admin_key: String,
    pub master_keys: String,
    pub apis: Vec<Api>,
    /// Client secrets registered (for the leak scan).
    pub client_secrets: Vec<String>,
    /// Authorization codes seen (for the leak scan).
    pub codes: Vec<String>,
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
        let tap = spawn_tap(&sim.base_url).await;
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
            master_keys: master_key("k1", 7),
            apis: Vec::new(),
            client_secrets: Vec::new(),
            codes: Vec::new(),
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

    /// Starts `hubkeeper api` and waits until it answers; returns its index.
    pub async fn spawn_api(&mut self, name: &str, extra: &[(&str, &str)]) -> usize {
        let port = free_port();
        let vars = self.api_env(port, extra);
        let process = HkProcess::spawn(
            Path::new(BIN),
            name,
            &["api"],
            &vars,
            &self.env.path().join("logs"),
        );
        let base = format!("http://127.0.0.1:{port}");
        let http = self.http.clone();
        let url = format!("{base}/healthz");
        wait_until(&format!("{name} answers"), Duration::from_secs(60), || {
            let http = http.clone();
            let url = url.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        self.apis.push(Api {
            base,
            port,
            process,
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
        TestApp {
            app_id: body["app_id"].as_str().unwrap().to_string(),
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
    /// returns the dashboard redirect target.
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
            .strip_prefix("/dashboard/tokens?connected=")
            .unwrap_or_else(|| panic!("install failed: {target}"));
        id.to_string()
    }

    pub async fn token(&self, api: usize, id: &str, min_validity_secs: u64) -> (StatusCode, Value) {
        self.admin(
            Method::GET,
            &format!(
                "{}/v1/installations/{id}/token?min_validity_secs={min_validity_secs}",
                self.api(api)
            ),
            None,
        )
        .await
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
    pub fn secrets(&self) -> Vec<String> {
        let mut all: Vec<String> = self.tap.seen.lock().unwrap().iter().cloned().collect();
        all.extend(self.client_secrets.iter().cloned());
        all.extend(self.codes.iter().cloned());
        all.sort();
        all.dedup();
        all
    }

    /// The text of every row of every table.
    pub async fn all_table_text(&self) -> Vec<(String, String)> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let mut out = Vec::new();
        for table in tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                    .fetch_all(&self.pool)
                    .await
                    .unwrap();
            out.push((table, rows.join("\n")));
        }
        out
    }
}
