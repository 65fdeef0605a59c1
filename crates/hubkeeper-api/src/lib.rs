//! The HTTP API: a thin layer that turns requests into commands and queries. Each area has its own
//! module with a `router()`; [`router`] merges them and adds the cross-cutting layers (request id,
//! tracing, metrics, body limit).

pub mod auth;
pub mod error;
pub mod health;
mod middleware;
pub mod state;
// issue 6: sessions, access policy, OpenAPI, dashboard
pub mod activity_stream;
mod console;
pub mod dashboard;
pub mod openapi;
pub mod policy;
pub mod security;
pub mod server_config;
pub mod session;

// issue 4: apps, installations (tokens), OAuth install flow
pub mod apps;
mod command;
pub mod installations;
pub mod lifecycle;
pub mod oauth;

// issue 5: read models, audit history, webhooks, dead letters
pub mod events;
pub mod queries;
pub mod webhooks;

// issue 7: pricing, billing, settings, maintenance, backups, self-test
pub mod billing;
pub mod operations;
pub mod plans;
pub mod settings;

pub use error::ApiError;
pub use state::AppState;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(health::router())
        // --- routers: one line per area; keep edits to your own line(s) ---
        .merge(apps::router())
        .merge(installations::router())
        .merge(oauth::router())
        .merge(console::router())
        .merge(queries::router())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(plans::router())
        .merge(billing::router())
        .merge(settings::router());
    // Who may call what, from the OpenAPI document (issue 6): before any handler runs.
    let routes = routes.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        policy::enforce,
    ));
    middleware::layer(routes.fallback(error::not_found)).with_state(state)
}

/// Health and metrics only, for worker processes that have no API.
pub async fn serve_health(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = middleware::layer(health::router().fallback(error::not_found)).with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves until `shutdown`, then stops accepting and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
