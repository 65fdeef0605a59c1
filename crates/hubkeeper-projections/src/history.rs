//! The event history for auditors: filtered pages of events in global order, and the state of an
//! aggregate as of a moment, folded from its events with the domain's own `apply`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use hubkeeper_domain::app::App;
use hubkeeper_domain::installation::{HistoryEntry, Installation, Installer, LastFailure};
use hubkeeper_domain::webhook_log::{
    event_types::HUBSPOT_WEBHOOK_RECEIVED, AGGREGATE_TYPE as WEBHOOK_LOG_TYPE,
};
use hubkeeper_store::{GlobalCursor, StoredEvent};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool, Row};

use crate::event::{DomainEvent, ProjectedEvent};

/// A position in the global order as the API shows it: `<tx>-<position>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PositionCursor(pub GlobalCursor);

impl fmt::Display for PositionCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0.tx, self.0.position)
    }
}

impl FromStr for PositionCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a cursor of the form <tx>-<position>");
        let (tx, position) = s.trim().split_once('-').ok_or_else(bad)?;
        Ok(Self(GlobalCursor {
            tx: tx.parse().map_err(|_| bad())?,
            position: position.parse().map_err(|_| bad())?,
        }))
    }
}

impl ProjectedEvent {
    /// This event's place in the global order, as the API shows it.
    pub fn position_cursor(&self) -> PositionCursor {
        PositionCursor(GlobalCursor {
            tx: self.tx_id,
            position: self.global_position,
        })
    }
}

/// Which events to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// Only events after this position.
    pub after: GlobalCursor,
}

/// One event as the audit API and the export show it (payload upcast to the current version).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub position: String,
    pub global_position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// Present when the stored version differs (the payload was upcast on read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_version: Option<String>,
    pub recorded_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl From<ProjectedEvent> for AuditEvent {
    fn from(e: ProjectedEvent) -> Self {
        let cursor = GlobalCursor {
            tx: e.tx_id,
            position: e.global_position,
        };
        Self {
            position: PositionCursor(cursor).to_string(),
            global_position: e.global_position,
            stored_version: (e.stored_version != e.event_version).then_some(e.stored_version),
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            recorded_at: e.recorded_at,
            payload: e.payload,
            metadata: e.metadata,
        }
    }
}

const SELECT_EVENTS: &str = "
SELECT global_position, tx_id::text AS tx_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload, metadata, recorded_at
  FROM events
 WHERE (tx_id, global_position) > ($1::text::xid8, $2)
   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
   AND ($3::text IS NULL OR aggregate_type = $3)
   AND ($4::text IS NULL OR aggregate_id = $4)
   AND ($5::text IS NULL OR event_type = $5)
   AND ($6::timestamptz IS NULL OR recorded_at >= $6)
   AND ($7::timestamptz IS NULL OR recorded_at < $7)
 -- Qualified: a bare `tx_id` would sort by the text alias above ('10' < '9').
 ORDER BY events.tx_id, events.global_position
 LIMIT $8";

/// Up to `limit` events matching `filter`, in global order (only committed transactions below
/// the read horizon, so a page never skips an event that commits later).
pub async fn list_events<'e, E: PgExecutor<'e>>(
    executor: E,
    filter: &EventFilter,
    limit: i64,
) -> Result<Vec<ProjectedEvent>, sqlx::Error> {
    let rows = sqlx::query(SELECT_EVENTS)
        .bind(filter.after.tx.to_string())
        .bind(filter.after.position)
        .bind(filter.aggregate_type.as_deref())
        .bind(filter.aggregate_id.as_deref())
        .bind(filter.event_type.as_deref())
        .bind(filter.from)
        .bind(filter.to)
        .bind(limit)
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| stored_from_row(row).map(ProjectedEvent::from_stored))
        .collect()
}

fn stored_from_row(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, sqlx::Error> {
    let tx: String = row.try_get("tx_id")?;
    Ok(StoredEvent {
        global_position: row.try_get("global_position")?,
        tx_id: tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
            index: "tx_id".into(),
            source: Box::new(e),
        })?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// The events of one aggregate recorded at or before `at`, in sequence order.
async fn events_until<'e, E: PgExecutor<'e>>(
    executor: E,
    aggregate_type: &str,
    aggregate_id: &str,
    at: DateTime<Utc>,
) -> Result<Vec<ProjectedEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT global_position, tx_id::text AS tx_id, aggregate_type, aggregate_id, sequence,
                event_type, event_version, payload, metadata, recorded_at
           FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND recorded_at <= $3
          ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(at)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| stored_from_row(row).map(ProjectedEvent::from_stored))
        .collect()
}

/// An installation as it was at `as_of` (no tokens: only their expiry).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallationAsOf {
    pub installation_id: String,
    pub as_of: DateTime<Utc>,
    /// Events folded (the aggregate's sequence at that time).
    pub sequence: i64,
    pub status: Option<String>,
    pub app_id: Option<String>,
    pub hub_id: Option<u64>,
    pub user_id: Option<u64>,
    pub hub_domain: String,
    pub installer: Installer,
    pub scopes: Vec<String>,
    pub app_version: Option<String>,
    pub generation: u64,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub first_connected_at: Option<DateTime<Utc>>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub last_failure: Option<LastFailure>,
    pub forgotten_at: Option<DateTime<Utc>>,
    /// HubSpot webhook events its log had recorded by then, and the latest HubSpot time among
    /// them.
    pub webhook_events: i64,
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub history: Vec<HistoryEntry>,
}

/// An app as it was at `as_of` (without its sealed client secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppAsOf {
    pub app_id: String,
    pub as_of: DateTime<Utc>,
    pub sequence: i64,
    pub label: String,
    pub description: String,
    pub environment: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub optional_scopes: Vec<String>,
    pub oauth_generation: String,
    pub signature_versions: Vec<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The installation folded from its events recorded at or before `at`; `None` if it did not
/// exist yet.
pub async fn installation_as_of(
    pool: &PgPool,
    installation_id: &str,
    at: DateTime<Utc>,
) -> Result<Option<InstallationAsOf>, sqlx::Error> {
    let events = events_until(pool, Installation::TYPE, installation_id, at).await?;
    let mut state = Installation::default();
    let mut sequence = 0;
    for event in &events {
        sequence = event.sequence;
        if let DomainEvent::Installation(e) = event.decode() {
            state.apply(e);
        }
    }
    let Some(status) = state.status_at(at) else {
        return Ok(None);
    };
    // Its webhook log, folded in the database: it can hold millions of events.
    let (webhook_events, last_webhook_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), max((payload -> $3 ->> 'occurred_at')::timestamptz) FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND recorded_at <= $4",
    )
    .bind(WEBHOOK_LOG_TYPE)
    .bind(installation_id)
    .bind(HUBSPOT_WEBHOOK_RECEIVED)
    .bind(at)
    .fetch_one(pool)
    .await?;
    Ok(Some(InstallationAsOf {
        installation_id: installation_id.to_owned(),
        as_of: at,
        sequence,
        status: Some(
            if state.forgotten_at().is_some() {
                "forgotten"
            } else {
                status.as_str()
            }
            .to_owned(),
        ),
        app_id: state.app_id().map(|a| a.to_string()),
        hub_id: state.hub_id().map(|h| h.get()),
        user_id: state.user_id().map(|u| u.get()),
        hub_domain: state.hub_domain().to_owned(),
        installer: state.installer().clone(),
        scopes: state.granted_scopes().iter().cloned().collect(),
        app_version: state.app_version().map(str::to_owned),
        generation: state.generation(),
        access_expires_at: state.access_expires_at(),
        first_connected_at: state.first_connected_at(),
        last_connected_at: state.last_connected_at(),
        last_refreshed_at: state.last_refreshed_at(),
        consecutive_failures: state.consecutive_failures(),
        last_failure: state.last_failure().cloned(),
        forgotten_at: state.forgotten_at(),
        webhook_events,
        last_webhook_at,
        history: state.history().to_vec(),
    }))
}

/// The app folded from its events recorded at or before `at`; `None` if it did not exist yet.
pub async fn app_as_of<'e, E: PgExecutor<'e>>(
    executor: E,
    app_id: &str,
    at: DateTime<Utc>,
) -> Result<Option<AppAsOf>, sqlx::Error> {
    let events = events_until(executor, App::TYPE, app_id, at).await?;
    let mut state = App::default();
    let mut sequence = 0;
    for event in &events {
        sequence = event.sequence;
        if let DomainEvent::App(e) = event.decode() {
            state.apply(e);
        }
    }
    let Some(config) = state.config() else {
        return Ok(None);
    };
    Ok(Some(AppAsOf {
        app_id: app_id.to_owned(),
        as_of: at,
        sequence,
        label: config.label.clone(),
        description: config.description.clone(),
        environment: config.environment.as_str().to_owned(),
        client_id: config.client_id.clone(),
        redirect_uri: config.redirect_uri.clone(),
        scopes: config.scopes.iter().cloned().collect(),
        optional_scopes: config.optional_scopes.iter().cloned().collect(),
        oauth_generation: config.oauth_generation.as_str().to_owned(),
        signature_versions: config
            .signature_versions
            .iter()
            .map(|v| v.as_str().to_owned())
            .collect(),
        registered_at: config.registered_at,
        updated_at: state.updated_at(),
        deleted_at: state.deleted_at(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = PositionCursor(GlobalCursor {
            tx: 812,
            position: 99,
        });
        assert_eq!(c.to_string(), "812-99");
        assert_eq!("812-99".parse::<PositionCursor>(), Ok(c));
        assert!("812".parse::<PositionCursor>().is_err());
        assert!("a-b".parse::<PositionCursor>().is_err());
    }
}
