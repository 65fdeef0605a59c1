//! The `AppEndpoints` aggregate: where one app wants to hear about what happens to its
//! installations (its notification endpoints), one aggregate per app (its id is the app id), so
//! the notifier finds every endpoint of an app with one load.
//!
//! Rules: an endpoint's URL is https (http only to localhost or a loopback address), without
//! credentials or fragment; it receives a validated list of [`NotificationType`]s (by default
//! every type except the opt-in `installation.refreshed`); its signing secret is sealed by the
//! edge and never leaves this aggregate in clear; a rotation keeps the previous secret signing
//! for an overlap; a 410 from the receiver disables it until an operator enables it again.

mod events;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use hubkeeper_crypto::Sealed;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use events::{
    event_types, DeliveryResent, EndpointAdded, EndpointChanged, EndpointDisabled, EndpointEvent,
    EndpointRemoved, EndpointSecretRotated,
};

use crate::aggregate::aggregate;
use crate::ids::{AppId, EndpointId};
use crate::validate::check_app_url;
use crate::ParseError;

/// Endpoints one app may have.
pub const MAX_ENDPOINTS_PER_APP: usize = 20;
/// Longest accepted endpoint URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Longest accepted description.
pub const MAX_ENDPOINT_DESCRIPTION_CHARS: usize = 500;

/// What an app can be told about. The text form (`installation.connected`, ...) is what
/// endpoints subscribe to and what a delivery's `type` field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotificationType {
    /// A hub installed the app.
    InstallationConnected,
    /// An installation was authorised again (after a revoke, reauthorisation or uninstall).
    InstallationReconnected,
    /// HubSpot refused the refresh token: the tenant must authorise the app again.
    InstallationNeedsReauthorization,
    /// Tokens were refreshed (opt-in: frequent).
    InstallationRefreshed,
    /// An operator revoked the installation's tokens.
    InstallationRevoked,
    /// An operator disconnected the installation.
    InstallationDisconnected,
    /// The app was uninstalled in HubSpot.
    InstallationUninstalled,
    /// The tenant's data was forgotten (crypto-shredded).
    InstallationForgotten,
    /// An operator scheduled a revoke or disconnect for a later time (told before it happens).
    InstallationRemovalScheduled,
    /// An operator cancelled a scheduled revoke or disconnect.
    InstallationRemovalCancelled,
    /// The tenant's subscription started or changed plan.
    SubscriptionChanged,
    /// The tenant reached a usage limit of its plan.
    UsageLimitReached,
    /// The tenant's plan is deprecated (no new subscribers).
    PlanDeprecated,
    /// The tenant's plan will lose features or lower limits at a future date.
    PlanReduced,
    /// HubSpot webhook events of one installation, forwarded.
    HubSpotWebhook,
}

impl NotificationType {
    /// Every type.
    pub const ALL: [NotificationType; 15] = [
        Self::InstallationConnected,
        Self::InstallationReconnected,
        Self::InstallationNeedsReauthorization,
        Self::InstallationRefreshed,
        Self::InstallationRevoked,
        Self::InstallationDisconnected,
        Self::InstallationUninstalled,
        Self::InstallationForgotten,
        Self::InstallationRemovalScheduled,
        Self::InstallationRemovalCancelled,
        Self::SubscriptionChanged,
        Self::UsageLimitReached,
        Self::PlanDeprecated,
        Self::PlanReduced,
        Self::HubSpotWebhook,
    ];

    /// The text form; stored in events, never change an existing one.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InstallationConnected => "installation.connected",
            Self::InstallationReconnected => "installation.reconnected",
            Self::InstallationNeedsReauthorization => "installation.needs_reauthorization",
            Self::InstallationRefreshed => "installation.refreshed",
            Self::InstallationRevoked => "installation.revoked",
            Self::InstallationDisconnected => "installation.disconnected",
            Self::InstallationUninstalled => "installation.uninstalled",
            Self::InstallationForgotten => "installation.forgotten",
            Self::InstallationRemovalScheduled => "installation.removal_scheduled",
            Self::InstallationRemovalCancelled => "installation.removal_cancelled",
            Self::SubscriptionChanged => "subscription.changed",
            Self::UsageLimitReached => "usage.limit_reached",
            Self::PlanDeprecated => "plan.deprecated",
            Self::PlanReduced => "plan.reduced",
            Self::HubSpotWebhook => "hubspot.webhook",
        }
    }

    /// Whether an endpoint created without a list of types receives it (all but the frequent
    /// `installation.refreshed`).
    pub fn is_default(self) -> bool {
        self != Self::InstallationRefreshed
    }

    /// The types an endpoint receives when none are named.
    pub fn defaults() -> BTreeSet<NotificationType> {
        Self::ALL.into_iter().filter(|t| t.is_default()).collect()
    }
}

impl fmt::Display for NotificationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotificationType {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ParseError::new("notification type", s, "not a known type"))
    }
}

/// Commands accepted by [`AppEndpoints`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointCommand {
    /// Add an endpoint.
    Add(AddEndpoint),
    /// Change an endpoint; `None` leaves a field unchanged.
    Change(ChangeEndpoint),
    /// Replace the signing secret, the old one signing too for `overlap`.
    RotateSecret {
        /// The endpoint.
        endpoint_id: EndpointId,
        /// The new secret, sealed by the edge.
        secret: Sealed,
        /// How long the previous secret keeps signing.
        overlap: Duration,
    },
    /// Stop delivering (the receiver answered 410); nothing if already disabled or removed.
    Disable {
        /// The endpoint.
        endpoint_id: EndpointId,
        /// Why.
        reason: String,
    },
    /// Remove the endpoint.
    Remove {
        /// The endpoint.
        endpoint_id: EndpointId,
    },
    /// Record that an operator sent a delivery again.
    Resend {
        /// The endpoint.
        endpoint_id: EndpointId,
        /// The delivery's `webhook-id`.
        webhook_id: String,
    },
}

/// Input of [`EndpointCommand::Add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddEndpoint {
    /// The app (also the aggregate id).
    pub app_id: AppId,
    /// Id of the new endpoint.
    pub endpoint_id: EndpointId,
    /// Delivery URL.
    pub url: String,
    /// Type names; `None`: [`NotificationType::defaults`].
    pub event_types: Option<Vec<String>>,
    /// Free text.
    pub description: Option<String>,
    /// The signing secret, sealed by the edge.
    pub secret: Sealed,
}

/// Input of [`EndpointCommand::Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEndpoint {
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// New URL.
    pub url: Option<String>,
    /// New type names (replaces the list).
    pub event_types: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
    /// Enable or pause.
    pub enabled: Option<bool>,
}

/// Why an endpoint command was refused. Messages are for operators and hold no secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointError {
    /// No such endpoint (or it was removed).
    #[error("no notification endpoint {0}")]
    UnknownEndpoint(String),
    /// The id is taken.
    #[error("notification endpoint {0} already exists")]
    AlreadyExists(EndpointId),
    /// Bad URL.
    #[error("endpoint URL {reason}")]
    InvalidUrl {
        /// What is wrong.
        reason: &'static str,
    },
    /// Unknown type name.
    #[error("unknown notification type {0:?}; known types: {known}", known = known_types())]
    UnknownType(String),
    /// Empty type list.
    #[error("an endpoint must receive at least one notification type")]
    NoTypes,
    /// Description too long.
    #[error("description is longer than {max} characters", max = MAX_ENDPOINT_DESCRIPTION_CHARS)]
    DescriptionTooLong,
    /// Too many endpoints.
    #[error("an app may have at most {max} notification endpoints", max = MAX_ENDPOINTS_PER_APP)]
    TooManyEndpoints,
    /// Empty webhook id on a resend.
    #[error("a delivery id is required")]
    MissingDeliveryId,
}

fn known_types() -> String {
    NotificationType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One endpoint as the aggregate knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its id.
    pub endpoint_id: EndpointId,
    /// Delivery URL.
    pub url: String,
    /// Types it receives (stored names, sorted).
    pub event_types: BTreeSet<String>,
    /// Free text.
    pub description: String,
    /// The current signing secret (sealed).
    pub secret: Sealed,
    /// The previous secret and until when it still signs.
    pub previous_secret: Option<(Sealed, DateTime<Utc>)>,
    /// Whether deliveries go out.
    pub enabled: bool,
    /// Why it was disabled, when the notifier disabled it.
    pub disabled_reason: Option<String>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// Whether it receives `kind`.
    pub fn wants(&self, kind: NotificationType) -> bool {
        self.event_types.contains(kind.as_str())
    }

    /// The secrets that sign a delivery at `now`: the current one, and the previous one while
    /// its overlap lasts.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&Sealed> {
        let mut secrets = vec![&self.secret];
        if let Some((previous, until)) = &self.previous_secret {
            if *until > now {
                secrets.push(previous);
            }
        }
        secrets
    }
}

/// The notification endpoints of one app, rebuilt from their events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppEndpoints {
    app_id: Option<AppId>,
    endpoints: BTreeMap<EndpointId, Endpoint>,
}

impl AppEndpoints {
    /// The app, once an endpoint was ever added.
    pub fn app_id(&self) -> Option<AppId> {
        self.app_id
    }

    /// Current endpoints, oldest first.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// One endpoint.
    pub fn endpoint(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    /// Enabled endpoints that receive `kind`.
    pub fn receivers(&self, kind: NotificationType) -> impl Iterator<Item = &Endpoint> {
        self.endpoints
            .values()
            .filter(move |e| e.enabled && e.wants(kind))
    }

    fn existing(&self, id: &EndpointId) -> Result<(AppId, &Endpoint), EndpointError> {
        match (self.app_id, self.endpoints.get(id)) {
            (Some(app), Some(endpoint)) => Ok((app, endpoint)),
            _ => Err(EndpointError::UnknownEndpoint(id.to_string())),
        }
    }

    fn add(&self, cmd: AddEndpoint, now: DateTime<Utc>) -> Result<EndpointEvent, EndpointError> {
        if self.endpoints.contains_key(&cmd.endpoint_id) {
            return Err(EndpointError::AlreadyExists(cmd.endpoint_id));
        }
        if self.endpoints.len() >= MAX_ENDPOINTS_PER_APP {
            return Err(EndpointError::TooManyEndpoints);
        }
        let event_types = match &cmd.event_types {
            Some(names) => validate_types(names)?,
            None => NotificationType::defaults(),
        };
        Ok(EndpointEvent::Added(EndpointAdded {
            app_id: cmd.app_id,
            endpoint_id: cmd.endpoint_id,
            url: validate_url(&cmd.url)?,
            event_types: event_types.iter().map(|t| t.as_str().to_owned()).collect(),
            description: validate_description(cmd.description.as_deref().unwrap_or_default())?,
            secret: cmd.secret,
            added_at: now,
        }))
    }

    fn change(
        &self,
        cmd: &ChangeEndpoint,
        now: DateTime<Utc>,
    ) -> Result<Option<EndpointEvent>, EndpointError> {
        let id = cmd.endpoint_id;
        let (app_id, current) = self.existing(&id)?;
        let url = cmd.url.as_deref().map(validate_url).transpose()?;
        let event_types = cmd
            .event_types
            .as_deref()
            .map(validate_types)
            .transpose()?
            .map(|types| {
                types
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect::<BTreeSet<_>>()
            });
        let description = cmd
            .description
            .as_deref()
            .map(validate_description)
            .transpose()?;
        let event = EndpointChanged {
            app_id,
            endpoint_id: id,
            url: url.filter(|u| *u != current.url),
            event_types: event_types
                .filter(|t| *t != current.event_types)
                .map(|t| t.into_iter().collect()),
            description: description.filter(|d| *d != current.description),
            enabled: cmd.enabled.filter(|e| *e != current.enabled),
            changed_at: now,
        };
        let unchanged = event.url.is_none()
            && event.event_types.is_none()
            && event.description.is_none()
            && event.enabled.is_none();
        Ok((!unchanged).then_some(EndpointEvent::Changed(event)))
    }

    fn decide(
        &self,
        command: EndpointCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<EndpointEvent>, EndpointError> {
        let event = match command {
            EndpointCommand::Add(cmd) => Some(self.add(cmd, now)?),
            EndpointCommand::Change(cmd) => self.change(&cmd, now)?,
            EndpointCommand::RotateSecret {
                endpoint_id,
                secret,
                overlap,
            } => {
                let (app_id, _) = self.existing(&endpoint_id)?;
                Some(EndpointEvent::SecretRotated(EndpointSecretRotated {
                    app_id,
                    endpoint_id,
                    secret,
                    previous_valid_until: now + overlap.max(Duration::zero()),
                    rotated_at: now,
                }))
            }
            EndpointCommand::Disable {
                endpoint_id,
                reason,
            } => match (self.app_id, self.endpoints.get(&endpoint_id)) {
                (Some(app_id), Some(endpoint)) if endpoint.enabled => {
                    Some(EndpointEvent::Disabled(EndpointDisabled {
                        app_id,
                        endpoint_id,
                        reason: reason.chars().take(500).collect(),
                        disabled_at: now,
                    }))
                }
                _ => None,
            },
            EndpointCommand::Remove { endpoint_id } => {
                let (app_id, _) = self.existing(&endpoint_id)?;
                Some(EndpointEvent::Removed(EndpointRemoved {
                    app_id,
                    endpoint_id,
                    removed_at: now,
                }))
            }
            EndpointCommand::Resend {
                endpoint_id,
                webhook_id,
            } => {
                let (app_id, _) = self.existing(&endpoint_id)?;
                if webhook_id.trim().is_empty() {
                    return Err(EndpointError::MissingDeliveryId);
                }
                Some(EndpointEvent::DeliveryResent(DeliveryResent {
                    app_id,
                    endpoint_id,
                    webhook_id,
                    resent_at: now,
                }))
            }
        };
        Ok(event.into_iter().collect())
    }

    fn evolve(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::Added(e) => {
                self.app_id = Some(e.app_id);
                self.endpoints.insert(
                    e.endpoint_id,
                    Endpoint {
                        endpoint_id: e.endpoint_id,
                        url: e.url,
                        event_types: e.event_types.into_iter().collect(),
                        description: e.description,
                        secret: e.secret,
                        previous_secret: None,
                        enabled: true,
                        disabled_reason: None,
                        created_at: e.added_at,
                        updated_at: e.added_at,
                    },
                );
            }
            EndpointEvent::Changed(e) => {
                if let Some(endpoint) = self.endpoints.get_mut(&e.endpoint_id) {
                    if let Some(url) = e.url {
                        endpoint.url = url;
                    }
                    if let Some(types) = e.event_types {
                        endpoint.event_types = types.into_iter().collect();
                    }
                    if let Some(description) = e.description {
                        endpoint.description = description;
                    }
                    if let Some(enabled) = e.enabled {
                        endpoint.enabled = enabled;
                        if enabled {
                            endpoint.disabled_reason = None;
                        }
                    }
                    endpoint.updated_at = e.changed_at;
                }
            }
            EndpointEvent::SecretRotated(e) => {
                if let Some(endpoint) = self.endpoints.get_mut(&e.endpoint_id) {
                    let previous = std::mem::replace(&mut endpoint.secret, e.secret);
                    endpoint.previous_secret = Some((previous, e.previous_valid_until));
                    endpoint.updated_at = e.rotated_at;
                }
            }
            EndpointEvent::Disabled(e) => {
                if let Some(endpoint) = self.endpoints.get_mut(&e.endpoint_id) {
                    endpoint.enabled = false;
                    endpoint.disabled_reason = Some(e.reason);
                    endpoint.updated_at = e.disabled_at;
                }
            }
            EndpointEvent::Removed(e) => {
                self.endpoints.remove(&e.endpoint_id);
            }
            EndpointEvent::DeliveryResent(_) => {}
        }
    }
}

aggregate!(
    AppEndpoints,
    "notification_endpoints",
    EndpointCommand,
    EndpointEvent,
    EndpointError
);

/// A delivery URL: at most 2,048 characters, and the rule of every app URL ([`check_app_url`]).
pub fn validate_url(raw: &str) -> Result<String, EndpointError> {
    let invalid = |reason| EndpointError::InvalidUrl { reason };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(invalid("is longer than 2048 characters"));
    }
    check_app_url(raw).map(|_| raw.to_owned()).map_err(invalid)
}

/// A list of type names: each known, at least one, duplicates folded.
pub fn validate_types(names: &[String]) -> Result<BTreeSet<NotificationType>, EndpointError> {
    let types = names
        .iter()
        .map(|name| {
            name.trim()
                .parse::<NotificationType>()
                .map_err(|_| EndpointError::UnknownType(name.chars().take(64).collect()))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if types.is_empty() {
        return Err(EndpointError::NoTypes);
    }
    Ok(types)
}

fn validate_description(raw: &str) -> Result<String, EndpointError> {
    let trimmed = raw.trim();
    if trimmed.chars().count() > MAX_ENDPOINT_DESCRIPTION_CHARS {
        return Err(EndpointError::DescriptionTooLong);
    }
    Ok(trimmed.to_owned())
}
