//! Standard Webhooks signing: secrets of the form `whsec_<base64>` and the `webhook-signature`
//! header, `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the base64-decoded
//! part of the secret after the prefix. Several secrets (during a rotation) give several
//! space-separated signatures.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the specification asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// A new signing secret: `whsec_` and the base64 of [`SECRET_BYTES`] random bytes.
pub fn generate_secret() -> SecretString {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// Why a secret cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("a signing secret must start with whsec_ followed by base64")]
    Malformed,
}

/// The `v1,<base64>` signature of one message with one secret.
pub fn sign(
    secret: &SecretString,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let key = secret
        .expose_secret()
        .strip_prefix(SECRET_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .filter(|key| !key.is_empty())
        .ok_or(SigningError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SigningError::Malformed)?;
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[SecretString],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let signatures = secrets
        .iter()
        .map(|secret| sign(secret, webhook_id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries.
    #[test]
    fn the_specification_test_vector_signs_as_published() {
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).expect("signs"),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn new_secrets_carry_the_prefix_and_enough_random_bytes() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a.expose_secret(), b.expose_secret());
        let encoded = a
            .expose_secret()
            .strip_prefix(SECRET_PREFIX)
            .expect("prefix");
        assert_eq!(
            STANDARD.decode(encoded).expect("base64").len(),
            SECRET_BYTES
        );
    }

    #[test]
    fn rotation_overlap_signs_with_every_secret() {
        let secrets = [generate_secret(), generate_secret()];
        let header = signature_header(&secrets, "msg_1", 1, b"{}").expect("signs");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_eq!(
            sign(&SecretString::from("nope".to_owned()), "m", 1, b""),
            Err(SigningError::Malformed)
        );
    }
}
