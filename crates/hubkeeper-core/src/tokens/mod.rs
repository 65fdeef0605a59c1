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
//!
//! # Where
//!
//! * `handout`: handing out tokens, the cache and its invalidation.
//! * `single_flight`: the locks a refresh, revoke or disconnect of one installation runs under.
//! * `refresh`: refreshing (for hand-outs, the refresher worker and operators) and its outcomes.
//! * `revoke`: revoke, disconnect, uninstall and forget.
//! * `usage`: counting hand-outs and writing them to `token_usage`.

mod handout;
mod refresh;
mod revoke;
mod scheduled_removal;
mod single_flight;
mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hubkeeper_domain::installation::{
    Connect, HistoryEntry, Installation, InstallationCommand, InstallationStatus, Installer,
    LastFailure, ScheduledRemoval,
};
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::{AppId, DomainServices, HubId, InstallationId, UserId};
use hubkeeper_hubspot::HubSpotClient;
use serde::Serialize;
use sqlx::PgPool;

use crate::apps::AppService;
use crate::broadcast::{Broadcaster, Invalidation, ListenerGuard};
use crate::commands::CommandBus;
use crate::error::CoreError;
use crate::vault::Vault;

pub use handout::{expose_for_proxy, expose_for_response, HandedOutToken};
pub use refresh::{NotRefreshable, RefreshFailure, RefreshOutcome, RefreshTrigger, TriggerKind};
pub use revoke::{record_uninstall, ForgetOutcome};
pub use scheduled_removal::{RemovalRun, ScheduledRemovalConfig, ScheduledRemovals};
pub use usage::TokenUsage;

use handout::CachedToken;
use single_flight::flight_slots;
use usage::UsageCounters;

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
    /// How long after a failed refresh a hand-out answers from that failure instead of asking
    /// HubSpot again (the negative cache; zero disables it).
    pub failure_cache: Duration,
    /// Shortest notice a scheduled revoke or disconnect may give the app.
    pub removal_min_notice: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            default_min_validity: Duration::from_secs(300),
            cache_max_age: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(30),
            usage_flush_interval: Duration::from_secs(2),
            failure_cache: Duration::from_secs(5),
            removal_min_notice: Duration::from_secs(60),
        }
    }
}

/// One installation as `GET /v1/installations/{id}` answers it, read from the aggregate (with
/// its history and hand-out usage); lists come from the `rm_installations` read model
/// (`hubkeeper_projections::queries::InstallationView`). No tokens, sealed or not.
#[derive(Debug, Clone, Serialize)]
pub struct InstallationDetails {
    pub installation_id: InstallationId,
    pub app_id: AppId,
    pub hub_id: HubId,
    pub user_id: Option<UserId>,
    pub hub_domain: String,
    pub installer: Installer,
    pub status: InstallationStatus,
    pub scopes: Vec<String>,
    pub app_version: Option<String>,
    /// The app's customer reference of the latest connect through a connect session.
    pub external_ref: Option<String>,
    /// The app's metadata of that session.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub generation: u64,
    pub first_connected_at: Option<DateTime<Utc>>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub last_failure: Option<LastFailure>,
    pub forgotten_at: Option<DateTime<Utc>>,
    /// The revoke or disconnect announced for later, if one is pending.
    pub scheduled_removal: Option<ScheduledRemoval>,
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
                    Invalidation::App { .. } | Invalidation::ApiKey { .. } => {}
                }
            })
            .await;
        let _ = service.inner.listener.set(guard);
        service
    }

    pub fn config(&self) -> &TokenConfig {
        &self.inner.config
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
    pub async fn details(&self, id: &InstallationId) -> Result<InstallationDetails, CoreError> {
        let installation = self.inner.load(id).await?;
        let now = self.inner.clock.now();
        let (Some(status), Some(app_id), Some(hub_id)) = (
            installation.status_at(now),
            installation.app_id(),
            installation.hub_id(),
        ) else {
            return Err(CoreError::not_found("installation", id));
        };
        Ok(InstallationDetails {
            installation_id: *id,
            app_id,
            hub_id,
            user_id: installation.user_id(),
            hub_domain: installation.hub_domain().to_owned(),
            installer: installation.installer().clone(),
            status,
            scopes: installation.granted_scopes().iter().cloned().collect(),
            app_version: installation.app_version().map(str::to_owned),
            external_ref: installation.external_ref().map(str::to_owned),
            metadata: installation.metadata().cloned(),
            access_expires_at: installation.access_expires_at(),
            generation: installation.generation(),
            first_connected_at: installation.first_connected_at(),
            last_connected_at: installation.last_connected_at(),
            last_refreshed_at: installation.last_refreshed_at(),
            consecutive_failures: installation.consecutive_failures(),
            last_failure: installation.last_failure().cloned(),
            forgotten_at: installation.forgotten_at(),
            scheduled_removal: installation.scheduled_removal().cloned(),
            history: installation.history().to_vec(),
            usage: self.usage(id).await?,
        })
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

    /// As [`Inner::load`], keeping the state for the command that follows (see
    /// [`crate::commands::AggregateBus::load_for_command`]).
    async fn load_for_command(&self, id: &InstallationId) -> Result<Installation, CoreError> {
        self.bus
            .installations()
            .load_for_command(&id.to_string())
            .await
            .map(|(installation, _)| installation)
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn status_error(id: &InstallationId, status: InstallationStatus) -> CoreError {
    let id = id.to_string();
    match status {
        InstallationStatus::NeedsReauthorization => CoreError::ReauthorizationRequired { id },
        InstallationStatus::Revoked => CoreError::Revoked { id },
        _ => CoreError::Disconnected { id },
    }
}
