//! The OAuth install flow: a signed, single-use, app-bound `state`; the callback that verifies
//! it, exchanges the code exactly once, learns hub, user and scopes by introspection, seals the
//! tokens and records the connect.
//!
//! The state is both signed (HMAC-SHA-256, so a forged or altered one is refused without a
//! database round trip) and stored (so it can be used once: the callback consumes it with an
//! atomic `UPDATE … WHERE used_at IS NULL RETURNING`). It expires after
//! [`OAuthConfig::state_ttl`]. A failed code exchange is never retried: codes are single-use, and
//! the user is sent back through the flow instead (HubSpot's own guidance).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use hubkeeper_crypto::{ExposeSecret, SecretString};
use hubkeeper_domain::installation::{Connect, Installer};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::{AppId, DomainServices, HubId, InstallationId, UserId};
use hubkeeper_hubspot::{HubSpotClient, HubSpotError};
use rand::RngCore;
use secrecy::zeroize::Zeroizing;
use sha2::Sha256;
use sqlx::PgPool;
use url::Url;

use crate::apps::AppService;
use crate::connect::SessionContext;
use crate::error::CoreError;
use crate::tokens::TokenService;
use crate::vault::Vault;

const STATE_VERSION: &str = "s1";
const STATE_LABEL: &[u8] = b"hubkeeper.oauth-state.v1\0";

/// Settings of the install flow.
#[derive(Clone)]
pub struct OAuthConfig {
    /// How long an install link's state stays valid.
    pub state_ttl: Duration,
    /// Key that signs states. `None`: a random key generated once and kept sealed in the vault
    /// (shared by every process through Postgres).
    pub state_secret: Option<SecretString>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            state_ttl: Duration::from_secs(600),
            state_secret: None,
        }
    }
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("state_ttl", &self.state_ttl)
            .field(
                "state_secret",
                &self.state_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// The query HubSpot sends to the callback. The code is a credential: never printed.
#[derive(Clone, Default, serde::Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackParams")
            .field("code", &self.code.as_ref().map(|_| "[REDACTED]"))
            .field("state", &self.state.is_some())
            .field("error", &self.error)
            .finish()
    }
}

/// Why an install did not complete; [`CallbackError::code`] is what the dashboard receives.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("the user declined the installation")]
    AccessDenied,
    #[error("the OAuth state is missing, forged, expired, for another app or already used")]
    InvalidState,
    #[error("HubSpot sent no authorization code")]
    MissingCode,
    #[error("the redirect URI does not match the one registered for the app in HubSpot")]
    RedirectUriMismatch,
    #[error("HubSpot rejected the app's client id or secret")]
    InvalidClient,
    #[error("token exchange failed: {0}")]
    TokenExchangeFailed(String),
    #[error(
        "the connect session reconnects an installation of another HubSpot account than the one \
         authorised"
    )]
    AccountMismatch,
}

impl CallbackError {
    /// Stable code for the dashboard redirect (`?error=<code>`).
    pub fn code(&self) -> &'static str {
        match self {
            CallbackError::AccessDenied => "access_denied",
            CallbackError::InvalidState => "invalid_state",
            CallbackError::MissingCode => "missing_code",
            CallbackError::RedirectUriMismatch => "redirect_uri_mismatch",
            CallbackError::InvalidClient => "invalid_client",
            CallbackError::TokenExchangeFailed(_) => "token_exchange_failed",
            CallbackError::AccountMismatch => "account_mismatch",
        }
    }
}

/// How a callback ended, and the connect session it belonged to.
#[derive(Debug)]
pub struct Completion {
    pub session: Option<SessionContext>,
    pub result: Result<InstallationId, CallbackError>,
}

/// Starts and completes installs. Cheap to clone.
#[derive(Clone)]
pub struct OAuthService {
    pool: PgPool,
    apps: AppService,
    tokens: TokenService,
    vault: Vault,
    hubspot: HubSpotClient,
    clock: DomainServices,
    state_ttl: Duration,
    state_key: std::sync::Arc<Zeroizing<Vec<u8>>>,
}

impl OAuthService {
    /// Loads (or creates) the state signing key.
    pub async fn start(
        pool: PgPool,
        apps: AppService,
        tokens: TokenService,
        vault: Vault,
        hubspot: HubSpotClient,
        clock: DomainServices,
        config: OAuthConfig,
    ) -> Result<Self, CoreError> {
        let key = match &config.state_secret {
            Some(secret) if !secret.expose_secret().trim().is_empty() => {
                secret.expose_secret().as_bytes().to_vec()
            }
            _ => vault.system_secret("oauth-state").await?,
        };
        Ok(Self {
            pool,
            apps,
            tokens,
            vault,
            hubspot,
            clock,
            state_ttl: config.state_ttl,
            state_key: std::sync::Arc::new(Zeroizing::new(key)),
        })
    }

    pub(crate) fn apps(&self) -> &AppService {
        &self.apps
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The HubSpot consent URL for `app_id`, with a fresh state.
    pub async fn install_url(&self, app_id: AppId) -> Result<Url, CoreError> {
        self.consent_url(app_id, None).await
    }

    /// The consent URL with a fresh state, bound to a connect session when there is one.
    pub(crate) async fn consent_url(
        &self,
        app_id: AppId,
        session_hash: Option<&str>,
    ) -> Result<Url, CoreError> {
        let app = self.apps.load(app_id).await?;
        let config = app
            .config()
            .ok_or_else(|| CoreError::not_found("app", app_id))?;
        if app.is_deleted() {
            return Err(CoreError::AppDeleted {
                app_id: app_id.to_string(),
            });
        }
        let creds = self.apps.credentials(app_id).await?;
        let now = self.clock.now();
        let expires_at = now
            + chrono::Duration::from_std(self.state_ttl).unwrap_or(chrono::Duration::minutes(10));
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let nonce = URL_SAFE_NO_PAD.encode(nonce);
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1 - interval '1 hour'")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO oauth_states (nonce, app_id, expires_at, session_hash)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&nonce)
        .bind(app_id.to_string())
        .bind(expires_at)
        .bind(session_hash)
        .execute(&self.pool)
        .await?;
        let state = sign_state(&self.state_key, &nonce, app_id, expires_at);
        let scopes: Vec<String> = config.scopes.iter().cloned().collect();
        let optional: Vec<String> = config.optional_scopes.iter().cloned().collect();
        Ok(self
            .hubspot
            .authorize_url(&creds, &scopes, &optional, &state, None))
    }

    /// Completes an install from HubSpot's redirect: the installation connected or why not,
    /// with the connect session the state was bound to (if any; known once the state is
    /// genuine), whose outcome is recorded.
    pub async fn complete(&self, params: CallbackParams, request_id: Option<&str>) -> Completion {
        let (session, result) = self.complete_inner(params, request_id).await;
        if let Some(session) = &session {
            let outcome = result.as_ref().map(|id| *id).map_err(CallbackError::code);
            self.finish_session(&session.hash, outcome).await;
        }
        Completion { session, result }
    }

    async fn complete_inner(
        &self,
        params: CallbackParams,
        request_id: Option<&str>,
    ) -> (
        Option<SessionContext>,
        Result<InstallationId, CallbackError>,
    ) {
        // CSRF first: nothing else is looked at for a request we did not start.
        let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
            return (None, Err(CallbackError::InvalidState));
        };
        let now = self.clock.now();
        let Some((nonce, app_id)) = verify_state(&self.state_key, state, now) else {
            return (None, Err(CallbackError::InvalidState));
        };
        let consumed: Result<Option<(String, Option<String>)>, sqlx::Error> = sqlx::query_as(
            "UPDATE oauth_states SET used_at = $3
              WHERE nonce = $1 AND app_id = $2 AND used_at IS NULL AND expires_at > $3
              RETURNING app_id, session_hash",
        )
        .bind(&nonce)
        .bind(app_id.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await;
        let session_hash = match consumed {
            Err(e) => {
                return (
                    None,
                    Err(CallbackError::TokenExchangeFailed(format!("database: {e}"))),
                )
            }
            Ok(None) => return (None, Err(CallbackError::InvalidState)),
            Ok(Some((_, hash))) => hash,
        };
        let session = match session_hash {
            None => None,
            Some(hash) => match self.session_context(&hash).await {
                Ok(Some(session)) if session.app_id == app_id => Some(session),
                Ok(_) => return (None, Err(CallbackError::InvalidState)),
                Err(e) => {
                    return (
                        None,
                        Err(CallbackError::TokenExchangeFailed(format!(
                            "connect session: {e}"
                        ))),
                    )
                }
            },
        };
        if let Some(error) = params.error.as_deref() {
            tracing::info!(%app_id, error = short(error), "install declined at HubSpot");
            return (session, Err(CallbackError::AccessDenied));
        }
        let Some(code) = params
            .code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        else {
            return (session, Err(CallbackError::MissingCode));
        };
        let result = self
            .exchange(app_id, code, session.as_ref(), request_id)
            .await;
        (session, result)
    }

    async fn exchange(
        &self,
        app_id: AppId,
        code: &str,
        session: Option<&SessionContext>,
        request_id: Option<&str>,
    ) -> Result<InstallationId, CallbackError> {
        let failed = |what: &str, e: &dyn fmt::Display| {
            tracing::warn!(%app_id, "install failed: {what}: {e}");
            CallbackError::TokenExchangeFailed(format!("{what}: {e}"))
        };
        let creds = self
            .apps
            .credentials(app_id)
            .await
            .map_err(|e| failed("app credentials", &e))?;
        let set = self
            .hubspot
            .exchange_code(&creds, code)
            .await
            .map_err(|e| match e {
                HubSpotError::RedirectUriMismatch { .. } => CallbackError::RedirectUriMismatch,
                HubSpotError::InvalidClient { .. } => CallbackError::InvalidClient,
                other => failed("code exchange", &other),
            })?;
        let info = self
            .hubspot
            .introspect_access_token(&creds, &set.access_token)
            .await
            .map_err(|e| failed("token introspection", &e))?;
        if !info.active {
            return Err(failed(
                "token introspection",
                &"HubSpot reports the new access token as inactive",
            ));
        }
        let hub_id = info
            .hub_id
            .or(set.hub_id)
            .map(HubId)
            .ok_or_else(|| failed("token introspection", &"no hub id reported"))?;
        let hub_domain = info
            .hub_domain
            .clone()
            .ok_or_else(|| failed("token introspection", &"no hub domain reported"))?;
        let scopes = if info.scopes.is_empty() {
            set.scopes.clone()
        } else {
            info.scopes.clone()
        };
        let installer = Installer {
            user_id: info.user_id.or(set.user_id).map(UserId),
            email: info.user.clone(),
        };
        // App-level installs: one installation per (app, hub). The App aggregate has no
        // user-level flag yet, so the user is not part of the identity.
        let installation_id = InstallationId::derive(app_id, hub_id, None);
        if let Some(expected) = session.and_then(|s| s.installation_id) {
            if expected != installation_id {
                tracing::info!(%app_id, %hub_id, %expected, "connect session authorised another account");
                return Err(CallbackError::AccountMismatch);
            }
        }
        let connected_at = self.clock.now();
        let tokens = self
            .vault
            .seal_tokens(
                &installation_id,
                set.access_token.expose(),
                set.refresh_token.expose(),
                set.expires_at(connected_at),
            )
            .await
            .map_err(|e| failed("sealing tokens", &e))?;
        let mut metadata = EventMetadata::new(Actor::HubSpot, connected_at);
        if let Some(id) = request_id {
            metadata = metadata.request_id(id);
        }
        let id = self
            .tokens
            .record_connect(
                Connect {
                    app_id,
                    hub_id,
                    user_id: None,
                    hub_domain,
                    installer,
                    scopes,
                    tokens,
                    app_version: session.and_then(|s| s.app_version.clone()),
                    customer: session.map(|s| s.customer.clone()),
                },
                &metadata,
            )
            .await
            .map_err(|e| failed("recording the installation", &e))?;
        tracing::info!(installation_id = %id, %app_id, %hub_id, "installation connected");
        Ok(id)
    }
}

fn short(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect()
}

fn mac(key: &[u8], nonce: &str, app_id: AppId, expires: i64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(STATE_LABEL);
    mac.update(nonce.as_bytes());
    mac.update(b"|");
    mac.update(app_id.to_string().as_bytes());
    mac.update(b"|");
    mac.update(&expires.to_be_bytes());
    mac
}

/// `s1.<nonce>.<app id>.<expiry unix seconds>.<signature>`, all URL-safe.
fn sign_state(key: &[u8], nonce: &str, app_id: AppId, expires_at: DateTime<Utc>) -> String {
    let expires = expires_at.timestamp();
    let tag = mac(key, nonce, app_id, expires).finalize().into_bytes();
    format!(
        "{STATE_VERSION}.{nonce}.{app_id}.{expires}.{}",
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The nonce and app of a genuine, unexpired state.
fn verify_state(key: &[u8], state: &str, now: DateTime<Utc>) -> Option<(String, AppId)> {
    let mut parts = state.split('.');
    let (Some(version), Some(nonce), Some(app), Some(expires), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if version != STATE_VERSION || nonce.is_empty() || nonce.len() > 64 {
        return None;
    }
    let app_id: AppId = app.parse().ok()?;
    let expires: i64 = expires.parse().ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(key, nonce, app_id, expires).verify_slice(&tag).ok()?;
    (expires > now.timestamp()).then(|| (nonce.to_owned(), app_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_verify_only_when_genuine_and_unexpired() {
        let key = b"0123456789abcdef0123456789abcdef";
        let app = AppId::new();
        let now = Utc::now();
        let state = sign_state(key, "nonce-1", app, now + chrono::Duration::minutes(10));
        assert_eq!(
            verify_state(key, &state, now),
            Some(("nonce-1".to_owned(), app))
        );
        // Expired.
        assert_eq!(
            verify_state(key, &state, now + chrono::Duration::minutes(11)),
            None
        );
        // Another key.
        assert_eq!(verify_state(b"other key", &state, now), None);
        // Bound to the app: swapping the app id breaks the signature.
        let other = AppId::new();
        let forged = state.replace(&app.to_string(), &other.to_string());
        assert_eq!(verify_state(key, &forged, now), None);
        // Extended expiry breaks it too.
        let parts: Vec<&str> = state.split('.').collect();
        let later = (now + chrono::Duration::days(1)).timestamp().to_string();
        let stretched = [parts[0], parts[1], parts[2], &later, parts[4]].join(".");
        assert_eq!(verify_state(key, &stretched, now), None);
        // Garbage.
        assert_eq!(verify_state(key, "", now), None);
        assert_eq!(verify_state(key, "s1.a.b.c.d.e", now), None);
    }

    #[test]
    fn callback_codes_are_the_documented_ones() {
        let codes: Vec<&str> = [
            CallbackError::AccessDenied,
            CallbackError::InvalidState,
            CallbackError::MissingCode,
            CallbackError::RedirectUriMismatch,
            CallbackError::InvalidClient,
            CallbackError::TokenExchangeFailed("x".into()),
            CallbackError::AccountMismatch,
        ]
        .iter()
        .map(CallbackError::code)
        .collect();
        assert_eq!(
            codes,
            [
                "access_denied",
                "invalid_state",
                "missing_code",
                "redirect_uri_mismatch",
                "invalid_client",
                "token_exchange_failed",
                "account_mismatch"
            ]
        );
    }

    #[test]
    fn callback_params_never_print_the_code() {
        let params = CallbackParams {
            code: Some("na1-secret-code".into()),
            state: Some("s".into()),
            error: None,
            error_description: None,
        };
        assert!(!format!("{params:?}").contains("na1-secret-code"));
    }
}
