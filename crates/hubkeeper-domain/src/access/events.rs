//! API key events: persisted forever, so their JSON shape is a contract. None carries a secret:
//! a key's secret exists only in the answer that created it, and a failed log-in records only
//! the shape of what was presented (see `operations`).

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::ids::AppId;
use crate::stored::stored_enum;

use super::KeyRole;

/// Stable event type names (also the serde tags of [`ApiKeyEvent`]).
pub mod event_types {
    /// [`super::ApiKeyEvent::Created`].
    pub const API_KEY_CREATED: &str = "ApiKeyCreated";
    /// [`super::ApiKeyEvent::Revoked`].
    pub const API_KEY_REVOKED: &str = "ApiKeyRevoked";
    /// [`super::ApiKeyEvent::LoggedIn`].
    pub const DASHBOARD_LOGGED_IN: &str = "DashboardLoggedIn";
    /// [`super::ApiKeyEvent::LoggedOut`].
    pub const DASHBOARD_LOGGED_OUT: &str = "DashboardLoggedOut";

    /// Every API key event type.
    pub const ALL: [&str; 4] = [
        API_KEY_CREATED,
        API_KEY_REVOKED,
        DASHBOARD_LOGGED_IN,
        DASHBOARD_LOGGED_OUT,
    ];
}

/// Everything that can happen to an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    /// The key was created (its secret was shown once to whoever created it).
    #[serde(rename = "ApiKeyCreated")]
    Created(ApiKeyCreated),
    /// The key was revoked: it and its dashboard sessions stopped working.
    #[serde(rename = "ApiKeyRevoked")]
    Revoked(ApiKeyRevoked),
    /// The key opened a dashboard session.
    #[serde(rename = "DashboardLoggedIn")]
    LoggedIn(DashboardLoggedIn),
    /// A dashboard session of the key was ended by its user.
    #[serde(rename = "DashboardLoggedOut")]
    LoggedOut(DashboardLoggedOut),
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => event_types::API_KEY_CREATED,
            Self::Revoked(_) => event_types::API_KEY_REVOKED,
            Self::LoggedIn(_) => event_types::DASHBOARD_LOGGED_IN,
            Self::LoggedOut(_) => event_types::DASHBOARD_LOGGED_OUT,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

stored_enum!(
    /// [`KeyRole`] as key events store it.
    StoredKeyRole <=> KeyRole {
        Admin = "admin",
        Operator = "operator",
        Auditor = "auditor",
        Service = "service",
    }
);

/// Payload of `ApiKeyCreated` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    /// The key's public id (`ak…`).
    pub key_id: String,
    /// The name it is recognised by.
    pub name: String,
    /// What it may do.
    pub role: StoredKeyRole,
    /// The apps a service key is bound to (sorted; empty for other roles).
    pub apps: Vec<AppId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Payload of `ApiKeyRevoked` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    /// The key's public id.
    pub key_id: String,
    /// Its name, when the key's creation was recorded (keys created before key events were
    /// recorded have none here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it was revoked.
    pub revoked_at: DateTime<Utc>,
}

/// Payload of `DashboardLoggedIn` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardLoggedIn {
    /// The key that logged in.
    pub key_id: String,
    /// The client's address as the API saw it (behind trusted proxies: the forwarded one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// When.
    pub logged_in_at: DateTime<Utc>,
}

/// Payload of `DashboardLoggedOut` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardLoggedOut {
    /// The key whose session ended.
    pub key_id: String,
    /// When.
    pub logged_out_at: DateTime<Utc>,
}
