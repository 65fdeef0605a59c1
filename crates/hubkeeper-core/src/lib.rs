//! Hubkeeper's application layer: where the pure domain meets Postgres, NATS and HubSpot.
//! Handlers (HTTP, workers) call these services; they never talk to cqrs-es directly.

pub mod commands;

pub use commands::{CommandBus, CommandError};
