//! Installation events: persisted forever and relayed to other services, so their JSON shape
//! is a contract. See the crate docs for the compatibility rules.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use hubkeeper_crypto::Sealed;

use super::{
    DisconnectCause, InstallationStatus, Installer, RefreshFailureClass, RemovalAction,
    SealedTokens,
};
use crate::ids::{AppId, HubId, InstallationId, UserId};
use crate::stored::{convert_fields, stored_enum};

/// Stable event type names (also the serde tags of [`InstallationEvent`]).
pub mod event_types {
    /// [`super::InstallationEvent::Connected`].
    pub const CONNECTED: &str = "InstallationConnected";
    /// [`super::InstallationEvent::Reconnected`].
    pub const RECONNECTED: &str = "InstallationReconnected";
    /// [`super::InstallationEvent::TokensRefreshed`].
    pub const TOKENS_REFRESHED: &str = "InstallationTokensRefreshed";
    /// [`super::InstallationEvent::RefreshFailed`].
    pub const REFRESH_FAILED: &str = "InstallationRefreshFailed";
    /// [`super::InstallationEvent::ReauthorizationRequired`].
    pub const REAUTHORIZATION_REQUIRED: &str = "InstallationReauthorizationRequired";
    /// [`super::InstallationEvent::Revoked`].
    pub const REVOKED: &str = "InstallationRevoked";
    /// [`super::InstallationEvent::Disconnected`].
    pub const DISCONNECTED: &str = "InstallationDisconnected";
    /// [`super::InstallationEvent::TenantForgotten`].
    pub const TENANT_FORGOTTEN: &str = "InstallationTenantForgotten";
    /// [`super::InstallationEvent::RemovalScheduled`].
    pub const REMOVAL_SCHEDULED: &str = "InstallationRemovalScheduled";
    /// [`super::InstallationEvent::RemovalCancelled`].
    pub const REMOVAL_CANCELLED: &str = "InstallationRemovalCancelled";

    /// Every installation event type.
    pub const ALL: [&str; 10] = [
        CONNECTED,
        RECONNECTED,
        TOKENS_REFRESHED,
        REFRESH_FAILED,
        REAUTHORIZATION_REQUIRED,
        REVOKED,
        DISCONNECTED,
        TENANT_FORGOTTEN,
        REMOVAL_SCHEDULED,
        REMOVAL_CANCELLED,
    ];
}

/// Everything that can happen to an installation.
///
/// Token hand-outs are deliberately not events; see the module docs of
/// [`crate::installation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstallationEvent {
    /// First successful OAuth connect.
    #[serde(rename = "InstallationConnected")]
    Connected(InstallationConnected),
    /// OAuth connect of an installation that was connected before (re-install, scope
    /// upgrade, recovery after disconnect, revoke or failed refresh).
    #[serde(rename = "InstallationReconnected")]
    Reconnected(InstallationReconnected),
    /// A token refresh succeeded.
    #[serde(rename = "InstallationTokensRefreshed")]
    TokensRefreshed(TokensRefreshed),
    /// A token refresh failed transiently; retrying later may work.
    #[serde(rename = "InstallationRefreshFailed")]
    RefreshFailed(RefreshFailed),
    /// The refresh token is dead; only the user can fix this by re-authorizing.
    #[serde(rename = "InstallationReauthorizationRequired")]
    ReauthorizationRequired(ReauthorizationRequired),
    /// Tokens were revoked at HubSpot and removed.
    #[serde(rename = "InstallationRevoked")]
    Revoked(InstallationRevoked),
    /// Tokens were removed (operator) or the app was uninstalled in HubSpot.
    #[serde(rename = "InstallationDisconnected")]
    Disconnected(InstallationDisconnected),
    /// The tenant's data key is to be destroyed; every sealed value becomes unreadable.
    #[serde(rename = "InstallationTenantForgotten")]
    TenantForgotten(TenantForgotten),
    /// An operator scheduled a revoke or disconnect for a later time, so the app can be told
    /// first.
    #[serde(rename = "InstallationRemovalScheduled")]
    RemovalScheduled(InstallationRemovalScheduled),
    /// An operator cancelled the scheduled revoke or disconnect before it was due.
    #[serde(rename = "InstallationRemovalCancelled")]
    RemovalCancelled(InstallationRemovalCancelled),
}

impl DomainEvent for InstallationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Connected(_) => event_types::CONNECTED,
            Self::Reconnected(_) => event_types::RECONNECTED,
            Self::TokensRefreshed(_) => event_types::TOKENS_REFRESHED,
            Self::RefreshFailed(_) => event_types::REFRESH_FAILED,
            Self::ReauthorizationRequired(_) => event_types::REAUTHORIZATION_REQUIRED,
            Self::Revoked(_) => event_types::REVOKED,
            Self::Disconnected(_) => event_types::DISCONNECTED,
            Self::TenantForgotten(_) => event_types::TENANT_FORGOTTEN,
            Self::RemovalScheduled(_) => event_types::REMOVAL_SCHEDULED,
            Self::RemovalCancelled(_) => event_types::REMOVAL_CANCELLED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Payload of `InstallationConnected` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationConnected {
    /// Derived from app, hub and user; equals the aggregate id.
    pub installation_id: InstallationId,
    /// The app installed.
    pub app_id: AppId,
    /// The hub it was installed in.
    pub hub_id: HubId,
    /// Set for user-level apps only (part of the installation's identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The hub's domain, e.g. `acme.hubspot.com`.
    pub hub_domain: String,
    /// Who clicked install.
    pub installer: StoredInstaller,
    /// Granted scopes, sorted.
    pub scopes: Vec<String>,
    /// The sealed token pair.
    pub tokens: StoredTokens,
    /// Version of our app the user installed, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// The app's own id of its customer, when the connect came through a connect session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    /// The app's metadata of that session (a small JSON object), if it gave any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Token generation after this event (always 1 here).
    pub generation: u64,
    /// When the connect was recorded.
    pub connected_at: DateTime<Utc>,
}

/// Payload of `InstallationReconnected` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationReconnected {
    /// Equals the aggregate id.
    pub installation_id: InstallationId,
    /// The hub's domain (may have changed).
    pub hub_domain: String,
    /// Who re-authorized.
    pub installer: StoredInstaller,
    /// Granted scopes now, sorted.
    pub scopes: Vec<String>,
    /// The new sealed token pair.
    pub tokens: StoredTokens,
    /// Version of our app, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// The app's own id of its customer, when the connect came through a connect session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    /// The app's metadata of that session (a small JSON object), if it gave any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Status just before the reconnect, for "recovered from ..." reporting.
    pub previous_status: StoredInstallationStatus,
    /// Token generation after this event.
    pub generation: u64,
    /// When the reconnect was recorded.
    pub connected_at: DateTime<Utc>,
}

/// Payload of `InstallationTokensRefreshed` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokensRefreshed {
    /// The new pair; the refresh token is stored whether or not HubSpot rotated it.
    pub tokens: StoredTokens,
    /// Token generation after this event.
    pub generation: u64,
    /// When HubSpot answered.
    pub refreshed_at: DateTime<Utc>,
}

/// Payload of `InstallationRefreshFailed` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFailed {
    /// Failure category.
    pub class: StoredRefreshFailureClass,
    /// Diagnostic text from the refresher (bounded; must not contain secrets).
    pub message: String,
    /// Generation the failed attempt used.
    pub generation: u64,
    /// Failures in a row, this one included; reset by any success or reconnect.
    pub consecutive_failures: u32,
    /// When the failure was recorded.
    pub failed_at: DateTime<Utc>,
}

/// Payload of `InstallationReauthorizationRequired` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthorizationRequired {
    /// Failure category (typically `invalid_grant`).
    pub class: StoredRefreshFailureClass,
    /// Diagnostic text (bounded; must not contain secrets).
    pub message: String,
    /// Generation whose refresh token was found dead.
    pub generation: u64,
    /// When it was recorded.
    pub failed_at: DateTime<Utc>,
}

/// Payload of `InstallationRevoked` (1.0). Carries no tokens: they are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationRevoked {
    /// Operator's justification.
    pub reason: String,
    /// When it was recorded.
    pub revoked_at: DateTime<Utc>,
}

/// Payload of `InstallationDisconnected` (1.0). Carries no tokens: they are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationDisconnected {
    /// Operator action or HubSpot uninstall.
    pub cause: StoredDisconnectCause,
    /// Operator's justification (none for uninstalls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was recorded.
    pub disconnected_at: DateTime<Utc>,
}

/// Payload of `InstallationTenantForgotten` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantForgotten {
    /// Operator's justification (e.g. a data deletion request reference).
    pub reason: String,
    /// When it was recorded.
    pub forgotten_at: DateTime<Utc>,
}

/// Payload of `InstallationRemovalScheduled` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationRemovalScheduled {
    /// What will be done when it is due.
    pub action: StoredRemovalAction,
    /// Operator's justification (also the reason of the revoke or disconnect).
    pub reason: String,
    /// When it becomes due.
    pub effective_at: DateTime<Utc>,
    /// The operator who scheduled it (the actor of the command), so the removal carried out
    /// later still names them.
    pub scheduled_by: String,
    /// When it was scheduled.
    pub scheduled_at: DateTime<Utc>,
}

/// Payload of `InstallationRemovalCancelled` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationRemovalCancelled {
    /// What had been scheduled.
    pub action: StoredRemovalAction,
    /// When it would have been due.
    pub effective_at: DateTime<Utc>,
    /// Operator's justification, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was cancelled.
    pub cancelled_at: DateTime<Utc>,
}

/// A sealed token pair as installation events store it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTokens {
    /// The access token.
    pub access: Sealed,
    /// The refresh token.
    pub refresh: Sealed,
    /// When the access token stops working.
    pub access_expires_at: DateTime<Utc>,
}

convert_fields!(SealedTokens <=> StoredTokens { access, refresh, access_expires_at });

/// The installing user as installation events store it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredInstaller {
    /// HubSpot user id, if HubSpot reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// E-mail address, if HubSpot reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

convert_fields!(Installer <=> StoredInstaller { user_id, email });

stored_enum!(
    /// [`InstallationStatus`] as installation events store it.
    StoredInstallationStatus <=> InstallationStatus {
        Connected = "connected",
        Expired = "expired",
        NeedsReauthorization = "needs_reauthorization",
        Disconnected = "disconnected",
        Revoked = "revoked",
    }
);

stored_enum!(
    /// [`RefreshFailureClass`] as installation events store it.
    StoredRefreshFailureClass <=> RefreshFailureClass {
        InvalidGrant = "invalid_grant",
        Unauthorized = "unauthorized",
        RateLimited = "rate_limited",
        ServerError = "server_error",
        Network = "network",
        Other = "other",
    }
);

stored_enum!(
    /// [`DisconnectCause`] as installation events store it.
    StoredDisconnectCause <=> DisconnectCause {
        Operator = "operator",
        Uninstalled = "uninstalled",
    }
);

stored_enum!(
    /// [`RemovalAction`] as installation events store it.
    StoredRemovalAction <=> RemovalAction {
        Revoke = "revoke",
        Disconnect = "disconnect",
    }
);
