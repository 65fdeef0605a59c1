//! The HubSpot webhook log's event: one per accepted, de-duplicated HubSpot webhook event.
//! Persisted forever, so its JSON shape is a contract.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::ids::{AppId, HubId, InstallationId};

/// Stable event type names (also the serde tags of [`WebhookLogEvent`]).
pub mod event_types {
    /// [`super::WebhookLogEvent::Received`].
    pub const HUBSPOT_WEBHOOK_RECEIVED: &str = "HubSpotWebhookReceived";

    /// Every webhook log event type.
    pub const ALL: [&str; 1] = [HUBSPOT_WEBHOOK_RECEIVED];
}

/// The version of `HubSpotWebhookReceived` written today (the webhook workers write these rows
/// with SQL, so they name it).
pub const HUBSPOT_WEBHOOK_RECEIVED_VERSION: &str = "1.0";

/// Everything that can happen to a webhook log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookLogEvent {
    /// HubSpot sent an event (recorded once, however often HubSpot delivered it).
    #[serde(rename = "HubSpotWebhookReceived")]
    Received(HubSpotWebhookReceived),
}

impl DomainEvent for WebhookLogEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Received(_) => event_types::HUBSPOT_WEBHOOK_RECEIVED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        HUBSPOT_WEBHOOK_RECEIVED_VERSION.to_owned()
    }
}

/// Payload of `HubSpotWebhookReceived` (1.0): the fields of HubSpot's event that say what
/// happened, and where Hubkeeper routed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubSpotWebhookReceived {
    /// The event's identity across HubSpot's redeliveries (hex SHA-256, the key of
    /// `webhook_events_seen`).
    pub identity: String,
    /// HubSpot's `eventId` (not unique on its own).
    pub event_id: u64,
    /// HubSpot's `subscriptionType`, e.g. `contact.propertyChange`.
    pub subscription_type: String,
    /// HubSpot's `objectId`, when the event concerns an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<u64>,
    /// HubSpot's `propertyName`, for property changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// HubSpot's `propertyValue` (as text), for property changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    /// HubSpot's `changeSource`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_source: Option<String>,
    /// When it happened in HubSpot (`occurredAt`).
    pub occurred_at: DateTime<Utc>,
    /// The portal (`portalId`).
    pub portal_id: HubId,
    /// The app whose webhook URL received it.
    pub app_id: AppId,
    /// HubSpot's `attemptNumber` of the delivery that was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The installation it was routed to; absent when the portal had none of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<InstallationId>,
}
