//! The `Installation` aggregate: one app installed in one hub (per user for user-level apps),
//! with its sealed tokens, granted scopes and lifecycle.
//!
//! # Status
//!
//! `Connected`, `NeedsReauthorization`, `Disconnected` and `Revoked` are recorded facts.
//! `Expired` is not: an access token expires by the passage of time, so it is derived from
//! the stored expiry and the caller's clock in [`Installation::status_at`]. Recording expiry as
//! an event would need a timer per installation and would be wrong the moment a refresh raced
//! it.
//!
//! # Token hand-outs are not events
//!
//! Every API call somewhere in the system asks for an access token. Recording each hand-out
//! (or even one per minute per installation) would make hand-outs the bulk of the event log,
//! slow every aggregate load and turn a read path into a write path that can fail on
//! concurrency conflicts. "Last used" is operational telemetry, not a business fact: the store
//! keeps it in a plain, overwritable column of the installation read model (updated at most
//! every few minutes), and metrics count hand-outs. The aggregate never sees them.
//!
//! # Concurrency with refreshes
//!
//! `generation` counts token pairs: 1 at first connect, +1 on every refresh and reconnect. A
//! refresher reads the generation, calls HubSpot, then reports with `expected_generation`. If
//! another refresh or a reconnect happened meanwhile, the report is refused
//! ([`InstallationError::StaleGeneration`]) so an old grant's outcome can neither overwrite
//! newer tokens nor mark a fresh installation as needing re-authorization. A distributed lock
//! around refreshes keeps this rare; the check makes it harmless.

mod customer;
mod events;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use hubkeeper_crypto::Sealed;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use customer::{
    validate_external_ref, validate_metadata, CustomerRef, CustomerRefError,
    MAX_EXTERNAL_REF_CHARS, MAX_METADATA_BYTES, MAX_METADATA_DEPTH,
};
pub use events::{
    event_types, InstallationConnected, InstallationDisconnected, InstallationEvent,
    InstallationReconnected, InstallationRemovalCancelled, InstallationRemovalScheduled,
    InstallationRevoked, ReauthorizationRequired, RefreshFailed, StoredDisconnectCause,
    StoredInstallationStatus, StoredInstaller, StoredRefreshFailureClass, StoredRemovalAction,
    StoredTokens, TenantForgotten, TokensRefreshed,
};

use crate::aggregate::aggregate;
use crate::ids::{AppId, HubId, InstallationId, UserId};
use crate::validate::{scope_set, shorten, single_line};

/// Longest failure message kept in an event.
pub const MAX_FAILURE_MESSAGE_CHARS: usize = 500;
/// Longest operator reason accepted.
pub const MAX_REASON_CHARS: usize = 500;
/// Furthest ahead a removal may be scheduled: notice beyond a month is a reminder, not a
/// schedule, and would leave a live grant announced as ending for too long.
pub const MAX_REMOVAL_NOTICE_DAYS: i64 = 30;
/// Longest actor name kept with a scheduled removal.
pub const MAX_ACTOR_CHARS: usize = 200;

/// The sealed token pair of an installation, as the edge hands it to the domain.
///
/// Tokens are sealed with the installation's data key and `Aad::access_token(id)` /
/// `Aad::refresh_token(id)`; the domain stores and compares them but never opens them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedTokens {
    /// The access token.
    pub access: Sealed,
    /// The refresh token (always the latest one HubSpot returned).
    pub refresh: Sealed,
    /// When the access token stops working (now + `expires_in` at exchange time).
    pub access_expires_at: DateTime<Utc>,
}

/// The HubSpot user who installed or re-authorized the app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installer {
    /// HubSpot user id, if HubSpot reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// E-mail address, if HubSpot reported it. Stored in clear: not covered by
    /// crypto-shredding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// What the dashboard shows for an installation at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallationStatus {
    /// Access token valid.
    Connected,
    /// Access token past its expiry, refresh token presumed valid: refreshable.
    Expired,
    /// Refresh token rejected by HubSpot: the user must go through OAuth again.
    NeedsReauthorization,
    /// Tokens removed by an operator or by uninstalling in HubSpot; data kept.
    Disconnected,
    /// Tokens revoked at HubSpot and removed; only a new OAuth flow restores access.
    Revoked,
}

impl InstallationStatus {
    /// Stable snake_case name (also the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Expired => "expired",
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::Disconnected => "disconnected",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for InstallationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a refresh failed, as classified by the refresher from HubSpot's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshFailureClass {
    /// `invalid_grant` / bad refresh token.
    InvalidGrant,
    /// 401/403 from the token endpoint (bad client credentials or revoked app).
    Unauthorized,
    /// 429.
    RateLimited,
    /// 5xx from HubSpot.
    ServerError,
    /// Connection failure or timeout.
    Network,
    /// Anything else.
    Other,
}

impl RefreshFailureClass {
    /// Stable snake_case name (also the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidGrant => "invalid_grant",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Network => "network",
            Self::Other => "other",
        }
    }
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectCause {
    /// An operator disconnected it.
    Operator,
    /// The app was uninstalled in HubSpot (webhook).
    Uninstalled,
}

/// What a scheduled removal does when it is due: the same as the operator command of that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalAction {
    /// Revoke the tokens at HubSpot and remove them (`InstallationCommand::Revoke`).
    Revoke,
    /// Remove the tokens, keep the data (`InstallationCommand::Disconnect`).
    Disconnect,
}

impl RemovalAction {
    /// Stable snake_case name (also the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Disconnect => "disconnect",
        }
    }
}

impl fmt::Display for RemovalAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A revoke or disconnect announced for a later time (so the app can be told first). At most one
/// is pending; any revoke, disconnect, uninstall or reconnect in the meantime clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRemoval {
    /// What is done when due.
    pub action: RemovalAction,
    /// The operator's reason (also the reason of the revoke or disconnect).
    pub reason: String,
    /// When it is due.
    pub effective_at: DateTime<Utc>,
    /// Who scheduled it.
    pub scheduled_by: String,
    /// When it was scheduled.
    pub scheduled_at: DateTime<Utc>,
}

/// One entry of the installation's lifecycle history (refreshes are not listed: too many).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub change: HistoryChange,
}

/// Kinds of [`HistoryEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryChange {
    /// First connect.
    Installed {
        /// Granted scopes.
        scopes: Vec<String>,
        /// App version installed.
        app_version: Option<String>,
    },
    /// Connect after an earlier one.
    Reconnected {
        /// Status just before.
        previous_status: InstallationStatus,
    },
    /// Granted scopes differ from before.
    ScopesChanged {
        /// Newly granted.
        added: Vec<String>,
        /// No longer granted.
        removed: Vec<String>,
    },
    /// The installed app version changed.
    AppVersionChanged {
        /// Before.
        from: Option<String>,
        /// After.
        to: String,
    },
    /// A connect session of another of the app's customers reconnected the installation.
    CustomerChanged {
        /// The customer reference before, if any.
        from: Option<String>,
        /// The customer reference now.
        to: String,
    },
    /// Refresh token found dead.
    ReauthorizationRequired {
        /// Failure category.
        class: RefreshFailureClass,
    },
    /// Disconnected.
    Disconnected {
        /// Who.
        cause: DisconnectCause,
        /// Why.
        reason: Option<String>,
    },
    /// Revoked.
    Revoked {
        /// Why.
        reason: String,
    },
    /// Tenant data key destroyed.
    TenantForgotten,
}

/// First connect or reconnect, after a successful OAuth code exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The app.
    pub app_id: AppId,
    /// The hub.
    pub hub_id: HubId,
    /// Only for user-level apps: the user the installation belongs to. Together with app and
    /// hub it determines the aggregate id ([`InstallationId::derive`]).
    pub user_id: Option<UserId>,
    /// Hub domain from HubSpot's token metadata.
    pub hub_domain: String,
    /// Who authorized.
    pub installer: Installer,
    /// Scopes HubSpot granted.
    pub scopes: Vec<String>,
    /// The sealed token pair.
    pub tokens: SealedTokens,
    /// Version of our app, if known.
    pub app_version: Option<String>,
    /// The app's customer, when the connect came through a connect session.
    pub customer: Option<CustomerRef>,
}

/// Commands accepted by [`Installation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallationCommand {
    /// OAuth connect (first time or again).
    Connect(Connect),
    /// A refresh succeeded.
    RecordRefresh {
        /// The new pair (store the returned refresh token even if unchanged).
        tokens: SealedTokens,
        /// When HubSpot answered.
        refreshed_at: DateTime<Utc>,
        /// [`Installation::generation`] read before calling HubSpot.
        expected_generation: u64,
    },
    /// A refresh failed.
    RecordRefreshFailure {
        /// Failure category.
        class: RefreshFailureClass,
        /// `true` when the refresh token itself was rejected (user must re-authorize).
        reauth_required: bool,
        /// Diagnostic text; never include tokens or secrets.
        message: String,
        /// [`Installation::generation`] read before calling HubSpot.
        expected_generation: u64,
    },
    /// Tokens were revoked at HubSpot; remove them. Cannot be undone (only a new connect
    /// restores access).
    Revoke {
        /// Mandatory justification.
        reason: String,
    },
    /// Operator disconnect: remove tokens, keep data, allow reconnect.
    Disconnect {
        /// Mandatory justification.
        reason: String,
    },
    /// HubSpot reported an uninstall (webhook).
    MarkUninstalled {
        /// When HubSpot says it happened; older than the latest connect means the webhook is
        /// a late delivery about an earlier grant and is ignored.
        occurred_at: DateTime<Utc>,
    },
    /// Record the decision to crypto-shred this tenant (the store destroys the data key).
    ForgetTenant {
        /// Mandatory justification.
        reason: String,
    },
    /// Announce a revoke or disconnect for `effective_at`; the removal itself is the ordinary
    /// `Revoke` / `Disconnect` command, sent when it is due.
    ScheduleRemoval {
        /// What to do when due.
        action: RemovalAction,
        /// Mandatory justification.
        reason: String,
        /// When; after now and at most [`MAX_REMOVAL_NOTICE_DAYS`] ahead.
        effective_at: DateTime<Utc>,
        /// The operator scheduling it (the command's actor).
        scheduled_by: String,
    },
    /// Withdraw the pending scheduled removal.
    CancelScheduledRemoval {
        /// Optional justification.
        reason: Option<String>,
    },
}

/// Why an installation command was refused. Messages contain no secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InstallationError {
    /// Any command but `Connect` before the first connect.
    #[error("installation has never been connected")]
    NotConnected,
    /// `Connect` names another app/hub/user than the installation belongs to.
    #[error(
        "connect is for installation {derived} (from its app, hub and user) but was sent to \
         installation {expected}"
    )]
    IdentityMismatch {
        /// Id derived from the command.
        derived: InstallationId,
        /// Id of this installation.
        expected: InstallationId,
    },
    /// Bad hub domain.
    #[error("hub domain {reason}")]
    InvalidHubDomain {
        /// What is wrong.
        reason: &'static str,
    },
    /// Bad scope in the granted list.
    #[error("invalid granted scope {scope:?}: {hint}")]
    InvalidScope {
        /// The offending scope (shortened).
        scope: String,
        /// Why.
        hint: &'static str,
    },
    /// Bad installer e-mail.
    #[error("installer e-mail address is not valid")]
    InvalidInstallerEmail,
    /// Bad customer reference or metadata.
    #[error(transparent)]
    InvalidCustomer(#[from] CustomerRefError),
    /// Bad app version string.
    #[error("app version {reason} (at most 64 characters)")]
    InvalidAppVersion {
        /// What is wrong.
        reason: &'static str,
    },
    /// Token pair that is already expired when recorded.
    #[error(
        "access token expiry {expires_at} is not after {reference}; check the expires_in \
         conversion"
    )]
    TokenAlreadyExpired {
        /// Claimed expiry.
        expires_at: DateTime<Utc>,
        /// Time it was compared with.
        reference: DateTime<Utc>,
    },
    /// Refresh-related command on a disconnected installation.
    #[error("installation is disconnected; the user must reconnect through the OAuth flow")]
    Disconnected,
    /// Refresh-related command on a revoked installation.
    #[error("installation was revoked; the user must re-authorize through the OAuth flow")]
    Revoked,
    /// Refresh outcome for an older token generation.
    #[error(
        "token generation is {current}, not {expected}: tokens changed while this refresh was \
         in flight; discard the result and reload"
    )]
    StaleGeneration {
        /// Generation the caller started from.
        expected: u64,
        /// Current generation.
        current: u64,
    },
    /// Revoke on a disconnected installation.
    #[error("installation is disconnected and holds no tokens to revoke")]
    NothingToRevoke,
    /// Forget while tokens may still work at HubSpot.
    #[error(
        "revoke or disconnect the installation before forgetting the tenant, so its tokens \
         stop working at HubSpot first"
    )]
    StillConnected,
    /// A removal is already scheduled: cancel it first (scheduling does not silently replace a
    /// removal the app has already been told about).
    #[error(
        "a {action} of this installation is already scheduled for {effective_at}; cancel it \
         before scheduling another"
    )]
    RemovalAlreadyScheduled {
        /// The pending removal's action.
        action: RemovalAction,
        /// When it is due.
        effective_at: DateTime<Utc>,
    },
    /// Cancel without a pending removal.
    #[error("no removal of this installation is scheduled")]
    NoRemovalScheduled,
    /// `effective_at` not in the accepted window.
    #[error(
        "effective_at {effective_at} must be after now ({now}) and at most {max} days ahead",
        max = MAX_REMOVAL_NOTICE_DAYS
    )]
    InvalidRemovalTime {
        /// Requested time.
        effective_at: DateTime<Utc>,
        /// The time it was compared with.
        now: DateTime<Utc>,
    },
    /// Bad actor name for a scheduled removal.
    #[error("scheduled_by {reason} (at most {max} characters, one line)", max = MAX_ACTOR_CHARS)]
    InvalidActor {
        /// What is wrong.
        reason: &'static str,
    },
    /// Bad operator reason.
    #[error("reason {reason} (at most {max} characters, one line)", max = MAX_REASON_CHARS)]
    InvalidReason {
        /// What is wrong.
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    installation_id: InstallationId,
    app_id: AppId,
    hub_id: HubId,
    user_id: Option<UserId>,
}

/// Recorded lifecycle; `Expired` is derived, see module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Lifecycle {
    #[default]
    New,
    Active,
    NeedsReauthorization,
    Disconnected,
    Revoked,
}

/// The most recent refresh failure, for the details view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailure {
    /// Category.
    pub class: RefreshFailureClass,
    /// Diagnostic text.
    pub message: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// State of one installation, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installation {
    identity: Option<Identity>,
    hub_domain: String,
    installer: Installer,
    scopes: BTreeSet<String>,
    app_version: Option<String>,
    #[serde(default)]
    external_ref: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    lifecycle: Lifecycle,
    tokens: Option<SealedTokens>,
    generation: u64,
    first_connected_at: Option<DateTime<Utc>>,
    last_connected_at: Option<DateTime<Utc>>,
    last_refreshed_at: Option<DateTime<Utc>>,
    consecutive_failures: u32,
    last_failure: Option<LastFailure>,
    forgotten_at: Option<DateTime<Utc>>,
    history: Vec<HistoryEntry>,
    #[serde(default)]
    scheduled_removal: Option<ScheduledRemoval>,
}

impl Installation {
    /// Status as of `now`; `None` before the first connect.
    pub fn status_at(&self, now: DateTime<Utc>) -> Option<InstallationStatus> {
        match self.lifecycle {
            Lifecycle::New => None,
            Lifecycle::Active => match &self.tokens {
                Some(tokens) if now < tokens.access_expires_at => {
                    Some(InstallationStatus::Connected)
                }
                _ => Some(InstallationStatus::Expired),
            },
            Lifecycle::NeedsReauthorization => Some(InstallationStatus::NeedsReauthorization),
            Lifecycle::Disconnected => Some(InstallationStatus::Disconnected),
            Lifecycle::Revoked => Some(InstallationStatus::Revoked),
        }
    }

    /// Expiry of the current access token, while tokens are held.
    pub fn access_expires_at(&self) -> Option<DateTime<Utc>> {
        self.tokens.as_ref().map(|t| t.access_expires_at)
    }

    /// How long the current access token was issued for: from the connect or refresh that
    /// brought it to its expiry. `None` while no tokens are held.
    pub fn token_lifetime(&self) -> Option<Duration> {
        let expires_at = self.access_expires_at()?;
        let issued_at = match (self.last_refreshed_at, self.last_connected_at) {
            (Some(r), Some(c)) => r.max(c),
            (r, c) => r.or(c)?,
        };
        Some(expires_at - issued_at)
    }

    /// The current sealed token pair; `None` once disconnected, revoked or never connected.
    /// Also kept while re-authorization is needed: the access token may still work until it
    /// expires.
    pub fn sealed_tokens(&self) -> Option<&SealedTokens> {
        self.tokens.as_ref()
    }

    /// Token generation (0 before the first connect). See module docs.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the refresher should keep this installation's tokens alive (connected or
    /// expired; not after a dead refresh token, disconnect or revoke).
    pub fn is_refreshable(&self) -> bool {
        self.lifecycle == Lifecycle::Active && self.tokens.is_some()
    }

    /// When a refresh becomes due, given a safety `margin` before expiry.
    pub fn refresh_due_at(&self, margin: Duration) -> Option<DateTime<Utc>> {
        if !self.is_refreshable() {
            return None;
        }
        self.access_expires_at().map(|at| at - margin)
    }

    /// The installation's id, once connected.
    pub fn installation_id(&self) -> Option<InstallationId> {
        self.identity.map(|i| i.installation_id)
    }

    /// The app, once connected.
    pub fn app_id(&self) -> Option<AppId> {
        self.identity.map(|i| i.app_id)
    }

    /// The hub, once connected.
    pub fn hub_id(&self) -> Option<HubId> {
        self.identity.map(|i| i.hub_id)
    }

    /// The owning user for user-level apps.
    pub fn user_id(&self) -> Option<UserId> {
        self.identity.and_then(|i| i.user_id)
    }

    /// Hub domain as last reported.
    pub fn hub_domain(&self) -> &str {
        &self.hub_domain
    }

    /// Who last authorized.
    pub fn installer(&self) -> &Installer {
        &self.installer
    }

    /// Scopes granted by the last authorization.
    pub fn granted_scopes(&self) -> &BTreeSet<String> {
        &self.scopes
    }

    /// App version of the last authorization, if known.
    pub fn app_version(&self) -> Option<&str> {
        self.app_version.as_deref()
    }

    /// The app's customer reference of the latest connect through a session, if any.
    pub fn external_ref(&self) -> Option<&str> {
        self.external_ref.as_deref()
    }

    /// The app's metadata of the latest connect through a session, if any.
    pub fn metadata(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.metadata.as_ref()
    }

    /// First connect.
    pub fn first_connected_at(&self) -> Option<DateTime<Utc>> {
        self.first_connected_at
    }

    /// Latest connect or reconnect.
    pub fn last_connected_at(&self) -> Option<DateTime<Utc>> {
        self.last_connected_at
    }

    /// Latest successful refresh.
    pub fn last_refreshed_at(&self) -> Option<DateTime<Utc>> {
        self.last_refreshed_at
    }

    /// Failed refreshes in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Latest refresh failure, if any since the last success.
    pub fn last_failure(&self) -> Option<&LastFailure> {
        self.last_failure.as_ref()
    }

    /// When the tenant was forgotten, if it was (and not reconnected since).
    pub fn forgotten_at(&self) -> Option<DateTime<Utc>> {
        self.forgotten_at
    }

    /// Lifecycle history, oldest first.
    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    /// The pending scheduled revoke or disconnect, if any.
    pub fn scheduled_removal(&self) -> Option<&ScheduledRemoval> {
        self.scheduled_removal.as_ref()
    }

    fn connect(
        &self,
        cmd: Connect,
        now: DateTime<Utc>,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        let installation_id = InstallationId::derive(cmd.app_id, cmd.hub_id, cmd.user_id);
        if let Some(identity) = self.identity {
            if identity.installation_id != installation_id {
                return Err(InstallationError::IdentityMismatch {
                    derived: installation_id,
                    expected: identity.installation_id,
                });
            }
        }
        let hub_domain = validate_hub_domain(&cmd.hub_domain)?;
        let installer = validate_installer(cmd.installer)?;
        let scopes: Vec<String> = scope_set(cmd.scopes.iter().map(String::as_str))
            .map_err(|bad| InstallationError::InvalidScope {
                scope: bad.scope,
                hint: bad.hint,
            })?
            .into_iter()
            .collect();
        let app_version = match cmd.app_version.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(version) => Some(
                single_line(version, 64)
                    .map_err(|reason| InstallationError::InvalidAppVersion { reason })?,
            ),
        };
        let (external_ref, metadata) = match cmd.customer {
            Some(customer) => (
                Some(validate_external_ref(&customer.external_ref)?),
                customer
                    .metadata
                    .map(|m| validate_metadata(serde_json::Value::Object(m)))
                    .transpose()?,
            ),
            None => (None, None),
        };
        check_expiry(&cmd.tokens, now)?;

        let Some(previous_status) = self.status_at(now) else {
            return Ok(Some(InstallationEvent::Connected(InstallationConnected {
                installation_id,
                app_id: cmd.app_id,
                hub_id: cmd.hub_id,
                user_id: cmd.user_id,
                hub_domain,
                installer: installer.into(),
                scopes,
                tokens: cmd.tokens.into(),
                app_version,
                external_ref,
                metadata,
                generation: 1,
                connected_at: now,
            })));
        };
        if self.tokens.as_ref() == Some(&cmd.tokens) {
            // The same sealed pair again can only be a redelivered command.
            return Ok(None);
        }
        Ok(Some(InstallationEvent::Reconnected(
            InstallationReconnected {
                installation_id,
                hub_domain,
                installer: installer.into(),
                scopes,
                tokens: cmd.tokens.into(),
                app_version,
                external_ref,
                metadata,
                previous_status: previous_status.into(),
                generation: self.generation + 1,
                connected_at: now,
            },
        )))
    }

    /// Refresh outcomes only make sense while tokens are held.
    fn require_tokens_held(&self) -> Result<(), InstallationError> {
        match self.lifecycle {
            Lifecycle::New => Err(InstallationError::NotConnected),
            Lifecycle::Disconnected => Err(InstallationError::Disconnected),
            Lifecycle::Revoked => Err(InstallationError::Revoked),
            Lifecycle::Active | Lifecycle::NeedsReauthorization => Ok(()),
        }
    }

    fn check_generation(&self, expected: u64) -> Result<(), InstallationError> {
        if expected == self.generation {
            Ok(())
        } else {
            Err(InstallationError::StaleGeneration {
                expected,
                current: self.generation,
            })
        }
    }

    fn record_refresh(
        &self,
        tokens: SealedTokens,
        refreshed_at: DateTime<Utc>,
        expected_generation: u64,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        self.require_tokens_held()?;
        if self.tokens.as_ref() == Some(&tokens) {
            // Redelivery of the refresh that produced the current pair.
            return Ok(None);
        }
        self.check_generation(expected_generation)?;
        check_expiry(&tokens, refreshed_at)?;
        Ok(Some(InstallationEvent::TokensRefreshed(TokensRefreshed {
            tokens: tokens.into(),
            generation: self.generation + 1,
            refreshed_at,
        })))
    }

    fn record_refresh_failure(
        &self,
        class: RefreshFailureClass,
        reauth_required: bool,
        message: &str,
        expected_generation: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        self.require_tokens_held()?;
        self.check_generation(expected_generation)?;
        let message = shorten(message.trim(), MAX_FAILURE_MESSAGE_CHARS);
        if reauth_required {
            if self.lifecycle == Lifecycle::NeedsReauthorization {
                return Ok(None);
            }
            return Ok(Some(InstallationEvent::ReauthorizationRequired(
                ReauthorizationRequired {
                    class: class.into(),
                    message,
                    generation: self.generation,
                    failed_at: now,
                },
            )));
        }
        Ok(Some(InstallationEvent::RefreshFailed(RefreshFailed {
            class: class.into(),
            message,
            generation: self.generation,
            consecutive_failures: self.consecutive_failures.saturating_add(1),
            failed_at: now,
        })))
    }

    fn revoke(
        &self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        let reason = validate_reason(reason)?;
        match self.lifecycle {
            Lifecycle::New => Err(InstallationError::NotConnected),
            Lifecycle::Revoked => Ok(None),
            Lifecycle::Disconnected => Err(InstallationError::NothingToRevoke),
            Lifecycle::Active | Lifecycle::NeedsReauthorization => {
                Ok(Some(InstallationEvent::Revoked(InstallationRevoked {
                    reason,
                    revoked_at: now,
                })))
            }
        }
    }

    fn disconnect(
        &self,
        cause: DisconnectCause,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        match self.lifecycle {
            Lifecycle::New => Err(InstallationError::NotConnected),
            // Already without tokens: the caller's goal holds.
            Lifecycle::Disconnected | Lifecycle::Revoked => Ok(None),
            Lifecycle::Active | Lifecycle::NeedsReauthorization => Ok(Some(
                InstallationEvent::Disconnected(InstallationDisconnected {
                    cause: cause.into(),
                    reason,
                    disconnected_at: now,
                }),
            )),
        }
    }

    fn mark_uninstalled(
        &self,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        if self
            .last_connected_at
            .is_some_and(|connected| occurred_at < connected)
        {
            // HubSpot retries webhooks for hours: an uninstall from before the latest
            // reconnect concerns a grant that no longer exists.
            return Ok(None);
        }
        self.disconnect(DisconnectCause::Uninstalled, None, now)
    }

    fn forget(
        &self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        let reason = validate_reason(reason)?;
        match self.lifecycle {
            Lifecycle::New => Err(InstallationError::NotConnected),
            Lifecycle::Active | Lifecycle::NeedsReauthorization => {
                Err(InstallationError::StillConnected)
            }
            Lifecycle::Disconnected | Lifecycle::Revoked if self.forgotten_at.is_some() => Ok(None),
            Lifecycle::Disconnected | Lifecycle::Revoked => {
                Ok(Some(InstallationEvent::TenantForgotten(TenantForgotten {
                    reason,
                    forgotten_at: now,
                })))
            }
        }
    }

    fn schedule_removal(
        &self,
        action: RemovalAction,
        reason: &str,
        effective_at: DateTime<Utc>,
        scheduled_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        let reason = validate_reason(reason)?;
        let scheduled_by = single_line(scheduled_by, MAX_ACTOR_CHARS)
            .map_err(|reason| InstallationError::InvalidActor { reason })?;
        match (self.lifecycle, action) {
            (Lifecycle::New, _) => return Err(InstallationError::NotConnected),
            (Lifecycle::Revoked, _) => return Err(InstallationError::Revoked),
            (Lifecycle::Disconnected, RemovalAction::Revoke) => {
                return Err(InstallationError::NothingToRevoke)
            }
            (Lifecycle::Disconnected, RemovalAction::Disconnect) => {
                return Err(InstallationError::Disconnected)
            }
            (Lifecycle::Active | Lifecycle::NeedsReauthorization, _) => {}
        }
        if let Some(pending) = &self.scheduled_removal {
            if pending.action == action
                && pending.effective_at == effective_at
                && pending.reason == reason
            {
                // The same schedule again can only be a retried command.
                return Ok(None);
            }
            return Err(InstallationError::RemovalAlreadyScheduled {
                action: pending.action,
                effective_at: pending.effective_at,
            });
        }
        if effective_at <= now || effective_at > now + Duration::days(MAX_REMOVAL_NOTICE_DAYS) {
            return Err(InstallationError::InvalidRemovalTime { effective_at, now });
        }
        Ok(Some(InstallationEvent::RemovalScheduled(
            InstallationRemovalScheduled {
                action: action.into(),
                reason,
                effective_at,
                scheduled_by,
                scheduled_at: now,
            },
        )))
    }

    fn cancel_scheduled_removal(
        &self,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<InstallationEvent>, InstallationError> {
        let reason = match reason.map(str::trim) {
            None | Some("") => None,
            Some(reason) => Some(validate_reason(reason)?),
        };
        if self.lifecycle == Lifecycle::New {
            return Err(InstallationError::NotConnected);
        }
        let Some(pending) = &self.scheduled_removal else {
            return Err(InstallationError::NoRemovalScheduled);
        };
        Ok(Some(InstallationEvent::RemovalCancelled(
            InstallationRemovalCancelled {
                action: pending.action.into(),
                effective_at: pending.effective_at,
                reason,
                cancelled_at: now,
            },
        )))
    }

    fn push_history(&mut self, at: DateTime<Utc>, change: HistoryChange) {
        self.history.push(HistoryEntry { at, change });
    }

    fn record_version_change(&mut self, at: DateTime<Utc>, version: Option<String>) {
        if let Some(to) = version {
            if self.app_version.as_deref() != Some(to.as_str()) {
                let from = self.app_version.replace(to.clone());
                self.push_history(at, HistoryChange::AppVersionChanged { from, to });
            }
        }
    }
}

aggregate!(
    Installation,
    "installation",
    InstallationCommand,
    InstallationEvent,
    InstallationError
);

impl Installation {
    /// The events `command` leads to at `now`, from the state before it; none when it
    /// changes nothing.
    fn decide(
        &self,
        command: InstallationCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<InstallationEvent>, InstallationError> {
        let event = match command {
            InstallationCommand::Connect(cmd) => self.connect(cmd, now)?,
            InstallationCommand::RecordRefresh {
                tokens,
                refreshed_at,
                expected_generation,
            } => self.record_refresh(tokens, refreshed_at, expected_generation)?,
            InstallationCommand::RecordRefreshFailure {
                class,
                reauth_required,
                message,
                expected_generation,
            } => self.record_refresh_failure(
                class,
                reauth_required,
                &message,
                expected_generation,
                now,
            )?,
            InstallationCommand::Revoke { reason } => self.revoke(&reason, now)?,
            InstallationCommand::Disconnect { reason } => {
                let reason = validate_reason(&reason)?;
                self.disconnect(DisconnectCause::Operator, Some(reason), now)?
            }
            InstallationCommand::MarkUninstalled { occurred_at } => {
                self.mark_uninstalled(occurred_at, now)?
            }
            InstallationCommand::ForgetTenant { reason } => self.forget(&reason, now)?,
            InstallationCommand::ScheduleRemoval {
                action,
                reason,
                effective_at,
                scheduled_by,
            } => self.schedule_removal(action, &reason, effective_at, &scheduled_by, now)?,
            InstallationCommand::CancelScheduledRemoval { reason } => {
                self.cancel_scheduled_removal(reason.as_deref(), now)?
            }
        };
        Ok(event.into_iter().collect())
    }

    fn evolve(&mut self, event: InstallationEvent) {
        match event {
            InstallationEvent::Connected(e) => {
                self.identity = Some(Identity {
                    installation_id: e.installation_id,
                    app_id: e.app_id,
                    hub_id: e.hub_id,
                    user_id: e.user_id,
                });
                self.hub_domain = e.hub_domain;
                self.installer = e.installer.into();
                self.scopes = e.scopes.iter().cloned().collect();
                self.app_version = e.app_version.clone();
                self.external_ref = e.external_ref;
                self.metadata = e.metadata;
                self.lifecycle = Lifecycle::Active;
                self.tokens = Some(e.tokens.into());
                self.generation = e.generation;
                self.first_connected_at = Some(e.connected_at);
                self.last_connected_at = Some(e.connected_at);
                self.consecutive_failures = 0;
                self.last_failure = None;
                self.push_history(
                    e.connected_at,
                    HistoryChange::Installed {
                        scopes: e.scopes,
                        app_version: e.app_version,
                    },
                );
            }
            InstallationEvent::Reconnected(e) => {
                let at = e.connected_at;
                self.push_history(
                    at,
                    HistoryChange::Reconnected {
                        previous_status: e.previous_status.into(),
                    },
                );
                let scopes: BTreeSet<String> = e.scopes.into_iter().collect();
                if scopes != self.scopes {
                    let added = scopes.difference(&self.scopes).cloned().collect();
                    let removed = self.scopes.difference(&scopes).cloned().collect();
                    self.push_history(at, HistoryChange::ScopesChanged { added, removed });
                    self.scopes = scopes;
                }
                self.record_version_change(at, e.app_version);
                if let Some(external_ref) = e.external_ref {
                    if self.external_ref.as_deref() != Some(external_ref.as_str()) {
                        self.push_history(
                            at,
                            HistoryChange::CustomerChanged {
                                from: self.external_ref.clone(),
                                to: external_ref.clone(),
                            },
                        );
                    }
                    self.external_ref = Some(external_ref);
                    self.metadata = e.metadata;
                }
                self.hub_domain = e.hub_domain;
                self.installer = e.installer.into();
                self.lifecycle = Lifecycle::Active;
                self.tokens = Some(e.tokens.into());
                self.generation = e.generation;
                self.last_connected_at = Some(at);
                self.consecutive_failures = 0;
                self.last_failure = None;
                self.forgotten_at = None;
                // A new grant: whatever was announced for the old one no longer applies.
                self.scheduled_removal = None;
            }
            InstallationEvent::TokensRefreshed(e) => {
                self.lifecycle = Lifecycle::Active;
                self.tokens = Some(e.tokens.into());
                self.generation = e.generation;
                self.last_refreshed_at = Some(e.refreshed_at);
                self.consecutive_failures = 0;
                self.last_failure = None;
            }
            InstallationEvent::RefreshFailed(e) => {
                self.consecutive_failures = e.consecutive_failures;
                self.last_failure = Some(LastFailure {
                    class: e.class.into(),
                    message: e.message,
                    at: e.failed_at,
                });
            }
            InstallationEvent::ReauthorizationRequired(e) => {
                self.lifecycle = Lifecycle::NeedsReauthorization;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.push_history(
                    e.failed_at,
                    HistoryChange::ReauthorizationRequired {
                        class: e.class.into(),
                    },
                );
                self.last_failure = Some(LastFailure {
                    class: e.class.into(),
                    message: e.message,
                    at: e.failed_at,
                });
            }
            InstallationEvent::Revoked(e) => {
                self.lifecycle = Lifecycle::Revoked;
                self.tokens = None;
                self.scheduled_removal = None;
                self.push_history(e.revoked_at, HistoryChange::Revoked { reason: e.reason });
            }
            InstallationEvent::Disconnected(e) => {
                self.lifecycle = Lifecycle::Disconnected;
                self.tokens = None;
                self.scheduled_removal = None;
                self.push_history(
                    e.disconnected_at,
                    HistoryChange::Disconnected {
                        cause: e.cause.into(),
                        reason: e.reason,
                    },
                );
            }
            InstallationEvent::TenantForgotten(e) => {
                self.forgotten_at = Some(e.forgotten_at);
                self.scheduled_removal = None;
                self.push_history(e.forgotten_at, HistoryChange::TenantForgotten);
            }
            InstallationEvent::RemovalScheduled(e) => {
                self.scheduled_removal = Some(ScheduledRemoval {
                    action: e.action.into(),
                    reason: e.reason,
                    effective_at: e.effective_at,
                    scheduled_by: e.scheduled_by,
                    scheduled_at: e.scheduled_at,
                });
            }
            InstallationEvent::RemovalCancelled(_) => {
                self.scheduled_removal = None;
            }
        }
    }
}

fn check_expiry(tokens: &SealedTokens, reference: DateTime<Utc>) -> Result<(), InstallationError> {
    if tokens.access_expires_at > reference {
        Ok(())
    } else {
        Err(InstallationError::TokenAlreadyExpired {
            expires_at: tokens.access_expires_at,
            reference,
        })
    }
}

fn validate_hub_domain(domain: &str) -> Result<String, InstallationError> {
    let invalid = |reason| InstallationError::InvalidHubDomain { reason };
    let domain = domain.trim();
    if domain.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if domain.len() > 253 {
        return Err(invalid("is too long"));
    }
    let valid_chars = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    if !valid_chars {
        return Err(invalid(
            "must be a host name (letters, digits, '.' and '-')",
        ));
    }
    Ok(domain.to_owned())
}

fn validate_installer(installer: Installer) -> Result<Installer, InstallationError> {
    let email = match installer.email.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(email) => {
            let plausible = email.len() <= 254
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
                && email
                    .split_once('@')
                    .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
            if !plausible {
                return Err(InstallationError::InvalidInstallerEmail);
            }
            Some(email.to_owned())
        }
    };
    Ok(Installer {
        user_id: installer.user_id,
        email,
    })
}

fn validate_reason(reason: &str) -> Result<String, InstallationError> {
    single_line(reason, MAX_REASON_CHARS)
        .map_err(|reason| InstallationError::InvalidReason { reason })
}
