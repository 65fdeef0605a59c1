//! The log of HubSpot's webhook events: every event HubSpot sent, accepted and de-duplicated,
//! as a [`HubSpotWebhookReceived`] event in the store, so the audit history, exports, replays
//! and the read models' webhook counts all come from one record.
//!
//! One log per installation (aggregate id = the installation id) and one per app for events of
//! portals without an installation (`app:<app id>`, see [`log_id`]). The webhook workers append
//! to these logs in the transaction that records the events' identities, many events per
//! transaction; they do not load the aggregate (see `hubkeeper_webhooks::worker`). The
//! aggregate exists so the stored form is pinned like every other event's and so a log can be
//! folded: its state counts what it holds.

mod events;

use chrono::{DateTime, Utc};

pub use events::{
    event_types, HubSpotWebhookReceived, WebhookLogEvent, HUBSPOT_WEBHOOK_RECEIVED_VERSION,
};

use crate::aggregate::aggregate;
use crate::ids::{AppId, InstallationId};

/// The stored `aggregate_type` of webhook logs.
pub const AGGREGATE_TYPE: &str = "hubspot_webhook_log";

/// The aggregate id of the log an event goes to: its installation's id, or `app:<app id>` when
/// it was not routed to an installation.
pub fn log_id(app: AppId, installation: Option<InstallationId>) -> String {
    match installation {
        Some(id) => id.to_string(),
        None => format!("app:{app}"),
    }
}

/// What a log has recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HubSpotWebhookLog {
    /// Events recorded.
    pub events: u64,
    /// The latest `occurred_at` among them.
    pub last_occurred_at: Option<DateTime<Utc>>,
}

/// Commands of a webhook log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookLogCommand {
    /// Record an event HubSpot sent.
    Record(HubSpotWebhookReceived),
}

/// Why a log refuses an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookLogError {
    #[error("the event has no identity")]
    NoIdentity,
    #[error("the event's subscription type is empty")]
    NoSubscriptionType,
}

impl HubSpotWebhookLog {
    /// Checks an event the way the webhook workers' batch parser does (a non-empty subscription
    /// type, an identity) and records it.
    pub fn decide(
        &self,
        command: WebhookLogCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<WebhookLogEvent>, WebhookLogError> {
        match command {
            WebhookLogCommand::Record(event) => {
                if event.identity.trim().is_empty() {
                    return Err(WebhookLogError::NoIdentity);
                }
                if event.subscription_type.trim().is_empty() {
                    return Err(WebhookLogError::NoSubscriptionType);
                }
                Ok(vec![WebhookLogEvent::Received(event)])
            }
        }
    }

    pub fn evolve(&mut self, event: WebhookLogEvent) {
        match event {
            WebhookLogEvent::Received(e) => {
                self.events += 1;
                self.last_occurred_at = Some(
                    self.last_occurred_at
                        .map_or(e.occurred_at, |t| t.max(e.occurred_at)),
                );
            }
        }
    }
}

aggregate!(
    HubSpotWebhookLog,
    AGGREGATE_TYPE,
    WebhookLogCommand,
    WebhookLogEvent,
    WebhookLogError
);

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;
    use uuid::Uuid;

    use super::*;
    use crate::clock::DomainServices;
    use crate::ids::HubId;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 10, minute, 0)
            .single()
            .unwrap_or_default()
    }

    fn received(event_id: u64, minute: u32) -> HubSpotWebhookReceived {
        HubSpotWebhookReceived {
            identity: format!("{event_id:064x}"),
            event_id,
            subscription_type: "contact.propertyChange".into(),
            object_id: Some(501),
            property_name: Some("email".into()),
            property_value: Some("a@example.com".into()),
            change_source: None,
            occurred_at: at(minute),
            portal_id: HubId(62_000_001),
            app_id: AppId::from_uuid(Uuid::from_u128(1)),
            attempt: Some(0),
            installation_id: Some(InstallationId::from_uuid(Uuid::from_u128(2))),
        }
    }

    fn framework() -> TestFramework<HubSpotWebhookLog> {
        TestFramework::with(DomainServices::fixed(at(30)))
    }

    #[test]
    fn an_event_is_recorded_as_sent() {
        framework()
            .given(vec![WebhookLogEvent::Received(received(1, 5))])
            .when(WebhookLogCommand::Record(received(2, 6)))
            .then_expect_events(vec![WebhookLogEvent::Received(received(2, 6))]);
    }

    #[test]
    fn an_event_without_identity_or_type_is_refused() {
        let mut anonymous = received(3, 1);
        anonymous.identity = " ".into();
        framework()
            .given_no_previous_events()
            .when(WebhookLogCommand::Record(anonymous))
            .then_expect_error(WebhookLogError::NoIdentity);
        let mut untyped = received(4, 1);
        untyped.subscription_type = String::new();
        framework()
            .given_no_previous_events()
            .when(WebhookLogCommand::Record(untyped))
            .then_expect_error(WebhookLogError::NoSubscriptionType);
    }

    #[test]
    fn the_log_counts_and_keeps_the_latest_time_whatever_the_order() {
        let mut log = HubSpotWebhookLog::default();
        for (id, minute) in [(1, 9), (2, 3), (3, 7)] {
            log.evolve(WebhookLogEvent::Received(received(id, minute)));
        }
        assert_eq!(log.events, 3);
        assert_eq!(log.last_occurred_at, Some(at(9)));
    }

    #[test]
    fn unrouted_events_go_to_the_apps_log() {
        let app = AppId::from_uuid(Uuid::from_u128(1));
        let installation = InstallationId::from_uuid(Uuid::from_u128(2));
        assert_eq!(log_id(app, Some(installation)), installation.to_string());
        assert_eq!(log_id(app, None), format!("app:{app}"));
    }
}
