//! The HTTP API: a thin layer that turns requests into commands and queries. Each area has its
//! own module with one `router()`; [`router`] merges them and adds the cross-cutting layers
//! (request id, JSON errors, tracing, metrics, body limit, security headers). Every failure is an
//! [`ApiError`], answered in one JSON shape.

// Shared by every route.
pub mod client_addr;
pub mod error;
pub mod extract;
mod middleware;
pub mod params;
pub mod policy;
pub mod request;
pub mod security;
pub mod state;

// Access: keys, sessions, the OpenAPI document that is also the access policy.
pub mod auth;
pub mod openapi;

// Routes, one module per area.
pub mod activity_stream;
pub mod apps;
pub mod billing;
pub mod connect;
pub mod dashboard;
pub mod dead_letters;
pub mod events;
pub mod health;
pub mod installations;
pub mod keys;
pub mod notifications;
pub mod oauth;
pub mod plans;
pub mod proxy;
pub mod queries;
pub mod server_config;
pub mod settings;
pub mod stats;
pub mod webhooks;

pub use error::ApiError;
pub use state::AppState;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(openapi::router())
        .merge(dashboard::router())
        .merge(server_config::router())
        .merge(activity_stream::router())
        .merge(apps::router())
        .merge(notifications::router())
        .merge(installations::router())
        .merge(keys::router())
        .merge(oauth::router())
        .merge(connect::router())
        .merge(queries::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(dead_letters::router())
        .merge(plans::router())
        .merge(proxy::router())
        .merge(billing::router())
        .merge(settings::router())
        .merge(stats::router());
    // Who may call what, from the OpenAPI document: before any handler runs.
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        policy::enforce,
    ));
    let trusted = state.clients().trusted_proxies.clone();
    middleware::layer(routes.fallback(not_found), trusted)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::strict_transport,
        ))
        .with_state(state)
}

/// Health and metrics only, for worker processes that have no API.
pub async fn serve_health(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let trusted = state.clients().trusted_proxies.clone();
    let app = middleware::layer(health::router().fallback(not_found), trusted).with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// How the API serves: live streams and shutdown.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How often a live stream re-checks its caller's session or key.
    pub stream_recheck: std::time::Duration,
    /// After `shutdown`, how long in-flight requests may take before serving stops anyway.
    pub shutdown_deadline: std::time::Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            stream_recheck: std::time::Duration::from_secs(30),
            shutdown_deadline: std::time::Duration::from_secs(10),
        }
    }
}

/// What live streams need to know about the server they run in (a request extension).
#[derive(Debug, Clone)]
pub struct StreamControl {
    /// Cancelled on shutdown: streams end, so shutdown does not wait for them.
    pub shutdown: CancellationToken,
    pub recheck: std::time::Duration,
}

/// [`serve_with`] with the default options.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, ServeOptions::default()).await
}

/// Serves until `shutdown`, then stops accepting, ends live streams and lets in-flight requests
/// finish, for at most [`ServeOptions::shutdown_deadline`].
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    use std::future::IntoFuture;
    let app = router(state)
        .layer(axum::Extension(StreamControl {
            shutdown: shutdown.clone(),
            recheck: options.stream_recheck,
        }))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stop = shutdown.clone();
    let graceful = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .into_future();
    tokio::select! {
        served = graceful => served,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(options.shutdown_deadline).await;
        } => {
            tracing::warn!(
                deadline = ?options.shutdown_deadline,
                "requests still open at the shutdown deadline; stopping anyway"
            );
            Ok(())
        }
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}
