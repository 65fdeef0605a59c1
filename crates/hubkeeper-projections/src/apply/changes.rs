//! What an event does to a read-model row, in memory: the rows of a batch's aggregates (loaded
//! by [`super::sql`]) are judged and changed here, and the status periods, activity lines and
//! subjects they imply are collected, all without a database. [`super::sql::write`] then writes
//! back what [`Changes`] holds.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use hubkeeper_domain::app::AppEvent;
use hubkeeper_domain::installation::InstallationEvent;
use hubkeeper_domain::webhook_log::{WebhookLogEvent, AGGREGATE_TYPE as WEBHOOK_LOG_TYPE};
use serde::Serialize;
use uuid::Uuid;

use super::{ApplyReport, Outcome};
use crate::activity::{describe, serde_name, Context};
use crate::event::{DomainEvent, ProjectedEvent};
use crate::tables::{Projection, Tables};

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
    /// The app's customer reference of the latest connect through a connect session.
    pub external_ref: Option<String>,
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
    /// The pending scheduled removal's action (`revoke` / `disconnect`), if any.
    pub removal_action: Option<String>,
    /// When the pending scheduled removal is due.
    pub removal_effective_at: Option<DateTime<Utc>>,
    pub last_sequence: i64,
    pub last_position: i64,
    pub updated_at: DateTime<Utc>,
}

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
            external_ref: c.external_ref.clone(),
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
            removal_action: None,
            removal_effective_at: None,
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

    fn clear_removal(&mut self) {
        self.removal_action = None;
        self.removal_effective_at = None;
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
                if c.external_ref.is_some() {
                    self.external_ref = c.external_ref.clone();
                }
                self.set_status("connected", c.connected_at);
                self.disconnect_cause = None;
                self.status_reason = None;
                self.access_expires_at = Some(c.tokens.access_expires_at);
                self.generation = big(c.generation);
                self.last_connected_at = c.connected_at;
                self.clear_failures();
                self.forgotten_at = None;
                self.clear_removal();
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
                self.clear_removal();
                r.revoked_at
            }
            InstallationEvent::Disconnected(d) => {
                self.set_status("disconnected", d.disconnected_at);
                self.disconnect_cause = Some(serde_name(&d.cause));
                self.status_reason = d.reason.clone();
                self.access_expires_at = None;
                self.clear_removal();
                d.disconnected_at
            }
            InstallationEvent::TenantForgotten(f) => {
                self.set_status("forgotten", f.forgotten_at);
                self.status_reason = Some(f.reason.clone());
                self.forgotten_at = Some(f.forgotten_at);
                self.clear_removal();
                f.forgotten_at
            }
            InstallationEvent::RemovalScheduled(r) => {
                self.removal_action = Some(r.action.as_str().to_owned());
                self.removal_effective_at = Some(r.effective_at);
                r.scheduled_at
            }
            InstallationEvent::RemovalCancelled(c) => {
                self.clear_removal();
                c.cancelled_at
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
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Since when the app's refreshes are parked (HubSpot refused its credentials).
    pub refreshes_parked_at: Option<DateTime<Utc>>,
    pub last_sequence: i64,
    pub last_position: i64,
}

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
            secret_rotated_at: None,
            refreshes_parked_at: None,
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
            AppEvent::ClientSecretRotated(r) => {
                self.secret_rotated_at = Some(r.rotated_at);
                self.refreshes_parked_at = None;
                self.updated_at = r.rotated_at;
            }
            AppEvent::CredentialsRejected(r) => self.refreshes_parked_at = Some(r.rejected_at),
            AppEvent::RefreshesResumed(_) => self.refreshes_parked_at = None,
        }
        self.last_sequence = event.sequence;
        self.last_position = event.global_position;
    }
}

/// A row of `rm_installation_status_periods`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Period {
    installation_id: Uuid,
    sequence: i64,
    app_id: Uuid,
    status: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
}

/// A row of `rm_activity`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct ActivityRow {
    pub(super) global_position: i64,
    pub(super) occurred_at: DateTime<Utc>,
    pub(super) level: &'static str,
    pub(super) actor: String,
    pub(super) aggregate_type: String,
    pub(super) aggregate_id: String,
    pub(super) event_type: String,
    pub(super) installation_id: Option<Uuid>,
    pub(super) app_id: Option<Uuid>,
    pub(super) hub_id: Option<i64>,
    pub(super) message: String,
}

/// A row of `rm_webhook_events`: one HubSpot webhook event counted (see [`apply_webhook_event`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct WebhookRow {
    log_id: String,
    sequence: i64,
    pub(super) installation_id: Option<Uuid>,
    app_id: Uuid,
    portal_id: i64,
    subscription_type: String,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Subject {
    installation_id: Uuid,
    app_id: Uuid,
    hub_id: i64,
}

/// The open period of an installation: already stored, or opened by this batch (an index into
/// the batch's new periods).
#[derive(Debug, Clone, Copy)]
pub(super) enum OpenPeriod {
    Stored(i64),
    New(usize),
}

/// What a batch of events changes: the rows of its aggregates (as loaded, then changed), which of
/// them to write back, and the status periods, subjects and activity lines to add.
///
/// A replay's fill keeps one across batches ([`super::write_back`]): rows, open periods and
/// subjects stay, the outputs are cleared once written ([`Changes::outputs_written`]).
#[derive(Default)]
pub(super) struct Changes {
    pub(super) installations: HashMap<Uuid, InstallationRow>,
    /// Sets, not lists: a replay's state marks the same rows across many batches. Ordered, so
    /// rows are written in id order whatever order the events touched them in.
    pub(super) dirty_installations: BTreeSet<Uuid>,
    /// Installation rows created by the events (not loaded): their last-used time comes from
    /// the hand-outs counted before (`sql::seed_last_used`).
    pub(super) created_installations: Vec<Uuid>,
    pub(super) apps: HashMap<Uuid, AppRow>,
    pub(super) dirty_apps: BTreeSet<Uuid>,
    pub(super) open_periods: HashMap<Uuid, OpenPeriod>,
    pub(super) closes: Vec<(Uuid, i64, DateTime<Utc>)>,
    pub(super) new_periods: Vec<Period>,
    pub(super) subjects: HashMap<Uuid, (Uuid, i64)>,
    pub(super) new_subjects: Vec<Subject>,
    pub(super) activity: Vec<ActivityRow>,
    /// Sequence of the creating event in the store, for aggregates without a row that have
    /// non-creating events in this batch (see the module docs).
    pub(super) creators: HashMap<String, i64>,
    /// Plan codes by plan id, for activity lines of plan events that do not carry theirs.
    pub(super) plan_codes: HashMap<String, String>,
    /// HubSpot webhook events to count (those not counted before; [`super::sql::write`] decides
    /// by their key).
    pub(super) webhooks: Vec<WebhookRow>,
}

impl Changes {
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
        self.dirty_installations.insert(id);
    }

    fn mark_app(&mut self, id: Uuid) {
        self.dirty_apps.insert(id);
    }

    /// Forgets the outputs (periods, closes, subjects, activity lines, webhook events) once they
    /// are written, keeping the rows and what later batches judge against: a period this state
    /// opened and still holds open is a stored one from now on, closed by an update.
    pub(super) fn outputs_written(&mut self) {
        for (index, period) in self.new_periods.iter().enumerate() {
            if let Some(open) = self.open_periods.get_mut(&period.installation_id) {
                if matches!(open, OpenPeriod::New(i) if *i == index) {
                    *open = OpenPeriod::Stored(period.sequence);
                }
            }
        }
        self.new_periods.clear();
        self.closes.clear();
        self.new_subjects.clear();
        self.activity.clear();
        self.webhooks.clear();
        self.created_installations.clear();
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

    /// Applies `events` (decoded as `decoded`) to the loaded rows; one report per event, in the
    /// same order.
    pub(super) fn apply_all(
        &mut self,
        tables: &Tables,
        events: &[ProjectedEvent],
        decoded: &[DomainEvent],
    ) -> Vec<ApplyReport> {
        let mut reports = Vec::with_capacity(events.len());
        for (event, decoded) in events.iter().zip(decoded) {
            let report = match event.aggregate_type.as_str() {
                "installation" => apply_installation_event(self, tables, event, decoded),
                "app" => apply_app_event(self, tables, event, decoded),
                WEBHOOK_LOG_TYPE => apply_webhook_event(self, tables, event, decoded),
                _ => {
                    if tables.has(Projection::Activity) {
                        let installation = match decoded {
                            DomainEvent::Subscription(_) => {
                                Uuid::parse_str(&event.aggregate_id).ok()
                            }
                            _ => None,
                        };
                        let subject = installation.and_then(|id| self.subjects.get(&id).copied());
                        // An app's notification endpoints are the app's aggregate.
                        let app = match decoded {
                            DomainEvent::Endpoint(_) => Uuid::parse_str(&event.aggregate_id).ok(),
                            _ => subject.map(|s| s.0),
                        };
                        self.add_activity(event, decoded, installation, app, subject.map(|s| s.1));
                        ApplyReport::of(Outcome::Applied)
                    } else {
                        ApplyReport::of(Outcome::Skipped)
                    }
                }
            };
            reports.push(report);
        }
        reports
    }
}

fn apply_installation_event(
    batch: &mut Changes,
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
                        batch.created_installations.push(id);
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
    batch: &mut Changes,
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

/// A HubSpot webhook event is counted by the installations projection: a row of
/// `rm_webhook_events` keyed by (log, sequence), and, when it was routed to an installation,
/// that installation's count, latest time and day. Counting commutes, so the log's events need
/// no sequence order, only to be counted once: the key decides, when the batch is written,
/// which ones are new. No activity line: webhook events are volume, not lifecycle (the history
/// API and exports list them).
fn apply_webhook_event(
    batch: &mut Changes,
    tables: &Tables,
    event: &ProjectedEvent,
    decoded: &DomainEvent,
) -> ApplyReport {
    let DomainEvent::WebhookLog(WebhookLogEvent::Received(r)) = decoded else {
        return ApplyReport::of(Outcome::Skipped);
    };
    if !tables.has(Projection::Installations) {
        return ApplyReport::of(Outcome::Skipped);
    }
    batch.webhooks.push(WebhookRow {
        log_id: event.aggregate_id.clone(),
        sequence: event.sequence,
        installation_id: r.installation_id.map(|i| i.as_uuid()),
        app_id: r.app_id.as_uuid(),
        portal_id: big(r.portal_id.get()),
        subscription_type: r.subscription_type.clone(),
        occurred_at: r.occurred_at,
        received_at: event.occurred_at(),
    });
    ApplyReport::of(Outcome::Applied)
}

/// Installations whose webhook counts `decoded` changes (locked with the batch's other rows).
pub(super) fn webhook_installation(decoded: &DomainEvent) -> Option<Uuid> {
    match decoded {
        DomainEvent::WebhookLog(WebhookLogEvent::Received(r)) => {
            r.installation_id.map(|i| i.as_uuid())
        }
        _ => None,
    }
}

/// Whether `decoded` is the event that creates its aggregate's row.
pub(super) fn creates_row(decoded: &DomainEvent) -> bool {
    matches!(
        decoded,
        DomainEvent::Installation(InstallationEvent::Connected(_))
            | DomainEvent::App(AppEvent::Registered(_))
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use hubkeeper_domain::installation::{
        event_types, InstallationConnected, InstallationRevoked, StoredInstaller, StoredTokens,
        TokensRefreshed,
    };
    use hubkeeper_domain::{AppId, HubId, InstallationId};
    use serde_json::{json, Value};

    use super::*;

    const SEALED: &str = "v1.dk0011223344556677.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

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

    fn minute(n: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("a valid time")
            + chrono::Duration::minutes(n)
    }

    fn tokens() -> StoredTokens {
        StoredTokens {
            access: SEALED.parse().expect("sealed"),
            refresh: SEALED.parse().expect("sealed"),
            access_expires_at: minute(60),
        }
    }

    /// An installation event as the store would hand it over, with its decoded payload.
    fn stored(
        id: Uuid,
        sequence: i64,
        event_type: &str,
        event: InstallationEvent,
    ) -> (ProjectedEvent, DomainEvent) {
        let envelope = ProjectedEvent {
            global_position: 100 + sequence,
            tx_id: 1000 + sequence as u64,
            aggregate_type: "installation".into(),
            aggregate_id: id.to_string(),
            sequence,
            event_type: event_type.into(),
            event_version: "1".into(),
            stored_version: "1".into(),
            // The changes read the decoded event only.
            payload: Value::Null,
            metadata: json!({ "actor": "system:test" }),
            recorded_at: minute(sequence),
        };
        (envelope, DomainEvent::Installation(event))
    }

    fn history(id: Uuid, app: Uuid) -> Vec<(ProjectedEvent, DomainEvent)> {
        vec![
            stored(
                id,
                1,
                event_types::CONNECTED,
                InstallationEvent::Connected(InstallationConnected {
                    installation_id: InstallationId::from_uuid(id),
                    app_id: AppId::from_uuid(app),
                    hub_id: HubId(40_000_001),
                    user_id: None,
                    hub_domain: "portal.hubspot.com".into(),
                    installer: StoredInstaller::default(),
                    scopes: vec!["oauth".into()],
                    tokens: tokens(),
                    app_version: None,
                    external_ref: None,
                    metadata: None,
                    generation: 1,
                    connected_at: minute(0),
                }),
            ),
            stored(
                id,
                2,
                event_types::TOKENS_REFRESHED,
                InstallationEvent::TokensRefreshed(TokensRefreshed {
                    tokens: tokens(),
                    generation: 2,
                    refreshed_at: minute(10),
                }),
            ),
            stored(
                id,
                3,
                event_types::REVOKED,
                InstallationEvent::Revoked(InstallationRevoked {
                    reason: "offboarded".into(),
                    revoked_at: minute(20),
                }),
            ),
        ]
    }

    fn apply(changes: &mut Changes, events: &[(ProjectedEvent, DomainEvent)]) -> Vec<ApplyReport> {
        let (envelopes, decoded): (Vec<_>, Vec<_>) = events.iter().cloned().unzip();
        changes.apply_all(&Tables::live(), &envelopes, &decoded)
    }

    #[test]
    fn a_new_installation_is_created_refreshed_and_revoked_in_memory() {
        let (id, app) = (Uuid::from_u128(7), Uuid::from_u128(1));
        let mut changes = Changes::default();
        let reports = apply(&mut changes, &history(id, app));

        let applied = |recount_app| ApplyReport {
            outcome: Outcome::Applied,
            recount_app,
        };
        // A create and a status change can change the app's counts; a refresh cannot.
        assert_eq!(
            reports,
            [applied(Some(app)), applied(None), applied(Some(app))]
        );
        let row = &changes.installations[&id];
        assert_eq!(row.status, "revoked");
        assert_eq!(row.status_reason.as_deref(), Some("offboarded"));
        assert_eq!(row.status_changed_at, minute(20));
        assert_eq!(row.generation, 2);
        assert_eq!(row.last_refreshed_at, Some(minute(10)));
        assert_eq!(row.access_expires_at, None);
        assert_eq!((row.last_sequence, row.last_position), (3, 103));
        assert_eq!(changes.dirty_installations, BTreeSet::from([id]));
        // Two periods, the first closed when the second began; nothing stored to close.
        let periods: Vec<_> = changes
            .new_periods
            .iter()
            .map(|p| (p.status.as_str(), p.started_at, p.ended_at))
            .collect();
        assert_eq!(
            periods,
            [
                ("connected", minute(0), Some(minute(20))),
                ("revoked", minute(20), None)
            ]
        );
        assert!(changes.closes.is_empty());
        // One activity line per event, all naming the subject the connect introduced.
        assert_eq!(changes.activity.len(), 3);
        assert!(changes
            .activity
            .iter()
            .all(|a| a.installation_id == Some(id) && a.app_id == Some(app)));
        assert_eq!(changes.new_subjects.len(), 1);
    }

    #[test]
    fn a_loaded_row_closes_its_stored_period_and_ignores_what_it_has_seen() {
        let (id, app) = (Uuid::from_u128(7), Uuid::from_u128(1));
        let events = history(id, app);
        let mut earlier = Changes::default();
        apply(&mut earlier, &events[..2]);

        // The next batch, as loaded from the read model: the row after sequence 2 and its open
        // period, which began at sequence 1.
        let mut changes = Changes {
            installations: earlier.installations.clone(),
            open_periods: HashMap::from([(id, OpenPeriod::Stored(1))]),
            subjects: HashMap::from([(id, (app, 40_000_001))]),
            ..Changes::default()
        };
        let reports = apply(&mut changes, &[events[1].clone(), events[2].clone()]);
        assert_eq!(reports[0].outcome, Outcome::Duplicate);
        assert_eq!(reports[1].outcome, Outcome::Applied);
        assert_eq!(changes.closes, [(id, 1, minute(20))]);
        assert_eq!(changes.new_periods.len(), 1);
        assert_eq!(changes.activity.len(), 1, "a duplicate gets no second line");
        assert!(changes.new_subjects.is_empty());

        // An event ahead of the row waits, and changes nothing.
        let mut ahead = events[2].clone();
        ahead.0.sequence = 5;
        let mut changes = Changes {
            installations: earlier.installations,
            ..Changes::default()
        };
        let reports = apply(&mut changes, &[ahead]);
        assert_eq!(reports[0].outcome, Outcome::Gap { last_sequence: 2 });
        assert!(changes.dirty_installations.is_empty());
        assert!(changes.new_periods.is_empty() && changes.activity.is_empty());
    }

    #[test]
    fn a_state_kept_across_batches_closes_the_periods_it_wrote_with_an_update() {
        let (id, app) = (Uuid::from_u128(7), Uuid::from_u128(1));
        let events = history(id, app);
        let mut changes = Changes::default();
        apply(&mut changes, &events[..2]);
        assert_eq!(changes.new_periods.len(), 1);
        changes.outputs_written();
        assert!(matches!(
            changes.open_periods.get(&id),
            Some(OpenPeriod::Stored(1))
        ));
        assert!(changes.new_periods.is_empty() && changes.activity.is_empty());
        // The row stays held and dirty until the caller writes it.
        assert_eq!(changes.dirty_installations, BTreeSet::from([id]));

        let reports = apply(&mut changes, &events[2..]);
        assert_eq!(reports[0].outcome, Outcome::Applied);
        assert_eq!(changes.closes, [(id, 1, minute(20))]);
        assert_eq!(changes.new_periods.len(), 1);
        assert_eq!(changes.installations[&id].status, "revoked");
    }

    fn webhook(
        log: &str,
        sequence: i64,
        installation: Option<Uuid>,
    ) -> (ProjectedEvent, DomainEvent) {
        use hubkeeper_domain::webhook_log::HubSpotWebhookReceived;
        let envelope = ProjectedEvent {
            global_position: 500 + sequence,
            tx_id: 5000 + sequence as u64,
            aggregate_type: WEBHOOK_LOG_TYPE.into(),
            aggregate_id: log.into(),
            sequence,
            event_type: "HubSpotWebhookReceived".into(),
            event_version: "1.0".into(),
            stored_version: "1.0".into(),
            payload: Value::Null,
            metadata: json!({ "actor": "hubspot", "occurred_at": minute(30).to_rfc3339() }),
            recorded_at: minute(31),
        };
        let received = HubSpotWebhookReceived {
            identity: format!("{sequence:064x}"),
            event_id: 1,
            subscription_type: "contact.creation".into(),
            object_id: None,
            property_name: None,
            property_value: None,
            change_source: None,
            occurred_at: minute(sequence),
            portal_id: HubId(40_000_001),
            app_id: AppId::from_uuid(Uuid::from_u128(1)),
            attempt: None,
            installation_id: installation.map(InstallationId::from_uuid),
        };
        (
            envelope,
            DomainEvent::WebhookLog(WebhookLogEvent::Received(received)),
        )
    }

    #[test]
    fn webhook_events_are_counted_in_any_order_without_activity_lines() {
        let id = Uuid::from_u128(7);
        let log = id.to_string();
        let mut changes = Changes::default();
        // Out of order, and one from the app's log of unrouted events.
        let reports = apply(
            &mut changes,
            &[
                webhook(&log, 3, Some(id)),
                webhook(&log, 1, Some(id)),
                webhook("app:x", 1, None),
            ],
        );
        assert!(reports.iter().all(|r| r.outcome == Outcome::Applied));
        assert_eq!(changes.webhooks.len(), 3);
        let counted: Vec<_> = changes
            .webhooks
            .iter()
            .map(|w| {
                (
                    w.log_id.as_str(),
                    w.sequence,
                    w.installation_id,
                    w.received_at,
                )
            })
            .collect();
        assert_eq!(counted[0], (log.as_str(), 3, Some(id), minute(30)));
        assert_eq!(counted[2], ("app:x", 1, None, minute(30)));
        assert!(changes.activity.is_empty(), "no activity line per webhook");
        assert!(changes.dirty_installations.is_empty());
        assert_eq!(
            webhook_installation(&webhook(&log, 1, Some(id)).1),
            Some(id)
        );

        // Only the installations projection counts them.
        let (envelopes, decoded): (Vec<_>, Vec<_>) =
            vec![webhook(&log, 4, Some(id))].into_iter().unzip();
        let mut activity_only = Changes::default();
        let reports = activity_only.apply_all(
            &Tables::rebuild(&[Projection::Activity]),
            &envelopes,
            &decoded,
        );
        assert_eq!(reports[0].outcome, Outcome::Skipped);
        assert!(activity_only.webhooks.is_empty() && activity_only.activity.is_empty());
    }
}
