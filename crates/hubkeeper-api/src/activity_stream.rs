//! `GET /v1/activity/stream`: the activity log, live, as server-sent events (the Overview's
//! "recent activity").
//!
//! Rows come from the activity read model (`rm_activity`), the same rows `GET /v1/activity`
//! pages through, so a live entry looks exactly like a listed one. The stream wakes on every
//! event the relay publishes to NATS (`hk.events.>`) and re-reads the newest rows a moment later
//! (the projector writes them just after); a slow poll covers NATS being briefly away. Commit
//! order is not position order, so it remembers which recent positions it sent rather than
//! sending "everything above the last one".
//!
//! A stream outlives the request that opened it, so it re-checks its caller's session or key
//! every [`crate::StreamControl::recheck`] (30 s by default) and ends once they are gone (logout,
//! expiry, revocation) or no longer allow reading; it also ends when the server shuts down.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use futures::{Stream, StreamExt};
use hubkeeper_projections::queries::{newest_activity, ActivityView};
use serde::Deserialize;

use crate::auth::{authenticate, Caller, Permission};
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;
use crate::StreamControl;

/// How many of the newest rows each re-read looks at.
const WINDOW: i64 = 50;
/// Re-read this often even without a NATS wake-up.
const POLL: Duration = Duration::from_secs(5);
/// After a wake-up, wait this long for the projector to write its row(s).
const SETTLE: Duration = Duration::from_millis(250);

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/activity/stream", get(stream))
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    /// Rows up to this position are already on the client's screen.
    after: Option<i64>,
}

struct Cursor {
    state: AppState,
    wake: Option<async_nats::Subscriber>,
    sent: BTreeSet<i64>,
    first: bool,
    /// The request's credentials, checked again every `control.recheck`.
    headers: HeaderMap,
    checked: Instant,
    control: StreamControl,
}

/// Whether the caller behind `headers` may still read (its session or key is alive).
async fn still_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    match authenticate(state.auth(), &Method::GET, headers).await {
        Ok(who) => who.caller.role.allows(Permission::Read),
        Err(_) => false,
    }
}

async fn stream(
    caller: Caller,
    State(state): State<AppState>,
    control: Option<Extension<StreamControl>>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(Permission::Read)?;
    let control = control.map_or_else(
        || StreamControl {
            shutdown: tokio_util::sync::CancellationToken::new(),
            recheck: crate::ServeOptions::default().stream_recheck,
        },
        |Extension(control)| control,
    );
    // A reconnecting EventSource says where it was; a fresh one says what it has listed.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .or(query.after)
        .unwrap_or(i64::MAX);
    let wake = match state.nats().subscribe("hk.events.>").await {
        Ok(sub) => Some(sub),
        Err(e) => {
            tracing::warn!(error = %e, "activity stream: no NATS wake-ups, polling only");
            None
        }
    };
    let sent = newest_activity(state.pool(), WINDOW)
        .await?
        .into_iter()
        .map(|row| row.position)
        .filter(|p| *p <= after)
        .collect();
    let cursor = Cursor {
        state,
        wake,
        sent,
        first: true,
        headers,
        checked: Instant::now(),
        control,
    };
    let events = futures::stream::unfold(cursor, |mut cursor| async move {
        if !cursor.first {
            tokio::select! {
                () = cursor.control.shutdown.cancelled() => return None,
                () = wait_for_change(&mut cursor.wake) => {}
            }
        }
        cursor.first = false;
        if cursor.checked.elapsed() >= cursor.control.recheck {
            if !still_allowed(&cursor.state, &cursor.headers).await {
                tracing::info!("activity stream ended: its session or key is gone");
                return None;
            }
            cursor.checked = Instant::now();
        }
        let rows = match newest_activity(cursor.state.pool(), WINDOW).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "activity stream: cannot read the activity log");
                Vec::new()
            }
        };
        let mut fresh: Vec<ActivityView> = rows
            .into_iter()
            .filter(|row| !cursor.sent.contains(&row.position))
            .collect();
        fresh.sort_by_key(|row| row.position);
        for row in &fresh {
            cursor.sent.insert(row.position);
        }
        while cursor.sent.len() > (WINDOW as usize) * 4 {
            cursor.sent.pop_first();
        }
        let events: Vec<Result<Event, Infallible>> = fresh
            .iter()
            .filter_map(|row| {
                Event::default()
                    .event("activity")
                    .id(row.position.to_string())
                    .json_data(row)
                    .ok()
            })
            .map(Ok)
            .collect();
        Some((futures::stream::iter(events), cursor))
    })
    .flatten();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Returns after an event was published (plus a moment for the projector), or after [`POLL`]
/// (at most: the caller re-checks its session or key between waits).
async fn wait_for_change(wake: &mut Option<async_nats::Subscriber>) {
    let Some(sub) = wake.as_mut() else {
        tokio::time::sleep(POLL).await;
        return;
    };
    match tokio::time::timeout(POLL, sub.next()).await {
        Ok(Some(_)) => {
            tokio::time::sleep(SETTLE).await;
            // Drain what arrived meanwhile: one re-read covers a burst.
            while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, sub.next()).await {}
        }
        Ok(None) => {
            // The subscription ended (connection closed for good): keep polling.
            *wake = None;
        }
        Err(_) => {}
    }
}
