//! Verifies API keys with a short-lived cache, and dashboard sessions without one.
//!
//! Verified keys are cached briefly so the token hand-out path does not query Postgres per call;
//! a revoked key stops working within [`KEY_CACHE_TTL`] everywhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method};
use chrono::{DateTime, Utc};
use hubkeeper_core::access::{self, keys::parse_key, InstallationApps, NewSession};
use hubkeeper_domain::{AppId, InstallationId};
use sqlx::PgPool;

use super::caller::{AuthMethod, Authenticated, Caller};
use super::csrf;
use super::sessions::{session_cookie, SessionSettings};
use crate::error::ApiError;

/// How long a verified key is trusted without asking Postgres again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

type KeyCache = HashMap<String, (Instant, Option<Caller>)>;

pub struct Authenticator {
    pool: PgPool,
    cache: Mutex<KeyCache>,
    sessions: SessionSettings,
    installation_apps: InstallationApps,
}

impl Authenticator {
    pub fn new(pool: PgPool) -> Self {
        Self {
            installation_apps: InstallationApps::new(pool.clone()),
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
        let digest = access::hash_secret(secret);
        let cache_key = format!("{id}:{digest}");
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, caller)) = cache.get(&cache_key) {
                if at.elapsed() < KEY_CACHE_TTL {
                    return Ok(caller.clone());
                }
            }
        }
        let caller = access::verify_key(&self.pool, id, &digest)
            .await?
            .map(Caller::from);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(cache_key, (Instant::now(), caller.clone()));
        }
        Ok(caller)
    }

    /// The app installation `id` belongs to (cached: it never changes), for checking a key's
    /// binding to apps; `None` when it never connected.
    pub async fn installation_app(&self, id: &InstallationId) -> Result<Option<AppId>, ApiError> {
        Ok(self.installation_apps.app_of(id).await?)
    }

    /// Forgets every cached verification (after a key is revoked).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// Opens a session for an already verified caller; returns it with its CSRF token.
    pub async fn start_session(
        &self,
        caller: &Caller,
        user_agent: Option<&str>,
    ) -> Result<(NewSession, String), ApiError> {
        let ttl = chrono::Duration::from_std(self.sessions.ttl)
            .map_err(|_| ApiError::internal("session ttl out of range"))?;
        let session = access::start_session(&self.pool, &caller.key_id, ttl, user_agent).await?;
        let csrf_token = {
            use secrecy::ExposeSecret;
            csrf::token_for(session.secret.expose_secret())
        };
        Ok((session, csrf_token))
    }

    /// The caller behind a session cookie value; `None` when unknown, expired, logged out or
    /// when its key has been revoked.
    pub async fn session(&self, secret: &str) -> Result<Option<(Caller, DateTime<Utc>)>, ApiError> {
        Ok(access::find_session(&self.pool, secret)
            .await?
            .map(|(key, expires_at)| (Caller::from(key), expires_at)))
    }

    /// Ends a session (logout).
    pub async fn end_session(&self, secret: &str) -> Result<(), ApiError> {
        Ok(access::end_session(&self.pool, secret).await?)
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
                    ApiError::unauthorized("the Authorization header must be `Bearer <api key>`")
                })?;
            return match self.verify(presented).await? {
                Some(caller) => Ok(Authenticated {
                    caller,
                    method: AuthMethod::ApiKey,
                }),
                None => Err(ApiError::unauthorized("unknown or revoked API key")),
            };
        }
        if let Some(secret) = session_cookie(headers) {
            return match self.session(secret).await? {
                Some((caller, expires_at)) => Ok(Authenticated {
                    caller,
                    method: AuthMethod::Session {
                        expires_at,
                        csrf_token: csrf::token_for(secret),
                    },
                }),
                None => Err(ApiError::unauthorized(
                    "your session has ended (expired, logged out or its key was revoked): log in again",
                )),
            };
        }
        Err(ApiError::unauthorized(
            "missing credentials: send `Authorization: Bearer <api key>` or log in at /dashboard",
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
        if !csrf::is_safe_method(method) {
            csrf::check(headers, csrf_token)?;
        }
    }
    Ok(who)
}
