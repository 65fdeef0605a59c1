//! Webhook credentials from the app service: the opened client secret and the app's accepted
//! signature versions.

use hubkeeper_core::apps::AppService;
use hubkeeper_core::error::CoreError;
use hubkeeper_domain::AppId;
use uuid::Uuid;

use crate::ingest::{CredentialSource, WebhookCredentials};

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
    async fn webhook_credentials(
        &self,
        app_id: Uuid,
    ) -> Result<Option<WebhookCredentials>, CoreError> {
        let id = AppId::from_uuid(app_id);
        let credentials = match self.apps.credentials(id).await {
            Ok(c) => c,
            Err(CoreError::NotFound { .. } | CoreError::AppDeleted { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let app = self.apps.load(id).await?;
        let Some(config) = app.config() else {
            return Ok(None);
        };
        let accepted = config.signature_versions.iter().copied().collect();
        Ok(Some(WebhookCredentials {
            client_secret: credentials.client_secret,
            accepted,
        }))
    }
}
