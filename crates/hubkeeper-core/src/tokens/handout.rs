//! Handing out access tokens: the per-process cache of decrypted access tokens, served only
//! while valid for the requested margin and younger than the maximum age, and its
//! invalidation here and, through the broadcaster, in every other process.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubkeeper_crypto::{ExposeSecret, SecretString};
use hubkeeper_domain::installation::{Installation, InstallationStatus};
use hubkeeper_domain::{HubId, InstallationId};

use super::refresh::{not_refreshable_error, Flight, Need, RefreshTrigger};
use super::{chrono_duration, status_error, Inner, TokenService};
use crate::broadcast::Invalidation;
use crate::error::CoreError;

/// A token handed to a caller. `Debug` shows no token (it is a `SecretString`).
#[derive(Debug, Clone)]
pub struct HandedOutToken {
    pub access_token: SecretString,
    pub expires_at: DateTime<Utc>,
    pub hub_id: HubId,
    pub scopes: Vec<String>,
    /// Which refresh of the installation issued it (see [`TokenService::replace_rejected`]).
    pub generation: u64,
}

#[derive(Clone)]
pub(super) struct CachedToken {
    pub(super) access: SecretString,
    pub(super) expires_at: DateTime<Utc>,
    pub(super) generation: u64,
    pub(super) hub_id: HubId,
    pub(super) scopes: Vec<String>,
    pub(super) cached_at: Instant,
}

impl CachedToken {
    pub(super) fn handed_out(&self) -> HandedOutToken {
        HandedOutToken {
            access_token: self.access.clone(),
            expires_at: self.expires_at,
            hub_id: self.hub_id,
            scopes: self.scopes.clone(),
            generation: self.generation,
        }
    }
}

impl TokenService {
    /// An access token valid for at least `min_validity`, refreshing first when needed.
    pub async fn get_token(
        &self,
        id: &InstallationId,
        min_validity: Duration,
        request_id: Option<&str>,
    ) -> Result<HandedOutToken, CoreError> {
        let started = Instant::now();
        let result = self.get_token_inner(id, min_validity, request_id).await;
        if result.is_ok() {
            metrics::histogram!("hk_token_handout_seconds").record(started.elapsed().as_secs_f64());
            self.inner.count_handout(*id, self.inner.clock.now());
        }
        result
    }

    /// [`TokenService::get_token`] without counting a hand-out: for a caller that already
    /// counted this use and only needs the current token again (the proxy after waiting for a
    /// slot, during which the token may have been refreshed).
    pub(crate) async fn get_token_inner(
        &self,
        id: &InstallationId,
        min_validity: Duration,
        request_id: Option<&str>,
    ) -> Result<HandedOutToken, CoreError> {
        let margin = chrono_duration(min_validity);
        let now = self.inner.clock.now();
        if let Some(hit) = self.inner.cached(id) {
            if hit.expires_at - now >= margin {
                metrics::counter!("hk_token_cache_hits_total").increment(1);
                return Ok(hit.handed_out());
            }
        }
        metrics::counter!("hk_token_cache_misses_total").increment(1);
        let installation = self.inner.load(id).await?;
        match installation.status_at(now) {
            None => return Err(CoreError::not_found("installation", id)),
            Some(InstallationStatus::Connected | InstallationStatus::Expired) => {}
            Some(other) => return Err(status_error(id, other)),
        }
        // A margin no token of this installation can satisfy is the caller's mistake: refuse it
        // before HubSpot is asked for a token that would not satisfy it either.
        if let Some(lifetime) = installation.token_lifetime() {
            if margin >= lifetime {
                return Err(CoreError::TokenLifetimeTooShort {
                    lifetime_secs: lifetime.num_seconds(),
                    requested_secs: margin.num_seconds(),
                });
            }
        }
        if !Need::ExpiresWithin(margin).holds(&installation, now) {
            let token = self.inner.open_cached(id, &installation).await?;
            return Ok(token.handed_out());
        }
        if let Some(recent) = self.inner.recent_failure(id, &installation, now) {
            metrics::counter!("hk_token_failure_cache_hits_total").increment(1);
            return Err(recent);
        }
        let trigger = RefreshTrigger::hand_out(request_id.map(str::to_owned));
        let flight = self
            .inner
            .clone()
            .single_flight(*id, Need::ExpiresWithin(margin), trigger)
            .await?;
        match flight {
            Flight::Fresh(token, _) => {
                let left = token.expires_at - self.inner.clock.now();
                if left >= margin {
                    Ok(token.handed_out())
                } else {
                    Err(CoreError::TokenLifetimeTooShort {
                        lifetime_secs: left.num_seconds(),
                        requested_secs: margin.num_seconds(),
                    })
                }
            }
            Flight::NotRefreshable(reason) => Err(not_refreshable_error(id, reason)),
            Flight::ReauthRequired => {
                Err(CoreError::ReauthorizationRequired { id: id.to_string() })
            }
            Flight::Failed(e) => Err(CoreError::HubSpot(e)),
            Flight::RecentlyFailed(e) => Err(e),
        }
    }
}

impl TokenService {
    /// HubSpot refused `rejected` (a 401 on an API call, e.g. the token was revoked at HubSpot
    /// before its expiry): refreshes once through the single-flight path, unless any process has
    /// refreshed since `rejected` was issued, and hands out the new token. Concurrent callers
    /// holding the same rejected token share one refresh.
    pub async fn replace_rejected(
        &self,
        id: &InstallationId,
        rejected: &HandedOutToken,
        request_id: Option<&str>,
    ) -> Result<HandedOutToken, CoreError> {
        let trigger = RefreshTrigger::rejected(request_id.map(str::to_owned));
        let flight = self
            .inner
            .clone()
            .single_flight(*id, Need::GenerationIs(rejected.generation), trigger)
            .await?;
        match flight {
            Flight::Fresh(token, _) => {
                self.inner.count_handout(*id, self.inner.clock.now());
                Ok(token.handed_out())
            }
            Flight::NotRefreshable(reason) => Err(not_refreshable_error(id, reason)),
            Flight::ReauthRequired => {
                Err(CoreError::ReauthorizationRequired { id: id.to_string() })
            }
            Flight::Failed(e) => Err(CoreError::HubSpot(e)),
            Flight::RecentlyFailed(e) => Err(e),
        }
    }
}

impl Inner {
    /// The negative cache: while the installation's last refresh failed less than
    /// [`super::TokenConfig::failure_cache`] ago, the error a hand-out answers with instead of
    /// calling HubSpot again. Read from the aggregate, so a failure recorded by any process
    /// counts.
    pub(super) fn recent_failure(
        &self,
        id: &InstallationId,
        installation: &Installation,
        now: DateTime<Utc>,
    ) -> Option<CoreError> {
        let failure = installation.last_failure()?;
        let window = chrono_duration(self.config.failure_cache);
        let age = now - failure.at;
        if age < chrono::Duration::zero() || age >= window {
            return None;
        }
        let left = (window - age).num_milliseconds();
        Some(CoreError::RecentRefreshFailure {
            id: id.to_string(),
            class: failure.class.as_str().to_owned(),
            message: failure.message.clone(),
            age_secs: age.num_seconds(),
            retry_after_secs: u64::try_from(left).unwrap_or(0).div_ceil(1000).max(1),
        })
    }

    pub(super) fn cached(&self, id: &InstallationId) -> Option<CachedToken> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(id)
            .filter(|t| t.cached_at.elapsed() < self.config.cache_max_age)
            .cloned()
    }

    pub(super) fn remember(&self, id: InstallationId, token: &CachedToken) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= 200_000 {
            let max_age = self.config.cache_max_age;
            cache.retain(|_, t| t.cached_at.elapsed() < max_age);
        }
        match cache.get(&id) {
            // Never replace a newer generation with an older one (a slow reader racing a
            // refresh).
            Some(existing) if existing.generation > token.generation => {}
            _ => {
                cache.insert(id, token.clone());
            }
        }
    }

    pub(super) fn evict(&self, id: &InstallationId, current_generation: Option<u64>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = cache
            .get(id)
            .is_some_and(|t| current_generation.is_none_or(|g| t.generation < g));
        if stale {
            cache.remove(id);
        }
    }

    /// Drops the local copy and tells every other process to do the same.
    pub(super) async fn changed(&self, id: &InstallationId, current_generation: Option<u64>) {
        self.evict(id, current_generation);
        self.broadcaster
            .publish(&Invalidation::Tokens {
                installation_id: id.to_string(),
                current_generation,
            })
            .await;
    }

    /// Opens the installation's current access token and caches it.
    pub(super) async fn open_cached(
        &self,
        id: &InstallationId,
        installation: &Installation,
    ) -> Result<CachedToken, CoreError> {
        let (Some(tokens), Some(hub_id)) = (installation.sealed_tokens(), installation.hub_id())
        else {
            return Err(status_error(
                id,
                installation
                    .status_at(self.clock.now())
                    .unwrap_or(InstallationStatus::Disconnected),
            ));
        };
        let access = self.vault.open_access(id, &tokens.access).await?;
        let token = CachedToken {
            access,
            expires_at: tokens.access_expires_at,
            generation: installation.generation(),
            hub_id,
            scopes: installation.granted_scopes().iter().cloned().collect(),
            cached_at: Instant::now(),
        };
        self.remember(*id, &token);
        Ok(token)
    }
}

/// Exposes a token only to the API response body; kept here so every exposure is greppable.
pub fn expose_for_response(token: &HandedOutToken) -> &str {
    token.access_token.expose_secret()
}

/// Exposes a token only to the `Authorization` header of a proxied HubSpot call.
pub fn expose_for_proxy(token: &HandedOutToken) -> &str {
    token.access_token.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn handed_out_tokens_do_not_print() {
        let token = HandedOutToken {
            access_token: SecretString::from("CNsecret-access".to_owned()),
            expires_at: Utc::now(),
            hub_id: HubId(1),
            scopes: vec!["oauth".into()],
            generation: 1,
        };
        assert!(!format!("{token:?}").contains("CNsecret-access"));
        assert_eq!(expose_for_response(&token), "CNsecret-access");
    }
}
