//! The authorize URL, the consent pages (browser and scripted) and what a decision records.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::form_map;
use crate::config::{AppSpec, UserSpec};
use crate::html::{consent_page, error_page, ConsentView};
use crate::model::ApproveRequest;
use crate::respond::{with_meta, LogMeta};
use crate::state::{deadline, AuthCode, InstallKey, SimState, Store};
use crate::tokens::{new_auth_code, TokenHash};

fn split_scopes(raw: &str) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for s in raw.split([' ', '+']).filter(|s| !s.is_empty()) {
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    scopes
}

struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scopes: Vec<String>,
    optional_scopes: Vec<String>,
    optional_raw: String,
    state: Option<String>,
}

impl AuthorizeParams {
    fn from_map(map: &HashMap<String, String>) -> Self {
        let optional_raw = map.get("optional_scope").cloned().unwrap_or_default();
        AuthorizeParams {
            client_id: map.get("client_id").cloned(),
            redirect_uri: map.get("redirect_uri").cloned(),
            scopes: split_scopes(map.get("scope").map(String::as_str).unwrap_or("")),
            optional_scopes: split_scopes(&optional_raw),
            optional_raw,
            state: map.get("state").cloned(),
        }
    }
}

/// Why an install request is refused before any consent is shown.
#[derive(Debug)]
pub(crate) enum AuthorizeError {
    MissingClientId,
    UnknownClient,
    MissingRedirectUri,
    RedirectMismatch,
    MissingScope,
    ScopeMismatch(Vec<String>),
    UnknownAccount(u64),
    UnknownUser,
}

impl fmt::Display for AuthorizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthorizeError::MissingClientId => f.write_str("The install URL has no client_id."),
            AuthorizeError::UnknownClient => {
                f.write_str("Authorization failed: the client_id does not belong to any app.")
            }
            AuthorizeError::MissingRedirectUri => {
                f.write_str("The install URL has no redirect_uri.")
            }
            AuthorizeError::RedirectMismatch => f.write_str(
                "Authorization failed: the redirect_uri does not exactly match any redirect URL configured for this app.",
            ),
            AuthorizeError::MissingScope => f.write_str("The install URL requests no scope."),
            AuthorizeError::ScopeMismatch(extra) => write!(
                f,
                "Authorization failed because there is a mismatch between the scopes in the install URL and the app's configured scopes: {}",
                extra.join(", ")
            ),
            AuthorizeError::UnknownAccount(hub) => write!(f, "HubSpot account {hub} does not exist."),
            AuthorizeError::UnknownUser => f.write_str("That user does not belong to the account."),
        }
    }
}

struct ValidAuthorize {
    app: AppSpec,
    redirect_uri: String,
    required: Vec<String>,
    /// The optional scopes the app may hold; others are silently dropped.
    grantable_optional: Vec<String>,
}

fn validate_authorize(
    store: &Store,
    p: &AuthorizeParams,
) -> Result<ValidAuthorize, AuthorizeError> {
    let client_id = p
        .client_id
        .as_deref()
        .ok_or(AuthorizeError::MissingClientId)?;
    let app = store
        .apps
        .get(client_id)
        .ok_or(AuthorizeError::UnknownClient)?;
    let redirect_uri = p
        .redirect_uri
        .as_deref()
        .ok_or(AuthorizeError::MissingRedirectUri)?;
    if !app.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Err(AuthorizeError::RedirectMismatch);
    }
    if p.scopes.is_empty() {
        return Err(AuthorizeError::MissingScope);
    }
    let extra: Vec<String> = p
        .scopes
        .iter()
        .filter(|s| !app.scopes.contains(s))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(AuthorizeError::ScopeMismatch(extra));
    }
    let grantable_optional = p
        .optional_scopes
        .iter()
        .filter(|s| app.scopes.contains(s) && !p.scopes.contains(s))
        .cloned()
        .collect();
    Ok(ValidAuthorize {
        app: app.clone(),
        redirect_uri: redirect_uri.to_string(),
        required: p.scopes.clone(),
        grantable_optional,
    })
}

/// HubSpot answers a consent with a plain 302.
fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => error_html(&AuthorizeError::RedirectMismatch),
    }
}

fn error_html(err: &AuthorizeError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(error_page("Authorization failed", &err.to_string())),
    )
        .into_response()
}

pub(crate) async fn authorize_page(
    State(state): State<SimState>,
    RawQuery(query): RawQuery,
) -> Response {
    render_consent(&state, query, None)
}

pub(crate) async fn authorize_account_page(
    State(state): State<SimState>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match account.parse::<u64>() {
        Ok(hub_id) => render_consent(&state, query, Some(hub_id)),
        Err(_) => (
            StatusCode::NOT_FOUND,
            Html(error_page("Not found", "No such HubSpot account.")),
        )
            .into_response(),
    }
}

fn render_consent(state: &SimState, query: Option<String>, only_account: Option<u64>) -> Response {
    let map = form_map(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let params = AuthorizeParams::from_map(&map);
    let store = state.lock();
    let valid = match validate_authorize(&store, &params) {
        Ok(v) => v,
        Err(e) => return error_html(&e),
    };
    let accounts = match only_account {
        Some(hub) => match store.accounts.get(&hub) {
            Some(a) => vec![a],
            None => return error_html(&AuthorizeError::UnknownAccount(hub)),
        },
        None => store.accounts.values().collect(),
    };
    let html = consent_page(&ConsentView {
        app: &valid.app,
        redirect_uri: &valid.redirect_uri,
        required: &valid.required,
        optional: &valid.grantable_optional,
        optional_raw: &params.optional_raw,
        state: params.state.as_deref(),
        accounts,
    });
    with_meta(
        Html(html).into_response(),
        LogMeta {
            hub_id: only_account,
            client_id: Some(valid.app.client_id),
            token_hash: None,
        },
    )
}

/// Appends query parameters to a registered redirect URI (which may already have a query).
fn redirect_location(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        // Registered URIs are validated as absolute URLs, so this is unreachable in practice;
        // fall back to plain concatenation rather than failing the consent.
        Err(_) => {
            let query = serde_urlencoded::to_string(params).unwrap_or_default();
            format!("{redirect_uri}?{query}")
        }
    }
}

/// The outcome of a consent decision.
struct Decision {
    location: String,
    code: Option<String>,
    granted: Vec<String>,
    hub_id: u64,
}

fn decide(
    store: &mut Store,
    valid: &ValidAuthorize,
    state_param: Option<&str>,
    hub_id: u64,
    user: Option<&str>,
    granted_optional: &[String],
    approve: bool,
) -> Result<Decision, AuthorizeError> {
    let account = store
        .accounts
        .get(&hub_id)
        .ok_or(AuthorizeError::UnknownAccount(hub_id))?;
    let user: UserSpec = match user {
        None => account
            .users
            .first()
            .cloned()
            .ok_or(AuthorizeError::UnknownUser)?,
        Some(u) => account
            .users
            .iter()
            .find(|x| x.email.eq_ignore_ascii_case(u) || x.user_id.to_string() == u)
            .cloned()
            .ok_or(AuthorizeError::UnknownUser)?,
    };
    let mut params: Vec<(&str, &str)> = Vec::new();
    if !approve {
        params.push(("error", "access_denied"));
        params.push(("error_description", "The user denied the install request."));
        if let Some(s) = state_param {
            params.push(("state", s));
        }
        return Ok(Decision {
            location: redirect_location(&valid.redirect_uri, &params),
            code: None,
            granted: Vec::new(),
            hub_id,
        });
    }
    let mut granted = valid.required.clone();
    for s in &valid.grantable_optional {
        if granted_optional.contains(s) && !granted.contains(s) {
            granted.push(s.clone());
        }
    }
    let key = InstallKey {
        client_id: valid.app.client_id.clone(),
        hub_id,
    };
    store.install(&key, valid.app.app_id, &user, &granted);
    let code = new_auth_code();
    let now = Instant::now();
    if store.codes.len() > 1000 {
        store.codes.retain(|_, c| !c.used && c.expires_at > now);
    }
    store.codes.insert(
        TokenHash::of(&code),
        AuthCode {
            client_id: valid.app.client_id.clone(),
            redirect_uri: valid.redirect_uri.clone(),
            hub_id,
            user,
            scopes: granted.clone(),
            expires_at: deadline(now, store.settings.code_lifetime),
            used: false,
        },
    );
    params.push(("code", &code));
    if let Some(s) = state_param {
        params.push(("state", s));
    }
    let location = redirect_location(&valid.redirect_uri, &params);
    Ok(Decision {
        location,
        code: Some(code),
        granted,
        hub_id,
    })
}

/// The consent form's submission; re-validates everything because the form is client input.
pub(crate) async fn authorize_decision(State(state): State<SimState>, body: Bytes) -> Response {
    let Some(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).ok() else {
        return error_html(&AuthorizeError::MissingClientId);
    };
    let granted_optional: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "grant_optional")
        .map(|(_, v)| v.clone())
        .collect();
    let mut map = HashMap::new();
    for (k, v) in pairs {
        map.entry(k).or_insert(v);
    }
    let params = AuthorizeParams::from_map(&map);
    let approve = map.get("decision").map(String::as_str) == Some("approve");
    let mut store = state.lock();
    let valid = match validate_authorize(&store, &params) {
        Ok(v) => v,
        Err(e) => return error_html(&e),
    };
    let (hub_id, user) = match map.get("account").and_then(|a| a.split_once(':')) {
        Some((hub, user)) => match hub.parse::<u64>() {
            Ok(hub) => (hub, Some(user.to_string())),
            Err(_) => return error_html(&AuthorizeError::UnknownAccount(0)),
        },
        None if !approve => (0, None),
        None => return error_html(&AuthorizeError::UnknownAccount(0)),
    };
    let decision = if !approve && hub_id == 0 {
        // Cancel without picking an account: nothing to look up, just bounce back.
        let mut p: Vec<(&str, &str)> = vec![
            ("error", "access_denied"),
            ("error_description", "The user denied the install request."),
        ];
        if let Some(s) = params.state.as_deref() {
            p.push(("state", s));
        }
        Ok(Decision {
            location: redirect_location(&valid.redirect_uri, &p),
            code: None,
            granted: Vec::new(),
            hub_id,
        })
    } else {
        decide(
            &mut store,
            &valid,
            params.state.as_deref(),
            hub_id,
            user.as_deref(),
            &granted_optional,
            approve,
        )
    };
    match decision {
        Ok(d) => with_meta(
            found(&d.location),
            LogMeta {
                hub_id: (d.hub_id != 0).then_some(d.hub_id),
                client_id: Some(valid.app.client_id),
                token_hash: None,
            },
        ),
        Err(e) => error_html(&e),
    }
}

#[derive(Serialize)]
struct ApproveResponse {
    location: String,
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    granted_scopes: Vec<String>,
}

/// `POST /_sim/approve`: the consent page without a browser.
pub(crate) fn scripted_approve(
    state: &SimState,
    req: ApproveRequest,
) -> Result<Response, AuthorizeError> {
    let params = AuthorizeParams {
        client_id: Some(req.client_id.clone()),
        redirect_uri: Some(req.redirect_uri.clone()),
        scopes: req.scopes.clone(),
        optional_scopes: req.optional_scopes.clone(),
        optional_raw: req.optional_scopes.join(" "),
        state: req.state.clone(),
    };
    let mut store = state.lock();
    let valid = validate_authorize(&store, &params)?;
    let decision = decide(
        &mut store,
        &valid,
        req.state.as_deref(),
        req.hub_id,
        req.user.as_deref(),
        &req.optional_scopes,
        !req.deny,
    )?;
    Ok(Json(ApproveResponse {
        location: decision.location,
        error: decision.code.is_none().then(|| "access_denied".to_string()),
        code: decision.code,
        state: req.state,
        granted_scopes: decision.granted,
    })
    .into_response())
}
