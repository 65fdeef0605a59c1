//! A refresh storm: every installation due at once, the simulator taking `latency` to answer each
//! refresh, worked off by 1 and then by 3 refresher processes.
//!
//! How "all due at once" is arranged without waiting for real expiry: installs get tokens of
//! lifetime L0; phase 1 runs the scheduler with a refresh lead longer than L0 (so every token is
//! due) while the simulator now issues tokens of lifetime L1 > lead (so refreshed tokens are not
//! due again). Phase 2 repeats with L2 > lead2 > L1. Each phase must make exactly one refresh call
//! per installation, which the simulator's counters check.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubkeeper_sim::{FaultEndpoint, FaultMode, FaultRule, SimConfig};
use serde::Serialize;

use super::stack::Stack;
use super::{Goal, Goals};

const L0: u64 = 3_600;

#[derive(Debug, Serialize)]
pub struct RefreshFigures {
    pub installations: u64,
    pub simulator_latency_ms: u64,
    pub concurrency_per_refresher: usize,
    pub phases: Vec<RefreshPhase>,
}

#[derive(Debug, Serialize)]
pub struct RefreshPhase {
    pub refreshers: usize,
    /// From starting the scheduler and refreshers to the last refresh recorded as an event.
    pub seconds: f64,
    pub refreshes_per_second: f64,
    /// Refresh calls the simulator saw in this phase (must equal `installations`).
    pub refresh_calls: u64,
    /// The floor set by concurrency and simulator latency: installations x latency / slots.
    pub floor_seconds: f64,
    /// floor / measured: 1.0 means Hubkeeper added nothing on top of HubSpot's latency.
    pub efficiency: f64,
}

async fn refresh_calls(stack: &Stack) -> anyhow::Result<u64> {
    Ok(stack.control.counters().await?.total.refresh_calls)
}

/// Refreshes recorded since `since` and when the last of them was. The phase's duration is
/// read from the events themselves, so this is polled only as often as the progress needs: at
/// every 50 ms, counting tens of thousands of rows drew 9% of the machine's CPU during phase 2.
async fn refreshed_since(
    stack: &Stack,
    since: DateTime<Utc>,
) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
    Ok(sqlx::query_as(
        "SELECT count(*), max(recorded_at) FROM events
          WHERE event_type = 'InstallationTokensRefreshed' AND recorded_at >= $1",
    )
    .bind(since)
    .fetch_one(&stack.pool)
    .await?)
}

pub async fn run(
    tools: PathBuf,
    installations: u64,
    latency: Duration,
    concurrency: usize,
) -> anyhow::Result<RefreshFigures> {
    let mut stack = Stack::start(
        tools,
        SimConfig {
            token_lifetime: Duration::from_secs(L0),
            ..SimConfig::default()
        },
    )
    .await?;
    let api = stack.spawn("api", &["api"], &[]).await?;
    stack.spawn("relay", &["worker", "relay"], &[]).await?;
    stack
        .spawn("projector", &["worker", "projector"], &[])
        .await?;
    let app = stack.register_app(api).await?;
    stack.register_accounts(installations).await?;
    stack.install_accounts(api, &app, installations, 16).await?;
    // The scheduler reads the installations read model: wait until it holds every install.
    stack
        .wait_connected_projected(installations, Duration::from_secs(600))
        .await?;
    stack
        .control
        .inject_fault(&FaultRule::new(
            FaultEndpoint::Token,
            FaultMode::Latency {
                ms: latency.as_millis() as u64,
            },
        ))
        .await?;

    let mut phases = Vec::new();
    let mut lifetime = L0;
    for (phase, refreshers) in [1usize, 3].into_iter().enumerate() {
        let lead = lifetime + 100;
        lifetime *= 2;
        stack
            .control
            .set_token_lifetime(Duration::from_secs(lifetime))
            .await?;
        let calls_before = refresh_calls(&stack).await?;
        let vars = [
            ("HK_REFRESH_LEAD_SECS", lead.to_string()),
            ("HK_SCHEDULER_TICK_MS", "500".into()),
            ("HK_REFRESHER_CONCURRENCY", concurrency.to_string()),
            ("HK_DB_MAX_CONNECTIONS", (concurrency * 3 + 4).to_string()),
        ];
        let started = Instant::now();
        let started_at = Utc::now();
        let first = stack.processes.len();
        stack
            .spawn(
                &format!("scheduler-{phase}"),
                &["worker", "scheduler"],
                &vars,
            )
            .await?;
        for r in 0..refreshers {
            stack
                .spawn(
                    &format!("refresher-{phase}-{r}"),
                    &["worker", "refresher"],
                    &vars,
                )
                .await?;
        }
        let mut last_report = Instant::now();
        let finished_at = loop {
            let (done, last) = refreshed_since(&stack, started_at).await?;
            if done >= installations as i64 {
                break last.unwrap_or_else(Utc::now);
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!(
                    "  phase {}: {done}/{installations} refreshed after {:.0}s",
                    phase + 1,
                    started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            if started.elapsed() > Duration::from_secs(1_800) {
                anyhow::bail!("refresh phase {} did not finish in 30 min", phase + 1);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let seconds = (finished_at - started_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64()
            .max(f64::MIN_POSITIVE);
        // Stop this phase's workers before the next phase changes the lead.
        stack.processes.truncate(first);
        let calls = refresh_calls(&stack).await? - calls_before;
        let slots = (refreshers * concurrency) as f64;
        let floor = installations as f64 * latency.as_secs_f64() / slots;
        eprintln!(
            "refresh: {installations} installations, {refreshers} refresher(s) x {concurrency}: \
             {seconds:.1}s ({:.0}/s), {calls} refresh calls, floor {floor:.1}s",
            installations as f64 / seconds
        );
        phases.push(RefreshPhase {
            refreshers,
            seconds,
            refreshes_per_second: installations as f64 / seconds,
            refresh_calls: calls,
            floor_seconds: floor,
            efficiency: floor / seconds,
        });
    }
    Ok(RefreshFigures {
        installations,
        simulator_latency_ms: latency.as_millis() as u64,
        concurrency_per_refresher: concurrency,
        phases,
    })
}

impl Goals for RefreshFigures {
    /// Exactly one refresh call per installation, and at least 0.7 of the floor that the
    /// configured concurrency and HubSpot's latency set, in every phase.
    fn goals(&self) -> Vec<Goal> {
        self.phases
            .iter()
            .flat_map(|phase| {
                [
                    Goal::exactly(
                        format!("refresh_calls_with_{}_refreshers", phase.refreshers),
                        phase.refresh_calls as f64,
                        self.installations as f64,
                        "calls",
                    ),
                    Goal::at_least(
                        format!("refresh_efficiency_with_{}_refreshers", phase.refreshers),
                        phase.efficiency,
                        0.7,
                        "of floor",
                    ),
                ]
            })
            .collect()
    }
}
