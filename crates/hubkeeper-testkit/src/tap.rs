//! A recording proxy in front of the HubSpot simulator's API host. Hubkeeper processes are
//! pointed at a tap (`HK_HUBSPOT_API_URL`) instead of the simulator itself, so a test learns
//! every token HubSpot issued and every code and client secret sent to it (for the leak check),
//! and which process made each token call and when (to tie a repeated refresh to the process
//! that was killed with it in flight).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use crate::{SecretKind, SecretScan};

/// One call of HubSpot's token endpoint, as the tap saw it.
#[derive(Debug, Clone)]
pub struct TokenCall {
    /// The tap it went through: one per process, named after it.
    pub via: String,
    /// `authorization_code` or `refresh_token`.
    pub grant_type: String,
    /// The portal HubSpot's answer named (none when it refused).
    pub hub_id: Option<u64>,
    pub status: u16,
    /// When the request reached the tap, and when HubSpot's answer came back to it.
    pub started: DateTime<Utc>,
    pub answered: DateTime<Utc>,
}

/// What every tap of a test records, shared.
#[derive(Debug, Default, Clone)]
pub struct TapRecord {
    /// Every access and refresh token of a successful token answer, and every code and client
    /// secret a token request carried.
    pub tokens: Arc<Mutex<BTreeMap<String, SecretKind>>>,
    pub calls: Arc<Mutex<Vec<TokenCall>>>,
}

impl TapRecord {
    /// The tokens HubSpot issued, ready for the leak check.
    pub fn secrets(&self) -> SecretScan {
        let mut scan = SecretScan::new();
        for (token, kind) in self.tokens.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            scan.add(*kind, token);
        }
        scan
    }

    pub fn calls(&self) -> Vec<TokenCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A tap listening on a loopback port; stops on drop.
pub struct HubSpotTap {
    /// What to give a process as `HK_HUBSPOT_API_URL`.
    pub url: String,
    pub record: TapRecord,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HubSpotTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct TapState {
    via: String,
    target: String,
    http: reqwest::Client,
    record: TapRecord,
}

impl HubSpotTap {
    /// A tap named `via` forwarding to `target` (the simulator's base URL), recording into
    /// `record` (shared by every tap of a test).
    pub async fn start(target: &str, via: &str, record: &TapRecord) -> HubSpotTap {
        let state = TapState {
            via: via.to_owned(),
            target: target.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("tap client"),
            record: record.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tap");
        let url = format!("http://{}", listener.local_addr().expect("tap address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HubSpotTap {
            url,
            record: record.clone(),
            task,
        }
    }
}

async fn forward(
    State(tap): State<TapState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Utc::now();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let token_call = uri.path().ends_with("/token");
    let mut grant_type = String::new();
    if token_call {
        let mut tokens = tap.record.tokens.lock().unwrap_or_else(|e| e.into_inner());
        for (key, value) in url::form_urlencoded::parse(&body) {
            match key.as_ref() {
                "grant_type" => grant_type = value.into_owned(),
                "code" => {
                    tokens.insert(value.into_owned(), SecretKind::Code);
                }
                "client_secret" => {
                    tokens.insert(value.into_owned(), SecretKind::ClientSecret);
                }
                _ => {}
            }
        }
    }
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
    if token_call {
        let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
        if status.is_success() {
            if let Some(v) = &json {
                let mut tokens = tap.record.tokens.lock().unwrap_or_else(|e| e.into_inner());
                for (field, kind) in [
                    ("access_token", SecretKind::AccessToken),
                    ("refresh_token", SecretKind::RefreshToken),
                ] {
                    if let Some(t) = v[field].as_str() {
                        tokens.insert(t.to_string(), kind);
                    }
                }
            }
        }
        let call = TokenCall {
            via: tap.via.clone(),
            grant_type,
            hub_id: json.as_ref().and_then(|v| v["hub_id"].as_u64()),
            status: status.as_u16(),
            started,
            answered: Utc::now(),
        };
        tap.record
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
    let mut response = (status, bytes.to_vec()).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert("content-type", ct);
    }
    response
}
