//! HubSpot webhooks: accepted at once, never lost, processed exactly once.
//!
//! * [`ingest`]: the HTTP side's logic: verify, validate, store the raw batch in JetStream
//!   (`HK_WEBHOOKS`) before answering 200.
//! * [`cache`]: the intake's credentials: single-flight per app, unknown apps remembered briefly.
//! * [`worker`]: webhook workers (N processes) that dedupe, route, record and republish.
//! * [`streams`]: stream definitions and the subjects the app's consumers read.
//!
//! docs/webhooks.md has the flow, the subjects and the operator runbook.

pub mod batch;
pub mod cache;
pub mod credentials;
pub mod ingest;
pub mod streams;
pub mod worker;

pub use cache::{CacheLimits, CredentialCache};
pub use credentials::AppServiceCredentials;
pub use ingest::{
    Accepted, CredentialSource, IngestConfig, IngestError, SignatureHeaders, ValidSecret,
    WebhookCredentials, WebhookIngest,
};
pub use streams::{ensure_webhook_streams, WebhookStreamsConfig};
pub use worker::{WebhookWorker, WebhookWorkerConfig, WEBHOOK_CONSUMER};
