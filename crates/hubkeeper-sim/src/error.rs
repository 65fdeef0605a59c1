//! Errors of starting and running the simulator (the control client has its own, `ControlError`).

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read seed file {path}: {source}")]
    SeedRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seed file {path} is not valid JSON for the simulator: {source}")]
    SeedParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid seed: {0}")]
    InvalidSeed(String),
    #[error("invalid configuration {key}: {message}")]
    Config { key: &'static str, message: String },
    #[error("simulator I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("simulator server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
