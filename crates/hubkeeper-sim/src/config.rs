//! Start-up configuration of the simulator, the seed file format and the development seed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::model::ClientSecret;

/// Address `hubkeeper sim` listens on when `HK_SIM_BIND` is not set.
pub const DEFAULT_CLI_BIND: &str = "127.0.0.1:8090";

/// How the simulator treats refresh tokens on a refresh grant.
///
/// HubSpot documents long-lived refresh tokens that stay the same (`Off`), but whether it rotates
/// them is unconfirmed, so the product must survive both; `On` lets tests prove that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RotationMode {
    #[default]
    Off,
    On {
        /// How long a superseded refresh token keeps working, so a client that crashed before
        /// storing the new token can still recover.
        #[serde(rename = "grace_ms", with = "crate::model::duration_ms")]
        grace: Duration,
    },
}

impl std::str::FromStr for RotationMode {
    type Err = String;

    /// Accepts `off`, `on` (no grace) and `on:<grace seconds>`, the forms `HK_SIM_ROTATION` takes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "off" | "false" | "0" => Ok(RotationMode::Off),
            "on" | "true" | "1" => Ok(RotationMode::On {
                grace: Duration::ZERO,
            }),
            other => match other.strip_prefix("on:") {
                Some(secs) => secs
                    .parse::<u64>()
                    .map(|secs| RotationMode::On {
                        grace: Duration::from_secs(secs),
                    })
                    .map_err(|_| format!("bad rotation grace `{secs}` (expected seconds)")),
                None => Err(format!(
                    "unknown rotation mode `{other}` (expected off, on or on:<grace seconds>)"
                )),
            },
        }
    }
}

/// Everything the simulator needs to start; every field can later be changed at run time through
/// the control API except `bind` and `public_url`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub bind: SocketAddr,
    /// The base URL to advertise (paging links, `base_url`) when the simulator sits behind a proxy
    /// or a container port mapping; defaults to `http://<bound address>`.
    pub public_url: Option<String>,
    pub token_lifetime: Duration,
    pub code_lifetime: Duration,
    pub rotation: RotationMode,
    /// `(max requests, rolling window)` per installed account.
    pub rate_limit: (u32, Duration),
    /// Delay before each webhook retry; its length (capped at 10) is the number of retries.
    pub webhook_retry_schedule: Vec<Duration>,
    pub seed: Option<SeedFile>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            // Port 0 so that tests (the most common caller of Default) never collide.
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            token_lifetime: Duration::from_secs(1800),
            code_lifetime: Duration::from_secs(60),
            rotation: RotationMode::Off,
            rate_limit: (110, Duration::from_secs(10)),
            webhook_retry_schedule: default_webhook_retry_schedule(),
            seed: None,
        }
    }
}

/// Ten retries spread over roughly 24 hours, growing like HubSpot's documented back-off.
pub fn default_webhook_retry_schedule() -> Vec<Duration> {
    [1u64, 5, 15, 30, 60, 120, 180, 240, 360, 420]
        .iter()
        .map(|minutes| Duration::from_secs(minutes * 60))
        .collect()
}

impl SimConfig {
    /// Reads the `HK_SIM_*` environment variables used by `hubkeeper sim`.
    pub fn from_env() -> Result<SimConfig, SimError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`SimConfig::from_env`] with an injectable variable source, so the parsing is testable
    /// without mutating the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<SimConfig, SimError> {
        let mut config = SimConfig::default();
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let bind = get("HK_SIM_BIND").unwrap_or_else(|| DEFAULT_CLI_BIND.to_string());
        config.bind = bind.trim().parse().map_err(|_| SimError::Config {
            key: "HK_SIM_BIND",
            message: format!("`{bind}` is not a socket address like 127.0.0.1:8090"),
        })?;
        config.public_url = get("HK_SIM_PUBLIC_URL");
        if let Some(v) = get("HK_SIM_TOKEN_LIFETIME_SECS") {
            config.token_lifetime =
                Duration::from_secs(parse_u64("HK_SIM_TOKEN_LIFETIME_SECS", &v)?);
        }
        if let Some(v) = get("HK_SIM_CODE_LIFETIME_SECS") {
            config.code_lifetime = Duration::from_secs(parse_u64("HK_SIM_CODE_LIFETIME_SECS", &v)?);
        }
        if let Some(v) = get("HK_SIM_ROTATION") {
            config.rotation = v.parse().map_err(|message| SimError::Config {
                key: "HK_SIM_ROTATION",
                message,
            })?;
        }
        if let Some(v) = get("HK_SIM_RATE_LIMIT_MAX") {
            let max = parse_u64("HK_SIM_RATE_LIMIT_MAX", &v)?;
            config.rate_limit.0 = u32::try_from(max).map_err(|_| SimError::Config {
                key: "HK_SIM_RATE_LIMIT_MAX",
                message: "too large".into(),
            })?;
        }
        if let Some(v) = get("HK_SIM_RATE_LIMIT_WINDOW_MS") {
            config.rate_limit.1 =
                Duration::from_millis(parse_u64("HK_SIM_RATE_LIMIT_WINDOW_MS", &v)?);
        }
        if let Some(v) = get("HK_SIM_WEBHOOK_RETRY_SCHEDULE_MS") {
            config.webhook_retry_schedule = v
                .split(',')
                .map(|part| {
                    parse_u64("HK_SIM_WEBHOOK_RETRY_SCHEDULE_MS", part).map(Duration::from_millis)
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("HK_SIM_SEED_FILE") {
            config.seed = Some(if v.trim() == "dev" {
                dev_seed()
            } else {
                SeedFile::load(Path::new(v.trim()))?
            });
        }
        Ok(config)
    }
}

fn parse_u64(key: &'static str, value: &str) -> Result<u64, SimError> {
    value.trim().parse().map_err(|_| SimError::Config {
        key,
        message: format!("`{}` is not a non-negative integer", value.trim()),
    })
}

/// The registry the simulator starts with (and returns to on reset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedFile {
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    #[serde(default)]
    pub accounts: Vec<AccountSpec>,
}

impl SeedFile {
    pub fn load(path: &Path) -> Result<SeedFile, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::SeedRead {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| SimError::SeedParse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A developer app as registered in HubSpot's developer portal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub app_id: u64,
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub name: String,
    /// Matched exactly (no normalisation), like HubSpot does.
    pub redirect_uris: Vec<String>,
    /// The scopes the app is configured with: the upper bound of what an install may grant.
    pub scopes: Vec<String>,
}

/// A HubSpot account (portal) that can install apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub hub_id: u64,
    pub domain: String,
    /// Users who may approve an install; one admin user is made up when the list is empty.
    #[serde(default)]
    pub users: Vec<UserSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub user_id: u64,
    pub email: String,
}

/// Client id of the development app in [`dev_seed`].
pub const DEV_CLIENT_ID: &str = "5b1f0d3e-7c2a-4e8b-9f61-3a2d4c5e6f70";
/// Client secret of the development app in [`dev_seed`]; only ever valid against the simulator.
pub const DEV_CLIENT_SECRET: &str = "sim-dev-secret-8c4e2a91-6b3d-4f7e-a1c5-0d9e8f7a6b5c";
/// Redirect URI registered for the development app (Hubkeeper's local callback).
pub const DEV_REDIRECT_URI: &str = "http://127.0.0.1:8080/oauth/callback";
/// App id of the development app in [`dev_seed`].
pub const DEV_APP_ID: u64 = 1_000_001;

/// One demo app and two demo accounts, loaded by `hubkeeper up` in development so the whole
/// install flow works without a HubSpot developer account.
pub fn dev_seed() -> SeedFile {
    SeedFile {
        apps: vec![AppSpec {
            app_id: DEV_APP_ID,
            client_id: DEV_CLIENT_ID.to_string(),
            client_secret: ClientSecret::new(DEV_CLIENT_SECRET),
            name: "Hubkeeper (development)".to_string(),
            redirect_uris: vec![DEV_REDIRECT_URI.to_string()],
            scopes: vec!["crm.objects.contacts.read".to_string(), "oauth".to_string()],
        }],
        accounts: vec![
            AccountSpec {
                hub_id: 40_000_001,
                domain: "acme-demo.hubspot.com".to_string(),
                users: vec![UserSpec {
                    user_id: 7_000_001,
                    email: "ada@acme-demo.example".to_string(),
                }],
            },
            AccountSpec {
                hub_id: 40_000_002,
                domain: "globex-demo.hubspot.com".to_string(),
                users: vec![
                    UserSpec {
                        user_id: 7_000_002,
                        email: "grace@globex-demo.example".to_string(),
                    },
                    UserSpec {
                        user_id: 7_000_003,
                        email: "linus@globex-demo.example".to_string(),
                    },
                ],
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_defaults_bind_to_the_cli_port() {
        let config = SimConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(config.bind.to_string(), DEFAULT_CLI_BIND);
        assert_eq!(config.token_lifetime, Duration::from_secs(1800));
        assert!(config.seed.is_none());
    }

    #[test]
    fn env_overrides_are_parsed() {
        let config = SimConfig::from_lookup(lookup(&[
            ("HK_SIM_BIND", "0.0.0.0:9999"),
            ("HK_SIM_TOKEN_LIFETIME_SECS", "30"),
            ("HK_SIM_ROTATION", "on:5"),
            ("HK_SIM_SEED_FILE", "dev"),
            ("HK_SIM_WEBHOOK_RETRY_SCHEDULE_MS", "10, 20"),
        ]))
        .unwrap();
        assert_eq!(config.bind.port(), 9999);
        assert_eq!(config.token_lifetime, Duration::from_secs(30));
        assert_eq!(
            config.rotation,
            RotationMode::On {
                grace: Duration::from_secs(5)
            }
        );
        assert_eq!(config.seed, Some(dev_seed()));
        assert_eq!(
            config.webhook_retry_schedule,
            vec![Duration::from_millis(10), Duration::from_millis(20)]
        );
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let err = SimConfig::from_lookup(lookup(&[("HK_SIM_ROTATION", "sometimes")])).unwrap_err();
        assert!(err.to_string().contains("HK_SIM_ROTATION"), "{err}");
        let err = SimConfig::from_lookup(lookup(&[("HK_SIM_BIND", "nope")])).unwrap_err();
        assert!(err.to_string().contains("HK_SIM_BIND"), "{err}");
    }

    #[test]
    fn default_schedule_spans_about_a_day() {
        let total: Duration = default_webhook_retry_schedule().iter().sum();
        assert_eq!(default_webhook_retry_schedule().len(), 10);
        assert!(total > Duration::from_secs(23 * 3600) && total <= Duration::from_secs(24 * 3600));
    }

    #[test]
    fn seed_file_round_trips_and_secret_is_redacted() {
        let seed = dev_seed();
        let json = serde_json::to_string(&seed).unwrap();
        let back: SeedFile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, seed);
        assert!(!format!("{seed:?}").contains(DEV_CLIENT_SECRET));
    }
}
