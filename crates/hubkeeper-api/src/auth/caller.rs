//! The authenticated caller of a request, and the extractors handlers take it with.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use hubkeeper_core::access::{Permission, Role, VerifiedKey};
use hubkeeper_domain::metadata::Actor;

use crate::error::ApiError;
use crate::state::AppState;

/// The key behind a request (directly, or through the session it opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: String,
    pub key_name: String,
    pub role: Role,
}

impl From<VerifiedKey> for Caller {
    fn from(key: VerifiedKey) -> Self {
        Self {
            key_id: key.id,
            key_name: key.name,
            role: key.role,
        }
    }
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
