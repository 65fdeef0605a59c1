//! Connect sessions: an app's backend asks for a short-lived link that takes one of its own
//! customers (`external_ref`, with optional `metadata` and `app_version`) through HubSpot's
//! consent, and back to one of the app's registered return URLs.
//!
//! The session id is a bearer capability (the connect URL is `/connect/<session id>`), so only
//! its SHA-256 is stored. Opening the URL is allowed once: it marks the session started and
//! issues the same signed, single-use OAuth state as the plain install path, bound to the
//! session (`oauth_states.session_hash`), so the callback knows whose customer connected and
//! where to send the browser. A session for an `external_ref` that already has an
//! installation of the app reconnects that installation (same id, history kept): if the user
//! then authorises another HubSpot account the callback refuses with `account_mismatch`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hubkeeper_domain::app::match_return_url;
use hubkeeper_domain::installation::{validate_external_ref, validate_metadata, CustomerRef};
use hubkeeper_domain::{AppId, InstallationId};
use rand::RngCore;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use url::Url;

use crate::error::CoreError;
use crate::oauth::OAuthService;

/// Lifetime of a session when the caller names none.
pub const DEFAULT_SESSION_SECS: u64 = 900;
/// Longest lifetime a session may have.
pub const MAX_SESSION_SECS: u64 = 86_400;
/// Shortest lifetime a session may have.
pub const MIN_SESSION_SECS: u64 = 60;
/// Prefix of session ids.
pub const SESSION_PREFIX: &str = "cs_";
/// Where the dashboard's own sessions return to (always allowed: same origin).
pub const DASHBOARD_RETURN_PREFIX: &str = "/dashboard/";

/// What the app asks for.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub external_ref: String,
    pub metadata: Option<Value>,
    pub return_url: Option<String>,
    pub app_version: Option<String>,
    pub expires_in_secs: Option<u64>,
}

/// A created session. `session_id` is shown once (only its hash is kept).
#[derive(Clone, Serialize)]
pub struct CreatedSession {
    pub session_id: String,
    /// Path of the connect URL (the API prefixes Hubkeeper's public URL).
    pub connect_path: String,
    pub expires_at: DateTime<Utc>,
    pub app_id: AppId,
    pub external_ref: String,
    /// The installation the session reconnects, when the customer already has one.
    pub installation_id: Option<InstallationId>,
}

impl fmt::Debug for CreatedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedSession")
            .field("session_id", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("app_id", &self.app_id)
            .finish()
    }
}

/// Why a session cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    #[error("no such connect session")]
    Unknown,
    #[error("the connect session has expired; ask the app for a new link")]
    Expired,
    #[error("the connect session was already used; ask the app for a new link")]
    AlreadyUsed,
}

impl SessionRefusal {
    /// Stable code (JSON `error.code` and the failure page).
    pub fn code(self) -> &'static str {
        match self {
            SessionRefusal::Unknown => "session_not_found",
            SessionRefusal::Expired => "session_expired",
            SessionRefusal::AlreadyUsed => "session_used",
        }
    }
}

/// What the callback needs of the session its state was bound to.
#[derive(Debug, Clone)]
pub struct SessionContext {
    pub hash: String,
    pub app_id: AppId,
    pub customer: CustomerRef,
    pub app_version: Option<String>,
    pub return_url: Option<String>,
    pub installation_id: Option<InstallationId>,
}

/// `cs_<43 base64url characters>`: 256 random bits.
fn new_session_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SESSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a session id.
pub fn session_hash(session_id: &str) -> String {
    hex::encode(Sha256::digest(session_id.as_bytes()))
}

/// Whether `text` looks like a session id at all (cheap refusal before any query).
pub fn looks_like_session_id(text: &str) -> bool {
    text.strip_prefix(SESSION_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A relative return URL into Hubkeeper's own dashboard (cannot leave the origin).
fn dashboard_return(raw: &str) -> bool {
    raw.strip_prefix(DASHBOARD_RETURN_PREFIX)
        .is_some_and(|rest| {
            rest.len() <= 200
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_'))
                && !rest.contains("//")
        })
}

/// The URL the browser ends on: `return_url` with `installation_id`, `external_ref` and
/// `status=connected`, or `error=<code>` (and `external_ref`) appended to its query.
pub fn outcome_url(
    return_url: &str,
    external_ref: &str,
    outcome: Result<InstallationId, &str>,
) -> String {
    let pairs: Vec<(&str, String)> = match outcome {
        Ok(id) => vec![
            ("installation_id", id.to_string()),
            ("external_ref", external_ref.to_owned()),
            ("status", "connected".to_owned()),
        ],
        Err(code) => vec![
            ("external_ref", external_ref.to_owned()),
            ("error", code.to_owned()),
        ],
    };
    match Url::parse(return_url) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.to_string()
        }
        Err(_) => {
            // Relative dashboard path.
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.extend_pairs(pairs);
            let sep = if return_url.contains('?') { '&' } else { '?' };
            format!("{return_url}{sep}{}", query.finish())
        }
    }
}

impl OAuthService {
    /// Creates a session for one of `app_id`'s customers.
    pub async fn create_session(
        &self,
        app_id: AppId,
        new: NewSession,
        created_by: &str,
    ) -> Result<CreatedSession, CoreError> {
        let app = self.apps().load(app_id).await?;
        let config = app
            .config()
            .ok_or_else(|| CoreError::not_found("app", app_id))?;
        if app.is_deleted() {
            return Err(CoreError::AppDeleted {
                app_id: app_id.to_string(),
            });
        }
        let external_ref = validate_external_ref(&new.external_ref)
            .map_err(|e| CoreError::InvalidInput(e.to_string()))?;
        let metadata = match new.metadata {
            None | Some(Value::Null) => None,
            Some(value) => {
                Some(validate_metadata(value).map_err(|e| CoreError::InvalidInput(e.to_string()))?)
            }
        };
        let app_version = match new.app_version.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) if v.chars().count() > 64 || v.chars().any(char::is_control) => {
                return Err(CoreError::InvalidInput(
                    "app_version must be one line of at most 64 characters".into(),
                ))
            }
            Some(v) => Some(v.to_owned()),
        };
        let return_url = match new.return_url.as_deref() {
            None => None,
            Some(raw) if dashboard_return(raw) => Some(raw.to_owned()),
            Some(raw) => Some(
                match_return_url(&config.return_urls, raw)
                    .map_err(|e| CoreError::InvalidInput(e.to_string()))?
                    .to_string(),
            ),
        };
        let secs = new.expires_in_secs.unwrap_or(DEFAULT_SESSION_SECS);
        if !(MIN_SESSION_SECS..=MAX_SESSION_SECS).contains(&secs) {
            return Err(CoreError::InvalidInput(format!(
                "expires_in_secs must be between {MIN_SESSION_SECS} and {MAX_SESSION_SECS}"
            )));
        }
        let now = self.now();
        let expires_at = now + chrono::Duration::seconds(secs as i64);
        let existing: Option<uuid::Uuid> = sqlx::query_scalar(
            "SELECT installation_id FROM rm_installations
              WHERE external_ref = $1 AND app_id = $2
              ORDER BY last_connected_at DESC LIMIT 1",
        )
        .bind(&external_ref)
        .bind(app_id.as_uuid())
        .fetch_optional(self.pool())
        .await?;
        let installation_id = existing.map(InstallationId::from_uuid);
        let session_id = new_session_id();
        sqlx::query("DELETE FROM connect_sessions WHERE expires_at < $1 - interval '7 days'")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO connect_sessions (session_hash, app_id, external_ref, metadata,
                    app_version, return_url, installation_id, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(session_hash(&session_id))
        .bind(app_id.as_uuid())
        .bind(&external_ref)
        .bind(metadata.map(Value::Object))
        .bind(&app_version)
        .bind(&return_url)
        .bind(existing)
        .bind(created_by)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        metrics::counter!("hk_connect_sessions_created_total").increment(1);
        tracing::info!(%app_id, reconnect = installation_id.is_some(), "connect session created");
        Ok(CreatedSession {
            connect_path: format!("/connect/{session_id}"),
            session_id,
            expires_at,
            app_id,
            external_ref,
            installation_id,
        })
    }

    /// Opens a session's connect URL (once): HubSpot's consent URL with a state bound to it.
    pub async fn start_session(&self, session_id: &str) -> Result<Url, CoreError> {
        if !looks_like_session_id(session_id) {
            return Err(SessionRefusal::Unknown.into());
        }
        let hash = session_hash(session_id);
        let now = self.now();
        let started: Option<uuid::Uuid> = sqlx::query_scalar(
            "UPDATE connect_sessions SET started_at = $2
              WHERE session_hash = $1 AND started_at IS NULL AND expires_at > $2
              RETURNING app_id",
        )
        .bind(&hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        let Some(app) = started else {
            let row = sqlx::query(
                "SELECT expires_at, started_at FROM connect_sessions WHERE session_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(self.pool())
            .await?;
            return Err(match row {
                None => SessionRefusal::Unknown,
                Some(row) => {
                    let started: Option<DateTime<Utc>> = row.try_get("started_at")?;
                    if started.is_some() {
                        SessionRefusal::AlreadyUsed
                    } else {
                        SessionRefusal::Expired
                    }
                }
            }
            .into());
        };
        metrics::counter!("hk_connect_sessions_started_total").increment(1);
        self.consent_url(AppId::from_uuid(app), Some(&hash)).await
    }

    /// The session a consumed state was bound to.
    pub(crate) async fn session_context(
        &self,
        hash: &str,
    ) -> Result<Option<SessionContext>, CoreError> {
        let row = sqlx::query(
            "SELECT app_id, external_ref, metadata, app_version, return_url, installation_id
               FROM connect_sessions WHERE session_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let metadata: Option<Value> = row.try_get("metadata")?;
        let installation: Option<uuid::Uuid> = row.try_get("installation_id")?;
        Ok(Some(SessionContext {
            hash: hash.to_owned(),
            app_id: AppId::from_uuid(row.try_get("app_id")?),
            customer: CustomerRef {
                external_ref: row.try_get("external_ref")?,
                metadata: match metadata {
                    Some(Value::Object(map)) => Some(map),
                    _ => None::<Map<String, Value>>,
                },
            },
            app_version: row.try_get("app_version")?,
            return_url: row.try_get("return_url")?,
            installation_id: installation.map(InstallationId::from_uuid),
        }))
    }

    /// Records how a session's callback ended.
    pub(crate) async fn finish_session(&self, hash: &str, outcome: Result<InstallationId, &str>) {
        let (code, id) = match outcome {
            Ok(id) => ("connected", Some(id.as_uuid())),
            Err(code) => (code, None),
        };
        if let Err(e) = sqlx::query(
            "UPDATE connect_sessions SET completed_at = $2, outcome = $3, result_installation_id = $4
              WHERE session_hash = $1",
        )
        .bind(hash)
        .bind(self.now())
        .bind(code)
        .bind(id)
        .execute(self.pool())
        .await
        {
            tracing::warn!(error = %e, "could not record a connect session's outcome");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_random_and_recognised() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert!(looks_like_session_id(&a), "{a}");
        assert!(!looks_like_session_id("cs_short"));
        assert!(!looks_like_session_id(&a.replace("cs_", "xx_")));
        assert_eq!(session_hash(&a).len(), 64);
        assert_ne!(session_hash(&a), session_hash(&b));
    }

    #[test]
    fn only_plain_dashboard_paths_are_same_origin_returns() {
        assert!(dashboard_return("/dashboard/tokens"));
        assert!(dashboard_return("/dashboard/users/0190-ab"));
        for bad in [
            "//evil.example/dashboard/",
            "/dashboard//evil.example",
            "/dashboard/../x",
            "/dashboard/a?x=1",
            "https://evil.example/dashboard/",
            "/other",
            "/dashboard\\evil",
        ] {
            assert!(!dashboard_return(bad), "{bad}");
        }
    }

    #[test]
    fn outcome_urls_keep_the_apps_query() {
        let id = InstallationId::from_uuid(uuid::Uuid::nil());
        let ok = outcome_url("https://app.example/done?tab=crm", "cust 1", Ok(id));
        let url = Url::parse(&ok).unwrap();
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            q,
            vec![
                ("tab".into(), "crm".into()),
                ("installation_id".into(), id.to_string()),
                ("external_ref".into(), "cust 1".into()),
                ("status".into(), "connected".into()),
            ]
        );
        let failed = outcome_url("/dashboard/tokens", "c1", Err("access_denied"));
        assert_eq!(
            failed,
            "/dashboard/tokens?external_ref=c1&error=access_denied"
        );
    }
}
