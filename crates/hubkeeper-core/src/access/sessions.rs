//! Dashboard sessions: a random secret trades for the key that opened it, stored only as a hash.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::SecretString;
use sqlx::PgPool;

use super::{hash_secret, VerifiedKey};
use crate::access::Role;

/// A session just opened: its secret (the cookie value) exists only in this answer.
pub struct NewSession {
    pub secret: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Whether `secret` has the shape of a session secret (43 URL-safe base64 characters).
pub fn is_session_secret(secret: &str) -> bool {
    secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Opens a session for key `key_id` that lasts `ttl`. Expired sessions are swept here, which
/// keeps the table small without a background job.
pub async fn start_session(
    pool: &PgPool,
    key_id: &str,
    ttl: chrono::Duration,
    user_agent: Option<&str>,
) -> Result<NewSession, sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = Utc::now() + ttl;
    let user_agent = user_agent.map(|ua| ua.chars().take(300).collect::<String>());
    sqlx::query("DELETE FROM sessions WHERE expires_at < now()")
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO sessions (id_hash, key_id, expires_at, user_agent) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash_secret(&secret))
    .bind(key_id)
    .bind(expires_at)
    .bind(user_agent)
    .execute(pool)
    .await?;
    Ok(NewSession {
        secret: SecretString::from(secret),
        expires_at,
    })
}

/// A session joined with its key: key id, name, role, bound apps, the session's expiry.
type SessionRow = (String, String, String, Vec<String>, DateTime<Utc>);

/// The key behind a session secret and when the session expires; `None` when unknown, expired,
/// logged out or when its key has been revoked. Records the session's use.
pub async fn find_session(
    pool: &PgPool,
    secret: &str,
) -> Result<Option<(VerifiedKey, DateTime<Utc>)>, sqlx::Error> {
    if !is_session_secret(secret) {
        return Ok(None);
    }
    let row: Option<SessionRow> = sqlx::query_as(
        "UPDATE sessions s SET last_seen_at = now()
           FROM api_keys k
          WHERE s.id_hash = $1 AND k.id = s.key_id
            AND s.expires_at > now() AND k.revoked_at IS NULL
      RETURNING k.id, k.name, k.role, k.app_ids, s.expires_at",
    )
    .bind(hash_secret(secret))
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(id, name, role, apps, expires_at)| {
        let role = role.parse::<Role>().ok()?;
        let apps = super::keys::parse_apps(&apps);
        Some((
            VerifiedKey {
                id,
                name,
                role,
                apps,
            },
            expires_at,
        ))
    }))
}

/// Ends a session (logout). Ending an unknown one is not an error: the outcome is the same.
pub async fn end_session(pool: &PgPool, secret: &str) -> Result<(), sqlx::Error> {
    if is_session_secret(secret) {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(hash_secret(secret))
            .execute(pool)
            .await?;
    }
    Ok(())
}
