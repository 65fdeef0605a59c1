//! Development without HubSpot: when no HubSpot URL is configured, `up` runs the simulator in the
//! same process, points the HubSpot client at it, and registers the simulator's demo app in
//! Hubkeeper, so a newcomer can click through a whole install right away.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hubkeeper_sim::{SimConfig, SimHandle, DEV_CLIENT_ID, DEV_CLIENT_SECRET};

use crate::config::Config;

const DEFAULT_API_URL: &str = "https://api.hubapi.com/";

/// Starts the simulator unless a HubSpot URL was configured; rewires `config` to it.
pub async fn start_if_unconfigured(config: &mut Config) -> anyhow::Result<Option<SimHandle>> {
    let configured = std::env::var_os("HK_HUBSPOT_API_URL").is_some()
        || std::env::var_os("HK_HUBSPOT_APP_URL").is_some()
        || config.hubspot.hubspot_api_url.as_str() != DEFAULT_API_URL;
    if configured {
        return Ok(None);
    }
    let mut seed = hubkeeper_sim::dev_seed();
    let callback = callback_url(config);
    for app in &mut seed.apps {
        app.redirect_uris = vec![callback.clone()];
    }
    let bind: SocketAddr = match std::net::TcpListener::bind("127.0.0.1:8090") {
        Ok(_) => "127.0.0.1:8090".parse()?,
        Err(_) => "127.0.0.1:0".parse()?,
    };
    let sim = hubkeeper_sim::spawn(SimConfig {
        bind,
        seed: Some(seed),
        ..SimConfig::default()
    })
    .await?;
    config.hubspot.hubspot_api_url = url::Url::parse(&sim.base_url)?;
    config.hubspot.hubspot_app_url = url::Url::parse(&sim.base_url)?;
    println!(
        "  hubspot   {} (simulator: no HK_HUBSPOT_API_URL configured)",
        sim.base_url
    );
    Ok(Some(sim))
}

fn api_base(config: &Config) -> String {
    format!("http://{}", crate::config::reachable(config.http.bind))
}

fn callback_url(config: &Config) -> String {
    format!("{}/oauth/callback", api_base(config))
}

/// Once the API is up, registers the simulator's demo app (if it is not there yet) with the
/// admin key `up` wrote, and prints the link that installs a demo account.
pub fn register_demo_app_when_ready(config: &Config, data_dir: &Path) {
    let base = api_base(config);
    let callback = callback_url(config);
    let key_file: PathBuf = data_dir.join(crate::services::access::ADMIN_KEY_FILE);
    tokio::spawn(async move {
        if let Err(e) = register(&base, &callback, &key_file).await {
            tracing::warn!(error = %e, "could not register the simulator's demo app");
        }
    });
}

async fn register(base: &str, callback: &str, key_file: &Path) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(ready, "the API did not become ready");
    let Ok(key) = std::fs::read_to_string(key_file) else {
        // Someone else's key (HK_BOOTSTRAP_ADMIN_KEY): they can add the app in the dashboard.
        return Ok(());
    };
    let key = key.trim();
    let apps = http
        .get(format!("{base}/v1/apps?limit=200"))
        .bearer_auth(key)
        .send()
        .await?
        .text()
        .await?;
    if apps.contains(DEV_CLIENT_ID) {
        return Ok(());
    }
    let created: serde_json::Value = http
        .post(format!("{base}/v1/apps"))
        .bearer_auth(key)
        .json(&serde_json::json!({
            "label": "Demo app (HubSpot simulator)",
            "description": "Registered by `hubkeeper up` for local development",
            "environment": "development",
            "client_id": DEV_CLIENT_ID,
            "client_secret": DEV_CLIENT_SECRET,
            "redirect_uri": callback,
            "scopes": "oauth crm.objects.contacts.read",
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(id) = created["app"]["app_id"]
        .as_str()
        .or_else(|| created["app_id"].as_str())
    {
        println!(
            "  demo app  registered; connect a demo HubSpot account: {base}/oauth/{id}/install"
        );
    }
    Ok(())
}
