//! The `ApiKey` aggregate: what happens to one API key (created, used to log in to the
//! dashboard, logged out, revoked), one aggregate per key (its id is the key's public id, `ak…`),
//! so concurrent log-ins with different keys never contend.
//!
//! The `api_keys` table stays what authenticates a request (a hash lookup on every call); this
//! aggregate is the audited history of the key, with the actor of each change in the event
//! metadata. Rules: a key is created once; its name is one line of at most
//! [`MAX_KEY_NAME_CHARS`]; only service keys are bound to apps; a revoked key is revoked once and
//! can no longer log in. Keys made before key events were recorded have no creation event; they
//! can still log in and be revoked.

mod events;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use events::{
    event_types, ApiKeyCreated, ApiKeyEvent, ApiKeyRevoked, DashboardLoggedIn, DashboardLoggedOut,
    StoredKeyRole,
};

use crate::aggregate::aggregate;
use crate::ids::AppId;
use crate::validate::single_line;
use crate::ParseError;

/// Longest accepted key name.
pub const MAX_KEY_NAME_CHARS: usize = 100;
/// Longest client address recorded (an IPv6 address with a zone fits easily).
pub const MAX_CLIENT_CHARS: usize = 100;

/// What a key may be used for (the access layer grants permissions per role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Everything.
    Admin,
    /// Read, refresh, revoke, disconnect.
    Operator,
    /// Read-only.
    Auditor,
    /// An app's backend: tokens, usage, quotas.
    Service,
}

impl KeyRole {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Admin => "admin",
            KeyRole::Operator => "operator",
            KeyRole::Auditor => "auditor",
            KeyRole::Service => "service",
        }
    }
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyRole {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(KeyRole::Admin),
            "operator" => Ok(KeyRole::Operator),
            "auditor" => Ok(KeyRole::Auditor),
            "service" => Ok(KeyRole::Service),
            _ => Err(ParseError::new(
                "role",
                s,
                "expected admin, operator, auditor or service",
            )),
        }
    }
}

/// Whether `id` has the shape of a key's public id (`ak` and 12 hex digits).
pub fn is_key_id(id: &str) -> bool {
    id.len() == 14 && id.starts_with("ak") && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Commands accepted by [`ApiKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyCommand {
    /// Record the creation of key `key_id` (the aggregate id).
    Create {
        /// The key's public id.
        key_id: String,
        /// The name to recognise it by.
        name: String,
        /// What it may do.
        role: KeyRole,
        /// The apps a service key is bound to.
        apps: Vec<AppId>,
    },
    /// Record that the key was revoked.
    Revoke {
        /// The key's public id.
        key_id: String,
    },
    /// Record a dashboard log-in with the key from `client`.
    LogIn {
        /// The key's public id.
        key_id: String,
        /// The client's address, when known.
        client: Option<String>,
    },
    /// Record the end of a dashboard session of the key by its user.
    LogOut {
        /// The key's public id.
        key_id: String,
    },
}

/// Why a key command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApiKeyError {
    /// The key id does not have the shape `ak` + 12 hex digits.
    #[error("`{0}` is not a key id (ak followed by 12 hex digits)")]
    BadKeyId(String),
    /// The command names another key than the aggregate's.
    #[error("the command is for key {command}, this is key {aggregate}")]
    WrongKey {
        /// The aggregate's key.
        aggregate: String,
        /// The command's key.
        command: String,
    },
    /// The key's creation is already recorded.
    #[error("key {0} already exists")]
    AlreadyCreated(String),
    /// A bad name.
    #[error("the key name {0}")]
    BadName(&'static str),
    /// Apps given for a key that is not a service key.
    #[error("only service keys are bound to apps; a {0} key acts on every app its role allows")]
    AppsOnNonServiceKey(KeyRole),
    /// The key was revoked already.
    #[error("key {0} is already revoked")]
    AlreadyRevoked(String),
    /// A revoked key cannot open a session.
    #[error("key {0} is revoked")]
    Revoked(String),
    /// A client address that is too long or not one line.
    #[error("the client address {0}")]
    BadClient(&'static str),
}

/// State of one key, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    key_id: Option<String>,
    name: Option<String>,
    role: Option<KeyRole>,
    apps: Vec<AppId>,
    created_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    logins: u64,
    last_login_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// The key's id, once anything was recorded about it.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Its name, when its creation was recorded.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Its role, when its creation was recorded.
    pub fn role(&self) -> Option<KeyRole> {
        self.role
    }

    /// The apps a service key is bound to.
    pub fn apps(&self) -> &[AppId] {
        &self.apps
    }

    /// When it was created, if recorded.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    /// When it was revoked.
    pub fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.revoked_at
    }

    /// Dashboard log-ins recorded.
    pub fn logins(&self) -> u64 {
        self.logins
    }

    /// The last recorded log-in.
    pub fn last_login_at(&self) -> Option<DateTime<Utc>> {
        self.last_login_at
    }

    fn check_key(&self, key_id: &str) -> Result<(), ApiKeyError> {
        if !is_key_id(key_id) {
            return Err(ApiKeyError::BadKeyId(crate::validate::shorten(key_id, 32)));
        }
        match &self.key_id {
            Some(own) if own != key_id => Err(ApiKeyError::WrongKey {
                aggregate: own.clone(),
                command: key_id.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

aggregate!(ApiKey, "api_key", ApiKeyCommand, ApiKeyEvent, ApiKeyError);

impl ApiKey {
    fn decide(
        &self,
        command: ApiKeyCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<ApiKeyEvent>, ApiKeyError> {
        match command {
            ApiKeyCommand::Create {
                key_id,
                name,
                role,
                apps,
            } => {
                self.check_key(&key_id)?;
                if self.created_at.is_some() || self.revoked_at.is_some() || self.logins > 0 {
                    return Err(ApiKeyError::AlreadyCreated(key_id));
                }
                let name = single_line(&name, MAX_KEY_NAME_CHARS).map_err(ApiKeyError::BadName)?;
                if !apps.is_empty() && role != KeyRole::Service {
                    return Err(ApiKeyError::AppsOnNonServiceKey(role));
                }
                let mut apps = apps;
                apps.sort();
                apps.dedup();
                Ok(vec![ApiKeyEvent::Created(ApiKeyCreated {
                    key_id,
                    name,
                    role: role.into(),
                    apps,
                    created_at: now,
                })])
            }
            ApiKeyCommand::Revoke { key_id } => {
                self.check_key(&key_id)?;
                if self.revoked_at.is_some() {
                    return Err(ApiKeyError::AlreadyRevoked(key_id));
                }
                Ok(vec![ApiKeyEvent::Revoked(ApiKeyRevoked {
                    key_id,
                    name: self.name.clone(),
                    revoked_at: now,
                })])
            }
            ApiKeyCommand::LogIn { key_id, client } => {
                self.check_key(&key_id)?;
                if self.revoked_at.is_some() {
                    return Err(ApiKeyError::Revoked(key_id));
                }
                let client = client
                    .map(|c| single_line(&c, MAX_CLIENT_CHARS).map_err(ApiKeyError::BadClient))
                    .transpose()?;
                Ok(vec![ApiKeyEvent::LoggedIn(DashboardLoggedIn {
                    key_id,
                    client,
                    logged_in_at: now,
                })])
            }
            ApiKeyCommand::LogOut { key_id } => {
                self.check_key(&key_id)?;
                Ok(vec![ApiKeyEvent::LoggedOut(DashboardLoggedOut {
                    key_id,
                    logged_out_at: now,
                })])
            }
        }
    }

    fn evolve(&mut self, event: ApiKeyEvent) {
        match event {
            ApiKeyEvent::Created(e) => {
                self.key_id = Some(e.key_id);
                self.name = Some(e.name);
                self.role = Some(e.role.into());
                self.apps = e.apps;
                self.created_at = Some(e.created_at);
            }
            ApiKeyEvent::Revoked(e) => {
                self.key_id = Some(e.key_id);
                self.revoked_at = Some(e.revoked_at);
            }
            ApiKeyEvent::LoggedIn(e) => {
                self.key_id = Some(e.key_id);
                self.logins += 1;
                self.last_login_at = Some(e.logged_in_at);
            }
            ApiKeyEvent::LoggedOut(e) => {
                self.key_id = Some(e.key_id);
            }
        }
    }
}
