//! Applying events to the read models: the only code that writes them from events, shared by the
//! live projector and replay.
//!
//! A batch is applied in four steps, inside the caller's transaction:
//! 1. the rows of every aggregate in the batch are loaded and locked (`FOR UPDATE`, apps before
//!    installations, each by id, so concurrent batches queue instead of deadlocking);
//! 2. each event is judged against its aggregate's row, which remembers the sequence of the last
//!    event applied:
//!    - `sequence <= last_sequence`: already applied (redelivery, or a replay got there first):
//!      [`Outcome::Duplicate`];
//!    - `sequence == last_sequence + 1`: applied to the in-memory row by the pure functions
//!      [`InstallationRow::apply`] and [`AppRow::apply`];
//!    - `sequence > last_sequence + 1`: an earlier event is still in flight elsewhere:
//!      [`Outcome::Gap`], nothing written; the caller retries it a moment later;
//! 3. the activity line and status-history period of every applied event are derived;
//! 4. everything changed is written back with a handful of set-based statements.
//!
//! An aggregate's row is created by its first *creating* event (`InstallationConnected`,
//! `AppRegistered`). Events before it that cannot create a row (types this version does not
//! know, or known ones that make no sense before a create) are skipped, and a creating event
//! creates the row whatever its sequence. Without a row, a non-creating event is a gap only
//! when the store holds the creating event before it (in flight elsewhere); otherwise nothing
//! could ever fill the gap, so it is skipped instead of being retried forever. Unknown event
//! types are counted (`hk_projector_unknown_events_total`) and logged once per type.
//!
//! Rows that do not exist yet cannot be locked; two batches may both create one. Their upserts
//! only overwrite a row with a higher `last_sequence`, period ends only ever go from open to
//! closed, and activity lines are keyed by global position, so whichever commits last cannot
//! move a read model backwards.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock, PoisonError};

use chrono::{DateTime, Utc};
use hubkeeper_domain::app::AppEvent;
use hubkeeper_domain::installation::InstallationEvent;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::activity::{describe, serde_name, Context};
use crate::event::{DomainEvent, ProjectedEvent};
use crate::tables::{Projection, Tables};

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already applied earlier; acknowledge and move on.
    Duplicate,
    /// An earlier event of the same aggregate has not been applied yet.
    Gap {
        last_sequence: i64,
    },
    /// Nothing to project (an event this version does not understand, or for no projection
    /// enabled); acknowledged.
    Skipped,
}

/// [`Outcome`] plus what the caller must do after committing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub outcome: Outcome,
    /// An app whose installation counts may have changed (see [`crate::counts`]).
    pub recount_app: Option<Uuid>,
}

impl ApplyReport {
    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            recount_app: None,
        }
    }
}

fn judge(sequence: i64, last: i64) -> Option<Outcome> {
    if sequence <= last {
        Some(Outcome::Duplicate)
    } else if sequence > last + 1 {
        Some(Outcome::Gap {
            last_sequence: last,
        })
    } else {
        None
    }
}

/// How an event meets an aggregate that has no row yet; `None`: apply it (it creates the row).
/// `creator` is the sequence of the aggregate's creating event in the store, if any.
fn judge_without_row(creates: bool, sequence: i64, creator: Option<i64>) -> Option<Outcome> {
    match creator {
        _ if creates => None,
        // The creating event is in flight elsewhere; this one must wait for it.
        Some(created) if created < sequence => Some(Outcome::Gap { last_sequence: 0 }),
        // Nothing before this event can create the row: waiting would never end.
        _ => Some(Outcome::Skipped),
    }
}

/// Counts an event of a type this version does not project, and says so once per type and
/// process (a newer release may write many of them during a rolling deploy).
fn note_unknown(event: &ProjectedEvent) {
    static SEEN: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    metrics::counter!(
        "hk_projector_unknown_events_total",
        "aggregate_type" => event.aggregate_type.clone(),
        "event_type" => event.event_type.clone()
    )
    .increment(1);
    let first = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((event.aggregate_type.clone(), event.event_type.clone()));
    if first {
        tracing::warn!(
            aggregate_type = %event.aggregate_type,
            event_type = %event.event_type,
            "event type unknown to this version: skipped by the read models (logged once per type)"
        );
    }
}

/// HubSpot ids are far below `i64::MAX`; saturate rather than wrap if one ever is not.
fn big(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// The event-derived columns of `rm_installations` (side columns are never touched here).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct InstallationRow {
    pub installation_id: Uuid,
    pub app_id: Uuid,
    pub hub_id: i64,
    pub user_id: Option<i64>,
    pub hub_domain: String,
    pub installer_user_id: Option<i64>,
    pub installer_email: Option<String>,
    pub scopes: Vec<String>,
    pub app_version: Option<String>,
    pub status: String,
    pub disconnect_cause: Option<String>,
    pub status_reason: Option<String>,
    pub status_changed_at: DateTime<Utc>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub first_connected_at: DateTime<Utc>,
    pub last_connected_at: DateTime<Utc>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub last_failure_class: Option<String>,
    pub last_failure_message: Option<String>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub generation: i64,
    pub forgotten_at: Option<DateTime<Utc>>,
    pub last_sequence: i64,
    pub last_position: i64,
    pub updated_at: DateTime<Utc>,
}

const INSTALLATION_COLUMNS: &str = "installation_id, app_id, hub_id, user_id, hub_domain, \
    installer_user_id, installer_email, scopes, app_version, status, disconnect_cause, \
    status_reason, status_changed_at, access_expires_at, first_connected_at, last_connected_at, \
    last_refreshed_at, consecutive_failures, last_failure_class, last_failure_message, \
    last_failure_at, generation, forgotten_at, last_sequence, last_position, updated_at";

impl InstallationRow {
    /// The row an installation's first event creates; `None` for any other first event.
    pub fn create(id: Uuid, event: &ProjectedEvent, e: &InstallationEvent) -> Option<Self> {
        let InstallationEvent::Connected(c) = e else {
            return None;
        };
        Some(Self {
            installation_id: id,
            app_id: c.app_id.as_uuid(),
            hub_id: big(c.hub_id.get()),
            user_id: c.user_id.map(|u| big(u.get())),
            hub_domain: c.hub_domain.clone(),
            installer_user_id: c.installer.user_id.map(|u| big(u.get())),
            installer_email: c.installer.email.clone(),
            scopes: c.scopes.clone(),
            app_version: c.app_version.clone(),
            status: "connected".into(),
            disconnect_cause: None,
            status_reason: None,
            status_changed_at: c.connected_at,
            access_expires_at: Some(c.tokens.access_expires_at),
            first_connected_at: c.connected_at,
            last_connected_at: c.connected_at,
            last_refreshed_at: None,
            consecutive_failures: 0,
            last_failure_class: None,
            last_failure_message: None,
            last_failure_at: None,
            generation: big(c.generation),
            forgotten_at: None,
            last_sequence: event.sequence,
            last_position: event.global_position,
            updated_at: event.recorded_at,
        })
    }

    fn set_status(&mut self, status: &str, at: DateTime<Utc>) {
        if self.status != status {
            self.status = status.to_owned();
            self.status_changed_at = at;
        }
    }

    fn clear_failures(&mut self) {
        self.consecutive_failures = 0;
        self.last_failure_class = None;
        self.last_failure_message = None;
        self.last_failure_at = None;
    }

    fn track(&mut self, event: &ProjectedEvent) {
        self.last_sequence = event.sequence;
        self.last_position = event.global_position;
        self.updated_at = event.recorded_at;
    }

    /// Applies an event after the first; returns the new status if it changed, with when.
    pub fn apply(
        &mut self,
        event: &ProjectedEvent,
        e: &InstallationEvent,
    ) -> Option<(String, DateTime<Utc>)> {
        let before = self.status.clone();
        let at = match e {
            InstallationEvent::Connected(c) => {
                // Cannot follow a first connect; keep the stream moving.
                c.connected_at
            }
            InstallationEvent::Reconnected(c) => {
                self.hub_domain = c.hub_domain.clone();
                self.installer_user_id = c.installer.user_id.map(|u| big(u.get()));
                self.installer_email = c.installer.email.clone();
                self.scopes = c.scopes.clone();
                if c.app_version.is_some() {
                    self.app_version = c.app_version.clone();
                }
                self.set_status("connected", c.connected_at);
                self.disconnect_cause = None;
                self.status_reason = None;
                self.access_expires_at = Some(c.tokens.access_expires_at);
                self.generation = big(c.generation);
                self.last_connected_at = c.connected_at;
                self.clear_failures();
                self.forgotten_at = None;
                c.connected_at
            }
            InstallationEvent::TokensRefreshed(r) => {
                self.set_status("connected", r.refreshed_at);
                self.access_expires_at = Some(r.tokens.access_expires_at);
                self.generation = big(r.generation);
                self.last_refreshed_at = Some(r.refreshed_at);
                self.clear_failures();
                r.refreshed_at
            }
            InstallationEvent::RefreshFailed(f) => {
                self.consecutive_failures =
                    i32::try_from(f.consecutive_failures).unwrap_or(i32::MAX);
                self.last_failure_class = Some(serde_name(&f.class));
                self.last_failure_message = Some(f.message.clone());
                self.last_failure_at = Some(f.failed_at);
                f.failed_at
            }
            InstallationEvent::ReauthorizationRequired(f) => {
                self.set_status("needs_reauthorization", f.failed_at);
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_failure_class = Some(serde_name(&f.class));
                self.last_failure_message = Some(f.message.clone());
                self.last_failure_at = Some(f.failed_at);
                f.failed_at
            }
            InstallationEvent::Revoked(r) => {
                self.set_status("revoked", r.revoked_at);
                self.disconnect_cause = None;
                self.status_reason = Some(r.reason.clone());
                self.access_expires_at = None;
                r.revoked_at
            }
            InstallationEvent::Disconnected(d) => {
                self.set_status("disconnected", d.disconnected_at);
                self.disconnect_cause = Some(serde_name(&d.cause));
                self.status_reason = d.reason.clone();
                self.access_expires_at = None;
                d.disconnected_at
            }
            InstallationEvent::TenantForgotten(f) => {
                self.set_status("forgotten", f.forgotten_at);
                self.status_reason = Some(f.reason.clone());
                self.forgotten_at = Some(f.forgotten_at);
                f.forgotten_at
            }
        };
        self.track(event);
        (self.status != before).then(|| (self.status.clone(), at))
    }
}

/// The event-derived columns of `rm_apps` (installation counts are recounted, not projected).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AppRow {
    pub app_id: Uuid,
    pub label: String,
    pub client_id: String,
    pub environment: String,
    pub description: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub optional_scopes: Vec<String>,
    pub oauth_generation: String,
    pub signature_versions: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub last_sequence: i64,
    pub last_position: i64,
}

const APP_COLUMNS: &str = "app_id, label, client_id, environment, description, redirect_uri, \
    scopes, optional_scopes, oauth_generation, signature_versions, created_at, updated_at, \
    deleted_at, last_sequence, last_position";

impl AppRow {
    pub fn create(id: Uuid, event: &ProjectedEvent, e: &AppEvent) -> Option<Self> {
        let AppEvent::Registered(r) = e else {
            return None;
        };
        Some(Self {
            app_id: id,
            label: r.label.clone(),
            client_id: r.client_id.clone(),
            environment: r.environment.as_str().to_owned(),
            description: r.description.clone(),
            redirect_uri: r.redirect_uri.clone(),
            scopes: r.scopes.clone(),
            optional_scopes: r.optional_scopes.clone(),
            oauth_generation: r.oauth_generation.as_str().to_owned(),
            signature_versions: r
                .signature_versions
                .iter()
                .map(|v| v.as_str().to_owned())
                .collect(),
            created_at: r.registered_at,
            updated_at: r.registered_at,
            deleted_at: None,
            last_sequence: event.sequence,
            last_position: event.global_position,
        })
    }

    pub fn apply(&mut self, event: &ProjectedEvent, e: &AppEvent) {
        match e {
            AppEvent::Registered(_) => {}
            AppEvent::Updated(u) => {
                if let Some(v) = &u.label {
                    self.label = v.clone();
                }
                if let Some(v) = &u.description {
                    self.description = v.clone();
                }
                if let Some(v) = u.environment {
                    self.environment = v.as_str().to_owned();
                }
                if let Some(v) = &u.redirect_uri {
                    self.redirect_uri = v.clone();
                }
                if let Some(v) = &u.scopes {
                    self.scopes = v.clone();
                }
                if let Some(v) = &u.optional_scopes {
                    self.optional_scopes = v.clone();
                }
                if let Some(v) = u.oauth_generation {
                    self.oauth_generation = v.as_str().to_owned();
                }
                if let Some(v) = &u.signature_versions {
                    self.signature_versions = v.iter().map(|v| v.as_str().to_owned()).collect();
                }
                self.updated_at = u.updated_at;
            }
            AppEvent::Deleted(d) => self.deleted_at = Some(d.deleted_at),
        }
        self.last_sequence = event.sequence;
        self.last_position = event.global_position;
    }
}

/// A row of `rm_installation_status_periods`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Period {
    installation_id: Uuid,
    sequence: i64,
    app_id: Uuid,
    status: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

/// A row of `rm_activity`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct ActivityRow {
    global_position: i64,
    occurred_at: DateTime<Utc>,
    level: &'static str,
    actor: String,
    aggregate_type: String,
    aggregate_id: String,
    event_type: String,
    installation_id: Option<Uuid>,
    app_id: Option<Uuid>,
    hub_id: Option<i64>,
    message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Subject {
    installation_id: Uuid,
    app_id: Uuid,
    hub_id: i64,
}

/// The open period of an installation: already stored, or opened by this batch (an index into
/// the batch's new periods).
#[derive(Debug, Clone, Copy)]
enum OpenPeriod {
    Stored(i64),
    New(usize),
}

#[derive(Default)]
struct Batch {
    installations: HashMap<Uuid, InstallationRow>,
    dirty_installations: Vec<Uuid>,
    apps: HashMap<Uuid, AppRow>,
    dirty_apps: Vec<Uuid>,
    open_periods: HashMap<Uuid, OpenPeriod>,
    closes: Vec<(Uuid, i64, DateTime<Utc>)>,
    new_periods: Vec<Period>,
    subjects: HashMap<Uuid, (Uuid, i64)>,
    new_subjects: Vec<Subject>,
    activity: Vec<ActivityRow>,
    /// Sequence of the creating event in the store, for aggregates without a row that have
    /// non-creating events in this batch (see the module docs).
    creators: HashMap<String, i64>,
    /// Plan codes by plan id, for activity lines of plan events that do not carry theirs.
    plan_codes: HashMap<String, String>,
}

impl Batch {
    /// `None`: apply the event; otherwise what it is. `last` is the sequence of the last event
    /// applied to the aggregate's row, `None` without a row.
    fn judge(
        &self,
        last: Option<i64>,
        event: &ProjectedEvent,
        decoded: &DomainEvent,
    ) -> Option<Outcome> {
        match last {
            Some(last) => judge(event.sequence, last),
            None => judge_without_row(
                creates_row(decoded),
                event.sequence,
                self.creators.get(&event.aggregate_id).copied(),
            ),
        }
    }

    fn mark_installation(&mut self, id: Uuid) {
        if !self.dirty_installations.contains(&id) {
            self.dirty_installations.push(id);
        }
    }

    fn mark_app(&mut self, id: Uuid) {
        if !self.dirty_apps.contains(&id) {
            self.dirty_apps.push(id);
        }
    }

    fn change_status(
        &mut self,
        id: Uuid,
        app: Uuid,
        sequence: i64,
        status: String,
        at: DateTime<Utc>,
    ) {
        match self.open_periods.get(&id) {
            Some(OpenPeriod::Stored(seq)) => self.closes.push((id, *seq, at)),
            Some(OpenPeriod::New(index)) => {
                if let Some(p) = self.new_periods.get_mut(*index) {
                    p.ended_at = Some(at);
                }
            }
            None => {}
        }
        self.open_periods
            .insert(id, OpenPeriod::New(self.new_periods.len()));
        self.new_periods.push(Period {
            installation_id: id,
            sequence,
            app_id: app,
            status,
            started_at: at,
            ended_at: None,
        });
    }

    fn add_activity(
        &mut self,
        event: &ProjectedEvent,
        decoded: &DomainEvent,
        installation_id: Option<Uuid>,
        app_id: Option<Uuid>,
        hub_id: Option<i64>,
    ) {
        let context = Context {
            hub_id,
            plan_code: self.plan_codes.get(&event.aggregate_id).map(String::as_str),
        };
        let (level, message) = describe(event, decoded, context);
        self.activity.push(ActivityRow {
            global_position: event.global_position,
            occurred_at: event.occurred_at(),
            level: level.as_str(),
            actor: event.actor().to_owned(),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            event_type: event.event_type.clone(),
            installation_id,
            app_id,
            hub_id,
            message,
        });
    }
}

/// Applies one event (a batch of one).
pub async fn apply_event(
    conn: &mut PgConnection,
    tables: &Tables,
    event: &ProjectedEvent,
) -> Result<ApplyReport, sqlx::Error> {
    let reports = apply_events(conn, tables, std::slice::from_ref(event)).await?;
    Ok(reports
        .into_iter()
        .next()
        .unwrap_or(ApplyReport::of(Outcome::Skipped)))
}

/// Applies `events` (in the order given, which must keep each aggregate's events in sequence
/// order) to the read models in `tables`, inside the caller's transaction. Returns one report
/// per event, in the same order.
pub async fn apply_events(
    conn: &mut PgConnection,
    tables: &Tables,
    events: &[ProjectedEvent],
) -> Result<Vec<ApplyReport>, sqlx::Error> {
    let decoded: Vec<DomainEvent> = events.iter().map(ProjectedEvent::decode).collect();
    for (event, d) in events.iter().zip(&decoded) {
        match d {
            DomainEvent::Undecodable(reason) => {
                metrics::counter!("hk_projector_undecodable_total").increment(1);
                tracing::error!(
                    event_type = %event.event_type,
                    aggregate_id = %event.aggregate_id,
                    sequence = event.sequence,
                    %reason,
                    "event payload does not decode; projected as unknown"
                );
            }
            DomainEvent::Unknown => note_unknown(event),
            _ => {}
        }
    }
    let ids = |kind: &str| -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = events
            .iter()
            .filter(|e| e.aggregate_type == kind)
            .filter_map(|e| Uuid::parse_str(&e.aggregate_id).ok())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let app_ids = ids("app");
    let installation_ids = ids("installation");
    // Subscriptions are keyed by their installation: their activity lines name it.
    let mut subject_ids = installation_ids.clone();
    subject_ids.extend(ids("subscription"));
    subject_ids.sort();
    subject_ids.dedup();

    let mut batch = Batch::default();
    if tables.has(Projection::Apps) && !app_ids.is_empty() {
        let rows: Vec<AppRow> = sqlx::query_as(&format!(
            "SELECT {APP_COLUMNS} FROM {} WHERE app_id = ANY($1) ORDER BY app_id FOR UPDATE",
            tables.apps
        ))
        .bind(&app_ids)
        .fetch_all(&mut *conn)
        .await?;
        batch.apps = rows.into_iter().map(|r| (r.app_id, r)).collect();
    }
    if tables.has(Projection::Installations) && !installation_ids.is_empty() {
        let rows: Vec<InstallationRow> = sqlx::query_as(&format!(
            "SELECT {INSTALLATION_COLUMNS} FROM {} WHERE installation_id = ANY($1)
              ORDER BY installation_id FOR UPDATE",
            tables.installations
        ))
        .bind(&installation_ids)
        .fetch_all(&mut *conn)
        .await?;
        batch.installations = rows.into_iter().map(|r| (r.installation_id, r)).collect();
        let open: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
            "SELECT installation_id, sequence FROM {} WHERE installation_id = ANY($1)
                AND ended_at IS NULL",
            tables.status_periods
        ))
        .bind(&installation_ids)
        .fetch_all(&mut *conn)
        .await?;
        batch.open_periods = open
            .into_iter()
            .map(|(id, seq)| (id, OpenPeriod::Stored(seq)))
            .collect();
    }
    if tables.has(Projection::Activity) && !subject_ids.is_empty() {
        let subjects: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(&format!(
            "SELECT installation_id, app_id, hub_id FROM {} WHERE installation_id = ANY($1)",
            tables.activity_subjects
        ))
        .bind(&subject_ids)
        .fetch_all(&mut *conn)
        .await?;
        batch.subjects = subjects
            .into_iter()
            .map(|(id, app, hub)| (id, (app, hub)))
            .collect();
    }
    batch.creators = creating_sequences(&mut *conn, tables, &batch, events, &decoded).await?;
    if tables.has(Projection::Activity) {
        batch.plan_codes = plan_codes(&mut *conn, events, &decoded).await?;
    }

    let mut reports = Vec::with_capacity(events.len());
    for (event, decoded) in events.iter().zip(&decoded) {
        let report = match event.aggregate_type.as_str() {
            "installation" => apply_installation_event(&mut batch, tables, event, decoded),
            "app" => apply_app_event(&mut batch, tables, event, decoded),
            _ => {
                if tables.has(Projection::Activity) {
                    let installation = match decoded {
                        DomainEvent::Subscription(_) => Uuid::parse_str(&event.aggregate_id).ok(),
                        _ => None,
                    };
                    let subject = installation.and_then(|id| batch.subjects.get(&id).copied());
                    batch.add_activity(
                        event,
                        decoded,
                        installation,
                        subject.map(|s| s.0),
                        subject.map(|s| s.1),
                    );
                    ApplyReport::of(Outcome::Applied)
                } else {
                    ApplyReport::of(Outcome::Skipped)
                }
            }
        };
        reports.push(report);
    }
    write(conn, tables, &batch).await?;
    Ok(reports)
}

fn apply_installation_event(
    batch: &mut Batch,
    tables: &Tables,
    event: &ProjectedEvent,
    decoded: &DomainEvent,
) -> ApplyReport {
    let Ok(id) = Uuid::parse_str(&event.aggregate_id) else {
        tracing::warn!(aggregate_id = %event.aggregate_id, "installation id is not a UUID; skipped");
        return ApplyReport::of(Outcome::Skipped);
    };
    let mut report = ApplyReport::of(Outcome::Skipped);
    if tables.has(Projection::Installations) {
        let last = batch.installations.get(&id).map(|r| r.last_sequence);
        match batch.judge(last, event, decoded) {
            // No row to track; the event still gets its activity line below.
            Some(Outcome::Skipped) => {
                tracing::debug!(
                    event_type = %event.event_type, aggregate_id = %event.aggregate_id,
                    "installation event before its connect; skipped"
                );
            }
            Some(outcome) => return ApplyReport::of(outcome),
            None => match (decoded, batch.installations.get_mut(&id)) {
                (DomainEvent::Installation(e), Some(row)) => {
                    let app = row.app_id;
                    let change = row.apply(event, e);
                    batch.mark_installation(id);
                    report.outcome = Outcome::Applied;
                    if let Some((status, at)) = change {
                        batch.change_status(id, app, event.sequence, status, at);
                        report.recount_app = Some(app);
                    }
                }
                (DomainEvent::Installation(e), None) => {
                    if let Some(row) = InstallationRow::create(id, event, e) {
                        let (app, status, at) =
                            (row.app_id, row.status.clone(), row.status_changed_at);
                        batch.installations.insert(id, row);
                        batch.mark_installation(id);
                        batch.change_status(id, app, event.sequence, status, at);
                        report = ApplyReport {
                            outcome: Outcome::Applied,
                            recount_app: Some(app),
                        };
                    }
                }
                (_, Some(row)) => {
                    // Unknown to this version: keep the position moving so later events apply.
                    row.track(event);
                    batch.mark_installation(id);
                }
                // Only creating events get here without a row (`judge_without_row`).
                (_, None) => {}
            },
        }
    }
    if tables.has(Projection::Activity) {
        if let DomainEvent::Installation(InstallationEvent::Connected(c)) = decoded {
            if let std::collections::hash_map::Entry::Vacant(slot) = batch.subjects.entry(id) {
                let subject = (c.app_id.as_uuid(), big(c.hub_id.get()));
                slot.insert(subject);
                batch.new_subjects.push(Subject {
                    installation_id: id,
                    app_id: subject.0,
                    hub_id: subject.1,
                });
            }
        }
        let subject = batch.subjects.get(&id).copied();
        batch.add_activity(
            event,
            decoded,
            Some(id),
            subject.map(|s| s.0),
            subject.map(|s| s.1),
        );
        if report.outcome == Outcome::Skipped {
            report.outcome = Outcome::Applied;
        }
    }
    report
}

fn apply_app_event(
    batch: &mut Batch,
    tables: &Tables,
    event: &ProjectedEvent,
    decoded: &DomainEvent,
) -> ApplyReport {
    let Ok(id) = Uuid::parse_str(&event.aggregate_id) else {
        tracing::warn!(aggregate_id = %event.aggregate_id, "app id is not a UUID; skipped");
        return ApplyReport::of(Outcome::Skipped);
    };
    let mut report = ApplyReport::of(Outcome::Skipped);
    if tables.has(Projection::Apps) {
        let last = batch.apps.get(&id).map(|r| r.last_sequence);
        match batch.judge(last, event, decoded) {
            // No row to track; the event still gets its activity line below.
            Some(Outcome::Skipped) => {}
            Some(outcome) => return ApplyReport::of(outcome),
            None => match (decoded, batch.apps.get_mut(&id)) {
                (DomainEvent::App(e), Some(row)) => {
                    row.apply(event, e);
                    batch.mark_app(id);
                    report.outcome = Outcome::Applied;
                }
                (DomainEvent::App(e), None) => {
                    if let Some(row) = AppRow::create(id, event, e) {
                        batch.apps.insert(id, row);
                        batch.mark_app(id);
                        // Installations may have been projected before their app: count them.
                        report = ApplyReport {
                            outcome: Outcome::Applied,
                            recount_app: Some(id),
                        };
                    }
                }
                (_, Some(row)) => {
                    row.last_sequence = event.sequence;
                    row.last_position = event.global_position;
                    batch.mark_app(id);
                }
                // Only creating events get here without a row (`judge_without_row`).
                (_, None) => {}
            },
        }
    }
    if tables.has(Projection::Activity) {
        batch.add_activity(event, decoded, None, Some(id), None);
        if report.outcome == Outcome::Skipped {
            report.outcome = Outcome::Applied;
        }
    }
    report
}

/// Whether `decoded` is the event that creates its aggregate's row.
fn creates_row(decoded: &DomainEvent) -> bool {
    matches!(
        decoded,
        DomainEvent::Installation(InstallationEvent::Connected(_))
            | DomainEvent::App(AppEvent::Registered(_))
    )
}

/// For aggregates of the batch that have no row and a non-creating event in the batch: the
/// sequence of their creating event in the store (absent if there is none). One query, and only
/// when such aggregates exist (rarely: a new aggregate's events normally start with its create).
async fn creating_sequences(
    conn: &mut PgConnection,
    tables: &Tables,
    batch: &Batch,
    events: &[ProjectedEvent],
    decoded: &[DomainEvent],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut pending: Vec<String> = Vec::new();
    for (event, d) in events.iter().zip(decoded) {
        let Ok(id) = Uuid::parse_str(&event.aggregate_id) else {
            continue;
        };
        let without_row = match event.aggregate_type.as_str() {
            "installation" => {
                tables.has(Projection::Installations) && !batch.installations.contains_key(&id)
            }
            "app" => tables.has(Projection::Apps) && !batch.apps.contains_key(&id),
            _ => false,
        };
        if without_row && !creates_row(d) && !pending.contains(&event.aggregate_id) {
            pending.push(event.aggregate_id.clone());
        }
    }
    if pending.is_empty() {
        return Ok(HashMap::new());
    }
    use hubkeeper_domain::app::event_types::APP_REGISTERED;
    use hubkeeper_domain::installation::event_types::CONNECTED;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, min(sequence) FROM events
          WHERE aggregate_id = ANY($1)
            AND ((aggregate_type = 'installation' AND event_type = $2)
              OR (aggregate_type = 'app' AND event_type = $3))
          GROUP BY aggregate_id",
    )
    .bind(&pending)
    .bind(CONNECTED)
    .bind(APP_REGISTERED)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Codes of the plans whose events in the batch do not carry one, from their `PlanCreated`
/// (committed before any later event of the plan, so a replay finds the same).
async fn plan_codes(
    conn: &mut PgConnection,
    events: &[ProjectedEvent],
    decoded: &[DomainEvent],
) -> Result<HashMap<String, String>, sqlx::Error> {
    use hubkeeper_domain::plan::{event_types::PLAN_CREATED, PlanEvent};
    let mut ids: Vec<String> = events
        .iter()
        .zip(decoded)
        .filter(|(_, d)| {
            matches!(
                d,
                DomainEvent::Plan(
                    PlanEvent::DetailsChanged(_)
                        | PlanEvent::ReductionAnnounced(_)
                        | PlanEvent::Repriced(_)
                        | PlanEvent::StatusChanged(_)
                )
            )
        })
        .map(|(e, _)| e.aggregate_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    ids.sort();
    ids.dedup();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT aggregate_id, payload -> $2 ->> 'code' FROM events
          WHERE aggregate_type = 'plan' AND event_type = $2 AND aggregate_id = ANY($1)",
    )
    .bind(&ids)
    .bind(PLAN_CREATED)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, code)| code.map(|c| (id, c)))
        .collect())
}

fn json<T: Serialize>(rows: &[T]) -> Result<serde_json::Value, sqlx::Error> {
    serde_json::to_value(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

fn assignments(columns: &str, key: &str) -> String {
    columns
        .split(',')
        .map(str::trim)
        .filter(|c| *c != key)
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Upserts aggregate rows keyed by `key`, never replacing a row with one that is not newer (the
/// guard against two batches that both created a row, see the module docs).
async fn upsert_rows<T: Serialize>(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    key: &str,
    rows: &[&T],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} ({columns})
         SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, $1)
         ON CONFLICT ({key}) DO UPDATE SET {}
         WHERE {table}.last_sequence < EXCLUDED.last_sequence",
        assignments(columns, key)
    ))
    .bind(json(rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes everything the batch changed, with one statement per table.
async fn write(conn: &mut PgConnection, tables: &Tables, batch: &Batch) -> Result<(), sqlx::Error> {
    let apps: Vec<&AppRow> = batch
        .dirty_apps
        .iter()
        .filter_map(|id| batch.apps.get(id))
        .collect();
    upsert_rows(conn, &tables.apps, APP_COLUMNS, "app_id", &apps).await?;
    let installations: Vec<&InstallationRow> = batch
        .dirty_installations
        .iter()
        .filter_map(|id| batch.installations.get(id))
        .collect();
    upsert_rows(
        conn,
        &tables.installations,
        INSTALLATION_COLUMNS,
        "installation_id",
        &installations,
    )
    .await?;
    let p = &tables.status_periods;
    if !batch.closes.is_empty() {
        // Through JSON like every other write here: Postgres rounds sub-microsecond digits when
        // parsing text, while a binary bind truncates them, and a period closed in this batch
        // must end at the same microsecond as one closed when its successor came in a later one.
        let closes: Vec<serde_json::Value> = batch
            .closes
            .iter()
            .map(|(id, seq, at)| serde_json::json!({"i": id, "s": seq, "e": at}))
            .collect();
        sqlx::query(&format!(
            "UPDATE {p} p SET ended_at = u.e
               FROM jsonb_to_recordset($1) AS u(i uuid, s bigint, e timestamptz)
              WHERE p.installation_id = u.i AND p.sequence = u.s AND p.ended_at IS NULL"
        ))
        .bind(serde_json::Value::Array(closes))
        .execute(&mut *conn)
        .await?;
    }
    if !batch.new_periods.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {p} (installation_id, sequence, app_id, status, started_at, ended_at)
             SELECT installation_id, sequence, app_id, status, started_at, ended_at
               FROM jsonb_populate_recordset(NULL::{p}, $1)
             ON CONFLICT (installation_id, sequence)
             DO UPDATE SET ended_at = COALESCE({p}.ended_at, EXCLUDED.ended_at)"
        ))
        .bind(json(&batch.new_periods)?)
        .execute(&mut *conn)
        .await?;
    }
    if !batch.new_subjects.is_empty() {
        let s = &tables.activity_subjects;
        sqlx::query(&format!(
            "INSERT INTO {s} (installation_id, app_id, hub_id)
             SELECT installation_id, app_id, hub_id FROM jsonb_populate_recordset(NULL::{s}, $1)
             ON CONFLICT (installation_id) DO NOTHING"
        ))
        .bind(json(&batch.new_subjects)?)
        .execute(&mut *conn)
        .await?;
    }
    if !batch.activity.is_empty() {
        let a = &tables.activity;
        let columns = "global_position, occurred_at, level, actor, aggregate_type, aggregate_id, \
                       event_type, installation_id, app_id, hub_id, message";
        sqlx::query(&format!(
            "INSERT INTO {a} ({columns})
             SELECT {columns} FROM jsonb_populate_recordset(NULL::{a}, $1)
             ON CONFLICT (global_position) DO NOTHING"
        ))
        .bind(json(&batch.activity)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_judged_against_the_last_applied() {
        assert_eq!(judge(1, 0), None);
        assert_eq!(judge(5, 4), None);
        assert_eq!(judge(4, 4), Some(Outcome::Duplicate));
        assert_eq!(judge(1, 4), Some(Outcome::Duplicate));
        assert_eq!(judge(7, 4), Some(Outcome::Gap { last_sequence: 4 }));
    }

    #[test]
    fn aggregates_without_a_row_wait_only_for_a_create_that_exists() {
        // A create applies whatever its sequence: events before it could not create the row.
        assert_eq!(judge_without_row(true, 1, None), None);
        assert_eq!(judge_without_row(true, 3, Some(3)), None);
        // The create is in the store before this event: it is in flight elsewhere.
        assert_eq!(
            judge_without_row(false, 4, Some(2)),
            Some(Outcome::Gap { last_sequence: 0 })
        );
        // No create before it (unknown first events): nothing could ever fill the gap.
        assert_eq!(judge_without_row(false, 2, None), Some(Outcome::Skipped));
        assert_eq!(judge_without_row(false, 2, Some(5)), Some(Outcome::Skipped));
    }

    #[test]
    fn upserts_assign_every_column_but_the_key() {
        let sql = assignments(APP_COLUMNS, "app_id");
        assert!(!sql.contains("app_id = "));
        assert!(sql.contains("label = EXCLUDED.label"));
        assert!(sql.contains("last_position = EXCLUDED.last_position"));
    }
}
