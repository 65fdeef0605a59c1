//! Time series over the read models: the one query layer behind `/v1/stats/<series>` and the
//! dashboard's charts.
//!
//! Every series is a list of equal buckets between `from` and `to` (both aligned outward to the
//! bucket, in UTC), one point per bucket even when nothing happened in it, so a chart of N
//! buckets always has N points and a script can zip series together. Each query reads a read
//! model with an index on its time column (`rm_activity.occurred_at`, `token_usage.day`,
//! `usage_daily.day`, `rm_plan_changes.occurred_at`, ...); none scans the events table.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::queries::{InvalidParameter, QueryError};
use hubkeeper_domain::installation::event_types as installation_events;

/// The most points one series answers; a longer range needs a larger bucket.
pub const MAX_POINTS: i64 = 1000;

/// The width of one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bucket {
    Minute,
    FiveMinutes,
    FifteenMinutes,
    Hour,
    Day,
    Week,
}

impl Bucket {
    pub const ALL: [Bucket; 6] = [
        Bucket::Minute,
        Bucket::FiveMinutes,
        Bucket::FifteenMinutes,
        Bucket::Hour,
        Bucket::Day,
        Bucket::Week,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "1m",
            Bucket::FiveMinutes => "5m",
            Bucket::FifteenMinutes => "15m",
            Bucket::Hour => "1h",
            Bucket::Day => "1d",
            Bucket::Week => "1w",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Bucket::Minute => 60,
            Bucket::FiveMinutes => 300,
            Bucket::FifteenMinutes => 900,
            Bucket::Hour => 3600,
            Bucket::Day => 86_400,
            Bucket::Week => 7 * 86_400,
        }
    }

    /// The start of the bucket holding `t`. Weeks start on Monday 00:00 UTC (ISO weeks), the
    /// others on multiples of their width since the Unix epoch.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        // 1970-01-05 was a Monday.
        let origin = if self == Bucket::Week { 4 * 86_400 } else { 0 };
        let width = self.seconds();
        let since = t.timestamp() - origin;
        let start = origin + since.div_euclid(width) * width;
        Utc.timestamp_opt(start, 0).single().unwrap_or(t)
    }

    /// The end of the bucket holding the instant just before `t` (so an aligned `t` stays).
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let floor = self.floor(t);
        if floor == t && t.timestamp_subsec_nanos() == 0 {
            t
        } else {
            floor + Duration::seconds(self.seconds())
        }
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Bucket {
    type Err = InvalidParameter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bucket::ALL
            .into_iter()
            .find(|b| b.as_str() == s.trim())
            .ok_or_else(|| InvalidParameter {
                parameter: "bucket",
                message: format!("unknown bucket `{s}` (expected 1m, 5m, 15m, 1h, 1d or 1w)"),
            })
    }
}

/// A validated range of whole buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: Bucket,
}

impl Window {
    /// Aligns `from` down and `to` up to the bucket; refuses a reversed or empty range and one
    /// of more than [`MAX_POINTS`] buckets.
    pub fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Bucket,
    ) -> Result<Window, InvalidParameter> {
        if from >= to {
            return Err(InvalidParameter {
                parameter: "from",
                message: format!("must be before `to` (from {from}, to {to})"),
            });
        }
        let window = Window {
            from: bucket.floor(from),
            to: bucket.ceil(to),
            bucket,
        };
        let points = window.points();
        if points > MAX_POINTS {
            return Err(InvalidParameter {
                parameter: "bucket",
                message: format!(
                    "the range holds {points} buckets of {bucket}; at most {MAX_POINTS}: choose a \
                     larger bucket or a shorter range"
                ),
            });
        }
        Ok(window)
    }

    /// The range ending at the bucket holding `now` and reaching `span` back.
    pub fn last(now: DateTime<Utc>, span: Duration, bucket: Bucket) -> Window {
        let to = bucket.floor(now) + Duration::seconds(bucket.seconds());
        Window {
            from: bucket.floor(to - span),
            to,
            bucket,
        }
    }

    /// The range starting at the bucket holding `now` and reaching `span` ahead.
    pub fn next(now: DateTime<Utc>, span: Duration, bucket: Bucket) -> Window {
        let from = bucket.floor(now);
        Window {
            from,
            to: bucket.ceil(from + span),
            bucket,
        }
    }

    pub fn points(&self) -> i64 {
        (self.to - self.from).num_seconds() / self.bucket.seconds()
    }
}

/// What a value of a point means, which decides whether it has a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// Things that happened in the bucket; the series' total is their sum.
    Count,
    /// A level at the end of the bucket (e.g. connected accounts), or a rate or latency: no sum.
    Level,
}

/// One value column of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Key {
    pub name: &'static str,
    pub kind: ValueKind,
}

const fn count(name: &'static str) -> Key {
    Key {
        name,
        kind: ValueKind::Count,
    }
}

const fn level(name: &'static str) -> Key {
    Key {
        name,
        kind: ValueKind::Level,
    }
}

/// One bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub start: DateTime<Utc>,
    #[serde(flatten)]
    pub values: BTreeMap<&'static str, Value>,
}

/// A series as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub series: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: &'static str,
    pub bucket_seconds: i64,
    pub keys: Vec<Key>,
    pub points: Vec<Point>,
    /// Sums of the `count` keys over all points.
    pub totals: BTreeMap<&'static str, i64>,
    /// Figures that belong to the series as a whole (a plan's limit, the refresh lead time).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<&'static str, Value>,
}

impl Series {
    fn from_rows(
        series: &'static str,
        window: Window,
        keys: &[Key],
        rows: &[PgRow],
    ) -> Result<Series, sqlx::Error> {
        let mut points = Vec::with_capacity(rows.len());
        let mut totals: BTreeMap<&'static str, i64> = keys
            .iter()
            .filter(|k| k.kind == ValueKind::Count)
            .map(|k| (k.name, 0))
            .collect();
        for row in rows {
            let mut values = BTreeMap::new();
            for key in keys {
                let value = match key.kind {
                    ValueKind::Count => {
                        let n: i64 = row.try_get::<Option<i64>, _>(key.name)?.unwrap_or(0);
                        if let Some(total) = totals.get_mut(key.name) {
                            *total = total.saturating_add(n);
                        }
                        Value::from(n)
                    }
                    ValueKind::Level => match row.try_get::<Option<f64>, _>(key.name)? {
                        Some(v) if v.is_finite() => Value::from((v * 10.0).round() / 10.0),
                        _ => Value::Null,
                    },
                };
                values.insert(key.name, value);
            }
            points.push(Point {
                start: row.try_get("start")?,
                values,
            });
        }
        Ok(Series {
            series,
            from: window.from,
            to: window.to,
            bucket: window.bucket.as_str(),
            bucket_seconds: window.bucket.seconds(),
            keys: keys.to_vec(),
            points,
            totals,
            context: BTreeMap::new(),
        })
    }

    /// Adds a figure about the whole series.
    pub fn with(mut self, name: &'static str, value: impl Into<Value>) -> Series {
        self.context.insert(name, value.into());
        self
    }
}

/// The bucket starts of a window as a SQL row source named `b(start)`; `$1` from, `$2` to,
/// `$3` bucket seconds.
const BUCKETS: &str =
    "generate_series($1::timestamptz, $2::timestamptz - make_interval(secs => $3::float8),
                                       make_interval(secs => $3::float8)) AS b(start)";

/// The end of bucket `b`.
const BUCKET_END: &str = "b.start + make_interval(secs => $3::float8)";

async fn run(
    pool: &PgPool,
    sql: &str,
    window: Window,
    extra: impl FnOnce(
        sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Vec<PgRow>, sqlx::Error> {
    let query = sqlx::query(sql)
        .bind(window.from)
        .bind(window.to)
        .bind(window.bucket.seconds() as f64);
    extra(query).fetch_all(pool).await
}

pub const REFRESH_KEYS: [Key; 3] = [
    count("succeeded"),
    count("failed"),
    count("needs_reauthorization"),
];

/// Refreshes per bucket: succeeded, failed (to be retried) and needing re-authorisation, of
/// every installation or one.
pub async fn refreshes(
    pool: &PgPool,
    window: Window,
    installation: Option<Uuid>,
) -> Result<Series, QueryError> {
    let sql = format!(
        "SELECT b.start,
                count(a.global_position) FILTER (WHERE a.event_type = $5) AS succeeded,
                count(a.global_position) FILTER (WHERE a.event_type = $6) AS failed,
                count(a.global_position) FILTER (WHERE a.event_type = $7) AS needs_reauthorization
           FROM {BUCKETS}
           LEFT JOIN rm_activity a
             ON a.occurred_at >= b.start AND a.occurred_at < {BUCKET_END}
            AND a.event_type IN ($5, $6, $7)
            AND ($4::uuid IS NULL OR a.installation_id = $4)
          GROUP BY b.start ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| {
        q.bind(installation)
            .bind(installation_events::TOKENS_REFRESHED)
            .bind(installation_events::REFRESH_FAILED)
            .bind(installation_events::REAUTHORIZATION_REQUIRED)
    })
    .await?;
    Ok(Series::from_rows(
        "refreshes",
        window,
        &REFRESH_KEYS,
        &rows,
    )?)
}

pub const ACTIVITY_KEYS: [Key; 3] = [count("info"), count("warn"), count("error")];

/// Activity-log entries per bucket by level, of everything or one installation or app.
pub async fn activity(
    pool: &PgPool,
    window: Window,
    installation: Option<Uuid>,
    app: Option<Uuid>,
) -> Result<Series, QueryError> {
    let sql = format!(
        "SELECT b.start,
                count(a.global_position) FILTER (WHERE a.level = 'info') AS info,
                count(a.global_position) FILTER (WHERE a.level = 'warn') AS warn,
                count(a.global_position) FILTER (WHERE a.level = 'error') AS error
           FROM {BUCKETS}
           LEFT JOIN rm_activity a
             ON a.occurred_at >= b.start AND a.occurred_at < {BUCKET_END}
            AND ($4::uuid IS NULL OR a.installation_id = $4)
            AND ($5::uuid IS NULL OR a.app_id = $5)
          GROUP BY b.start ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| q.bind(installation).bind(app)).await?;
    Ok(Series::from_rows(
        "activity",
        window,
        &ACTIVITY_KEYS,
        &rows,
    )?)
}

pub const EXPIRY_KEYS: [Key; 1] = [count("expiring")];

/// Access tokens of connected installations by the bucket they expire in (a window ahead of
/// now). `lead` is the scheduler's refresh lead time, returned so a chart can mark it.
pub async fn expiries(pool: &PgPool, window: Window, lead: Duration) -> Result<Series, QueryError> {
    let sql = format!(
        "SELECT b.start, count(i.installation_id) AS expiring
           FROM {BUCKETS}
           LEFT JOIN rm_installations i
             ON i.access_expires_at >= b.start AND i.access_expires_at < {BUCKET_END}
            AND i.status = 'connected'
          GROUP BY b.start ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| q).await?;
    Ok(Series::from_rows("expiries", window, &EXPIRY_KEYS, &rows)?
        .with("refresh_lead_seconds", lead.num_seconds()))
}

pub const CONNECTED_KEYS: [Key; 1] = [level("connected")];

/// Installations connected at the end of each bucket (from the status periods).
pub async fn connected(pool: &PgPool, window: Window) -> Result<Series, QueryError> {
    let sql = format!(
        "SELECT b.start,
                (SELECT count(*) FROM rm_installation_status_periods p
                  WHERE p.status = 'connected' AND p.started_at < {BUCKET_END}
                    AND (p.ended_at IS NULL OR p.ended_at >= {BUCKET_END}))::float8 AS connected
           FROM {BUCKETS}
          ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| q).await?;
    Ok(Series::from_rows(
        "connected",
        window,
        &CONNECTED_KEYS,
        &rows,
    )?)
}

/// Refuses a bucket smaller than a day for series kept per UTC day.
pub fn require_days(window: &Window) -> Result<(), InvalidParameter> {
    if window.bucket < Bucket::Day {
        return Err(InvalidParameter {
            parameter: "bucket",
            message: format!(
                "this series is kept per UTC day: use 1d or 1w, not {}",
                window.bucket
            ),
        });
    }
    Ok(())
}

pub const HANDOUT_KEYS: [Key; 1] = [count("handouts")];

/// Token hand-outs per day (or week) as flushed to `token_usage`, of everything or one
/// installation.
pub async fn handouts(
    pool: &PgPool,
    window: Window,
    installation: Option<Uuid>,
) -> Result<Series, QueryError> {
    require_days(&window)?;
    let sql = format!(
        "SELECT b.start, sum(u.handouts)::bigint AS handouts
           FROM {BUCKETS}
           LEFT JOIN token_usage u
             ON u.day >= b.start::date AND u.day < ({BUCKET_END})::date
            AND ($4::text IS NULL OR u.installation_id = $4)
          GROUP BY b.start ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| {
        q.bind(installation.map(|i| i.to_string()))
    })
    .await?;
    Ok(Series::from_rows("handouts", window, &HANDOUT_KEYS, &rows)?)
}

pub const USAGE_KEYS: [Key; 1] = [count("requests")];

/// Requests reported as usage (the metered counter plans limit per month) per day, of every
/// tenant or one. The caller adds the tenant's monthly limit (it depends on the plan version the
/// tenant is held to, which the aggregates know).
pub async fn usage(
    pool: &PgPool,
    window: Window,
    installation: Option<Uuid>,
) -> Result<Series, QueryError> {
    require_days(&window)?;
    let sql = format!(
        "SELECT b.start, sum(u.quantity)::bigint AS requests
           FROM {BUCKETS}
           LEFT JOIN usage_daily u
             ON u.day >= b.start::date AND u.day < ({BUCKET_END})::date
            AND u.metric = 'requests'
            AND ($4::uuid IS NULL OR u.installation_id = $4)
          GROUP BY b.start ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| q.bind(installation)).await?;
    Ok(Series::from_rows("usage", window, &USAGE_KEYS, &rows)?)
}

pub const PLAN_CHANGE_KEYS: [Key; 2] = [count("upgrades"), count("downgrades")];

/// Upgrades and downgrades per bucket.
pub async fn plan_changes(pool: &PgPool, window: Window) -> Result<Series, QueryError> {
    let sql = format!(
        "SELECT b.start,
                count(c.global_position) FILTER (WHERE c.direction = 'upgrade') AS upgrades,
                count(c.global_position) FILTER (WHERE c.direction = 'downgrade') AS downgrades
           FROM {BUCKETS}
           LEFT JOIN rm_plan_changes c
             ON c.occurred_at >= b.start AND c.occurred_at < {BUCKET_END}
          GROUP BY b.start ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| q).await?;
    Ok(Series::from_rows(
        "plan_changes",
        window,
        &PLAN_CHANGE_KEYS,
        &rows,
    )?)
}

pub const REGISTRATION_KEYS: [Key; 4] = [
    count("free"),
    count("paid"),
    count("conversions"),
    level("conversion_rate_percent"),
];

/// New registrations per bucket (starting on a free or a paid plan), conversions (a tenant that
/// started free moving to a paid plan for the first time) and the conversion rate at the end of
/// each bucket: of the tenants that had started free by then, the share whose plan at that
/// moment was paid (`null` while none had started free). At the last bucket this is the rate the
/// billing overview shows. A plan counts as paid when its price is above zero or it bills per
/// unit, as the subscription's terms decide.
pub async fn registrations(pool: &PgPool, window: Window) -> Result<Series, QueryError> {
    let sql = format!(
        "WITH changes AS (
             SELECT c.installation_id, c.occurred_at, c.global_position,
                    (c.amount_minor > 0 OR p.unit_price_minor IS NOT NULL) AS paid
               FROM rm_plan_changes c
               JOIN rm_subscriptions s ON s.installation_id = c.installation_id AND NOT s.started_paid
               LEFT JOIN rm_plans p ON p.code = c.to_plan_code),
         converted AS (
             SELECT installation_id, min(occurred_at) AS at FROM changes WHERE paid
              GROUP BY installation_id)
         SELECT b.start,
                (SELECT count(*) FROM rm_subscriptions s
                  WHERE NOT s.started_paid AND s.joined_at >= b.start AND s.joined_at < {BUCKET_END}) AS free,
                (SELECT count(*) FROM rm_subscriptions s
                  WHERE s.started_paid AND s.joined_at >= b.start AND s.joined_at < {BUCKET_END}) AS paid,
                (SELECT count(*) FROM converted v
                  WHERE v.at >= b.start AND v.at < {BUCKET_END}) AS conversions,
                (SELECT 100.0 * count(*) FILTER (WHERE COALESCE(
                            (SELECT ch.paid FROM changes ch
                              WHERE ch.installation_id = s.installation_id AND ch.occurred_at < {BUCKET_END}
                              ORDER BY ch.occurred_at DESC, ch.global_position DESC LIMIT 1), false))
                        / NULLIF(count(*), 0)
                   FROM rm_subscriptions s
                  WHERE NOT s.started_paid AND s.joined_at < {BUCKET_END})::float8 AS conversion_rate_percent
           FROM {BUCKETS}
          ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| q).await?;
    Ok(Series::from_rows(
        "registrations",
        window,
        &REGISTRATION_KEYS,
        &rows,
    )?)
}

pub const WEBHOOK_KEYS: [Key; 3] = [
    count("received"),
    level("latency_p50_ms"),
    level("latency_p95_ms"),
];

/// HubSpot webhook events recorded per bucket (after de-duplication) and their ingest latency:
/// from HubSpot's `occurredAt` to the moment a webhook worker recorded the event. Read from
/// `rm_webhook_events`, folded from the webhook logs' events, so a replay rebuilds it whole.
pub async fn webhooks(pool: &PgPool, window: Window) -> Result<Series, QueryError> {
    let sql = format!(
        "SELECT b.start,
                count(w.sequence) AS received,
                (percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM w.received_at - w.occurred_at))
                  * 1000)::float8 AS latency_p50_ms,
                (percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM w.received_at - w.occurred_at))
                  * 1000)::float8 AS latency_p95_ms
           FROM {BUCKETS}
           LEFT JOIN rm_webhook_events w
             ON w.received_at >= b.start AND w.received_at < {BUCKET_END}
          GROUP BY b.start ORDER BY b.start"
    );
    let rows = run(pool, &sql, window, |q| q).await?;
    Ok(Series::from_rows("webhooks", window, &WEBHOOK_KEYS, &rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn buckets_floor_to_their_width_and_weeks_to_monday() {
        let t = at("2026-12-06T23:37:12Z"); // a Sunday
        assert_eq!(Bucket::Minute.floor(t), at("2026-12-06T23:37:00Z"));
        assert_eq!(Bucket::FiveMinutes.floor(t), at("2026-12-06T23:35:00Z"));
        assert_eq!(Bucket::FifteenMinutes.floor(t), at("2026-12-06T23:30:00Z"));
        assert_eq!(Bucket::Hour.floor(t), at("2026-12-06T23:00:00Z"));
        assert_eq!(Bucket::Day.floor(t), at("2026-12-06T00:00:00Z"));
        assert_eq!(Bucket::Week.floor(t), at("2026-11-30T00:00:00Z"));
        assert_eq!(Bucket::Hour.ceil(t), at("2026-12-07T00:00:00Z"));
        assert_eq!(
            Bucket::Hour.ceil(at("2026-12-06T23:00:00Z")),
            at("2026-12-06T23:00:00Z")
        );
    }

    #[test]
    fn a_window_is_whole_buckets() {
        let w = Window::new(
            at("2026-12-06T10:20:00Z"),
            at("2026-12-06T12:10:00Z"),
            Bucket::Hour,
        )
        .unwrap();
        assert_eq!(w.from, at("2026-12-06T10:00:00Z"));
        assert_eq!(w.to, at("2026-12-06T13:00:00Z"));
        assert_eq!(w.points(), 3);
    }

    #[test]
    fn reversed_empty_and_huge_ranges_are_refused_by_name() {
        let t = at("2026-12-06T10:00:00Z");
        let reversed = Window::new(t, t - Duration::hours(1), Bucket::Hour).unwrap_err();
        assert_eq!(reversed.parameter, "from");
        let empty = Window::new(t, t, Bucket::Hour).unwrap_err();
        assert_eq!(empty.parameter, "from");
        let huge = Window::new(t - Duration::days(365), t, Bucket::Minute).unwrap_err();
        assert_eq!(huge.parameter, "bucket");
        assert!(huge.message.contains("525600 buckets"), "{}", huge.message);
        assert!(Window::new(t - Duration::days(365), t, Bucket::Day).is_ok());
    }

    #[test]
    fn unknown_buckets_are_refused_and_known_ones_round_trip() {
        for b in Bucket::ALL {
            assert_eq!(b.as_str().parse::<Bucket>().unwrap(), b);
        }
        let e = "2h".parse::<Bucket>().unwrap_err();
        assert_eq!(e.parameter, "bucket");
        assert!(e.message.contains("2h"));
    }

    #[test]
    fn last_and_next_cover_now() {
        let now = at("2026-12-06T23:37:12Z");
        let last = Window::last(now, Duration::hours(24), Bucket::Hour);
        assert_eq!(last.to, at("2026-12-07T00:00:00Z"));
        assert_eq!(last.points(), 24);
        let next = Window::next(now, Duration::hours(2), Bucket::FiveMinutes);
        assert_eq!(next.from, at("2026-12-06T23:35:00Z"));
        assert_eq!(next.points(), 24);
    }
}
