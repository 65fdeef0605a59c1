//! Routing and the HTTP server loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::client::{ControlError, SimControl};
use crate::config::SimConfig;
use crate::error::SimError;
use crate::respond::{api_error, CloseConnection};
use crate::state::SimState;
use crate::{control, crm, oauth, observe};

/// How long shutdown waits for in-flight requests before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Every HubSpot endpoint the simulator serves plus the `/_sim` control API.
pub fn router(state: SimState) -> Router {
    Router::new()
        .route("/oauth/authorize", get(oauth::authorize_page))
        .route("/oauth/authorize/decision", post(oauth::authorize_decision))
        .route(
            "/oauth/{account_id}/authorize",
            get(oauth::authorize_account_page),
        )
        .route("/oauth/v1/token", post(oauth::token))
        .route("/oauth/2026-03/token", post(oauth::token))
        .route("/oauth/v3/token", post(oauth::token))
        .route(
            "/oauth/v1/access-tokens/{token}",
            get(oauth::legacy_access_token_info),
        )
        .route(
            "/oauth/v1/refresh-tokens/{token}",
            get(oauth::legacy_refresh_token_info).delete(oauth::legacy_revoke),
        )
        .route("/oauth/2026-03/token/introspect", post(oauth::introspect))
        .route("/oauth/v3/token/introspect", post(oauth::introspect))
        .route("/oauth/2026-03/token/revoke", post(oauth::revoke))
        .route("/oauth/v3/token/revoke", post(oauth::revoke))
        .route("/crm/v3/objects/contacts", get(crm::list_contacts))
        .nest("/_sim", control::routes())
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

async fn fallback() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "This endpoint is not simulated.",
        "OBJECT_NOT_FOUND",
    )
    .into_response()
}

/// A running simulator. Dropping it stops the server too; [`SimHandle::shutdown`] additionally
/// waits for it to finish.
pub struct SimHandle {
    pub base_url: String,
    local_addr: SocketAddr,
    state: SimState,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// The address clients should dial: a wildcard bind (`0.0.0.0`, `::`) is reachable on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Binds the configured address and serves the simulator in the background.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| SimError::Bind {
            addr: config.bind,
            source,
        })?;
    let local_addr = reachable(listener.local_addr()?);
    let base_url = config
        .public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{local_addr}"));
    let state = SimState::new(&config, base_url.clone())?;
    let cancel = state.inner.shutdown.clone();
    let app = router(state.clone());
    let task = tokio::spawn(serve(listener, app, cancel.clone()));
    tracing::info!(%base_url, %local_addr, "HubSpot simulator listening");
    Ok(SimHandle {
        base_url,
        local_addr,
        state,
        cancel,
        task: Some(task),
    })
}

impl SimHandle {
    /// The bound address (loopback when bound to a wildcard address).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &SimState {
        &self.state
    }

    /// A control client for this simulator, talking to the bound address directly (the public
    /// URL may only be reachable from elsewhere).
    pub fn control(&self) -> Result<SimControl, ControlError> {
        SimControl::new(&format!("http://{}", self.local_addr))
    }

    /// Stops accepting connections, lets in-flight requests finish (up to a few seconds), stops
    /// webhook deliveries and waits for the server task.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        self.cancel.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(SimError::from),
            None => Ok(()),
        }
    }

    /// Serves until Ctrl-C (what `hubkeeper sim` does), then shuts down gracefully.
    pub async fn run_until_ctrl_c(mut self) -> Result<(), SimError> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                signal?;
                tracing::info!("Ctrl-C received, stopping the HubSpot simulator");
                self.cancel.cancel();
                (&mut task).await?;
            }
            ended = &mut task => ended?,
        }
        Ok(())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Marker error that makes hyper drop the connection without writing a response.
#[derive(Debug)]
struct DroppedBySimulator;

impl std::fmt::Display for DroppedBySimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the simulator")
    }
}

impl std::error::Error for DroppedBySimulator {}

async fn serve(listener: TcpListener, app: Router, cancel: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(error = %e, "simulator accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move {
                let response = match app.oneshot(req.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if response.extensions().get::<CloseConnection>().is_some() {
                    Err(DroppedBySimulator)
                } else {
                    Ok::<_, DroppedBySimulator>(response)
                }
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "simulator connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("simulator shutdown timed out with requests still in flight");
        }
    }
}
