//! Builds the services a process runs from its configuration: what the API's handlers reach
//! (token services, webhook ingestion, billing and maintenance) and the workers' loops.

pub mod access;
pub mod maintenance;
pub mod notifications;
pub mod projections;
pub mod tokens;
pub mod webhooks;
