//! Read models of the event store.
//!
//! * [`apply`]: how one event changes the read models; the only writer, shared by
//! * [`live`]: the projector workers (a durable JetStream consumer shared by N processes), and
//! * [`replay`]: rebuilding read models from the events table into fresh tables, swapped in
//!   atomically.
//! * [`queries`]: the list and overview queries behind the API.
//! * [`history`]: the event history for auditors and point-in-time state.
//!
//! docs/read-models.md describes the tables, the guarantees and how replay and the live
//! projector coexist.

pub mod activity;
pub mod apply;
pub mod counts;
pub mod event;
pub mod history;
pub mod live;
pub mod queries;
pub mod replay;
pub mod series;
pub mod tables;

pub use apply::{apply_event, apply_events, ApplyReport, Outcome};
pub use event::{DomainEvent, ProjectedEvent};
pub use live::{Projector, ProjectorConfig, PROJECTOR_CONSUMER};
pub use replay::{replay, ReplayOptions, ReplayProgress, ReplayReport};
pub use tables::{Projection, Tables};

/// Errors of the projection layer.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Bus(String),
    #[error("{0}")]
    Invalid(String),
}
