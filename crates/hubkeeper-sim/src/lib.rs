//! A HubSpot simulator that speaks HubSpot's protocol over real HTTP: OAuth consent and token
//! endpoints (legacy v1 and date-versioned), introspection, revocation, a CRM endpoint with
//! HubSpot's rate limiting, signed webhook delivery with retries, plus a control API (`/_sim`) to
//! register apps and accounts, inject faults, compress time and read counters.
//!
//! Developers run the whole product against it (`hubkeeper sim`), and tests use it to provoke
//! every failure HubSpot can produce. See `docs/hubspot-simulator.md`.

mod client;
mod config;
mod control;
mod crm;
mod error;
mod html;
mod model;
mod oauth;
mod observe;
mod respond;
mod server;
mod state;
mod tokens;
mod webhooks;

pub use client::{ControlError, SimControl};
pub use config::{
    default_webhook_retry_schedule, dev_seed, AccountSpec, AppSpec, RotationMode, SeedFile,
    SimConfig, UserSpec, DEFAULT_CLI_BIND, DEV_APP_ID, DEV_CLIENT_ID, DEV_CLIENT_SECRET,
    DEV_REDIRECT_URI,
};
pub use error::SimError;
pub use model::{
    AppView, Approval, ApproveRequest, AttemptOutcome, AttemptReport, BatchReport, BatchStatus,
    ClientSecret, ControlErrorBody, CounterSet, Counters, DeliverRequest, DeliveryReport,
    DeliveryState, ExpireTokens, ExpireTokensResult, FaultEndpoint, FaultMode, FaultRule,
    FaultView, GenerateEvents, InactiveIntrospection, InstallationCounters, InstallationRef,
    RefreshTokenCounters, RefreshTokenState, RepeatedRefreshes, RequestLogEntry, RotateSecret,
    RotateSecretResult, Settings, SettingsPatch,
};
pub use server::{router, spawn, SimHandle};
pub use state::SimState;
