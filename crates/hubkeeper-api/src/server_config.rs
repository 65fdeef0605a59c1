//! `GET /v1/server/config`: the effective, non-secret configuration of the process answering,
//! so an operator can check what a deployment is really running with (the Settings page) without
//! shell access. The binary builds the view from its command-line definition, so every setting
//! added later appears here without touching this module; settings marked secret are reported
//! only as set or unset.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/server/config", get(show))
}

/// One configuration setting as the process resolved it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigEntry {
    /// The command-line flag without dashes, e.g. `bind`.
    pub name: String,
    /// The environment variable, e.g. `HK_BIND`.
    pub env: Option<String>,
    /// The value in effect; `None` when unset or secret.
    pub value: Option<String>,
    /// `default`, `environment`, `command line` or `unset`.
    pub source: String,
    /// Secret settings (URLs with credentials, keys) never show their value.
    pub secret: bool,
    pub help: Option<String>,
}

/// What `GET /v1/server/config` answers.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfigView {
    pub version: String,
    /// Roles this process runs, e.g. `api+relay+scheduler`.
    pub roles: String,
    pub started_at: DateTime<Utc>,
    pub settings: Vec<ConfigEntry>,
}

impl ServerConfigView {
    /// A view with no settings (processes that do not describe their configuration).
    pub fn minimal(roles: &str) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            roles: roles.to_string(),
            started_at: Utc::now(),
            settings: Vec::new(),
        }
    }
}

async fn show(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<ServerConfigView>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(state.server_config().clone()))
}
