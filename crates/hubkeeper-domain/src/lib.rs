//! Hubkeeper's domain: event-sourced aggregates for OAuth apps and their installations.
//!
//! Everything here is pure: no network, no database, no plaintext secrets. The edge (API,
//! refresher, webhook handler) talks to HubSpot, encrypts tokens with `hubkeeper-crypto`, and
//! then issues a command; the aggregates decide what that means and record it as events.
//!
//! * [`app`]: the configuration of one HubSpot OAuth app ([`app::App`]).
//! * [`installation`]: one app installed in one hub, with its sealed tokens and lifecycle
//!   ([`installation::Installation`]).
//! * [`plan`], [`subscription`]: pricing plans and which plan each tenant is on.
//! * [`notification`]: where an app wants to hear about events (its notification endpoints).
//! * [`settings`]: the deployment's operator-editable runtime settings.
//! * [`access`]: the audited history of each API key ([`access::ApiKey`]: created, log-ins,
//!   log-outs, revoked).
//! * [`operations`]: operator actions that concern no other aggregate ([`operations::Operation`]:
//!   failed log-ins, rate limits cleared, configuration reloaded, backups started, self-tests).
//! * [`webhook_log`]: every HubSpot webhook event Hubkeeper accepted, per installation.
//! * [`ids`], [`metadata`], [`clock`]: shared vocabulary.
//! * [`upcasters`]: how stored events of older versions are read today.
//! * [`catalog`]: every stored event type and version, each pinned by a fixture of its stored
//!   form (`tests/fixtures/events`).
//!
//! Events are a compatibility boundary: they are persisted forever and relayed to other
//! services. Each variant has a stable `event_type()` (also its serde tag) and an
//! `event_version()`; payloads are dedicated structs, separate from aggregate state, so the
//! state can be refactored freely. New optional fields get `#[serde(default)]`; anything else
//! needs a version bump and an upcaster.

pub mod access;
pub mod app;
pub mod catalog;
pub mod clock;
pub mod ids;
pub mod installation;
pub mod metadata;
pub mod notification;
pub mod operations;
pub mod plan;
pub mod settings;
pub mod subscription;
pub mod upcasters;
pub mod webhook_log;

mod aggregate;
mod error;
mod stored;
mod validate;

pub use clock::{Clock, DomainServices, ManualClock, SystemClock};
pub use error::ParseError;
pub use ids::{AppId, EndpointId, HubId, InstallationId, OperationId, PlanId, UserId};

/// Sealed secrets, re-exported so callers name one crate for domain types.
pub use hubkeeper_crypto::Sealed;
