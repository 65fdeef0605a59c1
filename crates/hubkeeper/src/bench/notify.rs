//! Notifications to an app's endpoint: how fast one notifier process works off a backlog
//! (deliveries per second), and at a steady event rate how long an event takes from its commit
//! to the app's receiver (relay, fan-out, queue, signed POST). The receiver runs in this process
//! over real HTTP and answers 204; events are installation connects recorded through the token
//! service ([`Connector`]), each of which notifies `installation.connected`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use hubkeeper_sim::SimConfig;
use secrecy::ExposeSecret;
use serde::Serialize;

use super::percentile;
use super::seed::Connector;
use super::stack::{wait_for, Stack};
use super::{Goal, Goals};
use crate::config::Config;

#[derive(Debug, Serialize)]
pub struct NotifyFigures {
    /// Notifications queued before the notifier started.
    pub backlog: u64,
    /// From the backlog's first delivery to its last (the notifier's start-up excluded).
    pub backlog_seconds: f64,
    pub deliveries_per_second: f64,
    /// Events per second during the steady phase, and how many.
    pub steady_rate: u64,
    pub steady_events: u64,
    /// Commit of the event to the receiver's arrival, steady phase.
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// Arrivals of a `webhook-id` already received (at-least-once repeats).
    pub repeats: u64,
}

/// What the receiver saw: first arrival per `webhook-id`, and repeats.
#[derive(Default)]
struct Arrivals {
    first: HashMap<String, DateTime<Utc>>,
    repeats: u64,
}

type Shared = Arc<Mutex<Arrivals>>;

async fn receive(State(arrivals): State<Shared>, headers: HeaderMap) -> StatusCode {
    let now = Utc::now();
    let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut arrivals = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
    if arrivals.first.contains_key(id) {
        arrivals.repeats += 1;
    } else {
        arrivals.first.insert(id.to_owned(), now);
    }
    StatusCode::NO_CONTENT
}

async fn start_receiver(arrivals: Shared) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(arrivals);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bench receiver stopped: {e}");
        }
    });
    Ok(addr)
}

fn received(arrivals: &Shared) -> usize {
    arrivals
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .first
        .len()
}

pub async fn run(
    config: &Config,
    tools: PathBuf,
    backlog: u64,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<NotifyFigures> {
    let mut stack = Stack::start(tools, SimConfig::default()).await?;
    let api = stack.spawn("api", &["api"], &[]).await?;
    stack.spawn("relay", &["worker", "relay"], &[]).await?;
    let app = stack.register_app(api).await?;
    let arrivals: Shared = Arc::default();
    let receiver = start_receiver(arrivals.clone()).await?;
    create_endpoint(&stack, api, &app, receiver).await?;
    let connector = Connector::new(config, &stack, &app).await?;

    // Backlog: the events are recorded and relayed before any notifier runs.
    connector.connect(0..backlog, 16).await?;
    wait_relayed(&stack, backlog).await?;
    let started = Instant::now();
    stack
        .spawn("notifier", &["worker", "notifier"], &[])
        .await?;
    let timeout = Duration::from_secs(600);
    wait_for(
        "the backlog delivered",
        timeout,
        Duration::from_millis(10),
        || async { Ok(received(&arrivals) as u64 >= backlog) },
    )
    .await?;
    // From the first delivery to the last: the notifier's start-up is not its delivery rate.
    let (backlog_ids, backlog_seconds) = {
        let arrivals = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let first = arrivals.first.values().min().copied();
        let last = arrivals.first.values().max().copied();
        let span = match (first, last) {
            (Some(first), Some(last)) => (last - first).num_microseconds().unwrap_or(0),
            _ => 0,
        };
        let ids: HashSet<String> = arrivals.first.keys().cloned().collect();
        (ids, (span as f64 / 1e6).max(f64::MIN_POSITIVE))
    };
    eprintln!(
        "notifier started; first delivery to last took {backlog_seconds:.1}s of {:.1}s",
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "backlog of {backlog} delivered in {backlog_seconds:.1}s ({:.0}/s)",
        backlog as f64 / backlog_seconds
    );

    // Steady: `rate` events a second, in ten ticks a second, while the notifier runs.
    let per_tick = rate.div_ceil(10).max(1);
    let ticks = seconds * 10;
    let mut next = backlog;
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..ticks {
        interval.tick().await;
        connector.connect(next..next + per_tick, 16).await?;
        next += per_tick;
    }
    let steady_events = next - backlog;
    wait_for(
        "the steady phase delivered",
        timeout,
        Duration::from_millis(10),
        || async { Ok(received(&arrivals) as u64 >= backlog + steady_events) },
    )
    .await?;

    // Lag: each steady delivery's arrival against its event's commit.
    let rows: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT webhook_id, event_recorded_at FROM notification_deliveries")
            .fetch_all(&stack.pool)
            .await?;
    let (mut lags, repeats) = {
        let arrivals = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let lags: Vec<f64> = rows
            .iter()
            .filter(|(id, _)| !backlog_ids.contains(id))
            .filter_map(|(id, committed)| {
                arrivals.first.get(id).map(|arrived| {
                    (*arrived - *committed).num_microseconds().unwrap_or(0) as f64 / 1000.0
                })
            })
            .collect();
        (lags, arrivals.repeats)
    };
    if lags.len() as u64 != steady_events {
        anyhow::bail!(
            "{} steady deliveries matched, {steady_events} expected; see {}",
            lags.len(),
            stack.logs().display()
        );
    }
    let lag_max_ms = lags.iter().copied().fold(0.0, f64::max);
    let figures = NotifyFigures {
        backlog,
        backlog_seconds,
        deliveries_per_second: backlog as f64 / backlog_seconds,
        steady_rate: rate,
        steady_events,
        lag_p50_ms: percentile(&mut lags, 50.0),
        lag_p99_ms: percentile(&mut lags, 99.0),
        lag_max_ms,
        repeats,
    };
    eprintln!(
        "steady {rate}/s: commit to receiver p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        figures.lag_p50_ms, figures.lag_p99_ms, figures.lag_max_ms
    );
    Ok(figures)
}

async fn create_endpoint(
    stack: &Stack,
    api: usize,
    app: &str,
    receiver: SocketAddr,
) -> anyhow::Result<()> {
    let response = stack
        .http
        .post(format!("{}/v1/apps/{app}/endpoints", stack.base(api)))
        .bearer_auth(stack.admin_key.expose_secret())
        .json(&serde_json::json!({
            "url": format!("http://{receiver}/hooks"),
            "event_types": ["installation.connected"],
            "description": "bench receiver",
        }))
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("creating the endpoint: {status} {body}");
    }
    Ok(())
}

/// Waits until the relay has published every connect, so the backlog is on `HK_EVENTS` before
/// the notifier starts.
async fn wait_relayed(stack: &Stack, connects: u64) -> anyhow::Result<()> {
    let pool = &stack.pool;
    wait_for(
        "the connects relayed",
        Duration::from_secs(300),
        Duration::from_millis(50),
        || async move {
            let behind: bool = sqlx::query_scalar(
                "SELECT coalesce((SELECT max(global_position) FROM events), 0)
                      > coalesce((SELECT max(last_position) FROM stream_cursors
                                   WHERE name = $1), 0)",
            )
            .bind(hubkeeper_bus::registry::RELAY_CURSOR)
            .fetch_one(pool)
            .await?;
            let connected: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events WHERE event_type = 'InstallationConnected'",
            )
            .fetch_one(pool)
            .await?;
            Ok(!behind && connected as u64 >= connects)
        },
    )
    .await
}

impl Goals for NotifyFigures {
    /// One notifier delivers at least 500 notifications a second from a backlog, and at a
    /// steady rate an event reaches the app within a second at p99.
    fn goals(&self) -> Vec<Goal> {
        vec![
            Goal::at_least(
                "notify_deliveries_per_second",
                self.deliveries_per_second,
                500.0,
                "deliveries/s",
            ),
            Goal::below("notify_lag_p99", self.lag_p99_ms, 1_000.0, "ms"),
        ]
    }
}
