//! The key store: create, install, verify, list and revoke API keys.

use base64::Engine;
use chrono::{DateTime, Utc};
use hubkeeper_domain::app::event_types as app_events;
use hubkeeper_domain::AppId;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::{hash_secret, Role};

/// A freshly created key: the only moment its secret exists outside the caller's hands.
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The apps a service key is bound to (empty for other roles).
    pub apps: Vec<AppId>,
    /// `hk_<id>_<secret>`: shown once, never stored.
    pub token: SecretString,
}

/// An active key whose secret matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The apps a service key is bound to (empty for other roles, and for an unbound service key).
    pub apps: Vec<AppId>,
}

/// One key as listed (never its secret).
#[derive(Debug, Clone)]
pub struct KeyListing {
    pub id: String,
    pub name: String,
    pub role: String,
    /// The apps a service key is bound to.
    pub apps: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Dashboard sessions of this key that have not expired.
    pub open_sessions: i64,
}

/// Why a given key could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallKeyError {
    #[error("the key does not have the shape hk_ak<12 hex digits>_<40 to 64 characters>")]
    Malformed,
    #[error("key {0} exists with a different secret")]
    SecretMismatch(String),
    #[error("key {0} exists with role {1}, not {2}")]
    RoleMismatch(String, String, &'static str),
    #[error("key {0} was revoked; choose another key")]
    Revoked(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Whether [`install_key`] added the key or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    Added,
    AlreadyPresent,
}

/// Splits a presented key into its id and secret; `None` unless it has the exact shape.
pub fn parse_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.trim().strip_prefix("hk_")?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 14
        && id.starts_with("ak")
        && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
        && (40..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some((id, secret))
}

/// Whether `presented` has the shape of an API key (`hk_<id>_<secret>`).
pub fn is_well_formed_key(presented: &str) -> bool {
    parse_key(presented).is_some()
}

/// Why a key could not be created as asked.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("only service keys are bound to apps; a {0} key acts on every app its role allows")]
    AppsOnNonServiceKey(&'static str),
    #[error("no registered app {0}")]
    UnknownApp(AppId),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Creates a key and returns its one-time token. `created_by` is an actor string
/// (`key:<id>`, `system:bootstrap`, `cli`). The key is bound to no app: see
/// [`create_key_for_apps`] for service keys that receive tokens.
pub async fn create_key(
    pool: &PgPool,
    name: &str,
    role: Role,
    created_by: &str,
) -> Result<NewApiKey, sqlx::Error> {
    insert_key(pool, name, role, &[], created_by).await
}

/// Creates a key bound to `apps` (service keys only; every app must be registered and not
/// deleted). An empty list is [`create_key`].
pub async fn create_key_for_apps(
    pool: &PgPool,
    name: &str,
    role: Role,
    apps: &[AppId],
    created_by: &str,
) -> Result<NewApiKey, CreateKeyError> {
    if !apps.is_empty() && role != Role::Service {
        return Err(CreateKeyError::AppsOnNonServiceKey(role.as_str()));
    }
    if let Some(unknown) = unknown_apps(pool, apps).await?.into_iter().next() {
        return Err(CreateKeyError::UnknownApp(unknown));
    }
    let mut apps = apps.to_vec();
    apps.sort();
    apps.dedup();
    Ok(insert_key(pool, name, role, &apps, created_by).await?)
}

/// The apps of `apps` that are not registered, or deleted, according to the event store.
pub async fn unknown_apps(pool: &PgPool, apps: &[AppId]) -> Result<Vec<AppId>, sqlx::Error> {
    if apps.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<String> = apps.iter().map(ToString::to_string).collect();
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT r.aggregate_id FROM events r
          WHERE r.aggregate_type = 'app' AND r.aggregate_id = ANY($1) AND r.event_type = $2
            AND NOT EXISTS (SELECT 1 FROM events d
                             WHERE d.aggregate_type = 'app' AND d.aggregate_id = r.aggregate_id
                               AND d.event_type = $3)",
    )
    .bind(&wanted)
    .bind(app_events::APP_REGISTERED)
    .bind(app_events::APP_DELETED)
    .fetch_all(pool)
    .await?;
    Ok(apps
        .iter()
        .filter(|app| !known.contains(&app.to_string()))
        .copied()
        .collect())
}

async fn insert_key(
    pool: &PgPool,
    name: &str,
    role: Role,
    apps: &[AppId],
    created_by: &str,
) -> Result<NewApiKey, sqlx::Error> {
    let mut id_bytes = [0u8; 6];
    let mut secret_bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut id_bytes);
    rand::thread_rng().fill_bytes(&mut secret_bytes);
    let id = format!("ak{}", hex::encode(id_bytes));
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
    let app_ids: Vec<String> = apps.iter().map(ToString::to_string).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_by, app_ids)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(name)
    .bind(role.as_str())
    .bind(hash_secret(&secret))
    .bind(created_by)
    .bind(&app_ids)
    .execute(pool)
    .await?;
    Ok(NewApiKey {
        token: SecretString::from(format!("hk_{id}_{secret}")),
        id,
        name: name.to_string(),
        role,
        apps: apps.to_vec(),
    })
}

/// The stored app ids of a key; ids that no longer parse (never written by this code) are
/// dropped, which can only narrow what the key may do.
pub(crate) fn parse_apps(stored: &[String]) -> Vec<AppId> {
    stored.iter().filter_map(|id| id.parse().ok()).collect()
}

/// Installs a key chosen outside Hubkeeper (e.g. from a deployment's secret store), so the same
/// key works on every start. Idempotent for the same key; refuses to overwrite or resurrect.
pub async fn install_key(
    pool: &PgPool,
    token: &SecretString,
    name: &str,
    role: Role,
    created_by: &str,
) -> Result<(String, Installed), InstallKeyError> {
    let (id, secret) = parse_key(token.expose_secret()).ok_or(InstallKeyError::Malformed)?;
    let digest = hash_secret(secret);
    let inserted = sqlx::query(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(name)
    .bind(role.as_str())
    .bind(&digest)
    .bind(created_by)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok((id.to_string(), Installed::Added));
    }
    let (stored, stored_role, revoked): (String, String, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT secret_hash, role, revoked_at FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let same: bool = stored.as_bytes().ct_eq(digest.as_bytes()).into();
    if !same {
        return Err(InstallKeyError::SecretMismatch(id.to_string()));
    }
    if revoked.is_some() {
        return Err(InstallKeyError::Revoked(id.to_string()));
    }
    if stored_role != role.as_str() {
        return Err(InstallKeyError::RoleMismatch(
            id.to_string(),
            stored_role,
            role.as_str(),
        ));
    }
    Ok((id.to_string(), Installed::AlreadyPresent))
}

/// The active key `id` if `secret_hash` is its stored hash (compared in constant time); records
/// its use only then: a key id with a wrong secret (anyone can read ids in logs) leaves
/// `last_used_at` alone.
pub async fn verify_key(
    pool: &PgPool,
    id: &str,
    secret_hash: &str,
) -> Result<Option<VerifiedKey>, sqlx::Error> {
    let row: Option<(String, String, String, Vec<String>)> = sqlx::query_as(
        "SELECT name, role, secret_hash, app_ids FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((name, role, stored, apps)) = row else {
        return Ok(None);
    };
    let matches: bool = stored.as_bytes().ct_eq(secret_hash.as_bytes()).into();
    let Some(role) = matches.then(|| role.parse::<Role>().ok()).flatten() else {
        return Ok(None);
    };
    // Still active and still this secret at the moment of use (a revocation in between wins).
    let used = sqlx::query(
        "UPDATE api_keys SET last_used_at = now()
          WHERE id = $1 AND revoked_at IS NULL AND secret_hash = $2",
    )
    .bind(id)
    .bind(secret_hash)
    .execute(pool)
    .await?;
    Ok((used.rows_affected() == 1).then(|| VerifiedKey {
        id: id.to_string(),
        name,
        role,
        apps: parse_apps(&apps),
    }))
}

/// Revokes a key and ends its dashboard sessions; returns whether an active key was revoked.
pub async fn revoke_key(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    sqlx::query("DELETE FROM sessions WHERE key_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Every key, oldest first, with its last use and open sessions (which tell whether it is still
/// needed).
pub async fn list_keys(pool: &PgPool) -> Result<Vec<KeyListing>, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        Vec<String>,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT k.id, k.name, k.role, k.app_ids, k.created_by, k.created_at, k.revoked_at, k.last_used_at,
                (SELECT count(*) FROM sessions s
                  WHERE s.key_id = k.id AND s.expires_at > now())
           FROM api_keys k ORDER BY k.created_at",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                name,
                role,
                apps,
                created_by,
                created_at,
                revoked_at,
                last_used_at,
                open_sessions,
            )| KeyListing {
                id,
                name,
                role,
                apps,
                created_by,
                created_at,
                revoked_at,
                last_used_at,
                open_sessions,
            },
        )
        .collect())
}

/// How many keys of `role` are active.
pub async fn count_active(pool: &PgPool, role: Role) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE role = $1 AND revoked_at IS NULL")
        .bind(role.as_str())
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_in_their_exact_shape() {
        let secret = "a".repeat(43);
        let good = format!("hk_ak0123456789ab_{secret}");
        assert_eq!(parse_key(&good), Some(("ak0123456789ab", secret.as_str())));
        assert_eq!(parse_key("hk_ak0123456789ab_short"), None);
        assert_eq!(parse_key(&format!("xx_ak0123456789ab_{secret}")), None);
        assert_eq!(parse_key(&format!("hk_zz0123456789ab_{secret}")), None);
        assert_eq!(
            parse_key(&format!("hk_ak0123456789ab_{}!", "a".repeat(42))),
            None
        );
        assert_eq!(parse_key(""), None);
    }
}
