//! Who is calling, and what they may do.
//!
//! Admin API keys look like `hk_<id>_<secret>`: the id finds the row, the secret is checked
//! against its stored SHA-256 in constant time. Keys have a role:
//! - `admin`: everything;
//! - `operator`: read, refresh, revoke, disconnect;
//! - `auditor`: read-only, including the event history and exports;
//! - `service`: the app's own backend: token hand-outs, usage reports and quota checks only.
//!
//! Verified keys are cached briefly so the token hand-out path does not query Postgres per call;
//! a revoked key stops working within [`KEY_CACHE_TTL`] everywhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use hubkeeper_domain::metadata::Actor;
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a verified key is trusted without asking Postgres again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Auditor,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            "service" => Ok(Role::Service),
            other => Err(format!(
                "unknown role `{other}` (expected admin, operator, auditor or service)"
            )),
        }
    }
}

/// What a route needs. Roles grant permissions in [`Role::allows`]: one table, one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Dashboard data, lists, details (never tokens).
    Read,
    /// Event history and exports.
    ReadAudit,
    /// Refresh, revoke, disconnect installations.
    OperateInstallations,
    /// Receive access tokens; report usage; check quotas.
    UseTokens,
    /// Apps, plans, settings, keys, crypto-shredding, dead-letter re-drive.
    Administer,
}

impl Role {
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(permission, Read | ReadAudit | OperateInstallations),
            Role::Auditor => matches!(permission, Read | ReadAudit),
            Role::Service => matches!(permission, UseTokens),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub key_name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the {} role may not do this (needs {permission:?})",
                self.role.as_str()
            )))
        }
    }

    /// The actor recorded in event metadata for commands this caller issues.
    pub fn actor(&self) -> Actor {
        Actor::AdminKey(self.key_id.clone())
    }
}

/// A freshly created key: the only moment its secret exists outside the caller's hands.
pub struct NewApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `hk_<id>_<secret>`: shown once, never stored.
    pub token: SecretString,
}

/// Verifies API keys with a short-lived cache.
pub struct Authenticator {
    pool: PgPool,
    cache: Mutex<HashMap<String, (Instant, Option<Caller>)>>,
}

impl Authenticator {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves a presented key to its caller; `None` for unknown, malformed or revoked keys.
    pub async fn verify(&self, presented: &str) -> Result<Option<Caller>, ApiError> {
        let Some((id, secret)) = parse_key(presented) else {
            return Ok(None);
        };
        let digest = hash_secret(secret);
        let cache_key = format!("{id}:{digest}");
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, caller)) = cache.get(&cache_key) {
                if at.elapsed() < KEY_CACHE_TTL {
                    return Ok(caller.clone());
                }
            }
        }
        let row: Option<(String, String, String)> = sqlx::query_as(
            "UPDATE api_keys SET last_used_at = now()
              WHERE id = $1 AND revoked_at IS NULL
              RETURNING name, role, secret_hash",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let caller = row.and_then(|(name, role, stored)| {
            let matches: bool = stored.as_bytes().ct_eq(digest.as_bytes()).into();
            let role = role.parse::<Role>().ok()?;
            matches.then(|| Caller {
                key_id: id.to_string(),
                key_name: name,
                role,
            })
        });
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(cache_key, (Instant::now(), caller.clone()));
        }
        Ok(caller)
    }

    /// Forgets every cached verification (after a key is revoked).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }
}

/// Creates a key and returns its one-time token. `created_by` is an actor string
/// (`key:<id>`, `system:bootstrap`, `cli`).
pub async fn create_key(
    pool: &PgPool,
    name: &str,
    role: Role,
    created_by: &str,
) -> Result<NewApiKey, sqlx::Error> {
    let mut id_bytes = [0u8; 6];
    let mut secret_bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut id_bytes);
    rand::thread_rng().fill_bytes(&mut secret_bytes);
    let id = format!("ak{}", hex::encode(id_bytes));
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
    sqlx::query(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(name)
    .bind(role.as_str())
    .bind(hash_secret(&secret))
    .bind(created_by)
    .execute(pool)
    .await?;
    Ok(NewApiKey {
        token: SecretString::from(format!("hk_{id}_{secret}")),
        id,
        name: name.to_string(),
        role,
    })
}

/// Revokes a key; returns whether an active key was revoked.
pub async fn revoke_key(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

fn parse_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.trim().strip_prefix("hk_")?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 14
        && id.starts_with("ak")
        && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
        && (40..=64).contains(&secret.len());
    well_formed.then_some((id, secret))
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            return Err(ApiError::Unauthorized(
                "missing credentials: send `Authorization: Bearer <api key>`".into(),
            ));
        };
        let presented = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <api key>`".into())
            })?;
        match state.auth().verify(presented).await? {
            Some(caller) => Ok(caller),
            None => Err(ApiError::Unauthorized("unknown or revoked API key".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_dashboard_seed_says() {
        use Permission::*;
        assert!(Role::Admin.allows(Administer));
        assert!(Role::Operator.allows(OperateInstallations));
        assert!(!Role::Operator.allows(Administer));
        assert!(!Role::Operator.allows(UseTokens));
        assert!(Role::Auditor.allows(ReadAudit));
        assert!(!Role::Auditor.allows(OperateInstallations));
        assert!(!Role::Auditor.allows(UseTokens));
        assert!(Role::Service.allows(UseTokens));
        assert!(!Role::Service.allows(Read));
    }

    #[test]
    fn keys_parse_only_in_their_exact_shape() {
        let secret = "a".repeat(43);
        let good = format!("hk_ak0123456789ab_{secret}");
        assert_eq!(parse_key(&good), Some(("ak0123456789ab", secret.as_str())));
        assert_eq!(parse_key("hk_ak0123456789ab_short"), None);
        assert_eq!(parse_key(&format!("xx_ak0123456789ab_{secret}")), None);
        assert_eq!(parse_key(&format!("hk_zz0123456789ab_{secret}")), None);
        assert_eq!(parse_key(""), None);
    }
}
