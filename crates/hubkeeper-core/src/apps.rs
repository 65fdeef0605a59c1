//! App management: registration with a sealed client secret, updates with the domain's warnings,
//! guarded deletion, and the opened credentials the refresher and the install flow need.
//!
//! The client secret is sealed *before* the RegisterApp command exists, so neither the event
//! store nor the relayed stream ever sees it in clear, and no read path returns it: the only way
//! out is [`AppService::credentials`], which hands it straight to the HubSpot client.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubkeeper_crypto::SecretString;
use hubkeeper_domain::app::{
    App, AppCommand, AppConfig, AppError, Environment, OAuthGeneration, RegisterApp,
    SignatureVersion, UpdateApp,
};
use hubkeeper_domain::installation::event_types;
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::AppId;
use hubkeeper_hubspot::{AppCredentials, OAuthEndpoints};
use serde::Serialize;
use sqlx::PgPool;

use crate::broadcast::{Broadcaster, Invalidation, ListenerGuard};
use crate::commands::CommandBus;
use crate::error::CoreError;
use crate::vault::{app_owner, Vault};

/// How long opened credentials are reused without re-reading the app.
const CREDENTIALS_TTL: Duration = Duration::from_secs(60);

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
    pub signature_versions: Option<Vec<SignatureVersion>>,
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
    pub registered_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Where to send a customer to install the app (relative to Hubkeeper's public URL).
    pub install_path: String,
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
            registered_at: config.registered_at,
            updated_at: app.updated_at(),
            deleted_at: app.deleted_at(),
            install_path: format!("/oauth/{app_id}/install"),
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
    credentials: Mutex<HashMap<AppId, (AppCredentials, Instant)>>,
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
        self.get(app_id).await
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
        let app = self.load(app_id).await?;
        let update = UpdateApp {
            label: changes.label,
            description: changes.description,
            environment: changes.environment,
            redirect_uri: changes.redirect_uri,
            scopes: changes.scopes,
            optional_scopes: changes.optional_scopes,
            oauth_generation: changes.oauth_generation,
            signature_versions: changes.signature_versions,
            client_id: changes.client_id,
            client_secret: None,
        };
        let (_, warnings) = app.preview_update(&update).map_err(CoreError::App)?;
        self.inner
            .bus
            .apps()
            .execute(&app_id.to_string(), AppCommand::UpdateApp(update), metadata)
            .await?;
        self.changed(app_id).await;
        Ok((self.get(app_id).await?, warnings))
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
        if let Some(creds) = self.inner.cached(&app_id) {
            return Ok(creds);
        }
        let app = self.load(app_id).await?;
        if app.is_deleted() {
            return Err(CoreError::AppDeleted {
                app_id: app_id.to_string(),
            });
        }
        let creds = self.open(app_id, &app).await?;
        self.inner.remember(app_id, &creds);
        Ok(creds)
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
    fn cached(&self, app_id: &AppId) -> Option<AppCredentials> {
        let cache = self
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache
            .get(app_id)
            .filter(|(_, at)| at.elapsed() < CREDENTIALS_TTL)
            .map(|(c, _)| c.clone())
    }

    fn remember(&self, app_id: AppId, creds: &AppCredentials) {
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
        };
        assert!(!format!("{new:?}").contains("super-secret-value"));
    }
}
