//! Events as projections see them: the stored envelope plus the payload decoded into the domain's
//! types, after upcasting.
//!
//! Live projection (from JetStream) and replay (from the events table) both build a
//! [`ProjectedEvent`] and hand it to the same apply functions, so they cannot disagree on how an
//! event is read.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use hubkeeper_bus::RelayedEvent;
use hubkeeper_domain::access::{ApiKey, ApiKeyEvent};
use hubkeeper_domain::app::{App, AppEvent};
use hubkeeper_domain::installation::{Installation, InstallationEvent};
use hubkeeper_domain::metadata;
use hubkeeper_domain::notification::{AppEndpoints, EndpointEvent};
use hubkeeper_domain::operations::{Operation, OperationEvent};
use hubkeeper_domain::plan::{Plan, PlanEvent};
use hubkeeper_domain::settings::{Settings, SettingsEvent};
use hubkeeper_domain::subscription::{Subscription, SubscriptionEvent};
use hubkeeper_domain::webhook_log::{HubSpotWebhookLog, WebhookLogEvent};
use hubkeeper_store::StoredEvent;
use serde_json::Value;

/// One event of the store with its position, whatever it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedEvent {
    pub global_position: i64,
    pub tx_id: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// Version after upcasting (equals the stored one when no upcaster applied).
    pub event_version: String,
    /// Version as stored.
    pub stored_version: String,
    /// Payload after upcasting.
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// The payload in the domain's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    App(AppEvent),
    Installation(InstallationEvent),
    /// Pricing: no read model here (billing keeps its own), but an activity line.
    Plan(PlanEvent),
    /// Subscriptions and usage limits: likewise.
    Subscription(SubscriptionEvent),
    /// Runtime settings: an activity line.
    Settings(SettingsEvent),
    /// An app's notification endpoints: an activity line.
    Endpoint(EndpointEvent),
    /// An API key created, used to log in, logged out, revoked: an activity line.
    ApiKey(ApiKeyEvent),
    /// An operator action on nothing else (failed log-in, reload, backup, ...): an activity line.
    Operation(OperationEvent),
    /// A HubSpot webhook event: counted by the installations projection, no activity line.
    WebhookLog(WebhookLogEvent),
    /// An aggregate type or event type this version does not know (e.g. written by a newer
    /// release during a rolling deploy, or by a module without a projection here).
    Unknown,
    /// A known event type whose payload does not decode: a bug or a corrupt row. Projected as
    /// unknown (skipped), counted and logged loudly.
    Undecodable(String),
}

impl ProjectedEvent {
    pub fn from_stored(e: StoredEvent) -> Self {
        upcast(Self {
            global_position: e.global_position,
            tx_id: e.tx_id,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            stored_version: e.event_version.clone(),
            event_version: e.event_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        })
    }

    /// From the relay's envelope; `None` when its transaction id is not a number (a corrupt
    /// message).
    pub fn from_relayed(e: RelayedEvent) -> Option<Self> {
        let tx_id = e.tx_id.parse().ok()?;
        Some(upcast(Self {
            global_position: e.global_position,
            tx_id,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            stored_version: e.event_version.clone(),
            event_version: e.event_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }))
    }

    /// The payload decoded with the domain's types (straight from the JSON tree: a clone of
    /// the payload per event was a visible share of a replay's time).
    pub fn decode(&self) -> DomainEvent {
        use cqrs_es::Aggregate;
        use serde::Deserialize;
        let kind = self.aggregate_type.as_str();
        if kind == App::TYPE {
            if !is_known_app_event(&self.event_type) {
                return DomainEvent::Unknown;
            }
            match AppEvent::deserialize(&self.payload) {
                Ok(event) => DomainEvent::App(event),
                Err(e) => DomainEvent::Undecodable(e.to_string()),
            }
        } else if kind == Installation::TYPE {
            if !is_known_installation_event(&self.event_type) {
                return DomainEvent::Unknown;
            }
            match InstallationEvent::deserialize(&self.payload) {
                Ok(event) => DomainEvent::Installation(event),
                Err(e) => DomainEvent::Undecodable(e.to_string()),
            }
        } else if kind == Plan::TYPE {
            if !hubkeeper_domain::plan::event_types::ALL.contains(&self.event_type.as_str()) {
                return DomainEvent::Unknown;
            }
            match PlanEvent::deserialize(&self.payload) {
                Ok(event) => DomainEvent::Plan(event),
                Err(e) => DomainEvent::Undecodable(e.to_string()),
            }
        } else if kind == Subscription::TYPE {
            self.decode_as(
                &hubkeeper_domain::subscription::event_types::ALL,
                DomainEvent::Subscription,
            )
        } else if kind == Settings::TYPE {
            self.decode_as(
                &hubkeeper_domain::settings::event_types::ALL,
                DomainEvent::Settings,
            )
        } else if kind == AppEndpoints::TYPE {
            self.decode_as(
                &hubkeeper_domain::notification::event_types::ALL,
                DomainEvent::Endpoint,
            )
        } else if kind == ApiKey::TYPE {
            self.decode_as(
                &hubkeeper_domain::access::event_types::ALL,
                DomainEvent::ApiKey,
            )
        } else if kind == Operation::TYPE {
            self.decode_as(
                &hubkeeper_domain::operations::event_types::ALL,
                DomainEvent::Operation,
            )
        } else if kind == HubSpotWebhookLog::TYPE {
            self.decode_as(
                &hubkeeper_domain::webhook_log::event_types::ALL,
                DomainEvent::WebhookLog,
            )
        } else {
            DomainEvent::Unknown
        }
    }

    /// The payload as `E` when the event type is one of `known`.
    fn decode_as<E: serde::de::DeserializeOwned>(
        &self,
        known: &[&str],
        wrap: fn(E) -> DomainEvent,
    ) -> DomainEvent {
        if !known.contains(&self.event_type.as_str()) {
            return DomainEvent::Unknown;
        }
        match E::deserialize(&self.payload) {
            Ok(event) => wrap(event),
            Err(e) => DomainEvent::Undecodable(e.to_string()),
        }
    }

    /// A string field of the metadata (e.g. [`metadata::ACTOR`]).
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// Who caused the event, as stored (`key:<id>`, `system:refresher`, `hubspot`, ...).
    pub fn actor(&self) -> &str {
        self.meta(metadata::ACTOR).unwrap_or("unknown")
    }

    /// When the command was issued (metadata), falling back to when it was recorded.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.meta(metadata::OCCURRED_AT)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(self.recorded_at)
    }
}

fn is_known_app_event(event_type: &str) -> bool {
    hubkeeper_domain::app::event_types::ALL.contains(&event_type)
}

fn is_known_installation_event(event_type: &str) -> bool {
    hubkeeper_domain::installation::event_types::ALL.contains(&event_type)
}

/// Runs the domain's upcasters over the stored shape, exactly as cqrs-es does when it loads an
/// aggregate.
fn upcast(mut event: ProjectedEvent) -> ProjectedEvent {
    let upcasters = hubkeeper_domain::upcasters::all();
    if !upcasters
        .iter()
        .any(|u| u.can_upcast(&event.event_type, &event.event_version))
    {
        return event;
    }
    let mut serialized = SerializedEvent::new(
        event.aggregate_id.clone(),
        usize::try_from(event.sequence).unwrap_or_default(),
        event.aggregate_type.clone(),
        event.event_type.clone(),
        event.event_version.clone(),
        std::mem::take(&mut event.payload),
        Value::Null,
    );
    for upcaster in &upcasters {
        if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
            serialized = upcaster.upcast(serialized);
        }
    }
    event.event_version = serialized.event_version;
    event.payload = serialized.payload;
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(event_type: &str, version: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            global_position: 7,
            tx_id: 42,
            aggregate_type: "app".into(),
            aggregate_id: "0190a3c4-0000-7000-8000-000000000001".into(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: version.into(),
            payload,
            metadata: json!({"actor": "key:ak0011", "occurred_at": "2026-01-02T03:04:05.000006Z"}),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn old_app_registered_is_upcast_before_decoding() {
        let payload = json!({"AppRegistered": {
            "app_id": "0190a3c4-0000-7000-8000-000000000001",
            "label": "Legacy",
            "environment": "production",
            "client_id": "12345678-abcd-ef01-2345-6789abcdef01",
            "client_secret": "v1.dk0011223344556677.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "redirect_uri": "https://example.com/oauth/callback",
            "scopes": "oauth crm.objects.contacts.read",
            "registered_at": "2025-01-02T03:04:05Z"
        }});
        let event = ProjectedEvent::from_stored(stored("AppRegistered", "1.0", payload));
        assert_eq!(event.stored_version, "1.0");
        assert_ne!(event.event_version, "1.0");
        let DomainEvent::App(AppEvent::Registered(registered)) = event.decode() else {
            panic!("expected a decoded AppRegistered");
        };
        assert_eq!(
            registered.scopes,
            vec!["oauth", "crm.objects.contacts.read"]
        );
        assert_eq!(event.actor(), "key:ak0011");
        assert_eq!(
            event.occurred_at().to_rfc3339(),
            "2026-01-02T03:04:05.000006+00:00"
        );
    }

    #[test]
    fn unknown_and_broken_events_do_not_fail() {
        let unknown =
            ProjectedEvent::from_stored(stored("AppRenamedInTheFuture", "1.0", json!({})));
        assert_eq!(unknown.decode(), DomainEvent::Unknown);
        let broken = ProjectedEvent::from_stored(stored("AppDeleted", "1.0", json!({"x": 1})));
        assert!(matches!(broken.decode(), DomainEvent::Undecodable(_)));
        let mut other = stored("LoggingSettingsChangedInTheFuture", "1.0", json!({}));
        other.aggregate_type = "settings".into();
        assert_eq!(
            ProjectedEvent::from_stored(other).decode(),
            DomainEvent::Unknown
        );
        let mut elsewhere = stored("SomethingElse", "1.0", json!({}));
        elsewhere.aggregate_type = "some_future_aggregate".into();
        assert_eq!(
            ProjectedEvent::from_stored(elsewhere).decode(),
            DomainEvent::Unknown
        );
        let mut plan = stored("PlanCreated", "1.0", json!({}));
        plan.aggregate_type = "plan".into();
        assert!(matches!(
            ProjectedEvent::from_stored(plan).decode(),
            DomainEvent::Undecodable(_)
        ));
    }
}
