//! Refreshing: what asks for a refresh ([`RefreshTrigger`]), when one is still needed once the
//! locks are held ([`Need`]), the locked part itself (re-read, call HubSpot, record before
//! hand-out) and how it ended ([`RefreshOutcome`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubkeeper_crypto::SecretString;
use hubkeeper_domain::installation::{
    Installation, InstallationCommand, InstallationError, InstallationStatus, RefreshFailureClass,
};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::{AppId, InstallationId};
use hubkeeper_hubspot::{HubSpotError, RefreshToken, TransientCause};

use super::handout::CachedToken;
use super::single_flight::HeldLock;
use super::{chrono_duration, status_error, Inner, TokenService};
use crate::commands::CommandError;
use crate::error::CoreError;

/// Attempts to record HubSpot's answer when the event store fails: the answer may carry a
/// rotated refresh token, and losing it would lose the installation.
const RECORD_ATTEMPTS: u32 = 4;

/// Why a refresh was asked for: decides the actor recorded on the events and the log label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTrigger {
    pub kind: TriggerKind,
    pub actor: Actor,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    /// A token hand-out found the token too close to expiry.
    HandOut,
    /// The refresher worker: the token expires within the lead time.
    Scheduled,
    /// The refresher worker: the installation has been idle for long.
    Idle,
    /// An operator asked for it.
    Manual,
    /// HubSpot refused the current access token on an API call (revoked before its expiry).
    Rejected,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::HandOut => "hand_out",
            TriggerKind::Scheduled => "scheduled",
            TriggerKind::Idle => "idle",
            TriggerKind::Manual => "manual",
            TriggerKind::Rejected => "rejected",
        }
    }
}

impl RefreshTrigger {
    pub fn hand_out(request_id: Option<String>) -> Self {
        Self {
            kind: TriggerKind::HandOut,
            actor: Actor::Refresher,
            request_id,
        }
    }

    pub fn scheduled() -> Self {
        Self {
            kind: TriggerKind::Scheduled,
            actor: Actor::Refresher,
            request_id: None,
        }
    }

    pub fn idle() -> Self {
        Self {
            kind: TriggerKind::Idle,
            actor: Actor::Refresher,
            request_id: None,
        }
    }

    /// HubSpot refused the access token on a proxied API call.
    pub fn rejected(request_id: Option<String>) -> Self {
        Self {
            kind: TriggerKind::Rejected,
            actor: Actor::Refresher,
            request_id,
        }
    }

    pub fn manual(actor: Actor, request_id: Option<String>) -> Self {
        Self {
            kind: TriggerKind::Manual,
            actor,
            request_id,
        }
    }

    /// Sets the job or message id (e.g. the JetStream message id) as the request id.
    #[must_use]
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    fn metadata(&self, now: DateTime<Utc>) -> EventMetadata {
        let meta = EventMetadata::new(self.actor.clone(), now);
        match &self.request_id {
            Some(id) => meta.request_id(id.clone()),
            None => meta,
        }
    }
}

/// Why an installation cannot be refreshed at all (nothing a retry could fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRefreshable {
    /// No such installation.
    NeverConnected,
    /// Needs re-authorisation, disconnected or revoked.
    Status(InstallationStatus),
    /// Its app was deleted.
    AppDeleted,
    /// Its data key was shredded.
    Shredded,
    /// HubSpot refused its app's client credentials: the app's refreshes are parked.
    AppCredentialsRejected(AppId),
}

impl std::fmt::Display for NotRefreshable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRefreshable::NeverConnected => f.write_str("installation unknown"),
            NotRefreshable::Status(status) => write!(f, "installation is {status}"),
            NotRefreshable::AppDeleted => {
                f.write_str("app deleted: tokens kept but cannot be refreshed")
            }
            NotRefreshable::Shredded => f.write_str("tenant forgotten: tokens unreadable"),
            NotRefreshable::AppCredentialsRejected(app_id) => write!(
                f,
                "HubSpot rejected the client credentials of app {app_id}: its refreshes are \
                 parked until the secret is rotated or an operator resumes them"
            ),
        }
    }
}

/// A refresh that failed in a way worth retrying later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFailure {
    /// Stable label (`transient`, `rate_limited`, `invalid_client`, `database`, …).
    pub class: &'static str,
    /// Safe to log: no tokens or secrets.
    pub message: String,
    /// When HubSpot asked to wait.
    pub retry_after: Option<Duration>,
}

/// How [`TokenService::refresh_if_due`] / [`TokenService::refresh_now`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// This call refreshed (or found that another process had just refreshed, for forced
    /// refreshes); the new token is recorded.
    Refreshed {
        expires_at: DateTime<Utc>,
        generation: u64,
    },
    /// Not due: the token stays valid beyond the lead time (possibly because another process
    /// refreshed it meanwhile).
    StillFresh {
        expires_at: DateTime<Utc>,
    },
    NotRefreshable(NotRefreshable),
    /// HubSpot rejected the refresh token; recorded, the user must install again.
    ReauthRequired,
    /// Transient failure (HubSpot down or rate limited, database trouble); recorded when it came
    /// from HubSpot. Retry later.
    Failed(RefreshFailure),
}

/// When a refresh is (still) needed, checked again after the locks are held.
#[derive(Debug, Clone, Copy)]
pub(super) enum Need {
    /// The access token expires within this margin.
    ExpiresWithin(chrono::Duration),
    /// The generation is still the one the caller saw (forced refresh: any refresh since then
    /// satisfies it).
    GenerationIs(u64),
}

impl Need {
    pub(super) fn holds(&self, installation: &Installation, now: DateTime<Utc>) -> bool {
        match self {
            Need::ExpiresWithin(margin) => installation
                .access_expires_at()
                .is_none_or(|at| at - now < *margin),
            Need::GenerationIs(generation) => installation.generation() == *generation,
        }
    }
}

/// Result of the locked part of a refresh.
pub(super) enum Flight {
    /// A usable token: refreshed by this flight (`true`) or by someone else.
    Fresh(CachedToken, bool),
    NotRefreshable(NotRefreshable),
    ReauthRequired,
    Failed(HubSpotError),
    /// A hand-out found that a refresh failed moments ago (the negative cache).
    RecentlyFailed(CoreError),
}

impl TokenService {
    /// For the refresher worker: refreshes if the token expires within `lead`, through the
    /// single-flight path. Never fails: every problem is an outcome the worker can act on.
    ///
    /// Whether it is due (and refreshable at all) is decided once, under the lock, on the state
    /// the command that records the outcome then uses: the scheduler only sends installations
    /// that were due, so a load before the lock confirmed what the locked one finds anyway and
    /// cost every refresh a round trip (a command that is stale by now takes the lock for
    /// nothing, which is rare).
    pub async fn refresh_if_due(
        &self,
        id: &InstallationId,
        lead: Duration,
        trigger: RefreshTrigger,
    ) -> RefreshOutcome {
        self.outcome(id, Need::ExpiresWithin(chrono_duration(lead)), trigger)
            .await
    }

    /// Refreshes now, whatever the expiry (manual refresh, idle installations). A refresh by
    /// another process since this call started counts as done: HubSpot is not asked twice.
    pub async fn refresh_now(
        &self,
        id: &InstallationId,
        trigger: RefreshTrigger,
    ) -> RefreshOutcome {
        let installation = match self.inner.load(id).await {
            Ok(i) => i,
            Err(e) => return failed(&e),
        };
        if let Some(reason) = not_refreshable(&installation, self.inner.clock.now()) {
            return RefreshOutcome::NotRefreshable(reason);
        }
        self.outcome(id, Need::GenerationIs(installation.generation()), trigger)
            .await
    }

    async fn outcome(
        &self,
        id: &InstallationId,
        need: Need,
        trigger: RefreshTrigger,
    ) -> RefreshOutcome {
        let forced = matches!(need, Need::GenerationIs(_));
        match self.inner.clone().single_flight(*id, need, trigger).await {
            Ok(Flight::Fresh(token, refreshed)) if refreshed || forced => {
                RefreshOutcome::Refreshed {
                    expires_at: token.expires_at,
                    generation: token.generation,
                }
            }
            Ok(Flight::Fresh(token, _)) => RefreshOutcome::StillFresh {
                expires_at: token.expires_at,
            },
            Ok(Flight::NotRefreshable(reason)) => RefreshOutcome::NotRefreshable(reason),
            Ok(Flight::ReauthRequired) => RefreshOutcome::ReauthRequired,
            Ok(Flight::Failed(e)) => RefreshOutcome::Failed(RefreshFailure {
                class: e.class(),
                message: e.to_string(),
                retry_after: e.retry_after(),
            }),
            Ok(Flight::RecentlyFailed(e)) => failed(&e),
            Err(e) => failed(&e),
        }
    }
}

impl Inner {
    /// Runs the locked part of a refresh in its own task (see the module docs).
    pub(super) async fn single_flight(
        self: Arc<Self>,
        id: InstallationId,
        need: Need,
        trigger: RefreshTrigger,
    ) -> Result<Flight, CoreError> {
        self.exclusive_unless(
            id,
            // Another task of this process may have refreshed while we waited.
            move |inner| match need {
                Need::ExpiresWithin(margin) => inner
                    .cached(&id)
                    .filter(|hit| hit.expires_at - inner.clock.now() >= margin)
                    .map(|hit| Flight::Fresh(hit, false)),
                Need::GenerationIs(_) => None,
            },
            move |inner, lock| async move { inner.refresh_locked(&id, need, &trigger, &lock).await },
        )
        .await
    }

    async fn refresh_locked(
        &self,
        id: &InstallationId,
        need: Need,
        trigger: &RefreshTrigger,
        lock: &HeldLock,
    ) -> Result<Flight, CoreError> {
        // Loaded for the command that records the outcome: it decides on this state instead of
        // loading it again, unless the store shows it changed meanwhile.
        let installation = self.load_for_command(id).await?;
        let now = self.clock.now();
        if let Some(reason) = not_refreshable(&installation, now) {
            return Ok(Flight::NotRefreshable(reason));
        }
        if trigger.kind == TriggerKind::HandOut && need.holds(&installation, now) {
            // A hand-out that queued behind a flight that just failed answers from that failure.
            if let Some(recent) = self.recent_failure(id, &installation, now) {
                return Ok(Flight::RecentlyFailed(recent));
            }
        }
        if !need.holds(&installation, now) {
            // Someone else refreshed while we waited for the lock (Nango PR #2494).
            metrics::counter!("hk_refresh_total", "outcome" => "already_refreshed", "class" => "none")
                .increment(1);
            let token = self.open_cached(id, &installation).await?;
            return Ok(Flight::Fresh(token, false));
        }
        let (Some(app_id), Some(hub_id), Some(tokens)) = (
            installation.app_id(),
            installation.hub_id(),
            installation.sealed_tokens(),
        ) else {
            return Ok(Flight::NotRefreshable(NotRefreshable::NeverConnected));
        };
        let creds = match self.apps.refresh_credentials(app_id).await {
            Ok(c) => c,
            Err(CoreError::AppDeleted { .. } | CoreError::NotFound { .. }) => {
                return Ok(Flight::NotRefreshable(NotRefreshable::AppDeleted))
            }
            Err(CoreError::AppCredentialsRejected { .. }) => {
                metrics::counter!("hk_refresh_total", "outcome" => "parked", "class" => "none")
                    .increment(1);
                return Ok(Flight::NotRefreshable(
                    NotRefreshable::AppCredentialsRejected(app_id),
                ));
            }
            Err(e) => return Err(e),
        };
        let refresh = match self.vault.open_refresh(id, &tokens.refresh).await {
            Ok(r) => RefreshToken::from(r),
            Err(CoreError::Shredded { .. }) => {
                return Ok(Flight::NotRefreshable(NotRefreshable::Shredded))
            }
            Err(e) => return Err(e),
        };
        let generation = installation.generation();
        let started = Instant::now();
        let answer = self
            .hubspot
            .refresh(&creds, &refresh, Some(hub_id.get()))
            .await;
        metrics::histogram!("hk_refresh_seconds").record(started.elapsed().as_secs_f64());
        drop(refresh);
        // HubSpot's answer may have taken long: if the lock's session died meanwhile, another
        // process may hold the lock now and be refreshing the same tokens, so this one records
        // nothing (neither tokens nor a failure) and answers from what is stored.
        if !matches!(answer, Err(HubSpotError::InvalidClient { .. })) && !lock.still_held().await {
            drop(answer);
            return self.after_lost_lock(id, generation, trigger).await;
        }
        match answer {
            Ok(set) => {
                let refreshed_at = self.clock.now();
                let expires_at = set.expires_at(refreshed_at);
                // Always store the returned refresh token: HubSpot may or may not rotate it.
                let sealed = self
                    .vault
                    .seal_tokens(
                        id,
                        set.access_token.expose(),
                        set.refresh_token.expose(),
                        expires_at,
                    )
                    .await?;
                let command = InstallationCommand::RecordRefresh {
                    tokens: sealed,
                    refreshed_at,
                    expected_generation: generation,
                };
                match self
                    .record(id, command, &trigger.metadata(refreshed_at))
                    .await
                {
                    Ok(()) => {}
                    Err(CoreError::Installation(InstallationError::StaleGeneration { .. })) => {
                        // A reconnect won the race; its tokens are newer than ours.
                        let current = self.load(id).await?;
                        metrics::counter!("hk_refresh_total", "outcome" => "superseded", "class" => "none")
                            .increment(1);
                        return match not_refreshable(&current, self.clock.now()) {
                            Some(reason) => Ok(Flight::NotRefreshable(reason)),
                            None => Ok(Flight::Fresh(self.open_cached(id, &current).await?, false)),
                        };
                    }
                    Err(e) => {
                        tracing::error!(
                            installation_id = %id, error = %e,
                            "HubSpot issued new tokens that could not be recorded"
                        );
                        return Err(e);
                    }
                }
                metrics::counter!("hk_refresh_total", "outcome" => "refreshed", "class" => "none")
                    .increment(1);
                tracing::info!(
                    installation_id = %id, trigger = trigger.kind.as_str(),
                    generation = generation + 1, %expires_at, "token refreshed"
                );
                let token = CachedToken {
                    access: SecretString::from(set.access_token.expose().to_owned()),
                    expires_at,
                    generation: generation + 1,
                    hub_id,
                    scopes: installation.granted_scopes().iter().cloned().collect(),
                    cached_at: Instant::now(),
                };
                self.remember(*id, &token);
                self.changed(id, Some(generation + 1)).await;
                Ok(Flight::Fresh(token, true))
            }
            Err(error @ HubSpotError::InvalidClient { .. }) => {
                // The app's credentials, not this tenant's: one app-level event parks every
                // refresh of the app; nothing is recorded on the installation.
                metrics::counter!("hk_refresh_total", "outcome" => "app_credentials_rejected", "class" => error.class())
                    .increment(1);
                let code = error
                    .details()
                    .and_then(|d| d.error.clone().or_else(|| d.status.clone()))
                    .unwrap_or_else(|| error.class().to_owned());
                if let Err(e) = self
                    .apps
                    .record_credentials_rejected(
                        app_id,
                        &code,
                        &error.to_string(),
                        &trigger.metadata(self.clock.now()),
                    )
                    .await
                {
                    tracing::warn!(%app_id, error = %e, "credentials rejection not recorded");
                }
                Ok(Flight::NotRefreshable(
                    NotRefreshable::AppCredentialsRejected(app_id),
                ))
            }
            Err(error) => {
                let reauth = needs_reauthorization(&error);
                if reauth {
                    // A lost race: another process refreshed (and HubSpot rotated the refresh
                    // token we presented) since we read it. The installation is fine.
                    let current = self.load(id).await?;
                    if current.generation() != generation {
                        metrics::counter!("hk_refresh_total", "outcome" => "superseded", "class" => error.class())
                            .increment(1);
                        tracing::info!(
                            installation_id = %id, trigger = trigger.kind.as_str(),
                            "HubSpot refused a refresh token another process already replaced; \
                             nothing to record"
                        );
                        return match not_refreshable(&current, self.clock.now()) {
                            Some(reason) => Ok(Flight::NotRefreshable(reason)),
                            None => Ok(Flight::Fresh(self.open_cached(id, &current).await?, false)),
                        };
                    }
                }
                let command = InstallationCommand::RecordRefreshFailure {
                    class: failure_class(&error),
                    reauth_required: reauth,
                    message: error.to_string(),
                    expected_generation: generation,
                };
                let outcome = if reauth { "reauth_required" } else { "failed" };
                metrics::counter!("hk_refresh_total", "outcome" => outcome, "class" => error.class())
                    .increment(1);
                tracing::warn!(
                    installation_id = %id, trigger = trigger.kind.as_str(),
                    class = error.class(), reauth, "token refresh failed: {error}"
                );
                if let Err(e) = self
                    .record(id, command, &trigger.metadata(self.clock.now()))
                    .await
                {
                    tracing::warn!(installation_id = %id, error = %e, "refresh failure not recorded");
                }
                if reauth {
                    self.changed(id, None).await;
                    Ok(Flight::ReauthRequired)
                } else {
                    Ok(Flight::Failed(error))
                }
            }
        }
    }

    /// What a refresh whose lock's session died answers, having recorded nothing: the stored
    /// tokens when another process refreshed meanwhile, else `Busy` (the process that holds
    /// the lock now settles it; the caller retries).
    async fn after_lost_lock(
        &self,
        id: &InstallationId,
        generation: u64,
        trigger: &RefreshTrigger,
    ) -> Result<Flight, CoreError> {
        metrics::counter!("hk_refresh_total", "outcome" => "lock_lost", "class" => "none")
            .increment(1);
        tracing::warn!(
            installation_id = %id, trigger = trigger.kind.as_str(),
            "the refresh lock's session died during the HubSpot call; nothing recorded"
        );
        let current = self.load(id).await?;
        if current.generation() == generation {
            return Err(CoreError::Busy { id: id.to_string() });
        }
        match not_refreshable(&current, self.clock.now()) {
            Some(reason) => Ok(Flight::NotRefreshable(reason)),
            None => Ok(Flight::Fresh(self.open_cached(id, &current).await?, false)),
        }
    }

    /// Records an installation command, retrying event-store failures (conflicts are retried by
    /// the command bus already).
    async fn record(
        &self,
        id: &InstallationId,
        command: InstallationCommand,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .bus
                .installations()
                .execute(&id.to_string(), command.clone(), metadata)
                .await
            {
                Ok(()) => return Ok(()),
                Err(CommandError::Store(e)) if attempt < RECORD_ATTEMPTS => {
                    tracing::warn!(installation_id = %id, attempt, error = %e, "recording failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * 4u64.pow(attempt - 1))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn not_refreshable(installation: &Installation, now: DateTime<Utc>) -> Option<NotRefreshable> {
    match installation.status_at(now) {
        None => Some(NotRefreshable::NeverConnected),
        Some(InstallationStatus::Connected | InstallationStatus::Expired)
            if installation.is_refreshable() =>
        {
            None
        }
        Some(status) => Some(NotRefreshable::Status(status)),
    }
}

pub(super) fn not_refreshable_error(id: &InstallationId, reason: NotRefreshable) -> CoreError {
    match reason {
        NotRefreshable::NeverConnected => CoreError::not_found("installation", id),
        NotRefreshable::Status(status) => status_error(id, status),
        // The app id is not at hand here; name the installation instead.
        NotRefreshable::AppDeleted => CoreError::AppDeleted {
            app_id: format!("of installation {id}"),
        },
        NotRefreshable::Shredded => CoreError::Shredded {
            owner: id.to_string(),
        },
        NotRefreshable::AppCredentialsRejected(app_id) => CoreError::AppCredentialsRejected {
            app_id: app_id.to_string(),
        },
    }
}

/// Whether a refresh failure means the tenant must install again: a dead refresh token, or any
/// other answer HubSpot will repeat whatever we do (a 4xx that is neither a rate limit nor
/// about the app's credentials). Rate limits, 5xx and network trouble are retried instead.
fn needs_reauthorization(e: &HubSpotError) -> bool {
    match e {
        HubSpotError::InvalidGrant { .. }
        | HubSpotError::RedirectUriMismatch { .. }
        | HubSpotError::BadAuthCode { .. } => true,
        HubSpotError::Unauthorized { status, .. } | HubSpotError::Unexpected { status, .. } => {
            (400..500).contains(status) && !matches!(status, 408 | 429)
        }
        _ => false,
    }
}

fn failed(e: &CoreError) -> RefreshOutcome {
    let class = match e {
        CoreError::HubSpot(h) => h.class(),
        CoreError::Busy { .. } => "busy",
        CoreError::Database(_) | CoreError::Store(_) => "database",
        CoreError::Contention(_) => "contention",
        CoreError::Crypto(_) => "crypto",
        _ => "internal",
    };
    RefreshOutcome::Failed(RefreshFailure {
        class,
        message: e.to_string(),
        retry_after: None,
    })
}

fn failure_class(e: &HubSpotError) -> RefreshFailureClass {
    match e {
        HubSpotError::InvalidGrant { .. } => RefreshFailureClass::InvalidGrant,
        HubSpotError::InvalidClient { .. } | HubSpotError::Unauthorized { .. } => {
            RefreshFailureClass::Unauthorized
        }
        HubSpotError::RateLimited { .. } => RefreshFailureClass::RateLimited,
        HubSpotError::Transient {
            cause: TransientCause::Status(s),
            ..
        } if *s >= 500 => RefreshFailureClass::ServerError,
        HubSpotError::Transient { .. } => RefreshFailureClass::Network,
        HubSpotError::Unexpected { status, .. } if *status >= 500 => {
            RefreshFailureClass::ServerError
        }
        _ => RefreshFailureClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubkeeper_hubspot::ErrorDetails;

    #[test]
    fn failure_classes_follow_hubspot_errors() {
        let d = ErrorDetails::default;
        assert_eq!(
            failure_class(&HubSpotError::InvalidGrant { details: d() }),
            RefreshFailureClass::InvalidGrant
        );
        assert_eq!(
            failure_class(&HubSpotError::Transient {
                cause: TransientCause::Status(503),
                retry_after: None,
                details: d()
            }),
            RefreshFailureClass::ServerError
        );
        assert_eq!(
            failure_class(&HubSpotError::Transient {
                cause: TransientCause::Timeout,
                retry_after: None,
                details: d()
            }),
            RefreshFailureClass::Network
        );
        assert_eq!(
            failure_class(&HubSpotError::RateLimited {
                retry_after: None,
                details: d()
            }),
            RefreshFailureClass::RateLimited
        );
        assert_eq!(
            failure_class(&HubSpotError::InvalidClient { details: d() }),
            RefreshFailureClass::Unauthorized
        );
    }

    #[test]
    fn other_non_retryable_client_errors_need_reauthorization() {
        let d = ErrorDetails::default;
        assert!(needs_reauthorization(&HubSpotError::InvalidGrant {
            details: d()
        }));
        assert!(needs_reauthorization(&HubSpotError::Unexpected {
            status: 400,
            details: d()
        }));
        assert!(needs_reauthorization(&HubSpotError::Unexpected {
            status: 403,
            details: d()
        }));
        assert!(!needs_reauthorization(&HubSpotError::Unexpected {
            status: 502,
            details: d()
        }));
        assert!(!needs_reauthorization(&HubSpotError::RateLimited {
            retry_after: None,
            details: d()
        }));
        assert!(!needs_reauthorization(&HubSpotError::Transient {
            cause: TransientCause::Status(503),
            retry_after: None,
            details: d()
        }));
        assert!(!needs_reauthorization(&HubSpotError::InvalidClient {
            details: d()
        }));
    }

    #[test]
    fn need_expiring_within_treats_missing_tokens_as_due() {
        let installation = Installation::default();
        let now = Utc::now();
        assert!(Need::ExpiresWithin(chrono::Duration::seconds(10)).holds(&installation, now));
        assert!(Need::GenerationIs(0).holds(&installation, now));
        assert!(!Need::GenerationIs(1).holds(&installation, now));
    }
}
