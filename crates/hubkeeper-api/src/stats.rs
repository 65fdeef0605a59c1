//! Time series for charts and scripts: `GET /v1/stats/<series>?from=&to=&bucket=`.
//!
//! Each series answers one point per bucket between `from` and `to` (aligned outward to the
//! bucket, UTC), the value names and kinds (`keys`), the sums of its counts (`totals`) and, where
//! one exists, a figure about the whole (`context`: a tenant's monthly limit, the refresh lead
//! time). Without `from`/`to` each series covers the span its chart shows (see [`Span`]). The
//! queries live in `hubkeeper_projections::series`; the dashboard's charts draw these answers.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use hubkeeper_domain::plan::LimitKind;
use hubkeeper_domain::InstallationId;
use hubkeeper_projections::series::{self, Bucket, Series, Window};
use serde::Deserialize;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::Query;
use crate::params::{text, time, uuid};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stats/refreshes", get(refreshes))
        .route("/v1/stats/activity", get(activity))
        .route("/v1/stats/expiries", get(expiries))
        .route("/v1/stats/connected", get(connected))
        .route("/v1/stats/handouts", get(handouts))
        .route("/v1/stats/usage", get(usage))
        .route("/v1/stats/plan-changes", get(plan_changes))
        .route("/v1/stats/registrations", get(registrations))
        .route("/v1/stats/webhooks", get(webhooks))
}

/// The range and bucket parameters every series takes.
#[derive(Debug, Default, Deserialize)]
pub struct RangeParams {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    installation_id: Option<String>,
    app_id: Option<String>,
}

/// What a series covers when the request does not say.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// The `span` up to now.
    Past(Duration, Bucket),
    /// The `span` from now on.
    Ahead(Duration, Bucket),
    /// The current UTC month up to now.
    ThisMonth,
}

impl Span {
    fn default_bucket(self) -> Bucket {
        match self {
            Span::Past(_, b) | Span::Ahead(_, b) => b,
            Span::ThisMonth => Bucket::Day,
        }
    }

    fn window(self, now: DateTime<Utc>, bucket: Bucket) -> Window {
        match self {
            Span::Past(span, _) => Window::last(now, span, bucket),
            Span::Ahead(span, _) => Window::next(now, span, bucket),
            Span::ThisMonth => {
                let start = Utc
                    .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
                    .single()
                    .unwrap_or(now);
                Window::last(now, now - start, bucket)
            }
        }
    }
}

impl RangeParams {
    /// The window asked for: `from`/`to` as given (either may be left out: the other end
    /// follows from the series' default span), the default span when neither is.
    fn window(&self, span: Span) -> Result<Window, ApiError> {
        let bucket = match text("bucket", &self.bucket)? {
            Some(b) => b.parse::<Bucket>()?,
            None => span.default_bucket(),
        };
        let now = Utc::now();
        let default = span.window(now, bucket);
        let from = time("from", &self.from)?;
        let to = time("to", &self.to)?;
        let window = match (from, to) {
            // Checked too: the default span in a small bucket can be too many points.
            (None, None) => Window::new(default.from, default.to, bucket)?,
            (Some(from), None) => {
                let to = match span {
                    Span::Ahead(..) => from + default_len(default),
                    Span::Past(..) | Span::ThisMonth => {
                        now.max(from + Duration::seconds(bucket.seconds()))
                    }
                };
                Window::new(from, to, bucket)?
            }
            (None, Some(to)) => Window::new(to - default_len(default), to, bucket)?,
            (Some(from), Some(to)) => Window::new(from, to, bucket)?,
        };
        Ok(window)
    }

    fn installation(&self) -> Result<Option<uuid::Uuid>, ApiError> {
        uuid("installation_id", &self.installation_id)
    }

    /// Refuses a filter the series does not take, instead of ignoring it.
    fn refuse(&self, takes: Filters) -> Result<(), ApiError> {
        if !takes.installation && self.installation_id.is_some() {
            return Err(ApiError::invalid_parameter(
                "installation_id",
                "this series is not kept per installation",
            ));
        }
        if !takes.app && self.app_id.is_some() {
            return Err(ApiError::invalid_parameter(
                "app_id",
                "this series is not kept per app",
            ));
        }
        Ok(())
    }
}

/// Which filters a series takes.
#[derive(Debug, Clone, Copy)]
struct Filters {
    installation: bool,
    app: bool,
}

const NO_FILTERS: Filters = Filters {
    installation: false,
    app: false,
};
const BY_INSTALLATION: Filters = Filters {
    installation: true,
    app: false,
};
const BY_INSTALLATION_OR_APP: Filters = Filters {
    installation: true,
    app: true,
};

/// What every series does first: the permission, the filters it takes, the window.
fn prepare(
    caller: &Caller,
    p: &RangeParams,
    takes: Filters,
    span: Span,
) -> Result<Window, ApiError> {
    caller.require(Permission::Read)?;
    p.refuse(takes)?;
    p.window(span)
}

fn default_len(window: Window) -> Duration {
    window.to - window.from
}

type SeriesResult = Result<Json<Series>, ApiError>;

/// `GET /v1/stats/refreshes?from=&to=&bucket=&installation_id=` (default: the last 24 h by hour).
async fn refreshes(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(
        &caller,
        &p,
        BY_INSTALLATION,
        Span::Past(Duration::hours(24), Bucket::Hour),
    )?;
    Ok(Json(
        series::refreshes(state.pool(), window, p.installation()?).await?,
    ))
}

/// `GET /v1/stats/activity?from=&to=&bucket=&installation_id=&app_id=` (default: the last 24 h
/// by hour).
async fn activity(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(
        &caller,
        &p,
        BY_INSTALLATION_OR_APP,
        Span::Past(Duration::hours(24), Bucket::Hour),
    )?;
    let app = uuid("app_id", &p.app_id)?;
    Ok(Json(
        series::activity(state.pool(), window, p.installation()?, app).await?,
    ))
}

/// `GET /v1/stats/expiries?from=&to=&bucket=` (default: the next 2 h by 5 minutes).
async fn expiries(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(
        &caller,
        &p,
        NO_FILTERS,
        Span::Ahead(Duration::hours(2), Bucket::FiveMinutes),
    )?;
    Ok(Json(
        series::expiries(state.pool(), window, state.refresh_lead()).await?,
    ))
}

/// `GET /v1/stats/connected?from=&to=&bucket=` (default: the last 30 days by day).
async fn connected(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(
        &caller,
        &p,
        NO_FILTERS,
        Span::Past(Duration::days(30), Bucket::Day),
    )?;
    Ok(Json(series::connected(state.pool(), window).await?))
}

/// `GET /v1/stats/handouts?from=&to=&bucket=&installation_id=` (default: the last 30 days by
/// day).
async fn handouts(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(
        &caller,
        &p,
        BY_INSTALLATION,
        Span::Past(Duration::days(30), Bucket::Day),
    )?;
    Ok(Json(
        series::handouts(state.pool(), window, p.installation()?).await?,
    ))
}

/// `GET /v1/stats/usage?from=&to=&bucket=&installation_id=` (default: this month by day). With
/// one tenant, `context.monthly_limit` is its plan's `requests_per_month` (absent: unlimited).
async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(&caller, &p, BY_INSTALLATION, Span::ThisMonth)?;
    let installation = p.installation()?;
    let mut answer = series::usage(state.pool(), window, installation).await?;
    if let Some(id) = installation {
        let limit = state
            .billing()?
            .monthly_limit(InstallationId::from_uuid(id), LimitKind::RequestsPerMonth)
            .await?;
        if let Some(limit) = limit {
            answer = answer.with("monthly_limit", limit);
        }
    }
    Ok(Json(answer))
}

/// `GET /v1/stats/plan-changes?from=&to=&bucket=` (default: the last 12 weeks by week).
async fn plan_changes(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(
        &caller,
        &p,
        NO_FILTERS,
        Span::Past(Duration::weeks(12), Bucket::Week),
    )?;
    Ok(Json(series::plan_changes(state.pool(), window).await?))
}

/// `GET /v1/stats/registrations?from=&to=&bucket=` (default: the last 12 weeks by week).
async fn registrations(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(
        &caller,
        &p,
        NO_FILTERS,
        Span::Past(Duration::weeks(12), Bucket::Week),
    )?;
    Ok(Json(series::registrations(state.pool(), window).await?))
}

/// `GET /v1/stats/webhooks?from=&to=&bucket=` (default: the last hour by minute).
async fn webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<RangeParams>,
) -> SeriesResult {
    let window = prepare(
        &caller,
        &p,
        NO_FILTERS,
        Span::Past(Duration::hours(1), Bucket::Minute),
    )?;
    Ok(Json(series::webhooks(state.pool(), window).await?))
}
