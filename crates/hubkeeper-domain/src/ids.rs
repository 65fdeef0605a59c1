//! Typed identifiers, so a hub id can never be passed where a user id is expected.
//!
//! Every id is declared by one of two macros (UUID-backed or numeric) and parses its text form
//! the same way: surrounding whitespace ignored, then the canonical form only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ParseError;

/// How every id reads its text form (URL paths, forms, configuration): surrounding whitespace
/// is ignored (pasted values), the rest must be the id's canonical form exactly, so one id has
/// one spelling.
fn canonical(input: &str) -> &str {
    input.trim()
}

/// A UUID in its canonical hyphenated 8-4-4-4-12 form (either case). The other spellings
/// `Uuid::try_parse` accepts (braces, URN, no hyphens) are refused: ids are compared and
/// logged as text, and a second spelling of the same id only hides typos.
fn parse_uuid(input: &str) -> Option<Uuid> {
    let text = canonical(input);
    let hyphenated = text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    hyphenated.then(|| Uuid::try_parse(text).ok()).flatten()
}

/// A non-negative integer in plain decimal digits (no sign, no spaces inside).
fn parse_number(input: &str) -> Option<u64> {
    let text = canonical(input);
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

/// A UUID-backed id: serialized as the bare UUID, displayed hyphenated, parsed by
/// [`parse_uuid`]. `time_ordered` ids also get `new()` (UUID v7, so lists sort by creation).
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID (e.g. read from a database column).
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_uuid(s).map(Self).ok_or_else(|| {
                    ParseError::new($label, s, "expected a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
                })
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $label:literal, time_ordered) => {
        uuid_id!($(#[$doc])* $name, $label);

        impl $name {
            /// A new time-ordered id (UUID v7), so lists sort by creation without extra columns.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

uuid_id!(
    /// Identifies one configured OAuth app (one HubSpot client id).
    AppId,
    "app id",
    time_ordered
);

uuid_id!(
    /// Identifies one pricing plan.
    PlanId,
    "plan id",
    time_ordered
);

uuid_id!(
    /// Identifies one installation: an app installed in one hub (and, for user-level apps, by
    /// one user). Never random: see [`InstallationId::derive`].
    InstallationId,
    "installation id"
);

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
                parse_number(s)
                    .map(Self)
                    .ok_or_else(|| ParseError::new($label, s, "expected a non-negative integer"))
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

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0190a3c4-0000-7000-8000-000000000001";

    #[test]
    fn uuid_ids_parse_the_canonical_form_with_surrounding_whitespace_ignored() {
        for input in [
            UUID,
            " 0190a3c4-0000-7000-8000-000000000001\n",
            &UUID.to_uppercase(),
        ] {
            let app: AppId = input.parse().expect(input);
            let plan: PlanId = input.parse().expect(input);
            let installation: InstallationId = input.parse().expect(input);
            assert_eq!(app.to_string(), UUID);
            assert_eq!(plan.to_string(), UUID);
            assert_eq!(installation.to_string(), UUID);
        }
    }

    #[test]
    fn uuid_ids_refuse_other_spellings_and_name_the_id() {
        for input in [
            "",
            "not-a-uuid",
            "0190a3c4000070008000000000000001",
            "{0190a3c4-0000-7000-8000-000000000001}",
            "urn:uuid:0190a3c4-0000-7000-8000-000000000001",
            "0190a3c4-0000-7000-8000-00000000000g",
            "0190a3c4 0000-7000-8000-000000000001",
        ] {
            let app = input.parse::<AppId>().expect_err(input);
            assert_eq!(app.what(), "app id");
            let plan = input.parse::<PlanId>().expect_err(input);
            assert_eq!(plan.what(), "plan id");
            let installation = input.parse::<InstallationId>().expect_err(input);
            assert_eq!(installation.what(), "installation id");
        }
    }

    #[test]
    fn numeric_ids_parse_plain_digits_with_surrounding_whitespace_ignored() {
        assert_eq!(" 4242424 ".parse::<HubId>(), Ok(HubId(4_242_424)));
        assert_eq!("77".parse::<UserId>(), Ok(UserId(77)));
        for input in ["", "+7", "-1", "1 2", "0x10", "18446744073709551616"] {
            assert_eq!(input.parse::<HubId>().expect_err(input).what(), "hub id");
            assert_eq!(input.parse::<UserId>().expect_err(input).what(), "user id");
        }
    }

    #[test]
    fn ids_serialize_as_their_bare_value() {
        let app: AppId = UUID.parse().expect("valid");
        assert_eq!(serde_json::to_value(app).expect("serializes"), UUID);
        assert_eq!(
            serde_json::to_value(HubId(5)).expect("serializes"),
            serde_json::json!(5)
        );
    }

    #[test]
    fn new_ids_are_time_ordered() {
        let first = PlanId::new();
        let second = PlanId::new();
        assert!(first < second);
        assert_eq!(first.as_uuid().get_version_num(), 7);
    }
}

uuid_id!(
    /// Identifies one notification endpoint of an app (a URL Hubkeeper delivers events to).
    EndpointId,
    "endpoint id",
    time_ordered
);

uuid_id!(
    /// Identifies one recorded operator action that concerns no other aggregate (a failed log-in,
    /// a configuration reload, a backup started, a self-test run): each is its own `Operation`.
    OperationId,
    "operation id",
    time_ordered
);
