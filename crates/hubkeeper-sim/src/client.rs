//! `SimControl`: a typed client for the control API, for tests and tooling in other crates.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::config::{AccountSpec, AppSpec, RotationMode, SeedFile};
use crate::model::{
    AppView, Approval, ApproveRequest, ControlErrorBody, Counters, DeliverRequest, DeliveryReport,
    DeliveryState, ExpireTokens, ExpireTokensResult, FaultRule, FaultView, InstallationRef,
    RequestLogEntry, RotateSecret, RotateSecretResult, Settings, SettingsPatch,
};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid simulator base URL `{url}`: {message}")]
    BaseUrl { url: String, message: String },
    #[error("control request {path} failed: {source}")]
    Transport {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("simulator rejected {path} with HTTP {status}: {message}")]
    Rejected {
        path: String,
        status: u16,
        message: String,
    },
    #[error("unexpected response to {path}: {message}")]
    Decode { path: String, message: String },
    #[error("webhook delivery {id} did not finish within {waited:?}")]
    DeliveryTimeout { id: Uuid, waited: Duration },
}

/// Typed access to `/_sim/...` of a running simulator.
#[derive(Debug, Clone)]
pub struct SimControl {
    base: String,
    http: reqwest::Client,
}

impl SimControl {
    pub fn new(base_url: &str) -> Result<SimControl, ControlError> {
        let parsed = url::Url::parse(base_url).map_err(|e| ControlError::BaseUrl {
            url: base_url.to_string(),
            message: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ControlError::BaseUrl {
                url: base_url.to_string(),
                message: "must be http or https".into(),
            });
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ControlError::BaseUrl {
                url: base_url.to_string(),
                message: e.to_string(),
            })?;
        Ok(SimControl {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Vec<u8>, ControlError> {
        let mut request = self
            .http
            .request(method, format!("{}/_sim{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ControlError::Transport {
                path: path.to_string(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ControlError::Transport {
                path: path.to_string(),
                source,
            })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ControlErrorBody>(&bytes)
                .map(|b| format!("{}: {}", b.error, b.message))
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ControlError::Rejected {
                path: path.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        Ok(bytes.to_vec())
    }

    async fn json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ControlError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ControlError::Decode {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    async fn no_content<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ControlError> {
        self.call(method, path, body).await.map(|_| ())
    }

    pub async fn register_app(&self, app: &AppSpec) -> Result<AppView, ControlError> {
        self.json(Method::POST, "/apps", Some(app)).await
    }

    /// Rotates an app's client secret (`POST /_sim/apps/rotate-secret`).
    pub async fn rotate_secret(
        &self,
        rotation: &RotateSecret,
    ) -> Result<RotateSecretResult, ControlError> {
        self.json(Method::POST, "/apps/rotate-secret", Some(rotation))
            .await
    }

    pub async fn register_account(
        &self,
        account: &AccountSpec,
    ) -> Result<AccountSpec, ControlError> {
        self.json(Method::POST, "/accounts", Some(account)).await
    }

    /// Registers every app and account of a seed.
    pub async fn load_seed(&self, seed: &SeedFile) -> Result<(), ControlError> {
        for app in &seed.apps {
            self.register_app(app).await?;
        }
        for account in &seed.accounts {
            self.register_account(account).await?;
        }
        Ok(())
    }

    pub async fn settings(&self) -> Result<Settings, ControlError> {
        self.json(Method::GET, "/settings", None::<&()>).await
    }

    pub async fn update_settings(&self, patch: &SettingsPatch) -> Result<Settings, ControlError> {
        self.json(Method::POST, "/settings", Some(patch)).await
    }

    pub async fn set_rotation(&self, rotation: RotationMode) -> Result<Settings, ControlError> {
        self.update_settings(&SettingsPatch {
            rotation: Some(rotation),
            ..SettingsPatch::default()
        })
        .await
    }

    /// Lifetime of access tokens minted from now on.
    pub async fn set_token_lifetime(&self, lifetime: Duration) -> Result<Settings, ControlError> {
        self.update_settings(&SettingsPatch {
            token_lifetime_ms: Some(millis(lifetime)),
            ..SettingsPatch::default()
        })
        .await
    }

    pub async fn set_rate_limit(
        &self,
        max: u32,
        window: Duration,
    ) -> Result<Settings, ControlError> {
        self.update_settings(&SettingsPatch {
            rate_limit_max: Some(max),
            rate_limit_window_ms: Some(millis(window)),
            ..SettingsPatch::default()
        })
        .await
    }

    pub async fn inject_fault(&self, rule: &FaultRule) -> Result<FaultView, ControlError> {
        self.json(Method::POST, "/faults", Some(rule)).await
    }

    pub async fn faults(&self) -> Result<Vec<FaultView>, ControlError> {
        self.json(Method::GET, "/faults", None::<&()>).await
    }

    pub async fn remove_fault(&self, id: u64) -> Result<(), ControlError> {
        self.no_content(Method::DELETE, &format!("/faults/{id}"), None::<&()>)
            .await
    }

    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        self.no_content(Method::DELETE, "/faults", None::<&()>)
            .await
    }

    /// Uninstalls the app from the account: every token of the installation dies.
    pub async fn uninstall(&self, client_id: &str, hub_id: u64) -> Result<(), ControlError> {
        let target = InstallationRef {
            client_id: client_id.to_string(),
            hub_id,
        };
        self.no_content(Method::POST, "/uninstall", Some(&target))
            .await
    }

    /// Makes matching live access tokens expire now, without waiting out their lifetime.
    pub async fn expire_access_tokens(&self, filter: &ExpireTokens) -> Result<u64, ControlError> {
        let r: ExpireTokensResult = self
            .json(Method::POST, "/tokens/expire", Some(filter))
            .await?;
        Ok(r.expired)
    }

    pub async fn counters(&self) -> Result<Counters, ControlError> {
        self.json(Method::GET, "/counters", None::<&()>).await
    }

    /// Request-log entries with a sequence number greater than `since` (all when `None`).
    pub async fn request_log(
        &self,
        since: Option<u64>,
    ) -> Result<Vec<RequestLogEntry>, ControlError> {
        let path = format!("/requests?since={}", since.unwrap_or(0));
        self.json(Method::GET, &path, None::<&()>).await
    }

    /// Scripted consent: returns the redirect (with code and state) the browser would follow.
    pub async fn approve(&self, request: &ApproveRequest) -> Result<Approval, ControlError> {
        self.json(Method::POST, "/approve", Some(request)).await
    }

    pub async fn deliver_webhooks(
        &self,
        request: &DeliverRequest,
    ) -> Result<DeliveryReport, ControlError> {
        self.json(Method::POST, "/webhooks/deliver", Some(request))
            .await
    }

    pub async fn webhook_status(&self, id: Uuid) -> Result<DeliveryReport, ControlError> {
        let path = format!("/webhooks/status?id={id}");
        let mut reports: Vec<DeliveryReport> = self.json(Method::GET, &path, None::<&()>).await?;
        reports.pop().ok_or_else(|| ControlError::Decode {
            path,
            message: "empty status list".into(),
        })
    }

    pub async fn webhook_statuses(&self) -> Result<Vec<DeliveryReport>, ControlError> {
        self.json(Method::GET, "/webhooks/status", None::<&()>)
            .await
    }

    /// Polls a background delivery until it is no longer running.
    pub async fn wait_for_delivery(
        &self,
        id: Uuid,
        timeout: Duration,
    ) -> Result<DeliveryReport, ControlError> {
        let started = Instant::now();
        loop {
            let report = self.webhook_status(id).await?;
            if report.state != DeliveryState::Running {
                return Ok(report);
            }
            if started.elapsed() >= timeout {
                return Err(ControlError::DeliveryTimeout {
                    id,
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Back to the start-up state: seed registry, initial settings, no tokens, faults or history.
    pub async fn reset(&self) -> Result<(), ControlError> {
        self.no_content(Method::POST, "/reset", None::<&()>).await
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
