//! One place that sets up logs and metrics for every role of the binary.
//!
//! Logs go to stderr, human-readable by default or one JSON object per line
//! (`HK_LOG_FORMAT=json`) for log shippers. Metrics are kept in-process by the Prometheus recorder
//! and rendered by the API's `/metrics` route (or a worker's own metrics listener); an upkeep
//! thread folds histogram samples into their buckets, so a process nobody scrapes stays flat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

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

/// How often histogram samples are folded into their buckets when nobody scrapes. The exporter
/// keeps every observation until then, so a process that is never scraped would grow forever.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Buckets for latencies measured in seconds, from 100 µs (cached token hand-out) to 30 s
/// (a HubSpot call riding out retries).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

static UPKEEP_RUNS: AtomicU64 = AtomicU64::new(0);

/// Installs the process-wide Prometheus recorder once (with its upkeep every
/// [`UPKEEP_INTERVAL`], the descriptions of every metric and `hk_build_info`) and returns the
/// handle that renders it.
pub fn metrics_handle() -> Result<PrometheusHandle, TelemetryError> {
    metrics_handle_with_upkeep(UPKEEP_INTERVAL)
}

/// [`metrics_handle`] with another upkeep interval (tests shorten it). Only the first call in a
/// process decides.
pub fn metrics_handle_with_upkeep(interval: Duration) -> Result<PrometheusHandle, TelemetryError> {
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
            describe_metrics();
            metrics::gauge!("hk_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            spawn_upkeep(handle.clone(), interval)?;
            Ok(handle)
        }
        // Lost a race with another caller: use theirs.
        Err(_) => METRICS.get().cloned().ok_or_else(|| {
            TelemetryError::Metrics("a foreign metrics recorder is installed".into())
        }),
    }
}

/// A plain thread rather than a task: it must run whatever the process's runtimes do, and it
/// lives as long as the process.
fn spawn_upkeep(handle: PrometheusHandle, interval: Duration) -> Result<(), TelemetryError> {
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            handle.run_upkeep();
            UPKEEP_RUNS.fetch_add(1, Ordering::Relaxed);
        })
        .map(|_| ())
        .map_err(|e| TelemetryError::Metrics(format!("cannot start the metrics upkeep: {e}")))
}

/// How many upkeep rounds have run in this process (tests wait on it).
pub fn upkeep_runs() -> u64 {
    UPKEEP_RUNS.load(Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

use MetricKind::{Counter, Gauge, Histogram};

/// Every metric the workspace emits, with the `# HELP` text `/metrics` shows for it. A test
/// scans the sources and fails on a metric missing here.
pub const METRICS_DESCRIBED: &[(&str, MetricKind, &str)] = &[
    (
        "hk_build_info",
        Gauge,
        "Always 1; the label `version` is the running Hubkeeper version.",
    ),
    (
        "hk_api_request_seconds",
        Histogram,
        "HTTP API request latency by route and method.",
    ),
    (
        "hk_api_responses_total",
        Counter,
        "HTTP API responses by route and status class.",
    ),
    (
        "hk_backup_last_bytes",
        Gauge,
        "Size of the newest successful backup file.",
    ),
    (
        "hk_backup_last_success_timestamp_seconds",
        Gauge,
        "Unix time of the newest successful backup.",
    ),
    (
        "hk_backup_seconds",
        Histogram,
        "Time one database backup took.",
    ),
    (
        "hk_backups_total",
        Counter,
        "Backups by trigger and outcome.",
    ),
    (
        "hk_billing_default_plans_assigned_total",
        Counter,
        "Installations given the default plan.",
    ),
    (
        "hk_billing_projection_errors_total",
        Counter,
        "Failed rounds of the billing projection.",
    ),
    (
        "hk_billing_projection_events_total",
        Counter,
        "Events applied by the billing projection.",
    ),
    (
        "hk_billing_projection_lag_events",
        Gauge,
        "Events the billing projection is behind the store.",
    ),
    (
        "hk_billing_projection_lag_seconds",
        Gauge,
        "Age of the oldest event the billing projection has not applied.",
    ),
    (
        "hk_billing_projection_leader",
        Gauge,
        "1 while this process runs the billing projection, else 0.",
    ),
    (
        "hk_billing_projection_undecodable_total",
        Counter,
        "Events the billing projection could not decode.",
    ),
    (
        "hk_cache_invalidations_failed_total",
        Counter,
        "Token cache invalidations that could not be broadcast.",
    ),
    (
        "hk_command_conflicts_total",
        Counter,
        "Commands retried after a concurrent write to the same aggregate.",
    ),
    (
        "hk_command_stale_states_total",
        Counter,
        "Commands decided again on a load because the state this process kept was no longer current.",
    ),
    (
        "hk_control_published_total",
        Counter,
        "Messages published on the control channel.",
    ),
    (
        "hk_control_received_total",
        Counter,
        "Messages received on the control channel.",
    ),
    (
        "hk_data_keys_rewrapped_total",
        Counter,
        "Data keys re-wrapped under the active master key.",
    ),
    (
        "hk_data_keys_shredded_total",
        Counter,
        "Data keys destroyed (crypto-shredding).",
    ),
    (
        "hk_dead_letters_redriven_total",
        Counter,
        "Dead letters sent back to their queue.",
    ),
    (
        "hk_dead_letters_total",
        Counter,
        "Messages dead-lettered, by kind.",
    ),
    (
        "hk_hubspot_request_seconds",
        Histogram,
        "HubSpot API call latency by endpoint and outcome.",
    ),
    (
        "hk_maintenance_errors_total",
        Counter,
        "Failed rounds of the maintenance scheduler (backups, pruning).",
    ),
    (
        "hk_maintenance_leader",
        Gauge,
        "1 while this process runs the maintenance schedule, else 0.",
    ),
    (
        "hk_oauth_callbacks_total",
        Counter,
        "OAuth callbacks by outcome.",
    ),
    (
        "hk_oauth_installs_started_total",
        Counter,
        "OAuth installs started.",
    ),
    (
        "hk_oauth_rate_limited_total",
        Counter,
        "OAuth requests refused by the per-IP rate limit.",
    ),
    (
        "hk_projector_batch_fallbacks_total",
        Counter,
        "Projector batches retried one event at a time.",
    ),
    (
        "hk_projector_batch_seconds",
        Histogram,
        "Time a projector batch took to apply.",
    ),
    ("hk_projector_errors_total", Counter, "Projector errors."),
    (
        "hk_projector_events_total",
        Counter,
        "Events applied to the read models.",
    ),
    (
        "hk_projector_lag_events",
        Gauge,
        "Events the read models are behind the stream.",
    ),
    (
        "hk_projector_lag_seconds",
        Gauge,
        "Age of the oldest event the read models have not applied.",
    ),
    (
        "hk_projector_undecodable_total",
        Counter,
        "Events the projector could not decode.",
    ),
    (
        "hk_projector_unknown_events_total",
        Counter,
        "Events of a type the projector does not know.",
    ),
    (
        "hk_refresh_seconds",
        Histogram,
        "Time one token refresh took.",
    ),
    ("hk_refresh_total", Counter, "Token refreshes by outcome."),
    (
        "hk_app_credentials_rejected_total",
        Counter,
        "Apps whose refreshes were parked because HubSpot rejected their client credentials.",
    ),
    (
        "hk_apps_refreshes_parked",
        Gauge,
        "Apps whose refreshes are parked (HubSpot rejected their client credentials), as the scheduler last counted.",
    ),
    (
        "hk_token_failure_cache_hits_total",
        Counter,
        "Hand-outs answered from a refresh failure moments ago instead of calling HubSpot again.",
    ),
    (
        "hk_refresher_errors_total",
        Counter,
        "Refresher subscriptions to the refresh queue that were lost and resumed.",
    ),
    (
        "hk_refresher_results_total",
        Counter,
        "Refresh commands handled by the refreshers, by result.",
    ),
    (
        "hk_relay_batch_seconds",
        Histogram,
        "Time one relay round (read and publish) took.",
    ),
    (
        "hk_relay_duplicates_total",
        Counter,
        "Relayed events JetStream reported as duplicates.",
    ),
    ("hk_relay_errors_total", Counter, "Failed relay rounds."),
    (
        "hk_relay_lag_events",
        Gauge,
        "Events committed but not yet relayed.",
    ),
    (
        "hk_relay_lag_seconds",
        Gauge,
        "Age of the oldest event not yet relayed.",
    ),
    (
        "hk_events_wake_ups_total",
        Counter,
        "NOTIFYs sent after commits that wrote events, to wake the relay and the billing projection (wake-ups asked while one is in flight are folded into the next).",
    ),
    (
        "hk_events_wake_up_errors_total",
        Counter,
        "Wake-ups that Postgres refused; the followers find the events after their idle wait.",
    ),
    (
        "hk_relay_leader",
        Gauge,
        "1 while this process is the active relay, else 0.",
    ),
    (
        "hk_relay_published_total",
        Counter,
        "Events published to JetStream by the relay.",
    ),
    (
        "hk_replay_events_total",
        Counter,
        "Events applied by replays.",
    ),
    (
        "hk_scheduled_removals_errors_total",
        Counter,
        "Rounds of the scheduled-removals task that ended in an error (leadership lost).",
    ),
    (
        "hk_scheduled_removals_leader",
        Gauge,
        "1 while this process carries out scheduled revokes and disconnects, else 0.",
    ),
    (
        "hk_scheduled_removals_total",
        Counter,
        "Scheduled revokes and disconnects that came due, by action and outcome (done, skipped, failed).",
    ),
    (
        "hk_scheduler_enqueued_total",
        Counter,
        "Refreshes enqueued by the scheduler.",
    ),
    (
        "hk_scheduler_errors_total",
        Counter,
        "Failed scheduler rounds.",
    ),
    (
        "hk_scheduler_leader",
        Gauge,
        "1 while this process is the active scheduler, else 0.",
    ),
    (
        "hk_selftest_runs_total",
        Counter,
        "Self-test runs by outcome.",
    ),
    (
        "hk_selftest_steps_total",
        Counter,
        "Self-test steps by step and status.",
    ),
    (
        "hk_settings_version",
        Gauge,
        "Version of the runtime settings this process applies.",
    ),
    (
        "hk_subscriptions_renewed_total",
        Counter,
        "Subscriptions renewed.",
    ),
    (
        "hk_token_cache_hits_total",
        Counter,
        "Token hand-outs served from the cache.",
    ),
    (
        "hk_token_cache_misses_total",
        Counter,
        "Token hand-outs that read Postgres.",
    ),
    (
        "hk_token_handout_seconds",
        Histogram,
        "Token hand-out latency.",
    ),
    (
        "hk_usage_limits_reached_total",
        Counter,
        "Usage reports refused because a plan limit was reached.",
    ),
    (
        "hk_usage_reports_duplicate_total",
        Counter,
        "Usage reports already counted (idempotent retries).",
    ),
    ("hk_usage_reports_total", Counter, "Usage reports counted."),
    (
        "hk_webhook_accept_seconds",
        Histogram,
        "Time to verify and store an incoming webhook request.",
    ),
    (
        "hk_webhook_batches_total",
        Counter,
        "Webhook batches by outcome.",
    ),
    (
        "hk_webhook_errors_total",
        Counter,
        "Webhook worker subscriptions to the batch queue that were lost and resumed.",
    ),
    (
        "hk_webhook_events_total",
        Counter,
        "Webhook events by outcome.",
    ),
    (
        "hk_webhook_processing_seconds",
        Histogram,
        "Time the webhook worker took for one batch.",
    ),
    (
        "hk_webhook_requests_total",
        Counter,
        "Incoming webhook requests by outcome (accepted, unknown_app, each signature failure class, rate_limited, ...).",
    ),
    (
        "hk_webhook_seen_pruned_total",
        Counter,
        "Rows of webhook_events_seen deleted for being older than the deduplication window.",
    ),
    (
        "hk_api_request_timeouts_total",
        Counter,
        "API requests answered 503 because they outlived the request timeout.",
    ),
    (
        "hk_client_rate_limited_total",
        Counter,
        "Requests refused by a per-client limit (OAuth install, OAuth callback, log-in, webhook verification failures), by bucket.",
    ),
    (
        "hk_connect_sessions_created_total",
        Counter,
        "Connect sessions created by apps and the dashboard.",
    ),
    (
        "hk_connect_sessions_started_total",
        Counter,
        "Connect session links opened and sent on to HubSpot's consent page.",
    ),
    (
        "hk_notification_attempt_seconds",
        Histogram,
        "Time one notification delivery attempt took, receiver included.",
    ),
    (
        "hk_notification_attempts_total",
        Counter,
        "Notification delivery attempts by outcome status.",
    ),
    (
        "hk_notification_lag_seconds",
        Histogram,
        "Time from the event being recorded to its notification being delivered.",
    ),
    (
        "hk_notifications_queued_total",
        Counter,
        "Notifications queued for delivery by the notifier's fan-out.",
    ),
    (
        "hk_notifier_errors_total",
        Counter,
        "Notifier messages that failed to process (retried or dead-lettered).",
    ),
    (
        "hk_proxy_hubspot_rate_limited_total",
        Counter,
        "HubSpot API proxy calls answered 429 by HubSpot.",
    ),
    (
        "hk_proxy_requests_total",
        Counter,
        "HubSpot API proxy calls by HubSpot status class (or limited, error).",
    ),
    (
        "hk_proxy_retries_total",
        Counter,
        "HubSpot API proxy calls retried once, by cause.",
    ),
    (
        "hk_proxy_token_rejected_total",
        Counter,
        "HubSpot API proxy calls whose access token HubSpot rejected (one refresh follows).",
    ),
    (
        "hk_proxy_upstream_seconds",
        Histogram,
        "Time HubSpot took to answer a proxied call.",
    ),
    (
        "hk_proxy_wait_seconds",
        Histogram,
        "Time a proxied call waited for a slot in the portal's shared budget.",
    ),
];

fn describe_metrics() {
    for &(name, kind, help) in METRICS_DESCRIBED {
        match kind {
            Counter => metrics::describe_counter!(name, help),
            Gauge => metrics::describe_gauge!(name, help),
            Histogram => metrics::describe_histogram!(name, help),
        }
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

    /// Metric names in the workspace's sources: string literals starting `hk_` on a line that
    /// records a metric or names a metric field, or right after a line opening a metric macro.
    fn metric_names_in_sources() -> std::collections::BTreeSet<String> {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut names = std::collections::BTreeSet::new();
        let mut dirs = vec![crates];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n != "target") {
                        dirs.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let mut after_macro = false;
                for line in text.lines() {
                    let records = [
                        "counter!(",
                        "gauge!(",
                        "histogram!(",
                        "_gauge:",
                        "_counter:",
                    ]
                    .iter()
                    .any(|m| line.contains(m));
                    if records || after_macro {
                        for literal in line.split('"').skip(1).step_by(2) {
                            if literal.starts_with("hk_")
                                && literal.chars().all(|c| {
                                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
                                })
                            {
                                names.insert(literal.to_string());
                            }
                        }
                    }
                    after_macro = line.trim_end().ends_with("!(");
                }
            }
        }
        names
    }

    #[test]
    fn every_metric_in_the_sources_is_described() {
        let described: std::collections::BTreeSet<&str> =
            METRICS_DESCRIBED.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(described.len(), METRICS_DESCRIBED.len(), "described twice");
        let found = metric_names_in_sources();
        assert!(found.contains("hk_relay_leader") && found.contains("hk_hubspot_request_seconds"));
        let missing: Vec<_> = found
            .iter()
            .filter(|name| !described.contains(name.as_str()))
            .collect();
        assert!(missing.is_empty(), "add to METRICS_DESCRIBED: {missing:?}");
        for (name, _, help) in METRICS_DESCRIBED {
            assert!(help.ends_with('.') && help.len() > 10, "{name}: {help}");
        }
    }
}
