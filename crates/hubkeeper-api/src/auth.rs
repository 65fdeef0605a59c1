//! Who is calling, and what they may do.
//!
//! Admin API keys look like `hk_<id>_<secret>`: the id finds the row, the secret is checked
//! against its stored SHA-256 in constant time. Keys have a role:
//! - `admin`: everything;
//! - `operator`: read, refresh, revoke, disconnect;
//! - `auditor`: read-only, including the event history and exports;
//! - `service`: the app's own backend: token hand-outs, usage reports and quota checks only.
//!
//! Verified keys are cached briefly so the token hand-out path does not query Postgres per call;
//! a revoked key stops working within [`KEY_CACHE_TTL`] everywhere.
//!
//! # Dashboard sessions
//!
//! A browser must not keep an API key in JavaScript-readable storage, so the dashboard trades the
//! key once (`POST /auth/login`) for a random session id in an `HttpOnly`, `SameSite=Strict`
//! cookie. Sessions are rows in Postgres (hashed ids) so logout, expiry and key revocation take
//! effect at once in every API process; they are not cached, because the dashboard is not a hot
//! path.
//!
//! Browsers attach cookies on their own, so a request authenticated by the cookie alone proves
//! nothing about *which page* sent it. Every state-changing request authenticated that way must
//! also carry the session's CSRF token in `x-csrf-token` (a synchronizer token derived from the
//! session secret, handed out by `GET /auth/me`, which other origins cannot read). A bearer key
//! needs no such token: browsers never attach `Authorization` headers by themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use base64::Engine;
use chrono::{DateTime, Utc};
use hubkeeper_domain::metadata::Actor;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified key is trusted without asking Postgres again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "hk_session";

/// Header carrying the CSRF token on cookie-authenticated state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Default session lifetime: a working day.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Auditor,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }

    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Service];
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            "service" => Ok(Role::Service),
            other => Err(format!(
                "unknown role `{other}` (expected admin, operator, auditor or service)"
            )),
        }
    }
}

/// What a route needs. Roles grant permissions in [`Role::allows`]: one table, one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Dashboard data, lists, details (never tokens).
    Read,
    /// Event history and exports.
    ReadAudit,
    /// Refresh, revoke, disconnect installations.
    OperateInstallations,
    /// Receive access tokens; report usage; check quotas.
    UseTokens,
    /// Apps, plans, settings, keys, crypto-shredding, dead-letter re-drive.
    Administer,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::ReadAudit,
        Permission::OperateInstallations,
        Permission::UseTokens,
        Permission::Administer,
    ];

    /// The name used in the OpenAPI document (`x-permission`) and in `/auth/me`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::ReadAudit => "read_audit",
            Permission::OperateInstallations => "operate_installations",
            Permission::UseTokens => "use_tokens",
            Permission::Administer => "administer",
        }
    }
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown permission `{s}`"))
    }
}

impl Role {
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(permission, Read | ReadAudit | OperateInstallations),
            Role::Auditor => matches!(permission, Read | ReadAudit),
            Role::Service => matches!(permission, UseTokens),
        }
    }

    /// Every permission this role holds, for clients that adapt their UI to it.
    pub fn permissions(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.allows(*p))
            .collect()
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub key_name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the {} role may not do this (it needs the {} permission)",
                self.role.as_str(),
                permission.as_str()
            )))
        }
    }

    /// The actor recorded in event metadata for commands this caller issues.
    pub fn actor(&self) -> Actor {
        Actor::AdminKey(self.key_id.clone())
    }
}

/// A freshly created key: the only moment its secret exists outside the caller's hands.
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `hk_<id>_<secret>`: shown once, never stored.
    pub token: SecretString,
}

/// How session cookies are issued.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Lifetime of a session from login (no sliding renewal: a stolen cookie dies on schedule).
    pub ttl: Duration,
    /// `Some(secure)` when the public URL is configured (its scheme decides); `None` decides per
    /// request: `Secure` unless the request's host is a loopback name, where browsers allow
    /// plain-HTTP development.
    pub secure_cookies: Option<bool>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_SESSION_TTL,
            secure_cookies: None,
        }
    }
}

/// A session just opened: the cookie value exists only in this answer.
pub struct NewSession {
    pub secret: SecretString,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// `Authorization: Bearer <api key>`.
    ApiKey,
    /// The session cookie; `csrf_token` is what state-changing requests must echo.
    Session {
        expires_at: DateTime<Utc>,
        csrf_token: String,
    },
}

/// A verified caller together with how it authenticated (what `/auth/me` reports).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    pub method: AuthMethod,
}

/// Verifies API keys with a short-lived cache, and dashboard sessions without one.
pub struct Authenticator {
    pool: PgPool,
    cache: Mutex<HashMap<String, (Instant, Option<Caller>)>>,
    sessions: SessionSettings,
}

impl Authenticator {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Mutex::new(HashMap::new()),
            sessions: SessionSettings::default(),
        }
    }

    #[must_use]
    pub fn with_sessions(mut self, sessions: SessionSettings) -> Self {
        self.sessions = sessions;
        self
    }

    pub fn session_settings(&self) -> &SessionSettings {
        &self.sessions
    }

    /// Resolves a presented key to its caller; `None` for unknown, malformed or revoked keys.
    pub async fn verify(&self, presented: &str) -> Result<Option<Caller>, ApiError> {
        let Some((id, secret)) = parse_key(presented) else {
            return Ok(None);
        };
        let digest = hash_secret(secret);
        let cache_key = format!("{id}:{digest}");
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, caller)) = cache.get(&cache_key) {
                if at.elapsed() < KEY_CACHE_TTL {
                    return Ok(caller.clone());
                }
            }
        }
        let row: Option<(String, String, String)> = sqlx::query_as(
            "UPDATE api_keys SET last_used_at = now()
              WHERE id = $1 AND revoked_at IS NULL
              RETURNING name, role, secret_hash",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let caller = row.and_then(|(name, role, stored)| {
            let matches: bool = stored.as_bytes().ct_eq(digest.as_bytes()).into();
            let role = role.parse::<Role>().ok()?;
            matches.then(|| Caller {
                key_id: id.to_string(),
                key_name: name,
                role,
            })
        });
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(cache_key, (Instant::now(), caller.clone()));
        }
        Ok(caller)
    }

    /// Forgets every cached verification (after a key is revoked).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// Opens a session for an already verified caller. Expired sessions are swept here, which
    /// keeps the table small without a background job.
    pub async fn start_session(
        &self,
        caller: &Caller,
        user_agent: Option<&str>,
    ) -> Result<NewSession, ApiError> {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let ttl = chrono::Duration::from_std(self.sessions.ttl)
            .map_err(|_| ApiError::Internal("session ttl out of range".into()))?;
        let expires_at = Utc::now() + ttl;
        let user_agent = user_agent.map(|ua| ua.chars().take(300).collect::<String>());
        sqlx::query("DELETE FROM sessions WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, key_id, expires_at, user_agent) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash_secret(&secret))
        .bind(&caller.key_id)
        .bind(expires_at)
        .bind(user_agent)
        .execute(&self.pool)
        .await?;
        Ok(NewSession {
            csrf_token: csrf_token_for(&secret),
            secret: SecretString::from(secret),
            expires_at,
        })
    }

    /// The caller behind a session cookie value; `None` when unknown, expired, logged out or
    /// when its key has been revoked.
    pub async fn session(&self, secret: &str) -> Result<Option<(Caller, DateTime<Utc>)>, ApiError> {
        if !is_session_secret(secret) {
            return Ok(None);
        }
        let row: Option<(String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE sessions s SET last_seen_at = now()
               FROM api_keys k
              WHERE s.id_hash = $1 AND k.id = s.key_id
                AND s.expires_at > now() AND k.revoked_at IS NULL
          RETURNING k.id, k.name, k.role, s.expires_at",
        )
        .bind(hash_secret(secret))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(key_id, key_name, role, expires_at)| {
            let role = role.parse::<Role>().ok()?;
            Some((
                Caller {
                    key_id,
                    key_name,
                    role,
                },
                expires_at,
            ))
        }))
    }

    /// Ends a session (logout). Ending an unknown one is not an error: the outcome is the same.
    pub async fn end_session(&self, secret: &str) -> Result<(), ApiError> {
        if is_session_secret(secret) {
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(hash_secret(secret))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Who is calling: a bearer key wins over a cookie (a client that sends both is a script,
    /// not a browser page). Does not check CSRF: see [`authenticate`].
    async fn identify(&self, headers: &HeaderMap) -> Result<Authenticated, ApiError> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let presented = value
                .to_str()
                .ok()
                .and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                })
                .ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Authorization header must be `Bearer <api key>`".into(),
                    )
                })?;
            return match self.verify(presented).await? {
                Some(caller) => Ok(Authenticated {
                    caller,
                    method: AuthMethod::ApiKey,
                }),
                None => Err(ApiError::Unauthorized("unknown or revoked API key".into())),
            };
        }
        if let Some(secret) = session_cookie(headers) {
            return match self.session(secret).await? {
                Some((caller, expires_at)) => Ok(Authenticated {
                    caller,
                    method: AuthMethod::Session {
                        expires_at,
                        csrf_token: csrf_token_for(secret),
                    },
                }),
                None => Err(ApiError::Unauthorized(
                    "your session has ended (expired, logged out or its key was revoked): log in again"
                        .into(),
                )),
            };
        }
        Err(ApiError::Unauthorized(
            "missing credentials: send `Authorization: Bearer <api key>` or log in at /dashboard"
                .into(),
        ))
    }
}

/// Authenticates a request and, for a cookie session on a state-changing method, checks its
/// CSRF token and origin. The single entry point used by the extractor and the policy layer.
pub async fn authenticate(
    auth: &Authenticator,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Authenticated, ApiError> {
    let who = auth.identify(headers).await?;
    if let AuthMethod::Session { csrf_token, .. } = &who.method {
        if !is_safe_method(method) {
            check_csrf(headers, csrf_token)?;
        }
    }
    Ok(who)
}

/// GET, HEAD and OPTIONS change nothing, so they need no CSRF token.
pub fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn check_csrf(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        if origin != "null" && origin_host.is_some() && origin_host != host {
            return Err(ApiError::Forbidden(
                "cross-origin request refused: the dashboard only accepts requests from its own pages"
                    .into(),
            ));
        }
    }
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let matches: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
    if presented.is_empty() || !matches {
        return Err(ApiError::Forbidden(format!(
            "missing or wrong CSRF token: send the token from GET /auth/me in the {CSRF_HEADER} header"
        )));
    }
    Ok(())
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// The CSRF token of a session: derived from its secret, so it needs no storage, yet cannot be
/// computed without the `HttpOnly` cookie.
fn csrf_token_for(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"hubkeeper csrf v1\0");
    hasher.update(secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize())
}

fn is_session_secret(secret: &str) -> bool {
    secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether cookies for this request get `Secure`: per configuration, else by host.
pub fn cookie_is_secure(settings: &SessionSettings, headers: &HeaderMap) -> bool {
    if let Some(secure) = settings.secure_cookies {
        return secure;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !is_loopback_host(host)
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1") || name.ends_with(".localhost")
}

/// `Set-Cookie` value opening a session.
pub fn session_set_cookie(secret: &SecretString, max_age: Duration, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        secret.expose_secret(),
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` value removing the session cookie.
pub fn session_clear_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Creates a key and returns its one-time token. `created_by` is an actor string
/// (`key:<id>`, `system:bootstrap`, `cli`).
pub async fn create_key(
    pool: &PgPool,
    name: &str,
    role: Role,
    created_by: &str,
) -> Result<NewApiKey, sqlx::Error> {
    let mut id_bytes = [0u8; 6];
    let mut secret_bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut id_bytes);
    rand::thread_rng().fill_bytes(&mut secret_bytes);
    let id = format!("ak{}", hex::encode(id_bytes));
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
    sqlx::query(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(name)
    .bind(role.as_str())
    .bind(hash_secret(&secret))
    .bind(created_by)
    .execute(pool)
    .await?;
    Ok(NewApiKey {
        token: SecretString::from(format!("hk_{id}_{secret}")),
        id,
        name: name.to_string(),
        role,
    })
}

/// Why a given key could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallKeyError {
    #[error("the key does not have the shape hk_ak<12 hex digits>_<40 to 64 characters>")]
    Malformed,
    #[error("key {0} exists with a different secret")]
    SecretMismatch(String),
    #[error("key {0} exists with role {1}, not {2}")]
    RoleMismatch(String, String, &'static str),
    #[error("key {0} was revoked; choose another key")]
    Revoked(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Whether [`install_key`] added the key or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    Added,
    AlreadyPresent,
}

/// Installs a key chosen outside Hubkeeper (e.g. from a deployment's secret store), so the same
/// key works on every start. Idempotent for the same key; refuses to overwrite or resurrect.
pub async fn install_key(
    pool: &PgPool,
    token: &SecretString,
    name: &str,
    role: Role,
    created_by: &str,
) -> Result<(String, Installed), InstallKeyError> {
    let (id, secret) = parse_key(token.expose_secret()).ok_or(InstallKeyError::Malformed)?;
    let digest = hash_secret(secret);
    let inserted = sqlx::query(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(name)
    .bind(role.as_str())
    .bind(&digest)
    .bind(created_by)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok((id.to_string(), Installed::Added));
    }
    let (stored, stored_role, revoked): (String, String, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT secret_hash, role, revoked_at FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let same: bool = stored.as_bytes().ct_eq(digest.as_bytes()).into();
    if !same {
        return Err(InstallKeyError::SecretMismatch(id.to_string()));
    }
    if revoked.is_some() {
        return Err(InstallKeyError::Revoked(id.to_string()));
    }
    if stored_role != role.as_str() {
        return Err(InstallKeyError::RoleMismatch(
            id.to_string(),
            stored_role,
            role.as_str(),
        ));
    }
    Ok((id.to_string(), Installed::AlreadyPresent))
}

/// Whether `presented` has the shape of an API key (`hk_<id>_<secret>`).
pub fn is_well_formed_key(presented: &str) -> bool {
    parse_key(presented).is_some()
}

/// Revokes a key and ends its dashboard sessions; returns whether an active key was revoked.
pub async fn revoke_key(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    sqlx::query("DELETE FROM sessions WHERE key_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

fn parse_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.trim().strip_prefix("hk_")?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 14
        && id.starts_with("ak")
        && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
        && (40..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some((id, secret))
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The policy layer has usually authenticated the request already.
        if let Some(done) = parts.extensions.get::<Authenticated>() {
            return Ok(done.clone());
        }
        let done = authenticate(state.auth(), &parts.method, &parts.headers).await?;
        parts.extensions.insert(done.clone());
        Ok(done)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Authenticated::from_request_parts(parts, state)
            .await?
            .caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn roles_grant_what_the_dashboard_seed_says() {
        use Permission::*;
        assert!(Role::Admin.allows(Administer));
        assert!(Role::Operator.allows(OperateInstallations));
        assert!(!Role::Operator.allows(Administer));
        assert!(!Role::Operator.allows(UseTokens));
        assert!(Role::Auditor.allows(ReadAudit));
        assert!(!Role::Auditor.allows(OperateInstallations));
        assert!(!Role::Auditor.allows(UseTokens));
        assert!(Role::Service.allows(UseTokens));
        assert!(!Role::Service.allows(Read));
        assert_eq!(Role::Auditor.permissions(), vec![Read, ReadAudit]);
    }

    #[test]
    fn permissions_round_trip_through_their_names() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
        }
        assert!("write".parse::<Permission>().is_err());
    }

    #[test]
    fn keys_parse_only_in_their_exact_shape() {
        let secret = "a".repeat(43);
        let good = format!("hk_ak0123456789ab_{secret}");
        assert_eq!(parse_key(&good), Some(("ak0123456789ab", secret.as_str())));
        assert_eq!(parse_key("hk_ak0123456789ab_short"), None);
        assert_eq!(parse_key(&format!("xx_ak0123456789ab_{secret}")), None);
        assert_eq!(parse_key(&format!("hk_zz0123456789ab_{secret}")), None);
        assert_eq!(
            parse_key(&format!("hk_ak0123456789ab_{}!", "a".repeat(42))),
            None
        );
        assert_eq!(parse_key(""), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let secret = "b".repeat(43);
        let h = headers(&[("cookie", &format!("theme=dark; hk_session={secret}; x=1"))]);
        assert_eq!(session_cookie(&h), Some(secret.as_str()));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "hk_sessionx=1")])),
            None
        );
    }

    #[test]
    fn csrf_tokens_are_checked_exactly_and_cross_origin_is_refused() {
        let token = csrf_token_for(&"c".repeat(43));
        assert_ne!(token, csrf_token_for(&"d".repeat(43)));
        let ok = headers(&[("x-csrf-token", &token), ("host", "h:1")]);
        assert!(check_csrf(&ok, &token).is_ok());
        let same_origin = headers(&[
            ("x-csrf-token", &token),
            ("host", "h:1"),
            ("origin", "http://h:1"),
        ]);
        assert!(check_csrf(&same_origin, &token).is_ok());
        let wrong = headers(&[("x-csrf-token", "nope"), ("host", "h:1")]);
        assert!(matches!(
            check_csrf(&wrong, &token),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            check_csrf(&headers(&[("host", "h:1")]), &token),
            Err(ApiError::Forbidden(_))
        ));
        let cross = headers(&[
            ("x-csrf-token", &token),
            ("host", "h:1"),
            ("origin", "https://evil.example"),
        ]);
        assert!(matches!(
            check_csrf(&cross, &token),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn cookies_are_secure_except_on_loopback_unless_configured() {
        let by_host = SessionSettings::default();
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost",
        ] {
            assert!(
                !cookie_is_secure(&by_host, &headers(&[("host", host)])),
                "{host}"
            );
        }
        assert!(cookie_is_secure(
            &by_host,
            &headers(&[("host", "hubkeeper.example.com")])
        ));
        assert!(cookie_is_secure(&by_host, &HeaderMap::new()));
        let forced = SessionSettings {
            secure_cookies: Some(true),
            ..SessionSettings::default()
        };
        assert!(cookie_is_secure(
            &forced,
            &headers(&[("host", "localhost:8080")])
        ));
        let cookie = session_set_cookie(
            &SecretString::from("s".repeat(43)),
            Duration::from_secs(60),
            true,
        );
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.ends_with("; Secure"));
    }
}
