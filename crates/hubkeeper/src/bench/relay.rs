//! Relay figures: how fast a backlog drains, and how long a committed event takes to reach
//! JetStream at a steady write rate.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hubkeeper_bus::{EventRelay, RelayConfig, RelayedEvent, StreamsConfig, EVENTS_STREAM};
use secrecy::SecretString;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{percentile, BenchEnv, Goal, Goals};

#[derive(Debug, Serialize)]
pub struct RelayFigures {
    pub backlog_events: usize,
    pub backlog_seconds: f64,
    pub backlog_events_per_second: f64,
    pub steady_rate_target: usize,
    pub steady_events: usize,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
}

async fn insert_events(pool: &sqlx::PgPool, prefix: &str, count: usize) -> anyhow::Result<()> {
    // 100 aggregates, 1 event per commit as a command would write it, in batches of statements.
    let mut tx = pool.begin().await?;
    for i in 0..count {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('bench', $1, $2, 'Counted', '1.0', '{\"Counted\":{}}', '{}')",
        )
        .bind(format!("{prefix}-{}", i % 100))
        .bind((i / 100 + 1) as i64)
        .execute(&mut *tx)
        .await?;
        if i % 500 == 499 {
            tx.commit().await?;
            tx = pool.begin().await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

pub async fn run(
    tools: PathBuf,
    backlog: usize,
    rate: usize,
    steady: Duration,
) -> anyhow::Result<RelayFigures> {
    let env = BenchEnv::start(tools).await?;
    let pool = hubkeeper_store::connect(
        &SecretString::from(env.pg.database_url()),
        &hubkeeper_store::PoolConfig::default(),
    )?;
    hubkeeper_store::migrate(&pool).await?;
    let client = hubkeeper_bus::connect(&SecretString::from(env.nats.url()), "bench").await?;
    let js = hubkeeper_bus::jetstream(client.clone());
    hubkeeper_bus::ensure_streams(&js, &StreamsConfig::default()).await?;

    eprintln!("writing a backlog of {backlog} events…");
    insert_events(&pool, "backlog", backlog).await?;

    let shutdown = CancellationToken::new();
    let relay = EventRelay::new(pool.clone(), js.clone(), RelayConfig::default());
    let started = Instant::now();
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    let mut stream = js.get_stream(EVENTS_STREAM).await?;
    loop {
        let n = stream.info().await?.state.messages as usize;
        if n >= backlog {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backlog_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "backlog drained in {backlog_seconds:.2}s ({:.0} events/s)",
        backlog as f64 / backlog_seconds
    );

    // Steady phase: one event per commit at `rate`, measuring commit -> JetStream arrival.
    let mut subscriber = client.subscribe("hk.events.bench.>").await?;
    let total = rate * steady.as_secs() as usize;
    let writer_pool = pool.clone();
    // Each commit wakes the relay as the command path's commits do.
    let waker = hubkeeper_store::EventsWaker::new(&pool);
    let writer = tokio::spawn(async move {
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let mut next = Instant::now();
        for i in 0..total {
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES ('bench', $1, $2, 'Counted', '1.0', '{\"Counted\":{}}', '{}')",
            )
            .bind(format!("steady-{}", i % 100))
            .bind((i / 100 + 1) as i64)
            .execute(&writer_pool)
            .await?;
            waker.wake();
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
        }
        anyhow::Ok(())
    });
    let mut lags = Vec::with_capacity(total);
    while lags.len() < total {
        let Some(message) =
            tokio::time::timeout(Duration::from_secs(30), subscriber.next()).await?
        else {
            break;
        };
        let event: RelayedEvent = serde_json::from_slice(&message.payload)?;
        if event.aggregate_id.starts_with("steady-") {
            let lag = chrono::Utc::now() - event.recorded_at;
            lags.push(lag.num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    writer.await??;
    shutdown.cancel();
    let _ = relay_task.await;
    let max = lags.iter().cloned().fold(0.0, f64::max);
    Ok(RelayFigures {
        backlog_events: backlog,
        backlog_seconds,
        backlog_events_per_second: backlog as f64 / backlog_seconds,
        steady_rate_target: rate,
        steady_events: lags.len(),
        lag_p50_ms: percentile(&mut lags, 50.0),
        lag_p99_ms: percentile(&mut lags, 99.0),
        lag_max_ms: max,
    })
}

impl Goals for RelayFigures {
    /// Commit to JetStream delivery under 50 ms at p99 (the commands goal's relay lag).
    fn goals(&self) -> Vec<Goal> {
        vec![Goal::below("relay_lag_p99", self.lag_p99_ms, 50.0, "ms")]
    }
}
