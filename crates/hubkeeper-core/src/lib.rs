//! Hubkeeper's application layer: where the pure domain meets Postgres, NATS and HubSpot.
//! Handlers (HTTP, workers) call these services; they never talk to cqrs-es directly.
//!
//! * [`access`]: API keys with their roles, and dashboard sessions.
//! * [`commands`]: the command bus every aggregate's commands go through (conflict retries,
//!   event metadata, each aggregate's snapshot policy).
//! * [`error`]: [`CoreError`], the one error type of these services.
//! * [`vault`]: envelope encryption of tokens and client secrets, crypto-shredding, key rotation.
//! * [`apps`]: app registration and credentials.
//! * [`tokens`]: token hand-out, single-flight refresh, revoke, disconnect, forget.
//! * [`oauth`]: the install flow (signed single-use state, code exchange, connect).
//! * [`proxy`]: HubSpot API calls on an installation's behalf, within the shared per-portal limit.
//! * [`notifications`]: the app's notification endpoints, deliveries and the notifier role.
//! * [`broadcast`]: cross-process cache invalidation.
//! * [`billing`]: pricing plans, subscriptions, usage and quotas.
//! * [`settings`]: runtime settings and the control channel that applies them everywhere.
//! * [`backup`]: backups, restores and the maintenance schedule.
//! * [`selftest`]: the integration self-test.

pub mod access;
pub mod apps;
pub mod backup;
pub mod billing;
pub mod broadcast;
pub mod commands;
pub mod connect;
pub mod error;
pub mod event_repository;
pub mod notifications;
pub mod oauth;
pub mod proxy;
pub mod selftest;
pub mod settings;
pub mod tokens;
pub mod vault;

pub use apps::{AppChanges, AppDeletion, AppDetails, AppService, NewApp};
pub use broadcast::{Broadcaster, Invalidation, ListenerGuard, INVALIDATE_SUBJECT};
pub use commands::{CommandBus, CommandError};
pub use connect::{CreatedSession, NewSession, SessionRefusal};
pub use error::CoreError;
pub use oauth::{CallbackError, CallbackParams, Completion, OAuthConfig, OAuthService};
pub use proxy::{ProxyConfig, ProxyError, ProxyRequest, ProxyResponse, ProxyService};
pub use tokens::{
    ForgetOutcome, HandedOutToken, InstallationDetails, NotRefreshable, RefreshFailure,
    RefreshOutcome, RefreshTrigger, TokenConfig, TokenDeps, TokenService, TokenUsage, TriggerKind,
};
pub use vault::{RotationProgress, RotationReport, Vault};
