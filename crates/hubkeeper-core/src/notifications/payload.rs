//! What a relayed event tells an app: which [`NotificationType`] it is (if any), whom it
//! concerns, and the details that go into the delivery's `data`. Pure: the fan-out adds the
//! installation's identity (app, hub) it looks up.
//!
//! Delivery bodies (payload version [`PAYLOAD_VERSION`], documented in docs/notifications.md):
//!
//! ```json
//! {"type": "installation.revoked", "version": 1, "timestamp": "2026-03-01T09:00:00Z",
//!  "data": {"installation_id": "...", "app_id": "...", "hub_id": 123, ...}}
//! ```
//!
//! Fields are only ever added within a version; `version` changes if a field's meaning does.

use chrono::{DateTime, SecondsFormat, Utc};
use hubkeeper_bus::RelayedEvent;
use hubkeeper_domain::installation::{InstallationEvent, StoredDisconnectCause};
use hubkeeper_domain::notification::NotificationType;
use hubkeeper_domain::plan::{PlanEvent, PlanId, StoredPlanStatus};
use hubkeeper_domain::subscription::SubscriptionEvent;
use hubkeeper_domain::webhook_log::{WebhookLogEvent, AGGREGATE_TYPE as WEBHOOK_LOG_TYPE};
use hubkeeper_domain::InstallationId;
use serde_json::{json, Map, Value};

/// Version of the delivery body's shape.
pub const PAYLOAD_VERSION: u32 = 1;

/// Whom a notification concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// One installation (its app is looked up).
    Installation(InstallationId),
    /// One installation, for the HubSpot webhook events its log recorded in one transaction
    /// (one webhook worker's batch): one notification carries them all.
    WebhookGroup(WebhookGroup),
    /// Every installation subscribed to a plan.
    PlanSubscribers(PlanId),
}

/// The HubSpot webhook events of one installation's log written by one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookGroup {
    pub installation: InstallationId,
    /// The log (its aggregate id).
    pub log: String,
    /// The writing transaction (the relayed envelope's `tx_id`).
    pub tx_id: String,
    /// The sequence of the event that led here: only the group's first event queues the
    /// notification.
    pub sequence: i64,
}

impl WebhookGroup {
    /// What the group's notification is derived from (`source_event` of its deliveries, and
    /// the base of its `webhook-id`): the same whichever of its events is handled.
    pub fn source(&self) -> String {
        format!("{WEBHOOK_LOG_TYPE}:{}:tx:{}", self.log, self.tx_id)
    }
}

/// A notification an event leads to, before its recipients are known.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub kind: NotificationType,
    pub subject: Subject,
    /// Event-specific fields of `data`.
    pub details: Map<String, Value>,
}

fn time(at: DateTime<Utc>) -> Value {
    Value::String(at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The notification `event` leads to; `None` for events apps are not told about (or whose
/// payload does not decode).
pub fn trigger(event: &RelayedEvent) -> Option<Trigger> {
    match event.aggregate_type.as_str() {
        "installation" => installation(event),
        "subscription" => subscription(event),
        "plan" => plan(event),
        WEBHOOK_LOG_TYPE => webhook(event),
        _ => None,
    }
}

/// HubSpot webhook events of an installation (unrouted ones, in the app's log, tell nothing):
/// the group of its transaction; `details` are filled from the whole group by the fan-out
/// ([`webhook_events`]).
fn webhook(event: &RelayedEvent) -> Option<Trigger> {
    let decoded: WebhookLogEvent = serde_json::from_value(event.payload.clone()).ok()?;
    let WebhookLogEvent::Received(received) = decoded;
    let installation = received.installation_id?;
    Some(Trigger {
        kind: NotificationType::HubSpotWebhook,
        subject: Subject::WebhookGroup(WebhookGroup {
            installation,
            log: event.aggregate_id.clone(),
            tx_id: event.tx_id.clone(),
            sequence: event.sequence,
        }),
        details: Map::new(),
    })
}

/// The `events` of a `hubspot.webhook` notification, from the stored payloads of its group (in
/// sequence order); payloads that do not decode are left out.
pub fn webhook_events(payloads: &[Value]) -> Map<String, Value> {
    let events: Vec<Value> = payloads
        .iter()
        .filter_map(|p| serde_json::from_value::<WebhookLogEvent>(p.clone()).ok())
        .map(|WebhookLogEvent::Received(e)| {
            json!({
                "event_id": e.event_id,
                "subscription_type": e.subscription_type,
                "object_id": e.object_id,
                "property_name": e.property_name,
                "property_value": e.property_value,
                "change_source": e.change_source,
                "occurred_at": e.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "attempt_number": e.attempt,
            })
        })
        .collect();
    let mut details = Map::new();
    details.insert("events".into(), Value::Array(events));
    details
}

fn installation(event: &RelayedEvent) -> Option<Trigger> {
    let id: InstallationId = event.aggregate_id.parse().ok()?;
    let decoded: InstallationEvent = serde_json::from_value(event.payload.clone()).ok()?;
    let (kind, details) = match decoded {
        InstallationEvent::Connected(e) => (
            NotificationType::InstallationConnected,
            json!({ "scopes": e.scopes, "connected_at": time(e.connected_at) }),
        ),
        InstallationEvent::Reconnected(e) => (
            NotificationType::InstallationReconnected,
            json!({
                "scopes": e.scopes,
                "previous_status": e.previous_status,
                "connected_at": time(e.connected_at),
            }),
        ),
        InstallationEvent::ReauthorizationRequired(e) => (
            NotificationType::InstallationNeedsReauthorization,
            json!({ "reason": e.message, "failed_at": time(e.failed_at) }),
        ),
        InstallationEvent::TokensRefreshed(e) => (
            NotificationType::InstallationRefreshed,
            json!({
                "access_expires_at": time(e.tokens.access_expires_at),
                "refreshed_at": time(e.refreshed_at),
            }),
        ),
        InstallationEvent::Revoked(e) => (
            NotificationType::InstallationRevoked,
            json!({ "reason": e.reason, "revoked_at": time(e.revoked_at) }),
        ),
        InstallationEvent::Disconnected(e) => {
            let kind = match e.cause {
                StoredDisconnectCause::Operator => NotificationType::InstallationDisconnected,
                StoredDisconnectCause::Uninstalled => NotificationType::InstallationUninstalled,
            };
            (
                kind,
                json!({ "reason": e.reason, "disconnected_at": time(e.disconnected_at) }),
            )
        }
        InstallationEvent::TenantForgotten(e) => (
            NotificationType::InstallationForgotten,
            json!({ "forgotten_at": time(e.forgotten_at) }),
        ),
        InstallationEvent::RemovalScheduled(e) => (
            NotificationType::InstallationRemovalScheduled,
            json!({
                "action": e.action.as_str(),
                "reason": e.reason,
                "effective_at": time(e.effective_at),
                "scheduled_by": e.scheduled_by,
                "scheduled_at": time(e.scheduled_at),
            }),
        ),
        InstallationEvent::RemovalCancelled(e) => (
            NotificationType::InstallationRemovalCancelled,
            json!({
                "action": e.action.as_str(),
                "effective_at": time(e.effective_at),
                "reason": e.reason,
                "cancelled_at": time(e.cancelled_at),
            }),
        ),
        InstallationEvent::RefreshFailed(_) => return None,
    };
    Some(Trigger {
        kind,
        subject: Subject::Installation(id),
        details: object(details),
    })
}

fn subscription(event: &RelayedEvent) -> Option<Trigger> {
    let decoded: SubscriptionEvent = serde_json::from_value(event.payload.clone()).ok()?;
    let (kind, id, details) = match decoded {
        SubscriptionEvent::Started(e) => (
            NotificationType::SubscriptionChanged,
            e.installation_id,
            json!({
                "change": "started",
                "plan_id": e.plan.plan_id,
                "plan_code": e.plan.code,
                "plan_version": e.plan.version,
                "renews_at": e.renews_at.map(time),
                "changed_at": time(e.started_at),
            }),
        ),
        SubscriptionEvent::PlanChanged(e) => (
            NotificationType::SubscriptionChanged,
            e.installation_id,
            json!({
                "change": e.direction.as_str(),
                "plan_id": e.to.plan_id,
                "plan_code": e.to.code,
                "plan_version": e.to.version,
                "previous_plan_code": e.from.code,
                "renews_at": e.renews_at.map(time),
                "changed_at": time(e.changed_at),
            }),
        ),
        SubscriptionEvent::UsageLimitReached(e) => (
            NotificationType::UsageLimitReached,
            e.installation_id,
            json!({
                "plan_id": e.plan_id,
                "plan_code": e.plan_code,
                "limit": e.limit.as_str(),
                "limit_value": e.limit_value,
                "used": e.used,
                "period": e.period,
                "reached_at": time(e.reached_at),
            }),
        ),
        SubscriptionEvent::Renewed(_) => return None,
    };
    Some(Trigger {
        kind,
        subject: Subject::Installation(id),
        details: object(details),
    })
}

fn plan(event: &RelayedEvent) -> Option<Trigger> {
    let decoded: PlanEvent = serde_json::from_value(event.payload.clone()).ok()?;
    let (kind, plan_id, details) = match decoded {
        PlanEvent::StatusChanged(e) if e.to == StoredPlanStatus::Deprecated => (
            NotificationType::PlanDeprecated,
            e.plan_id,
            json!({
                "plan_id": e.plan_id,
                "previous_status": e.from.as_str(),
                "deprecated_at": time(e.changed_at),
            }),
        ),
        PlanEvent::ReductionAnnounced(e) => (
            NotificationType::PlanReduced,
            e.plan_id,
            json!({
                "plan_id": e.plan_id,
                "features_removed": e.features_removed,
                "limits_lowered": e.limits_lowered
                    .iter()
                    .map(|(kind, change)| (kind.as_str().to_owned(), json!({
                        "from": change.from,
                        "to": change.to,
                    })))
                    .collect::<Map<String, Value>>(),
                "announced_at": time(e.announced_at),
                "effective_at": time(e.effective_at),
            }),
        ),
        _ => return None,
    };
    Some(Trigger {
        kind,
        subject: Subject::PlanSubscribers(plan_id),
        details: object(details),
    })
}

/// The delivery body: type, version, when the event was recorded, and `data` (the recipient's
/// identity fields, then the event's details).
pub fn body(
    kind: NotificationType,
    recorded_at: DateTime<Utc>,
    identity: Map<String, Value>,
    details: &Map<String, Value>,
) -> String {
    let mut data = identity;
    for (key, value) in details {
        data.entry(key.clone()).or_insert_with(|| value.clone());
    }
    json!({
        "type": kind.as_str(),
        "version": PAYLOAD_VERSION,
        "timestamp": time(recorded_at),
        "data": data,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(aggregate_type: &str, aggregate_id: &str, payload: Value) -> RelayedEvent {
        RelayedEvent {
            envelope_version: 1,
            global_position: 1,
            tx_id: "1".into(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            sequence: 3,
            event_type: String::new(),
            event_version: "1.0".into(),
            payload,
            metadata: json!({}),
            recorded_at: Utc::now(),
        }
    }

    const INSTALLATION: &str = "0190a3c4-0000-7000-8000-0000000000a1";

    #[test]
    fn disconnect_causes_are_told_apart() {
        for (cause, kind) in [
            ("operator", NotificationType::InstallationDisconnected),
            ("uninstalled", NotificationType::InstallationUninstalled),
        ] {
            let event = relayed(
                "installation",
                INSTALLATION,
                json!({"InstallationDisconnected": {
                    "cause": cause, "disconnected_at": "2026-03-01T09:00:00Z"
                }}),
            );
            let trigger = trigger(&event).expect("a notification");
            assert_eq!(trigger.kind, kind);
            assert_eq!(
                trigger.subject,
                Subject::Installation(INSTALLATION.parse().expect("id"))
            );
        }
    }

    #[test]
    fn a_scheduled_removal_tells_what_when_why_and_who() {
        let event = relayed(
            "installation",
            INSTALLATION,
            json!({"InstallationRemovalScheduled": {
                "action": "revoke", "reason": "contract ended",
                "effective_at": "2026-03-02T09:00:00Z", "scheduled_by": "key:ak_ops",
                "scheduled_at": "2026-03-01T09:00:00Z"
            }}),
        );
        let trigger = trigger(&event).expect("a notification");
        assert_eq!(trigger.kind, NotificationType::InstallationRemovalScheduled);
        assert_eq!(
            Value::Object(trigger.details),
            json!({
                "action": "revoke", "reason": "contract ended",
                "effective_at": "2026-03-02T09:00:00Z", "scheduled_by": "key:ak_ops",
                "scheduled_at": "2026-03-01T09:00:00Z",
            })
        );
        let cancelled = relayed(
            "installation",
            INSTALLATION,
            json!({"InstallationRemovalCancelled": {
                "action": "disconnect", "effective_at": "2026-03-02T09:00:00Z",
                "cancelled_at": "2026-03-01T10:00:00Z"
            }}),
        );
        let trigger = super::trigger(&cancelled).expect("a notification");
        assert_eq!(trigger.kind, NotificationType::InstallationRemovalCancelled);
        assert_eq!(trigger.details["action"], "disconnect");
        assert_eq!(trigger.details["reason"], Value::Null);
    }

    #[test]
    fn failed_refreshes_and_unknown_aggregates_tell_nothing() {
        let failed = relayed(
            "installation",
            INSTALLATION,
            json!({"InstallationRefreshFailed": {
                "class": "transient", "message": "503", "generation": 1,
                "consecutive_failures": 1, "failed_at": "2026-03-01T09:00:00Z"
            }}),
        );
        assert_eq!(trigger(&failed), None);
        assert_eq!(trigger(&relayed("app", INSTALLATION, json!({}))), None);
        assert_eq!(
            trigger(&relayed("installation", INSTALLATION, json!({"Nope": {}}))),
            None
        );
    }

    fn received(event_id: u64, installation: Option<&str>) -> Value {
        let mut inner = json!({
            "identity": format!("{event_id:064x}"),
            "event_id": event_id,
            "subscription_type": "contact.propertyChange",
            "object_id": 5001,
            "property_name": "email",
            "property_value": "ada@example.com",
            "occurred_at": "2026-03-01T09:00:00.250Z",
            "portal_id": 62000001,
            "app_id": "0190a3c4-0000-7000-8000-000000000001",
            "attempt": 1
        });
        if let Some(id) = installation {
            inner["installation_id"] = json!(id);
        }
        json!({ "HubSpotWebhookReceived": inner })
    }

    #[test]
    fn webhook_events_notify_their_installation_per_transaction() {
        let mut event = relayed(
            WEBHOOK_LOG_TYPE,
            INSTALLATION,
            received(7, Some(INSTALLATION)),
        );
        event.tx_id = "991".into();
        let first = trigger(&event).expect("a notification");
        assert_eq!(first.kind, NotificationType::HubSpotWebhook);
        let Subject::WebhookGroup(group) = &first.subject else {
            panic!("a webhook group: {:?}", first.subject);
        };
        assert_eq!(group.installation, INSTALLATION.parse().expect("id"));
        assert_eq!(group.sequence, 3);
        // Every event of the transaction names the same source, so one delivery is queued.
        let mut sibling = event.clone();
        sibling.sequence = 4;
        let Some(Trigger {
            subject: Subject::WebhookGroup(other),
            ..
        }) = trigger(&sibling)
        else {
            panic!("a webhook group");
        };
        assert_eq!(other.source(), group.source());
        sibling.tx_id = "992".into();
        let Some(Trigger {
            subject: Subject::WebhookGroup(later),
            ..
        }) = trigger(&sibling)
        else {
            panic!("a webhook group");
        };
        assert_ne!(later.source(), group.source());
        // Events of portals without an installation are nobody's to hear of.
        let unrouted = relayed(WEBHOOK_LOG_TYPE, "app:x", received(8, None));
        assert_eq!(trigger(&unrouted), None);

        let details = webhook_events(&[received(7, Some(INSTALLATION)), json!({"Nope": {}})]);
        assert_eq!(
            Value::Object(details),
            json!({"events": [{
                "event_id": 7,
                "subscription_type": "contact.propertyChange",
                "object_id": 5001,
                "property_name": "email",
                "property_value": "ada@example.com",
                "change_source": null,
                "occurred_at": "2026-03-01T09:00:00.250Z",
                "attempt_number": 1,
            }]})
        );
    }

    #[test]
    fn bodies_carry_type_version_timestamp_and_data() {
        let mut identity = Map::new();
        identity.insert("installation_id".into(), json!(INSTALLATION));
        let mut details = Map::new();
        details.insert("reason".into(), json!("fraud"));
        details.insert("installation_id".into(), json!("not-overwritten"));
        let at = DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let body: Value = serde_json::from_str(&body(
            NotificationType::InstallationRevoked,
            at,
            identity,
            &details,
        ))
        .expect("json");
        assert_eq!(
            body,
            json!({
                "type": "installation.revoked",
                "version": 1,
                "timestamp": "2026-03-01T09:00:00Z",
                "data": {"installation_id": INSTALLATION, "reason": "fraud"},
            })
        );
    }
}
