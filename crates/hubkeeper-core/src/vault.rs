//! Envelope encryption at rest: per-tenant data keys in Postgres, wrapped by master keys from
//! configuration, with crypto-shredding and master-key rotation.
//!
//! Tokens and client secrets live in the append-only event store, which can never be rewritten.
//! So each tenant ("owner": an installation, an app, or a system secret) gets its own random data
//! key; only that key's *wrapped* form is stored, in the mutable `data_keys` table. Destroying the
//! wrapped key makes every sealed value of the owner in the history (and in backups taken after
//! the key is gone from them) unreadable, while the events themselves, the audit trail, remain.
//! Rotating a master key re-wraps the small data keys; no token is re-encrypted.
//!
//! Unwrapped data keys are cached in memory for [`KEY_CACHE_TTL`] at most; a shred anywhere is
//! broadcast so every process evicts its copy at once, and the TTL bounds a missed broadcast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use hubkeeper_crypto::{
    open_string, seal, Aad, DataKey, ExposeSecret, MasterKeyring, Sealed, SecretKind, SecretString,
    WrappedKey,
};
use hubkeeper_domain::installation::SealedTokens;
use hubkeeper_domain::{AppId, EndpointId, InstallationId};
use rand::RngCore;
use sqlx::PgPool;

use crate::broadcast::{Broadcaster, Invalidation, ListenerGuard};
use crate::error::CoreError;

/// Longest time an unwrapped data key stays in memory without being re-read.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(300);

/// Rows re-wrapped per round trip during rotation.
const ROTATION_BATCH: i64 = 500;

/// The data-key owner of an installation's tokens.
pub fn installation_owner(id: &InstallationId) -> String {
    id.to_string()
}

/// The data-key owner of an app's client secret.
pub fn app_owner(id: &AppId) -> String {
    format!("app:{id}")
}

/// What an endpoint's signing secret is bound to.
fn signing_secret_aad(endpoint: &EndpointId) -> Aad {
    Aad::new(format!("endpoint:{endpoint}"), SecretKind::SigningSecret)
}

fn system_owner(name: &str) -> String {
    format!("system:{name}")
}

/// Progress of a rotation pass, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationProgress {
    /// Keys that needed re-wrapping when the pass started.
    pub total: u64,
    /// Keys handled so far (re-wrapped, skipped or failed).
    pub done: u64,
}

/// Outcome of [`Vault::rotate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Master key every data key is now wrapped with.
    pub active_kid: String,
    /// Data keys re-wrapped by this pass.
    pub rewrapped: u64,
    /// Keys changed concurrently (shredded or re-wrapped by another pass) and left alone.
    pub skipped: u64,
    /// Owners whose key could not be re-wrapped, with the reason (e.g. master key not
    /// configured). Their old master key must stay configured.
    pub failed: Vec<(String, String)>,
    /// Live data keys per master key id after the pass.
    pub remaining_by_kid: Vec<(String, i64)>,
}

/// Encrypts and decrypts tenant secrets. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    keyring: MasterKeyring,
    cache: Mutex<HashMap<String, (DataKey, Instant)>>,
    broadcaster: Broadcaster,
    listener: OnceLock<Option<ListenerGuard>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("keyring", &self.inner.keyring)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault that shares no caches with other processes (CLI tools, tests).
    pub fn new(pool: PgPool, keyring: MasterKeyring) -> Self {
        Self::build(pool, keyring, Broadcaster::disabled())
    }

    /// A vault that evicts its key cache when any process shreds a key, and tells the others
    /// when it does.
    pub async fn start(pool: PgPool, keyring: MasterKeyring, broadcaster: Broadcaster) -> Self {
        let vault = Self::build(pool, keyring, broadcaster.clone());
        let weak: Weak<Inner> = Arc::downgrade(&vault.inner);
        let guard = broadcaster
            .listen(weak, |inner: Arc<Inner>, invalidation| async move {
                if let Invalidation::DataKey { owner } = invalidation {
                    inner.evict(&owner);
                }
            })
            .await;
        let _ = vault.inner.listener.set(guard);
        vault
    }

    fn build(pool: PgPool, keyring: MasterKeyring, broadcaster: Broadcaster) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                keyring,
                cache: Mutex::new(HashMap::new()),
                broadcaster,
                listener: OnceLock::new(),
            }),
        }
    }

    /// The configured keyring (for fingerprints and status output).
    pub fn keyring(&self) -> &MasterKeyring {
        &self.inner.keyring
    }

    /// Seals a fresh token pair of `installation` with its data key (created on first use).
    pub async fn seal_tokens(
        &self,
        installation: &InstallationId,
        access_token: &str,
        refresh_token: &str,
        access_expires_at: DateTime<Utc>,
    ) -> Result<SealedTokens, CoreError> {
        let owner = installation_owner(installation);
        let key = self.key_for_seal(&owner).await?;
        Ok(SealedTokens {
            access: seal(&key, access_token.as_bytes(), &Aad::access_token(&owner))?,
            refresh: seal(&key, refresh_token.as_bytes(), &Aad::refresh_token(&owner))?,
            access_expires_at,
        })
    }

    /// Opens an installation's sealed access token.
    pub async fn open_access(
        &self,
        installation: &InstallationId,
        sealed: &Sealed,
    ) -> Result<SecretString, CoreError> {
        self.open_token(installation, sealed, Aad::access_token)
            .await
    }

    /// Opens an installation's sealed refresh token. Never cache the result.
    pub async fn open_refresh(
        &self,
        installation: &InstallationId,
        sealed: &Sealed,
    ) -> Result<SecretString, CoreError> {
        self.open_token(installation, sealed, Aad::refresh_token)
            .await
    }

    /// Opens one of an installation's tokens; `aad` names its kind, so a token of one kind
    /// never opens as another.
    async fn open_token(
        &self,
        installation: &InstallationId,
        sealed: &Sealed,
        aad: fn(String) -> Aad,
    ) -> Result<SecretString, CoreError> {
        let owner = installation_owner(installation);
        let key = self.key_for_open(&owner, sealed.dek_id()).await?;
        Ok(open_string(&key, sealed, &aad(owner))?)
    }

    /// Seals an app's client secret (before the RegisterApp command carries it).
    pub async fn seal_client_secret(
        &self,
        app: &AppId,
        secret: &SecretString,
    ) -> Result<Sealed, CoreError> {
        let owner = app_owner(app);
        let key = self.key_for_seal(&owner).await?;
        Ok(seal(
            &key,
            secret.expose_secret().as_bytes(),
            &Aad::client_secret(app.to_string()),
        )?)
    }

    /// Opens an app's client secret.
    pub async fn open_client_secret(
        &self,
        app: &AppId,
        sealed: &Sealed,
    ) -> Result<SecretString, CoreError> {
        let owner = app_owner(app);
        let key = self.key_for_open(&owner, sealed.dek_id()).await?;
        Ok(open_string(
            &key,
            sealed,
            &Aad::client_secret(app.to_string()),
        )?)
    }

    /// Seals the signing secret of an app's notification endpoint (under the app's data key,
    /// bound to the endpoint).
    pub async fn seal_signing_secret(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        secret: &SecretString,
    ) -> Result<Sealed, CoreError> {
        let owner = app_owner(app);
        let key = self.key_for_seal(&owner).await?;
        Ok(seal(
            &key,
            secret.expose_secret().as_bytes(),
            &signing_secret_aad(endpoint),
        )?)
    }

    /// Opens the signing secret of an app's notification endpoint.
    pub async fn open_signing_secret(
        &self,
        app: &AppId,
        endpoint: &EndpointId,
        sealed: &Sealed,
    ) -> Result<SecretString, CoreError> {
        let owner = app_owner(app);
        let key = self.key_for_open(&owner, sealed.dek_id()).await?;
        Ok(open_string(&key, sealed, &signing_secret_aad(endpoint))?)
    }

    /// Crypto-shreds `owner`: destroys its wrapped data key, evicts every cached copy in every
    /// process. Returns whether a live key was destroyed (false if there was none or it was
    /// already shredded). Irreversible.
    pub async fn shred(&self, owner: &str) -> Result<bool, CoreError> {
        let done = sqlx::query(
            "UPDATE data_keys SET wrapped = NULL, master_kid = NULL, shredded_at = now()
              WHERE owner = $1 AND wrapped IS NOT NULL",
        )
        .bind(owner)
        .execute(&self.inner.pool)
        .await?;
        self.inner.evict(owner);
        self.inner
            .broadcaster
            .publish(&Invalidation::DataKey {
                owner: owner.to_owned(),
            })
            .await;
        let shredded = done.rows_affected() == 1;
        if shredded {
            metrics::counter!("hk_data_keys_shredded_total").increment(1);
            tracing::info!(owner, "data key shredded");
        }
        Ok(shredded)
    }

    /// Whether `owner`'s data key has been shredded (and not replaced since).
    pub async fn is_shredded(&self, owner: &str) -> Result<bool, CoreError> {
        let row: Option<Option<String>> =
            sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE owner = $1")
                .bind(owner)
                .fetch_optional(&self.inner.pool)
                .await?;
        Ok(matches!(row, Some(None)))
    }

    /// Re-wraps every data key not yet wrapped under the active master key. Safe while the
    /// system runs: old master keys keep unwrapping until their last key is re-wrapped, and each
    /// row is swapped with a compare-and-set, so a concurrent shred is never undone.
    pub async fn rotate(
        &self,
        mut progress: impl FnMut(RotationProgress),
    ) -> Result<RotationReport, CoreError> {
        let pool = &self.inner.pool;
        let keyring = &self.inner.keyring;
        let active = keyring.active_kid().to_owned();
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM data_keys WHERE wrapped IS NOT NULL AND master_kid <> $1",
        )
        .bind(&active)
        .fetch_one(pool)
        .await?;
        let total = u64::try_from(total).unwrap_or(0);
        let mut report = RotationReport {
            active_kid: active.clone(),
            ..RotationReport::default()
        };
        let mut done = 0u64;
        let mut after = String::new();
        progress(RotationProgress { total, done });
        loop {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT owner, wrapped FROM data_keys
                  WHERE wrapped IS NOT NULL AND master_kid <> $1 AND owner > $2
                  ORDER BY owner LIMIT $3",
            )
            .bind(&active)
            .bind(&after)
            .bind(ROTATION_BATCH)
            .fetch_all(pool)
            .await?;
            let Some((last, _)) = rows.last() else { break };
            after = last.clone();
            for (owner, wrapped) in rows {
                done += 1;
                let rewrapped = wrapped
                    .parse::<WrappedKey>()
                    .and_then(|old| keyring.rewrap(&old, &owner));
                let new = match rewrapped {
                    Ok(new) => new,
                    Err(e) => {
                        report.failed.push((owner, e.to_string()));
                        continue;
                    }
                };
                let updated = sqlx::query(
                    "UPDATE data_keys SET wrapped = $2, master_kid = $3, rotated_at = now()
                      WHERE owner = $1 AND wrapped = $4",
                )
                .bind(&owner)
                .bind(new.to_string())
                .bind(new.kid())
                .bind(&wrapped)
                .execute(pool)
                .await?;
                if updated.rows_affected() == 1 {
                    report.rewrapped += 1;
                } else {
                    report.skipped += 1;
                }
            }
            progress(RotationProgress { total, done });
        }
        report.remaining_by_kid = sqlx::query_as(
            "SELECT master_kid, count(*) FROM data_keys WHERE wrapped IS NOT NULL
              GROUP BY master_kid ORDER BY master_kid",
        )
        .fetch_all(pool)
        .await?;
        metrics::counter!("hk_data_keys_rewrapped_total").increment(report.rewrapped);
        Ok(report)
    }

    /// A 32-byte secret Hubkeeper generated for itself, shared by every process (e.g. the OAuth
    /// state signing key). Created on first use, stored sealed, so it is protected by the
    /// master key like everything else.
    pub async fn system_secret(&self, name: &str) -> Result<Vec<u8>, CoreError> {
        let owner = system_owner(name);
        let aad = Aad::new(owner.clone(), SecretKind::ClientSecret);
        let pool = &self.inner.pool;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT sealed FROM vault_secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
        let stored = match existing {
            Some(stored) => stored,
            None => {
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                let key = self.key_for_seal(&owner).await?;
                let sealed = seal(&key, text.as_bytes(), &aad)?;
                sqlx::query(
                    "INSERT INTO vault_secrets (name, sealed) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(sealed.to_string())
                .execute(pool)
                .await?;
                sqlx::query_scalar("SELECT sealed FROM vault_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_one(pool)
                    .await?
            }
        };
        let sealed: Sealed = stored.parse()?;
        let key = self.key_for_open(&owner, sealed.dek_id()).await?;
        let text = open_string(&key, &sealed, &aad)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.expose_secret())
            .map_err(|_| CoreError::Store(format!("system secret {name} is malformed")))
    }

    /// The owner's data key for sealing: the live one, or a new one if there is none (first use,
    /// or a reconnect after the tenant was forgotten).
    async fn key_for_seal(&self, owner: &str) -> Result<DataKey, CoreError> {
        if let Some(key) = self.inner.cached(owner, None) {
            return Ok(key);
        }
        if let Some(key) = self.load(owner).await? {
            return Ok(key);
        }
        let fresh = DataKey::generate();
        let wrapped = self.inner.keyring.wrap(&fresh, owner)?;
        // Two processes may create the first key of an owner at once: the insert is a no-op for
        // the loser, and both then use whatever won.
        sqlx::query(
            "INSERT INTO data_keys (owner, wrapped, master_kid) VALUES ($1, $2, $3)
             ON CONFLICT (owner) DO UPDATE
                SET wrapped = EXCLUDED.wrapped, master_kid = EXCLUDED.master_kid,
                    shredded_at = NULL, created_at = now(), rotated_at = NULL
              WHERE data_keys.wrapped IS NULL",
        )
        .bind(owner)
        .bind(wrapped.to_string())
        .bind(wrapped.kid())
        .execute(&self.inner.pool)
        .await?;
        self.load(owner).await?.ok_or_else(|| CoreError::Shredded {
            owner: owner.to_owned(),
        })
    }

    /// The data key that sealed a value (`dek_id`), if it still exists.
    async fn key_for_open(&self, owner: &str, dek_id: &str) -> Result<DataKey, CoreError> {
        if let Some(key) = self.inner.cached(owner, Some(dek_id)) {
            return Ok(key);
        }
        match self.load(owner).await? {
            Some(key) if key.id() == dek_id => Ok(key),
            // Gone, or replaced after a shred: the value's key no longer exists.
            _ => Err(CoreError::Shredded {
                owner: owner.to_owned(),
            }),
        }
    }

    /// Reads and unwraps the live key; `None` when there is no row or it was shredded.
    async fn load(&self, owner: &str) -> Result<Option<DataKey>, CoreError> {
        let wrapped: Option<Option<String>> =
            sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE owner = $1")
                .bind(owner)
                .fetch_optional(&self.inner.pool)
                .await?;
        let Some(Some(wrapped)) = wrapped else {
            return Ok(None);
        };
        let key = self
            .inner
            .keyring
            .unwrap(&wrapped.parse::<WrappedKey>()?, owner)?;
        self.inner.remember(owner, &key);
        Ok(Some(key))
    }
}

impl Inner {
    fn cached(&self, owner: &str, dek_id: Option<&str>) -> Option<DataKey> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let (key, at) = cache.get(owner)?;
        let fresh = at.elapsed() < KEY_CACHE_TTL;
        let matches = dek_id.is_none_or(|id| key.id() == id);
        (fresh && matches).then(|| key.clone())
    }

    fn remember(&self, owner: &str, key: &DataKey) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded: a key is re-read at most every few minutes anyway.
        if cache.len() >= 100_000 {
            cache.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
        }
        cache.insert(owner.to_owned(), (key.clone(), Instant::now()));
    }

    fn evict(&self, owner: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_distinct_per_kind() {
        let app = AppId::new();
        let installation = InstallationId::from_uuid(app.as_uuid());
        assert_ne!(app_owner(&app), installation_owner(&installation));
        assert!(app_owner(&app).starts_with("app:"));
        assert_eq!(system_owner("oauth-state"), "system:oauth-state");
    }
}
