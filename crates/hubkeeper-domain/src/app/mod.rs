//! The `App` aggregate: one HubSpot OAuth app configuration (client id, sealed secret,
//! redirect URI, scopes, environment).
//!
//! Rules come from the dashboard's App Management page: label, description and environment
//! change freely; scopes and redirect URI may change but deserve warnings
//! ([`change_warnings`]); client id and secret never change (a different HubSpot app is a new
//! app entry); deletion is refused while installations are active unless forced, and a
//! deleted app accepts nothing further.

mod config;
mod events;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use hubkeeper_crypto::Sealed;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use config::{
    change_warnings, legacy_signature_warning, match_return_url, parse_return_url,
    validate_return_urls, AppConfig, Environment, OAuthGeneration, ReturnUrlError,
    SignatureVersion, MAX_DESCRIPTION_CHARS, MAX_LABEL_CHARS, MAX_RETURN_URLS,
    MAX_RETURN_URL_CHARS,
};
pub use events::{
    event_types, AppClientSecretRotated, AppCredentialsRejected, AppDeleted, AppEvent,
    AppRefreshesResumed, AppRegistered, AppUpdated, StoredEnvironment, StoredOAuthGeneration,
    StoredSignatureVersion, APP_REGISTERED_VERSION,
};

use crate::aggregate::aggregate;
use crate::ids::AppId;
use crate::stored::convert_all;
use crate::validate::shorten;
use config::{
    check_legacy_opt_in, check_scope_overlap, validate_client_id, validate_description,
    validate_label, validate_optional_scopes, validate_redirect_uri, validate_scopes,
    validate_signature_versions,
};

/// Commands accepted by [`App`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCommand {
    /// Add a new app.
    RegisterApp(RegisterApp),
    /// Change settings of an existing app.
    UpdateApp(UpdateApp),
    /// Delete the app.
    DeleteApp {
        /// Delete even though installations are active.
        force: bool,
        /// Active installations of this app, counted by the caller from the read model (the
        /// aggregate cannot see other aggregates).
        active_installations: u32,
    },
    /// Replace the client secret; the previous one stays valid for webhook signatures during
    /// `overlap_secs`. Resumes parked refreshes.
    RotateClientSecret {
        /// The new secret, sealed by the edge with `Aad::client_secret(app_id)`.
        client_secret: Sealed,
        /// Seconds during which the previous secret is still accepted (at most
        /// [`MAX_ROTATION_OVERLAP_SECS`]).
        overlap_secs: u64,
    },
    /// HubSpot refused the app's client credentials: park the app's refreshes. Recorded once;
    /// further refusals while parked record nothing.
    RecordCredentialsRejected {
        /// HubSpot's error code.
        error: String,
        /// Diagnostic text (no secrets).
        message: String,
    },
    /// An operator resumes parked refreshes (e.g. after fixing the secret in HubSpot).
    ResumeRefreshes,
}

/// Longest overlap a rotation accepts: the previous secret must not stay valid for ever.
pub const MAX_ROTATION_OVERLAP_SECS: u64 = 30 * 24 * 3600;

/// Longest diagnostic text kept with a credentials rejection.
pub const MAX_REJECTION_MESSAGE_CHARS: usize = 500;

/// Registration input, as typed in the dashboard (strings are validated by the aggregate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterApp {
    /// Id for the new app (use [`AppId::new`]); also the aggregate id.
    pub app_id: AppId,
    /// Internal name.
    pub label: String,
    /// Free text; `None` means empty.
    pub description: Option<String>,
    /// Deployment tag.
    pub environment: Environment,
    /// HubSpot client id, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub client_id: String,
    /// The client secret, sealed by the edge with `Aad::client_secret(app_id)`.
    pub client_secret: Sealed,
    /// Redirect URI exactly as configured in HubSpot.
    pub redirect_uri: String,
    /// Required scopes, space-separated.
    pub scopes: String,
    /// Optional scopes, space-separated (may be empty).
    pub optional_scopes: String,
    /// `None` means [`OAuthGeneration::default`] (2026-03).
    pub oauth_generation: Option<OAuthGeneration>,
    /// `None` means v3 only ([`SignatureVersion::DEFAULT_FOR_NEW_APPS`]).
    pub signature_versions: Option<Vec<SignatureVersion>>,
    /// The caller asked on purpose for v1/v2 (unsigned timestamps, replayable): without it a
    /// list naming them is refused.
    pub allow_legacy_signatures: bool,
    /// Allowed return URLs of connect sessions (may be empty).
    pub return_urls: Vec<String>,
}

/// Partial update: `None` leaves a field unchanged.
///
/// `client_id` and `client_secret` exist so a form that posts them gets a clear refusal
/// instead of a silent no-op; a client id equal to the current one is accepted (forms resend
/// all fields), any client secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateApp {
    /// New label.
    pub label: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New environment tag.
    pub environment: Option<Environment>,
    /// New redirect URI.
    pub redirect_uri: Option<String>,
    /// New required scopes, space-separated (replaces the list).
    pub scopes: Option<String>,
    /// New optional scopes, space-separated (replaces the list).
    pub optional_scopes: Option<String>,
    /// New OAuth endpoint generation.
    pub oauth_generation: Option<OAuthGeneration>,
    /// New accepted signature versions (replaces the list).
    pub signature_versions: Option<Vec<SignatureVersion>>,
    /// The caller asked on purpose to start accepting v1/v2: without it a new list adding them
    /// is refused (versions the app already accepts stay accepted).
    pub allow_legacy_signatures: bool,
    /// New allowed return URLs of connect sessions (replaces the list; empty clears it).
    pub return_urls: Option<Vec<String>>,
    /// Refused unless equal to the current client id.
    pub client_id: Option<String>,
    /// Always refused.
    pub client_secret: Option<Sealed>,
}

/// Why an app command was refused. Messages are meant for operators and contain no secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppError {
    /// Register on an existing app.
    #[error("app {0} is already registered")]
    AlreadyRegistered(AppId),
    /// Update/delete before registration.
    #[error("app is not registered")]
    NotRegistered,
    /// Any command after deletion.
    #[error("app has been deleted and accepts no further changes; register a new app instead")]
    Deleted,
    /// Bad label.
    #[error("label {reason} (at most {max} characters, one line)", max = MAX_LABEL_CHARS)]
    InvalidLabel {
        /// What is wrong.
        reason: &'static str,
    },
    /// Description too long.
    #[error("description is longer than {max} characters")]
    DescriptionTooLong {
        /// The limit.
        max: usize,
    },
    /// Client id not in HubSpot's format.
    #[error("client id must have the format xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hexadecimal)")]
    InvalidClientId,
    /// Bad redirect URI.
    #[error("redirect URI {reason}")]
    InvalidRedirectUri {
        /// What is wrong.
        reason: &'static str,
    },
    /// Bad scope in a list.
    #[error("invalid entry {scope:?} in {list}: {hint}")]
    InvalidScope {
        /// `"scopes"` or `"optional scopes"`.
        list: &'static str,
        /// The offending entry (shortened).
        scope: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// No required scopes.
    #[error("at least one required scope is needed")]
    NoScopes,
    /// Same scope in both lists.
    #[error("scope {scope:?} is listed as both required and optional")]
    ScopeRequiredAndOptional {
        /// The scope.
        scope: String,
    },
    /// Bad return URL list.
    #[error("{reason}")]
    InvalidReturnUrl {
        /// What is wrong, naming the entry.
        reason: String,
    },
    /// Empty signature version list.
    #[error("at least one webhook signature version must be accepted")]
    NoSignatureVersions,
    /// v1/v2 asked for without the explicit opt-in.
    #[error(
        "signature_versions {versions} carry no timestamp, so a captured request can be replayed \
         forever; accept them only on purpose with \"allow_legacy_signatures\": true (new apps \
         accept v3 only)"
    )]
    LegacySignaturesNotAllowed {
        /// The legacy versions asked for, e.g. `v1, v2`.
        versions: String,
    },
    /// Attempt to change the client id.
    #[error(
        "the client id cannot be changed: it identifies the HubSpot app; create a new app \
         entry for a different HubSpot app"
    )]
    ClientIdImmutable,
    /// Attempt to change the client secret.
    #[error(
        "the client secret cannot be changed by an update: rotate it in HubSpot, then with \
         POST /v1/apps/{{id}}/rotate-secret"
    )]
    ClientSecretImmutable,
    /// Rotation overlap beyond [`MAX_ROTATION_OVERLAP_SECS`].
    #[error("overlap_secs must be at most {max} (30 days)")]
    OverlapTooLong {
        /// The limit.
        max: u64,
    },
    /// Resume while nothing is parked.
    #[error("the app's refreshes are not parked; there is nothing to resume")]
    RefreshesNotParked,
    /// Delete refused.
    #[error(
        "app has {count} active installation(s) that would lose access and stop refreshing; \
         disconnect them first or delete with force"
    )]
    HasActiveInstallations {
        /// Active installations reported by the caller.
        count: u32,
    },
}

/// The secret a rotation replaced, still valid for webhook signatures until `valid_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    /// The replaced secret, sealed.
    pub secret: Sealed,
    /// End of the overlap.
    pub valid_until: DateTime<Utc>,
}

/// Why the app's refreshes are parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsRejection {
    /// HubSpot's error code.
    pub error: String,
    /// Diagnostic text.
    pub message: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// State of one app, rebuilt from its events. New fields default so snapshots written before
/// them still load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    app_id: Option<AppId>,
    config: Option<AppConfig>,
    updated_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    previous_secret: Option<PreviousSecret>,
    #[serde(default)]
    secret_rotated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    parked: Option<CredentialsRejection>,
}

impl App {
    /// The app's id, once registered.
    pub fn app_id(&self) -> Option<AppId> {
        self.app_id
    }

    /// Current configuration, once registered (still available after deletion, for audit).
    pub fn config(&self) -> Option<&AppConfig> {
        self.config.as_ref()
    }

    /// When the configuration last changed.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }

    /// When the app was deleted, if it was.
    pub fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }

    /// Whether the app was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// The secrets a webhook signature may be made with at `at`: the current one first, then
    /// the one a rotation replaced while its overlap lasts. Empty before registration.
    pub fn secrets_valid_at(&self, at: DateTime<Utc>) -> Vec<&Sealed> {
        let Some(config) = &self.config else {
            return Vec::new();
        };
        let mut secrets = vec![&config.client_secret];
        if let Some(previous) = &self.previous_secret {
            if at < previous.valid_until {
                secrets.push(&previous.secret);
            }
        }
        secrets
    }

    /// The secret the last rotation replaced and the end of its overlap (also once over).
    pub fn previous_secret(&self) -> Option<&PreviousSecret> {
        self.previous_secret.as_ref()
    }

    /// When the client secret was last rotated.
    pub fn secret_rotated_at(&self) -> Option<DateTime<Utc>> {
        self.secret_rotated_at
    }

    /// Why the app's refreshes are parked, while they are.
    pub fn refreshes_parked(&self) -> Option<&CredentialsRejection> {
        self.parked.as_ref()
    }

    /// The configuration `update` would produce and the warnings to show for it, without
    /// changing anything. Fails exactly when the `UpdateApp` command would.
    pub fn preview_update(&self, update: &UpdateApp) -> Result<(AppConfig, Vec<String>), AppError> {
        let (_, current) = self.live()?;
        let next = current.updated(update)?;
        let warnings = change_warnings(current, &next);
        Ok((next, warnings))
    }

    fn live(&self) -> Result<(AppId, &AppConfig), AppError> {
        if self.is_deleted() {
            return Err(AppError::Deleted);
        }
        match (self.app_id, &self.config) {
            (Some(id), Some(config)) => Ok((id, config)),
            _ => Err(AppError::NotRegistered),
        }
    }

    fn register(&self, cmd: RegisterApp, now: DateTime<Utc>) -> Result<AppEvent, AppError> {
        if self.is_deleted() {
            return Err(AppError::Deleted);
        }
        if let Some(existing) = self.app_id {
            return Err(AppError::AlreadyRegistered(existing));
        }
        let scopes = validate_scopes(&cmd.scopes)?;
        let optional_scopes = validate_optional_scopes(&cmd.optional_scopes)?;
        check_scope_overlap(&scopes, &optional_scopes)?;
        let signature_versions = match &cmd.signature_versions {
            Some(versions) => validate_signature_versions(versions)?,
            None => SignatureVersion::DEFAULT_FOR_NEW_APPS.into_iter().collect(),
        };
        check_legacy_opt_in(
            &std::collections::BTreeSet::new(),
            &signature_versions,
            cmd.allow_legacy_signatures,
        )?;
        Ok(AppEvent::Registered(AppRegistered {
            app_id: cmd.app_id,
            label: validate_label(&cmd.label)?,
            description: validate_description(cmd.description.as_deref().unwrap_or_default())?,
            environment: cmd.environment.into(),
            client_id: validate_client_id(&cmd.client_id)?,
            client_secret: cmd.client_secret,
            redirect_uri: validate_redirect_uri(&cmd.redirect_uri)?,
            scopes: scopes.into_iter().collect(),
            optional_scopes: optional_scopes.into_iter().collect(),
            oauth_generation: cmd.oauth_generation.unwrap_or_default().into(),
            signature_versions: convert_all(signature_versions),
            return_urls: validate_return_urls(&cmd.return_urls)?,
            registered_at: now,
        }))
    }

    /// `None` when nothing would change: a resubmitted form records no event.
    fn update(&self, cmd: &UpdateApp, now: DateTime<Utc>) -> Result<Option<AppEvent>, AppError> {
        let (app_id, current) = self.live()?;
        let next = current.updated(cmd)?;
        if &next == current {
            return Ok(None);
        }
        fn changed<T: PartialEq + Clone, S: From<T>>(old: &T, new: &T) -> Option<S> {
            (old != new).then(|| new.clone().into())
        }
        fn changed_list<T: PartialEq + Clone + Ord, S: From<T>>(
            old: &std::collections::BTreeSet<T>,
            new: &std::collections::BTreeSet<T>,
        ) -> Option<Vec<S>> {
            (old != new).then(|| convert_all(new.iter().cloned()))
        }
        Ok(Some(AppEvent::Updated(AppUpdated {
            app_id,
            label: changed(&current.label, &next.label),
            description: changed(&current.description, &next.description),
            environment: changed(&current.environment, &next.environment),
            redirect_uri: changed(&current.redirect_uri, &next.redirect_uri),
            scopes: changed_list(&current.scopes, &next.scopes),
            optional_scopes: changed_list(&current.optional_scopes, &next.optional_scopes),
            oauth_generation: changed(&current.oauth_generation, &next.oauth_generation),
            signature_versions: changed_list(&current.signature_versions, &next.signature_versions),
            return_urls: changed(&current.return_urls, &next.return_urls),
            updated_at: now,
        })))
    }

    fn delete(
        &self,
        force: bool,
        active_installations: u32,
        now: DateTime<Utc>,
    ) -> Result<AppEvent, AppError> {
        let (app_id, _) = self.live()?;
        if active_installations > 0 && !force {
            return Err(AppError::HasActiveInstallations {
                count: active_installations,
            });
        }
        Ok(AppEvent::Deleted(AppDeleted {
            app_id,
            forced: force && active_installations > 0,
            active_installations,
            deleted_at: now,
        }))
    }

    fn rotate_secret(
        &self,
        client_secret: Sealed,
        overlap_secs: u64,
        now: DateTime<Utc>,
    ) -> Result<AppEvent, AppError> {
        let (app_id, _) = self.live()?;
        if overlap_secs > MAX_ROTATION_OVERLAP_SECS {
            return Err(AppError::OverlapTooLong {
                max: MAX_ROTATION_OVERLAP_SECS,
            });
        }
        let overlap = i64::try_from(overlap_secs).unwrap_or(i64::MAX);
        Ok(AppEvent::ClientSecretRotated(AppClientSecretRotated {
            app_id,
            client_secret,
            previous_valid_until: now + chrono::Duration::seconds(overlap),
            rotated_at: now,
        }))
    }

    fn credentials_rejected(
        &self,
        error: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<AppEvent>, AppError> {
        let (app_id, _) = self.live()?;
        if self.parked.is_some() {
            return Ok(None);
        }
        Ok(Some(AppEvent::CredentialsRejected(
            AppCredentialsRejected {
                app_id,
                error: shorten(error.trim(), 64),
                message: shorten(message.trim(), MAX_REJECTION_MESSAGE_CHARS),
                rejected_at: now,
            },
        )))
    }

    fn resume(&self, now: DateTime<Utc>) -> Result<AppEvent, AppError> {
        let (app_id, _) = self.live()?;
        if self.parked.is_none() {
            return Err(AppError::RefreshesNotParked);
        }
        Ok(AppEvent::RefreshesResumed(AppRefreshesResumed {
            app_id,
            resumed_at: now,
        }))
    }
}

aggregate!(App, "app", AppCommand, AppEvent, AppError);

impl App {
    /// The events `command` leads to at `now`, from the state before it; none when it
    /// changes nothing.
    fn decide(&self, command: AppCommand, now: DateTime<Utc>) -> Result<Vec<AppEvent>, AppError> {
        let event = match command {
            AppCommand::RegisterApp(cmd) => Some(self.register(cmd, now)?),
            AppCommand::UpdateApp(cmd) => self.update(&cmd, now)?,
            AppCommand::DeleteApp {
                force,
                active_installations,
            } => Some(self.delete(force, active_installations, now)?),
            AppCommand::RotateClientSecret {
                client_secret,
                overlap_secs,
            } => Some(self.rotate_secret(client_secret, overlap_secs, now)?),
            AppCommand::RecordCredentialsRejected { error, message } => {
                self.credentials_rejected(&error, &message, now)?
            }
            AppCommand::ResumeRefreshes => Some(self.resume(now)?),
        };
        Ok(event.into_iter().collect())
    }

    fn evolve(&mut self, event: AppEvent) {
        match event {
            AppEvent::Registered(e) => {
                self.app_id = Some(e.app_id);
                self.config = Some(AppConfig {
                    label: e.label,
                    description: e.description,
                    environment: e.environment.into(),
                    client_id: e.client_id,
                    client_secret: e.client_secret,
                    redirect_uri: e.redirect_uri,
                    scopes: e.scopes.into_iter().collect(),
                    optional_scopes: e.optional_scopes.into_iter().collect(),
                    oauth_generation: e.oauth_generation.into(),
                    signature_versions: convert_all(e.signature_versions),
                    return_urls: e.return_urls,
                    registered_at: e.registered_at,
                });
            }
            AppEvent::Updated(e) => {
                self.updated_at = Some(e.updated_at);
                let Some(config) = self.config.as_mut() else {
                    // An update without registration cannot be produced by `handle`; ignoring
                    // it keeps replay total instead of panicking on a corrupt stream.
                    return;
                };
                if let Some(label) = e.label {
                    config.label = label;
                }
                if let Some(description) = e.description {
                    config.description = description;
                }
                if let Some(environment) = e.environment {
                    config.environment = environment.into();
                }
                if let Some(uri) = e.redirect_uri {
                    config.redirect_uri = uri;
                }
                if let Some(scopes) = e.scopes {
                    config.scopes = scopes.into_iter().collect();
                }
                if let Some(optional) = e.optional_scopes {
                    config.optional_scopes = optional.into_iter().collect();
                }
                if let Some(generation) = e.oauth_generation {
                    config.oauth_generation = generation.into();
                }
                if let Some(versions) = e.signature_versions {
                    config.signature_versions = convert_all(versions);
                }
                if let Some(urls) = e.return_urls {
                    config.return_urls = urls;
                }
            }
            AppEvent::Deleted(e) => {
                self.deleted_at = Some(e.deleted_at);
            }
            AppEvent::ClientSecretRotated(e) => {
                let Some(config) = self.config.as_mut() else {
                    return;
                };
                let previous = std::mem::replace(&mut config.client_secret, e.client_secret);
                self.previous_secret = Some(PreviousSecret {
                    secret: previous,
                    valid_until: e.previous_valid_until,
                });
                self.secret_rotated_at = Some(e.rotated_at);
                // A new secret is what a credentials rejection asks for.
                self.parked = None;
            }
            AppEvent::CredentialsRejected(e) => {
                self.parked = Some(CredentialsRejection {
                    error: e.error,
                    message: e.message,
                    at: e.rejected_at,
                });
            }
            AppEvent::RefreshesResumed(_) => {
                self.parked = None;
            }
        }
    }
}
