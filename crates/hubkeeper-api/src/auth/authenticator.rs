//! Verifies API keys with a short-lived cache, and dashboard sessions without one.
//!
//! Verified keys are cached briefly so the token hand-out path does not query Postgres per call.
//! A revocation empties the cache of every API process that follows revocations
//! ([`Authenticator::follow_revocations`], on the cache-invalidation broadcast); a process that
//! missed the message stops accepting the key within [`KEY_CACHE_TTL`]. Known keys and refusals are
//! kept in two bounded LRU caches ([`KeyCache`]), so a flood of random keys only ever evicts other
//! refusals: it cannot flush the keys real clients use.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method};
use chrono::{DateTime, Utc};
use hubkeeper_core::access::{self, keys::parse_key, InstallationApps, NewSession};
use hubkeeper_core::{Broadcaster, Invalidation, ListenerGuard};
use hubkeeper_domain::{AppId, InstallationId};
use sqlx::PgPool;

use super::caller::{AuthMethod, Authenticated, Caller};
use super::csrf;
use super::sessions::{session_cookie, SessionSettings};
use crate::error::ApiError;

/// How long a verified key is trusted without asking Postgres again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Entries per cache (known keys, refusals).
pub const KEY_CACHE_CAPACITY: usize = 10_000;

/// A bounded least-recently-used map: inserting into a full one evicts the entry used longest ago.
struct Lru<V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (u64, V)>,
    /// Last use -> key, oldest first.
    order: BTreeMap<u64, String>,
}

impl<V: Clone> Lru<V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn get(&mut self, key: &str) -> Option<V> {
        let tick = self.next_tick();
        let (used, value) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key.to_owned());
        Some(value.clone())
    }

    fn insert(&mut self, key: String, value: V) {
        let tick = self.next_tick();
        if let Some((used, _)) = self.entries.remove(&key) {
            self.order.remove(&used);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        self.order.insert(tick, key.clone());
        self.entries.insert(key, (tick, value));
    }

    fn remove(&mut self, key: &str) {
        if let Some((used, _)) = self.entries.remove(key) {
            self.order.remove(&used);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Verifications of presented keys: known keys and refusals apart, each an LRU of
/// [`KEY_CACHE_CAPACITY`], entries trusted for [`KEY_CACHE_TTL`].
pub struct KeyCache {
    known: Lru<(Instant, Caller)>,
    refused: Lru<Instant>,
    /// Bumped by every [`KeyCache::clear`], so a verification that read Postgres before a
    /// revocation cannot put its (stale) answer back afterwards.
    generation: u64,
}

impl KeyCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            known: Lru::new(capacity),
            refused: Lru::new(capacity),
            generation: 0,
        }
    }

    /// `Some(answer)` when a fresh verification of `key` is cached.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Option<Caller>> {
        if let Some((at, caller)) = self.known.get(key) {
            if now.duration_since(at) < KEY_CACHE_TTL {
                return Some(Some(caller));
            }
            self.known.remove(key);
        }
        if let Some(at) = self.refused.get(key) {
            if now.duration_since(at) < KEY_CACHE_TTL {
                return Some(None);
            }
            self.refused.remove(key);
        }
        None
    }

    pub fn insert(&mut self, key: String, answer: Option<Caller>, now: Instant) {
        match answer {
            Some(caller) => {
                self.refused.remove(&key);
                self.known.insert(key, (now, caller));
            }
            None => {
                self.known.remove(&key);
                self.refused.insert(key, now);
            }
        }
    }

    pub fn clear(&mut self) {
        self.known.clear();
        self.refused.clear();
        self.generation += 1;
    }

    /// Changes with every [`KeyCache::clear`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// (known keys, refusals) cached.
    pub fn len(&self) -> (usize, usize) {
        (self.known.len(), self.refused.len())
    }
}

pub struct Authenticator {
    pool: PgPool,
    cache: Mutex<KeyCache>,
    sessions: SessionSettings,
    installation_apps: InstallationApps,
    revocations: Mutex<Option<ListenerGuard>>,
}

impl Authenticator {
    pub fn new(pool: PgPool) -> Self {
        Self {
            installation_apps: InstallationApps::new(pool.clone()),
            pool,
            cache: Mutex::new(KeyCache::new(KEY_CACHE_CAPACITY)),
            sessions: SessionSettings::default(),
            revocations: Mutex::new(None),
        }
    }

    /// Empties the key cache whenever any process broadcasts a revoked key, for as long as this
    /// authenticator lives (without NATS, revocations elsewhere take [`KEY_CACHE_TTL`]).
    pub async fn follow_revocations(self: &Arc<Self>, broadcaster: &Broadcaster) {
        let guard = broadcaster
            .listen(
                Arc::downgrade(self),
                |auth: Arc<Authenticator>, invalidation| async move {
                    if let Invalidation::ApiKey { key_id } = invalidation {
                        tracing::info!(%key_id, "API key revoked; key cache emptied");
                        auth.clear_cache();
                    }
                },
            )
            .await;
        if let Ok(mut slot) = self.revocations.lock() {
            *slot = guard;
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
        let mut generation = None;
        if let Ok(mut cache) = self.cache.lock() {
            if let Some(answer) = cache.get(&cache_key, Instant::now()) {
                return Ok(answer);
            }
            generation = Some(cache.generation());
        }
        let caller = access::verify_key(&self.pool, id, &digest)
            .await?
            .map(Caller::from);
        if let Ok(mut cache) = self.cache.lock() {
            // A revocation while Postgres was asked: this answer may predate it.
            if generation == Some(cache.generation()) {
                cache.insert(cache_key, caller.clone(), Instant::now());
            }
        }
        Ok(caller)
    }

    /// The app installation `id` belongs to (cached: it never changes), for checking a key's
    /// binding to apps; `None` when it never connected.
    pub async fn installation_app(&self, id: &InstallationId) -> Result<Option<AppId>, ApiError> {
        Ok(self.installation_apps.app_of(id).await?)
    }

    /// Forgets every cached verification (after a key is revoked; revocations are rare enough
    /// that emptying the whole cache costs nothing worth a finer index).
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
        if let Some(secret) = session_cookie(headers, &self.sessions) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn caller(id: &str) -> Caller {
        Caller {
            key_id: id.into(),
            key_name: id.into(),
            role: Role::Service,
            apps: Vec::new(),
        }
    }

    #[test]
    fn random_keys_cannot_flush_the_keys_in_use() {
        let now = Instant::now();
        let mut cache = KeyCache::new(100);
        cache.insert("real".into(), Some(caller("real")), now);
        for i in 0..10_000 {
            cache.insert(format!("random-{i}"), None, now);
        }
        assert_eq!(cache.get("real", now), Some(Some(caller("real"))));
        assert_eq!(cache.len(), (1, 100), "both caches stay bounded");
        assert_eq!(cache.get("random-9999", now), Some(None));
        assert_eq!(
            cache.get("random-0", now),
            None,
            "the oldest refusal was evicted"
        );
    }

    #[test]
    fn the_least_recently_used_key_goes_first_and_entries_expire() {
        let now = Instant::now();
        let mut cache = KeyCache::new(2);
        cache.insert("a".into(), Some(caller("a")), now);
        cache.insert("b".into(), Some(caller("b")), now);
        assert!(
            cache.get("a", now).is_some(),
            "a used again: b is now the oldest"
        );
        cache.insert("c".into(), Some(caller("c")), now);
        assert_eq!(cache.get("b", now), None);
        assert!(cache.get("a", now).is_some() && cache.get("c", now).is_some());
        let later = now + KEY_CACHE_TTL;
        assert_eq!(
            cache.get("a", later),
            None,
            "trusted for KEY_CACHE_TTL only"
        );
        // A key that becomes known (or revoked) moves between the caches.
        cache.insert("c".into(), None, now);
        assert_eq!(cache.get("c", now), Some(None));
        assert_eq!(cache.len(), (0, 1));
    }
}
