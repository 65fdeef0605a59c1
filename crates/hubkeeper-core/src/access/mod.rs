//! Who may use Hubkeeper: API keys with their roles, and the dashboard sessions opened with them.
//!
//! Keys look like `hk_<id>_<secret>`: the id finds the row, the secret is checked against its
//! stored SHA-256 in constant time; the secret itself is never stored. Sessions are rows keyed by
//! the SHA-256 of a random secret, so logout, expiry and key revocation take effect at once in
//! every process. This module owns the SQL; how a request presents a key or a session cookie is
//! the HTTP layer's business.

pub mod audit;
pub mod keys;
pub mod roles;
pub mod scope;
pub mod sessions;

pub use audit::AuditLog;
pub use keys::{
    count_active, create_key, create_key_for_apps, install_key, is_well_formed_key, list_keys,
    revoke_key, unknown_apps, verify_key, CreateKeyError, InstallKeyError, Installed, KeyListing,
    NewApiKey, VerifiedKey,
};
pub use roles::{Permission, Role};
pub use scope::InstallationApps;
pub use sessions::{end_session, find_session, is_session_secret, start_session, NewSession};

use sha2::{Digest, Sha256};

/// The stored form of a key or session secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
