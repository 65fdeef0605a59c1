//! Ending an installation's access: revoke (at HubSpot, for good), disconnect (tokens removed,
//! reconnect possible), HubSpot's uninstall report, and forgetting a tenant (crypto-shredding).

use chrono::{DateTime, Utc};
use hubkeeper_domain::installation::{
    InstallationCommand, InstallationError, InstallationStatus, MAX_REASON_CHARS,
};
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::InstallationId;
use hubkeeper_hubspot::RefreshToken;
use serde::Serialize;

use super::{Inner, TokenService};
use crate::broadcast::{Broadcaster, Invalidation};
use crate::commands::{CommandBus, CommandError};
use crate::error::CoreError;
use crate::vault::installation_owner;

/// What was done by [`TokenService::forget_tenant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForgetOutcome {
    /// Whether a live data key was destroyed by this call.
    pub shredded: bool,
}

/// The two ways an operator ends an installation's access.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// For good, at HubSpot too.
    Revoke,
    /// Tokens removed; a reconnect restores access.
    Disconnect,
}

impl TokenService {
    /// Revokes the refresh token at HubSpot, then records the revocation. Cannot be undone: only
    /// a new install flow restores access. If HubSpot cannot be reached nothing is recorded and
    /// the error is returned, so the operator can retry.
    pub async fn revoke(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let reason = check_reason(reason)?;
        let installation = self.inner.load(id).await?;
        match installation.status_at(self.inner.clock.now()) {
            None => return Err(CoreError::not_found("installation", id)),
            Some(InstallationStatus::Revoked) => return Ok(()),
            Some(InstallationStatus::Disconnected) => {
                return Err(CoreError::Installation(InstallationError::NothingToRevoke))
            }
            Some(_) => {}
        }
        self.end_access(*id, Ending::Revoke, reason, metadata).await
    }

    /// Removes the tokens (status disconnected, data kept, reconnect possible) and revokes the
    /// refresh token at HubSpot on a best-effort basis, so a disconnected installation does not
    /// leave a live grant behind (Nango #459).
    pub async fn disconnect(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let reason = check_reason(reason)?;
        self.end_access(*id, Ending::Disconnect, reason, metadata)
            .await
    }

    /// Revokes or disconnects under the installation's locks, so neither races a refresh.
    async fn end_access(
        &self,
        id: InstallationId,
        ending: Ending,
        reason: String,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        self.inner
            .clone()
            .exclusive(id, move |inner| async move {
                match ending {
                    Ending::Revoke => inner.revoke_locked(&id, &reason, metadata).await,
                    Ending::Disconnect => inner.disconnect_locked(&id, &reason, metadata).await,
                }
            })
            .await
    }

    /// HubSpot reported an uninstall (webhook): records it and drops cached tokens everywhere.
    pub async fn mark_uninstalled(
        &self,
        id: &InstallationId,
        occurred_at: DateTime<Utc>,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        record_uninstall(
            &self.inner.bus,
            &self.inner.broadcaster,
            id,
            occurred_at,
            &metadata,
        )
        .await?;
        self.inner.evict(id, None);
        Ok(())
    }

    /// Crypto-shreds a tenant: records the decision, then destroys the installation's data key.
    /// Its tokens in the event history become unreadable; the history stays. Requires the
    /// installation to be revoked or disconnected first (so nothing live is left at HubSpot).
    /// Safe to repeat: a second call finishes a shred that failed after the event.
    pub async fn forget_tenant(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<ForgetOutcome, CoreError> {
        let reason = check_reason(reason)?;
        let installation = self.inner.load(id).await?;
        if installation.installation_id().is_none() {
            return Err(CoreError::not_found("installation", id));
        }
        self.inner
            .bus
            .installations()
            .execute(
                &id.to_string(),
                InstallationCommand::ForgetTenant {
                    reason: reason.clone(),
                },
                &metadata.reason(reason),
            )
            .await?;
        let shredded = self.inner.vault.shred(&installation_owner(id)).await?;
        self.inner.changed(id, None).await;
        tracing::info!(installation_id = %id, shredded, "tenant forgotten");
        Ok(ForgetOutcome { shredded })
    }
}

impl Inner {
    pub(super) async fn revoke_locked(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let installation = self.load(id).await?;
        if let (Some(app_id), Some(tokens)) = (installation.app_id(), installation.sealed_tokens())
        {
            let creds = self.apps.credentials_for_revocation(app_id).await?;
            let refresh = RefreshToken::from(self.vault.open_refresh(id, &tokens.refresh).await?);
            match self.hubspot.revoke_refresh_token(&creds, &refresh).await {
                Ok(()) => {}
                // HubSpot no longer knows the token: it is as revoked as it gets.
                Err(e) if e.is_reauth_required() => {
                    tracing::info!(installation_id = %id, "refresh token was already dead at HubSpot")
                }
                Err(e) => return Err(CoreError::HubSpot(e)),
            }
        }
        self.record_ending(id, Ending::Revoke, reason, metadata)
            .await
    }

    /// Records a revoke or disconnect with the operator's reason and drops the installation's
    /// cached tokens in every process.
    async fn record_ending(
        &self,
        id: &InstallationId,
        ending: Ending,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let (command, done) = match ending {
            Ending::Revoke => (
                InstallationCommand::Revoke {
                    reason: reason.to_owned(),
                },
                "installation revoked",
            ),
            Ending::Disconnect => (
                InstallationCommand::Disconnect {
                    reason: reason.to_owned(),
                },
                "installation disconnected",
            ),
        };
        self.bus
            .installations()
            .execute(&id.to_string(), command, &metadata.reason(reason))
            .await?;
        self.changed(id, None).await;
        tracing::info!(installation_id = %id, "{done}");
        Ok(())
    }

    pub(super) async fn disconnect_locked(
        &self,
        id: &InstallationId,
        reason: &str,
        metadata: EventMetadata,
    ) -> Result<(), CoreError> {
        let installation = self.load(id).await?;
        if installation.installation_id().is_none() {
            return Err(CoreError::not_found("installation", id));
        }
        // Read what is needed for the revocation before the tokens are removed.
        let grant = match (installation.app_id(), installation.sealed_tokens()) {
            (Some(app_id), Some(tokens)) => {
                let creds = self.apps.credentials_for_revocation(app_id).await;
                let refresh = self.vault.open_refresh(id, &tokens.refresh).await;
                match (creds, refresh) {
                    (Ok(c), Ok(r)) => Some((c, RefreshToken::from(r))),
                    _ => None,
                }
            }
            _ => None,
        };
        self.record_ending(id, Ending::Disconnect, reason, metadata)
            .await?;
        if let Some((creds, refresh)) = grant {
            match self.hubspot.revoke_refresh_token(&creds, &refresh).await {
                Ok(()) => {}
                Err(e) if e.is_reauth_required() => {}
                Err(e) => tracing::warn!(
                    installation_id = %id, class = e.class(),
                    "disconnected, but revoking the grant at HubSpot failed: {e}"
                ),
            }
        }
        Ok(())
    }
}

/// The domain validates reasons too, but only after HubSpot was called; checking first keeps a
/// typo from revoking a grant and then failing to record it.
pub(super) fn check_reason(reason: &str) -> Result<String, CoreError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CoreError::InvalidInput("a reason is required".into()));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(CoreError::InvalidInput(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(CoreError::InvalidInput(
            "reason must be a single line without control characters".into(),
        ));
    }
    Ok(reason.to_owned())
}

/// Records HubSpot's uninstall report, then publishes the same invalidation as revoke and
/// disconnect. Free-standing because the webhook workers hold no token service: going through
/// here is what bounds an uninstalled installation's cached tokens exactly like a revoked one's.
pub async fn record_uninstall(
    bus: &CommandBus,
    broadcaster: &Broadcaster,
    id: &InstallationId,
    occurred_at: DateTime<Utc>,
    metadata: &EventMetadata,
) -> Result<(), CommandError<InstallationError>> {
    bus.installations()
        .execute(
            &id.to_string(),
            InstallationCommand::MarkUninstalled { occurred_at },
            metadata,
        )
        .await?;
    broadcaster
        .publish(&Invalidation::Tokens {
            installation_id: id.to_string(),
            current_generation: None,
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_checked_before_anything_irreversible() {
        assert!(check_reason("  ").is_err());
        assert!(check_reason("line\nbreak").is_err());
        assert!(check_reason(&"x".repeat(MAX_REASON_CHARS + 1)).is_err());
        assert_eq!(check_reason(" GDPR ticket 42 ").unwrap(), "GDPR ticket 42");
    }
}
