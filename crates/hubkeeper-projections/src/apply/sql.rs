//! The SQL side of applying events: loading and locking the rows a batch touches (and the few
//! facts from the store that judging its events needs), and writing back what
//! [`super::changes`] changed, with one set-based statement per table.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::changes::{
    creates_row, webhook_installation, AppRow, Changes, InstallationRow, OpenPeriod,
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

/// Loads (and locks) the rows of the aggregates of `events`, with what judging them needs.
pub(super) async fn load(
    conn: &mut PgConnection,
    tables: &Tables,
    events: &[ProjectedEvent],
    decoded: &[DomainEvent],
) -> Result<Changes, sqlx::Error> {
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
    let mut installation_ids = ids("installation");
    // Installations whose webhook counts the batch changes are locked with the rest, in the
    // same order, so their count updates cannot deadlock with another batch.
    let webhook_targets: Vec<Uuid> = decoded.iter().filter_map(webhook_installation).collect();
    if !webhook_targets.is_empty() {
        installation_ids.extend(webhook_targets);
        installation_ids.sort();
        installation_ids.dedup();
    }
    // Subscriptions are keyed by their installation: their activity lines name it.
    let mut subject_ids = installation_ids.clone();
    subject_ids.extend(ids("subscription"));
    subject_ids.sort();
    subject_ids.dedup();

    let mut batch = Changes::default();
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
    batch.creators = creating_sequences(&mut *conn, tables, &batch, events, decoded).await?;
    if tables.has(Projection::Activity) {
        batch.plan_codes = plan_codes(&mut *conn, events, decoded).await?;
    }
    Ok(batch)
}

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
         SELECT {columns} FROM json_populate_recordset(NULL::{table}, $1::json)
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
pub(super) async fn write(
    conn: &mut PgConnection,
    tables: &Tables,
    batch: &Changes,
) -> Result<(), sqlx::Error> {
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
               FROM json_populate_recordset(NULL::{p}, $1::json)
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
             SELECT installation_id, app_id, hub_id FROM json_populate_recordset(NULL::{s}, $1::json)
             ON CONFLICT (installation_id) DO NOTHING"
        ))
        .bind(json(&batch.new_subjects)?)
        .execute(&mut *conn)
        .await?;
    }
    if !batch.webhooks.is_empty() {
        count_webhooks(conn, tables, batch).await?;
    }
    if !batch.activity.is_empty() {
        let a = &tables.activity;
        let columns = "global_position, occurred_at, level, actor, aggregate_type, aggregate_id, \
                       event_type, installation_id, app_id, hub_id, message";
        sqlx::query(&format!(
            "INSERT INTO {a} ({columns})
             SELECT {columns} FROM json_populate_recordset(NULL::{a}, $1::json)
             ON CONFLICT (global_position) DO NOTHING"
        ))
        .bind(json(&batch.activity)?)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
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
    fn upserts_assign_every_column_but_the_key() {
        let sql = assignments(APP_COLUMNS, "app_id");
        assert!(!sql.contains("app_id = "));
        assert!(sql.contains("label = EXCLUDED.label"));
        assert!(sql.contains("last_position = EXCLUDED.last_position"));
    }
}
