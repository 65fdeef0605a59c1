//! Stored events are a compatibility boundary: every event type in every version ever written
//! must load forever. `fixtures/events/<aggregate>/<EventType>.v<version>.json` hold one stored
//! event each, exactly as the event store keeps it (`event_type`, `event_version`, `payload`);
//! this test reads each one the way the store does (upcasters first, then the aggregate's event
//! type), applies it, and for the current version checks that the code writes the same JSON.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent};
use hubkeeper_domain::access::ApiKey;
use hubkeeper_domain::app::App;
use hubkeeper_domain::catalog::{event_types_by_aggregate, StoredEventType, STORED_EVENT_TYPES};
use hubkeeper_domain::installation::Installation;
use hubkeeper_domain::notification::AppEndpoints;
use hubkeeper_domain::operations::Operation;
use hubkeeper_domain::plan::Plan;
use hubkeeper_domain::settings::Settings;
use hubkeeper_domain::subscription::Subscription;
use hubkeeper_domain::upcasters;
use hubkeeper_domain::webhook_log::HubSpotWebhookLog;
use serde::Deserialize;
use serde_json::Value;

/// One fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    aggregate_type: String,
    event_type: String,
    event_version: String,
    payload: Value,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

fn fixture_path(stored: &StoredEventType, version: &str) -> PathBuf {
    fixtures_dir()
        .join(stored.aggregate_type)
        .join(format!("{}.v{version}.json", stored.event_type))
}

fn read_fixture(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not a stored event: {e}", path.display()))
}

/// The stored event after upcasting, as the event store hands it to deserialization.
fn upcast(fixture: &Fixture) -> SerializedEvent {
    let mut event = SerializedEvent::new(
        "fixture".to_owned(),
        1,
        fixture.aggregate_type.clone(),
        fixture.event_type.clone(),
        fixture.event_version.clone(),
        fixture.payload.clone(),
        serde_json::json!({}),
    );
    for upcaster in upcasters::all() {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    event
}

/// Versions compared as numbers, so `1.1` and `1.1.0` (what cqrs-es's semantic-version upcaster
/// writes) are the same version.
fn same_version(a: &str, b: &str) -> bool {
    fn parts(v: &str) -> Vec<u64> {
        let mut parts: Vec<u64> = v
            .split('.')
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect();
        while parts.len() > 1 && parts.last() == Some(&0) {
            parts.pop();
        }
        parts
    }
    parts(a) == parts(b)
}

/// Loads the fixture as aggregate `A` would, applies it to a fresh aggregate, and returns what
/// the code would store for the decoded event today.
fn load<A: Aggregate>(path: &Path, fixture: &Fixture, current: &str) -> Value {
    let upcast = upcast(fixture);
    assert!(
        same_version(&upcast.event_version, current),
        "{}: version {} is read as {} after upcasting, not the current {current}; add an \
         upcaster",
        path.display(),
        fixture.event_version,
        upcast.event_version,
    );
    let event: A::Event = serde_json::from_value(upcast.payload)
        .unwrap_or_else(|e| panic!("{}: does not load: {e}", path.display()));
    assert_eq!(event.event_type(), fixture.event_type, "{}", path.display());
    assert_eq!(event.event_version(), current, "{}", path.display());
    let written = serde_json::to_value(&event).expect("events serialize");
    let mut aggregate = A::default();
    aggregate.apply(event);
    written
}

fn load_any(path: &Path, fixture: &Fixture, current: &str) -> Value {
    match fixture.aggregate_type.as_str() {
        App::TYPE => load::<App>(path, fixture, current),
        Installation::TYPE => load::<Installation>(path, fixture, current),
        Plan::TYPE => load::<Plan>(path, fixture, current),
        Subscription::TYPE => load::<Subscription>(path, fixture, current),
        Settings::TYPE => load::<Settings>(path, fixture, current),
        AppEndpoints::TYPE => load::<AppEndpoints>(path, fixture, current),
        ApiKey::TYPE => load::<ApiKey>(path, fixture, current),
        Operation::TYPE => load::<Operation>(path, fixture, current),
        HubSpotWebhookLog::TYPE => load::<HubSpotWebhookLog>(path, fixture, current),
        other => panic!("{}: unknown aggregate type {other}", path.display()),
    }
}

#[test]
fn every_stored_event_version_loads_and_the_current_ones_are_written_unchanged() {
    let mut checked = 0;
    for stored in STORED_EVENT_TYPES {
        let current = stored.current_version();
        for version in stored.versions {
            let path = fixture_path(stored, version);
            assert!(
                path.is_file(),
                "{} {} version {version} has no fixture: add {} with a stored event of that \
                 version",
                stored.aggregate_type,
                stored.event_type,
                path.display()
            );
            let fixture = read_fixture(&path);
            assert_eq!(
                fixture.aggregate_type,
                stored.aggregate_type,
                "{}",
                path.display()
            );
            assert_eq!(fixture.event_type, stored.event_type, "{}", path.display());
            assert_eq!(fixture.event_version, *version, "{}", path.display());
            let written = load_any(&path, &fixture, current);
            if *version == current {
                assert_eq!(
                    written,
                    fixture.payload,
                    "{}: the code no longer writes this event in its stored form; a change of \
                     the stored form needs a new version and an upcaster",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= STORED_EVENT_TYPES.len());
}

#[test]
fn the_catalog_lists_every_event_type_of_every_aggregate() {
    let catalogued: BTreeSet<(&str, &str)> = STORED_EVENT_TYPES
        .iter()
        .map(|s| (s.aggregate_type, s.event_type))
        .collect();
    assert_eq!(catalogued.len(), STORED_EVENT_TYPES.len(), "listed twice");
    let declared: BTreeSet<(&str, &str)> = event_types_by_aggregate()
        .into_iter()
        .flat_map(|(aggregate, types)| types.iter().map(move |t| (aggregate, *t)))
        .collect();
    assert_eq!(catalogued, declared);
    for stored in STORED_EVENT_TYPES {
        assert!(!stored.versions.is_empty(), "{stored:?} lists no version");
    }
}

#[test]
fn every_fixture_file_belongs_to_a_catalogued_version() {
    let expected: BTreeSet<PathBuf> = STORED_EVENT_TYPES
        .iter()
        .flat_map(|s| s.versions.iter().map(move |v| fixture_path(s, v)))
        .collect();
    let mut found = BTreeSet::new();
    for aggregate in std::fs::read_dir(fixtures_dir()).expect("fixtures directory") {
        let aggregate = aggregate.expect("directory entry").path();
        for file in std::fs::read_dir(&aggregate).expect("aggregate directory") {
            found.insert(file.expect("directory entry").path());
        }
    }
    let strays: Vec<_> = found.difference(&expected).collect();
    assert!(
        strays.is_empty(),
        "fixtures of no catalogued event version (misnamed, or missing from the catalog): \
         {strays:?}"
    );
}

#[test]
fn a_changed_stored_form_is_caught() {
    // The check above must be able to fail: a payload the code would write differently (a
    // renamed field) either does not load or is not written back unchanged.
    let stored = STORED_EVENT_TYPES
        .iter()
        .find(|s| s.event_type == "InstallationRevoked")
        .expect("catalogued");
    let path = fixture_path(stored, stored.current_version());
    let mut fixture = read_fixture(&path);
    let inner = fixture.payload["InstallationRevoked"]
        .as_object_mut()
        .expect("tagged payload");
    let reason = inner.remove("reason").expect("has a reason");
    inner.insert("why".to_owned(), reason);
    let outcome = std::panic::catch_unwind(|| load_any(&path, &fixture, stored.current_version()));
    assert!(outcome.is_err(), "a payload without `reason` must not load");
}
