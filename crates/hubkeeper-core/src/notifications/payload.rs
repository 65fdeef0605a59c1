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
use hubkeeper_domain::InstallationId;
use serde_json::{json, Map, Value};

/// Version of the delivery body's shape.
pub const PAYLOAD_VERSION: u32 = 1;

/// Whom a notification concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// One installation (its app is looked up).
    Installation(InstallationId),
    /// Every installation subscribed to a plan.
    PlanSubscribers(PlanId),
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
        _ => None,
    }
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
