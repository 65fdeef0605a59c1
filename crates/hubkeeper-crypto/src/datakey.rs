//! Per-tenant data keys and their wrapped (storable) form.

use std::fmt;
use std::str::FromStr;

use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::{
    b64url_decode, b64url_encode, random_bytes, short_b64, validate_id, KEY_LEN, NONCE_LEN,
};
use crate::CryptoError;

/// A 256-bit key that seals the secrets of exactly one tenant (installation or app).
///
/// It exists in plaintext only in memory; at rest it is stored as a [`WrappedKey`]. Deleting
/// that wrapped key is what crypto-shreds the tenant. The random id travels inside every
/// [`Sealed`](crate::Sealed) value so a store can tell which key a ciphertext needs, e.g. after
/// a tenant's data key has been replaced.
#[derive(Clone)]
pub struct DataKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl DataKey {
    /// A fresh random key with a fresh random id (`dk` + 16 hex digits).
    pub fn generate() -> Self {
        let id_bytes = random_bytes::<8>();
        let id = std::iter::once("dk".to_owned())
            .chain(id_bytes.iter().map(|b| format!("{b:02x}")))
            .collect();
        Self {
            id,
            key: Zeroizing::new(random_bytes::<KEY_LEN>()),
        }
    }

    /// The key's id, safe to log and store.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn from_parts(id: String, key: [u8; KEY_LEN]) -> Self {
        Self {
            id,
            key: Zeroizing::new(key),
        }
    }

    pub(crate) fn key_bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

const WRAPPED_VERSION: &str = "v1";
const WRAPPED: &str = "wrapped key";

/// A data key encrypted under a master key: what the store persists per tenant.
///
/// Serialized as one compact string `v1.<kid>.<dek_id>.<b64url nonce>.<b64url ciphertext>`
/// so it fits a single text column. `kid` names the master key, which is how a rotation pass
/// finds the keys still wrapped under an old master key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WrappedKey {
    kid: String,
    dek_id: String,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl WrappedKey {
    pub(crate) fn from_parts(
        kid: String,
        dek_id: String,
        nonce: [u8; NONCE_LEN],
        ciphertext: Vec<u8>,
    ) -> Self {
        Self {
            kid,
            dek_id,
            nonce,
            ciphertext,
        }
    }

    /// Id of the master key this data key is wrapped under.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Id of the wrapped data key (matches [`DataKey::id`] after unwrapping).
    pub fn dek_id(&self) -> &str {
        &self.dek_id
    }

    pub(crate) fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    pub(crate) fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
}

impl fmt::Display for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{WRAPPED_VERSION}.{}.{}.{}.{}",
            self.kid,
            self.dek_id,
            b64url_encode(&self.nonce),
            b64url_encode(&self.ciphertext)
        )
    }
}

impl FromStr for WrappedKey {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = |reason| CryptoError::Malformed {
            what: WRAPPED,
            reason,
        };
        let mut parts = s.split('.');
        let version = parts.next().unwrap_or_default();
        if version != WRAPPED_VERSION {
            return Err(CryptoError::UnsupportedVersion {
                what: WRAPPED,
                version: version.to_owned(),
            });
        }
        let (Some(kid), Some(dek_id), Some(nonce), Some(ct), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed("expected v1.<kid>.<dek_id>.<nonce>.<ciphertext>"));
        };
        validate_id(kid).map_err(|_| malformed("invalid master key id"))?;
        validate_id(dek_id).map_err(|_| malformed("invalid data key id"))?;
        let nonce: [u8; NONCE_LEN] = b64url_decode(nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| malformed("nonce is not 12 base64url-encoded bytes"))?;
        let ciphertext =
            b64url_decode(ct).ok_or_else(|| malformed("ciphertext is not base64url"))?;
        // 32 key bytes + 16 tag bytes: anything else cannot be one of ours.
        if ciphertext.len() != KEY_LEN + 16 {
            return Err(malformed(
                "ciphertext has the wrong length for a wrapped AES-256 key",
            ));
        }
        Ok(Self {
            kid: kid.to_owned(),
            dek_id: dek_id.to_owned(),
            nonce,
            ciphertext,
        })
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kid", &self.kid)
            .field("dek_id", &self.dek_id)
            .field("ciphertext", &short_b64(&self.ciphertext))
            .finish()
    }
}

impl Serialize for WrappedKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WrappedKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
