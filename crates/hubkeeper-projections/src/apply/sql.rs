//! The SQL side of applying events: loading and locking the rows a batch touches (and the few
//! facts from the store that judging its events needs), and writing back what
//! [`super::changes`] changed, with one set-based statement per table.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::changes::{
    creates_row, webhook_installation, ActivityRow, AppRow, Changes, InstallationRow, OpenPeriod,
};
use crate::event::{DomainEvent, ProjectedEvent};
use crate::tables::{Projection, Tables};

const INSTALLATION_COLUMNS: &str = "installation_id, app_id, hub_id, user_id, hub_domain, \
    installer_user_id, installer_email, scopes, app_version, external_ref, status, disconnect_cause, \
    status_reason, status_changed_at, access_expires_at, first_connected_at, last_connected_at, \
    last_refreshed_at, consecutive_failures, last_failure_class, last_failure_message, \
    last_failure_at, generation, forgotten_at, removal_action, removal_effective_at, last_sequence, \
    last_position, updated_at";

const APP_COLUMNS: &str = "app_id, label, client_id, environment, description, redirect_uri, \
    scopes, optional_scopes, oauth_generation, signature_versions, created_at, updated_at, \
    deleted_at, secret_rotated_at, refreshes_parked_at, last_sequence, last_position";

/// Ids of the aggregates of a batch whose rows judging and applying it needs, each list sorted
/// and without duplicates.
pub(super) struct BatchIds {
    pub(super) apps: Vec<Uuid>,
    /// With the installations whose webhook counts the batch changes.
    pub(super) installations: Vec<Uuid>,
    /// Installations and subscriptions (keyed by their installation: their activity lines name
    /// it).
    pub(super) subjects: Vec<Uuid>,
}

impl BatchIds {
    pub(super) fn of(events: &[ProjectedEvent], decoded: &[DomainEvent]) -> Self {
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
        let apps = ids("app");
        let mut installations = ids("installation");
        // Installations whose webhook counts the batch changes are locked with the rest, in the
        // same order, so their count updates cannot deadlock with another batch.
        let webhook_targets: Vec<Uuid> = decoded.iter().filter_map(webhook_installation).collect();
        if !webhook_targets.is_empty() {
            installations.extend(webhook_targets);
            installations.sort();
            installations.dedup();
        }
        let mut subjects = installations.clone();
        subjects.extend(ids("subscription"));
        subjects.sort();
        subjects.dedup();
        Self {
            apps,
            installations,
            subjects,
        }
    }
}

/// Whether loading rows locks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lock {
    /// `FOR UPDATE`: tables other transactions write too (see the module docs).
    ForUpdate,
    /// Tables only the caller writes (a replay's rebuild tables).
    None,
}

/// Loads (and locks) the rows of the aggregates of `events`, with what judging them needs.
pub(super) async fn load(
    conn: &mut PgConnection,
    tables: &Tables,
    events: &[ProjectedEvent],
    decoded: &[DomainEvent],
) -> Result<Changes, sqlx::Error> {
    let mut batch = Changes::default();
    load_rows(
        &mut *conn,
        tables,
        &BatchIds::of(events, decoded),
        Lock::ForUpdate,
        &mut batch,
    )
    .await?;
    load_facts(conn, tables, &mut batch, events, decoded).await?;
    Ok(batch)
}

/// Adds the stored rows of `ids` (apps, installations with their open status periods, activity
/// subjects) to `batch`; ids without a stored row are left out.
pub(super) async fn load_rows(
    conn: &mut PgConnection,
    tables: &Tables,
    ids: &BatchIds,
    lock: Lock,
    batch: &mut Changes,
) -> Result<(), sqlx::Error> {
    let lock = match lock {
        Lock::ForUpdate => "FOR UPDATE",
        Lock::None => "",
    };
    if tables.has(Projection::Apps) && !ids.apps.is_empty() {
        let rows: Vec<AppRow> = sqlx::query_as(&format!(
            "SELECT {APP_COLUMNS} FROM {} WHERE app_id = ANY($1) ORDER BY app_id {lock}",
            tables.apps
        ))
        .bind(&ids.apps)
        .fetch_all(&mut *conn)
        .await?;
        batch.apps.extend(rows.into_iter().map(|r| (r.app_id, r)));
    }
    if tables.has(Projection::Installations) && !ids.installations.is_empty() {
        let rows: Vec<InstallationRow> = sqlx::query_as(&format!(
            "SELECT {INSTALLATION_COLUMNS} FROM {} WHERE installation_id = ANY($1)
              ORDER BY installation_id {lock}",
            tables.installations
        ))
        .bind(&ids.installations)
        .fetch_all(&mut *conn)
        .await?;
        batch
            .installations
            .extend(rows.into_iter().map(|r| (r.installation_id, r)));
        let open: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
            "SELECT installation_id, sequence FROM {} WHERE installation_id = ANY($1)
                AND ended_at IS NULL",
            tables.status_periods
        ))
        .bind(&ids.installations)
        .fetch_all(&mut *conn)
        .await?;
        batch.open_periods.extend(
            open.into_iter()
                .map(|(id, seq)| (id, OpenPeriod::Stored(seq))),
        );
    }
    if tables.has(Projection::Activity) && !ids.subjects.is_empty() {
        let subjects: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(&format!(
            "SELECT installation_id, app_id, hub_id FROM {} WHERE installation_id = ANY($1)",
            tables.activity_subjects
        ))
        .bind(&ids.subjects)
        .fetch_all(&mut *conn)
        .await?;
        batch
            .subjects
            .extend(subjects.into_iter().map(|(id, app, hub)| (id, (app, hub))));
    }
    Ok(())
}

/// Sets the facts from the store that judging and describing the batch's events needs, once its
/// rows are loaded: see [`creating_sequences`] and [`plan_codes`].
pub(super) async fn load_facts(
    conn: &mut PgConnection,
    tables: &Tables,
    batch: &mut Changes,
    events: &[ProjectedEvent],
    decoded: &[DomainEvent],
) -> Result<(), sqlx::Error> {
    batch.creators = creating_sequences(&mut *conn, tables, batch, events, decoded).await?;
    batch.plan_codes = if tables.has(Projection::Activity) {
        plan_codes(&mut *conn, events, decoded).await?
    } else {
        HashMap::new()
    };
    Ok(())
}

/// For the batch's aggregates that have no row and events that cannot create one, by id: the
/// sequence of their creating event in the store (absent if there is none). One query, and only
/// when such aggregates exist (rarely: a new aggregate's events normally start with its create).
async fn creating_sequences(
    conn: &mut PgConnection,
    tables: &Tables,
    batch: &Changes,
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

/// Rows as JSON text, for `json_populate_recordset($1::json)`. Serialized straight to text (no
/// `serde_json::Value` tree in between) and sent as `json`, not `jsonb`: Postgres then reads each
/// row's fields in one pass instead of building and key-sorting a `jsonb` value first. Both were
/// visible in a replay's profile.
fn json<T: Serialize>(rows: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
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

/// Inserts `rows` into `table` through `json_populate_recordset` in one statement, settling
/// conflicts with `on_conflict` (an `ON CONFLICT` clause); nothing when there are no rows.
async fn insert_json<T: Serialize>(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    on_conflict: &str,
    rows: &[T],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} ({columns})
         SELECT {columns} FROM json_populate_recordset(NULL::{table}, $1::json)
         {on_conflict}"
    ))
    .bind(json(rows)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
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
    let on_conflict = format!(
        "ON CONFLICT ({key}) DO UPDATE SET {}
         WHERE {table}.last_sequence < EXCLUDED.last_sequence",
        assignments(columns, key)
    );
    insert_json(conn, table, columns, &on_conflict, rows).await
}

/// Writes everything the batch changed, with one statement per table.
pub(super) async fn write(
    conn: &mut PgConnection,
    tables: &Tables,
    batch: &Changes,
) -> Result<(), sqlx::Error> {
    write_rows(
        &mut *conn,
        tables,
        &rows_of(&batch.apps, &batch.dirty_apps),
        &rows_of(&batch.installations, &batch.dirty_installations),
    )
    .await?;
    write_outputs(&mut *conn, tables, batch).await?;
    insert_activity(conn, tables, &batch.activity).await
}

/// Sets "last used" on installation rows this batch created from the hand-outs already counted
/// for them: the token services' flush updates only rows that exist, and hand-outs can be
/// flushed before the installation's first event is projected.
pub(super) async fn seed_last_used(
    conn: &mut PgConnection,
    tables: &Tables,
    created: &[Uuid],
) -> Result<(), sqlx::Error> {
    if created.is_empty() || !tables.has(Projection::Installations) {
        return Ok(());
    }
    let ids: Vec<String> = created.iter().map(Uuid::to_string).collect();
    sqlx::query(&format!(
        "UPDATE {} r SET last_used_at = GREATEST(r.last_used_at, u.at)
           FROM (SELECT installation_id::uuid AS id, max(last_handed_out_at) AS at
                   FROM token_usage WHERE installation_id = ANY($1) GROUP BY installation_id) u
          WHERE r.installation_id = u.id",
        tables.installations
    ))
    .bind(&ids)
    .execute(conn)
    .await?;
    Ok(())
}

/// The rows of `map` with the given ids, in the ids' order.
pub(super) fn rows_of<'a, T>(
    map: &'a HashMap<Uuid, T>,
    ids: impl IntoIterator<Item = &'a Uuid>,
) -> Vec<&'a T> {
    ids.into_iter().filter_map(|id| map.get(id)).collect()
}

/// Upserts aggregate rows, one statement per table.
pub(super) async fn write_rows(
    conn: &mut PgConnection,
    tables: &Tables,
    apps: &[&AppRow],
    installations: &[&InstallationRow],
) -> Result<(), sqlx::Error> {
    upsert_rows(&mut *conn, &tables.apps, APP_COLUMNS, "app_id", apps).await?;
    upsert_rows(
        conn,
        &tables.installations,
        INSTALLATION_COLUMNS,
        "installation_id",
        installations,
    )
    .await
}

/// Writes what the batch adds besides rows and activity lines: status period closes and new
/// periods, activity subjects, webhook counts. The webhook counts update installation rows in
/// SQL, so the rows they count for must be written first.
pub(super) async fn write_outputs(
    conn: &mut PgConnection,
    tables: &Tables,
    batch: &Changes,
) -> Result<(), sqlx::Error> {
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
    insert_json(
        &mut *conn,
        p,
        "installation_id, sequence, app_id, status, started_at, ended_at",
        &format!(
            "ON CONFLICT (installation_id, sequence)
             DO UPDATE SET ended_at = COALESCE({p}.ended_at, EXCLUDED.ended_at)"
        ),
        &batch.new_periods,
    )
    .await?;
    insert_json(
        &mut *conn,
        &tables.activity_subjects,
        "installation_id, app_id, hub_id",
        "ON CONFLICT (installation_id) DO NOTHING",
        &batch.new_subjects,
    )
    .await?;
    if !batch.webhooks.is_empty() {
        count_webhooks(conn, tables, batch).await?;
    }
    Ok(())
}

const ACTIVITY_COLUMNS: &str = "global_position, occurred_at, level, actor, aggregate_type, \
    aggregate_id, event_type, installation_id, app_id, hub_id, message";

/// Inserts activity lines, skipping those already there (redelivered events).
async fn insert_activity(
    conn: &mut PgConnection,
    tables: &Tables,
    rows: &[ActivityRow],
) -> Result<(), sqlx::Error> {
    insert_json(
        conn,
        &tables.activity,
        ACTIVITY_COLUMNS,
        "ON CONFLICT (global_position) DO NOTHING",
        rows,
    )
    .await
}

/// Appends activity lines with `COPY`, for a table nobody else writes that holds none of them
/// yet (a replay's fill reads every event once): there is nothing to skip, and `COPY` spares
/// Postgres the JSON parsing and the per-row conflict handling of [`insert_activity`], most of
/// the cost of a line.
pub(super) async fn copy_activity(
    conn: &mut PgConnection,
    tables: &Tables,
    rows: &[ActivityRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut data = String::with_capacity(rows.len() * 256);
    for row in rows {
        copy_line(&mut data, row);
    }
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {} ({ACTIVITY_COLUMNS}) FROM STDIN",
            tables.activity
        ))
        .await?;
    if let Err(e) = copy.send(data.into_bytes()).await {
        // Ends the COPY so the connection can be used again; the send's error is the one to
        // report.
        let _ = copy.abort(e.to_string()).await;
        return Err(e);
    }
    copy.finish().await?;
    Ok(())
}

/// One activity line in `COPY`'s text format, columns as [`ACTIVITY_COLUMNS`]. Times are written
/// as JSON would write them, so Postgres parses (and rounds) them exactly as for
/// [`insert_activity`].
fn copy_line(out: &mut String, row: &ActivityRow) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{}\t{}\t{}",
        row.global_position,
        row.occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        row.level
    );
    for text in [
        &row.actor,
        &row.aggregate_type,
        &row.aggregate_id,
        &row.event_type,
    ] {
        out.push('\t');
        copy_text(out, text);
    }
    copy_optional(out, row.installation_id);
    copy_optional(out, row.app_id);
    copy_optional(out, row.hub_id);
    out.push('\t');
    copy_text(out, &row.message);
    out.push('\n');
}

/// A tab, then `value` or `COPY`'s NULL.
fn copy_optional(out: &mut String, value: Option<impl std::fmt::Display>) {
    use std::fmt::Write;
    out.push('\t');
    match value {
        // Writing to a String cannot fail.
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("\\N"),
    }
}

/// `value` as a field of `COPY`'s text format: backslash and the separators escaped.
fn copy_text(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Counts the batch's webhook events that were not counted before, in one statement: the new
/// rows of `rm_webhook_events` (a redelivered event's key is there already) are added to their
/// installations' counts and latest times and to `webhook_usage_daily` by the UTC day the
/// event was recorded. Live projection and replay count the same events the same way.
async fn count_webhooks(
    conn: &mut PgConnection,
    tables: &Tables,
    batch: &Changes,
) -> Result<(), sqlx::Error> {
    let (w, i, d) = (
        &tables.webhook_events,
        &tables.installations,
        &tables.webhook_usage,
    );
    let columns = "log_id, sequence, installation_id, app_id, portal_id, subscription_type, \
                   occurred_at, received_at";
    sqlx::query(&format!(
        "WITH new AS (
            INSERT INTO {w} ({columns})
            SELECT {columns} FROM json_populate_recordset(NULL::{w}, $1::json)
             ORDER BY log_id, sequence
            ON CONFLICT (log_id, sequence) DO NOTHING
            RETURNING installation_id, occurred_at, received_at),
         per_installation AS (
            UPDATE {i} SET webhook_events = {i}.webhook_events + c.n,
                   last_webhook_at = GREATEST(COALESCE({i}.last_webhook_at, c.latest), c.latest)
              FROM (SELECT installation_id, count(*) AS n, max(occurred_at) AS latest
                      FROM new WHERE installation_id IS NOT NULL GROUP BY installation_id) AS c
             WHERE {i}.installation_id = c.installation_id
            RETURNING 1),
         per_day AS (
            INSERT INTO {d} (installation_id, day, events)
            SELECT installation_id, (received_at AT TIME ZONE 'UTC')::date, count(*)
              FROM new WHERE installation_id IS NOT NULL
             GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (installation_id, day) DO UPDATE SET events = {d}.events + EXCLUDED.events
            RETURNING 1)
         SELECT (SELECT count(*) FROM per_installation), (SELECT count(*) FROM per_day)"
    ))
    .bind(json(&batch.webhooks)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_lines_are_escaped_for_copy() {
        use chrono::TimeZone;
        let row = ActivityRow {
            global_position: 42,
            occurred_at: chrono::Utc
                .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
                .single()
                .expect("a valid time")
                + chrono::Duration::nanoseconds(1_234_567),
            level: "info",
            actor: "key:a\\b\tc".into(),
            aggregate_type: "installation".into(),
            aggregate_id: "x".into(),
            event_type: "InstallationConnected".into(),
            installation_id: Some(Uuid::from_u128(7)),
            app_id: None,
            hub_id: Some(40_000_001),
            message: "two\nlines\r".into(),
        };
        let mut line = String::new();
        copy_line(&mut line, &row);
        assert_eq!(
            line,
            "42\t2026-03-01T12:00:00.001234567Z\tinfo\tkey:a\\\\b\\tc\tinstallation\tx\t\
             InstallationConnected\t00000000-0000-0000-0000-000000000007\t\\N\t40000001\t\
             two\\nlines\\r\n"
        );
        // The same time text as JSON, so Postgres rounds both the same way.
        assert_eq!(
            serde_json::to_value(row.occurred_at).expect("json"),
            "2026-03-01T12:00:00.001234567Z"
        );
    }

    #[test]
    fn upserts_assign_every_column_but_the_key() {
        let sql = assignments(APP_COLUMNS, "app_id");
        assert!(!sql.contains("app_id = "));
        assert!(sql.contains("label = EXCLUDED.label"));
        assert!(sql.contains("last_position = EXCLUDED.last_position"));
    }
}
