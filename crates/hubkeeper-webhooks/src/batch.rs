//! HubSpot's webhook batch format and the identity of one event.
//!
//! A batch is a JSON array of up to 100 objects, each with at least `eventId`, `portalId`,
//! `subscriptionType` and `occurredAt`. HubSpot redelivers, and `eventId` alone is not unique,
//! so an event's identity ([`WebhookEvent::dedupe_key`]) also covers the portal, subscription
//! type, time, object and property change.

use chrono::{DateTime, TimeZone, Utc};
use hubkeeper_domain::webhook_log::HubSpotWebhookReceived;
use hubkeeper_domain::{AppId, HubId, InstallationId};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// HubSpot's cap on events per request.
pub const MAX_EVENTS: usize = 100;

/// Why a body is not a valid batch. Messages are safe to return to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("body is not JSON")]
    NotJson,
    #[error("body is not a JSON array of events")]
    NotArray,
    #[error("batch is empty")]
    Empty,
    #[error("batch has {0} events; at most {MAX_EVENTS} are accepted")]
    TooMany(usize),
    #[error("event {0} is not a JSON object")]
    NotObject(usize),
    #[error("event {index} lacks a valid `{field}`")]
    MissingField { index: usize, field: &'static str },
}

/// One event of a batch, with the fields Hubkeeper uses picked out; `raw` is the event as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub raw: Map<String, Value>,
    pub event_id: i64,
    pub portal_id: i64,
    pub subscription_type: String,
    pub occurred_at_ms: i64,
}

/// The fields the ingest path checks, borrowed; everything else is skipped unparsed.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(rename = "eventId")]
    event_id: Option<u64>,
    #[serde(rename = "portalId")]
    portal_id: Option<u64>,
    #[serde(rename = "occurredAt")]
    occurred_at: Option<u64>,
    #[serde(rename = "subscriptionType", borrow)]
    subscription_type: Option<std::borrow::Cow<'a, str>>,
}

/// Validates a batch without building it (the HTTP path only needs to know it is well formed,
/// and how many events it has); returns the number of events. Errors are the same as
/// [`parse_batch`]'s.
pub fn validate_batch(body: &[u8]) -> Result<usize, BatchError> {
    let probes: Vec<Probe<'_>> = match serde_json::from_slice(body) {
        Ok(p) => p,
        // Not the happy shape: let the full parser say precisely what is wrong.
        Err(_) => return parse_batch(body).map(|events| events.len()),
    };
    if probes.is_empty() {
        return Err(BatchError::Empty);
    }
    if probes.len() > MAX_EVENTS {
        return Err(BatchError::TooMany(probes.len()));
    }
    for (index, p) in probes.iter().enumerate() {
        let missing = |field| BatchError::MissingField { index, field };
        let fits = |n: Option<u64>| n.is_some_and(|n| i64::try_from(n).is_ok());
        if !fits(p.event_id) {
            return Err(missing("eventId"));
        }
        if !fits(p.portal_id) {
            return Err(missing("portalId"));
        }
        if !fits(p.occurred_at) {
            return Err(missing("occurredAt"));
        }
        if p.subscription_type
            .as_deref()
            .is_none_or(|s| s.trim().is_empty())
        {
            return Err(missing("subscriptionType"));
        }
    }
    Ok(probes.len())
}

/// Parses and validates a batch.
pub fn parse_batch(body: &[u8]) -> Result<Vec<WebhookEvent>, BatchError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| BatchError::NotJson)?;
    let Value::Array(items) = value else {
        return Err(BatchError::NotArray);
    };
    if items.is_empty() {
        return Err(BatchError::Empty);
    }
    if items.len() > MAX_EVENTS {
        return Err(BatchError::TooMany(items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let Value::Object(raw) = item else {
                return Err(BatchError::NotObject(index));
            };
            let int = |field: &'static str| {
                raw.get(field)
                    .and_then(Value::as_i64)
                    .filter(|n| *n >= 0)
                    .ok_or(BatchError::MissingField { index, field })
            };
            let event_id = int("eventId")?;
            let portal_id = int("portalId")?;
            let occurred_at_ms = int("occurredAt")?;
            let subscription_type = raw
                .get("subscriptionType")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .ok_or(BatchError::MissingField {
                    index,
                    field: "subscriptionType",
                })?
                .to_owned();
            Ok(WebhookEvent {
                raw,
                event_id,
                portal_id,
                subscription_type,
                occurred_at_ms,
            })
        })
        .collect()
}

impl WebhookEvent {
    /// The event as the webhook log stores it (`HubSpotWebhookReceived`): its identity `key`,
    /// HubSpot's fields that say what happened, and the installation it was routed to.
    pub fn received(
        &self,
        key: &[u8; 32],
        app_id: Uuid,
        installation: Option<Uuid>,
    ) -> HubSpotWebhookReceived {
        let text = |name: &str| match self.raw.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let number = |name: &str| match self.raw.get(name)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        HubSpotWebhookReceived {
            identity: hex::encode(key),
            event_id: u64::try_from(self.event_id).unwrap_or_default(),
            subscription_type: self.subscription_type.clone(),
            object_id: number("objectId"),
            property_name: text("propertyName"),
            property_value: text("propertyValue"),
            change_source: text("changeSource"),
            occurred_at: self.occurred_at(),
            portal_id: HubId(u64::try_from(self.portal_id).unwrap_or_default()),
            app_id: AppId::from_uuid(app_id),
            attempt: number("attemptNumber").and_then(|n| u32::try_from(n).ok()),
            installation_id: installation.map(InstallationId::from_uuid),
        }
    }

    /// The event's identity across redeliveries: SHA-256 over the app and the fields HubSpot
    /// keeps equal when it sends the same event again (`attemptNumber` changes, so it is left
    /// out).
    pub fn dedupe_key(&self, app_id: Uuid) -> [u8; 32] {
        let field = |name: &str| self.raw.get(name).cloned().unwrap_or(Value::Null);
        let identity = Value::Array(vec![
            Value::String(app_id.to_string()),
            field("eventId"),
            field("portalId"),
            field("subscriptionType"),
            field("occurredAt"),
            field("objectId"),
            field("propertyName"),
            field("propertyValue"),
        ]);
        let canonical = serde_json::to_vec(&identity).unwrap_or_default();
        Sha256::digest(canonical).into()
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.occurred_at_ms)
            .single()
            .unwrap_or_else(Utc::now)
    }

    /// The HubSpot user the event names (`userId`, a number or a numeric string), which some
    /// apps' events carry and which selects that user's user-level installation.
    pub fn user_id(&self) -> Option<i64> {
        match self.raw.get("userId")? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|u| *u > 0)
    }

    /// Whether this event says the app was uninstalled from the portal.
    ///
    /// HubSpot's exact uninstall payload is not documented (it arrives through the webhooks
    /// journal as `APP_LIFECYCLE_EVENT` / `APP_UNINSTALL`), so both readings are accepted: a
    /// subscription type `app.uninstall`, or `APP_LIFECYCLE_EVENT` with `APP_UNINSTALL` in one
    /// of the fields that could carry it.
    pub fn is_uninstall(&self) -> bool {
        let kind = self.subscription_type.trim();
        if kind.eq_ignore_ascii_case("app.uninstall")
            || kind.eq_ignore_ascii_case("app.uninstalled")
        {
            return true;
        }
        kind.eq_ignore_ascii_case("APP_LIFECYCLE_EVENT")
            && [
                "eventType",
                "changeFlag",
                "lifecycleEventType",
                "action",
                "eventTypeName",
            ]
            .iter()
            .filter_map(|f| self.raw.get(*f).and_then(Value::as_str))
            .any(|v| v.eq_ignore_ascii_case("APP_UNINSTALL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"eventId": 3816279340u64, "subscriptionId": 25, "portalId": 33, "appId": 1160452,
               "occurredAt": 1462216307945u64, "subscriptionType": "contact.propertyChange",
               "attemptNumber": 0, "objectId": 1246965, "propertyName": "lifecyclestage",
               "propertyValue": "subscriber", "changeSource": "CRM"})
    }

    #[test]
    fn user_ids_are_read_as_numbers_or_numeric_strings() {
        let user = |v: Value| {
            let mut e = event();
            e["userId"] = v;
            parse_batch(&serde_json::to_vec(&json!([e])).unwrap()).unwrap()[0].user_id()
        };
        assert_eq!(user(json!(123)), Some(123));
        assert_eq!(user(json!(" 456 ")), Some(456));
        assert_eq!(user(json!("someone")), None);
        assert_eq!(user(json!(0)), None);
        assert_eq!(
            parse_batch(&serde_json::to_vec(&json!([event()])).unwrap()).unwrap()[0].user_id(),
            None
        );
    }

    #[test]
    fn the_fast_validator_agrees_with_the_parser() {
        let mut missing = event();
        missing.as_object_mut().unwrap().remove("portalId");
        let mut typed = event();
        typed["eventId"] = json!("not a number");
        let mut blank = event();
        blank["subscriptionType"] = json!(" ");
        let many: Vec<Value> = (0..101).map(|_| event()).collect();
        for body in [
            serde_json::to_vec(&json!([event(), event()])).unwrap(),
            serde_json::to_vec(&json!([event(), missing])).unwrap(),
            serde_json::to_vec(&json!([typed])).unwrap(),
            serde_json::to_vec(&json!([blank])).unwrap(),
            serde_json::to_vec(&many).unwrap(),
            b"[]".to_vec(),
            b"{}".to_vec(),
            b"[1]".to_vec(),
            b"nope".to_vec(),
        ] {
            assert_eq!(
                validate_batch(&body),
                parse_batch(&body).map(|e| e.len()),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn valid_batches_parse() {
        let body = serde_json::to_vec(&json!([event()])).unwrap();
        let events = parse_batch(&body).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].portal_id, 33);
        assert_eq!(events[0].subscription_type, "contact.propertyChange");
        assert_eq!(events[0].occurred_at().timestamp_millis(), 1462216307945);
    }

    #[test]
    fn malformed_batches_are_named() {
        assert_eq!(parse_batch(b"nope"), Err(BatchError::NotJson));
        assert_eq!(parse_batch(b"{}"), Err(BatchError::NotArray));
        assert_eq!(parse_batch(b"[]"), Err(BatchError::Empty));
        assert_eq!(parse_batch(b"[1]"), Err(BatchError::NotObject(0)));
        let mut missing = event();
        missing.as_object_mut().unwrap().remove("portalId");
        let body = serde_json::to_vec(&json!([event(), missing])).unwrap();
        assert_eq!(
            parse_batch(&body),
            Err(BatchError::MissingField {
                index: 1,
                field: "portalId"
            })
        );
        let many: Vec<Value> = (0..101).map(|_| event()).collect();
        let body = serde_json::to_vec(&many).unwrap();
        assert_eq!(parse_batch(&body), Err(BatchError::TooMany(101)));
    }

    #[test]
    fn the_stored_event_carries_what_happened_and_where_it_went() {
        let mut raw = event();
        raw["objectId"] = json!(5001);
        raw["propertyName"] = json!("email");
        raw["propertyValue"] = json!("ada@example.com");
        raw["changeSource"] = json!("CRM_UI");
        raw["attemptNumber"] = json!(2);
        let body = serde_json::to_vec(&json!([raw])).unwrap();
        let parsed = parse_batch(&body).unwrap().remove(0);
        let app = Uuid::from_u128(1);
        let key = parsed.dedupe_key(app);
        let routed = parsed.received(&key, app, Some(Uuid::from_u128(9)));
        assert_eq!(routed.identity, hex::encode(key));
        assert_eq!(routed.event_id, u64::try_from(parsed.event_id).unwrap());
        assert_eq!(routed.object_id, Some(5001));
        assert_eq!(routed.property_name.as_deref(), Some("email"));
        assert_eq!(routed.property_value.as_deref(), Some("ada@example.com"));
        assert_eq!(routed.change_source.as_deref(), Some("CRM_UI"));
        assert_eq!(routed.attempt, Some(2));
        assert_eq!(routed.occurred_at, parsed.occurred_at());
        assert_eq!(
            routed.installation_id.map(|i| i.as_uuid()),
            Some(Uuid::from_u128(9))
        );
        // Numbers sent as other JSON are kept as their text; unrouted events name no installation.
        let mut odd = parsed.clone();
        odd.raw.insert("propertyValue".into(), json!(42));
        odd.raw.remove("objectId");
        let unrouted = odd.received(&key, app, None);
        assert_eq!(unrouted.property_value.as_deref(), Some("42"));
        assert_eq!((unrouted.object_id, unrouted.installation_id), (None, None));
    }

    #[test]
    fn redeliveries_share_a_key_and_other_changes_do_not() {
        let app = Uuid::nil();
        let parse = |v: Value| {
            parse_batch(&serde_json::to_vec(&json!([v])).unwrap())
                .unwrap()
                .remove(0)
        };
        let original = parse(event());
        let mut retried = event();
        retried["attemptNumber"] = json!(3);
        assert_eq!(original.dedupe_key(app), parse(retried).dedupe_key(app));
        // Same eventId, other property value: a different event.
        let mut other = event();
        other["propertyValue"] = json!("lead");
        assert_ne!(original.dedupe_key(app), parse(other).dedupe_key(app));
        // Same event for another app: another key.
        assert_ne!(original.dedupe_key(app), original.dedupe_key(Uuid::max()));
    }

    #[test]
    fn uninstalls_are_recognised_in_both_readings() {
        let parse = |v: Value| {
            parse_batch(&serde_json::to_vec(&json!([v])).unwrap())
                .unwrap()
                .remove(0)
        };
        let mut e = event();
        e["subscriptionType"] = json!("app.uninstall");
        assert!(parse(e).is_uninstall());
        let mut e = event();
        e["subscriptionType"] = json!("APP_LIFECYCLE_EVENT");
        e["eventType"] = json!("APP_UNINSTALL");
        assert!(parse(e).is_uninstall());
        let mut e = event();
        e["subscriptionType"] = json!("APP_LIFECYCLE_EVENT");
        e["eventType"] = json!("APP_INSTALL");
        assert!(!parse(e).is_uninstall());
        assert!(!parse(event()).is_uninstall());
    }
}
