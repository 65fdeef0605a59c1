//! `hubkeeper up`: everything on one machine in one process.

use std::path::Path;

use hubkeeper_bus::permissions::{authorization_block, NatsUser, PasswordSource};
use hubkeeper_embedded::{LocalNats, LocalPostgres, NatsOptions, PostgresOptions};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;
use crate::roles::{run_roles, RoleSet};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signal()?;
    let data_dir = std::path::absolute(&config.data.data_dir)?;
    std::fs::create_dir_all(&data_dir)?;
    // A development master key when none is configured (loud warning).
    let mut config = crate::keys::with_dev_master_keys(config, &data_dir)?;

    let mut local_pg = None;
    let database_url = match &config.store.database_url {
        Some(url) => url.clone(),
        None => {
            let pg = LocalPostgres::start(PostgresOptions {
                dir: data_dir.join("postgres"),
                port: preferred_port(config.local.local_pg_port),
                database: "hubkeeper".into(),
                durable: true,
            })
            .await?;
            let url = SecretString::from(pg.database_url());
            println!(
                "  postgres  {} (local, data in {})",
                pg.database_url(),
                data_dir.join("postgres").display()
            );
            local_pg = Some(pg);
            url
        }
    };
    let mut local_nats = None;
    let nats_url = match &config.nats.nats_url {
        Some(url) => url.clone(),
        None => {
            // Every role's user, with fresh passwords; this process runs them all as `all`.
            let passwords: std::collections::HashMap<NatsUser, SecretString> = NatsUser::ALL
                .into_iter()
                .map(|user| (user, hubkeeper_crypto::generate_key_b64()))
                .collect();
            let password_of = |user: NatsUser| {
                passwords
                    .get(&user)
                    .map(|p| p.expose_secret().to_owned())
                    .unwrap_or_default()
            };
            let authorization =
                authorization_block(&NatsUser::ALL, PasswordSource::Literal(&password_of));
            let nats = LocalNats::start(NatsOptions {
                dir: data_dir.join("nats"),
                port: preferred_port(config.local.local_nats_port),
                tools_dir: Some(tools_dir(&data_dir)),
                authorization: Some(authorization),
            })
            .await?;
            config.nats.nats_user = Some(NatsUser::All.name().to_owned());
            config.nats.nats_password = passwords.get(&NatsUser::All).cloned();
            println!(
                "  nats      {} (local, JetStream in {})",
                nats.url(),
                data_dir.join("nats").display()
            );
            let url = SecretString::from(nats.url());
            local_nats = Some(nats);
            url
        }
    };
    println!("  api       http://{}", config.http.bind);
    println!(
        "  health    http://{0}/healthz  ready: http://{0}/readyz  metrics: http://{0}/metrics",
        config.http.bind
    );
    let login =
        crate::services::access::bootstrap_admin_key(&config, &database_url, &data_dir).await?;
    #[cfg(feature = "simulator")]
    let simulator = crate::dev_sim::start_if_unconfigured(&mut config).await?;
    #[cfg(feature = "simulator")]
    if simulator.is_some() {
        crate::dev_sim::register_demo_app_when_ready(&config, &data_dir);
    }
    // The two things a newcomer needs, together and last, so they are not lost among the lines
    // above.
    println!();
    println!(
        "  Dashboard  {}",
        crate::services::access::dashboard_url(&config)
    );
    println!("  Log in     {login}");
    println!();
    println!("Hubkeeper is starting; Ctrl-C stops everything.");

    let result = run_roles(
        &config,
        RoleSet::everything(),
        &database_url,
        &nats_url,
        shutdown,
    )
    .await;

    // Stop in reverse order of start: nothing of ours may outlive `up`.
    #[cfg(feature = "simulator")]
    if let Some(sim) = simulator {
        if let Err(e) = sim.shutdown().await {
            tracing::warn!(error = %e, "simulator did not stop cleanly");
        }
    }
    if let Some(mut nats) = local_nats.take() {
        nats.stop();
    }
    if let Some(mut pg) = local_pg.take() {
        pg.stop();
    }
    result
}

fn preferred_port(port: u16) -> Option<u16> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .ok()
        .map(|_| port)
}

fn tools_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("tools")
}
