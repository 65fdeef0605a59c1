//! `hubkeeper`: one binary, every role. `hubkeeper up` runs everything in one process (starting a
//! local Postgres and nats-server when no URLs are configured); the other subcommands run one role
//! each, so any role can be scaled out as N processes on N machines.

mod admin;
mod config;
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
    /// API key management.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
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
