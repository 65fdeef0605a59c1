use thiserror::Error;

/// Everything that can go wrong in this crate.
///
/// Messages name key *ids* and positions, never key material, plaintext or ciphertext, so
/// they can be logged and shown to operators as they are. Authentication failures are
/// deliberately one variant ([`CryptoError::DecryptionFailed`]): telling a caller *why* an
/// AEAD check failed (wrong key vs. wrong context vs. tampering) would help an attacker and
/// is not knowable anyway.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The master key configuration contains no keys at all.
    #[error("master keyring is empty: expected entries like `k1:<base64 of 32 bytes>`")]
    EmptyKeyring,

    /// An entry of the keyring configuration is not `<kid>:<base64 key>`.
    #[error("master keyring entry #{position} is not of the form `<kid>:<base64 of 32 bytes>`")]
    MalformedKeyEntry {
        /// 1-based position of the entry in the comma-separated list.
        position: usize,
    },

    /// A key id (master or data key) uses characters that would break the compact formats.
    #[error("invalid key id {id:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")]
    InvalidKeyId {
        /// The offending id (ids are not secret).
        id: String,
    },

    /// The key part of a keyring entry is not base64.
    #[error("master key {kid:?} is not valid base64")]
    InvalidKeyEncoding {
        /// Id of the entry.
        kid: String,
    },

    /// The key part decodes to the wrong number of bytes.
    #[error("master key {kid:?} decodes to {len} bytes; AES-256 needs exactly 32")]
    InvalidKeyLength {
        /// Id of the entry.
        kid: String,
        /// Decoded length.
        len: usize,
    },

    /// The key is all zero bytes, which only ever happens with a placeholder value.
    #[error("master key {kid:?} is all zero bytes; generate a real key")]
    WeakKey {
        /// Id of the entry.
        kid: String,
    },

    /// The same key id appears twice in the keyring configuration.
    #[error("master key id {kid:?} appears more than once in the keyring")]
    DuplicateKeyId {
        /// The repeated id.
        kid: String,
    },

    /// The configured active key id is not one of the configured keys.
    #[error("active master key {kid:?} is not in the keyring")]
    UnknownActiveKey {
        /// The configured active id.
        kid: String,
    },

    /// A wrapped data key names a master key that is not (or no longer) configured.
    #[error(
        "master key {kid:?} is not in the keyring; it was removed before every data key \
         wrapped with it was rotated"
    )]
    UnknownMasterKey {
        /// The master key id recorded in the wrapped key.
        kid: String,
    },

    /// A sealed value was produced with another data key than the one supplied.
    #[error("value was sealed with data key {found:?} but data key {expected:?} was supplied")]
    DataKeyMismatch {
        /// Id of the supplied data key.
        expected: String,
        /// Id recorded in the sealed value.
        found: String,
    },

    /// AEAD authentication failed: wrong key, wrong context or modified data.
    #[error("decryption failed: wrong key, wrong context or tampered data")]
    DecryptionFailed,

    /// Encryption refused the input (only possible for absurdly large plaintexts).
    #[error("encryption failed")]
    EncryptionFailed,

    /// A stored sealed value or wrapped key cannot be parsed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// `"sealed value"` or `"wrapped key"`.
        what: &'static str,
        /// Which part is wrong.
        reason: &'static str,
    },

    /// A stored value uses a format version this build does not know.
    #[error("unsupported {what} format version {version:?}")]
    UnsupportedVersion {
        /// `"sealed value"` or `"wrapped key"`.
        what: &'static str,
        /// The version prefix found.
        version: String,
    },

    /// Decrypted bytes were expected to be text but are not UTF-8.
    #[error("decrypted value is not valid UTF-8")]
    NotUtf8,
}
