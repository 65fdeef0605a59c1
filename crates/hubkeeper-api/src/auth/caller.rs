//! The authenticated caller of a request, and the extractors handlers take it with.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use hubkeeper_core::access::{Permission, Role, VerifiedKey};
use hubkeeper_domain::metadata::Actor;
use hubkeeper_domain::{AppId, InstallationId};

use crate::error::ApiError;
use crate::state::AppState;

/// The key behind a request (directly, or through the session it opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub key_name: String,
    pub role: Role,
    /// The apps a service key is bound to; empty for every other role (and for an unbound
    /// service key, which therefore acts on no app).
    pub apps: Vec<AppId>,
}

impl From<VerifiedKey> for Caller {
    fn from(key: VerifiedKey) -> Self {
        Self {
            key_id: key.id,
            key_name: key.name,
            role: key.role,
            apps: key.apps,
        }
    }
}

/// What a caller wants to do with an app's installations or connect sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAccess {
    /// Act on them (quota, usage, plan, connect sessions): every role the route's permission
    /// admits, except that a service key only for the apps it is bound to.
    Act,
    /// Receive their access tokens: only a service key bound to the app. Admin keys and
    /// dashboard sessions receive no tokens.
    ReceiveTokens,
}

impl Caller {
    /// 403 unless the caller's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not do this (it needs the {} permission)",
                self.role.as_str(),
                permission.as_str()
            )))
        }
    }

    /// 403 unless the caller may act on `app`'s installations and connect sessions. **The**
    /// check of a key's binding to apps: every route that touches one app or installation goes
    /// through here (directly or through [`Caller::require_installation`]).
    pub fn require_app(&self, app: AppId) -> Result<(), ApiError> {
        self.require_app_access(app, AppAccess::Act)
    }

    /// 403 unless the caller may do `access` on `app` (see [`AppAccess`]).
    pub fn require_app_access(&self, app: AppId, access: AppAccess) -> Result<(), ApiError> {
        if self.role != Role::Service {
            return match access {
                AppAccess::Act => Ok(()),
                AppAccess::ReceiveTokens => Err(self.not_a_token_recipient(Some(app))),
            };
        }
        if self.apps.contains(&app) {
            return Ok(());
        }
        let message = if self.apps.is_empty() {
            format!(
                "this service key is bound to no app, so it acts on none (here app {app}): \
                 create a key with `--app {app}`"
            )
        } else {
            let bound: Vec<String> = self.apps.iter().map(ToString::to_string).collect();
            format!(
                "this service key is bound to app(s) {}; app {app} is not one of them",
                bound.join(", ")
            )
        };
        Err(ApiError::forbidden(message).with_reason("app_not_bound"))
    }

    /// [`Caller::require_app_access`] for the app of installation `id`. Callers that are not
    /// service keys are checked without a lookup when they only `Act`; an installation that
    /// never connected is a 404 for those that need one.
    pub async fn require_installation(
        &self,
        state: &AppState,
        id: &InstallationId,
        access: AppAccess,
    ) -> Result<(), ApiError> {
        if self.role != Role::Service {
            return match access {
                AppAccess::Act => Ok(()),
                AppAccess::ReceiveTokens => Err(self.not_a_token_recipient(None)),
            };
        }
        let app = state
            .auth()
            .installation_app(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("installation {id} not found")))?;
        self.require_app_access(app, access)
    }

    /// Why a caller that is not a service key receives no token.
    fn not_a_token_recipient(&self, app: Option<AppId>) -> ApiError {
        let app = app.map_or_else(|| "<app id>".to_owned(), |a| a.to_string());
        ApiError::forbidden(format!(
            "tokens are handed out only to service keys bound to the installation's app; a {} \
             key or a dashboard session receives none: create one with \
             `hubkeeper admin create-key --role service --app {app}`",
            self.role.as_str()
        ))
        .with_reason("service_key_required")
    }

    /// The actor recorded in event metadata for commands this caller issues.
    pub fn actor(&self) -> Actor {
        Actor::AdminKey(self.key_id.clone())
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// `Authorization: Bearer <api key>`.
    ApiKey,
    /// The session cookie; `csrf_token` is what state-changing requests must echo.
    Session {
        expires_at: DateTime<Utc>,
        csrf_token: String,
    },
}

/// A verified caller together with how it authenticated (what `/auth/me` reports).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    pub method: AuthMethod,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The policy layer has usually authenticated the request already.
        if let Some(done) = parts.extensions.get::<Authenticated>() {
            return Ok(done.clone());
        }
        let done = super::authenticate(state.auth(), &parts.method, &parts.headers).await?;
        parts.extensions.insert(done.clone());
        Ok(done)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Authenticated::from_request_parts(parts, state)
            .await?
            .caller)
    }
}
