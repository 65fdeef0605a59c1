//! Resident memory of `hubkeeper up` (every role in one process): idle, then with many
//! installations projected and every one of their tokens handed out once (so the token cache
//! holds them all).

use std::path::PathBuf;
use std::time::Duration;

use hubkeeper_sim::SimConfig;
use secrecy::ExposeSecret;
use serde::Serialize;

use super::seed::connect_installations;
use super::stack::Stack;
use super::{Goal, Goals};
use crate::config::Config;
use futures::StreamExt;

#[derive(Debug, Serialize)]
pub struct MemoryFigures {
    pub installations: u64,
    pub idle_rss_mib: f64,
    pub loaded_rss_mib: f64,
    /// Highest resident size over the whole run (VmHWM).
    pub peak_rss_mib: f64,
    pub loaded_per_installation_kib: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn run(
    config: &Config,
    tools: PathBuf,
    installations: u64,
) -> anyhow::Result<MemoryFigures> {
    let mut stack = Stack::start(tools, SimConfig::default()).await?;
    let up = stack.spawn("up", &["up"], &[]).await?;
    // Idle: every role started, nothing to do. Give start-up allocations time to settle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (idle, _) = stack.processes[up].memory_kib()?;
    eprintln!("idle: {:.1} MiB resident", mib(idle));

    let app = stack.register_app(up).await?;
    let ids = connect_installations(config, &stack, &app, installations, 16).await?;
    stack
        .wait_connected_projected(installations, Duration::from_secs(1_800))
        .await?;
    // Hand out every token once: the cache now holds every installation.
    let http = &stack.http;
    let base = stack.base(up);
    let key = format!("Bearer {}", stack.service_key(&app).await?.expose_secret());
    let failures = futures::stream::iter(&ids)
        .map(|id| {
            let request = http
                .get(format!("{base}/v1/installations/{id}/token"))
                .header("authorization", &key)
                .send();
            async move { !request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .buffer_unordered(32)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    if failures > 0 {
        anyhow::bail!(
            "{failures} token hand-outs failed; see {}",
            stack.logs().display()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (loaded, peak) = stack.processes[up].memory_kib()?;
    eprintln!(
        "with {installations} installations: {:.1} MiB resident, peak {:.1} MiB",
        mib(loaded),
        mib(peak)
    );
    Ok(MemoryFigures {
        installations,
        idle_rss_mib: mib(idle),
        loaded_rss_mib: mib(loaded),
        peak_rss_mib: mib(peak),
        loaded_per_installation_kib: (loaded.saturating_sub(idle)) as f64 / installations as f64,
    })
}

impl Goals for MemoryFigures {
    /// An idle `up` fits a small container, and every installation with its cached token costs
    /// under a kibibyte (docs/performance.md).
    fn goals(&self) -> Vec<Goal> {
        vec![
            Goal::below("memory_idle_rss", self.idle_rss_mib, 64.0, "MiB"),
            Goal::below(
                "memory_per_installation",
                self.loaded_per_installation_kib,
                1.0,
                "KiB",
            ),
        ]
    }
}
