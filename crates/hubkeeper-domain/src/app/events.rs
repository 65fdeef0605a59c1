//! App events: persisted forever and relayed to other services, so their JSON shape is a
//! contract. See the crate docs for the compatibility rules.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use hubkeeper_crypto::Sealed;
use serde::{Deserialize, Serialize};

use super::config::{Environment, OAuthGeneration, SignatureVersion};
use crate::ids::AppId;
use crate::stored::stored_enum;

/// Stable event type names (also the serde tags of [`AppEvent`]).
pub mod event_types {
    /// [`super::AppEvent::Registered`].
    pub const APP_REGISTERED: &str = "AppRegistered";
    /// [`super::AppEvent::Updated`].
    pub const APP_UPDATED: &str = "AppUpdated";
    /// [`super::AppEvent::Deleted`].
    pub const APP_DELETED: &str = "AppDeleted";
    /// [`super::AppEvent::ClientSecretRotated`].
    pub const APP_CLIENT_SECRET_ROTATED: &str = "AppClientSecretRotated";
    /// [`super::AppEvent::CredentialsRejected`].
    pub const APP_CREDENTIALS_REJECTED: &str = "AppCredentialsRejected";
    /// [`super::AppEvent::RefreshesResumed`].
    pub const APP_REFRESHES_RESUMED: &str = "AppRefreshesResumed";

    /// Every app event type.
    pub const ALL: [&str; 6] = [
        APP_REGISTERED,
        APP_UPDATED,
        APP_DELETED,
        APP_CLIENT_SECRET_ROTATED,
        APP_CREDENTIALS_REJECTED,
        APP_REFRESHES_RESUMED,
    ];
}

/// Current payload version of `AppRegistered`. 1.0 is the shape the first prototype wrote
/// (scopes as one space-separated string; no optional scopes, endpoint generation or
/// signature versions); [`crate::upcasters`] reads it as 1.1.
pub const APP_REGISTERED_VERSION: &str = "1.1";

/// Everything that can happen to an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppEvent {
    /// The app was added.
    #[serde(rename = "AppRegistered")]
    Registered(AppRegistered),
    /// Some settings changed.
    #[serde(rename = "AppUpdated")]
    Updated(AppUpdated),
    /// The app was deleted; it accepts no further commands.
    #[serde(rename = "AppDeleted")]
    Deleted(AppDeleted),
    /// The client secret was replaced; the previous one stays valid for webhook signatures
    /// until the end of the overlap.
    #[serde(rename = "AppClientSecretRotated")]
    ClientSecretRotated(AppClientSecretRotated),
    /// HubSpot refused the app's client credentials on a refresh: the app's refreshes are
    /// parked until the secret is rotated or an operator resumes them.
    #[serde(rename = "AppCredentialsRejected")]
    CredentialsRejected(AppCredentialsRejected),
    /// An operator resumed the app's parked refreshes.
    #[serde(rename = "AppRefreshesResumed")]
    RefreshesResumed(AppRefreshesResumed),
}

impl DomainEvent for AppEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Registered(_) => event_types::APP_REGISTERED,
            Self::Updated(_) => event_types::APP_UPDATED,
            Self::Deleted(_) => event_types::APP_DELETED,
            Self::ClientSecretRotated(_) => event_types::APP_CLIENT_SECRET_ROTATED,
            Self::CredentialsRejected(_) => event_types::APP_CREDENTIALS_REJECTED,
            Self::RefreshesResumed(_) => event_types::APP_REFRESHES_RESUMED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        match self {
            Self::Registered(_) => APP_REGISTERED_VERSION,
            Self::Updated(_)
            | Self::Deleted(_)
            | Self::ClientSecretRotated(_)
            | Self::CredentialsRejected(_)
            | Self::RefreshesResumed(_) => "1.0",
        }
        .to_owned()
    }
}

/// Payload of `AppRegistered` (version 1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRegistered {
    /// The app's id.
    pub app_id: AppId,
    /// Internal name.
    pub label: String,
    /// Free text, possibly empty.
    #[serde(default)]
    pub description: String,
    /// Deployment tag.
    pub environment: StoredEnvironment,
    /// HubSpot client id.
    pub client_id: String,
    /// Client secret, sealed by the edge.
    pub client_secret: Sealed,
    /// Exact redirect URI.
    pub redirect_uri: String,
    /// Required scopes, sorted.
    pub scopes: Vec<String>,
    /// Optional scopes, sorted.
    pub optional_scopes: Vec<String>,
    /// OAuth endpoint generation.
    pub oauth_generation: StoredOAuthGeneration,
    /// Accepted webhook signature versions, sorted.
    pub signature_versions: Vec<StoredSignatureVersion>,
    /// Allowed return URLs of connect sessions, normalised (absent in events written before
    /// apps had them: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub return_urls: Vec<String>,
    /// When the app was registered.
    pub registered_at: DateTime<Utc>,
}

/// Payload of `AppUpdated` (version 1.0): the new value of every field that changed, and
/// nothing for the fields that did not, so consumers can tell "set" from "unchanged".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppUpdated {
    /// The app's id.
    pub app_id: AppId,
    /// New label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New environment tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<StoredEnvironment>,
    /// New redirect URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// New required scopes (complete list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// New optional scopes (complete list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional_scopes: Option<Vec<String>>,
    /// New OAuth endpoint generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_generation: Option<StoredOAuthGeneration>,
    /// New accepted signature versions (complete list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_versions: Option<Vec<StoredSignatureVersion>>,
    /// New allowed return URLs (complete list; empty: none any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_urls: Option<Vec<String>>,
    /// When the change was made.
    pub updated_at: DateTime<Utc>,
}

/// Payload of `AppDeleted` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDeleted {
    /// The app's id.
    pub app_id: AppId,
    /// Whether the operator overrode the active-installations check.
    pub forced: bool,
    /// Active installations the caller counted at deletion time (audit only).
    pub active_installations: u32,
    /// When the app was deleted.
    pub deleted_at: DateTime<Utc>,
}

/// Payload of `AppClientSecretRotated` (version 1.0). The new secret is sealed like the one
/// of `AppRegistered`; the previous one is not repeated (it is in the app's earlier events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClientSecretRotated {
    /// The app's id.
    pub app_id: AppId,
    /// The new client secret, sealed by the edge.
    pub client_secret: Sealed,
    /// Until when webhook signatures made with the previous secret are still accepted.
    pub previous_valid_until: DateTime<Utc>,
    /// When the secret was rotated.
    pub rotated_at: DateTime<Utc>,
}

/// Payload of `AppCredentialsRejected` (version 1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCredentialsRejected {
    /// The app's id.
    pub app_id: AppId,
    /// HubSpot's error code (`invalid_client`, `unauthorized_client`, or a legacy status).
    pub error: String,
    /// Diagnostic text (bounded; no secrets).
    pub message: String,
    /// When the refusal was recorded.
    pub rejected_at: DateTime<Utc>,
}

/// Payload of `AppRefreshesResumed` (version 1.0); the operator is in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRefreshesResumed {
    /// The app's id.
    pub app_id: AppId,
    /// When refreshes were resumed.
    pub resumed_at: DateTime<Utc>,
}

stored_enum!(
    /// [`Environment`] as app events store it.
    StoredEnvironment <=> Environment {
        Development = "development",
        Staging = "staging",
        Production = "production",
    }
);

stored_enum!(
    /// [`OAuthGeneration`] as app events store it.
    StoredOAuthGeneration <=> OAuthGeneration {
        V1 = "v1",
        V2026_03 = "2026-03",
    }
);

stored_enum!(
    /// [`SignatureVersion`] as app events store it.
    StoredSignatureVersion <=> SignatureVersion {
        V1 = "v1",
        V2 = "v2",
        V3 = "v3",
    }
);
