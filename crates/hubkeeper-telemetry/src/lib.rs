//! One place that sets up logs and metrics for every role of the binary.
//!
//! Logs go to stderr, human-readable by default or one JSON object per line
//! (`HK_LOG_FORMAT=json`) for log shippers. Metrics are kept in-process by the Prometheus recorder
//! and rendered by the API's `/metrics` route (or a worker's own metrics listener).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" | "plain" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format `{other}` (expected `pretty` or `json`)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter `{0}`")]
    Filter(String),
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
}

/// Installs the global tracing subscriber. `filter` uses `RUST_LOG` syntax (e.g.
/// `info,hubkeeper=debug`). Calling it twice is harmless (tests call it per test).
pub fn init_tracing(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(filter).map_err(|_| TelemetryError::Filter(filter.into()))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // Already initialised (a second role in the same process, or a test): keep the first one.
    let _ = result;
    Ok(())
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets for latencies measured in seconds, from 100 µs (cached token hand-out) to 30 s
/// (a HubSpot call riding out retries).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Installs the process-wide Prometheus recorder once and returns the handle that renders it.
pub fn metrics_handle() -> Result<PrometheusHandle, TelemetryError> {
    if let Some(handle) = METRICS.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            let _ = METRICS.set(handle.clone());
            Ok(handle)
        }
        // Lost a race with another caller: use theirs.
        Err(_) => METRICS.get().cloned().ok_or_else(|| {
            TelemetryError::Metrics("a foreign metrics recorder is installed".into())
        }),
    }
}
