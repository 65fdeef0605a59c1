//! Upcasters: how events stored in an older shape are read as the current one.
//!
//! cqrs-es runs upcasters on the raw JSON (`serde_json::Value`) before deserializing, when an
//! event's stored `(event_type, event_version)` is older than the upcaster's version. Register
//! [`all`] on every event store (`PersistedEventStore::with_upcasters`) and on any replay path
//! that reads the `events` table directly. Event type names are unique across aggregates, so
//! one list serves both.
//!
//! Payloads are stored externally tagged (`{"AppRegistered": {...}}`), so each function
//! unwraps the tag, edits the inner object and wraps it again. A payload that is not the
//! expected object is returned unchanged: deserialization then fails with a precise error
//! instead of the upcaster guessing.

use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use serde_json::{json, Map, Value};

use crate::app::{event_types, APP_REGISTERED_VERSION};

/// Every upcaster of this crate, oldest change first.
pub fn all() -> Vec<Box<dyn EventUpcaster>> {
    vec![app_registered_to_1_1()]
}

/// `AppRegistered` 1.0 → 1.1.
///
/// 1.0 (the prototype) stored `scopes` as one space-separated string and had no
/// `optional_scopes`, `oauth_generation` or `signature_versions`. Apps of that era used the
/// legacy `v1` OAuth endpoints and accepted every signature version, so those are the values
/// filled in; they are what the app actually did, not today's defaults.
pub fn app_registered_to_1_1() -> Box<dyn EventUpcaster> {
    Box::new(SemanticVersionEventUpcaster::new(
        event_types::APP_REGISTERED,
        APP_REGISTERED_VERSION,
        Box::new(upcast_app_registered_1_0),
    ))
}

/// The JSON transformation behind [`app_registered_to_1_1`], public for tests and tooling.
pub fn upcast_app_registered_1_0(payload: Value) -> Value {
    edit_tagged(payload, event_types::APP_REGISTERED, |inner| {
        if let Some(Value::String(list)) = inner.get("scopes") {
            let scopes: Vec<Value> = list
                .split_whitespace()
                .map(|s| Value::String(s.to_owned()))
                .collect();
            inner.insert("scopes".to_owned(), Value::Array(scopes));
        }
        inner.entry("optional_scopes").or_insert_with(|| json!([]));
        inner
            .entry("oauth_generation")
            .or_insert_with(|| json!("v1"));
        inner
            .entry("signature_versions")
            .or_insert_with(|| json!(["v1", "v2", "v3"]));
    })
}

fn edit_tagged(payload: Value, tag: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> Value {
    match payload {
        Value::Object(mut outer) => {
            if let Some(Value::Object(inner)) = outer.get_mut(tag) {
                edit(inner);
            }
            Value::Object(outer)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{AppEvent, StoredEnvironment, StoredOAuthGeneration, StoredSignatureVersion};
    use cqrs_es::persist::SerializedEvent;
    use cqrs_es::DomainEvent;

    const SEALED: &str = "v1.dk0011223344556677.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn stored(version: &str, payload: Value) -> SerializedEvent {
        SerializedEvent::new(
            "0190a3c4-0000-7000-8000-000000000001".to_owned(),
            1,
            "app".to_owned(),
            event_types::APP_REGISTERED.to_owned(),
            version.to_owned(),
            payload,
            json!({}),
        )
    }

    fn v1_0_payload() -> Value {
        json!({"AppRegistered": {
            "app_id": "0190a3c4-0000-7000-8000-000000000001",
            "label": "Legacy",
            "environment": "production",
            "client_id": "12345678-abcd-ef01-2345-6789abcdef01",
            "client_secret": SEALED,
            "redirect_uri": "https://example.com/oauth/callback",
            "scopes": "oauth crm.objects.contacts.read",
            "registered_at": "2025-01-02T03:04:05Z"
        }})
    }

    #[test]
    fn app_registered_1_0_is_upcast_to_the_current_shape() {
        let upcaster = app_registered_to_1_1();
        assert!(upcaster.can_upcast("AppRegistered", "1.0"));
        assert!(!upcaster.can_upcast("AppRegistered", APP_REGISTERED_VERSION));
        assert!(!upcaster.can_upcast("AppUpdated", "1.0"));

        let upcast = upcaster.upcast(stored("1.0", v1_0_payload()));
        assert_eq!(upcast.event_version, "1.1.0");
        let event: AppEvent = serde_json::from_value(upcast.payload).expect("current shape");
        let AppEvent::Registered(registered) = &event else {
            panic!("expected AppRegistered, got {event:?}");
        };
        assert_eq!(
            registered.scopes,
            vec!["oauth", "crm.objects.contacts.read"]
        );
        assert!(registered.optional_scopes.is_empty());
        assert_eq!(registered.oauth_generation, StoredOAuthGeneration::V1);
        assert_eq!(
            registered.signature_versions,
            vec![
                StoredSignatureVersion::V1,
                StoredSignatureVersion::V2,
                StoredSignatureVersion::V3
            ]
        );
        assert_eq!(registered.description, "");
        assert_eq!(registered.environment, StoredEnvironment::Production);
        assert_eq!(event.event_version(), APP_REGISTERED_VERSION);
    }

    #[test]
    fn current_payloads_are_left_alone_and_deserialize() {
        let mut payload = v1_0_payload();
        payload["AppRegistered"]["scopes"] = json!(["oauth"]);
        payload["AppRegistered"]["optional_scopes"] = json!(["tickets"]);
        payload["AppRegistered"]["oauth_generation"] = json!("2026-03");
        payload["AppRegistered"]["signature_versions"] = json!(["v3"]);
        // The transformation itself is idempotent on current payloads...
        assert_eq!(upcast_app_registered_1_0(payload.clone()), payload);
        // ...and the upcaster is not even consulted for them.
        let upcasters = all();
        assert!(!upcasters
            .iter()
            .any(|u| u.can_upcast("AppRegistered", APP_REGISTERED_VERSION)));
        let event: AppEvent = serde_json::from_value(payload).expect("current shape");
        let AppEvent::Registered(registered) = event else {
            panic!("expected AppRegistered");
        };
        assert_eq!(registered.oauth_generation, StoredOAuthGeneration::V2026_03);
    }

    #[test]
    fn unexpected_payloads_pass_through_unchanged() {
        for payload in [
            json!("text"),
            json!({"AppUpdated": {}}),
            json!({"AppRegistered": 3}),
        ] {
            assert_eq!(upcast_app_registered_1_0(payload.clone()), payload);
        }
    }
}
