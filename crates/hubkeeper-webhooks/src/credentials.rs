//! Webhook credentials from the app service: the opened client secrets (the current one and,
//! during a rotation's overlap, the previous one with the end of its validity) and the app's
//! accepted signature versions.

use hubkeeper_core::apps::AppService;
use hubkeeper_core::error::CoreError;
use hubkeeper_domain::AppId;
use uuid::Uuid;

use crate::ingest::{CredentialSource, ValidSecret, WebhookCredentials};

/// [`CredentialSource`] backed by [`AppService`] (the App aggregate and the vault).
pub struct AppServiceCredentials {
    apps: AppService,
}

impl AppServiceCredentials {
    pub fn new(apps: AppService) -> Self {
        Self { apps }
    }
}

#[async_trait::async_trait]
impl CredentialSource for AppServiceCredentials {
    fn generation(&self) -> u64 {
        self.apps.credentials_generation()
    }

    async fn webhook_credentials(
        &self,
        app_id: Uuid,
    ) -> Result<Option<WebhookCredentials>, CoreError> {
        let id = AppId::from_uuid(app_id);
        // The current secret and, during a rotation's overlap, the previous one with its end.
        let secrets = match self.apps.webhook_secret_validity(id).await {
            Ok(secrets) => secrets,
            Err(CoreError::NotFound { .. } | CoreError::AppDeleted { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let app = self.apps.load(id).await?;
        let Some(config) = app.config() else {
            return Ok(None);
        };
        let accepted = config.signature_versions.iter().copied().collect();
        Ok(Some(WebhookCredentials {
            client_secrets: secrets
                .into_iter()
                .map(|s| ValidSecret {
                    secret: s.secret,
                    valid_until_ms: s.valid_until.map(|t| t.timestamp_millis()),
                })
                .collect(),
            accepted,
        }))
    }
}
