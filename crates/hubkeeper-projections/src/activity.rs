//! The activity log's wording: one human-readable line per event, with a level an operator can
//! filter on (`error` means someone has to act, `warn` means access was lost or is at risk).

use hubkeeper_domain::app::AppEvent;
use hubkeeper_domain::installation::{DisconnectCause, InstallationEvent};
use serde::Serialize;

use crate::event::{DomainEvent, ProjectedEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            other => Err(format!(
                "unknown level `{other}` (expected info, warn or error)"
            )),
        }
    }
}

/// The snake_case name serde gives an enum value (the same text the API shows).
pub(crate) fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".into(),
    }
}

/// What the activity log says about `event`. `hub_id` is the installation's hub when known.
pub fn describe(
    event: &ProjectedEvent,
    decoded: &DomainEvent,
    hub_id: Option<i64>,
) -> (Level, String) {
    let hub = hub_id.map_or_else(String::new, |h| format!(" (hub {h})"));
    match decoded {
        DomainEvent::Installation(e) => describe_installation(e, &hub),
        DomainEvent::App(e) => describe_app(e),
        DomainEvent::Unknown => (
            Level::Info,
            format!(
                "{} on {} {}",
                event.event_type, event.aggregate_type, event.aggregate_id
            ),
        ),
        DomainEvent::Undecodable(_) => (
            Level::Error,
            format!(
                "{} on {} {} could not be read by this version",
                event.event_type, event.aggregate_type, event.aggregate_id
            ),
        ),
    }
}

fn describe_installation(event: &InstallationEvent, hub: &str) -> (Level, String) {
    match event {
        InstallationEvent::Connected(e) => (
            Level::Info,
            format!(
                "Installed in {} (hub {}){}; {} scope(s) granted",
                e.hub_domain,
                e.hub_id,
                e.installer
                    .email
                    .as_deref()
                    .map_or_else(String::new, |m| format!(" by {m}")),
                e.scopes.len()
            ),
        ),
        InstallationEvent::Reconnected(e) => (
            Level::Info,
            format!(
                "Reconnected{hub} after being {}",
                e.previous_status.as_str().replace('_', " ")
            ),
        ),
        InstallationEvent::TokensRefreshed(e) => (
            Level::Info,
            format!(
                "Access token refreshed{hub}; valid until {}",
                e.tokens.access_expires_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        ),
        InstallationEvent::RefreshFailed(e) => (
            Level::Warn,
            format!(
                "Token refresh failed{hub} ({}, {} in a row): {}",
                serde_name(&e.class).replace('_', " "),
                e.consecutive_failures,
                e.message
            ),
        ),
        InstallationEvent::ReauthorizationRequired(e) => (
            Level::Error,
            format!(
                "HubSpot rejected the refresh token{hub} ({}); the user must reconnect: {}",
                serde_name(&e.class).replace('_', " "),
                e.message
            ),
        ),
        InstallationEvent::Revoked(e) => {
            (Level::Warn, format!("Tokens revoked{hub}: {}", e.reason))
        }
        InstallationEvent::Disconnected(e) => match e.cause {
            DisconnectCause::Uninstalled => (
                Level::Warn,
                format!("App uninstalled in HubSpot{hub}; tokens removed"),
            ),
            DisconnectCause::Operator => (
                Level::Warn,
                format!(
                    "Disconnected by an operator{hub}{}",
                    e.reason
                        .as_deref()
                        .map_or_else(String::new, |r| format!(": {r}"))
                ),
            ),
        },
        InstallationEvent::TenantForgotten(e) => (
            Level::Warn,
            format!("Tenant data key destroyed{hub}: {}", e.reason),
        ),
    }
}

fn describe_app(event: &AppEvent) -> (Level, String) {
    match event {
        AppEvent::Registered(e) => (
            Level::Info,
            format!(
                "App \"{}\" registered ({}, {} scope(s))",
                e.label,
                e.environment,
                e.scopes.len()
            ),
        ),
        AppEvent::Updated(e) => {
            let mut changed = Vec::new();
            let fields = [
                ("label", e.label.is_some()),
                ("description", e.description.is_some()),
                ("environment", e.environment.is_some()),
                ("redirect URI", e.redirect_uri.is_some()),
                ("scopes", e.scopes.is_some()),
                ("optional scopes", e.optional_scopes.is_some()),
                ("OAuth endpoints", e.oauth_generation.is_some()),
                ("signature versions", e.signature_versions.is_some()),
            ];
            for (name, set) in fields {
                if set {
                    changed.push(name);
                }
            }
            // Scope and redirect changes affect installs in progress: worth a warning.
            let level = if e.scopes.is_some() || e.redirect_uri.is_some() {
                Level::Warn
            } else {
                Level::Info
            };
            (
                level,
                format!("App settings changed: {}", changed.join(", ")),
            )
        }
        AppEvent::Deleted(e) => (
            Level::Warn,
            if e.forced {
                format!(
                    "App deleted with {} active installation(s) (forced)",
                    e.active_installations
                )
            } else {
                "App deleted".to_owned()
            },
        ),
    }
}
