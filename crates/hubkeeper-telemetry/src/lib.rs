//! One place that sets up logs and metrics for every role of the binary.
//!
//! Logs go to stderr, human-readable by default or one JSON object per line
//! (`HK_LOG_FORMAT=json`) for log shippers. Metrics are kept in-process by the Prometheus recorder
//! and rendered by the API's `/metrics` route (or a worker's own metrics listener).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

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
///
/// The filter sits behind a reload handle so runtime settings can change the level without a
/// restart ([`set_runtime_log_settings`]).
pub fn init_tracing(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|_| TelemetryError::Filter(filter.into()))?;
    let (env_filter, handle) = reload::Layer::new(env_filter);
    let registry = tracing_subscriber::registry().with(env_filter);
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
    if result.is_ok() {
        let _ = FILTER.set(ReloadableFilter {
            handle,
            base: filter.to_owned(),
        });
    }
    Ok(())
}

struct ReloadableFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter the process was started with (`HK_LOG`).
    base: String,
}

static FILTER: OnceLock<ReloadableFilter> = OnceLock::new();

/// Targets that would drown everything else at debug level; kept at info.
const NOISY_AT_DEBUG: &str = "hyper=info,hyper_util=info,h2=info,rustls=info,tower=info";

/// Targets whose debug events are one line per request and response (verbose request logging).
const REQUEST_LOG_TARGETS: &str = "tower_http::trace=debug,hubkeeper_api::middleware=debug";

/// The filter directives for a runtime log `level` (`None`: the start-up filter) and verbose
/// request logging on top of `base`.
pub fn runtime_directives(base: &str, level: Option<&str>, verbose_requests: bool) -> String {
    let mut directives = match level {
        Some(level @ ("debug" | "trace")) => format!("{level},{NOISY_AT_DEBUG}"),
        Some(level) => level.to_owned(),
        None => base.to_owned(),
    };
    if verbose_requests {
        directives.push(',');
        directives.push_str(REQUEST_LOG_TARGETS);
    }
    directives
}

/// Replaces the process's log filter with the runtime settings (see [`runtime_directives`]) and
/// returns the directives now in effect. A no-op returning the directives when tracing was not
/// initialised by [`init_tracing`] in this process.
pub fn set_runtime_log_settings(
    level: Option<&str>,
    verbose_requests: bool,
) -> Result<String, TelemetryError> {
    let Some(filter) = FILTER.get() else {
        return Ok(runtime_directives("info", level, verbose_requests));
    };
    let directives = runtime_directives(&filter.base, level, verbose_requests);
    let new =
        EnvFilter::try_new(&directives).map_err(|_| TelemetryError::Filter(directives.clone()))?;
    filter
        .handle
        .reload(new)
        .map_err(|e| TelemetryError::Filter(format!("{directives}: {e}")))?;
    Ok(directives)
}

/// The filter directives in effect, when [`init_tracing`] installed the subscriber.
pub fn current_log_filter() -> Option<String> {
    FILTER
        .get()
        .and_then(|f| f.handle.with_current(|filter| filter.to_string()).ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_directives_override_the_level_and_add_request_logging() {
        assert_eq!(
            runtime_directives("warn,hubkeeper=debug", None, false),
            "warn,hubkeeper=debug"
        );
        assert_eq!(runtime_directives("warn", Some("error"), false), "error");
        let debug = runtime_directives("warn", Some("debug"), false);
        assert!(
            debug.starts_with("debug,") && debug.contains("hyper=info"),
            "{debug}"
        );
        let verbose = runtime_directives("info", None, true);
        assert!(verbose.contains("tower_http::trace=debug"), "{verbose}");
        for directives in [debug, verbose] {
            assert!(EnvFilter::try_new(&directives).is_ok(), "{directives}");
        }
    }
}
