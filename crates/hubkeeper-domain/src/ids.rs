//! Typed identifiers, so a hub id can never be passed where a user id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ParseError;

/// Identifies one configured OAuth app (one HubSpot client id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(Uuid);

impl AppId {
    /// A new time-ordered id (UUID v7), so app lists sort by creation without extra columns.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID (e.g. read from a database column).
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for AppId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for AppId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| ParseError::new("app id", s, "expected a UUID"))
    }
}

/// Identifies one installation: an app installed in one hub (and, for user-level apps, by
/// one user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstallationId(Uuid);

/// Namespace for [`InstallationId::derive`]. Fixed forever: changing it (or the name format)
/// would give every existing installation a new id on its next reconnect.
const INSTALLATION_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a4e_9b3d_4c7a_8e51_d0c4_a1f2_7b93);

impl InstallationId {
    /// The id of the installation of `app` in `hub` (for user-level apps also keyed by `user`).
    ///
    /// Deterministic (UUID v5) so that a reconnect after disconnect or revoke finds the same
    /// aggregate, keeps its history and never creates a duplicate row, without a lookup table
    /// that would need its own uniqueness guarantees.
    pub fn derive(app: AppId, hub: HubId, user: Option<UserId>) -> Self {
        let name = match user {
            Some(user) => format!("hubkeeper/installation/v1/{app}/{hub}/{user}"),
            None => format!("hubkeeper/installation/v1/{app}/{hub}/-"),
        };
        Self(Uuid::new_v5(&INSTALLATION_NAMESPACE, name.as_bytes()))
    }

    /// Wraps an existing UUID (e.g. read from a database column).
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for InstallationId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s)
            .map(Self)
            .map_err(|_| ParseError::new("installation id", s, "expected a UUID"))
    }
}

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number as HubSpot sends it.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<u64>()
                    .map(Self)
                    .map_err(|_| ParseError::new($label, s, "expected a non-negative integer"))
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

numeric_id!(
    /// HubSpot portal (account) id; never changes for an account.
    HubId,
    "hub id"
);
numeric_id!(
    /// HubSpot user id.
    UserId,
    "user id"
);
