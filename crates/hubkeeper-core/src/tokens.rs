//! The token service: hands out access tokens that are never about to expire, refreshes them
//! exactly once per expiry across any number of processes, and carries out revoke, disconnect
//! and forget.
//!
//! # Single flight
//!
//! A refresh runs under two locks: an in-process async mutex per installation (so the tasks of
//! one process queue up without touching Postgres), then a Postgres session advisory lock keyed
//! by the installation on a dedicated connection (so processes queue up). After acquiring both it
//! **re-reads** the aggregate: if another task or process refreshed meanwhile, its result is used
//! and HubSpot is not called (the lesson of Nango PR #2494). The lock dies with its session, so a
//! crashed holder never blocks anyone; waits are bounded server-side by `lock_timeout`.
//!
//! # Record before hand-out
//!
//! HubSpot's answer is recorded as an event (`RecordRefresh`, guarded by the token generation
//! that was refreshed) before the new token leaves the service. The refresh runs in a task of
//! its own, so a caller that goes away (a closed HTTP connection) cannot cancel it between
//! HubSpot's answer and the write: a rotated refresh token is never lost to a cancellation.
//!
//! # Cache
//!
//! Decrypted *access* tokens only (never refresh tokens) are cached per installation with their
//! generation and expiry. A hit is served only if the token is still valid for the requested
//! margin, so a stale entry can never hand out an expired token; every change is broadcast on
//! NATS so other processes drop their copy at once, and a maximum entry age bounds what a missed
//! broadcast can do after a revoke.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use hubkeeper_crypto::{ExposeSecret, SecretString};
use hubkeeper_domain::installation::{
    Connect, HistoryEntry, Installation, InstallationCommand, InstallationError,
    InstallationStatus, Installer, LastFailure, RefreshFailureClass, MAX_REASON_CHARS,
};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::{AppId, DomainServices, HubId, InstallationId, UserId};
use hubkeeper_hubspot::{HubSpotClient, HubSpotError, RefreshToken, TransientCause};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

use crate::apps::AppService;
use crate::broadcast::{Broadcaster, Invalidation, ListenerGuard};
use crate::commands::{CommandBus, CommandError};
use crate::error::CoreError;
use crate::vault::{installation_owner, Vault};

/// Advisory-lock class of refresh locks (two-int form, which never overlaps the single-bigint
/// keys used for leader election). "HKTF".
const LOCK_CLASS: i32 = 0x484B_5446;

/// Attempts to record HubSpot's answer when the event store fails: the answer may carry a
/// rotated refresh token, and losing it would lose the installation.
const RECORD_ATTEMPTS: u32 = 4;

/// Tuning of the token service.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Margin of validity a hand-out guarantees when the caller does not ask for one.
    pub default_min_validity: Duration,
    /// Longest time a cached access token is served without looking at Postgres again (bounds
    /// a missed invalidation broadcast after a revoke or disconnect).
    pub cache_max_age: Duration,
    /// Longest wait for another task's or process's refresh of the same installation.
    pub lock_timeout: Duration,
    /// How often hand-out counters are written to `token_usage`.
    pub usage_flush_interval: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            default_min_validity: Duration::from_secs(300),
            cache_max_age: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(30),
            usage_flush_interval: Duration::from_secs(2),
        }
    }
}

/// A token handed to a caller. `Debug` shows no token (it is a `SecretString`).
#[derive(Debug, Clone)]
pub struct HandedOutToken {
    pub access_token: SecretString,
    pub expires_at: DateTime<Utc>,
    pub hub_id: HubId,
    pub scopes: Vec<String>,
}

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
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::HandOut => "hand_out",
            TriggerKind::Scheduled => "scheduled",
            TriggerKind::Idle => "idle",
            TriggerKind::Manual => "manual",
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

/// What was done by [`TokenService::forget_tenant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForgetOutcome {
    /// Whether a live data key was destroyed by this call.
    pub shredded: bool,
}

/// Hand-out statistics of an installation (from `token_usage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    pub last_handed_out_at: Option<DateTime<Utc>>,
    pub handouts_today: i64,
    pub handouts_total: i64,
}

/// An installation as the API shows it. No tokens, sealed or not.
#[derive(Debug, Clone, Serialize)]
pub struct InstallationView {
    pub installation_id: InstallationId,
    pub app_id: AppId,
    pub hub_id: HubId,
    pub user_id: Option<UserId>,
    pub hub_domain: String,
    pub installer: Installer,
    pub status: InstallationStatus,
    pub scopes: Vec<String>,
    pub app_version: Option<String>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub generation: u64,
    pub first_connected_at: Option<DateTime<Utc>>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub last_failure: Option<LastFailure>,
    pub forgotten_at: Option<DateTime<Utc>>,
    pub history: Vec<HistoryEntry>,
    pub usage: TokenUsage,
}

/// Everything the token service is built from.
pub struct TokenDeps {
    pub pool: PgPool,
    pub bus: Arc<CommandBus>,
    pub vault: Vault,
    pub apps: AppService,
    pub hubspot: HubSpotClient,
    pub broadcaster: Broadcaster,
    pub clock: DomainServices,
    pub config: TokenConfig,
}

/// Cheap to clone; clones share caches and locks.
#[derive(Clone)]
pub struct TokenService {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    bus: Arc<CommandBus>,
    vault: Vault,
    apps: AppService,
    hubspot: HubSpotClient,
    broadcaster: Broadcaster,
    clock: DomainServices,
    config: TokenConfig,
    cache: Mutex<HashMap<InstallationId, CachedToken>>,
    locks: Mutex<HashMap<InstallationId, Arc<tokio::sync::Mutex<()>>>>,
    /// Bounds how many flights hold a lock connection at once: at most half the pool, so the
    /// work inside a flight (loads, commands) always finds a free connection. Without it, a
    /// refresher running more flights than the pool has connections deadlocks on the pool.
    flights: tokio::sync::Semaphore,
    usage: Mutex<UsageCounters>,
    listener: OnceLock<Option<ListenerGuard>>,
}

/// Hand-outs not yet flushed: (installation, UTC day) -> (count, last hand-out).
type UsageCounters = HashMap<(InstallationId, NaiveDate), (i64, DateTime<Utc>)>;

#[derive(Clone)]
struct CachedToken {
    access: SecretString,
    expires_at: DateTime<Utc>,
    generation: u64,
    hub_id: HubId,
    scopes: Vec<String>,
    cached_at: Instant,
}

impl CachedToken {
    fn handed_out(&self) -> HandedOutToken {
        HandedOutToken {
            access_token: self.access.clone(),
            expires_at: self.expires_at,
            hub_id: self.hub_id,
            scopes: self.scopes.clone(),
        }
    }
}

/// When a refresh is (still) needed, checked again after the locks are held.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// The access token expires within this margin.
    ExpiresWithin(chrono::Duration),
    /// The generation is still the one the caller saw (forced refresh: any refresh since then
    /// satisfies it).
    GenerationIs(u64),
}

impl Need {
    fn holds(&self, installation: &Installation, now: DateTime<Utc>) -> bool {
        match self {
            Need::ExpiresWithin(margin) => installation
                .access_expires_at()
                .is_none_or(|at| at - now < *margin),
            Need::GenerationIs(generation) => installation.generation() == *generation,
        }
    }
}

/// Result of the locked part of a refresh.
enum Flight {
    /// A usable token: refreshed by this flight (`true`) or by someone else.
    Fresh(CachedToken, bool),
    NotRefreshable(NotRefreshable),
    ReauthRequired,
    Failed(HubSpotError),
}

impl TokenService {
    /// Builds the service and subscribes to cache invalidations.
    pub async fn start(deps: TokenDeps) -> Self {
        let service = Self {
            inner: Arc::new(Inner {
                pool: deps.pool.clone(),
                bus: deps.bus,
                vault: deps.vault,
                apps: deps.apps,
                hubspot: deps.hubspot,
                broadcaster: deps.broadcaster.clone(),
                clock: deps.clock,
                config: deps.config,
                cache: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                flights: tokio::sync::Semaphore::new(flight_slots(&deps.pool)),
                usage: Mutex::new(HashMap::new()),
                listener: OnceLock::new(),
            }),
        };
        let weak: Weak<Inner> = Arc::downgrade(&service.inner);
        let guard = deps
            .broadcaster
            .listen(weak, |inner: Arc<Inner>, invalidation| async move {
                match invalidation {
                    Invalidation::Tokens {
                        installation_id,
                        current_generation,
                    } => {
                        if let Ok(id) = installation_id.parse::<InstallationId>() {
                            inner.evict(&id, current_generation);
                        }
                    }
                    Invalidation::DataKey { owner } => {
                        if let Ok(id) = owner.parse::<InstallationId>() {
                            inner.evict(&id, None);
                        }
                    }
                    Invalidation::App { .. } => {}
                }
            })
            .await;
        let _ = service.inner.listener.set(guard);
        service
    }

    pub fn config(&self) -> &TokenConfig {
        &self.inner.config
    }

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

    async fn get_token_inner(
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
        if !Need::ExpiresWithin(margin).holds(&installation, now) {
            let token = self.inner.open_cached(id, &installation).await?;
            return Ok(token.handed_out());
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
        }
    }

    /// For the refresher worker: refreshes if the token expires within `lead`, through the
    /// single-flight path. Never fails: every problem is an outcome the worker can act on.
    pub async fn refresh_if_due(
        &self,
        id: &InstallationId,
        lead: Duration,
        trigger: RefreshTrigger,
    ) -> RefreshOutcome {
        let margin = chrono_duration(lead);
        let installation = match self.inner.load(id).await {
            Ok(i) => i,
            Err(e) => return failed(&e),
        };
        if let Some(reason) = not_refreshable(&installation, self.inner.clock.now()) {
            return RefreshOutcome::NotRefreshable(reason);
        }
        if !Need::ExpiresWithin(margin).holds(&installation, self.inner.clock.now()) {
            if let Some(expires_at) = installation.access_expires_at() {
                return RefreshOutcome::StillFresh { expires_at };
            }
        }
        self.outcome(id, Need::ExpiresWithin(margin), trigger).await
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
            Err(e) => failed(&e),
        }
    }

    /// Revokes the refresh token at HubSpot, then records the revocation. Cannot be undone: only
    /// a new install flow restores access. If HubSpot cannot be reached nothing is recorded and
    /// the error is returned, so the operator can retry.
    pub async fn revoke(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let reason = check_reason(reason)?;
        let installation = self.inner.load(id).await?;
        match installation.status_at(self.inner.clock.now()) {
            None => return Err(CoreError::not_found("installation", id)),
            Some(InstallationStatus::Revoked) => return Ok(()),
            Some(InstallationStatus::Disconnected) => {
                return Err(CoreError::Installation(InstallationError::NothingToRevoke))
            }
            Some(_) => {}
        }
        let inner = self.inner.clone();
        let id = *id;
        spawn_uncancellable(async move {
            let _local = inner.local_lock(id).await?;
            let _slot = inner.flight_slot(&id).await?;
            let lock = RefreshLock::acquire(&inner.pool, &id, inner.config.lock_timeout).await?;
            let result = inner.revoke_locked(&id, &reason, metadata).await;
            lock.release().await;
            result
        })
        .await
    }

    /// Removes the tokens (status disconnected, data kept, reconnect possible) and revokes the
    /// refresh token at HubSpot on a best-effort basis, so a disconnected installation does not
    /// leave a live grant behind (Nango #459).
    pub async fn disconnect(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let reason = check_reason(reason)?;
        let inner = self.inner.clone();
        let id = *id;
        spawn_uncancellable(async move {
            let _local = inner.local_lock(id).await?;
            let _slot = inner.flight_slot(&id).await?;
            let lock = RefreshLock::acquire(&inner.pool, &id, inner.config.lock_timeout).await?;
            let result = inner.disconnect_locked(&id, &reason, metadata).await;
            lock.release().await;
            result
        })
        .await
    }

    /// HubSpot reported an uninstall (webhook): records it and drops cached tokens everywhere.
    pub async fn mark_uninstalled(
        &self,
        id: &InstallationId,
        occurred_at: DateTime<Utc>,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        record_uninstall(
            &self.inner.bus,
            &self.inner.broadcaster,
            id,
            occurred_at,
            &metadata,
        )
        .await?;
        self.inner.evict(id, None);
        Ok(())
    }

    /// Crypto-shreds a tenant: records the decision, then destroys the installation's data key.
    /// Its tokens in the event history become unreadable; the history stays. Requires the
    /// installation to be revoked or disconnected first (so nothing live is left at HubSpot).
    /// Safe to repeat: a second call finishes a shred that failed after the event.
    pub async fn forget_tenant(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<ForgetOutcome, CoreError> {
        let reason = check_reason(reason)?;
        let installation = self.inner.load(id).await?;
        if installation.installation_id().is_none() {
            return Err(CoreError::not_found("installation", id));
        }
        self.inner
            .bus
            .installations()
            .execute(
                &id.to_string(),
                InstallationCommand::ForgetTenant {
                    reason: reason.clone(),
                },
                &metadata.reason(reason),
            )
            .await?;
        let shredded = self.inner.vault.shred(&installation_owner(id)).await?;
        self.inner.changed(id, None).await;
        tracing::info!(installation_id = %id, shredded, "tenant forgotten");
        Ok(ForgetOutcome { shredded })
    }

    /// Records an OAuth connect (first install or reconnect) whose tokens are already sealed.
    pub async fn record_connect(
        &self,
        connect: Connect,
        metadata: &EventMetadata,
    ) -> Result<InstallationId, CoreError> {
        let id = InstallationId::derive(connect.app_id, connect.hub_id, connect.user_id);
        self.inner
            .bus
            .installations()
            .execute(
                &id.to_string(),
                InstallationCommand::Connect(connect),
                metadata,
            )
            .await?;
        let generation = self.inner.load(&id).await.map(|i| i.generation()).ok();
        self.inner.changed(&id, generation).await;
        Ok(id)
    }

    /// An installation's details for the API.
    pub async fn details(&self, id: &InstallationId) -> Result<InstallationView, CoreError> {
        let installation = self.inner.load(id).await?;
        let now = self.inner.clock.now();
        let (Some(status), Some(app_id), Some(hub_id)) = (
            installation.status_at(now),
            installation.app_id(),
            installation.hub_id(),
        ) else {
            return Err(CoreError::not_found("installation", id));
        };
        Ok(InstallationView {
            installation_id: *id,
            app_id,
            hub_id,
            user_id: installation.user_id(),
            hub_domain: installation.hub_domain().to_owned(),
            installer: installation.installer().clone(),
            status,
            scopes: installation.granted_scopes().iter().cloned().collect(),
            app_version: installation.app_version().map(str::to_owned),
            access_expires_at: installation.access_expires_at(),
            generation: installation.generation(),
            first_connected_at: installation.first_connected_at(),
            last_connected_at: installation.last_connected_at(),
            last_refreshed_at: installation.last_refreshed_at(),
            consecutive_failures: installation.consecutive_failures(),
            last_failure: installation.last_failure().cloned(),
            forgotten_at: installation.forgotten_at(),
            history: installation.history().to_vec(),
            usage: self.usage(id).await?,
        })
    }

    /// Hand-out statistics, as flushed so far.
    pub async fn usage(&self, id: &InstallationId) -> Result<TokenUsage, CoreError> {
        let today = self.inner.clock.now().date_naive();
        let row: (Option<DateTime<Utc>>, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT max(last_handed_out_at),
                    sum(handouts) FILTER (WHERE day = $2)::bigint,
                    sum(handouts)::bigint
               FROM token_usage WHERE installation_id = $1",
        )
        .bind(id.to_string())
        .bind(today)
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(TokenUsage {
            last_handed_out_at: row.0,
            handouts_today: row.1.unwrap_or(0),
            handouts_total: row.2.unwrap_or(0),
        })
    }

    /// The background task that writes hand-out counters to `token_usage` every
    /// [`TokenConfig::usage_flush_interval`] (one statement per flush, whatever the traffic),
    /// and once more at shutdown.
    pub fn usage_flusher(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let mut tick = tokio::time::interval(inner.config.usage_flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => inner.flush_usage().await,
                }
            }
            inner.flush_usage().await;
        }
    }

    /// Writes pending hand-out counters now (tests, shutdown).
    pub async fn flush_usage(&self) {
        self.inner.flush_usage().await;
    }
}

impl Inner {
    async fn load(&self, id: &InstallationId) -> Result<Installation, CoreError> {
        self.bus
            .installations()
            .load(&id.to_string())
            .await
            .map(|(installation, _)| installation)
    }

    fn cached(&self, id: &InstallationId) -> Option<CachedToken> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(id)
            .filter(|t| t.cached_at.elapsed() < self.config.cache_max_age)
            .cloned()
    }

    fn remember(&self, id: InstallationId, token: &CachedToken) {
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

    fn evict(&self, id: &InstallationId, current_generation: Option<u64>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = cache
            .get(id)
            .is_some_and(|t| current_generation.is_none_or(|g| t.generation < g));
        if stale {
            cache.remove(id);
        }
    }

    /// Drops the local copy and tells every other process to do the same.
    async fn changed(&self, id: &InstallationId, current_generation: Option<u64>) {
        self.evict(id, current_generation);
        self.broadcaster
            .publish(&Invalidation::Tokens {
                installation_id: id.to_string(),
                current_generation,
            })
            .await;
    }

    /// Opens the installation's current access token and caches it.
    async fn open_cached(
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

    /// The per-installation in-process lock, bounded by the lock timeout.
    async fn local_lock(&self, id: InstallationId) -> Result<LocalGuard<'_>, CoreError> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(id).or_default().clone()
        };
        let guard = tokio::time::timeout(self.config.lock_timeout, mutex.clone().lock_owned())
            .await
            .map_err(|_| CoreError::Busy { id: id.to_string() })?;
        Ok(LocalGuard {
            inner: self,
            id,
            guard: Some(guard),
            mutex: Some(mutex),
        })
    }

    /// A slot for holding a lock connection (see [`Inner::flights`]).
    async fn flight_slot(
        &self,
        id: &InstallationId,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, CoreError> {
        match tokio::time::timeout(self.config.lock_timeout, self.flights.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(CoreError::Busy { id: id.to_string() }),
        }
    }

    /// Runs the locked part of a refresh in its own task (see the module docs).
    async fn single_flight(
        self: Arc<Self>,
        id: InstallationId,
        need: Need,
        trigger: RefreshTrigger,
    ) -> Result<Flight, CoreError> {
        spawn_uncancellable(async move {
            let _local = self.local_lock(id).await?;
            // Another task of this process may have refreshed while we waited.
            if let Need::ExpiresWithin(margin) = need {
                if let Some(hit) = self.cached(&id) {
                    if hit.expires_at - self.clock.now() >= margin {
                        return Ok(Flight::Fresh(hit, false));
                    }
                }
            }
            let _slot = self.flight_slot(&id).await?;
            let lock = RefreshLock::acquire(&self.pool, &id, self.config.lock_timeout).await?;
            let result = self.refresh_locked(&id, need, &trigger).await;
            lock.release().await;
            result
        })
        .await
    }

    async fn refresh_locked(
        &self,
        id: &InstallationId,
        need: Need,
        trigger: &RefreshTrigger,
    ) -> Result<Flight, CoreError> {
        let installation = self.load(id).await?;
        let now = self.clock.now();
        if let Some(reason) = not_refreshable(&installation, now) {
            return Ok(Flight::NotRefreshable(reason));
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
        let creds = match self.apps.credentials(app_id).await {
            Ok(c) => c,
            Err(CoreError::AppDeleted { .. } | CoreError::NotFound { .. }) => {
                return Ok(Flight::NotRefreshable(NotRefreshable::AppDeleted))
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
        match answer {
            Ok(set) => {
                let refreshed_at = self.clock.now();
                let lifetime = i64::try_from(set.expires_in).unwrap_or(i64::MAX / 1000);
                let expires_at = refreshed_at + chrono::Duration::seconds(lifetime);
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
            Err(error) => {
                let reauth = error.is_reauth_required();
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

    async fn revoke_locked(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let installation = self.load(id).await?;
        if let (Some(app_id), Some(tokens)) = (installation.app_id(), installation.sealed_tokens())
        {
            let creds = self.apps.credentials_for_revocation(app_id).await?;
            let refresh = RefreshToken::from(self.vault.open_refresh(id, &tokens.refresh).await?);
            match self.hubspot.revoke_refresh_token(&creds, &refresh).await {
                Ok(()) => {}
                // HubSpot no longer knows the token: it is as revoked as it gets.
                Err(e) if e.is_reauth_required() => {
                    tracing::info!(installation_id = %id, "refresh token was already dead at HubSpot")
                }
                Err(e) => return Err(CoreError::HubSpot(e)),
            }
        }
        self.bus
            .installations()
            .execute(
                &id.to_string(),
                InstallationCommand::Revoke {
                    reason: reason.to_owned(),
                },
                &metadata.reason(reason),
            )
            .await?;
        self.changed(id, None).await;
        tracing::info!(installation_id = %id, "installation revoked");
        Ok(())
    }

    async fn disconnect_locked(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let installation = self.load(id).await?;
        if installation.installation_id().is_none() {
            return Err(CoreError::not_found("installation", id));
        }
        // Read what is needed for the revocation before the tokens are removed.
        let grant = match (installation.app_id(), installation.sealed_tokens()) {
            (Some(app_id), Some(tokens)) => {
                let creds = self.apps.credentials_for_revocation(app_id).await;
                let refresh = self.vault.open_refresh(id, &tokens.refresh).await;
                match (creds, refresh) {
                    (Ok(c), Ok(r)) => Some((c, RefreshToken::from(r))),
                    _ => None,
                }
            }
            _ => None,
        };
        self.bus
            .installations()
            .execute(
                &id.to_string(),
                InstallationCommand::Disconnect {
                    reason: reason.to_owned(),
                },
                &metadata.reason(reason),
            )
            .await?;
        self.changed(id, None).await;
        tracing::info!(installation_id = %id, "installation disconnected");
        if let Some((creds, refresh)) = grant {
            match self.hubspot.revoke_refresh_token(&creds, &refresh).await {
                Ok(()) => {}
                Err(e) if e.is_reauth_required() => {}
                Err(e) => tracing::warn!(
                    installation_id = %id, class = e.class(),
                    "disconnected, but revoking the grant at HubSpot failed: {e}"
                ),
            }
        }
        Ok(())
    }

    fn count_handout(&self, id: InstallationId, now: DateTime<Utc>) {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = usage.entry((id, now.date_naive())).or_insert((0, now));
        entry.0 += 1;
        entry.1 = entry.1.max(now);
    }

    async fn flush_usage(&self) {
        let pending =
            std::mem::take(&mut *self.usage.lock().unwrap_or_else(PoisonError::into_inner));
        if pending.is_empty() {
            return;
        }
        let mut ids = Vec::with_capacity(pending.len());
        let mut days = Vec::with_capacity(pending.len());
        let mut counts = Vec::with_capacity(pending.len());
        let mut lasts = Vec::with_capacity(pending.len());
        for ((id, day), (count, last)) in &pending {
            ids.push(id.to_string());
            days.push(*day);
            counts.push(*count);
            lasts.push(*last);
        }
        let written = sqlx::query(
            "INSERT INTO token_usage (installation_id, day, handouts, last_handed_out_at)
             SELECT * FROM UNNEST($1::text[], $2::date[], $3::bigint[], $4::timestamptz[])
             ON CONFLICT (installation_id, day) DO UPDATE
                SET handouts = token_usage.handouts + EXCLUDED.handouts,
                    last_handed_out_at = GREATEST(token_usage.last_handed_out_at,
                                                  EXCLUDED.last_handed_out_at)",
        )
        .bind(&ids)
        .bind(&days)
        .bind(&counts)
        .bind(&lasts)
        .execute(&self.pool)
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "token usage not written; keeping the counts for the next flush");
            let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, (count, last)) in pending {
                let entry = usage.entry(key).or_insert((0, last));
                entry.0 += count;
                entry.1 = entry.1.max(last);
            }
        }
    }
}

/// Holds the per-installation mutex and removes it from the map once nobody else wants it.
struct LocalGuard<'a> {
    inner: &'a Inner,
    id: InstallationId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    mutex: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        self.mutex.take();
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if locks
            .get(&self.id)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

/// A Postgres session advisory lock on a dedicated pooled connection.
///
/// Released explicitly; if the holder is dropped without releasing (an error path or a panic),
/// the connection is closed instead of returned to the pool, and closing the session releases
/// the lock. A lock can never leak into the pool.
struct RefreshLock {
    conn: Option<PoolConnection<Postgres>>,
    key: (i32, i32),
}

impl RefreshLock {
    async fn acquire(
        pool: &PgPool,
        id: &InstallationId,
        timeout: Duration,
    ) -> Result<Self, CoreError> {
        let key = lock_key(id);
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(sqlx::Error::PoolTimedOut) => return Err(CoreError::Busy { id: id.to_string() }),
            Err(e) => return Err(e.into()),
        };
        // lock_timeout bounds the wait on the server, so no client-side cancellation can leave
        // a lock granted on a connection nobody watches. SET LOCAL ends with the transaction; the
        // session-level advisory lock outlives it.
        let acquired: Result<(), sqlx::Error> = async {
            let mut tx = conn.begin().await?;
            sqlx::query(&format!(
                "SET LOCAL lock_timeout = '{}ms'",
                timeout.as_millis().max(1)
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_advisory_lock($1, $2)")
                .bind(key.0)
                .bind(key.1)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        match acquired {
            Ok(()) => Ok(Self {
                conn: Some(conn),
                key,
            }),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                Err(CoreError::Busy { id: id.to_string() })
            }
            Err(e) => {
                // Unknown state: do not hand this session to anyone else.
                conn.close_on_drop();
                Err(e.into())
            }
        }
    }

    async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(self.key.0)
            .bind(self.key.1)
            .execute(&mut *conn)
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(error = %e, "advisory unlock failed; closing the session instead");
            conn.close_on_drop();
        }
    }
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// Flights allowed to hold a lock connection at once: half the pool, at least one.
fn flight_slots(pool: &PgPool) -> usize {
    usize::try_from(pool.options().get_max_connections() / 2)
        .unwrap_or(1)
        .max(1)
}

/// Two-int advisory key: a fixed class and a 32-bit fold of the installation id. A collision
/// only serialises two installations' refreshes; it never mixes their data.
fn lock_key(id: &InstallationId) -> (i32, i32) {
    let v = id.as_uuid().as_u128();
    let folded = (v ^ (v >> 32) ^ (v >> 64) ^ (v >> 96)) as u32;
    (LOCK_CLASS, folded as i32)
}

/// Runs `work` to completion even if the caller stops waiting.
async fn spawn_uncancellable<T: Send + 'static>(
    work: impl Future<Output = Result<T, CoreError>> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::spawn(work)
        .await
        .map_err(|e| CoreError::Store(format!("token task failed: {e}")))?
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
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

fn status_error(id: &InstallationId, status: InstallationStatus) -> CoreError {
    let id = id.to_string();
    match status {
        InstallationStatus::NeedsReauthorization => CoreError::ReauthorizationRequired { id },
        InstallationStatus::Revoked => CoreError::Revoked { id },
        _ => CoreError::Disconnected { id },
    }
}

fn not_refreshable_error(id: &InstallationId, reason: NotRefreshable) -> CoreError {
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

/// The domain validates reasons too, but only after HubSpot was called; checking first keeps a
/// typo from revoking a grant and then failing to record it.
fn check_reason(reason: &str) -> Result<String, CoreError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CoreError::InvalidInput("a reason is required".into()));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(CoreError::InvalidInput(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(CoreError::InvalidInput(
            "reason must be a single line without control characters".into(),
        ));
    }
    Ok(reason.to_owned())
}

/// Records HubSpot's uninstall report, then publishes the same invalidation as revoke and
/// disconnect. Free-standing because the webhook workers hold no token service: going through
/// here is what bounds an uninstalled installation's cached tokens exactly like a revoked one's.
pub async fn record_uninstall(
    bus: &CommandBus,
    broadcaster: &Broadcaster,
    id: &InstallationId,
    occurred_at: DateTime<Utc>,
    metadata: &EventMetadata,
) -> Result<(), CommandError<InstallationError>> {
    bus.installations()
        .execute(
            &id.to_string(),
            InstallationCommand::MarkUninstalled { occurred_at },
            metadata,
        )
        .await?;
    broadcaster
        .publish(&Invalidation::Tokens {
            installation_id: id.to_string(),
            current_generation: None,
        })
        .await;
    Ok(())
}

/// Exposes a token only to the API response body; kept here so every exposure is greppable.
pub fn expose_for_response(token: &HandedOutToken) -> &str {
    token.access_token.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubkeeper_hubspot::ErrorDetails;

    #[test]
    fn lock_keys_are_stable_and_spread() {
        let a = InstallationId::from_uuid(uuid::Uuid::from_u128(1));
        let b = InstallationId::from_uuid(uuid::Uuid::from_u128(2));
        assert_eq!(lock_key(&a), lock_key(&a));
        assert_ne!(lock_key(&a), lock_key(&b));
        assert_eq!(lock_key(&a).0, LOCK_CLASS);
    }

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
                details: d()
            }),
            RefreshFailureClass::ServerError
        );
        assert_eq!(
            failure_class(&HubSpotError::Transient {
                cause: TransientCause::Timeout,
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
    fn reasons_are_checked_before_anything_irreversible() {
        assert!(check_reason("  ").is_err());
        assert!(check_reason("line\nbreak").is_err());
        assert!(check_reason(&"x".repeat(MAX_REASON_CHARS + 1)).is_err());
        assert_eq!(check_reason(" GDPR ticket 42 ").unwrap(), "GDPR ticket 42");
    }

    #[test]
    fn need_expiring_within_treats_missing_tokens_as_due() {
        let installation = Installation::default();
        let now = Utc::now();
        assert!(Need::ExpiresWithin(chrono::Duration::seconds(10)).holds(&installation, now));
        assert!(Need::GenerationIs(0).holds(&installation, now));
        assert!(!Need::GenerationIs(1).holds(&installation, now));
    }

    #[test]
    fn handed_out_tokens_do_not_print() {
        let token = HandedOutToken {
            access_token: SecretString::from("CNsecret-access".to_owned()),
            expires_at: Utc::now(),
            hub_id: HubId(1),
            scopes: vec!["oauth".into()],
        };
        assert!(!format!("{token:?}").contains("CNsecret-access"));
        assert_eq!(expose_for_response(&token), "CNsecret-access");
    }
}
