//! Credential generation and the hashes the simulator keys them by.
//!
//! The simulator stores only SHA-256 hashes of codes and tokens: its state, its request log and its
//! counters can then be dumped freely without leaking a usable credential.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// SHA-256 (hex) of a credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TokenHash(String);

impl TokenHash {
    pub(crate) fn of(credential: &str) -> Self {
        TokenHash(hex::encode(Sha256::digest(credential.as_bytes())))
    }

    /// The prefix shown in logs and counters.
    pub(crate) fn short(&self) -> String {
        self.0.chars().take(12).collect()
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// An opaque access token shaped like HubSpot's: `CN` followed by URL-safe base64, ~190
/// characters, so clients that cap the column at 64 or 128 characters fail in development.
pub(crate) fn new_access_token() -> String {
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(140));
    format!("CN{body}")
}

/// A refresh token shaped like HubSpot's current ones (`na1-` region prefix, hex groups).
pub(crate) fn new_refresh_token() -> String {
    let a = Uuid::new_v4();
    let b = hex::encode(random_bytes(16));
    format!("na1-{a}-{b}")
}

/// A single-use authorization code.
pub(crate) fn new_auth_code() -> String {
    format!("na1-{}", Uuid::new_v4())
}

pub(crate) fn correlation_id() -> String {
    Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_like_hubspot_ones_and_are_unique() {
        let a = new_access_token();
        assert!(
            a.starts_with("CN") && a.len() >= 180 && a.len() <= 300,
            "{}",
            a.len()
        );
        assert_ne!(a, new_access_token());
        let r = new_refresh_token();
        assert!(r.starts_with("na1-") && r.len() >= 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn hash_is_stable_and_short_prefix_is_12_hex() {
        let h = TokenHash::of("abc");
        assert_eq!(h, TokenHash::of("abc"));
        assert_eq!(h.short(), "ba7816bf8f01");
    }
}
