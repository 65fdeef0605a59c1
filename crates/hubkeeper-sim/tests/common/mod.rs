//! Shared fixtures for the simulator's integration tests: a running simulator with one app and two
//! accounts, raw-HTTP helpers, and a webhook receiver that records what it got.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use hubkeeper_sim::{
    AccountSpec, AppSpec, ApproveRequest, ClientSecret, SeedFile, SimConfig, SimControl, SimHandle,
    UserSpec,
};
use secrecy::ExposeSecret;
use serde_json::Value;

pub const CLIENT_ID: &str = "0f6c2b8e-1d4a-4f7b-9c3e-5a6b7c8d9e0f";
pub const CLIENT_SECRET: &str = "test-secret-7d1e4c2a";
pub const APP_ID: u64 = 4242;
pub const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
pub const HUB_A: u64 = 101;
pub const HUB_B: u64 = 202;
pub const CONTACTS: &str = "crm.objects.contacts.read";

pub fn seed() -> SeedFile {
    SeedFile {
        apps: vec![AppSpec {
            app_id: APP_ID,
            client_id: CLIENT_ID.into(),
            client_secret: ClientSecret::new(CLIENT_SECRET),
            name: "Test Connector".into(),
            redirect_uris: vec![REDIRECT.into()],
            scopes: vec![
                CONTACTS.into(),
                "oauth".into(),
                "crm.objects.deals.read".into(),
            ],
        }],
        accounts: vec![
            AccountSpec {
                hub_id: HUB_A,
                domain: "alpha.hubspot.com".into(),
                users: vec![UserSpec {
                    user_id: 9001,
                    email: "ops@alpha.example".into(),
                }],
            },
            AccountSpec {
                hub_id: HUB_B,
                domain: "beta.hubspot.com".into(),
                users: vec![],
            },
        ],
    }
}

pub struct Sim {
    pub handle: SimHandle,
    pub ctl: SimControl,
    /// Does not follow redirects, so tests see HubSpot's 302s.
    pub http: reqwest::Client,
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url)
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get_json(&self, path: &str, bearer: Option<&str>) -> (u16, HeaderMap, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Scripted consent; returns the code.
    pub async fn code(&self, hub_id: u64, scopes: &[&str]) -> String {
        let approval = self
            .ctl
            .approve(&ApproveRequest::new(CLIENT_ID, REDIRECT, scopes, hub_id))
            .await
            .unwrap();
        approval.code.unwrap().expose_secret().to_string()
    }

    pub async fn exchange(&self, path: &str, code: &str) -> (u16, Value) {
        self.post_form(
            path,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("redirect_uri", REDIRECT),
                ("code", code),
            ],
        )
        .await
    }

    pub async fn refresh(&self, path: &str, refresh_token: &str) -> (u16, Value) {
        self.post_form(
            path,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// Consent + code exchange on the legacy endpoint; returns the token response body.
    pub async fn install(&self, hub_id: u64) -> Value {
        let code = self.code(hub_id, &[CONTACTS, "oauth"]).await;
        let (status, body) = self.exchange("/oauth/v1/token", &code).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

pub async fn start_with(mut config: SimConfig) -> Sim {
    if config.seed.is_none() {
        config.seed = Some(seed());
    }
    let handle = hubkeeper_sim::spawn(config).await.unwrap();
    let ctl = handle.control().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Sim { handle, ctl, http }
}

pub async fn start() -> Sim {
    start_with(SimConfig::default()).await
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    pub fn events(&self) -> Vec<Value> {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// How the receiver answers the next requests; after the script runs out it answers 200.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    SleepMs(u64),
}

#[derive(Default)]
struct ReceiverState {
    hits: Mutex<Vec<Hit>>,
    script: Mutex<VecDeque<Reply>>,
    delay_all_ms: Mutex<u64>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = Router::new().fallback(receive).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, replies: &[Reply]) {
        self.state
            .script
            .lock()
            .unwrap()
            .extend(replies.iter().copied());
    }

    pub fn delay_all(&self, ms: u64) {
        *self.state.delay_all_ms.lock().unwrap() = ms;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    state.hits.lock().unwrap().push(Hit {
        uri: uri.to_string(),
        headers,
        body,
        at: Instant::now(),
    });
    let reply = state.script.lock().unwrap().pop_front();
    let delay = *state.delay_all_ms.lock().unwrap();
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = match reply {
        Some(Reply::Status(code)) => StatusCode::from_u16(code).unwrap(),
        Some(Reply::SleepMs(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::OK
        }
        None => StatusCode::OK,
    };
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    status
}
