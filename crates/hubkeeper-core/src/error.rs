//! The one error type of the application layer.
//!
//! Variants are grouped by what a caller can do about them (fix the input, wait, ask the user to
//! re-authorise, call an operator), because that is what the HTTP layer and the refresher need to
//! decide. Messages never contain tokens, secrets or key material: the inner errors they wrap
//! (domain, crypto, HubSpot) already guarantee that for their own text.

use hubkeeper_crypto::CryptoError;
use hubkeeper_domain::access::ApiKeyError;
use hubkeeper_domain::app::AppError;
use hubkeeper_domain::installation::InstallationError;
use hubkeeper_domain::notification::EndpointError;
use hubkeeper_domain::operations::OperationError;
use hubkeeper_domain::plan::PlanError;
use hubkeeper_domain::settings::SettingsError;
use hubkeeper_domain::subscription::SubscriptionError;
use hubkeeper_hubspot::HubSpotError;

use crate::commands::CommandError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The app, installation or other resource does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },

    /// Input the caller can fix (names the problem).
    #[error("{0}")]
    InvalidInput(String),

    /// The resource's state does not allow this (a taken plan code, a reused idempotency key,
    /// a restore into a database that is not empty).
    #[error("{0}")]
    Conflict(String),

    /// The App aggregate refused the command.
    #[error(transparent)]
    App(#[from] AppError),

    /// The Installation aggregate refused the command.
    #[error(transparent)]
    Installation(#[from] InstallationError),

    /// The Plan aggregate refused the command.
    #[error(transparent)]
    Plan(#[from] PlanError),

    /// The Subscription aggregate refused the command.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),

    /// The AppEndpoints aggregate refused the command.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),

    /// The Settings aggregate refused the command.
    #[error(transparent)]
    Settings(#[from] SettingsError),

    /// The ApiKey aggregate refused the command.
    #[error(transparent)]
    ApiKey(#[from] ApiKeyError),

    /// The Operation aggregate refused the command.
    #[error(transparent)]
    Operation(#[from] OperationError),

    /// HubSpot rejected the refresh token: only the user can fix this by installing again.
    #[error(
        "installation {id} needs re-authorisation: HubSpot rejected its refresh token; the user \
         must go through the install flow again"
    )]
    ReauthorizationRequired { id: String },

    /// Tokens were removed by an operator or an uninstall.
    #[error("installation {id} is disconnected; the user must reconnect through the install flow")]
    Disconnected { id: String },

    /// Tokens were revoked at HubSpot.
    #[error("installation {id} was revoked; only a new install flow restores access")]
    Revoked { id: String },

    /// The app was deleted: its installations keep their (sealed) tokens for the record, but
    /// without the app's credentials they can no longer be refreshed.
    #[error("app deleted: tokens kept but cannot be refreshed (app {app_id})")]
    AppDeleted { app_id: String },

    /// HubSpot refused the app's client credentials: its refreshes are parked until the secret
    /// is rotated or an operator resumes them.
    #[error(
        "HubSpot rejected the client credentials of app {app_id}; its refreshes are parked until \
         the secret is rotated (POST /v1/apps/{app_id}/rotate-secret) or an operator resumes them"
    )]
    AppCredentialsRejected { app_id: String },

    /// A refresh of the installation failed moments ago; hand-outs answer from that failure for
    /// a few seconds instead of asking HubSpot again.
    #[error("the last refresh of installation {id} failed {age_secs} s ago ({class}: {message}); try again later")]
    RecentRefreshFailure {
        id: String,
        class: String,
        message: String,
        age_secs: i64,
        retry_after_secs: u64,
    },

    /// A connect session that does not exist, expired or was used.
    #[error(transparent)]
    ConnectSession(#[from] crate::connect::SessionRefusal),

    /// The tenant's data key was destroyed: its secrets are unreadable for good.
    #[error("the secrets of {owner} were crypto-shredded and can no longer be read")]
    Shredded { owner: String },

    /// HubSpot refused or failed a call (the inner error classifies it).
    #[error("HubSpot: {0}")]
    HubSpot(#[from] HubSpotError),

    /// HubSpot issued a token that cannot satisfy the requested validity margin.
    #[error(
        "HubSpot issues tokens valid for {lifetime_secs} s, less than the requested margin of \
         {requested_secs} s; ask for a smaller min_validity"
    )]
    TokenLifetimeTooShort {
        lifetime_secs: i64,
        requested_secs: i64,
    },

    /// Another process held the installation's refresh lock for too long.
    #[error("timed out waiting for another refresh of installation {id}; try again")]
    Busy { id: String },

    /// Encryption or key handling failed (configuration or corrupted data, never user input).
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),

    /// A tool or service the operation needs (pg_dump, NATS, HubSpot during the self-test) is
    /// missing or failed.
    #[error("{0}")]
    Unavailable(String),

    /// Lost optimistic-concurrency races too often.
    #[error("the {0} was changed concurrently too many times; try again")]
    Contention(&'static str),

    /// The event store failed.
    #[error("event store: {0}")]
    Store(String),

    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl CoreError {
    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        CoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// Whether trying again later may succeed (HubSpot or infrastructure trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            CoreError::HubSpot(e) => e.is_retryable(),
            CoreError::Busy { .. }
            | CoreError::Contention(_)
            | CoreError::Store(_)
            | CoreError::Database(_) => true,
            _ => false,
        }
    }
}

impl<E> From<CommandError<E>> for CoreError
where
    E: std::error::Error,
    CoreError: From<E>,
{
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected(e) => CoreError::from(e),
            CommandError::Conflict(kind) => CoreError::Contention(kind),
            CommandError::Store(e) => CoreError::Store(e),
        }
    }
}
