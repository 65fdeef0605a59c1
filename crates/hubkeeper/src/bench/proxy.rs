//! The HubSpot API proxy's added latency: the same CRM call made directly to the simulator with
//! the installation's access token (the baseline) and through `/v1/proxy/{installation}/...` with
//! a service key, in the same run, at each concurrency level. HubSpot's per-portal limit (in the
//! simulator) and the proxy's shared limit are the same and, by default, far above the load
//! (`--portal-limit`), so the proxy's limiter runs as in production (one Postgres reservation
//! per call) without making calls wait, and what is measured is the proxy's own cost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hubkeeper_sim::SimConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::load::{random_gets, Get, LoadFigures};
use super::stack::Stack;
use super::{Goal, Goals};

/// The call both paths make.
const CALL: &str = "crm/v3/objects/contacts?limit=10";

#[derive(Debug, Serialize)]
pub struct ProxyFigures {
    pub installations: u64,
    /// Calls per portal and 10 s, at the simulator and in the proxy.
    pub portal_limit: u32,
    pub seconds_per_level: u64,
    pub levels: Vec<ProxyLevel>,
}

#[derive(Debug, Serialize)]
pub struct ProxyLevel {
    pub concurrency: usize,
    pub proxied: LoadFigures,
    /// The same call straight to the simulator.
    pub direct: LoadFigures,
    /// Proxied minus direct, at p50 and p99.
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
}

pub async fn run(
    tools: PathBuf,
    installations: u64,
    levels: &[usize],
    seconds: u64,
    portal_limit: u32,
) -> anyhow::Result<ProxyFigures> {
    let window = Duration::from_secs(10);
    let sim = SimConfig {
        rate_limit: (portal_limit, window),
        ..SimConfig::default()
    };
    let mut stack = Stack::start(tools, sim).await?;
    let api = stack
        .spawn(
            "api",
            &["api"],
            &[
                ("HK_PROXY_RATE_LIMIT_MAX", portal_limit.to_string()),
                (
                    "HK_PROXY_RATE_LIMIT_WINDOW",
                    format!("{}s", window.as_secs()),
                ),
            ],
        )
        .await?;
    let app = stack.register_app(api).await?;
    stack.register_accounts(installations).await?;
    let ids = stack.install_accounts(api, &app, installations, 16).await?;
    let key = stack.service_key(&app).await?;
    // The baseline calls HubSpot with each installation's own access token, as an app without
    // the proxy would after a hand-out.
    let mut tokens = Vec::with_capacity(ids.len());
    for id in &ids {
        tokens.push(access_token(&stack, api, &key, id).await?);
    }
    let hubspot = stack
        .var("HK_HUBSPOT_API_URL")
        .ok_or_else(|| anyhow::anyhow!("the stack has no HubSpot URL"))?;
    let proxied = proxied(&stack, api, &key, &ids);
    let direct = direct(&hubspot, &tokens);
    let duration = Duration::from_secs(seconds);
    // Warm both paths (connections, the API's token cache).
    random_gets(proxied.clone(), 8, Duration::from_secs(2)).await;
    random_gets(direct.clone(), 8, Duration::from_secs(2)).await;
    let mut out = Vec::new();
    for &concurrency in levels {
        let p = random_gets(proxied.clone(), concurrency, duration).await;
        eprintln!("{}", p.line("proxied call"));
        let d = random_gets(direct.clone(), concurrency, duration).await;
        eprintln!("{}", d.line("direct call (baseline)"));
        if p.requests == 0 || d.requests == 0 {
            anyhow::bail!(
                "no successful call at concurrency {concurrency} (proxied errors {}, direct errors {}); see {}",
                p.errors,
                d.errors,
                stack.logs().display()
            );
        }
        out.push(ProxyLevel {
            concurrency,
            added_p50_ms: p.p50_ms - d.p50_ms,
            added_p99_ms: p.p99_ms - d.p99_ms,
            proxied: p,
            direct: d,
        });
    }
    Ok(ProxyFigures {
        installations,
        portal_limit,
        seconds_per_level: seconds,
        levels: out,
    })
}

async fn access_token(
    stack: &Stack,
    api: usize,
    key: &SecretString,
    id: &str,
) -> anyhow::Result<SecretString> {
    let response = stack
        .http
        .get(format!("{}/v1/installations/{id}/token", stack.base(api)))
        .bearer_auth(key.expose_secret())
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    body["access_token"]
        .as_str()
        .map(|t| SecretString::from(t.to_owned()))
        .ok_or_else(|| anyhow::anyhow!("token hand-out for {id} answered {status}"))
}

/// The proxied call for each installation, with the service key.
fn proxied(stack: &Stack, api: usize, key: &SecretString, ids: &[String]) -> Arc<Vec<Get>> {
    let base = stack.base(api);
    let authorization = format!("Bearer {}", key.expose_secret());
    Arc::new(
        ids.iter()
            .map(|id| Get {
                url: format!("{base}/v1/proxy/{id}/{CALL}"),
                authorization: authorization.clone(),
            })
            .collect(),
    )
}

/// The same call straight to HubSpot, with each installation's own access token.
fn direct(hubspot: &str, tokens: &[SecretString]) -> Arc<Vec<Get>> {
    let url = format!("{}/{CALL}", hubspot.trim_end_matches('/'));
    Arc::new(
        tokens
            .iter()
            .map(|token| Get {
                url: url.clone(),
                authorization: format!("Bearer {}", token.expose_secret()),
            })
            .collect(),
    )
}

impl Goals for ProxyFigures {
    /// At one client, the proxy adds under 5 ms at p50 and under 10 ms at p99 to a HubSpot call
    /// (token from the cache, one shared-limit reservation, forwarding both ways).
    fn goals(&self) -> Vec<Goal> {
        let one = self.levels.iter().find(|l| l.concurrency == 1);
        vec![
            Goal::below(
                "proxy_added_p50_at_1",
                one.map_or(f64::NAN, |l| l.added_p50_ms),
                5.0,
                "ms",
            ),
            Goal::below(
                "proxy_added_p99_at_1",
                one.map_or(f64::NAN, |l| l.added_p99_ms),
                10.0,
                "ms",
            ),
        ]
    }
}
