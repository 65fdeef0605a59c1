//! Sealing individual secrets (tokens, client secrets) with a tenant's data key.

use std::fmt;
use std::str::FromStr;

use secrecy::zeroize::Zeroizing;
use secrecy::{SecretSlice, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::datakey::DataKey;
use crate::encoding::{
    aead_decrypt, aead_encrypt, associated_data, b64url_decode, b64url_encode, short_b64,
    validate_id, NONCE_LEN,
};
use crate::CryptoError;

/// Domain-separation label for sealed values; changing it makes every sealed value unreadable.
const SEAL_LABEL: &[u8] = b"hubkeeper.sealed.v1\0";
const SEALED_VERSION: &str = "v1";
const SEALED: &str = "sealed value";
/// AES-GCM authentication tag length.
const TAG_LEN: usize = 16;

/// Which secret a sealed value holds. Part of the [`Aad`], so an access token's ciphertext
/// cannot be presented as the refresh token (or a client secret) of the same owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecretKind {
    /// OAuth access token.
    AccessToken,
    /// OAuth refresh token.
    RefreshToken,
    /// OAuth client secret of an app.
    ClientSecret,
    /// Signing secret of an app's notification endpoint.
    SigningSecret,
}

impl SecretKind {
    /// Stable name used inside the associated data; never change an existing one.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::RefreshToken => "refresh_token",
            Self::ClientSecret => "client_secret",
            Self::SigningSecret => "signing_secret",
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Associated data: what a ciphertext is bound to besides its key.
///
/// `owner` is the id of the tenant the secret belongs to (installation id for tokens, app id
/// for client secrets). Opening with a different owner or kind fails, which stops a row or
/// event field from being swapped for another one encrypted under the same data key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Aad {
    owner: String,
    kind: SecretKind,
}

impl Aad {
    /// Binds to `owner` (use the canonical string form of the id) and `kind`.
    pub fn new(owner: impl Into<String>, kind: SecretKind) -> Self {
        Self {
            owner: owner.into(),
            kind,
        }
    }

    /// Shorthand for an installation's access token.
    pub fn access_token(installation_id: impl Into<String>) -> Self {
        Self::new(installation_id, SecretKind::AccessToken)
    }

    /// Shorthand for an installation's refresh token.
    pub fn refresh_token(installation_id: impl Into<String>) -> Self {
        Self::new(installation_id, SecretKind::RefreshToken)
    }

    /// Shorthand for an app's client secret.
    pub fn client_secret(app_id: impl Into<String>) -> Self {
        Self::new(app_id, SecretKind::ClientSecret)
    }

    /// The owner id this value is bound to.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The kind of secret this value is bound to.
    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    fn bytes(&self, dek_id: &str) -> Vec<u8> {
        associated_data(
            SEAL_LABEL,
            &[
                dek_id.as_bytes(),
                self.owner.as_bytes(),
                self.kind.as_str().as_bytes(),
            ],
        )
    }
}

/// An encrypted secret, safe to put in events, read models and logs.
///
/// Serialized as one string `v1.<dek_id>.<b64url nonce>.<b64url ciphertext>`. `Debug` shows
/// the data key id and a short prefix of the ciphertext only. Two seals of the same plaintext
/// differ (fresh nonce each time), so equality means "the same stored value", not "the same
/// secret".
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sealed {
    dek_id: String,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl Sealed {
    /// Id of the data key needed to open this value.
    pub fn dek_id(&self) -> &str {
        &self.dek_id
    }
}

/// Encrypts `plaintext` with `key`, bound to `aad`.
pub fn seal(key: &DataKey, plaintext: &[u8], aad: &Aad) -> Result<Sealed, CryptoError> {
    let (nonce, ciphertext) = aead_encrypt(key.key_bytes(), plaintext, &aad.bytes(key.id()))?;
    Ok(Sealed {
        dek_id: key.id().to_owned(),
        nonce,
        ciphertext,
    })
}

/// Decrypts a sealed value. The plaintext comes back wrapped in a secret type: it is zeroed
/// on drop and cannot be printed by accident.
pub fn open(key: &DataKey, sealed: &Sealed, aad: &Aad) -> Result<SecretSlice<u8>, CryptoError> {
    if sealed.dek_id != key.id() {
        return Err(CryptoError::DataKeyMismatch {
            expected: key.id().to_owned(),
            found: sealed.dek_id.clone(),
        });
    }
    let plaintext = Zeroizing::new(aead_decrypt(
        key.key_bytes(),
        &sealed.nonce,
        &sealed.ciphertext,
        &aad.bytes(key.id()),
    )?);
    // The decrypt buffer has spare capacity (it held the tag); turning it into a boxed slice
    // would reallocate and leave an unzeroed copy behind. Copy to an exact-size buffer and
    // let `Zeroizing` wipe the original.
    Ok(SecretSlice::from(plaintext.to_vec()))
}

/// [`open`] for text secrets such as OAuth tokens.
pub fn open_string(key: &DataKey, sealed: &Sealed, aad: &Aad) -> Result<SecretString, CryptoError> {
    use secrecy::ExposeSecret;
    let bytes = open(key, sealed, aad)?;
    let text = std::str::from_utf8(bytes.expose_secret()).map_err(|_| CryptoError::NotUtf8)?;
    // `to_owned` allocates exactly `len` bytes, so the conversion to `Box<str>` inside
    // `SecretString` does not reallocate and leaves no unzeroed copy.
    Ok(SecretString::from(text.to_owned()))
}

impl fmt::Display for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SEALED_VERSION}.{}.{}.{}",
            self.dek_id,
            b64url_encode(&self.nonce),
            b64url_encode(&self.ciphertext)
        )
    }
}

impl FromStr for Sealed {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = |reason| CryptoError::Malformed {
            what: SEALED,
            reason,
        };
        let mut parts = s.split('.');
        let version = parts.next().unwrap_or_default();
        if version != SEALED_VERSION {
            return Err(CryptoError::UnsupportedVersion {
                what: SEALED,
                version: version.to_owned(),
            });
        }
        let (Some(dek_id), Some(nonce), Some(ct), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected v1.<dek_id>.<nonce>.<ciphertext>"));
        };
        validate_id(dek_id).map_err(|_| malformed("invalid data key id"))?;
        let nonce: [u8; NONCE_LEN] = b64url_decode(nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| malformed("nonce is not 12 base64url-encoded bytes"))?;
        let ciphertext =
            b64url_decode(ct).ok_or_else(|| malformed("ciphertext is not base64url"))?;
        if ciphertext.len() < TAG_LEN {
            return Err(malformed(
                "ciphertext is shorter than the authentication tag",
            ));
        }
        Ok(Self {
            dek_id: dek_id.to_owned(),
            nonce,
            ciphertext,
        })
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("dek_id", &self.dek_id)
            .field("ciphertext", &short_b64(&self.ciphertext))
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
