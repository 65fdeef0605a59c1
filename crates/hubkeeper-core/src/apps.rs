//! App management: registration with a sealed client secret, updates with the domain's warnings,
//! guarded deletion, and the opened credentials the refresher and the install flow need.
//!
//! The client secret is sealed *before* the RegisterApp command exists, so neither the event
//! store nor the relayed stream ever sees it in clear, and no read path returns it: the only way
//! out is [`AppService::credentials`], which hands it straight to the HubSpot client.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubkeeper_crypto::SecretString;
use hubkeeper_domain::app::{
    App, AppCommand, AppConfig, AppError, CredentialsRejection, Environment, OAuthGeneration,
    RegisterApp, SignatureVersion, UpdateApp,
};
use hubkeeper_domain::installation::event_types;
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::AppId;
use hubkeeper_hubspot::{AppCredentials, OAuthEndpoints};
use serde::Serialize;
use sqlx::PgPool;

use crate::broadcast::{Broadcaster, Invalidation, ListenerGuard};
use crate::commands::{CommandBus, CommandError};
use crate::error::CoreError;
use crate::vault::{app_owner, Vault};

/// How long opened credentials are reused without re-reading the app.
const CREDENTIALS_TTL: Duration = Duration::from_secs(60);

/// Overlap of a rotation when the caller names none: a day, in which HubSpot may still sign
/// webhooks with the previous secret.
pub const DEFAULT_ROTATION_OVERLAP_SECS: u64 = 86_400;

/// Registration input. `Debug` is safe: the secret is a `SecretString`.
#[derive(Debug, Clone)]
pub struct NewApp {
    pub label: String,
    pub description: Option<String>,
    pub environment: Environment,
    pub client_id: String,
    pub client_secret: SecretString,
    pub redirect_uri: String,
    /// Space-separated.
    pub scopes: String,
    /// Space-separated, may be empty.
    pub optional_scopes: String,
    pub oauth_generation: Option<OAuthGeneration>,
    /// `None`: v3 only.
    pub signature_versions: Option<Vec<SignatureVersion>>,
    /// Required to name v1 or v2 in `signature_versions`.
    pub allow_legacy_signatures: bool,
    /// Allowed return URLs of connect sessions.
    pub return_urls: Vec<String>,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AppChanges {
    pub label: Option<String>,
    pub description: Option<String>,
    pub environment: Option<Environment>,
    pub redirect_uri: Option<String>,
    pub scopes: Option<String>,
    pub optional_scopes: Option<String>,
    pub oauth_generation: Option<OAuthGeneration>,
    pub signature_versions: Option<Vec<SignatureVersion>>,
    /// Required for `signature_versions` to add v1 or v2.
    pub allow_legacy_signatures: bool,
    /// Replaces the allowed return URLs of connect sessions.
    pub return_urls: Option<Vec<String>>,
    /// Accepted only when equal to the current client id (forms resend every field).
    pub client_id: Option<String>,
    /// A secret was sent: always refused (a new secret means a new app entry). The value itself
    /// is never even read.
    pub client_secret_supplied: bool,
}

/// One app as `GET /v1/apps/{id}` and the app commands answer it, read from the aggregate (so
/// an answer always includes the command just made); lists come from the `rm_apps` read model
/// (`hubkeeper_projections::queries::AppView`). There is deliberately no secret field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppDetails {
    pub app_id: AppId,
    pub label: String,
    pub description: String,
    pub environment: Environment,
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: BTreeSet<String>,
    pub optional_scopes: BTreeSet<String>,
    pub oauth_generation: OAuthGeneration,
    pub signature_versions: BTreeSet<SignatureVersion>,
    /// Where connect sessions may send the end user back to (scheme, host, port, path prefix).
    pub return_urls: Vec<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Where to send a customer to install the app (relative to Hubkeeper's public URL).
    pub install_path: String,
    /// When the client secret was last rotated.
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when webhook signatures made with the previous secret are accepted (also once
    /// over; `None` before the first rotation).
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    /// Set while HubSpot's refusal of the app's credentials parks its refreshes.
    pub refreshes_parked: Option<ParkedRefreshes>,
}

/// Why an app's refreshes are parked (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedRefreshes {
    /// HubSpot's error code (`invalid_client`, `unauthorized_client`, ...).
    pub error: String,
    pub message: String,
    pub since: DateTime<Utc>,
}

impl From<&CredentialsRejection> for ParkedRefreshes {
    fn from(r: &CredentialsRejection) -> Self {
        Self {
            error: r.error.clone(),
            message: r.message.clone(),
            since: r.at,
        }
    }
}

impl AppDetails {
    fn of(app_id: AppId, app: &App, config: &AppConfig) -> Self {
        Self {
            app_id,
            label: config.label.clone(),
            description: config.description.clone(),
            environment: config.environment,
            client_id: config.client_id.clone(),
            redirect_uri: config.redirect_uri.clone(),
            scopes: config.scopes.clone(),
            optional_scopes: config.optional_scopes.clone(),
            oauth_generation: config.oauth_generation,
            signature_versions: config.signature_versions.clone(),
            return_urls: config.return_urls.clone(),
            registered_at: config.registered_at,
            updated_at: app.updated_at(),
            deleted_at: app.deleted_at(),
            install_path: format!("/oauth/{app_id}/install"),
            secret_rotated_at: app.secret_rotated_at(),
            previous_secret_valid_until: app.previous_secret().map(|p| p.valid_until),
            refreshes_parked: app.refreshes_parked().map(ParkedRefreshes::from),
        }
    }
}

/// Result of [`AppService::delete`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppDeletion {
    pub app_id: AppId,
    /// Active installations at the time of deletion (kept, but no longer refreshed).
    pub active_installations: u32,
    pub forced: bool,
}

/// The HubSpot endpoint generation the client must use for an app.
pub fn endpoints_of(generation: OAuthGeneration) -> OAuthEndpoints {
    match generation {
        OAuthGeneration::V1 => OAuthEndpoints::V1Legacy,
        OAuthGeneration::V2026_03 => OAuthEndpoints::V2026_03,
    }
}

/// What the credentials cache keeps of an app: its opened credentials, every secret a webhook
/// signature may use with the end of its validity, and whether its refreshes are parked.
#[derive(Clone)]
struct Opened {
    credentials: AppCredentials,
    /// The current secret (no end) first, then the one a rotation replaced, while valid.
    webhook_secrets: Vec<(SecretString, Option<DateTime<Utc>>)>,
    parked: bool,
}

/// A client secret webhook signatures may be made with, and until when. `Debug` shows no
/// secret.
#[derive(Debug, Clone)]
pub struct WebhookSecret {
    pub secret: SecretString,
    /// `None`: the current secret. Otherwise the end of a rotation's overlap.
    pub valid_until: Option<DateTime<Utc>>,
}

impl WebhookSecret {
    /// Whether a signature made with this secret is accepted at `at`.
    pub fn valid_at(&self, at: DateTime<Utc>) -> bool {
        self.valid_until.is_none_or(|until| at < until)
    }
}

/// App commands and queries. Cheap to clone.
#[derive(Clone)]
pub struct AppService {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    bus: Arc<CommandBus>,
    vault: Vault,
    broadcaster: Broadcaster,
    credentials: Mutex<HashMap<AppId, (Opened, Instant)>>,
    /// Bumped whenever cached credentials are dropped (see [`AppService::credentials_generation`]).
    generation: AtomicU64,
    listener: OnceLock<Option<ListenerGuard>>,
}

impl AppService {
    /// Subscribes to invalidations so an update or delete anywhere evicts cached credentials.
    pub async fn start(
        pool: PgPool,
        bus: Arc<CommandBus>,
        vault: Vault,
        broadcaster: Broadcaster,
    ) -> Self {
        let service = Self {
            inner: Arc::new(Inner {
                pool,
                bus,
                vault,
                broadcaster: broadcaster.clone(),
                credentials: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                listener: OnceLock::new(),
            }),
        };
        let weak: Weak<Inner> = Arc::downgrade(&service.inner);
        let guard = broadcaster
            .listen(weak, |inner: Arc<Inner>, invalidation| async move {
                if let Invalidation::App { app_id } = invalidation {
                    if let Ok(id) = app_id.parse::<AppId>() {
                        inner.evict(&id);
                    }
                }
            })
            .await;
        let _ = service.inner.listener.set(guard);
        service
    }

    /// Registers an app. The secret is sealed first; if the domain refuses the registration the
    /// fresh data key is shredded again so nothing is left behind.
    pub async fn register(
        &self,
        new: NewApp,
        metadata: &EventMetadata,
    ) -> Result<AppDetails, CoreError> {
        if new.client_secret.expose_secret_len() == 0 {
            return Err(CoreError::InvalidInput(
                "client secret must not be empty".into(),
            ));
        }
        let app_id = AppId::new();
        let sealed = self
            .inner
            .vault
            .seal_client_secret(&app_id, &new.client_secret)
            .await?;
        let command = AppCommand::RegisterApp(RegisterApp {
            app_id,
            label: new.label,
            description: new.description,
            environment: new.environment,
            client_id: new.client_id,
            client_secret: sealed,
            redirect_uri: new.redirect_uri,
            scopes: new.scopes,
            optional_scopes: new.optional_scopes,
            oauth_generation: new.oauth_generation,
            signature_versions: new.signature_versions,
            allow_legacy_signatures: new.allow_legacy_signatures,
            return_urls: new.return_urls,
        });
        if let Err(e) = self
            .inner
            .bus
            .apps()
            .execute(&app_id.to_string(), command, metadata)
            .await
        {
            if let Err(shred) = self.inner.vault.shred(&app_owner(&app_id)).await {
                tracing::warn!(error = %shred, %app_id, "could not discard the data key of a refused app");
            }
            return Err(e.into());
        }
        tracing::info!(%app_id, "app registered");
        let details = self.get(app_id).await?;
        if let Some(warning) =
            hubkeeper_domain::app::legacy_signature_warning(&details.signature_versions)
        {
            tracing::warn!(%app_id, %warning, "app registered accepting legacy webhook signatures");
        }
        Ok(details)
    }

    /// An app's details (also after deletion, for the record).
    pub async fn get(&self, app_id: AppId) -> Result<AppDetails, CoreError> {
        let app = self.load(app_id).await?;
        let config = app
            .config()
            .ok_or_else(|| CoreError::not_found("app", app_id))?;
        Ok(AppDetails::of(app_id, &app, config))
    }

    /// Applies `changes` and returns the new state with the domain's warnings (scopes, redirect
    /// URI, endpoints, signature versions).
    pub async fn update(
        &self,
        app_id: AppId,
        changes: AppChanges,
        metadata: &EventMetadata,
    ) -> Result<(AppDetails, Vec<String>), CoreError> {
        if changes.client_secret_supplied {
            return Err(CoreError::App(AppError::ClientSecretImmutable));
        }
        let update = UpdateApp {
            label: changes.label,
            description: changes.description,
            environment: changes.environment,
            redirect_uri: changes.redirect_uri,
            scopes: changes.scopes,
            optional_scopes: changes.optional_scopes,
            oauth_generation: changes.oauth_generation,
            signature_versions: changes.signature_versions,
            allow_legacy_signatures: changes.allow_legacy_signatures,
            return_urls: changes.return_urls,
            client_id: changes.client_id,
            client_secret: None,
        };
        // One load: the command returns the state it was decided on (for the warnings, which
        // compare it with the new configuration) and the state it left (the answer).
        let executed = self
            .inner
            .bus
            .apps()
            .execute_returning(
                &app_id.to_string(),
                AppCommand::UpdateApp(update.clone()),
                metadata,
            )
            .await
            .map_err(|e| match e {
                CommandError::Rejected(AppError::NotRegistered) => {
                    CoreError::not_found("app", app_id)
                }
                other => CoreError::from(other),
            })?;
        let (_, warnings) = executed
            .before
            .preview_update(&update)
            .map_err(CoreError::App)?;
        for warning in warnings.iter().filter(|w| w.contains("carry no timestamp")) {
            tracing::warn!(%app_id, %warning, "app now accepts legacy webhook signatures");
        }
        self.changed(app_id).await;
        let config = executed
            .after
            .config()
            .ok_or_else(|| CoreError::not_found("app", app_id))?;
        Ok((AppDetails::of(app_id, &executed.after, config), warnings))
    }

    /// Deletes an app; refused while installations are active unless `force`. Installations keep
    /// their sealed tokens but are no longer refreshed.
    pub async fn delete(
        &self,
        app_id: AppId,
        force: bool,
        metadata: &EventMetadata,
    ) -> Result<AppDeletion, CoreError> {
        self.load(app_id).await?;
        let active = self.active_installations(app_id).await?;
        self.inner
            .bus
            .apps()
            .execute(
                &app_id.to_string(),
                AppCommand::DeleteApp {
                    force,
                    active_installations: active,
                },
                metadata,
            )
            .await?;
        self.changed(app_id).await;
        tracing::info!(%app_id, active, force, "app deleted");
        Ok(AppDeletion {
            app_id,
            active_installations: active,
            forced: force && active > 0,
        })
    }

    /// Installations of the app that hold tokens and are kept alive (connected or expired),
    /// counted from the event store: the latest lifecycle event of each installation decides.
    pub async fn active_installations(&self, app_id: AppId) -> Result<u32, CoreError> {
        let count: i64 = sqlx::query_scalar(
            "WITH mine AS (
                 SELECT aggregate_id FROM events
                  WHERE aggregate_type = 'installation' AND event_type = $2
                    AND payload -> $2 ->> 'app_id' = $1
             ), latest AS (
                 SELECT DISTINCT ON (e.aggregate_id) e.aggregate_id, e.event_type
                   FROM events e JOIN mine USING (aggregate_id)
                  WHERE e.aggregate_type = 'installation' AND e.event_type = ANY($3)
                  ORDER BY e.aggregate_id, e.sequence DESC
             )
             SELECT count(*) FROM latest WHERE event_type = ANY($4)",
        )
        .bind(app_id.to_string())
        .bind(event_types::CONNECTED)
        .bind(vec![
            event_types::CONNECTED,
            event_types::RECONNECTED,
            event_types::TOKENS_REFRESHED,
            event_types::REAUTHORIZATION_REQUIRED,
            event_types::REVOKED,
            event_types::DISCONNECTED,
        ])
        .bind(vec![
            event_types::CONNECTED,
            event_types::RECONNECTED,
            event_types::TOKENS_REFRESHED,
        ])
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// The app's OAuth credentials with the opened secret, for the HubSpot client. A deleted
    /// app has none: its installations keep their tokens but cannot be refreshed.
    pub async fn credentials(&self, app_id: AppId) -> Result<AppCredentials, CoreError> {
        Ok(self.opened(app_id).await?.credentials)
    }

    /// Changes whenever an app's cached credentials are dropped here, because it changed in this
    /// process or another (rotation, update, deletion, parking): callers that keep credentials
    /// of their own (the webhook intake) fetch them again when it moved.
    pub fn credentials_generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The credentials a refresh uses: [`Self::credentials`], refused with
    /// [`CoreError::AppCredentialsRejected`] while HubSpot's refusal parks the app's refreshes.
    pub async fn refresh_credentials(&self, app_id: AppId) -> Result<AppCredentials, CoreError> {
        let opened = self.opened(app_id).await?;
        if opened.parked {
            return Err(CoreError::AppCredentialsRejected {
                app_id: app_id.to_string(),
            });
        }
        Ok(opened.credentials)
    }

    /// The client secrets a webhook signature may be made with at `at`: the current one first,
    /// then, during a rotation's overlap, the previous one. Errors like [`Self::credentials`]
    /// (unknown or deleted app).
    pub async fn webhook_secrets(
        &self,
        app_id: AppId,
        at: DateTime<Utc>,
    ) -> Result<Vec<SecretString>, CoreError> {
        Ok(self
            .webhook_secret_validity(app_id)
            .await?
            .into_iter()
            .filter(|s| s.valid_at(at))
            .map(|s| s.secret)
            .collect())
    }

    /// Every client secret of the app with the end of its validity (`None` for the current
    /// one), for callers that keep them a while and must stop accepting the previous secret
    /// exactly when its overlap ends. Current first.
    pub async fn webhook_secret_validity(
        &self,
        app_id: AppId,
    ) -> Result<Vec<WebhookSecret>, CoreError> {
        Ok(self
            .opened(app_id)
            .await?
            .webhook_secrets
            .into_iter()
            .map(|(secret, valid_until)| WebhookSecret {
                secret,
                valid_until,
            })
            .collect())
    }

    async fn opened(&self, app_id: AppId) -> Result<Opened, CoreError> {
        if let Some(opened) = self.inner.cached(&app_id) {
            return Ok(opened);
        }
        let app = self.load(app_id).await?;
        if app.is_deleted() {
            return Err(CoreError::AppDeleted {
                app_id: app_id.to_string(),
            });
        }
        let credentials = self.open(app_id, &app).await?;
        let mut webhook_secrets = vec![(credentials.client_secret.clone(), None)];
        if let Some(previous) = app.previous_secret() {
            let secret = self
                .inner
                .vault
                .open_client_secret(&app_id, &previous.secret)
                .await?;
            webhook_secrets.push((secret, Some(previous.valid_until)));
        }
        let opened = Opened {
            credentials,
            webhook_secrets,
            parked: app.refreshes_parked().is_some(),
        };
        self.inner.remember(app_id, &opened);
        Ok(opened)
    }

    /// Replaces the app's client secret (sealed before the command exists). Refreshes use the
    /// new secret at once, in every process (the credentials caches are invalidated); webhook
    /// signatures made with the previous secret are accepted for `overlap_secs` more (default
    /// [`DEFAULT_ROTATION_OVERLAP_SECS`]). Installations are untouched. Resumes parked
    /// refreshes.
    pub async fn rotate_secret(
        &self,
        app_id: AppId,
        client_secret: SecretString,
        overlap_secs: Option<u64>,
        metadata: &EventMetadata,
    ) -> Result<AppDetails, CoreError> {
        if client_secret.expose_secret_len() == 0 {
            return Err(CoreError::InvalidInput(
                "client secret must not be empty".into(),
            ));
        }
        self.load(app_id).await?;
        let sealed = self
            .inner
            .vault
            .seal_client_secret(&app_id, &client_secret)
            .await?;
        self.inner
            .bus
            .apps()
            .execute(
                &app_id.to_string(),
                AppCommand::RotateClientSecret {
                    client_secret: sealed,
                    overlap_secs: overlap_secs.unwrap_or(DEFAULT_ROTATION_OVERLAP_SECS),
                },
                metadata,
            )
            .await?;
        self.changed(app_id).await;
        tracing::info!(%app_id, "app client secret rotated");
        self.get(app_id).await
    }

    /// Records HubSpot's refusal of the app's client credentials and parks its refreshes.
    /// Records one event however many refreshes were refused (later ones change nothing).
    pub async fn record_credentials_rejected(
        &self,
        app_id: AppId,
        error: &str,
        message: &str,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        let before = self.load(app_id).await?;
        if before.refreshes_parked().is_some() {
            return Ok(());
        }
        self.inner
            .bus
            .apps()
            .execute(
                &app_id.to_string(),
                AppCommand::RecordCredentialsRejected {
                    error: error.to_owned(),
                    message: message.to_owned(),
                },
                metadata,
            )
            .await?;
        self.changed(app_id).await;
        // Concurrent refusals each get here; only the one whose event was recorded reports it.
        let after = self.load(app_id).await?;
        let recorded_now = after
            .refreshes_parked()
            .is_some_and(|p| metadata.occurred_at <= p.at);
        if recorded_now {
            metrics::counter!("hk_app_credentials_rejected_total").increment(1);
            tracing::error!(%app_id, error, "HubSpot rejected the app's client credentials; its refreshes are parked");
        }
        Ok(())
    }

    /// An operator resumes the app's parked refreshes (the actor is in `metadata`).
    pub async fn resume_refreshes(
        &self,
        app_id: AppId,
        metadata: &EventMetadata,
    ) -> Result<AppDetails, CoreError> {
        self.load(app_id).await?;
        self.inner
            .bus
            .apps()
            .execute(&app_id.to_string(), AppCommand::ResumeRefreshes, metadata)
            .await?;
        self.changed(app_id).await;
        tracing::info!(%app_id, "app refreshes resumed");
        self.get(app_id).await
    }

    /// Credentials even of a deleted app: revoking an installation's tokens at HubSpot must
    /// stay possible after the app entry is gone. Not cached.
    pub(crate) async fn credentials_for_revocation(
        &self,
        app_id: AppId,
    ) -> Result<AppCredentials, CoreError> {
        let app = self.load(app_id).await?;
        self.open(app_id, &app).await
    }

    /// The app's aggregate; `NotFound` if it was never registered.
    pub async fn load(&self, app_id: AppId) -> Result<App, CoreError> {
        let (app, _) = self.inner.bus.apps().load(&app_id.to_string()).await?;
        if app.app_id().is_none() {
            return Err(CoreError::not_found("app", app_id));
        }
        Ok(app)
    }

    async fn open(&self, app_id: AppId, app: &App) -> Result<AppCredentials, CoreError> {
        let config = app
            .config()
            .ok_or_else(|| CoreError::not_found("app", app_id))?;
        let secret = self
            .inner
            .vault
            .open_client_secret(&app_id, &config.client_secret)
            .await?;
        Ok(AppCredentials {
            client_id: config.client_id.clone(),
            client_secret: secret,
            redirect_uri: config.redirect_uri.clone(),
            endpoints: endpoints_of(config.oauth_generation),
        })
    }

    async fn changed(&self, app_id: AppId) {
        self.inner.evict(&app_id);
        self.inner
            .broadcaster
            .publish(&Invalidation::App {
                app_id: app_id.to_string(),
            })
            .await;
    }
}

impl Inner {
    fn cached(&self, app_id: &AppId) -> Option<Opened> {
        let cache = self
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache
            .get(app_id)
            .filter(|(_, at)| at.elapsed() < CREDENTIALS_TTL)
            .map(|(c, _)| c.clone())
    }

    fn remember(&self, app_id: AppId, creds: &Opened) {
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(app_id, (creds.clone(), Instant::now()));
    }

    fn evict(&self, app_id: &AppId) {
        self.credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(app_id);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Length without exposing the value anywhere else.
trait SecretLen {
    fn expose_secret_len(&self) -> usize;
}

impl SecretLen for SecretString {
    fn expose_secret_len(&self) -> usize {
        use hubkeeper_crypto::ExposeSecret;
        self.expose_secret().trim().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_generations_map_one_to_one() {
        assert_eq!(endpoints_of(OAuthGeneration::V1), OAuthEndpoints::V1Legacy);
        assert_eq!(
            endpoints_of(OAuthGeneration::V2026_03),
            OAuthEndpoints::V2026_03
        );
    }

    #[test]
    fn new_app_debug_never_shows_the_secret() {
        let new = NewApp {
            label: "l".into(),
            description: None,
            environment: Environment::Development,
            client_id: "c".into(),
            client_secret: SecretString::from("super-secret-value"),
            redirect_uri: "https://x/cb".into(),
            scopes: "oauth".into(),
            optional_scopes: String::new(),
            oauth_generation: None,
            signature_versions: None,
            allow_legacy_signatures: false,
            return_urls: Vec::new(),
        };
        assert!(!format!("{new:?}").contains("super-secret-value"));
    }
}
