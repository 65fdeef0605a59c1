//! `hubkeeper bench <scenario>`: measurements against real Postgres, NATS (and, for the scenarios
//! that need it, the simulator), started in a temporary directory as `up` would. Each run prints
//! its figures and writes them as JSON under `bench-results/` for comparison over time.

mod commands;
mod goals;
mod load;
mod memory;
mod notify;
mod proxy;
mod refresh;
mod relay;
mod replay;
mod seed;
mod stack;
mod token;
mod webhooks;

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use hubkeeper_embedded::{LocalNats, LocalPostgres, NatsOptions, PostgresOptions};
use serde::Serialize;

pub use goals::{Goal, Goals};

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Relay throughput (events/s from a backlog) and commit-to-JetStream lag under load.
    Relay {
        /// Backlog size for the throughput phase.
        #[arg(long, default_value_t = 100_000, value_parser = positive::<usize>)]
        events: usize,
        /// Event rate of the lag phase.
        #[arg(long, default_value_t = 2_000, value_parser = positive::<usize>)]
        rate: usize,
        /// Length of the lag phase, seconds.
        #[arg(long, default_value_t = 10, value_parser = positive::<u64>)]
        seconds: u64,
    },
    /// Token hand-outs over HTTP, cached against reading + decrypting from Postgres per call.
    Token {
        /// Installations to hand out tokens of.
        #[arg(long, default_value_t = 500, value_parser = positive::<u64>)]
        installations: u64,
        /// Concurrent clients, comma-separated.
        #[arg(long, default_value = "1,8,16,32,64", value_delimiter = ',', value_parser = positive::<usize>)]
        concurrency: Vec<usize>,
        /// Seconds per concurrency level and variant.
        #[arg(long, default_value_t = 5, value_parser = positive::<u64>)]
        seconds: u64,
    },
    /// Signed v3 webhook batches accepted, against publishing the same bytes to JetStream.
    Webhooks {
        /// Batch sizes (events per request), comma-separated.
        #[arg(long, default_value = "1,10,100", value_delimiter = ',', value_parser = positive::<usize>)]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 16, value_parser = positive::<usize>)]
        concurrency: usize,
        #[arg(long, default_value_t = 5, value_parser = positive::<u64>)]
        seconds: u64,
    },
    /// Every installation due for refresh at once, with 1 and then 3 refresher processes.
    Refresh {
        #[arg(long, default_value_t = 10_000, value_parser = positive::<u64>)]
        installations: u64,
        /// How long the simulator takes to answer each refresh.
        #[arg(long, default_value_t = 50, value_parser = positive::<u64>)]
        latency_ms: u64,
        /// Refreshes in flight per refresher process.
        #[arg(long, default_value_t = 16, value_parser = positive::<usize>)]
        concurrency: usize,
    },
    /// Commands per second through the API, and relay and projector lag at that rate.
    Commands {
        #[arg(long, default_value_t = 16, value_parser = positive::<usize>)]
        clients: usize,
        #[arg(long, default_value_t = 20, value_parser = positive::<u64>)]
        seconds: u64,
    },
    /// Rebuilding every read model from a large history, against reading that history.
    Replay {
        #[arg(long, default_value_t = 1_000_000, value_parser = positive::<u64>)]
        events: u64,
    },
    /// Resident memory of `hubkeeper up`, idle and with many installations loaded.
    Memory {
        #[arg(long, default_value_t = 100_000, value_parser = positive::<u64>)]
        installations: u64,
    },
    /// HubSpot calls through `/v1/proxy`, against the same calls made directly to HubSpot.
    Proxy {
        /// Installations (portals) the calls are spread over, so HubSpot's per-portal limit
        /// does not bind.
        #[arg(long, default_value_t = 500, value_parser = positive::<u64>)]
        installations: u64,
        /// Concurrent clients, comma-separated.
        #[arg(long, default_value = "1,16", value_delimiter = ',', value_parser = positive::<usize>)]
        concurrency: Vec<usize>,
        /// Seconds per concurrency level and path.
        #[arg(long, default_value_t = 5, value_parser = positive::<u64>)]
        seconds: u64,
        /// Calls per portal and 10 s, at the simulator and in the proxy's shared limit. High by
        /// default: at HubSpot's 110 the direct baseline alone exceeds the budget of 500
        /// portals, and a portal that drew a 429 blocks the proxied calls that follow. The
        /// proxy's limiter still reserves a slot for every call.
        #[arg(long, default_value_t = 1_000_000, value_parser = positive::<u32>)]
        portal_limit: u32,
    },
    /// Notifications to an app's endpoint: a backlog's deliveries per second, then the lag from
    /// an event's commit to the app at a steady rate.
    Notify {
        /// Notifications queued before the notifier starts.
        #[arg(long, default_value_t = 5_000, value_parser = positive::<u64>)]
        backlog: u64,
        /// Events per second in the steady phase.
        #[arg(long, default_value_t = 50, value_parser = positive::<u64>)]
        rate: u64,
        /// Length of the steady phase, seconds.
        #[arg(long, default_value_t = 10, value_parser = positive::<u64>)]
        seconds: u64,
    },
}

/// Every bench size, rate, count and duration: zero would divide by zero or pick from nothing.
fn positive<T>(raw: &str) -> Result<T, NotPositive>
where
    T: std::str::FromStr + PartialOrd + Default,
{
    match raw.trim().parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(NotPositive(raw.to_owned())),
    }
}

/// A bench argument that is not a positive whole number (clap prints it under the flag).
#[derive(Debug)]
struct NotPositive(String);

impl std::fmt::Display for NotPositive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is not a positive whole number", self.0)
    }
}

impl std::error::Error for NotPositive {}

/// Servers for one bench run, removed afterwards.
pub struct BenchEnv {
    pub pg: LocalPostgres,
    pub nats: LocalNats,
    _dir: tempfile::TempDir,
}

impl BenchEnv {
    pub async fn start(tools_dir: PathBuf) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("hk-bench-").tempdir()?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let pg = LocalPostgres::start(PostgresOptions {
            dir: dir.path().join("postgres"),
            port: None,
            database: "hubkeeper".into(),
            // Measured like production: durable commits.
            durable: true,
        })
        .await?;
        let nats = LocalNats::start(NatsOptions {
            dir: dir.path().join("nats"),
            port: None,
            tools_dir: Some(tools_dir),
            authorization: None,
        })
        .await?;
        Ok(Self {
            pg,
            nats,
            _dir: dir,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        self._dir.path()
    }
}

#[derive(Debug, Serialize)]
pub struct Report<T: Serialize> {
    pub scenario: &'static str,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub machine: Machine,
    pub figures: T,
    /// What the figures are judged by, each with `met`.
    pub goals: Vec<Goal>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub os: String,
    pub hubkeeper_version: &'static str,
}

impl Machine {
    fn here() -> Self {
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            os: std::env::consts::OS.to_string(),
            hubkeeper_version: env!("CARGO_PKG_VERSION"),
        }
    }
}

pub async fn run(config: &crate::config::Config, scenario: Scenario) -> anyhow::Result<()> {
    let tools = std::path::absolute(&config.data.data_dir)?.join("tools");
    let started_at = chrono::Utc::now();
    match scenario {
        Scenario::Relay {
            events,
            rate,
            seconds,
        } => {
            let figures = relay::run(tools, events, rate, Duration::from_secs(seconds)).await?;
            write_report("relay", started_at, figures)
        }
        Scenario::Token {
            installations,
            concurrency,
            seconds,
        } => {
            let figures = token::run(tools, installations, &concurrency, seconds).await?;
            write_report("token", started_at, figures)
        }
        Scenario::Webhooks {
            sizes,
            concurrency,
            seconds,
        } => {
            let figures = webhooks::run(tools, &sizes, concurrency, seconds).await?;
            write_report("webhooks", started_at, figures)
        }
        Scenario::Refresh {
            installations,
            latency_ms,
            concurrency,
        } => {
            let latency = Duration::from_millis(latency_ms);
            let figures = refresh::run(tools, installations, latency, concurrency).await?;
            write_report("refresh", started_at, figures)
        }
        Scenario::Commands { clients, seconds } => {
            let figures = commands::run(tools, clients, seconds).await?;
            write_report("commands", started_at, figures)
        }
        Scenario::Replay { events } => {
            let figures = replay::run(tools, events).await?;
            write_report("replay", started_at, figures)
        }
        Scenario::Memory { installations } => {
            let figures = memory::run(config, tools, installations).await?;
            write_report("memory", started_at, figures)
        }
        Scenario::Proxy {
            installations,
            concurrency,
            seconds,
            portal_limit,
        } => {
            let figures =
                proxy::run(tools, installations, &concurrency, seconds, portal_limit).await?;
            write_report("proxy", started_at, figures)
        }
        Scenario::Notify {
            backlog,
            rate,
            seconds,
        } => {
            let figures = notify::run(config, tools, backlog, rate, seconds).await?;
            write_report("notify", started_at, figures)
        }
    }
}

fn write_report<T: Serialize + Goals>(
    scenario: &'static str,
    started_at: chrono::DateTime<chrono::Utc>,
    figures: T,
) -> anyhow::Result<()> {
    let report = Report {
        scenario,
        started_at,
        machine: Machine::here(),
        goals: figures.goals(),
        figures,
    };
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    let dir = PathBuf::from("bench-results");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!(
        "{scenario}-{}.json",
        report.started_at.format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::write(&file, json)?;
    eprintln!("written to {}", file.display());
    // Last, so a run ends with its verdicts.
    for goal in &report.goals {
        println!("{}", goal.line());
    }
    Ok(())
}

/// Percentile of an unsorted sample (nearest rank).
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}
