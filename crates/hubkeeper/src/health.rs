//! `hubkeeper health`: a container health check that needs nothing but the binary. It asks the
//! process in the same container whether it is ready (`/readyz`) and exits 0 or 1.

use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::config::{reachable, Config};

/// Longer than a healthy `/readyz` ever takes, shorter than Docker's default check timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(config: &Config, url: Option<url::Url>) -> anyhow::Result<()> {
    let url = match url {
        Some(url) => url,
        None => readiness_url(config)?,
    };
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .context("cannot build an HTTP client")?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    if status.is_success() {
        println!("ready ({url})");
        return Ok(());
    }
    // The body names the check that is failing; it carries no secrets (the API writes it).
    let body = response.text().await.unwrap_or_default();
    Err(anyhow!(
        "not ready: {url} answered {status}: {}",
        body.trim()
    ))
}

/// `/readyz` on the listener this process's configuration gives it: the worker's health
/// listener when there is one, else the API's, reached over loopback when bound to all
/// interfaces.
fn readiness_url(config: &Config) -> anyhow::Result<url::Url> {
    let addr = config.metrics.metrics_bind.unwrap_or(config.http.bind);
    let url = format!("http://{}/readyz", reachable(addr));
    url::Url::parse(&url).with_context(|| format!("cannot build a URL from {addr}"))
}
