//! Master keys: the only long-lived secrets, configured out of band (environment or secret
//! manager) and never stored next to the data they protect.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::zeroize::Zeroizing;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::datakey::{DataKey, WrappedKey};
use crate::encoding::{
    aead_decrypt, aead_encrypt, associated_data, b64_standard_encode, decode_lenient_b64,
    random_bytes, validate_id, KEY_LEN,
};
use crate::CryptoError;

/// Domain-separation label for data-key wrapping; changing it makes every wrapped key unreadable.
const WRAP_LABEL: &[u8] = b"hubkeeper.dek.v1\0";

/// The set of master keys known to this process, plus which one wraps new data keys.
///
/// Several keys exist at once only during rotation: a new key is added and made active, every
/// wrapped data key is [`rewrapped`](Self::rewrap) (a few bytes per tenant, no bulk
/// re-encryption of tokens), and only then is the old key removed from configuration. Until
/// that last step both keys unwrap, so rotation needs no downtime.
pub struct MasterKeyring {
    keys: BTreeMap<String, Zeroizing<[u8; KEY_LEN]>>,
    active: String,
}

impl MasterKeyring {
    /// Parses `"k1:<base64>,k2:<base64>"`. `active` names the key that wraps new data keys;
    /// `None` (or an empty string) means the last entry, so appending a key and restarting is
    /// enough to start a rotation.
    ///
    /// Whitespace around entries is ignored and empty entries (a trailing comma) are skipped.
    /// Keys may use the standard or URL-safe base64 alphabet, padded or not.
    pub fn parse(spec: &str, active: Option<&str>) -> Result<Self, CryptoError> {
        let mut keys = BTreeMap::new();
        let mut last = None;
        let entries = spec.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let position = index + 1;
            let (kid, encoded) = entry
                .split_once(':')
                .ok_or(CryptoError::MalformedKeyEntry { position })?;
            let (kid, encoded) = (kid.trim(), encoded.trim());
            if kid.is_empty() || encoded.is_empty() {
                return Err(CryptoError::MalformedKeyEntry { position });
            }
            validate_id(kid)?;
            let key = decode_master_key(kid, encoded)?;
            if keys.insert(kid.to_owned(), key).is_some() {
                return Err(CryptoError::DuplicateKeyId {
                    kid: kid.to_owned(),
                });
            }
            last = Some(kid.to_owned());
        }
        let last = last.ok_or(CryptoError::EmptyKeyring)?;
        let active = match active.map(str::trim) {
            Some(kid) if !kid.is_empty() => kid.to_owned(),
            _ => last,
        };
        if !keys.contains_key(&active) {
            return Err(CryptoError::UnknownActiveKey { kid: active });
        }
        Ok(Self { keys, active })
    }

    /// Builds a keyring from raw keys, for tests and for callers that fetch key bytes from a
    /// secret manager rather than a config string.
    pub fn from_keys<I>(keys: I, active: &str) -> Result<Self, CryptoError>
    where
        I: IntoIterator<Item = (String, [u8; KEY_LEN])>,
    {
        let mut map = BTreeMap::new();
        for (kid, bytes) in keys {
            let bytes = Zeroizing::new(bytes);
            validate_id(&kid)?;
            if bytes.iter().all(|b| *b == 0) {
                return Err(CryptoError::WeakKey { kid });
            }
            if map.contains_key(&kid) {
                return Err(CryptoError::DuplicateKeyId { kid });
            }
            map.insert(kid, bytes);
        }
        if map.is_empty() {
            return Err(CryptoError::EmptyKeyring);
        }
        if !map.contains_key(active) {
            return Err(CryptoError::UnknownActiveKey {
                kid: active.to_owned(),
            });
        }
        Ok(Self {
            keys: map,
            active: active.to_owned(),
        })
    }

    /// Id of the key that wraps new data keys.
    pub fn active_kid(&self) -> &str {
        &self.active
    }

    /// All configured key ids, sorted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether `kid` is configured (e.g. before removing an old key: no wrapped key may still
    /// use it).
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// A short, non-reversible fingerprint (first 8 bytes of SHA-256, hex) so operators can
    /// check that two deployments carry the same key without ever displaying it.
    pub fn fingerprint(&self, kid: &str) -> Option<String> {
        self.keys.get(kid).map(|key| {
            let digest = Sha256::new()
                .chain_update(b"hubkeeper.master-key-fingerprint\0")
                .chain_update(key.as_slice())
                .finalize();
            digest[..8].iter().map(|b| format!("{b:02x}")).collect()
        })
    }

    /// Encrypts `data_key` under the active master key.
    ///
    /// `aad_context` binds the wrapped key to its owner (use the installation id): a wrapped
    /// key copied onto another tenant's row fails to unwrap instead of silently decrypting
    /// that tenant's tokens with the wrong key.
    pub fn wrap(&self, data_key: &DataKey, aad_context: &str) -> Result<WrappedKey, CryptoError> {
        let master = self.key(&self.active)?;
        let aad = wrap_aad(&self.active, data_key.id(), aad_context);
        let (nonce, ciphertext) = aead_encrypt(master, data_key.key_bytes(), &aad)?;
        Ok(WrappedKey::from_parts(
            self.active.clone(),
            data_key.id().to_owned(),
            nonce,
            ciphertext,
        ))
    }

    /// Decrypts a wrapped data key with whichever configured master key wrapped it.
    pub fn unwrap(&self, wrapped: &WrappedKey, aad_context: &str) -> Result<DataKey, CryptoError> {
        let master = self.key(wrapped.kid())?;
        let aad = wrap_aad(wrapped.kid(), wrapped.dek_id(), aad_context);
        let plaintext = Zeroizing::new(aead_decrypt(
            master,
            wrapped.nonce(),
            wrapped.ciphertext(),
            &aad,
        )?);
        let bytes: [u8; KEY_LEN] = plaintext
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(DataKey::from_parts(wrapped.dek_id().to_owned(), bytes))
    }

    /// Unwraps with the old master key and wraps again with the active one; the data key
    /// itself (and so every sealed token) is unchanged.
    pub fn rewrap(
        &self,
        wrapped: &WrappedKey,
        aad_context: &str,
    ) -> Result<WrappedKey, CryptoError> {
        let data_key = self.unwrap(wrapped, aad_context)?;
        self.wrap(&data_key, aad_context)
    }

    /// Whether a rotation pass still has to [`rewrap`](Self::rewrap) this key.
    pub fn needs_rewrap(&self, wrapped: &WrappedKey) -> bool {
        wrapped.kid() != self.active
    }

    fn key(&self, kid: &str) -> Result<&[u8; KEY_LEN], CryptoError> {
        self.keys
            .get(kid)
            .map(|k| &**k)
            .ok_or_else(|| CryptoError::UnknownMasterKey {
                kid: kid.to_owned(),
            })
    }
}

impl fmt::Debug for MasterKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyring")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .field("keys", &"[REDACTED]")
            .finish()
    }
}

/// Generates a fresh random master key, base64 encoded, for `hubkeeper keys generate` and dev
/// setups. Returned as a secret so it is only ever printed on purpose.
pub fn generate_key_b64() -> SecretString {
    let key = Zeroizing::new(random_bytes::<KEY_LEN>());
    SecretString::from(b64_standard_encode(key.as_slice()))
}

fn decode_master_key(kid: &str, encoded: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let decoded = Zeroizing::new(decode_lenient_b64(encoded).ok_or_else(|| {
        CryptoError::InvalidKeyEncoding {
            kid: kid.to_owned(),
        }
    })?);
    let bytes: [u8; KEY_LEN] =
        decoded
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::InvalidKeyLength {
                kid: kid.to_owned(),
                len: decoded.len(),
            })?;
    let bytes = Zeroizing::new(bytes);
    if bytes.iter().all(|b| *b == 0) {
        return Err(CryptoError::WeakKey {
            kid: kid.to_owned(),
        });
    }
    Ok(bytes)
}

fn wrap_aad(kid: &str, dek_id: &str, context: &str) -> Vec<u8> {
    associated_data(
        WRAP_LABEL,
        &[kid.as_bytes(), dek_id.as_bytes(), context.as_bytes()],
    )
}
