//! `hubkeeper`: one binary, every role. `hubkeeper up` runs everything in one process (starting a
//! local Postgres and nats-server when no URLs are configured); the other subcommands run one role
//! each, so any role can be scaled out as N processes on N machines.

mod access;
mod admin;
mod bench;
mod config;
mod dev_sim;
mod keys;
mod lifecycle;
mod operations;
mod read_side;
mod refresh_executor;
mod roles;
mod shutdown;
mod up;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "hubkeeper",
    version,
    about = "Keeps HubSpot OAuth installations alive"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process; starts local Postgres and NATS when no URLs are set.
    Up,
    /// The HTTP API alone.
    Api,
    /// One worker role alone.
    Worker {
        #[arg(value_enum)]
        role: roles::WorkerRole,
    },
    /// Applies the database migrations and exits.
    Migrate,
    /// The HubSpot simulator alone (configured by HK_SIM_* variables; see
    /// docs/hubspot-simulator.md).
    Sim,
    /// Measures a scenario against real Postgres and NATS (see docs/performance.md).
    Bench {
        #[command(subcommand)]
        scenario: bench::Scenario,
    },
    /// Master keys: generate a new one, re-wrap data keys under the active one, status.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// API key management.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Rebuilds read models from the event history into fresh tables and swaps them in.
    Replay {
        /// `installations`, `apps`, `activity` (comma-separated) or `all`.
        #[arg(long, default_value = "all")]
        projection: String,
        /// Events applied per transaction.
        #[arg(long, default_value_t = 5000)]
        batch_size: i64,
    },
    /// The event history (audit).
    Events {
        #[command(subcommand)]
        command: read_side::EventsCommand,
    },
    /// Dead letters of every worker: list, show, re-drive.
    Dlq {
        #[command(subcommand)]
        command: read_side::DlqCommand,
    },
    /// Dumps the database (pg_dump custom format) to a timestamped file and keeps the newest N.
    Backup {
        /// Directory of the backup files (default: HK_BACKUP_DIR).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Backups to keep (default: the Settings value, 30).
        #[arg(long)]
        keep: Option<u32>,
    },
    /// Restores a backup into the empty database at DATABASE_URL (see docs/operations.md).
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
        /// Also purge the JetStream events stream, so it holds only the republished history.
        #[arg(long)]
        purge_events_stream: bool,
    },
    /// Runs the integration self-test against the configured HubSpot.
    Selftest {
        /// The app to test (default: the oldest registered app).
        #[arg(long)]
        app: Option<hubkeeper_domain::AppId>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    // A `.env` in the working directory is the optional configuration file; real environment
    // variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    if let Err(e) = hubkeeper_telemetry::init_tracing(cli.config.log_format, &cli.config.log_filter)
    {
        eprintln!("hubkeeper: {e}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hubkeeper: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // block_on runs this future on the main thread, which lives until exit: children spawned
    // from it (local Postgres/NATS) get a parent-death signal tied to this thread.
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "hubkeeper failed");
            eprintln!("hubkeeper: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command {
        Command::Up => up::run(config).await,
        Command::Api => roles::run_standalone(&config, roles::RoleSet::api_only()).await,
        Command::Worker { role } => roles::run_standalone(&config, role.into()).await,
        Command::Admin { command } => admin::run(&config, command).await,
        Command::Keys { command } => keys::run(&config, command).await,
        Command::Replay {
            projection,
            batch_size,
        } => read_side::replay(&config, &projection, batch_size).await,
        Command::Events { command } => read_side::events(&config, command).await,
        Command::Dlq { command } => read_side::dlq(&config, command).await,
        Command::Backup { out, keep } => operations::backup_command(&config, out, keep).await,
        Command::Restore {
            file,
            purge_events_stream,
        } => operations::restore_command(&config, &file, purge_events_stream).await,
        Command::Selftest { app, json } => operations::selftest_command(&config, app, json).await,
        Command::Bench { scenario } => bench::run(&config, scenario).await,
        Command::Sim => {
            let sim = hubkeeper_sim::spawn(hubkeeper_sim::SimConfig::from_env()?).await?;
            println!(
                "HubSpot simulator on {} (consent page: {}/oauth/authorize)",
                sim.base_url, sim.base_url
            );
            sim.run_until_ctrl_c().await?;
            Ok(())
        }
        Command::Migrate => {
            let pool = roles::connect_store(&config)?;
            hubkeeper_store::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
