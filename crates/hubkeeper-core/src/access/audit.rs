//! The audited side of access: every key created or revoked, every dashboard log-in, log-out and
//! refused log-in, and the operator actions that concern no other aggregate (rate limits
//! cleared, configuration reloaded, backups started, self-test runs) become events with their
//! actor, through the command bus (`ApiKey` and `Operation` aggregates).
//!
//! Keys are created and revoked here rather than in [`super::keys`] alone so that the row (what
//! authenticates requests) and the event (the history) go together: a key whose creation cannot
//! be recorded is removed again, and a revocation is recorded as soon as the row says revoked.

use std::net::IpAddr;
use std::sync::Arc;

use hubkeeper_domain::access::{ApiKeyCommand, ApiKeyError, KeyRole};
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::operations::{LogInRefusal, OperationCommand};
use hubkeeper_domain::{AppId, OperationId};
use sqlx::PgPool;

use super::keys::{create_key_for_apps, parse_key, revoke_key, CreateKeyError, NewApiKey};
use super::Role;
use crate::commands::{CommandBus, CommandError};
use crate::error::CoreError;

impl From<Role> for KeyRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Admin => KeyRole::Admin,
            Role::Operator => KeyRole::Operator,
            Role::Auditor => KeyRole::Auditor,
            Role::Service => KeyRole::Service,
        }
    }
}

impl From<CreateKeyError> for CoreError {
    fn from(e: CreateKeyError) -> Self {
        match e {
            CreateKeyError::UnknownApp(app) => CoreError::not_found("app", app),
            CreateKeyError::AppsOnNonServiceKey(_) => CoreError::InvalidInput(e.to_string()),
            CreateKeyError::Database(e) => CoreError::Database(e),
        }
    }
}

/// Records access and operator events. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    bus: Arc<CommandBus>,
}

impl AuditLog {
    pub fn new(bus: Arc<CommandBus>) -> Self {
        Self { bus }
    }

    /// Creates a key (see [`create_key_for_apps`]) and records its creation; when the event
    /// cannot be recorded (a bad name, the store failing) the key is removed again and the
    /// error returned, so no key exists without its history.
    pub async fn create_key(
        &self,
        pool: &PgPool,
        name: &str,
        role: Role,
        apps: &[AppId],
        metadata: &EventMetadata,
    ) -> Result<NewApiKey, CoreError> {
        let created_by = metadata.actor.to_string();
        let key = create_key_for_apps(pool, name.trim(), role, apps, &created_by).await?;
        if let Err(e) = self
            .key_created(&key.id, &key.name, role, &key.apps, metadata)
            .await
        {
            sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(&key.id)
                .execute(pool)
                .await?;
            return Err(e);
        }
        Ok(key)
    }

    /// Records the creation of a key made elsewhere (the first admin key `up` makes or installs).
    pub async fn key_created(
        &self,
        key_id: &str,
        name: &str,
        role: Role,
        apps: &[AppId],
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        Ok(self
            .key_event(
                key_id,
                ApiKeyCommand::Create {
                    key_id: key_id.to_owned(),
                    name: name.to_owned(),
                    role: role.into(),
                    apps: apps.to_vec(),
                },
                metadata,
            )
            .await?)
    }

    /// Revokes key `id` (it and its dashboard sessions stop working) and records it; `false`
    /// when there was no active key with that id (nothing is recorded then).
    pub async fn revoke_key(
        &self,
        pool: &PgPool,
        id: &str,
        metadata: &EventMetadata,
    ) -> Result<bool, CoreError> {
        if !revoke_key(pool, id).await? {
            return Ok(false);
        }
        let recorded = self
            .key_event(
                id,
                ApiKeyCommand::Revoke {
                    key_id: id.to_owned(),
                },
                metadata,
            )
            .await;
        match recorded {
            // Recorded by an earlier attempt whose row update lost a race: the outcome is the same.
            Ok(()) | Err(CommandError::Rejected(ApiKeyError::AlreadyRevoked(_))) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Records a dashboard log-in of key `key_id` from `client`.
    pub async fn logged_in(
        &self,
        key_id: &str,
        client: Option<IpAddr>,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        Ok(self
            .key_event(
                key_id,
                ApiKeyCommand::LogIn {
                    key_id: key_id.to_owned(),
                    client: client.map(|c| c.to_string()),
                },
                metadata,
            )
            .await?)
    }

    /// Records the end of a dashboard session of key `key_id` by its user.
    pub async fn logged_out(
        &self,
        key_id: &str,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        Ok(self
            .key_event(
                key_id,
                ApiKeyCommand::LogOut {
                    key_id: key_id.to_owned(),
                },
                metadata,
            )
            .await?)
    }

    /// Records a refused dashboard log-in. Of what was presented only the key id is kept, and
    /// only when the whole value had the exact shape of a key (`hk_<id>_<secret>`): anything
    /// else may be a secret pasted into the wrong field.
    pub async fn log_in_failed(
        &self,
        refusal: LogInRefusal,
        presented: &str,
        client: Option<IpAddr>,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        let key_id = parse_key(presented).map(|(id, _)| id.to_owned());
        self.operation(
            OperationCommand::RecordFailedLogIn {
                refusal,
                key_id,
                client: client.map(|c| c.to_string()),
            },
            metadata,
        )
        .await
    }

    /// Executes `command` on the `ApiKey` aggregate of key `key_id`.
    async fn key_event(
        &self,
        key_id: &str,
        command: ApiKeyCommand,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<ApiKeyError>> {
        self.bus.keys().execute(key_id, command, metadata).await
    }

    /// Records an operator action as a new [`hubkeeper_domain::operations::Operation`].
    pub async fn operation(
        &self,
        command: OperationCommand,
        metadata: &EventMetadata,
    ) -> Result<(), CoreError> {
        Ok(self
            .bus
            .operations()
            .execute(&OperationId::new().to_string(), command, metadata)
            .await?)
    }
}
