//! Rebuilding every read model from a large history, against the floor of reading that history:
//! the same reader, the same order and batch size, no projection work.

use std::path::PathBuf;
use std::time::Instant;

use hubkeeper_projections::{replay, ReplayOptions};
use hubkeeper_sim::SimConfig;
use serde::Serialize;
use sqlx::PgPool;

use super::seed::clone_histories;
use super::stack::Stack;
use super::{Goal, Goals};

#[derive(Debug, Serialize)]
pub struct ReplayFigures {
    pub events: u64,
    pub installations: u64,
    pub batch_size: i64,
    pub baseline_seconds: f64,
    pub baseline_events_per_second: f64,
    pub replay_seconds: f64,
    pub replay_events_per_second: f64,
    /// Replay rate over the baseline's (goal: at least 0.25).
    pub ratio: f64,
}

/// Reads the whole table in global order, as replay does; returns (events, seconds).
async fn read_everything(pool: &PgPool, batch: i64) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut cursor = hubkeeper_store::GlobalCursor::default();
    let mut n = 0u64;
    loop {
        let events = hubkeeper_store::read_after(pool, cursor, batch).await?;
        let Some(last) = events.last() else { break };
        cursor = last.cursor();
        n += events.len() as u64;
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

pub async fn run(tools: PathBuf, events: u64) -> anyhow::Result<ReplayFigures> {
    let mut stack = Stack::start(tools, SimConfig::default()).await?;
    let api = stack.spawn("api", &["api"], &[]).await?;
    let app = stack.register_app(api).await?;
    stack.register_accounts(1).await?;
    let template = stack.install_accounts(api, &app, 1, 1).await?;
    let template = template
        .first()
        .ok_or_else(|| anyhow::anyhow!("no template installation"))?;
    let per_installation = 10;
    let installations = events / per_installation;
    eprintln!("writing {installations} histories of {per_installation} events…");
    let total = clone_histories(&stack.pool, template, installations, per_installation).await?;
    sqlx::query("VACUUM ANALYZE events")
        .execute(&stack.pool)
        .await?;

    let options = ReplayOptions::default();
    // One untimed pass so that both timed runs find the same (warm) cache.
    read_everything(&stack.pool, options.batch_size).await?;
    let (read, baseline_seconds) = read_everything(&stack.pool, options.batch_size).await?;
    eprintln!(
        "baseline: read {read} events in {baseline_seconds:.1}s ({:.0}/s)",
        read as f64 / baseline_seconds
    );
    let mut next_report = 0u64;
    let report = replay(&stack.pool, &options, |p| {
        if p.events >= next_report {
            eprintln!(
                "  replay {}/{} events in {:.1}s ({:.0}/s)",
                p.events,
                p.total,
                p.elapsed_secs,
                p.events as f64 / p.elapsed_secs.max(f64::MIN_POSITIVE)
            );
            next_report = p.events + p.total.max(10) / 10;
        }
    })
    .await?;
    eprintln!(
        "replay: {} events in {:.1}s ({:.0}/s)",
        report.events,
        report.seconds,
        report.events_per_second()
    );
    let baseline_rate = read as f64 / baseline_seconds;
    Ok(ReplayFigures {
        events: total,
        installations,
        batch_size: options.batch_size,
        baseline_seconds,
        baseline_events_per_second: baseline_rate,
        replay_seconds: report.seconds,
        replay_events_per_second: report.events_per_second(),
        ratio: report.events_per_second() / baseline_rate,
    })
}

impl Goals for ReplayFigures {
    /// Rebuilding every read model at a quarter of the rate of merely reading the history.
    fn goals(&self) -> Vec<Goal> {
        vec![Goal::at_least(
            "replay_vs_read_after",
            self.ratio,
            0.25,
            "x baseline",
        )]
    }
}
