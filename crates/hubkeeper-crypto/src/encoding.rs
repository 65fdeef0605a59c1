//! Small helpers shared by the compact formats.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use rand::rngs::OsRng;
use rand::RngCore;

use crate::CryptoError;

/// AES-GCM nonce length (96 bits, the only size the standard recommends).
pub(crate) const NONCE_LEN: usize = 12;
/// Length of AES-256 keys, master and data keys alike.
pub(crate) const KEY_LEN: usize = 32;

/// Compact formats use unpadded URL-safe base64 so they contain no `.`, `+`, `/` or `=` and
/// survive URLs, JSON and CSV exports untouched.
pub(crate) fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Operators paste master keys from many tools; accept both alphabets with or without padding.
pub(crate) fn decode_lenient_b64(text: &str) -> Option<Vec<u8>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(text))
        .ok()
}

/// Standard padded base64: what `openssl rand -base64 32` prints, so generated and
/// hand-made keys look alike in configuration.
pub(crate) fn b64_standard_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Ids end up inside `.`/`:`/`,`-separated formats, so they are restricted to a safe alphabet.
pub(crate) fn validate_id(id: &str) -> Result<(), CryptoError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CryptoError::InvalidKeyId { id: id.to_owned() })
    }
}

/// Builds associated data as a domain-separation label followed by length-prefixed parts,
/// so `("ab", "c")` and `("a", "bc")` can never produce the same bytes.
pub(crate) fn associated_data(label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(label.len() + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(label);
    for part in parts {
        // Parts are ids and short labels; anything beyond u32 would be a bug upstream, and
        // saturating keeps the encoding total instead of panicking.
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    OsRng.fill_bytes(&mut buf);
    buf
}

/// One AES-256-GCM encryption with a fresh random nonce. Random 96-bit nonces are safe for
/// about 2^32 messages per key; per-tenant data keys and master keys that only wrap data keys
/// stay many orders of magnitude below that.
pub(crate) fn aead_encrypt(
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<([u8; NONCE_LEN], Vec<u8>), CryptoError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let nonce = random_bytes::<NONCE_LEN>();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::EncryptionFailed)?;
    Ok((nonce, ciphertext))
}

pub(crate) fn aead_decrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::DecryptionFailed)
}

/// Shortens ciphertext for `Debug` output: enough to tell values apart in a log line, not
/// enough to bloat it.
pub(crate) fn short_b64(bytes: &[u8]) -> String {
    let full = b64url_encode(bytes);
    if full.len() <= 12 {
        full
    } else {
        format!("{}…", &full[..12])
    }
}
