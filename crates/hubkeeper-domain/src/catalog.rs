//! Every event type the domain stores, with every version ever written.
//!
//! Stored events are read forever, so each `(event type, version)` here has a fixture of its
//! exact stored form under `tests/fixtures/events/<aggregate>/<EventType>.v<version>.json`, and a
//! test loads every one of them the way the event store does (upcasters first). Adding an event
//! type or a version means adding it here and adding its fixture; an old version is never
//! removed, since rows of that shape stay in the store.

use cqrs_es::Aggregate;

use crate::access::{self, ApiKey};
use crate::app::{self, App, APP_REGISTERED_VERSION};
use crate::installation::{self, Installation};
use crate::notification::{self, AppEndpoints};
use crate::operations::{self, Operation};
use crate::plan::{self, Plan};
use crate::settings::{self, Settings};
use crate::subscription::{self, Subscription};
use crate::webhook_log::{self, HubSpotWebhookLog};

/// One stored event type and the versions it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEventType {
    /// `aggregate_type` column (the aggregate's `TYPE`).
    pub aggregate_type: &'static str,
    /// `event_type` column.
    pub event_type: &'static str,
    /// Every version ever written, oldest first; the last is what the code writes today.
    pub versions: &'static [&'static str],
}

impl StoredEventType {
    /// The version written today.
    pub fn current_version(&self) -> &'static str {
        self.versions.last().copied().unwrap_or("1.0")
    }
}

const fn stored(
    aggregate_type: &'static str,
    event_type: &'static str,
    versions: &'static [&'static str],
) -> StoredEventType {
    StoredEventType {
        aggregate_type,
        event_type,
        versions,
    }
}

const V1_0: &[&str] = &["1.0"];

/// Every event type of every aggregate.
pub const STORED_EVENT_TYPES: &[StoredEventType] = &[
    stored(
        App::TYPE,
        app::event_types::APP_REGISTERED,
        &["1.0", APP_REGISTERED_VERSION],
    ),
    stored(App::TYPE, app::event_types::APP_UPDATED, V1_0),
    stored(App::TYPE, app::event_types::APP_DELETED, V1_0),
    stored(App::TYPE, app::event_types::APP_CLIENT_SECRET_ROTATED, V1_0),
    stored(App::TYPE, app::event_types::APP_CREDENTIALS_REJECTED, V1_0),
    stored(App::TYPE, app::event_types::APP_REFRESHES_RESUMED, V1_0),
    stored(
        Installation::TYPE,
        installation::event_types::CONNECTED,
        V1_0,
    ),
    stored(
        Installation::TYPE,
        installation::event_types::RECONNECTED,
        V1_0,
    ),
    stored(
        Installation::TYPE,
        installation::event_types::TOKENS_REFRESHED,
        V1_0,
    ),
    stored(
        Installation::TYPE,
        installation::event_types::REFRESH_FAILED,
        V1_0,
    ),
    stored(
        Installation::TYPE,
        installation::event_types::REAUTHORIZATION_REQUIRED,
        V1_0,
    ),
    stored(Installation::TYPE, installation::event_types::REVOKED, V1_0),
    stored(
        Installation::TYPE,
        installation::event_types::DISCONNECTED,
        V1_0,
    ),
    stored(
        Installation::TYPE,
        installation::event_types::TENANT_FORGOTTEN,
        V1_0,
    ),
    stored(
        Installation::TYPE,
        installation::event_types::REMOVAL_SCHEDULED,
        V1_0,
    ),
    stored(
        Installation::TYPE,
        installation::event_types::REMOVAL_CANCELLED,
        V1_0,
    ),
    stored(Plan::TYPE, plan::event_types::PLAN_CREATED, V1_0),
    stored(Plan::TYPE, plan::event_types::PLAN_DETAILS_CHANGED, V1_0),
    stored(
        Plan::TYPE,
        plan::event_types::PLAN_REDUCTION_ANNOUNCED,
        V1_0,
    ),
    stored(Plan::TYPE, plan::event_types::PLAN_REPRICED, V1_0),
    stored(Plan::TYPE, plan::event_types::PLAN_STATUS_CHANGED, V1_0),
    stored(Plan::TYPE, plan::event_types::PLAN_DELETED, V1_0),
    stored(
        Subscription::TYPE,
        subscription::event_types::SUBSCRIPTION_STARTED,
        V1_0,
    ),
    stored(
        Subscription::TYPE,
        subscription::event_types::SUBSCRIPTION_PLAN_CHANGED,
        V1_0,
    ),
    stored(
        Subscription::TYPE,
        subscription::event_types::SUBSCRIPTION_RENEWED,
        V1_0,
    ),
    stored(
        Subscription::TYPE,
        subscription::event_types::USAGE_LIMIT_REACHED,
        V1_0,
    ),
    stored(
        Settings::TYPE,
        settings::event_types::OAUTH_RATE_LIMIT_CHANGED,
        V1_0,
    ),
    stored(Settings::TYPE, settings::event_types::LOGGING_CHANGED, V1_0),
    stored(Settings::TYPE, settings::event_types::BACKUPS_CHANGED, V1_0),
    stored(
        AppEndpoints::TYPE,
        notification::event_types::ENDPOINT_ADDED,
        V1_0,
    ),
    stored(
        AppEndpoints::TYPE,
        notification::event_types::ENDPOINT_CHANGED,
        V1_0,
    ),
    stored(
        AppEndpoints::TYPE,
        notification::event_types::ENDPOINT_SECRET_ROTATED,
        V1_0,
    ),
    stored(
        AppEndpoints::TYPE,
        notification::event_types::ENDPOINT_DISABLED,
        V1_0,
    ),
    stored(
        AppEndpoints::TYPE,
        notification::event_types::ENDPOINT_REMOVED,
        V1_0,
    ),
    stored(
        AppEndpoints::TYPE,
        notification::event_types::DELIVERY_RESENT,
        V1_0,
    ),
    stored(ApiKey::TYPE, access::event_types::API_KEY_CREATED, V1_0),
    stored(ApiKey::TYPE, access::event_types::API_KEY_REVOKED, V1_0),
    stored(ApiKey::TYPE, access::event_types::DASHBOARD_LOGGED_IN, V1_0),
    stored(
        ApiKey::TYPE,
        access::event_types::DASHBOARD_LOGGED_OUT,
        V1_0,
    ),
    stored(
        Operation::TYPE,
        operations::event_types::LOG_IN_FAILED,
        V1_0,
    ),
    stored(
        Operation::TYPE,
        operations::event_types::RATE_LIMITS_CLEARED,
        V1_0,
    ),
    stored(
        Operation::TYPE,
        operations::event_types::CONFIGURATION_RELOADED,
        V1_0,
    ),
    stored(
        Operation::TYPE,
        operations::event_types::BACKUP_STARTED,
        V1_0,
    ),
    stored(
        Operation::TYPE,
        operations::event_types::SELF_TEST_RUN,
        V1_0,
    ),
    stored(
        HubSpotWebhookLog::TYPE,
        webhook_log::event_types::HUBSPOT_WEBHOOK_RECEIVED,
        V1_0,
    ),
];

/// Each aggregate's own list of event types, to check the catalog against.
pub fn event_types_by_aggregate() -> [(&'static str, &'static [&'static str]); 9] {
    [
        (App::TYPE, &app::event_types::ALL),
        (Installation::TYPE, &installation::event_types::ALL),
        (Plan::TYPE, &plan::event_types::ALL),
        (Subscription::TYPE, &subscription::event_types::ALL),
        (Settings::TYPE, &settings::event_types::ALL),
        (AppEndpoints::TYPE, &notification::event_types::ALL),
        (ApiKey::TYPE, &access::event_types::ALL),
        (Operation::TYPE, &operations::event_types::ALL),
        (HubSpotWebhookLog::TYPE, &webhook_log::event_types::ALL),
    ]
}
