//! Notification endpoint events: persisted forever, so their JSON shape is a contract. Every
//! one carries the app and the endpoint it concerns.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use hubkeeper_crypto::Sealed;
use serde::{Deserialize, Serialize};

use crate::ids::{AppId, EndpointId};

/// Stable event type names (also the serde tags of [`EndpointEvent`]).
pub mod event_types {
    /// [`super::EndpointEvent::Added`].
    pub const ENDPOINT_ADDED: &str = "NotificationEndpointAdded";
    /// [`super::EndpointEvent::Changed`].
    pub const ENDPOINT_CHANGED: &str = "NotificationEndpointChanged";
    /// [`super::EndpointEvent::SecretRotated`].
    pub const ENDPOINT_SECRET_ROTATED: &str = "NotificationEndpointSecretRotated";
    /// [`super::EndpointEvent::Disabled`].
    pub const ENDPOINT_DISABLED: &str = "NotificationEndpointDisabled";
    /// [`super::EndpointEvent::Removed`].
    pub const ENDPOINT_REMOVED: &str = "NotificationEndpointRemoved";
    /// [`super::EndpointEvent::DeliveryResent`].
    pub const DELIVERY_RESENT: &str = "NotificationDeliveryResent";

    /// Every notification endpoint event type.
    pub const ALL: [&str; 6] = [
        ENDPOINT_ADDED,
        ENDPOINT_CHANGED,
        ENDPOINT_SECRET_ROTATED,
        ENDPOINT_DISABLED,
        ENDPOINT_REMOVED,
        DELIVERY_RESENT,
    ];
}

/// Everything that can happen to an app's notification endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointEvent {
    /// An endpoint was added, with its first signing secret.
    #[serde(rename = "NotificationEndpointAdded")]
    Added(EndpointAdded),
    /// Its URL, event types, description or enabled flag changed.
    #[serde(rename = "NotificationEndpointChanged")]
    Changed(EndpointChanged),
    /// A new signing secret; the previous one still signs until `previous_valid_until`.
    #[serde(rename = "NotificationEndpointSecretRotated")]
    SecretRotated(EndpointSecretRotated),
    /// Deliveries stopped (the receiver answered 410 Gone).
    #[serde(rename = "NotificationEndpointDisabled")]
    Disabled(EndpointDisabled),
    /// The endpoint was removed; nothing is delivered to it any more.
    #[serde(rename = "NotificationEndpointRemoved")]
    Removed(EndpointRemoved),
    /// An operator sent a delivery again.
    #[serde(rename = "NotificationDeliveryResent")]
    DeliveryResent(DeliveryResent),
}

impl DomainEvent for EndpointEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Added(_) => event_types::ENDPOINT_ADDED,
            Self::Changed(_) => event_types::ENDPOINT_CHANGED,
            Self::SecretRotated(_) => event_types::ENDPOINT_SECRET_ROTATED,
            Self::Disabled(_) => event_types::ENDPOINT_DISABLED,
            Self::Removed(_) => event_types::ENDPOINT_REMOVED,
            Self::DeliveryResent(_) => event_types::DELIVERY_RESENT,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Payload of `NotificationEndpointAdded` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointAdded {
    /// The app.
    pub app_id: AppId,
    /// The new endpoint.
    pub endpoint_id: EndpointId,
    /// Where deliveries go.
    pub url: String,
    /// Notification types it receives (their stored names, sorted).
    pub event_types: Vec<String>,
    /// Free text, possibly empty.
    #[serde(default)]
    pub description: String,
    /// The signing secret (`whsec_...`), sealed by the edge.
    pub secret: Sealed,
    /// When it was added.
    pub added_at: DateTime<Utc>,
}

/// Payload of `NotificationEndpointChanged` (1.0): the new value of each field that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointChanged {
    /// The app.
    pub app_id: AppId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// New URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// New notification types (sorted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Enabled again (`true`) or paused (`false`) by an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// When it changed.
    pub changed_at: DateTime<Utc>,
}

/// Payload of `NotificationEndpointSecretRotated` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSecretRotated {
    /// The app.
    pub app_id: AppId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// The new signing secret, sealed by the edge.
    pub secret: Sealed,
    /// Until when deliveries are also signed with the previous secret.
    pub previous_valid_until: DateTime<Utc>,
    /// When it was rotated.
    pub rotated_at: DateTime<Utc>,
}

/// Payload of `NotificationEndpointDisabled` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointDisabled {
    /// The app.
    pub app_id: AppId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// Why (e.g. `the receiver answered 410 Gone`).
    pub reason: String,
    /// When.
    pub disabled_at: DateTime<Utc>,
}

/// Payload of `NotificationEndpointRemoved` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRemoved {
    /// The app.
    pub app_id: AppId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// When.
    pub removed_at: DateTime<Utc>,
}

/// Payload of `NotificationDeliveryResent` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryResent {
    /// The app.
    pub app_id: AppId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// The delivery's `webhook-id` (unchanged: receivers de-duplicate on it).
    pub webhook_id: String,
    /// When.
    pub resent_at: DateTime<Utc>,
}
