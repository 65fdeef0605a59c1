//! Everything the dashboard and its access control add to the router, merged with one line in
//! `lib.rs`: login sessions, the OpenAPI document, the dashboard's files, the server
//! configuration view and the live activity stream.

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(crate::session::router())
        .merge(crate::openapi::router())
        .merge(crate::dashboard::router())
        .merge(crate::server_config::router())
        .merge(crate::activity_stream::router())
}
