//! Connects the refresher worker's queue loop to the token service's single-flight refresh.

use std::str::FromStr;

use hubkeeper_core::{RefreshOutcome, RefreshTrigger, TokenService};
use hubkeeper_domain::InstallationId;
use hubkeeper_workers::{RefreshExecutor, RefreshMode, RefreshResult};

pub struct TokenServiceRefresher(pub TokenService);

#[async_trait::async_trait]
impl RefreshExecutor for TokenServiceRefresher {
    async fn refresh(&self, installation_id: &str, mode: RefreshMode) -> RefreshResult {
        let Ok(id) = InstallationId::from_str(installation_id) else {
            return RefreshResult::NotRefreshable(format!(
                "`{installation_id}` is not an installation id"
            ));
        };
        let outcome = match mode {
            RefreshMode::IfExpiringWithin(lead) => {
                self.0
                    .refresh_if_due(&id, lead, RefreshTrigger::scheduled())
                    .await
            }
            RefreshMode::Force => self.0.refresh_now(&id, RefreshTrigger::idle()).await,
        };
        match outcome {
            RefreshOutcome::Refreshed { .. } => RefreshResult::Refreshed,
            RefreshOutcome::StillFresh { .. } => RefreshResult::StillFresh,
            RefreshOutcome::NotRefreshable(why) => RefreshResult::NotRefreshable(why.to_string()),
            RefreshOutcome::ReauthRequired => RefreshResult::ReauthRequired,
            RefreshOutcome::Failed(failure) => RefreshResult::Transient {
                reason: format!("{}: {}", failure.class, failure.message),
                retry_after: failure.retry_after,
            },
        }
    }
}
