//! Reading the read models: the queries behind the list endpoints and the overview.
//!
//! Lists page by keyset (`cursor`), not by offset, so a page is as fast at the end of a long list
//! as at its start and rows inserted meanwhile do not shift pages. A cursor names the sort it
//! was made for; using it with another sort is refused.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::activity::Level;

/// A bad query parameter, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{parameter}`: {message}")]
pub struct InvalidParameter {
    pub parameter: &'static str,
    pub message: String,
}

fn invalid(parameter: &'static str, message: impl Into<String>) -> InvalidParameter {
    InvalidParameter {
        parameter,
        message: message.into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Invalid(#[from] InvalidParameter),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Rows matching the filters (all pages).
    pub total: i64,
}

pub const MAX_LIMIT: i64 = 500;

/// Validates a page size (default 50).
pub fn page_limit(limit: Option<i64>) -> Result<i64, InvalidParameter> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// A sortable column: the SQL expression (NULL-free, so keyset comparison works) and the type
/// its cursor value is cast back to.
#[derive(Debug)]
struct SortKey {
    name: &'static str,
    expr: &'static str,
    cast: &'static str,
}

#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// The sort it belongs to, e.g. `-expires`.
    s: String,
    /// The sort value of the last row, as Postgres text.
    v: String,
    /// The id of the last row (tie-breaker).
    id: Uuid,
}

fn encode_cursor(c: &Cursor) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(raw: &str, sort: &str) -> Result<Cursor, InvalidParameter> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim())
        .map_err(|_| invalid("cursor", "not a cursor returned by this endpoint"))?;
    let cursor: Cursor = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("cursor", "not a cursor returned by this endpoint"))?;
    if cursor.s != sort {
        return Err(invalid(
            "cursor",
            format!("it was made for sort `{}`, not `{sort}`", cursor.s),
        ));
    }
    Ok(cursor)
}

/// Parses `sort` (`key` or `-key`) against the allowed keys.
fn parse_sort<'k>(
    raw: Option<&str>,
    default: &str,
    keys: &'k [SortKey],
) -> Result<(&'k SortKey, bool, String), InvalidParameter> {
    let raw = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(default);
    let (name, descending) = match raw.strip_prefix('-') {
        Some(name) => (name, true),
        None => (raw, false),
    };
    let key = keys.iter().find(|k| k.name == name).ok_or_else(|| {
        let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
        invalid(
            "sort",
            format!(
                "unknown key `{name}` (one of {}, prefix - for descending)",
                names.join(", ")
            ),
        )
    })?;
    Ok((key, descending, raw.to_owned()))
}

/// `%text%` for `ILIKE`, with the pattern characters of `text` matched literally.
fn contains_pattern(text: &str) -> String {
    format!(
        "%{}%",
        text.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// A list read with keyset pagination: everything but its filters and row mapping, which
/// [`keyset_page`] takes as functions.
struct KeysetList {
    /// Table and alias, e.g. `rm_apps a`.
    table: &'static str,
    /// What is selected besides `<alias>.*` and the sort value, joins included.
    select: &'static str,
    joins: &'static str,
    /// The unique tie-breaker, qualified (`a.app_id`), and its column name in the result.
    id_expr: &'static str,
    id_column: &'static str,
    sorts: &'static [SortKey],
    default_sort: &'static str,
}

/// Counts what matches, then reads one page after the cursor in the chosen sort.
async fn keyset_page<T>(
    pool: &PgPool,
    list: &KeysetList,
    paging: (Option<&str>, Option<i64>, Option<&str>),
    filters: impl Fn(&mut QueryBuilder<'_, Postgres>),
    map: impl Fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<Page<T>, QueryError> {
    let (sort, limit, cursor) = paging;
    let limit = page_limit(limit)?;
    let (key, descending, sort) = parse_sort(sort, list.default_sort, list.sorts)?;
    let cursor = cursor.map(|c| decode_cursor(c, &sort)).transpose()?;

    let mut count = QueryBuilder::<Postgres>::new(format!("SELECT count(*) FROM {}", list.table));
    filters(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut b = QueryBuilder::<Postgres>::new(format!(
        "SELECT {}, ({})::text AS sort_value FROM {}{}",
        list.select, key.expr, list.table, list.joins
    ));
    filters(&mut b);
    let (op, dir) = if descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(c) = &cursor {
        b.push(format!(" AND ({}, {}) {op} (", key.expr, list.id_expr))
            .push_bind(c.v.clone())
            .push(format!("::{}, ", key.cast))
            .push_bind(c.id)
            .push(")");
    }
    b.push(format!(
        " ORDER BY {} {dir}, {} {dir} LIMIT ",
        key.expr, list.id_expr
    ))
    .push_bind(limit + 1);
    let rows = b.build().fetch_all(pool).await?;
    page_of(rows, limit, total, &sort, list.id_column, map)
}

// ---------------------------------------------------------------------------------------------
// Installations

/// Effective status: "expired" is derived from the stored expiry. A macro, so that `const`
/// strings (the installation list's select) can include it too.
macro_rules! effective_status {
    () => {
        "(CASE WHEN i.status = 'connected' AND i.access_expires_at <= now() \
         THEN 'expired' ELSE i.status END)"
    };
}
const EFFECTIVE_STATUS: &str = effective_status!();

const INSTALLATION_SORTS: &[SortKey] = &[
    SortKey {
        name: "connected",
        expr: "i.first_connected_at",
        cast: "timestamptz",
    },
    SortKey {
        name: "last_connected",
        expr: "i.last_connected_at",
        cast: "timestamptz",
    },
    SortKey {
        name: "expires",
        expr: "COALESCE(i.access_expires_at, 'infinity'::timestamptz)",
        cast: "timestamptz",
    },
    SortKey {
        name: "last_used",
        expr: "COALESCE(i.last_used_at, '-infinity'::timestamptz)",
        cast: "timestamptz",
    },
    SortKey {
        name: "updated",
        expr: "i.updated_at",
        cast: "timestamptz",
    },
    SortKey {
        name: "hub_id",
        expr: "i.hub_id",
        cast: "bigint",
    },
    SortKey {
        name: "hub_domain",
        expr: "i.hub_domain",
        cast: "text",
    },
    SortKey {
        name: "status",
        expr: "i.status",
        cast: "text",
    },
];

/// Statuses a filter may name.
pub const INSTALLATION_STATUSES: &[&str] = &[
    "connected",
    "expired",
    "needs_reauthorization",
    "disconnected",
    "revoked",
    "forgotten",
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstallationQuery {
    /// Effective statuses (any of).
    pub statuses: Vec<String>,
    pub app_id: Option<Uuid>,
    pub hub_id: Option<i64>,
    /// The app's customer reference (exact match).
    pub external_ref: Option<String>,
    /// Free text: hub domain, installer e-mail, hub id or installation id prefix.
    pub q: Option<String>,
    /// `connected` (default `-connected`), `expires`, `last_used`, `hub_id`, ...
    pub sort: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl InstallationQuery {
    /// Parses a comma-separated status list.
    pub fn parse_statuses(raw: &str) -> Result<Vec<String>, InvalidParameter> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if INSTALLATION_STATUSES.contains(&s) {
                    Ok(s.to_owned())
                } else {
                    Err(invalid(
                        "status",
                        format!(
                            "unknown status `{s}` (one of {})",
                            INSTALLATION_STATUSES.join(", ")
                        ),
                    ))
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastFailureView {
    pub class: String,
    pub message: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// An installation as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstallationView {
    pub installation_id: Uuid,
    pub app_id: Uuid,
    pub app_label: Option<String>,
    pub hub_id: i64,
    pub user_id: Option<i64>,
    pub hub_domain: String,
    pub installer_user_id: Option<i64>,
    pub installer_email: Option<String>,
    pub scopes: Vec<String>,
    pub app_version: Option<String>,
    /// The app's customer reference of the latest connect through a connect session.
    pub external_ref: Option<String>,
    /// Effective status: connected | expired | needs_reauthorization | disconnected | revoked |
    /// forgotten.
    pub status: String,
    pub disconnect_cause: Option<String>,
    pub status_reason: Option<String>,
    pub status_changed_at: DateTime<Utc>,
    pub access_expires_at: Option<DateTime<Utc>>,
    pub first_connected_at: DateTime<Utc>,
    pub last_connected_at: DateTime<Utc>,
    pub last_refreshed_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub last_failure: Option<LastFailureView>,
    pub generation: i64,
    pub plan_code: Option<String>,
    pub webhook_events: i64,
    pub last_webhook_at: Option<DateTime<Utc>>,
    /// The pending scheduled removal (`revoke` / `disconnect`), if one is announced.
    pub removal_action: Option<String>,
    /// When the pending scheduled removal is due.
    pub removal_effective_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Sequence of the last event projected into this row.
    pub last_sequence: i64,
}

fn installation_from_row(row: &PgRow) -> Result<InstallationView, sqlx::Error> {
    let failure_class: Option<String> = row.try_get("last_failure_class")?;
    Ok(InstallationView {
        installation_id: row.try_get("installation_id")?,
        app_id: row.try_get("app_id")?,
        app_label: row.try_get("app_label")?,
        hub_id: row.try_get("hub_id")?,
        user_id: row.try_get("user_id")?,
        hub_domain: row.try_get("hub_domain")?,
        installer_user_id: row.try_get("installer_user_id")?,
        installer_email: row.try_get("installer_email")?,
        scopes: row.try_get("scopes")?,
        app_version: row.try_get("app_version")?,
        external_ref: row.try_get("external_ref")?,
        status: row.try_get("effective_status")?,
        disconnect_cause: row.try_get("disconnect_cause")?,
        status_reason: row.try_get("status_reason")?,
        status_changed_at: row.try_get("status_changed_at")?,
        access_expires_at: row.try_get("access_expires_at")?,
        first_connected_at: row.try_get("first_connected_at")?,
        last_connected_at: row.try_get("last_connected_at")?,
        last_refreshed_at: row.try_get("last_refreshed_at")?,
        last_used_at: row.try_get("last_used_at")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        last_failure: match failure_class {
            Some(class) => Some(LastFailureView {
                class,
                message: row.try_get("last_failure_message")?,
                at: row.try_get("last_failure_at")?,
            }),
            None => None,
        },
        generation: row.try_get("generation")?,
        plan_code: row.try_get("plan_code")?,
        webhook_events: row.try_get("webhook_events")?,
        last_webhook_at: row.try_get("last_webhook_at")?,
        removal_action: row.try_get("removal_action")?,
        removal_effective_at: row.try_get("removal_effective_at")?,
        updated_at: row.try_get("updated_at")?,
        last_sequence: row.try_get("last_sequence")?,
    })
}

fn push_installation_filters(b: &mut QueryBuilder<'_, Postgres>, q: &InstallationQuery) {
    b.push(" WHERE true");
    if !q.statuses.is_empty() {
        b.push(format!(" AND {EFFECTIVE_STATUS} = ANY("))
            .push_bind(q.statuses.clone())
            .push(")");
    }
    if let Some(app) = q.app_id {
        b.push(" AND i.app_id = ").push_bind(app);
    }
    if let Some(hub) = q.hub_id {
        b.push(" AND i.hub_id = ").push_bind(hub);
    }
    if let Some(external_ref) = &q.external_ref {
        b.push(" AND i.external_ref = ")
            .push_bind(external_ref.clone());
    }
    if let Some(text) = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        let pattern = contains_pattern(text);
        b.push(" AND (i.hub_domain ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR i.installer_email ILIKE ")
            .push_bind(pattern)
            .push(" OR i.hub_id::text = ")
            .push_bind(text.to_owned())
            .push(" OR i.installation_id::text LIKE ")
            .push_bind(format!("{}%", text.to_ascii_lowercase().replace('%', "")))
            .push(")");
    }
}

const INSTALLATION_LIST: KeysetList = KeysetList {
    table: "rm_installations i",
    select: concat!(
        "i.*, a.label AS app_label, ",
        effective_status!(),
        " AS effective_status"
    ),
    joins: " LEFT JOIN rm_apps a ON a.app_id = i.app_id",
    id_expr: "i.installation_id",
    id_column: "installation_id",
    sorts: INSTALLATION_SORTS,
    default_sort: "-connected",
};

/// `GET /v1/installations`.
pub async fn list_installations(
    pool: &PgPool,
    q: &InstallationQuery,
) -> Result<Page<InstallationView>, QueryError> {
    keyset_page(
        pool,
        &INSTALLATION_LIST,
        (q.sort.as_deref(), q.limit, q.cursor.as_deref()),
        |b| push_installation_filters(b, q),
        installation_from_row,
    )
    .await
}

fn page_of<T>(
    mut rows: Vec<PgRow>,
    limit: i64,
    total: i64,
    sort: &str,
    id_column: &str,
    map: impl Fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<Page<T>, QueryError> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = match (more, rows.last()) {
        (true, Some(last)) => Some(encode_cursor(&Cursor {
            s: sort.to_owned(),
            v: last
                .try_get::<Option<String>, _>("sort_value")?
                .unwrap_or_default(),
            id: last.try_get(id_column)?,
        })),
        _ => None,
    };
    let items = rows.iter().map(map).collect::<Result<Vec<_>, _>>()?;
    Ok(Page {
        items,
        next_cursor,
        total,
    })
}

// ---------------------------------------------------------------------------------------------
// Apps

const APP_SORTS: &[SortKey] = &[
    SortKey {
        name: "label",
        expr: "a.label",
        cast: "text",
    },
    SortKey {
        name: "created",
        expr: "a.created_at",
        cast: "timestamptz",
    },
    SortKey {
        name: "updated",
        expr: "a.updated_at",
        cast: "timestamptz",
    },
    SortKey {
        name: "installations",
        expr: "a.installation_count",
        cast: "bigint",
    },
    SortKey {
        name: "environment",
        expr: "a.environment",
        cast: "text",
    },
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppQuery {
    pub environment: Option<String>,
    pub include_deleted: bool,
    pub q: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// An app as the API lists it (never its client secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppView {
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
    pub installation_count: i64,
    pub active_installation_count: i64,
    pub last_sequence: i64,
}

fn app_from_row(row: &PgRow) -> Result<AppView, sqlx::Error> {
    Ok(AppView {
        app_id: row.try_get("app_id")?,
        label: row.try_get("label")?,
        client_id: row.try_get("client_id")?,
        environment: row.try_get("environment")?,
        description: row.try_get("description")?,
        redirect_uri: row.try_get("redirect_uri")?,
        scopes: row.try_get("scopes")?,
        optional_scopes: row.try_get("optional_scopes")?,
        oauth_generation: row.try_get("oauth_generation")?,
        signature_versions: row.try_get("signature_versions")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        deleted_at: row.try_get("deleted_at")?,
        secret_rotated_at: row.try_get("secret_rotated_at")?,
        refreshes_parked_at: row.try_get("refreshes_parked_at")?,
        installation_count: row.try_get("installation_count")?,
        active_installation_count: row.try_get("active_installation_count")?,
        last_sequence: row.try_get("last_sequence")?,
    })
}

fn push_app_filters(b: &mut QueryBuilder<'_, Postgres>, q: &AppQuery) {
    b.push(" WHERE true");
    if !q.include_deleted {
        b.push(" AND a.deleted_at IS NULL");
    }
    if let Some(env) = &q.environment {
        b.push(" AND a.environment = ").push_bind(env.clone());
    }
    if let Some(text) = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        let pattern = contains_pattern(text);
        b.push(" AND (a.label ILIKE ")
            .push_bind(pattern.clone())
            .push(" OR a.client_id ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
}

const APP_LIST: KeysetList = KeysetList {
    table: "rm_apps a",
    select: "a.*",
    joins: "",
    id_expr: "a.app_id",
    id_column: "app_id",
    sorts: APP_SORTS,
    default_sort: "label",
};

/// `GET /v1/apps`.
pub async fn list_apps(pool: &PgPool, q: &AppQuery) -> Result<Page<AppView>, QueryError> {
    keyset_page(
        pool,
        &APP_LIST,
        (q.sort.as_deref(), q.limit, q.cursor.as_deref()),
        |b| push_app_filters(b, q),
        app_from_row,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Activity

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityQuery {
    /// Levels (any of).
    pub levels: Vec<Level>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub installation_id: Option<Uuid>,
    pub app_id: Option<Uuid>,
    /// Newest first unless `ascending`.
    pub ascending: bool,
    pub limit: Option<i64>,
    /// A position returned as `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityView {
    pub position: i64,
    pub occurred_at: DateTime<Utc>,
    pub level: String,
    pub actor: String,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub installation_id: Option<Uuid>,
    pub app_id: Option<Uuid>,
    pub hub_id: Option<i64>,
    pub message: String,
}

fn activity_from_row(row: &PgRow) -> Result<ActivityView, sqlx::Error> {
    Ok(ActivityView {
        position: row.try_get("global_position")?,
        occurred_at: row.try_get("occurred_at")?,
        level: row.try_get("level")?,
        actor: row.try_get("actor")?,
        event_type: row.try_get("event_type")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        installation_id: row.try_get("installation_id")?,
        app_id: row.try_get("app_id")?,
        hub_id: row.try_get("hub_id")?,
        message: row.try_get("message")?,
    })
}

/// The newest `limit` activity rows, newest first: the live activity stream's window, in the
/// same shape as the items of [`list_activity`].
pub async fn newest_activity(pool: &PgPool, limit: i64) -> Result<Vec<ActivityView>, sqlx::Error> {
    sqlx::query("SELECT * FROM rm_activity ORDER BY global_position DESC LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(activity_from_row)
        .collect()
}

fn push_activity_filters(b: &mut QueryBuilder<'_, Postgres>, q: &ActivityQuery) {
    b.push(" WHERE true");
    if !q.levels.is_empty() {
        let levels: Vec<String> = q.levels.iter().map(|l| l.as_str().to_owned()).collect();
        b.push(" AND level = ANY(").push_bind(levels).push(")");
    }
    if let Some(from) = q.from {
        b.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = q.to {
        b.push(" AND occurred_at < ").push_bind(to);
    }
    if let Some(id) = q.installation_id {
        b.push(" AND installation_id = ").push_bind(id);
    }
    if let Some(id) = q.app_id {
        b.push(" AND app_id = ").push_bind(id);
    }
}

/// `GET /v1/activity`.
pub async fn list_activity(
    pool: &PgPool,
    q: &ActivityQuery,
) -> Result<Page<ActivityView>, QueryError> {
    let limit = page_limit(q.limit)?;
    if let (Some(from), Some(to)) = (q.from, q.to) {
        if from >= to {
            return Err(invalid("from", "must be before `to`").into());
        }
    }
    let after: Option<i64> = q
        .cursor
        .as_deref()
        .map(|c| {
            c.trim()
                .parse::<i64>()
                .map_err(|_| invalid("cursor", "expected a position"))
        })
        .transpose()?;
    let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM rm_activity");
    push_activity_filters(&mut count, q);
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

    let mut b = QueryBuilder::<Postgres>::new("SELECT * FROM rm_activity");
    push_activity_filters(&mut b, q);
    let (op, dir) = if q.ascending {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    if let Some(after) = after {
        b.push(format!(" AND global_position {op} "))
            .push_bind(after);
    }
    b.push(format!(" ORDER BY global_position {dir} LIMIT "))
        .push_bind(limit + 1);
    let mut rows = b.build().fetch_all(pool).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let items = rows
        .iter()
        .map(activity_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if more {
        items.last().map(|i| i.position.to_string())
    } else {
        None
    };
    Ok(Page {
        items,
        next_cursor,
        total,
    })
}

// ---------------------------------------------------------------------------------------------
// Overview

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveUsers {
    /// Installations connected now (tokens held and kept fresh).
    pub current: i64,
    /// The same a week ago, from the status history.
    pub week_ago: i64,
    pub change: i64,
    /// `null` when there were none a week ago.
    pub change_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenStats {
    /// Connected with an access token valid now.
    pub active: i64,
    /// Active tokens expiring within `expiring_window_seconds` (the refresher should have
    /// renewed them: they need attention).
    pub expiring_soon: i64,
    pub expiring_window_seconds: i64,
    /// Connected but past expiry (refreshable).
    pub expired: i64,
    pub needs_reauthorization: i64,
    /// Connected installations whose latest refresh attempts failed.
    pub refresh_failing: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub active_users: ActiveUsers,
    pub tokens: TokenStats,
    /// Installations per effective status.
    pub installations_by_status: serde_json::Map<String, serde_json::Value>,
    pub apps: i64,
    /// Webhook events processed today (UTC).
    pub webhook_events_today: i64,
    pub recent_activity: Vec<ActivityView>,
}

/// `GET /v1/stats/overview`.
pub async fn overview(
    pool: &PgPool,
    expiring_window: Duration,
    recent: i64,
) -> Result<Overview, QueryError> {
    let now = Utc::now();
    let active_at = |at: DateTime<Utc>| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(DISTINCT installation_id) FROM rm_installation_status_periods
              WHERE status = 'connected' AND started_at <= $1 AND (ended_at IS NULL OR ended_at > $1)",
        )
        .bind(at)
        .fetch_one(pool)
    };
    let current = active_at(now).await?;
    let week_ago = active_at(now - Duration::days(7)).await?;
    let row = sqlx::query(
        "SELECT
            count(*) FILTER (WHERE status = 'connected' AND access_expires_at > now()) AS active,
            count(*) FILTER (WHERE status = 'connected' AND access_expires_at > now()
                               AND access_expires_at <= now() + $1) AS expiring_soon,
            count(*) FILTER (WHERE status = 'connected' AND access_expires_at <= now()) AS expired,
            count(*) FILTER (WHERE status = 'needs_reauthorization') AS needs_reauthorization,
            count(*) FILTER (WHERE status = 'connected' AND consecutive_failures > 0) AS failing
           FROM rm_installations",
    )
    .bind(expiring_window)
    .fetch_one(pool)
    .await?;
    let by_status: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT {EFFECTIVE_STATUS} AS s, count(*) FROM rm_installations i GROUP BY 1 ORDER BY 1"
    ))
    .fetch_all(pool)
    .await?;
    let apps: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_apps WHERE deleted_at IS NULL")
        .fetch_one(pool)
        .await?;
    let webhook_events_today: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(events), 0)::bigint FROM webhook_usage_daily
          WHERE day = (now() AT TIME ZONE 'UTC')::date",
    )
    .fetch_one(pool)
    .await?;
    let recent_activity = list_activity(
        pool,
        &ActivityQuery {
            limit: Some(recent.clamp(1, MAX_LIMIT)),
            ..ActivityQuery::default()
        },
    )
    .await?
    .items;
    Ok(Overview {
        generated_at: now,
        active_users: ActiveUsers {
            current,
            week_ago,
            change: current - week_ago,
            change_percent: (week_ago > 0)
                .then(|| ((current - week_ago) as f64 / week_ago as f64 * 1000.0).round() / 10.0),
        },
        tokens: TokenStats {
            active: row.try_get("active")?,
            expiring_soon: row.try_get("expiring_soon")?,
            expiring_window_seconds: expiring_window.num_seconds(),
            expired: row.try_get("expired")?,
            needs_reauthorization: row.try_get("needs_reauthorization")?,
            refresh_failing: row.try_get("failing")?,
        },
        installations_by_status: by_status
            .into_iter()
            .map(|(s, n)| (s, serde_json::Value::from(n)))
            .collect(),
        apps,
        webhook_events_today,
        recent_activity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_cursors_are_validated() {
        let (key, desc, sort) = parse_sort(None, "-connected", INSTALLATION_SORTS).unwrap();
        assert_eq!(
            (key.name, desc, sort.as_str()),
            ("connected", true, "-connected")
        );
        let err = parse_sort(Some("nope"), "label", APP_SORTS).unwrap_err();
        assert_eq!(err.parameter, "sort");
        let cursor = encode_cursor(&Cursor {
            s: "expires".into(),
            v: "2026-01-01 00:00:00+00".into(),
            id: Uuid::nil(),
        });
        assert!(decode_cursor(&cursor, "expires").is_ok());
        assert_eq!(
            decode_cursor(&cursor, "-expires").unwrap_err().parameter,
            "cursor"
        );
        assert_eq!(
            decode_cursor("%%%", "expires").unwrap_err().parameter,
            "cursor"
        );
        assert_eq!(page_limit(Some(0)).unwrap_err().parameter, "limit");
        assert_eq!(page_limit(None), Ok(50));
        assert_eq!(
            InstallationQuery::parse_statuses("connected, expired").unwrap(),
            vec!["connected", "expired"]
        );
        assert_eq!(
            InstallationQuery::parse_statuses("bogus")
                .unwrap_err()
                .parameter,
            "status"
        );
    }
}
