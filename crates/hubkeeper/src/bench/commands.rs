//! Commands per second through the API into the event store (16 clients editing 16 apps, one
//! each, so the rate is not an optimistic-concurrency contest), and at that rate the relay's lag
//! (commit to JetStream delivery) and the projector's (commit to read-model row). In the same
//! run, the baseline: single-row durable INSERTs of the same size from as many clients, so the
//! ratio says what a command costs over the one write it must make.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hubkeeper_bus::RelayedEvent;
use hubkeeper_sim::SimConfig;
use secrecy::ExposeSecret;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::load::{built_requests, closed_loop, LoadFigures, RawRequest};
use super::percentile;
use super::stack::Stack;
use super::{Goal, Goals};

#[derive(Debug, Serialize)]
pub struct CommandFigures {
    pub commands: LoadFigures,
    pub events: usize,
    pub relay_lag_p50_ms: f64,
    pub relay_lag_p99_ms: f64,
    pub projector_lag_p50_ms: f64,
    pub projector_lag_p99_ms: f64,
    /// Read-model polling period: projector lags are accurate to about this much.
    pub projector_poll_ms: u64,
    /// Average payload + metadata bytes of the events the commands wrote.
    pub event_bytes: usize,
    /// The baseline: one durable single-row INSERT of `event_bytes` per call, same clients.
    pub raw_inserts: LoadFigures,
    /// Commands per second over raw inserts per second.
    pub ratio_to_raw_insert: f64,
    /// Postgres connections per process of the stack (`HK_DB_MAX_CONNECTIONS`, or its default).
    pub db_max_connections: u32,
}

type Seen = Arc<Mutex<HashMap<(String, i64), DateTime<Utc>>>>;

pub async fn run(tools: PathBuf, clients: usize, seconds: u64) -> anyhow::Result<CommandFigures> {
    let mut stack = Stack::start(tools, SimConfig::default()).await?;
    let api = stack.spawn("api", &["api"], &[]).await?;
    stack.spawn("relay", &["worker", "relay"], &[]).await?;
    stack
        .spawn("projector", &["worker", "projector"], &[])
        .await?;
    let mut apps = Vec::new();
    for i in 0..clients {
        let client_id = uuid::Uuid::new_v4().to_string();
        let redirect = format!("https://app{i}.example.com/oauth/callback");
        apps.push(
            stack
                .create_app(api, &format!("Bench {i}"), &client_id, &redirect)
                .await?,
        );
    }
    let ours: HashSet<String> = apps.iter().cloned().collect();

    // Relay lag: every event of our apps as JetStream delivers it.
    let relayed: Seen = Arc::default();
    let stop = CancellationToken::new();
    let mut subscriber = stack.nats.subscribe("hk.events.app.>").await?;
    let relay_watch = {
        let relayed = relayed.clone();
        let ours = ours.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = subscriber.next() => match m { Some(m) => m, None => break },
                };
                let now = Utc::now();
                if let Ok(e) = serde_json::from_slice::<RelayedEvent>(&message.payload) {
                    if ours.contains(&e.aggregate_id) {
                        relayed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .entry((e.aggregate_id, e.sequence))
                            .or_insert(now);
                    }
                }
            }
        })
    };
    // Projector lag: poll the apps read model; a sequence is "seen" at the first poll showing it.
    let poll = Duration::from_millis(5);
    let projected: Seen = Arc::default();
    let projector_watch = {
        let projected = projected.clone();
        let stop = stop.clone();
        let pool = stack.pool.clone();
        let ids: Vec<uuid::Uuid> = apps.iter().filter_map(|a| a.parse().ok()).collect();
        tokio::spawn(async move {
            let mut last: HashMap<String, i64> = HashMap::new();
            while !stop.is_cancelled() {
                let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
                    "SELECT app_id, last_sequence FROM rm_apps WHERE app_id = ANY($1)",
                )
                .bind(&ids)
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                let now = Utc::now();
                {
                    let mut seen = projected
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for (id, seq) in rows {
                        let id = id.to_string();
                        let from = last.get(&id).copied().unwrap_or(0);
                        for s in from + 1..=seq {
                            seen.entry((id.clone(), s)).or_insert(now);
                        }
                        last.insert(id, seq);
                    }
                }
                tokio::time::sleep(poll).await;
            }
        })
    };
    // Let the watchers take in the apps' creation events, which are not measured.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let load_started = Utc::now();

    let commands = {
        let base = stack.base(api);
        let key = format!("Bearer {}", stack.admin_key.expose_secret());
        let apps = Arc::new(apps.clone());
        built_requests(clients, Duration::from_secs(seconds), move |client, i| {
            let body = serde_json::json!({ "label": format!("Bench {client} edit {i}") });
            RawRequest::new(
                "PATCH",
                &format!("{base}/v1/apps/{}", apps[client % apps.len()]),
                &[
                    ("authorization", &key),
                    ("content-type", "application/json"),
                ],
                body.to_string().as_bytes(),
            )
        })
        .await
    };
    eprintln!("{}", commands.line("commands (PATCH /v1/apps)"));

    // Wait until everything written is relayed and projected, then compute the lags.
    let written: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT aggregate_id, sequence, recorded_at FROM events
          WHERE aggregate_type = 'app' AND aggregate_id = ANY($1) AND recorded_at >= $2",
    )
    .bind(apps.as_slice())
    .bind(load_started)
    .fetch_all(&stack.pool)
    .await?;
    super::stack::wait_for(
        "relay and projector to catch up",
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async {
            let done = |s: &Seen| {
                let s = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                written
                    .iter()
                    .all(|(id, seq, _)| s.contains_key(&(id.clone(), *seq)))
            };
            Ok(done(&relayed) && done(&projected))
        },
    )
    .await?;
    stop.cancel();
    let _ = relay_watch.await;
    let _ = projector_watch.await;
    let lags = |seen: &Seen| -> Vec<f64> {
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        written
            .iter()
            .filter_map(|(id, seq, at)| {
                seen.get(&(id.clone(), *seq))
                    .map(|t| (*t - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
            })
            .collect()
    };
    let mut relay = lags(&relayed);
    let mut projector = lags(&projected);
    let event_bytes: Option<i64> = sqlx::query_scalar(
        "SELECT (avg(octet_length(payload::text) + octet_length(metadata::text)))::bigint
           FROM events WHERE aggregate_type = 'app' AND aggregate_id = ANY($1)
            AND recorded_at >= $2",
    )
    .bind(apps.as_slice())
    .bind(load_started)
    .fetch_one(&stack.pool)
    .await?;
    let event_bytes = event_bytes.unwrap_or(0).max(0) as usize;
    let raw_inserts =
        raw_inserts(&stack, clients, event_bytes, Duration::from_secs(seconds)).await?;
    eprintln!("{}", raw_inserts.line("raw durable INSERT"));
    let figures = CommandFigures {
        events: written.len(),
        relay_lag_p50_ms: percentile(&mut relay, 50.0),
        relay_lag_p99_ms: percentile(&mut relay, 99.0),
        projector_lag_p50_ms: percentile(&mut projector, 50.0),
        projector_lag_p99_ms: percentile(&mut projector, 99.0),
        projector_poll_ms: poll.as_millis() as u64,
        event_bytes,
        ratio_to_raw_insert: commands.per_second / raw_inserts.per_second.max(f64::MIN_POSITIVE),
        raw_inserts,
        commands,
        db_max_connections: std::env::var("HK_DB_MAX_CONNECTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| crate::config::default_db_max_connections(false)),
    };
    eprintln!(
        "lag at that rate: relay p50 {:.1} ms p99 {:.1} ms; projector p50 {:.1} ms p99 {:.1} ms \
         ({} Postgres connections per process)",
        figures.relay_lag_p50_ms,
        figures.relay_lag_p99_ms,
        figures.projector_lag_p50_ms,
        figures.projector_lag_p99_ms,
        figures.db_max_connections
    );
    Ok(figures)
}

/// The floor under any command: one durable (fsynced) single-row INSERT of an event's size into
/// a table shaped like the events table, from `clients` clients at once, on the same Postgres.
async fn raw_inserts(
    stack: &Stack,
    clients: usize,
    event_bytes: usize,
    duration: Duration,
) -> anyhow::Result<LoadFigures> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_raw_inserts (
             position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             aggregate_id text NOT NULL,
             payload json NOT NULL,
             metadata json NOT NULL)",
    )
    .execute(&stack.pool)
    .await?;
    // Half the bytes in each column, as JSON strings.
    let half = "x".repeat(event_bytes.saturating_sub(8) / 2);
    let payload = Arc::new(serde_json::Value::String(half).to_string());
    let pool = stack.pool.clone();
    Ok(closed_loop(clients, duration, move |client, i| {
        let pool = pool.clone();
        let payload = payload.clone();
        async move {
            sqlx::query(
                "INSERT INTO bench_raw_inserts (aggregate_id, payload, metadata)
                 VALUES ($1, $2::json, $2::json)",
            )
            .bind(format!("{client}-{i}"))
            .bind(payload.as_str())
            .execute(&pool)
            .await
            .is_ok()
        }
    })
    .await)
}

impl Goals for CommandFigures {
    /// 2,000 commands/s from 16 clients with p99 under 20 ms; at that rate the relay's lag
    /// under 50 ms and the projector's under 100 ms at p99.
    fn goals(&self) -> Vec<Goal> {
        vec![
            Goal::at_least(
                "commands_per_second",
                self.commands.per_second,
                2_000.0,
                "commands/s",
            ),
            Goal::below("commands_p99", self.commands.p99_ms, 20.0, "ms"),
            Goal::below("commands_relay_lag_p99", self.relay_lag_p99_ms, 50.0, "ms"),
            Goal::below(
                "commands_projector_lag_p99",
                self.projector_lag_p99_ms,
                100.0,
                "ms",
            ),
        ]
    }
}
