//! OAuth: consent pages, scripted consent, token endpoint (authorization_code and refresh_token
//! grants on both endpoint generations), introspection and revocation.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use crate::config::{AppSpec, RotationMode, UserSpec};
use crate::html::{consent_page, error_page, ConsentView};
use crate::model::{ApproveRequest, InactiveIntrospection, RefreshTokenState};
use crate::respond::{api_error, oauth_error, with_meta, LogMeta};
use crate::state::{deadline, AccessCheck, AuthCode, InstallKey, SimState, Store};
use crate::tokens::{correlation_id, new_auth_code, TokenHash};

/// Decodes a form or query string; the first occurrence of a key wins.
pub(crate) fn form_map(raw: &[u8]) -> Option<HashMap<String, String>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw).ok()?;
    let mut map = HashMap::new();
    for (k, v) in pairs {
        map.entry(k).or_insert(v);
    }
    Some(map)
}

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

/// Success body of both token endpoint generations.
#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    token_type: &'static str,
    token_use: &'static str,
    hub_id: u64,
    user_id: u64,
    scopes: Vec<String>,
}

fn token_ok(body: TokenResponse, meta: LogMeta) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_meta(response, meta)
}

fn bad_client(message: &str) -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "BAD_CLIENT_ID",
        message,
        "invalid_client",
    )
}

/// Why client authentication failed; turned into HubSpot's 401 by [`ClientAuthError::response`].
enum ClientAuthError {
    MissingClientId,
    UnknownClient,
    BadSecret,
}

impl ClientAuthError {
    fn response(&self) -> Response {
        match self {
            ClientAuthError::MissingClientId => bad_client("missing client_id"),
            ClientAuthError::UnknownClient => bad_client("missing or unknown client id"),
            ClientAuthError::BadSecret => oauth_error(
                StatusCode::UNAUTHORIZED,
                "BAD_CLIENT_SECRET",
                "client secret is missing or does not match the client id",
                "invalid_client",
            ),
        }
    }
}

/// Client authentication shared by the token, introspect and revoke endpoints. Credentials are
/// read from the form body only, as HubSpot documents.
fn authenticate_client(
    store: &Store,
    form: &HashMap<String, String>,
) -> Result<AppSpec, ClientAuthError> {
    let Some(client_id) = form.get("client_id").filter(|c| !c.is_empty()) else {
        return Err(ClientAuthError::MissingClientId);
    };
    let Some(app) = store.apps.get(client_id) else {
        return Err(ClientAuthError::UnknownClient);
    };
    match form.get("client_secret") {
        Some(secret) if secret == app.client_secret.expose() => Ok(app.clone()),
        _ => Err(ClientAuthError::BadSecret),
    }
}

/// `POST /oauth/v1/token`, `/oauth/2026-03/token` and `/oauth/v3/token`.
pub(crate) async fn token(State(state): State<SimState>, body: Bytes) -> Response {
    let Some(form) = form_map(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "the request body must be application/x-www-form-urlencoded",
            "invalid_request",
        );
    };
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    match grant_type {
        "authorization_code" | "refresh_token" => {}
        "" => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "BAD_GRANT_TYPE",
                "missing grant_type",
                "invalid_request",
            )
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "BAD_GRANT_TYPE",
                "unsupported grant_type",
                "unsupported_grant_type",
            )
        }
    }
    let mut store = state.lock();
    let app = match authenticate_client(&store, &form) {
        Ok(app) => app,
        Err(e) => {
            let response = e.response();
            let client_id = form
                .get("client_id")
                .filter(|c| store.apps.contains_key(*c))
                .cloned();
            store.counters.bump(None, client_id.as_deref(), |c| {
                if grant_type == "refresh_token" {
                    c.refresh_calls += 1;
                    c.refresh_failures += 1;
                } else {
                    c.code_exchanges += 1;
                    c.code_exchange_failures += 1;
                }
            });
            return with_meta(
                response,
                LogMeta {
                    client_id,
                    ..LogMeta::default()
                },
            );
        }
    };
    if grant_type == "authorization_code" {
        exchange_code(&mut store, &app, &form)
    } else {
        refresh(&mut store, &app, &form)
    }
}

fn exchange_code(store: &mut Store, app: &AppSpec, form: &HashMap<String, String>) -> Response {
    let now = Instant::now();
    let code = form.get("code").map(String::as_str).unwrap_or("");
    let hash = TokenHash::of(code);
    let mut meta = LogMeta {
        client_id: Some(app.client_id.clone()),
        token_hash: (!code.is_empty()).then(|| hash.short()),
        ..LogMeta::default()
    };
    let checked = match store.codes.get_mut(&hash) {
        _ if code.is_empty() => Err(("BAD_AUTH_CODE", "missing or unknown auth code")),
        None => Err(("BAD_AUTH_CODE", "missing or unknown auth code")),
        Some(c) if c.client_id != app.client_id => Err((
            "BAD_AUTH_CODE",
            "auth code was issued to a different client",
        )),
        Some(c) => {
            meta.hub_id = Some(c.hub_id);
            if c.used {
                Err(("BAD_AUTH_CODE", "auth code has already been used"))
            } else if c.expires_at <= now {
                Err(("BAD_AUTH_CODE", "auth code has expired"))
            } else if form.get("redirect_uri") != Some(&c.redirect_uri) {
                Err((
                    "BAD_REDIRECT_URI",
                    "redirect_uri does not match the one used for the authorization request",
                ))
            } else {
                c.used = true;
                Ok((
                    InstallKey {
                        client_id: c.client_id.clone(),
                        hub_id: c.hub_id,
                    },
                    c.user.clone(),
                    c.scopes.clone(),
                ))
            }
        }
    };
    let fail = |store: &mut Store, meta: LogMeta, status: &str, message: &str| {
        store.counters.bump(meta.hub_id, Some(&app.client_id), |c| {
            c.code_exchanges += 1;
            c.code_exchange_failures += 1;
        });
        with_meta(
            oauth_error(StatusCode::BAD_REQUEST, status, message, "invalid_grant"),
            meta,
        )
    };
    let key = match checked {
        Ok((key, user, scopes)) => {
            // The tokens carry what this consent granted, even if a later consent changed the
            // installation in between.
            if let Some(inst) = store.installations.get_mut(&key) {
                inst.user = user;
                inst.scopes = scopes;
            }
            key
        }
        Err((status, message)) => return fail(store, meta, status, message),
    };
    let Some((access_token, expires_in)) = store.issue_access_token(&key, now) else {
        return fail(
            store,
            meta,
            "BAD_AUTH_CODE",
            "the installation no longer exists",
        );
    };
    let Some(refresh_token) = store.issue_refresh_token(&key) else {
        return fail(
            store,
            meta,
            "BAD_AUTH_CODE",
            "the installation no longer exists",
        );
    };
    store
        .counters
        .bump(Some(key.hub_id), Some(&app.client_id), |c| {
            c.code_exchanges += 1
        });
    let (user_id, scopes) = match store.installation(&key) {
        Some(i) => (i.user.user_id, i.scopes.clone()),
        None => (0, Vec::new()),
    };
    token_ok(
        TokenResponse {
            access_token,
            refresh_token,
            expires_in,
            token_type: "bearer",
            token_use: "access_token",
            hub_id: key.hub_id,
            user_id,
            scopes,
        },
        meta,
    )
}

fn refresh(store: &mut Store, app: &AppSpec, form: &HashMap<String, String>) -> Response {
    let now = Instant::now();
    let presented = form.get("refresh_token").map(String::as_str).unwrap_or("");
    let hash = TokenHash::of(presented);
    let mut meta = LogMeta {
        client_id: Some(app.client_id.clone()),
        token_hash: (!presented.is_empty()).then(|| hash.short()),
        ..LogMeta::default()
    };
    let fail = |store: &mut Store, meta: LogMeta| {
        store.counters.bump(meta.hub_id, Some(&app.client_id), |c| {
            c.refresh_calls += 1;
            c.refresh_failures += 1;
        });
        with_meta(
            oauth_error(
                StatusCode::BAD_REQUEST,
                "BAD_REFRESH_TOKEN",
                "missing or unknown refresh token",
                "invalid_grant",
            ),
            meta,
        )
    };
    let key = match store.refresh_tokens.get_mut(&hash) {
        Some(rec) if !presented.is_empty() && rec.key.client_id == app.client_id => {
            rec.refresh_calls += 1;
            rec.key.clone()
        }
        _ => return fail(store, meta),
    };
    meta.hub_id = Some(key.hub_id);
    store.record_refresh_call(&key, now);
    let usable = store
        .refresh_tokens
        .get(&hash)
        .map(|rec| store.refresh_state(rec, now))
        .is_some_and(|s| matches!(s, RefreshTokenState::Active | RefreshTokenState::Superseded));
    if !usable {
        return fail(store, meta);
    }
    let Some((access_token, expires_in)) = store.issue_access_token(&key, now) else {
        return fail(store, meta);
    };
    let refresh_token = match store.settings.rotation {
        RotationMode::Off => presented.to_string(),
        RotationMode::On { grace } => {
            let Some(new) = store.issue_refresh_token(&key) else {
                return fail(store, meta);
            };
            if let Some(rec) = store.refresh_tokens.get_mut(&hash) {
                let dies = deadline(now, grace);
                rec.dies_at = Some(rec.dies_at.map_or(dies, |d| d.min(dies)));
            }
            store
                .counters
                .bump(Some(key.hub_id), Some(&app.client_id), |c| {
                    c.rotated_tokens += 1
                });
            new
        }
    };
    store
        .counters
        .bump(Some(key.hub_id), Some(&app.client_id), |c| {
            c.refresh_calls += 1
        });
    let (user_id, scopes) = match store.installation(&key) {
        Some(i) => (i.user.user_id, i.scopes.clone()),
        None => (0, Vec::new()),
    };
    token_ok(
        TokenResponse {
            access_token,
            refresh_token,
            expires_in,
            token_type: "bearer",
            token_use: "access_token",
            hub_id: key.hub_id,
            user_id,
            scopes,
        },
        meta,
    )
}

fn not_found(message: &str) -> Response {
    api_error(StatusCode::NOT_FOUND, message, "OBJECT_NOT_FOUND")
}

/// `GET /oauth/v1/access-tokens/{token}`.
pub(crate) async fn legacy_access_token_info(
    State(state): State<SimState>,
    Path(token): Path<String>,
) -> Response {
    let now = Instant::now();
    let hash = TokenHash::of(&token);
    let mut store = state.lock();
    let mut meta = LogMeta {
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let response = match store.check_access_token(&hash, now) {
        AccessCheck::Live(rec) => {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
            Json(json!({
                "token": token,
                "user": rec.user.email,
                "hub_domain": store.account_domain(rec.key.hub_id),
                "scopes": rec.scopes,
                "hub_id": rec.key.hub_id,
                "app_id": rec.app_id,
                "expires_in": rec.expires_at.saturating_duration_since(now).as_secs(),
                "user_id": rec.user.user_id,
                "token_type": "access",
                "is_private_distribution": false,
            }))
            .into_response()
        }
        AccessCheck::Expired { rec, ago } => {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
            expired_error(ago)
        }
        AccessCheck::Dead(rec) => {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
            not_found("missing or unknown access token")
        }
        AccessCheck::Unknown => not_found("missing or unknown access token"),
    };
    store
        .counters
        .bump(meta.hub_id, meta.client_id.as_deref(), |c| {
            c.introspections += 1
        });
    with_meta(response, meta)
}

pub(crate) fn expired_error(ago: std::time::Duration) -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        &format!(
            "The OAuth token used to make this call expired {} minute(s) ago.",
            ago.as_secs() / 60
        ),
        "EXPIRED_AUTHENTICATION",
    )
}

fn refresh_not_found() -> Response {
    oauth_error(
        StatusCode::NOT_FOUND,
        "BAD_REFRESH_TOKEN",
        "missing or unknown refresh token",
        "invalid_grant",
    )
}

/// `GET /oauth/v1/refresh-tokens/{token}`.
pub(crate) async fn legacy_refresh_token_info(
    State(state): State<SimState>,
    Path(token): Path<String>,
) -> Response {
    let now = Instant::now();
    let hash = TokenHash::of(&token);
    let mut store = state.lock();
    let mut meta = LogMeta {
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let response = match store.refresh_tokens.get(&hash) {
        Some(rec) => {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
            match (store.refresh_state(rec, now), store.installation(&rec.key)) {
                (RefreshTokenState::Active | RefreshTokenState::Superseded, Some(inst)) => {
                    Json(json!({
                        "token": token,
                        "user": inst.user.email,
                        "hub_domain": store.account_domain(rec.key.hub_id),
                        "scopes": inst.scopes,
                        "hub_id": rec.key.hub_id,
                        "client_id": rec.key.client_id,
                        "user_id": inst.user.user_id,
                        "token_type": "refresh",
                    }))
                    .into_response()
                }
                _ => refresh_not_found(),
            }
        }
        None => refresh_not_found(),
    };
    store
        .counters
        .bump(meta.hub_id, meta.client_id.as_deref(), |c| {
            c.introspections += 1
        });
    with_meta(response, meta)
}

/// `DELETE /oauth/v1/refresh-tokens/{token}`: kills the refresh token only; access tokens already
/// issued keep working until they expire, and the app stays installed (HubSpot's documented
/// behaviour).
pub(crate) async fn legacy_revoke(
    State(state): State<SimState>,
    Path(token): Path<String>,
) -> Response {
    let now = Instant::now();
    let hash = TokenHash::of(&token);
    let mut store = state.lock();
    let mut meta = LogMeta {
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let usable = match store.refresh_tokens.get(&hash) {
        Some(rec) => {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
            matches!(
                store.refresh_state(rec, now),
                RefreshTokenState::Active | RefreshTokenState::Superseded
            )
        }
        None => false,
    };
    let response = if usable {
        if let Some(rec) = store.refresh_tokens.get_mut(&hash) {
            rec.revoked = true;
        }
        StatusCode::NO_CONTENT.into_response()
    } else {
        refresh_not_found()
    };
    store
        .counters
        .bump(meta.hub_id, meta.client_id.as_deref(), |c| c.revokes += 1);
    with_meta(response, meta)
}

fn bad_form() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "the request body must be application/x-www-form-urlencoded",
        "invalid_request",
    )
}

fn missing_token() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "missing token",
        "invalid_request",
    )
}

/// `POST /oauth/2026-03/token/introspect` (and the `/oauth/v3/` alias).
pub(crate) async fn introspect(State(state): State<SimState>, body: Bytes) -> Response {
    let Some(form) = form_map(&body) else {
        return bad_form();
    };
    let now = Instant::now();
    let mut store = state.lock();
    let app = match authenticate_client(&store, &form) {
        Ok(app) => app,
        Err(e) => return e.response(),
    };
    let token = form.get("token").map(String::as_str).unwrap_or("");
    if token.is_empty() {
        return missing_token();
    }
    let hash = TokenHash::of(token);
    let mut meta = LogMeta {
        client_id: Some(app.client_id.clone()),
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let hint_refresh = form.get("token_type_hint").map(String::as_str) == Some("refresh_token");
    let access = || match store.check_access_token(&hash, now) {
        AccessCheck::Live(rec) if rec.key.client_id == app.client_id => Some(json!({
            "active": true,
            "token_use": "access_token",
            "token_type": "bearer",
            "client_id": rec.key.client_id,
            "app_id": rec.app_id,
            "hub_id": rec.key.hub_id,
            "hub_domain": store.account_domain(rec.key.hub_id),
            "user_id": rec.user.user_id,
            "user": rec.user.email,
            "scopes": rec.scopes,
            "expires_in": rec.expires_at.saturating_duration_since(now).as_secs(),
        })),
        _ => None,
    };
    let refresh = || {
        let rec = store.refresh_tokens.get(&hash)?;
        if rec.key.client_id != app.client_id
            || !matches!(
                store.refresh_state(rec, now),
                RefreshTokenState::Active | RefreshTokenState::Superseded
            )
        {
            return None;
        }
        let inst = store.installation(&rec.key)?;
        Some(json!({
            "active": true,
            "token_use": "refresh_token",
            "client_id": rec.key.client_id,
            "app_id": inst.app_id,
            "hub_id": rec.key.hub_id,
            "hub_domain": store.account_domain(rec.key.hub_id),
            "user_id": inst.user.user_id,
            "user": inst.user.email,
            "scopes": inst.scopes,
        }))
    };
    let found = if hint_refresh {
        refresh().or_else(access)
    } else {
        access().or_else(refresh)
    };
    if let Some(hub) = found.as_ref().and_then(|v| v["hub_id"].as_u64()) {
        meta.hub_id = Some(hub);
    }
    let response = match found {
        Some(body) => Json(body).into_response(),
        None => match store.settings.v3_inactive_introspection {
            InactiveIntrospection::ActiveFalse => Json(json!({ "active": false })).into_response(),
            InactiveIntrospection::ValidationError => (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "Token is invalid",
                    "correlationId": correlation_id(),
                    "context": { "token": ["Token is invalid"] },
                    "errors": [{
                        "code": "400",
                        "in": "token",
                        "message": "Token is invalid",
                        "subCategory": "OAUTH",
                        "context": { "token": ["Token is invalid"] },
                    }],
                })),
            )
                .into_response(),
        },
    };
    store
        .counters
        .bump(meta.hub_id, Some(&app.client_id), |c| c.introspections += 1);
    with_meta(response, meta)
}

/// `POST /oauth/2026-03/token/revoke` (and the `/oauth/v3/` alias). Like RFC 7009, an unknown
/// token is not an error; the success status is configurable because HubSpot's is unconfirmed.
pub(crate) async fn revoke(State(state): State<SimState>, body: Bytes) -> Response {
    let Some(form) = form_map(&body) else {
        return bad_form();
    };
    let mut store = state.lock();
    let app = match authenticate_client(&store, &form) {
        Ok(app) => app,
        Err(e) => return e.response(),
    };
    let token = form.get("token").map(String::as_str).unwrap_or("");
    if token.is_empty() {
        return missing_token();
    }
    let hash = TokenHash::of(token);
    let mut meta = LogMeta {
        client_id: Some(app.client_id.clone()),
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    if let Some(rec) = store.refresh_tokens.get_mut(&hash) {
        if rec.key.client_id == app.client_id {
            rec.revoked = true;
            meta.hub_id = Some(rec.key.hub_id);
        }
    } else if let Some(rec) = store.access_tokens.get_mut(&hash) {
        if rec.key.client_id == app.client_id {
            rec.revoked = true;
            meta.hub_id = Some(rec.key.hub_id);
        }
    }
    store
        .counters
        .bump(meta.hub_id, Some(&app.client_id), |c| c.revokes += 1);
    let status = StatusCode::from_u16(store.settings.v3_revoke_status).unwrap_or(StatusCode::OK);
    with_meta(status.into_response(), meta)
}
