//! `hubkeeper`: one binary, every role. `hubkeeper up` runs everything in one process (starting a
//! local Postgres and nats-server when no URLs are configured); the other subcommands run one role
//! each, so any role can be scaled out as N processes on N machines.

mod admin;
mod apps_cli;
#[cfg(feature = "bench")]
mod bench;
mod config;
#[cfg(feature = "simulator")]
mod dev_sim;
mod doctor;
mod health;
mod history;
mod keys;
mod maintenance;
mod refresh_executor;
mod roles;
mod services;
mod shutdown;
mod up;

use clap::{Parser, Subcommand};

use crate::config::{
    ApiSettings, BackupSettings, DoctorSettings, HealthSettings, KeySettings, LogArgs,
    MigrateSettings, RestoreSettings, SelftestSettings, StoreAndNatsSettings, StoreSettings,
    UpSettings, WorkerSettings,
};

/// mimalloc instead of the system allocator: every request, command and event allocates many
/// small, short-lived buffers across the runtime's threads, and glibc's malloc spent about a
/// fifth of the API's CPU on them (`malloc_consolidate`, arena locks; docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "hubkeeper",
    version,
    about = "Keeps HubSpot OAuth installations alive"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up and consumed right away: the size of the settings does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process; starts local Postgres and NATS when no URLs are set.
    Up(UpSettings),
    /// The HTTP API alone.
    Api(ApiSettings),
    /// One worker role alone.
    Worker {
        #[arg(value_enum)]
        role: roles::WorkerRole,
        #[command(flatten)]
        settings: WorkerSettings,
    },
    /// Applies the database migrations, installs HK_BOOTSTRAP_ADMIN_KEY when set, and exits.
    Migrate(MigrateSettings),
    /// Checks the configuration and every dependency (Postgres, NATS, master keys, HubSpot,
    /// backups) and says what to fix.
    Doctor(DoctorSettings),
    /// Exits 0 when this container's process is ready (GET /readyz), 1 otherwise: for
    /// container health checks, without curl.
    Health {
        /// URL to probe (default: HK_METRICS_BIND when set, else HK_BIND, on this host).
        #[arg(long)]
        url: Option<url::Url>,
        #[command(flatten)]
        settings: HealthSettings,
    },
    /// The HubSpot simulator alone (configured by HK_SIM_* variables; see
    /// docs/hubspot-simulator.md).
    #[cfg(feature = "simulator")]
    Sim {
        /// Address the simulator listens on (default: HK_SIM_BIND, else 127.0.0.1:8090).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
    /// Measures a scenario against real Postgres and NATS (see docs/performance.md).
    #[cfg(feature = "bench")]
    Bench {
        #[command(flatten)]
        settings: config::BenchSettings,
        #[command(subcommand)]
        scenario: bench::Scenario,
    },
    /// Master keys: generate a new one, re-wrap data keys under the active one, status.
    Keys {
        #[command(flatten)]
        settings: KeySettings,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// App operations (resume parked refreshes).
    Apps {
        #[command(flatten)]
        settings: StoreAndNatsSettings,
        #[command(subcommand)]
        command: apps_cli::AppsCommand,
    },
    /// API key management.
    Admin {
        #[command(flatten)]
        settings: StoreSettings,
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
        #[command(flatten)]
        settings: StoreSettings,
    },
    /// The event history (audit).
    Events {
        #[command(flatten)]
        settings: StoreSettings,
        #[command(subcommand)]
        command: history::EventsCommand,
    },
    /// Dead letters of every worker: list, show, re-drive.
    Dlq {
        #[command(flatten)]
        settings: StoreAndNatsSettings,
        #[command(subcommand)]
        command: history::DlqCommand,
    },
    /// Dumps the database (pg_dump custom format) to a timestamped file and keeps the newest N.
    Backup {
        /// Directory of the backup files (default: HK_BACKUP_DIR).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Backups to keep (default: the Settings value, 30).
        #[arg(long)]
        keep: Option<u32>,
        #[command(flatten)]
        settings: BackupSettings,
    },
    /// Restores a backup into the empty database at DATABASE_URL (see docs/operations.md).
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
        /// Also purge the JetStream events stream, so it holds only the republished history.
        #[arg(long)]
        purge_events_stream: bool,
        #[command(flatten)]
        settings: RestoreSettings,
    },
    /// Runs the integration self-test against the configured HubSpot.
    Selftest {
        /// The app to test (default: the oldest registered app).
        #[arg(long)]
        app: Option<hubkeeper_domain::AppId>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: SelftestSettings,
    },
}

fn main() -> std::process::ExitCode {
    // A `.env` in the working directory is the optional configuration file; real environment
    // variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    if let Err(e) = hubkeeper_telemetry::init_tracing(cli.log.log_format, &cli.log.log_filter) {
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
    match cli.command {
        Command::Up(settings) => up::run(settings.into_config()?).await,
        Command::Api(settings) => {
            roles::run_standalone(&settings.into_config()?, roles::RoleSet::api_only()).await
        }
        Command::Worker { role, settings } => {
            roles::run_standalone(&settings.into_config()?, role.into()).await
        }
        Command::Admin { settings, command } => admin::run(&settings.into_config()?, command).await,
        Command::Apps { settings, command } => {
            apps_cli::run(&settings.into_config()?, command).await
        }
        Command::Keys { settings, command } => keys::run(&settings.into_config()?, command).await,
        Command::Replay {
            projection,
            batch_size,
            settings,
        } => history::replay(&settings.into_config()?, &projection, batch_size).await,
        Command::Events { settings, command } => {
            history::events(&settings.into_config()?, command).await
        }
        Command::Dlq { settings, command } => history::dlq(&settings.into_config()?, command).await,
        Command::Backup {
            out,
            keep,
            settings,
        } => maintenance::backup_command(&settings.into_config()?, out, keep).await,
        Command::Restore {
            file,
            purge_events_stream,
            settings,
        } => {
            maintenance::restore_command(&settings.into_config()?, &file, purge_events_stream).await
        }
        Command::Selftest {
            app,
            json,
            settings,
        } => maintenance::selftest_command(&settings.into_config()?, app, json).await,
        #[cfg(feature = "bench")]
        Command::Bench { settings, scenario } => {
            bench::run(&settings.into_config()?, scenario).await
        }
        #[cfg(feature = "simulator")]
        Command::Sim { bind } => {
            let mut sim_config = hubkeeper_sim::SimConfig::from_env()?;
            if let Some(bind) = bind {
                sim_config.bind = bind;
            }
            let sim = hubkeeper_sim::spawn(sim_config).await?;
            println!(
                "HubSpot simulator on {} (consent page: {}/oauth/authorize)",
                sim.base_url, sim.base_url
            );
            sim.run_until_ctrl_c().await?;
            Ok(())
        }
        Command::Migrate(settings) => {
            let config = settings.into_config()?;
            let pool = roles::connect_store(&config)?;
            hubkeeper_store::migrate(&pool).await?;
            tracing::info!("migrations applied");
            if let Some(key) = &config.bootstrap.bootstrap_admin_key {
                let message = services::access::install_bootstrap_key(&pool, key).await?;
                println!("{message}");
            }
            pool.close().await;
            Ok(())
        }
        Command::Doctor(settings) => doctor::run(&settings.into_config()?).await,
        Command::Health { url, settings } => health::run(&settings.into_config()?, url).await,
    }
}
